"""The README's hourly cost table is generated from `pricing/` and cdk.json and must be current."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import pricing
from stacks.config import StageConfig

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("cost_table", ROOT / "scripts" / "cost_table.py")
cost_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cost_table)


def test_readme_table_is_what_the_data_gives_today():
    expected = cost_table.render(cost_table.stages_from_cdk_json())
    assert cost_table.readme_table((ROOT / "README.md").read_text()) == expected, "run: .venv/bin/python scripts/cost_table.py --write"
    assert pricing.checked() in expected


def test_costs_follow_the_config_and_the_price_table():
    stage = StageConfig(name="qa")
    costs = cost_table.stage_costs(stage)
    assert costs["variant"] == pytest.approx(pricing.sagemaker_hosting_per_hour("ml.inf2.xlarge"))
    assert costs["variants"] == pytest.approx(2 * costs["variant"])  # base + fine-tuned, one instance each
    assert costs["search"] == pytest.approx(pricing.opensearch_instance_per_hour("r7g.large.search") + pricing.opensearch_storage_per_hour(20))
    from dataclasses import replace

    alone = replace(stage, inference=replace(stage.inference, serve_base=False, min_instances=2, max_instances=2))
    assert cost_table.stage_costs(alone)["variants"] == pytest.approx(2 * pricing.sagemaker_hosting_per_hour("ml.inf2.xlarge"))


def test_missing_markers_are_an_error():
    with pytest.raises(ValueError, match="markers"):
        cost_table.readme_table("no table here")
