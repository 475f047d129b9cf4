"""The README's table of what each stage's always-on parts cost per hour, generated from data.

    python scripts/cost_table.py            # print the table
    python scripts/cost_table.py --write    # rewrite it in README.md (between the markers)

Prices come from `pricing/` (on-demand list prices with the date they were checked),
sizes from the stages in cdk.json. A test compares README.md with this output, so a price or a
config change that is not regenerated fails the suite instead of going stale silently.

Always-on means billed per hour whether or not anyone asks: the OpenSearch domain (data nodes,
dedicated masters, their gp3 storage) and, while switched on, the endpoint's instances
(`min_instances` per served variant). Per-request costs (Lambda, API Gateway, Bedrock tokens) and
training jobs are not in it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pricing  # noqa: E402
from stacks.config import StageConfig, load_config  # noqa: E402

README = ROOT / "README.md"
BEGIN, END = "<!-- BEGIN cost table (scripts/cost_table.py) -->", "<!-- END cost table -->"


def stage_costs(stage: StageConfig) -> dict[str, float]:
    """USD per hour of each always-on part of a stage."""
    search, inference = stage.search, stage.inference
    costs = {
        "search": search.data_node_count * pricing.opensearch_instance_per_hour(search.data_node_instance_type)
        + search.dedicated_master_count * pricing.opensearch_instance_per_hour(search.dedicated_master_instance_type)
        + pricing.opensearch_storage_per_hour(search.volume_size_gib * search.data_node_count),
        "variant": 0.0,
    }
    if inference.enabled:
        costs["variant"] = inference.min_instances * pricing.sagemaker_hosting_per_hour(inference.instance_type)
    costs["variants"] = costs["variant"] * (2 if inference.serve_base else 1)
    return costs


def render(stages: list[StageConfig]) -> str:
    prices = pricing.prices()
    lines = [
        f"Prices: on-demand list prices, {prices['region']}, {prices['currency']} per hour, checked {pricing.checked()} (`pricing/prices.json`).",
        "",
        "| Stage | OpenSearch (nodes + storage) | Endpoint, one variant | Endpoint, base + fine-tuned | Always on, endpoint on | Endpoint switched off |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for stage in stages:
        costs = stage_costs(stage)
        search, inference = stage.search, stage.inference
        nodes = f"{search.data_node_count} x {search.data_node_instance_type}" + (f" + {search.dedicated_master_count} x {search.dedicated_master_instance_type}" if search.dedicated_master_count else "")
        variant = f"{inference.min_instances} x {inference.instance_type}" if inference.enabled else "none"
        lines.append(
            f"| {stage.name} | {costs['search']:.2f} ({nodes}) | {costs['variant']:.2f} ({variant}) | {costs['variants']:.2f} | "
            f"{costs['search'] + costs['variants']:.2f} | {costs['search']:.2f} |"
        )
    return "\n".join(lines)


def readme_table(text: str) -> str:
    if BEGIN not in text or END not in text:
        raise ValueError(f"README.md lacks the markers {BEGIN!r} ... {END!r}")
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def stages_from_cdk_json() -> list[StageConfig]:
    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    return list(load_config(context).stages.values())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    table = render(stages_from_cdk_json())
    if "--write" in argv:
        text = README.read_text()
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        README.write_text(f"{before}{BEGIN}\n{table}\n{END}{after}")
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
