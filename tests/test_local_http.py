"""The local HTTP front at the wire: raw requests (chunked bodies, bad or oversized lengths,
keep-alive, other methods), the access log line, the events it hands the handler, and what
closing the server restores. A two-document folder and the fast FakeEmbedder: the answers'
quality is test_local_server.py's business."""

from __future__ import annotations

import io
import itertools
import json
import re
import socket
from urllib.parse import urlsplit

import pytest

from local import app, server
from query import handler
from shared import observability
from tests.local_support import FakeEmbedder
from tests.test_local_server import no_aws  # noqa: F401  (the fixture: no AWS credentials leak in)


@pytest.fixture(scope="module")
def running(tmp_path_factory, no_aws):  # noqa: F811
    folder = tmp_path_factory.mktemp("docs")
    (folder / "keys.md").write_text("KMS rotates the key material every year.")
    (folder / "logs.md").write_text("Audit logs are kept for a year in CloudWatch Logs.")
    mode = app.LocalMode(app.LocalConfig(documents=folder, cache_dir=tmp_path_factory.mktemp("cache")), embedder=FakeEmbedder())
    log = io.StringIO()
    ticks = itertools.count()
    with server.LocalServer(mode, 0, log=log, clock=lambda: next(ticks) * 0.25) as local:  # each request takes 250 ms
        local.log = log
        yield local


def exchange(local, raw: bytes) -> tuple[int, dict[str, str], dict]:
    """One raw HTTP/1.1 request the server answers and then hangs up on (it refused the body):
    the status, headers (lower-case names) and JSON body of the answer."""
    address = urlsplit(local.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
        connection.sendall(raw)
        reader = connection.makefile("rb")
        status = int(reader.readline().split()[1])
        headers = {}
        while (line := reader.readline().decode()) not in ("\r\n", ""):
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
        body = reader.read(int(headers["content-length"]))
        assert reader.read(1) == b""  # closed: the unread body cannot be taken for the next request
    return status, headers, json.loads(body)


@pytest.mark.parametrize("coding", ["chunked", "Chunked", "gzip, chunked"])
def test_a_chunked_body_is_refused_with_411_and_the_connection_closed(running, coding):
    status, headers, body = exchange(running, f"POST /v1/query HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {coding}\r\n\r\n0\r\n\r\n".encode())
    assert status == 411 and body["message"] == "send the body with a Content-Length"
    assert re.fullmatch(r"[0-9a-f-]{36}", body["request_id"]) and body["request_id"] == headers["x-request-id"]
    assert headers["content-type"] == "application/json" and headers["server"].startswith("rag-local ")


def test_a_post_without_a_body_reaches_the_handler_as_no_body(running):
    status, headers, body = exchange(running, b"POST /v1/query HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 400 and body["message"] == "body: a JSON object is required"
    assert re.fullmatch(r"[0-9a-f-]{36}", body["request_id"]) and body["request_id"] == headers["x-request-id"]  # the server's id


@pytest.mark.parametrize("length", ["abc", "-1", str(server.MAX_REQUEST_BYTES + 1)])
def test_a_bad_or_oversized_length_is_refused_with_413_before_reading(running, length):
    status, headers, body = exchange(running, f"POST /v1/query HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode())
    assert status == 413 and body["message"] == f"body: larger than {server.MAX_REQUEST_BYTES} bytes"
    assert re.fullmatch(r"[0-9a-f-]{36}", body["request_id"]) and body["request_id"] == headers["x-request-id"]


def test_a_body_at_the_servers_limit_reaches_the_handler(running):
    payload = b" " * server.MAX_REQUEST_BYTES
    status, _, body = exchange(running, f"POST /v1/query HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload)
    assert status == 400 and body["field"] == "body" and "larger than 65536 bytes" in body["message"]  # the handler's own limit


def test_keep_alive_serves_several_requests_on_one_connection_and_logs_each(running):
    address = urlsplit(running.url)
    question = json.dumps({"question": "How often is the key material rotated?"}).encode()
    with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
        reader = connection.makefile("rb")
        for raw in (
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
            f"POST /v1/query?verbose=1 HTTP/1.1\r\nHost: x\r\nContent-Length: {len(question)}\r\n\r\n".encode() + question,
            b"DELETE /v1/query HTTP/1.1\r\nHost: x\r\n\r\n",
        ):
            connection.sendall(raw)
            status_line = reader.readline().decode()
            length = 0
            while (line := reader.readline().decode()) != "\r\n":
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":")[1])
                assert not line.lower().startswith("connection: close")
            body = json.loads(reader.read(length))
            if raw.startswith(b"POST"):
                assert status_line.startswith("HTTP/1.1 200") and body["citations"][0]["source"] == "keys.md"
            elif raw.startswith(b"DELETE"):
                assert status_line.startswith("HTTP/1.1 404") and "POST /query" in body["message"]
    lines = running.log.getvalue().splitlines()  # a request's line is written before the next one is read
    for line in ('127.0.0.1 "GET /health" 200 250.0 ms', '127.0.0.1 "POST /v1/query?verbose=1" 200 250.0 ms'):
        assert line in lines, lines


@pytest.mark.parametrize(
    "target,resource,path",
    [
        ("/v1/query", "/query", "/v1/query"),
        ("/v1/query/", "/query", "/v1/query"),
        ("/query", "/query", "/query"),
        ("/v1/health", "/health", "/v1/health"),
        ("/v1", "/v1", "/v1"),
        ("/v1queries", "/v1queries", "/v1queries"),
        ("/", "/", "/"),
        ("/v1/other", "/other", "/v1/other"),
        ("/v1/healthX", "/healthX", "/v1/healthX"),
    ],
)
def test_the_event_routes_with_or_without_the_stage_prefix(target, resource, path):
    event = server.to_event("GET", target, {}, b"", "rid", "10.0.0.1")
    assert (event["resource"], event["path"]) == (resource, path)
    assert event["body"] is None and event["isBase64Encoded"] is False and event["queryStringParameters"] is None
    assert event["requestContext"] == {"requestId": "rid", "stage": "v1", "identity": {"sourceIp": "10.0.0.1"}}


def test_a_body_that_is_not_utf8_is_passed_on_base64_encoded():
    event = server.to_event("POST", "/v1/query?a=1&b=two", {"X": "y"}, b"\xff\xfe", "rid", "127.0.0.1")
    assert (event["body"], event["isBase64Encoded"]) == ("//4=", True)
    assert event["queryStringParameters"] == {"a": "1", "b": "two"} and event["headers"] == {"X": "y"}


def test_a_server_writes_one_access_line_per_request_to_its_log(tmp_path, no_aws):  # noqa: F811
    mode = app.LocalMode(app.LocalConfig(documents=tmp_path, cache_dir=tmp_path / "cache"), embedder=FakeEmbedder())
    log = io.StringIO()
    with server.LocalServer(mode, 0, log=log) as local:
        exchange(local, b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert re.fullmatch(r'127\.0\.0\.1 "GET /v1/health" 200 \d+\.\d ms\n', log.getvalue())


def test_closing_a_server_that_never_started_restores_the_handler(tmp_path, no_aws):  # noqa: F811
    mode = app.LocalMode(app.LocalConfig(documents=tmp_path, cache_dir=tmp_path / "cache"), embedder=FakeEmbedder())
    local = server.LocalServer(mode, 0, log=None)
    assert handler._backend is mode.backend and isinstance(observability._metrics, server.DiscardedMetrics)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", local.url) and not local.url.endswith(":0")
    local.close()  # returns at once: no serve_forever to wait for
    assert handler._backend is None and handler._settings is None and observability._metrics is None
