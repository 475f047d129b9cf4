"""lambda/shared at its edges: the error mapping for every code and status (the unusual ones too),
the response format, the failure log, the clients' configuration and deadline, the endpoint body
codec's corners, the serving record's messages and the signed OpenSearch request's wire form."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

from shared import api, aws_clients, endpoint_codec, model_record, observability, opensearch_http
from shared.endpoint_codec import EndpointPayloadError

RETRY = {"Retry-After": "2"}


def client_error(code: str | None, status: int = 400, operation: str = "Retrieve", **extra) -> ClientError:
    response: dict = {"ResponseMetadata": {"HTTPStatusCode": status}, **extra}
    if code is not None:
        response["Error"] = {"Code": code, "Message": "detail"}
    return ClientError(response, operation)


@pytest.mark.parametrize("error, mapped", [
    (client_error("ModelError", 424, "InvokeEndpoint", OriginalStatusCode=429), (429, "too many requests; retry later", RETRY)),
    (client_error("ModelError", 424, "InvokeEndpoint", OriginalStatusCode=503), (503, "the model is unavailable; retry later", RETRY)),
    (client_error("ModelError", 424, "InvokeEndpoint", OriginalStatusCode=408), (504, "the model did not answer in time", {})),
    (client_error("ModelError", 424, "InvokeEndpoint", OriginalStatusCode=504), (504, "the model did not answer in time", {})),
    (client_error("ModelError", 424, "InvokeEndpoint", OriginalStatusCode=500), (502, "the model returned an error", {})),
    (client_error("ModelError", 424, "InvokeEndpoint", OriginalStatusCode="429"), (502, "the model returned an error", {})),
    (client_error("ModelErrorException", 424, "Converse"), (502, "the model or a dependency returned an error", {})),
    (client_error("DependencyFailedException", 424, "RetrieveAndGenerate"), (502, "the model or a dependency returned an error", {})),
    (client_error("ModelNotReadyException", 429, "InvokeModel"), (503, "the model is not ready yet; retry later", RETRY)),
    (client_error("ThrottlingException", 400), (429, "too many requests; retry later", RETRY)),
    (client_error("SomethingNew", 429), (429, "too many requests; retry later", RETRY)),
    (client_error("ModelTimeoutException", 408, "Converse"), (504, "the model or a dependency did not answer in time", {})),
    (client_error("SomethingNew", 408), (504, "the model or a dependency did not answer in time", {})),
    (client_error("SomethingNew", 504), (504, "the model or a dependency did not answer in time", {})),
    (client_error("ServiceUnavailableException", 400), (503, "a dependency is unavailable; retry later", RETRY)),
    (client_error("SomethingNew", 503), (503, "a dependency is unavailable; retry later", RETRY)),
    (client_error("AccessDeniedException", 400), (500, api.ACCESS_DENIED_MESSAGE, {})),
    (client_error("SomethingNew", 403), (500, api.ACCESS_DENIED_MESSAGE, {})),
    (client_error("ResourceNotFoundException", 400), (500, api.NOT_FOUND_MESSAGE, {})),
    (client_error("SomethingNew", 404), (500, api.NOT_FOUND_MESSAGE, {})),
    (client_error("SomethingNew", 405), (500, api.GENERIC_MESSAGE, {})),
    (client_error("ValidationException", 400, "Converse"), (502, "the model rejected the request", {})),
    (client_error("ValidationError", 400, "InvokeEndpoint"), (502, "the model rejected the request", {})),
    (client_error("ValidationException", 400, "Retrieve"), (500, api.GENERIC_MESSAGE, {})),
    (client_error("SomethingNew", 413), (502, "a dependency returned an error", {})),
    (client_error("SomethingNew", 424), (502, "a dependency returned an error", {})),
    (client_error("SomethingNew", 425), (500, api.GENERIC_MESSAGE, {})),
    (client_error("SomethingNew", 500), (502, "a dependency returned an error", {})),
    (client_error("SomethingNew", 499), (500, api.GENERIC_MESSAGE, {})),
    (client_error(None, 430), (500, api.GENERIC_MESSAGE, {})),
    (ReadTimeoutError(endpoint_url="https://x"), (504, "a dependency did not answer in time", {})),
    (ConnectTimeoutError(endpoint_url="https://x"), (504, "a dependency did not answer in time", {})),
    (aws_clients.DeadlineExceeded("late"), (504, "a dependency did not answer in time", {})),
    (opensearch_http.OpenSearchTimeout("POST /i/_search: no answer within 2s"), (504, "a dependency did not answer in time", {})),
    (EndpointConnectionError(endpoint_url="https://x"), (502, "could not reach a dependency", {})),
    (opensearch_http.OpenSearchConnectionError("POST /i/_search: TLS error"), (502, "could not reach a dependency", {})),
    (api.UpstreamError("OpenSearch search", 429), (429, "too many requests; retry later", RETRY)),
    (api.UpstreamError("OpenSearch search", 503), (503, "a dependency is unavailable; retry later", RETRY)),
    (api.UpstreamError("OpenSearch search", 504), (504, "a dependency did not answer in time", {})),
    (api.UpstreamError("OpenSearch search", 408), (504, "a dependency did not answer in time", {})),
    (api.UpstreamError("OpenSearch search", 413), (502, "a dependency returned an error", {})),
    (api.UpstreamError("OpenSearch search", 424), (502, "a dependency returned an error", {})),
    (api.UpstreamError("OpenSearch search", 425), (500, api.GENERIC_MESSAGE, {})),
    (api.UpstreamError("OpenSearch search", 500), (502, "a dependency returned an error", {})),
    (api.UpstreamError("OpenSearch search", 401), (500, api.ACCESS_DENIED_MESSAGE, {})),
    (api.UpstreamError("OpenSearch search", 402), (500, api.GENERIC_MESSAGE, {})),
    (api.UpstreamError("OpenSearch search", 403), (500, api.ACCESS_DENIED_MESSAGE, {})),
    (api.UpstreamError("OpenSearch search", 404), (500, api.NOT_FOUND_MESSAGE, {})),
    (api.UpstreamError("OpenSearch search", 405), (500, api.GENERIC_MESSAGE, {})),
    (EndpointPayloadError("no choices"), (502, "the model returned a response that could not be read", {})),
    (api.ApiError(418, "short and stout", headers={"X-Teapot": "1"}), (418, "short and stout", {"X-Teapot": "1"})),
    (KeyError("bug"), (500, api.GENERIC_MESSAGE, {})),
])
def test_every_failure_maps_to_one_status_and_a_message_that_leaks_nothing(error, mapped):
    assert api.classify(error) == mapped


def test_error_texts_for_the_logs():
    assert str(api.ApiError(400, "question: is required")) == "question: is required"
    assert str(api.UpstreamError("OpenSearch search", 500)) == "OpenSearch search returned HTTP 500: "
    assert str(api.UpstreamError("OpenSearch search", 500, "x" * 900)) == "OpenSearch search returned HTTP 500: " + "x" * 500


def test_responses_are_compact_utf8_json_never_cached():
    response = api.json_response(200, {"answer": "é", "n": [1, 2]}, request_id="r-1", headers={"Retry-After": "2"})
    assert response == {"statusCode": 200, "body": '{"answer":"é","n":[1,2]}',
                        "headers": {"Content-Type": "application/json", "Cache-Control": "no-store", "X-Request-Id": "r-1", "Retry-After": "2"}}
    assert api.json_response(200, {}, request_id=None)["headers"] == {"Content-Type": "application/json", "Cache-Control": "no-store"}
    assert api.json_response(200, {"t": "a\ud800b"})["body"] == '{"t":"a\ufffdb"}'


def test_error_responses_carry_the_field_and_the_request_id_when_there_are_some():
    response = api.error_response(400, "top_k: must be an integer", request_id="r-2", field="top_k")
    assert json.loads(response["body"]) == {"message": "top_k: must be an integer", "field": "top_k", "request_id": "r-2"}
    assert response["headers"]["X-Request-Id"] == "r-2"
    response = api.error_response(500, api.GENERIC_MESSAGE, request_id=None)
    assert json.loads(response["body"]) == {"message": api.GENERIC_MESSAGE} and "X-Request-Id" not in response["headers"]


# --- the failure log ------------------------------------------------------------------------------


def failure(caplog) -> logging.LogRecord:
    (record,) = [r for r in caplog.records if r.getMessage() in ("request failed", "request rejected")]
    return record


def test_a_server_failure_is_logged_in_full_with_its_aws_code_and_stack(caplog):
    try:
        raise client_error("AccessDeniedException", 403, "Converse")
    except ClientError as error:
        observability.log_failure(error, status=500, request_id="r-3", mode="rag")
    record = failure(caplog)
    assert (record.levelname, record.getMessage(), record.status, record.request_id, record.error_type) == (
        "ERROR", "request failed", 500, "r-3", "ClientError")
    assert record.aws_error_code == "AccessDeniedException" and record.mode == "rag"
    assert record.error == "An error occurred (AccessDeniedException) when calling the Converse operation: detail"
    assert record.stack.startswith('Traceback (most recent call last):\n  File "') and "botocore.exceptions.ClientError" in record.stack


def test_a_client_error_is_logged_briefly_and_long_texts_are_cut(caplog):
    observability.log_failure(api.ApiError(499, "x" * 3000), status=499, request_id=None)
    record = failure(caplog)
    assert (record.levelname, record.getMessage(), record.status, record.error_type) == ("INFO", "request rejected", 499, "ApiError")
    assert record.error == "x" * 2000 and not hasattr(record, "stack") and not hasattr(record, "aws_error_code")
    caplog.clear()
    deep = ValueError("y")
    observability.log_failure(deep, status=500, request_id="r")
    assert failure(caplog).levelname == "ERROR" and failure(caplog).stack == "ValueError: y\n"


def test_a_long_stack_keeps_its_end(caplog):
    try:
        raise RuntimeError("z" * 5000)
    except RuntimeError as error:
        observability.log_failure(error, status=502, request_id="r")
    stack = failure(caplog).stack
    assert len(stack) == 4000 and stack == "z" * 3999 + "\n"


# --- clients: configuration and the invocation's deadline ----------------------------------------


@pytest.fixture
def fresh_clients(monkeypatch):
    monkeypatch.setattr(aws_clients, "_clients", {})
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setattr(aws_clients, "_deadline", None)
    yield


def test_clients_get_explicit_timeouts_standard_retries_and_are_cached(fresh_clients):
    client = aws_clients.client("sqs", read_timeout=5.0, region="eu-west-1")
    config = client.meta.config
    assert (config.connect_timeout, config.read_timeout, config.tcp_keepalive) == (2.0, 5.0, True)
    assert config.retries == {"mode": "standard", "total_max_attempts": 3} and client.meta.region_name == "eu-west-1"
    assert aws_clients.client("sqs", read_timeout=5.0, region="eu-west-1") is client
    assert aws_clients.client("sqs", read_timeout=5.0, max_attempts=1, region="eu-west-1").meta.config.retries["total_max_attempts"] == 1


class Request:
    url = "https://sqs.eu-west-1.amazonaws.com/"


def test_no_attempt_starts_that_could_not_finish_before_the_deadline(fresh_clients, monkeypatch):
    client = aws_clients.client("sqs", read_timeout=5.0, region="eu-west-1")
    now = [100.0]
    monkeypatch.setattr(aws_clients.time, "monotonic", lambda: now[0])

    class Context:
        def get_remaining_time_in_millis(self):
            return 6_000

    aws_clients.set_deadline(Context())  # 6 s left, 0.5 s kept back: 5.5 s
    assert aws_clients.remaining_s() == 5.5
    client.meta.events.emit("before-send.sqs.SendMessage", request=Request())  # 5.5 s >= 5 s: goes
    now[0] = 100.6
    with pytest.raises(aws_clients.DeadlineExceeded) as error:
        client.meta.events.emit("before-send.sqs.SendMessage", request=Request())
    assert str(error.value) == "https://sqs.eu-west-1.amazonaws.com/: 4.90s left, an attempt may take 5.00s"
    with pytest.raises(aws_clients.DeadlineExceeded, match=r"^AWS call: "):
        client.meta.events.emit("before-send.sqs.SendMessage", request=None)
    aws_clients.set_deadline(None)
    assert aws_clients.remaining_s() is None
    client.meta.events.emit("before-send.sqs.SendMessage", request=Request())  # no deadline: always goes


def test_without_credentials_there_is_nothing_to_sign_with(monkeypatch):
    class Session:
        def get_credentials(self):
            return None

    monkeypatch.setattr(aws_clients, "_session", Session())
    assert aws_clients.credentials() is None


# --- the endpoint body codec's corners -------------------------------------------------------------


@pytest.mark.parametrize("payload, message", [
    ({"object": "error"}, "endpoint returned an error: unknown error"),
    ({"object": "error", "type": "BadRequestError"}, "endpoint returned an error: BadRequestError"),
    ({"error": {}}, "endpoint returned an error: unknown error"),
    ({"error": {"type": "NotFoundError"}}, "endpoint returned an error: NotFoundError"),
    ({"error": "boom"}, "endpoint returned an error: boom"),
    ({"error": 5}, "endpoint body has no choices"),
    ({"error": ""}, "endpoint body has no choices"),
    ({"choices": [{"message": {"content": None}}]}, "endpoint body has no text in choices[0] (message.content or text)"),
])
def test_what_an_unusable_endpoint_answer_says(payload, message):
    with pytest.raises(EndpointPayloadError) as error:
        endpoint_codec.decode_chat_response(json.dumps(payload).encode())
    assert str(error.value) == message


def test_answers_as_text_bytes_or_bytearray_and_zero_token_counts():
    answer = {"choices": [{"text": "<think>x</think> A <think>y</think>"}], "usage": {"prompt_tokens": 0, "completion_tokens": 0}}
    for body in (json.dumps(answer), json.dumps(answer).encode(), bytearray(json.dumps(answer).encode())):
        generation = endpoint_codec.decode_chat_response(body)
        assert (generation.text, generation.input_tokens, generation.output_tokens) == ("A <think>y</think>", 0, 0)


def test_the_request_body_is_compact_utf8():
    body = endpoint_codec.encode_chat_request(system="s", user="é", max_tokens=1, temperature=2, model="m")
    assert body == ('{"messages":[{"role":"system","content":"s"},{"role":"user","content":"é"}],"max_tokens":1,"temperature":2.0,'
                    '"stream":false,"chat_template_kwargs":{"enable_thinking":false},"model":"m"}').encode()


@pytest.mark.parametrize("kwargs, message", [
    ({"system": 5}, "system message must be a string"),
    ({"user": " "}, "user message must be a non-empty string"),
    ({"temperature": True}, "temperature must be a number in 0.0..2.0, got True"),
    ({"temperature": "0.2"}, "temperature must be a number in 0.0..2.0, got '0.2'"),
    ({"temperature": float("nan")}, "temperature must be a number in 0.0..2.0, got nan"),
    ({"temperature": 2.01}, "temperature must be a number in 0.0..2.0, got 2.01"),
    ({"temperature": -0.01}, "temperature must be a number in 0.0..2.0, got -0.01"),
])
def test_request_arguments_the_container_would_refuse(kwargs, message):
    arguments = {"system": "s", "user": "u", "max_tokens": 1, "temperature": 0.0, "model": "", **kwargs}
    with pytest.raises(ValueError) as error:
        endpoint_codec.encode_chat_request(**arguments)
    assert str(error.value) == message


# --- the serving record's messages ---------------------------------------------------------------


@pytest.mark.parametrize("call, message", [
    (lambda: model_record.parse_record("7|models/a/|x"), "record must be 'none' or '<version>|<model prefix>', got '7|models/a/|x'"),
    (lambda: model_record.parse_record("7"), "record must be 'none' or '<version>|<model prefix>', got '7'"),
    (lambda: model_record.format_record("0", "models/a/"), "version must be a positive integer, got '0'"),
    (lambda: model_record.format_record(7, "x/"), "model prefix must be under models/ and end in '/', got 'x/'"),
    (lambda: model_record.parse_power("ON"), "endpoint power must be 'on' or 'off', got 'ON'"),
    (lambda: model_record.versions_from_config_name("cfg"), "endpoint config name 'cfg' does not carry model versions"),
    (lambda: model_record.record_parameter("dev", "bedrock"), "role must be one of ('base', 'finetuned'), got 'bedrock'"),
])
def test_what_a_bad_record_says(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert str(error.value) == message


# --- the signed request on the wire ---------------------------------------------------------------


class Recorder(BaseHTTPRequestHandler):
    seen: list = []

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        Recorder.seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers), "body": self.rfile.read(length)})
        data = b'{"ok": true}' if self.command != "HEAD" else b""
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


def test_the_request_is_signed_json_with_a_body_only_when_there_is_one():
    Recorder.seen = []
    server = HTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}/"
        creds = Credentials("AKIDTEST", "secret", "token")
        got = opensearch_http.signed_request(endpoint=base, method="GET", path="/rag-documents", region="eu-west-1", credentials=creds, timeout_s=2.0)
        posted = opensearch_http.signed_request(endpoint=base, method="POST", path="/i/_search", region="eu-west-1", credentials=creds,
                                                body={"q": "é"}, timeout_s=2.0)
    finally:
        server.shutdown()
        server.server_close()
    assert got == posted == opensearch_http.OpenSearchResponse(200, {"ok": True})
    first, second = Recorder.seen
    assert (first["method"], first["path"], first["body"]) == ("GET", "/rag-documents", b"")
    assert first["headers"]["Content-Type"] == "application/json" and "Content-Length" not in first["headers"]
    assert (second["path"], second["body"]) == ("/i/_search", b'{"q":"\\u00e9"}')  # compact JSON
    assert second["headers"]["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDTEST/")


def test_a_long_transport_reason_is_cut_to_200_characters():
    assert opensearch_http._reason(ValueError("x" * 186)) == "ValueError: " + "x" * 186  # exactly 198
    assert opensearch_http._reason(ValueError("x" * 188)) == "ValueError: " + "x" * 188  # exactly 200
    cut = opensearch_http._reason(ValueError("x" * 189))
    assert cut == "ValueError: " + "x" * 185 + "..." and len(cut) == 200


def test_logs_and_metrics_are_named_from_the_environment_once_per_container(monkeypatch):
    monkeypatch.setattr(observability, "_logger", None)
    monkeypatch.setattr(observability, "_metrics", None)
    monkeypatch.delenv("POWERTOOLS_SERVICE_NAME", raising=False)
    monkeypatch.delenv("POWERTOOLS_METRICS_NAMESPACE", raising=False)
    logger, metrics = observability.logger(), observability.metrics()
    assert (logger.service, metrics.namespace) == ("rag", "Rag")
    assert observability.logger() is logger and observability.metrics() is metrics
    monkeypatch.setattr(observability, "_logger", None)
    monkeypatch.setattr(observability, "_metrics", None)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "query")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "RagQuery")
    assert (observability.logger().service, observability.metrics().namespace) == ("query", "RagQuery")


def test_log_times_are_utc_whatever_the_machines_zone(monkeypatch, capsys):
    import time

    monkeypatch.setattr(observability, "_logger", None)
    # A logger never configured before: Powertools sets a logger name's formatter only once per process.
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "utc-check")
    monkeypatch.delitem(__import__("logging").Logger.manager.loggerDict, "utc-check", raising=False)
    monkeypatch.setenv("TZ", "JST-9")  # POSIX form: no tz database needed
    time.tzset()
    try:
        logger = observability.logger()
        for handler in logger.handlers:  # Powertools writes to the stdout it found when made
            monkeypatch.setattr(handler, "stream", __import__("sys").stdout)
        logger.info("tick")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    (line,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"tick"' in line]
    assert line["timestamp"].endswith("+0000")


def test_a_failure_with_an_odd_response_attribute_is_still_logged(caplog):
    class Odd(Exception):
        response = {"ResponseMetadata": {}}

    try:
        raise Odd("x")
    except Odd as error:
        observability.log_failure(error, status=502, request_id="r")
    record = failure(caplog)
    assert record.error_type == "Odd" and not hasattr(record, "aws_error_code")
    lines = record.stack.splitlines()
    assert lines[0] == "Traceback (most recent call last):" and lines[1].startswith('  File "') and lines[-1].endswith("Odd: x")


def test_the_sdk_region_is_the_sessions(monkeypatch):
    class Session:
        def get_config_variable(self, name):
            return {"region": "eu-west-3"}.get(name)

    monkeypatch.setattr(aws_clients, "_session", Session())
    assert aws_clients.region() == "eu-west-3"
