"""Bad input -> 400 naming the field; AWS failures -> 429/502/503/504/500, never a leaked detail."""

from __future__ import annotations

import base64
import json
import types

import pytest
from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

from query import aws_backend, handler
from shared import aws_clients
from shared.opensearch_http import OpenSearchResponse, OpenSearchTimeout
from tests.test_query_helpers import (  # noqa: F401  (wired is a fixture)
    ENV,
    call,
    described,
    client_error,
    endpoint_response,
    event,
    retrieve_response,
    settings,
    stream,
    wired,
)

Q = "What is hybrid search?"


@pytest.mark.parametrize(
    "body, field, fragment",
    [
        ({}, "question", "required"),
        ({"question": ""}, "question", "empty"),
        ({"question": "   \n\t"}, "question", "empty"),
        ({"question": "x" * 201}, "question", "longer than 200"),
        ({"question": 42}, "question", "string"),
        ({"question": ["q"]}, "question", "string"),
        ({"question": Q, "mode": "chat"}, "mode", "one of: rag, kb, prompt"),
        ({"question": Q, "mode": 1}, "mode", "string"),
        ({"question": Q, "retriever": "bing"}, "retriever", "one of: kb, opensearch"),
        ({"question": Q, "mode": "kb", "retriever": "opensearch"}, "retriever", "mode 'kb'"),
        ({"question": Q, "top_k": 0}, "top_k", "between 1 and 10"),
        ({"question": Q, "top_k": 11}, "top_k", "between 1 and 10"),
        ({"question": Q, "top_k": "3"}, "top_k", "integer"),
        ({"question": Q, "top_k": True}, "top_k", "integer"),
        ({"question": Q, "top_k": 2.5}, "top_k", "integer"),
        ({"question": Q, "temperature": 1}, "temperature", "unknown field"),
        ({"question": Q, "filters": []}, "filters", "object"),
        ({"question": Q, "filters": {"author": "x"}}, "filters.author", "not a filterable field"),
        ({"question": Q, "filters": {"category": {"gt": 1}}}, "filters.category", "strings or numbers"),
        ({"question": Q, "filters": {"category": []}}, "filters.category", "1 to 20"),
        ({"question": Q, "filters": {"year": 2**60}}, "filters.year", "finite"),
        ({"question": Q, "mode": "prompt", "filters": {"category": "a"}}, "filters", "does not retrieve"),
        ([Q], "body", "object"),
        ("just a string", "body", "object"),
    ],
)
def test_bad_input_is_400_naming_the_field(wired, body, field, fragment):
    wired()
    status, response, _ = call(body)
    assert status == 400, response
    assert response["field"] == field
    assert response["message"].startswith(f"{field}:") and fragment in response["message"]
    assert response["request_id"] == "req-123"


def test_kb_mode_rejects_questions_over_the_retrieve_and_generate_limit(wired):
    wired(MAX_QUESTION_CHARS="5000")
    status, response, _ = call({"question": "x" * 1001, "mode": "kb"})
    assert status == 400 and response["field"] == "question" and "1000" in response["message"]


@pytest.mark.parametrize("raw", ["{", "{'question': 'x'}", "", "NaN", '{"question": NaN}', '{"question": "q", "top_k": Infinity}', "[" * 100000])
def test_invalid_json_is_400(wired, raw):
    wired()
    status, response, _ = call(raw=raw)
    assert status == 400 and response["field"] == "body"


def test_base64_bodies_are_decoded_and_bad_base64_rejected(wired):
    stubs = wired(endpoint=described())
    stubs.sagemaker.add_response("invoke_endpoint", endpoint_response("Baseline."), None)
    good = event(raw=base64.b64encode(json.dumps({"question": Q, "mode": "prompt"}).encode()).decode())
    good["isBase64Encoded"] = True
    assert handler.main(good, None)["statusCode"] == 200
    bad = event(raw="%%%not-base64")
    bad["isBase64Encoded"] = True
    response = handler.main(bad, None)
    assert response["statusCode"] == 400 and json.loads(response["body"])["field"] == "body"


def test_unknown_route_is_404_and_non_dict_event_is_400(wired):
    wired()
    assert call({"question": Q}, method="DELETE")[0] == 404
    assert handler.main("not an event", None)["statusCode"] == 400


# Every AWS error a call can meet, with the status and message the caller gets. Each entry is
# one branch of shared.api.classify: a wrong entry in the mapping fails exactly one case here.
@pytest.mark.parametrize(
    "code, http_status, status, message",
    [
        ("ThrottlingException", 429, 429, "too many requests"),
        ("ServiceQuotaExceededException", 400, 429, "too many requests"),
        ("DependencyFailedException", 424, 502, "the model or a dependency returned an error"),
        ("BadGatewayException", 502, 502, "the model or a dependency returned an error"),
        ("AccessDeniedException", 403, 500, "denied access"),
        ("ResourceNotFoundException", 404, 500, "was not found"),
        ("ValidationException", 400, 500, "internal error"),  # Retrieve is not a model: our request was wrong
        ("InternalServerException", 500, 502, "a dependency returned an error"),
        ("ConflictException", 409, 500, "internal error"),
        ("SomethingNew", 408, 504, "did not answer in time"),
        ("SomethingNew", 413, 502, "a dependency returned an error"),
        ("SomethingNew", 503, 503, "unavailable"),
        ("SomethingNew", 504, 504, "did not answer in time"),
        ("SomethingNew", 418, 500, "internal error"),
    ],
)
def test_retrieve_failures_are_mapped(wired, code, http_status, status, message):
    stubs = wired(endpoint=described())
    client_error(stubs.agent, "retrieve", code, http_status)
    got, response, headers = call({"question": Q})
    assert got == status, response
    assert message in response["message"]
    assert "secret detail" not in json.dumps(response) and code not in json.dumps(response)
    assert response["request_id"] == "req-123"
    assert ("Retry-After" in headers) == (status in (429, 503))


def _model_error(stubs, original_status: int) -> None:
    stubs.sagemaker.add_client_error(
        "invoke_endpoint", service_error_code="ModelError", service_message="secret detail ModelError", http_status_code=424,
        modeled_fields={"OriginalStatusCode": original_status, "OriginalMessage": "secret container text",
                        "LogStreamArn": "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/x"},
    )


@pytest.mark.parametrize(
    "original, status, message",
    [
        (400, 502, "the model returned an error"),  # the container refused our request (e.g. prompt too long)
        (413, 502, "the model returned an error"),
        (500, 502, "the model returned an error"),
        (429, 429, "too many requests"),
        (503, 503, "the model is unavailable"),
        (408, 504, "the model did not answer in time"),
        (504, 504, "the model did not answer in time"),
    ],
)
def test_a_sagemaker_model_error_is_mapped_by_the_containers_own_status(wired, original, status, message):
    stubs = wired(endpoint=described())
    _model_error(stubs, original)
    got, response, headers = call({"question": Q, "mode": "prompt"})
    assert (got, response["message"].startswith(message)) == (status, True), response
    assert "secret" not in json.dumps(response)
    assert ("Retry-After" in headers) == (status in (429, 503))


@pytest.mark.parametrize(
    "code, http_status, status",
    [
        ("ModelNotReadyException", 429, 503),  # a 429 that is not a throttle: the model is loading
        ("InternalDependencyException", 530, 502),
        ("ThrottlingException", 429, 429),
        ("ServiceUnavailable", 503, 503),
        ("InternalFailure", 500, 502),
        ("ValidationError", 400, 502),  # the endpoint refused the request
    ],
)
def test_endpoint_failures_are_mapped(wired, code, http_status, status):
    stubs = wired(endpoint=described())
    stubs.agent.add_response("retrieve", retrieve_response("x"), None)
    client_error(stubs.sagemaker, "invoke_endpoint", code, http_status)
    if code == "ValidationError":  # the generator re-reads the endpoint: still there, so the error stands
        stubs.control.add_response("describe_endpoint", described(), None)
    got, response, headers = call({"question": Q})
    assert got == status, response
    assert ("Retry-After" in headers) == (status in (429, 503))


def test_an_unreadable_endpoint_answer_is_502(wired):
    stubs = wired(endpoint=described())
    stubs.sagemaker.add_response("invoke_endpoint", {"Body": stream(b"<html>oops</html>")}, None)
    assert call({"question": Q, "mode": "prompt"})[0] == 502


@pytest.mark.parametrize(
    "code, http_status, status, message",
    [
        ("ModelTimeoutException", 408, 504, "did not answer in time"),
        ("ModelErrorException", 424, 502, "returned an error"),
        ("ModelNotReadyException", 429, 503, "not ready"),
        ("ThrottlingException", 429, 429, "too many requests"),
        ("AccessDeniedException", 403, 500, "denied access"),  # e.g. model access not enabled in the account
        ("ResourceNotFoundException", 404, 500, "was not found"),
        ("ValidationException", 400, 502, "the model rejected the request"),  # e.g. input too long for the model
        ("ServiceUnavailableException", 503, 503, "unavailable"),
        ("InternalServerException", 500, 502, "returned an error"),
    ],
)
def test_bedrock_generation_failures_are_mapped(wired, code, http_status, status, message):
    stubs = wired(DEFAULT_GENERATOR="bedrock")
    client_error(stubs.runtime, "converse", code, http_status)
    got, response, _ = call({"question": Q, "mode": "prompt"})
    assert got == status and message in response["message"], response


@pytest.mark.parametrize("code, http_status, status", [("ValidationException", 400, 502), ("DependencyFailedException", 424, 502), ("AccessDeniedException", 403, 500)])
def test_managed_rag_failures_are_mapped(wired, code, http_status, status):
    stubs = wired()
    client_error(stubs.agent, "retrieve_and_generate", code, http_status)
    assert call({"question": Q, "mode": "kb"})[0] == status


def test_converse_without_text_is_502(wired):
    stubs = wired(DEFAULT_GENERATOR="bedrock")
    stubs.runtime.add_response("converse", {"output": {"message": {"role": "assistant", "content": []}}, "stopReason": "content_filtered",
                                            "usage": {"inputTokens": 1, "outputTokens": 0, "totalTokens": 1}, "metrics": {"latencyMs": 1}}, None)
    assert call({"question": Q, "mode": "prompt"})[0] == 502


class OpenSearchTransportError(Exception):
    """Stand-ins with the class names of shared.opensearch_http: the
    mapping recognises them by name, so it holds whichever module defines them."""


class OpenSearchConnectionError(OpenSearchTransportError):
    pass


class OpenSearchSomethingElse(OpenSearchTransportError):
    pass


@pytest.mark.parametrize(
    "result, status",
    [
        (OpenSearchResponse(status=429, body={"error": "too many"}), 429),
        (OpenSearchResponse(status=503, body="unavailable"), 503),
        (OpenSearchResponse(status=500, body="boom"), 502),
        (OpenSearchResponse(status=504, body="gateway timeout"), 504),
        (OpenSearchResponse(status=413, body="too large"), 502),
        (OpenSearchResponse(status=403, body={"error": "no permissions for [indices:data/read/search]"}), 500),
        (OpenSearchResponse(status=404, body={"error": "no such index [indices:data]"}), 500),
        (OpenSearchResponse(status=400, body={"error": "parsing_exception indices:data"}), 500),
        (OpenSearchTimeout("no answer"), 504),
        (OpenSearchConnectionError("TLS handshake failed"), 502),
        (OpenSearchSomethingElse("reset"), 502),
    ],
)
def test_opensearch_failures_are_mapped(wired, result, status):
    stubs = wired(DEFAULT_GENERATOR="bedrock")
    stubs.runtime.add_response("invoke_model", {"body": stream({"embedding": [0, 0, 0, 1]}), "contentType": "application/json"}, None)
    stubs.search.responses.append(result)
    got, response, headers = call({"question": Q, "retriever": "opensearch"})
    assert got == status, response
    assert "indices:data" not in json.dumps(response) and "TLS" not in json.dumps(response)
    assert ("Retry-After" in headers) == (status in (429, 503))


def test_wrong_embedding_size_is_502(wired):
    stubs = wired(DEFAULT_GENERATOR="bedrock")
    stubs.runtime.add_response("invoke_model", {"body": stream({"embedding": [0, 1]}), "contentType": "application/json"}, None)
    assert call({"question": Q, "retriever": "opensearch"})[0] == 502


class _Raises:
    def __init__(self, error):
        self.error = error

    def __getattr__(self, name):
        def fail(**kwargs):
            raise self.error

        return fail


@pytest.mark.parametrize(
    "error, status",
    [
        (ReadTimeoutError(endpoint_url="https://x"), 504),
        (ConnectTimeoutError(endpoint_url="https://x"), 504),
        (aws_clients.DeadlineExceeded("late"), 504),
        (EndpointConnectionError(endpoint_url="https://x"), 502),
        (KeyError("internal detail"), 500),
        (RuntimeError("internal detail"), 500),
    ],
)
def test_transport_failures_and_bugs_are_mapped(error, status):
    s = settings(DEFAULT_GENERATOR="bedrock")
    clients = aws_backend.AwsClients(s)
    clients.retrieval = _Raises(error)
    handler.configure(settings=s, backend=aws_backend.build(s, clients))
    try:
        got, response, _ = call({"question": Q})
    finally:
        handler.configure()
    assert got == status
    assert "internal detail" not in json.dumps(response) and "x" != response["message"]


def test_a_broken_environment_is_500_with_the_detail_only_in_the_log(monkeypatch, caplog):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    handler.configure()
    got, response, _ = call({"question": Q})
    assert got == 500 and "AWS_REGION" not in response["message"] and response["request_id"] == "req-123"
    assert any("environment variable AWS_REGION is missing" in str(getattr(r, "error", "")) for r in caplog.records)


def test_clients_have_explicit_timeouts_and_standard_retries(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    clients = aws_backend.AwsClients(settings())
    for client, read_timeout, attempts in ((clients.retrieval, 5.0, 3), (clients.bedrock, 20.0, 2), (clients.endpoint, 20.0, 2)):
        config = client.meta.config
        assert config.connect_timeout == aws_clients.CONNECT_TIMEOUT_S and config.read_timeout == read_timeout
        assert config.retries == {"mode": "standard", "total_max_attempts": attempts}
    assert aws_backend.AwsClients(settings()).retrieval is clients.retrieval  # one per container


def test_the_deadline_stops_an_attempt_that_could_outlive_the_function(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = aws_clients.client("sagemaker-runtime", read_timeout=10.0, max_attempts=2, region="us-east-1")
    aws_clients.set_deadline(types.SimpleNamespace(get_remaining_time_in_millis=lambda: 3000))
    try:
        with pytest.raises(aws_clients.DeadlineExceeded):
            client.invoke_endpoint(EndpointName="e", Body=b"{}")  # refused before any network I/O
    finally:
        aws_clients.set_deadline(None)
    assert aws_clients.remaining_s() is None


def test_the_opensearch_call_gets_at_most_the_time_left(monkeypatch):
    seen = {}
    monkeypatch.setattr("shared.opensearch_http.signed_request", lambda **kw: seen.update(kw) or OpenSearchResponse(200, {}))
    monkeypatch.setattr(aws_clients, "credentials", lambda: None)
    search = aws_backend.AwsClients(settings()).search
    aws_clients.set_deadline(types.SimpleNamespace(get_remaining_time_in_millis=lambda: 3000))
    try:
        search("/i/_search", {})
        assert seen["timeout_s"] <= 2.5 and seen["method"] == "POST" and seen["endpoint"] == ENV["OPENSEARCH_ENDPOINT"]
        aws_clients.set_deadline(types.SimpleNamespace(get_remaining_time_in_millis=lambda: 1200))
        with pytest.raises(aws_clients.DeadlineExceeded):
            search("/i/_search", {})
    finally:
        aws_clients.set_deadline(None)
