"""Cost per query (variable) and the target's fixed cost per hour, from `pricing/prices.json` only.

Variable cost of one query on a deployed stage: API Gateway request + Lambda request and
GB-seconds (arm64, the function's memory, the answer's server time) + the question's embedding
(modes rag and kb retrieve with Titan embeddings) + Bedrock tokens when Bedrock generates. A
SageMaker generator (`base`, `finetuned`) costs nothing per query: its endpoint is paid by the
hour (the fixed cost). Mode `kb` (RetrieveAndGenerate) reports no token counts: its tokens are
estimated (4 characters a token; `top_k` chunks of `knowledge_base.chunk_max_tokens`) and the
result is flagged `estimated`. A local target costs only its Bedrock tokens, if any.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pricing

ROOT = Path(__file__).resolve().parents[1]
CHARS_PER_TOKEN = 4
PROMPT_OVERHEAD_TOKENS = 250  # the RAG prompt's instructions around the sources


@dataclass(frozen=True)
class CostModel:
    deployed: bool  # a stage behind API Gateway + Lambda (False: local mode)
    lambda_memory_mb: int = 512
    embedding_model: str = "amazon.titan-embed-text-v2:0"
    chunk_max_tokens: int = 300

    def query_cost(self, row: dict[str, Any]) -> tuple[float | None, bool]:
        """(USD for this answered query or None when a price is unknown, whether it is estimated)."""
        response = row.get("response") or {}
        mode = row["mode"]
        usage = response.get("usage") or {}
        input_tokens, output_tokens = usage.get("input_tokens"), usage.get("output_tokens")
        estimated = False
        total = 0.0
        if self.deployed:
            server_ms = (response.get("timings_ms") or {}).get("total") or row.get("elapsed_ms") or 0.0
            total += pricing.prices()["api_gateway_rest_per_million_requests"] / 1e6
            total += pricing.prices()["lambda_per_million_requests"] / 1e6
            total += pricing.prices()["lambda_arm_per_gb_second"] * (self.lambda_memory_mb / 1024.0) * (server_ms / 1000.0)
            if mode in ("rag", "kb"):
                question_tokens = max(1, len(row["question"]) // CHARS_PER_TOKEN)
                total += _bedrock(self.embedding_model, question_tokens, 0) or 0.0
        generator = response.get("generator") or row.get("generator")
        model = response.get("model") or ""
        if generator == "bedrock" or mode == "kb" or _looks_bedrock(model):
            if mode == "kb" and (input_tokens is None or output_tokens is None):
                top_k = (row.get("request") or {}).get("top_k") or 5
                input_tokens = PROMPT_OVERHEAD_TOKENS + len(row["question"]) // CHARS_PER_TOKEN + top_k * self.chunk_max_tokens
                output_tokens = len(response.get("answer") or "") // CHARS_PER_TOKEN
                estimated = True
            if input_tokens is None or output_tokens is None:
                return None, False
            tokens_cost = _bedrock(model, int(input_tokens), int(output_tokens))
            if tokens_cost is None:
                return None, estimated
            total += tokens_cost
        return total, estimated


def _looks_bedrock(model: str) -> bool:
    return bool(model) and not model.startswith(("sagemaker:", "local:")) and "." in model.split(":", 1)[0]


def _bedrock(model_id: str, input_tokens: int, output_tokens: int) -> float | None:
    try:
        return pricing.bedrock_tokens_cost(model_id, input_tokens, output_tokens)
    except pricing.UnknownPrice:
        return None


def stage_config(stage: str, cdk_json: Path = ROOT / "cdk.json"):
    """The stage's typed config from cdk.json (the same validation as synth)."""
    from stacks.config import load_config

    context = json.loads(cdk_json.read_text())["context"]
    return load_config(context).select(stage)[0]


def cost_model_for(stage_cfg) -> CostModel:
    if stage_cfg is None:
        return CostModel(deployed=False)
    return CostModel(
        deployed=True,
        lambda_memory_mb=stage_cfg.serving.memory_size_mb,
        embedding_model=stage_cfg.knowledge_base.embedding_model_id,
        chunk_max_tokens=stage_cfg.knowledge_base.chunk_max_tokens,
    )


def fixed_cost_per_hour(stage_cfg, health: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the stage costs per hour whether or not anyone asks: search domain and the endpoint.

    The endpoint counts only when the target's health says a SageMaker generator is available
    (the endpoint exists only while it is switched on and has a model); at its minimum instances.
    """
    if stage_cfg is None:
        return {"total_usd": 0.0, "items": {}, "note": "local target: no fixed AWS cost"}
    search = stage_cfg.search
    items: dict[str, float] = {
        f"OpenSearch {search.data_node_count} x {search.data_node_instance_type}":
            search.data_node_count * pricing.opensearch_instance_per_hour(search.data_node_instance_type),
        f"OpenSearch storage {search.data_node_count} x {search.volume_size_gib} GiB gp3":
            pricing.opensearch_storage_per_hour(search.data_node_count * search.volume_size_gib),
    }
    if search.dedicated_master_count:
        items[f"OpenSearch masters {search.dedicated_master_count} x {search.dedicated_master_instance_type}"] = (
            search.dedicated_master_count * pricing.opensearch_instance_per_hour(search.dedicated_master_instance_type)
        )
    generators = (health or {}).get("generators") or {}
    endpoint_up = any(generators.get(name, {}).get("available") for name in ("base", "finetuned"))
    if stage_cfg.inference.enabled and (endpoint_up or not generators):
        inference = stage_cfg.inference
        items[f"SageMaker endpoint {inference.min_instances} x {inference.instance_type}"] = (
            inference.min_instances * pricing.sagemaker_hosting_per_hour(inference.instance_type)
        )
    return {"total_usd": round(sum(items.values()), 4), "items": {k: round(v, 4) for k, v in items.items()},
            "prices_checked": pricing.checked(), "region": pricing.prices().get("region")}
