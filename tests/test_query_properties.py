"""Property: no request body, however malformed, makes the handler answer 5xx or raise.

The fake clients always succeed, but validate every call's parameters against the real API
model first (botocore's validator), so a request that passes our validation but would be
rejected by AWS (wrong type, empty string...) shows up here as a 5xx.
"""

from __future__ import annotations

import io
import json
import math

import botocore.session
from botocore.response import StreamingBody
from botocore.validate import validate_parameters
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from query import aws_backend, handler
from query.settings import MODES, RETRIEVERS
from shared.opensearch_http import OpenSearchResponse
from tests.test_query_helpers import ENV, event, settings

_SESSION = botocore.session.get_session()
_MODELS = {name: _SESSION.get_service_model(name) for name in ("bedrock-agent-runtime", "bedrock-runtime", "sagemaker-runtime")}
_OPERATIONS = {
    "retrieve": ("bedrock-agent-runtime", "Retrieve"),
    "retrieve_and_generate": ("bedrock-agent-runtime", "RetrieveAndGenerate"),
    "invoke_model": ("bedrock-runtime", "InvokeModel"),
    "converse": ("bedrock-runtime", "Converse"),
    "invoke_endpoint": ("sagemaker-runtime", "InvokeEndpoint"),
}


def _body(payload) -> StreamingBody:
    data = json.dumps(payload).encode()
    return StreamingBody(io.BytesIO(data), len(data))


class ValidatingFake:
    """Answers any of the five operations after checking its parameters against the API model."""

    def __getattr__(self, method: str):
        service_name, operation = _OPERATIONS[method]
        shape = _MODELS[service_name].operation_model(operation).input_shape

        def call(**params):
            validate_parameters(params, shape)  # raises ParamValidationError -> would be a 500
            return _ANSWERS[method]()

        return call


_ANSWERS = {
    "retrieve": lambda: {"retrievalResults": [{"content": {"text": "Fact."}, "location": {"type": "S3", "s3Location": {"uri": "s3://d/a"}}, "score": 0.5}]},
    "retrieve_and_generate": lambda: {"output": {"text": "Answer."}, "citations": [], "sessionId": "s"},
    "invoke_model": lambda: {"body": _body({"embedding": [0.0, 0.1, 0.2, 0.3]})},
    "converse": lambda: {"output": {"message": {"role": "assistant", "content": [{"text": "Answer [1]."}]}}, "usage": {"inputTokens": 1, "outputTokens": 1}},
    "invoke_endpoint": lambda: {"Body": _body({"choices": [{"message": {"content": "Answer [1]."}}], "usage": {}})},
}


def _configure(generator: str) -> None:
    s = settings(GENERATOR=generator)
    clients = aws_backend.AwsClients(s)
    fake = ValidatingFake()
    clients.retrieval = clients.managed_rag = clients.embedding = clients.bedrock = clients.endpoint = fake
    clients.search = lambda path, body: (json.dumps(body, allow_nan=False), OpenSearchResponse(200, {"hits": {"hits": []}}))[1]
    handler.configure(settings=s, backend=aws_backend.build(s, clients))


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=8)
filter_values = st.one_of(json_scalars, st.lists(json_scalars, max_size=25))
bodies = st.fixed_dictionaries(
    {},
    optional={
        "question": st.one_of(st.text(max_size=260), json_values),
        "mode": st.one_of(st.sampled_from(MODES), json_values),
        "retriever": st.one_of(st.sampled_from(RETRIEVERS), json_values),
        "top_k": st.one_of(st.integers(-3, 15), json_values),
        "filters": st.one_of(st.dictionaries(st.sampled_from(["category", "year", "other", ""]), filter_values, max_size=3), json_values),
    },
) | st.dictionaries(st.text(max_size=12), json_values, max_size=5) | json_values


def _check(response: dict) -> dict:
    assert response["statusCode"] < 500, response
    body = json.loads(response["body"])
    if response["statusCode"] == 200:
        assert set(body) == {"answer", "citations", "mode", "generator", "model", "model_version", "timings_ms", "usage"}
        assert all(c["n"] >= 1 for c in body["citations"])
    else:
        assert body["message"].startswith(f"{body['field']}:") and body["request_id"] == "req-123"
    return body


@hsettings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, generator=st.sampled_from(["endpoint", "bedrock"]))
def test_random_json_bodies_never_produce_a_5xx(body, generator):
    _configure(generator)
    try:
        text = json.dumps(body)  # NaN/Infinity appear as bare words, which must be a 400
        _check(handler.main(event(raw=text), None))
    finally:
        handler.configure()


@hsettings(max_examples=100, deadline=None)
@given(raw=st.one_of(st.text(max_size=200), st.binary(max_size=100).map(lambda b: b.decode("latin-1"))), b64=st.booleans())
def test_random_raw_bodies_never_produce_a_5xx(raw, b64):
    _configure("endpoint")
    try:
        evt = event(raw=raw)
        evt["isBase64Encoded"] = b64
        _check(handler.main(evt, None))
    finally:
        handler.configure()


def test_the_strategies_reach_valid_requests():
    """Guards the property tests against vacuity: a valid body from the same strategy succeeds."""
    _configure("bedrock")
    try:
        body = _check(handler.main(event({"question": "q?", "filters": {"year": [2024]}, "retriever": "opensearch"}), None))
        assert body["answer"] == "Answer [1]." and not math.isnan(body["timings_ms"]["total"])
    finally:
        handler.configure()
    assert ENV["FILTERABLE_FIELDS"] == "category,year"
