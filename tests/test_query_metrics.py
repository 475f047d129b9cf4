"""The query function's metrics: one EMF record per request, every metric with
the dimensions service, mode and generator; stage latencies only when the stage ran; token
counts only when known; client and server errors counted apart."""

from __future__ import annotations

import json

import pytest

from tests.test_query_helpers import (  # noqa: F401  (wired is a fixture)
    call,
    client_error,
    converse_response,
    described,
    endpoint_response,
    retrieve_response,
    wired,
)

Q = "How do keys rotate?"


def _records(capsys) -> list[dict]:
    """The EMF records written to stdout since the last call."""
    records = []
    for line in capsys.readouterr().out.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "_aws" in record:
            records.append(record)
    return records


def _one(capsys) -> tuple[dict, dict, list[str]]:
    (record,) = _records(capsys)
    (directive,) = record["_aws"]["CloudWatchMetrics"]
    assert directive["Dimensions"] == [["service", "mode", "generator"]]  # on every metric of the record
    names = [m["Name"] for m in directive["Metrics"]]
    dimensions = {name: record[name] for name in ("service", "mode", "generator")}
    values = {name: record[name] for name in names}
    return dimensions, values, names


def test_a_rag_answer_records_both_stages_and_the_tokens(wired, capsys):
    stubs = wired(endpoint=described())
    stubs.agent.add_response("retrieve", retrieve_response("Yearly."), None)
    stubs.sagemaker.add_response("invoke_endpoint", endpoint_response("Yearly [1].", prompt_tokens=321, completion_tokens=12), None)
    capsys.readouterr()
    assert call({"question": Q})[0] == 200
    dimensions, values, names = _one(capsys)
    assert dimensions == {"service": "query", "mode": "rag", "generator": "finetuned"}
    assert set(names) == {"Queries", "QueryLatency", "RetrieveLatency", "GenerateLatency", "InputTokens", "OutputTokens"}
    assert values["Queries"] in (1, [1], [1.0]) and values["InputTokens"] in (321, [321], [321.0]) and values["OutputTokens"] in (12, [12], [12.0])


def test_an_invalid_request_has_mode_and_generator_none(wired, capsys):
    wired()
    capsys.readouterr()
    assert call({"question": ""})[0] == 400
    dimensions, values, names = _one(capsys)
    assert dimensions == {"service": "query", "mode": "none", "generator": "none"}
    assert set(names) == {"Queries", "QueryLatency", "QueryClientErrors"}


def test_a_failed_generation_records_the_retrieval_and_a_server_error(wired, capsys):
    stubs = wired(endpoint=described())
    stubs.agent.add_response("retrieve", retrieve_response("Yearly."), None)
    client_error(stubs.sagemaker, "invoke_endpoint", "InternalFailure", 500)
    capsys.readouterr()
    assert call({"question": Q, "generator": "base"})[0] == 502
    dimensions, _, names = _one(capsys)
    assert dimensions == {"service": "query", "mode": "rag", "generator": "base"}
    assert set(names) == {"Queries", "QueryLatency", "RetrieveLatency", "QueryServerErrors"}


def test_an_unavailable_generator_is_a_server_error_of_that_generator(wired, capsys):
    wired(endpoint=described(variants=("finetuned",)))
    capsys.readouterr()
    assert call({"question": Q, "mode": "prompt", "generator": "base"})[0] == 503
    dimensions, _, names = _one(capsys)
    assert dimensions == {"service": "query", "mode": "prompt", "generator": "base"} and "QueryServerErrors" in names


@pytest.mark.parametrize("mode", ["kb", "prompt"])
def test_modes_without_retrieval_record_no_retrieve_latency(wired, capsys, mode):
    stubs = wired(DEFAULT_GENERATOR="bedrock")
    if mode == "kb":
        stubs.agent.add_response("retrieve_and_generate", {"output": {"text": "A."}, "sessionId": "s-1", "citations": []}, None)
    else:
        stubs.runtime.add_response("converse", converse_response("A."), None)
    capsys.readouterr()
    assert call({"question": Q, "mode": mode})[0] == 200
    dimensions, _, names = _one(capsys)
    assert dimensions == {"service": "query", "mode": mode, "generator": "bedrock"}
    assert "RetrieveLatency" not in names and "GenerateLatency" in names
    assert ("InputTokens" in names) == (mode == "prompt")  # RetrieveAndGenerate reports no token counts
