"""Cost per query and per hour from the price table: which answers pay Bedrock tokens, what a
deployed stage adds per query, the estimate for mode kb, and the fixed cost of a stage."""

from __future__ import annotations

from dataclasses import replace

import pytest

import pricing
from evaluation import cost

NOVA = "amazon.nova-lite-v1:0"


def _row(model, generator=None, mode="rag", usage=(1000, 100), answer="A" * 40, question="Q" * 40, **extra) -> dict:
    response = {"answer": answer, "model": model, "usage": {"input_tokens": usage[0], "output_tokens": usage[1]} if usage else {}}
    if generator:
        response["generator"] = generator
    return {"mode": mode, "question": question, "response": response, **extra}


def _tokens(model_id: str, tokens_in: int, tokens_out: int) -> float:
    return pricing.bedrock_tokens_cost(model_id, tokens_in, tokens_out)


@pytest.mark.parametrize("row, expected", [
    (_row(NOVA), (_tokens(NOVA, 1000, 100), False)),  # a Bedrock model id, whatever the generator's name
    (_row(NOVA, generator="default"), (_tokens(NOVA, 1000, 100), False)),
    (_row("us." + NOVA), (_tokens(NOVA, 1000, 100), False)),  # a cross-region profile
    (_row("sagemaker:ragdev-generator/finetuned", generator="finetuned"), (0.0, False)),  # paid by the hour
    (_row("sagemaker:qwen3.1b", generator="base"), (0.0, False)),
    (_row("local:extractive", generator="extractive"), (0.0, False)),
    (_row("local:qwen2.5", generator="llm"), (0.0, False)),
    (_row("gpt-4o"), (0.0, False)),  # no provider prefix: not a Bedrock id
    (_row(""), (0.0, False)),
    (_row(NOVA, generator="bedrock", usage=(None, 5)), (None, False)),  # tokens unknown: no price
    (_row("meta.unknown-model-v9:0"), (None, False)),  # not in the price table
    (_row("anthropic.nova:v1.x"), (None, False)),  # the provider part decides, not the version after ':'
])
def test_what_a_local_target_pays_per_query(row, expected):
    value, estimated = cost.CostModel(deployed=False).query_cost(row)
    assert (value if value is None else pytest.approx(value), estimated) == (expected[0] if expected[0] is None else pytest.approx(expected[0]),
                                                                             expected[1])


def test_mode_kb_estimates_its_tokens_from_the_text():
    model = cost.CostModel(deployed=False, chunk_max_tokens=100)
    row = _row(NOVA, mode="kb", usage=None, answer="A" * 43, question="Q" * 81, request={"top_k": 3})
    # 250 prompt tokens + 81 // 4 question tokens + 3 chunks x 100; 43 // 4 answer tokens
    assert model.query_cost(row) == (pytest.approx(_tokens(NOVA, 250 + 20 + 300, 10)), True)
    assert model.query_cost({**row, "request": {}}) == (pytest.approx(_tokens(NOVA, 250 + 20 + 500, 10)), True)  # the default top_k 5
    assert model.query_cost(_row(NOVA, mode="kb", usage=(7, 3))) == (pytest.approx(_tokens(NOVA, 7, 3)), False)  # reported: not estimated
    assert model.query_cost(_row("x.unknown-v1", mode="kb", usage=None)) == (None, True)


def test_a_deployed_stage_adds_the_request_lambda_time_and_the_question_embedding():
    prices = pricing.prices()
    model = cost.CostModel(deployed=True, lambda_memory_mb=2048, embedding_model="amazon.titan-embed-text-v2:0")
    base = prices["api_gateway_rest_per_million_requests"] / 1e6 + prices["lambda_per_million_requests"] / 1e6
    lambda_per_s = prices["lambda_arm_per_gb_second"] * 2.0
    embed = _tokens("amazon.titan-embed-text-v2:0", 10, 0)  # 40 characters: 10 tokens
    timed = {**_row("sagemaker:x", generator="base"), "elapsed_ms": 9000}
    timed["response"]["timings_ms"] = {"total": 1500.0}
    assert model.query_cost(timed) == (pytest.approx(base + lambda_per_s * 1.5 + embed), False)  # the server's time, not the round trip
    del timed["response"]["timings_ms"]
    assert model.query_cost(timed) == (pytest.approx(base + lambda_per_s * 9.0 + embed), False)
    prompt = {**_row("sagemaker:x", generator="base", mode="prompt", question="Q"), "elapsed_ms": 1000}
    assert model.query_cost(prompt) == (pytest.approx(base + lambda_per_s * 1.0), False)  # no retrieval: no embedding
    short = _row("sagemaker:x", generator="base", question="Q")
    assert model.query_cost(short) == (pytest.approx(base + _tokens("amazon.titan-embed-text-v2:0", 1, 0)), False)  # at least a token
    assert cost.CostModel(deployed=True, embedding_model="nope.x").query_cost(short) == (pytest.approx(base), False)


def test_the_fixed_cost_follows_the_stage_and_whether_the_endpoint_is_up():
    stage = cost.stage_config("dev")
    search, inference = stage.search, stage.inference
    data = search.data_node_count * pricing.opensearch_instance_per_hour(search.data_node_instance_type)
    storage = pricing.opensearch_storage_per_hour(search.data_node_count * search.volume_size_gib)
    endpoint = inference.min_instances * pricing.sagemaker_hosting_per_hour(inference.instance_type)
    up = cost.fixed_cost_per_hour(stage, {"generators": {"finetuned": {"available": True}, "bedrock": {"available": True}}})
    names = list(up["items"])
    assert names[:2] == [f"OpenSearch {search.data_node_count} x {search.data_node_instance_type}",
                         f"OpenSearch storage {search.data_node_count} x {search.volume_size_gib} GiB gp3"]
    assert names[-1] == f"SageMaker endpoint {inference.min_instances} x {inference.instance_type}"
    assert up["items"][names[-1]] == round(endpoint, 4) and up["items"][names[1]] == round(storage, 4)
    assert up["total_usd"] == round(sum(up["items"].values()), 4) == pytest.approx(data + storage + endpoint, abs=1e-3)
    assert (up["prices_checked"], up["region"]) == (pricing.checked(), pricing.prices()["region"])
    off = cost.fixed_cost_per_hour(stage, {"generators": {"base": {"available": False}, "bedrock": {"available": True}}})
    assert not any(name.startswith("SageMaker") for name in off["items"])
    unknown = cost.fixed_cost_per_hour(stage, None)  # no health: counted, the stage deploys an endpoint
    assert any(name.startswith("SageMaker") for name in unknown["items"])
    without = replace(stage, inference=replace(inference, enabled=False))
    assert not any(name.startswith("SageMaker") for name in cost.fixed_cost_per_hour(without, {})["items"])
    masters = replace(stage, search=replace(search, dedicated_master_count=3, dedicated_master_instance_type="m7g.large.search"))
    assert cost.fixed_cost_per_hour(masters, None)["items"]["OpenSearch masters 3 x m7g.large.search"] == round(
        3 * pricing.opensearch_instance_per_hour("m7g.large.search"), 4)
    assert cost.fixed_cost_per_hour(None) == {"total_usd": 0.0, "items": {}, "note": "local target: no fixed AWS cost"}


def test_a_stage_prices_with_its_own_config():
    stage = cost.stage_config("dev")
    assert cost.cost_model_for(stage) == cost.CostModel(deployed=True, lambda_memory_mb=stage.serving.memory_size_mb,
                                                        embedding_model=stage.knowledge_base.embedding_model_id,
                                                        chunk_max_tokens=stage.knowledge_base.chunk_max_tokens)
    assert cost.cost_model_for(None) == cost.CostModel(deployed=False)
