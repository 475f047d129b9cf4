"""The harness's HTTP client against a scripted server on 127.0.0.1: what it retries and how long it
waits (an injected sleep: no real waiting), what it gives up on, and the one line each health
problem becomes."""

from __future__ import annotations

import socket

import pytest

from evaluation import client
from evaluation.client import Reply, Target, TargetError
from tests.json_api_stub import JsonApiStub as Server

OK = (200, {"status": "ok", "answer": "x"}, {})


def test_a_query_is_posted_as_utf8_json_to_the_api_base():
    sleeps: list[float] = []
    with Server(OK) as server:
        reply = Target(server.url + "/", sleep=sleeps.append).query({"question": "速さは？", "mode": "rag"})
    assert (reply.status, reply.body, reply.attempts, reply.waited_ms, reply.error, reply.ok) == (200, {"status": "ok", "answer": "x"}, 1, 0.0, None, True)
    assert reply.headers["content-type"] == "application/json" and reply.elapsed_ms > 0
    [request] = server.requests
    assert (request["method"], request["path"]) == ("POST", "/v1/query")
    assert request["body"] == '{"question": "速さは？", "mode": "rag"}'.encode("utf-8")
    assert request["headers"]["content-type"] == "application/json" and request["headers"]["accept"] == "application/json"
    assert sleeps == []


def test_throttling_is_retried_after_retry_after_or_an_exponential_backoff():
    sleeps: list[float] = []
    with Server((429, {"message": "slow"}, {"Retry-After": "0.2"}), (503, {"message": "busy"}, {}), (503, {}, {}), OK) as server:
        reply = Target(server.url, sleep=sleeps.append).query({"question": "q"})
    assert reply.ok and reply.attempts == 4 and len(server.requests) == 4
    # waits: Retry-After 0.2 s, then no header: 2 ** (attempt - 1) = 2 s, 4 s
    assert sleeps == pytest.approx([0.2, 2.0, 4.0], abs=0.05)
    assert reply.waited_ms == pytest.approx(6200, abs=50)


def test_a_long_retry_after_is_capped_and_the_last_attempt_answers_as_it_is():
    sleeps: list[float] = []
    with Server((429, {"message": "slow down"}, {"Retry-After": "3600"})) as server:
        reply = Target(server.url, sleep=sleeps.append, max_attempts=3, max_wait_s=5).query({"question": "q"})
    assert sleeps == pytest.approx([5.0, 5.0], abs=0.05)
    assert (reply.status, reply.attempts, reply.ok, reply.message()) == (429, 3, False, "HTTP 429: slow down")
    assert len(server.requests) == 3


def test_connection_failures_are_retried_then_reported():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleeps: list[float] = []
    reply = Target(f"http://127.0.0.1:{port}", sleep=sleeps.append, max_attempts=4, max_wait_s=3).query({"question": "q"})
    assert sleeps == [1.0, 2.0, 3.0]  # 2 ** (attempt - 1), at most max_wait_s
    assert (reply.status, reply.body, reply.attempts, reply.waited_ms) == (0, None, 4, 6000.0)
    assert reply.error.startswith("connection failed: [Errno 111] Connection refused") and reply.message() == reply.error
    with pytest.raises(TargetError) as caught:
        Target(f"http://127.0.0.1:{port}", sleep=sleeps.append).health()
    assert str(caught.value).startswith(f"cannot reach http://127.0.0.1:{port}/v1/health (connection failed: ")
    assert str(caught.value).endswith("): is the server running and the URL right?")
    assert sleeps[3:] == [1.0]  # health tries twice


def test_a_silent_server_is_a_timeout_not_a_retry():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        reply = Target(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout_s=0.05, sleep=lambda s: None).query({"question": "q"})
    finally:
        listener.close()
    assert (reply.status, reply.attempts, reply.error) == (0, 1, "no answer within 0.05 s")


@pytest.mark.parametrize("body, headers, message", [
    (b"<html>oops</html>", {"Content-Type": "text/html"}, "HTTP 502: the answer is not JSON"),
    (b"\xff\xfe", {}, "HTTP 502: the answer is not JSON"),
    ({"message": "upstream timed out", "request_id": "r-1"}, {}, "HTTP 502: upstream timed out"),
    ({"message": 42}, {}, "HTTP 502"),
    (b"", {}, "HTTP 502"),
])
def test_an_error_answer_keeps_its_message(body, headers, message):
    with Server((502, body, headers)) as server:
        reply = Target(server.url, sleep=lambda s: None).query({"question": "q"})
    assert reply.message() == message and not reply.ok and reply.attempts == 1


def test_only_a_json_object_is_an_answer():
    with Server((200, [1, 2], {})) as server:
        reply = Target(server.url).query({"question": "q"})
    assert (reply.status, reply.body, reply.ok, reply.message()) == (200, None, False, "HTTP 200")
    assert Reply(200, {"message": "fine"}, 1.0).message() == "HTTP 200: fine"


@pytest.mark.parametrize("answer, message", [
    ((403, {"message": "Forbidden"}, {}), "{base}health refused the request (403): the API needs SigV4-signed calls from a principal "
                                          "allowed execute-api:Invoke (use --stage, or credentials with that permission)"),
    ((404, {"message": "Not Found"}, {}), "{base}health answered HTTP 404: Not Found: is this the query API (GET /v1/health)?"),
    ((200, {"status": "degraded"}, {}), "{base}health says status='degraded', not 'ok'"),
    ((200, {"answer": "x"}, {}), "{base}health says status=None, not 'ok'"),
])
def test_health_problems_are_one_line(answer, message):
    with Server(answer) as server:
        target = Target(server.url, sleep=lambda s: None)
        with pytest.raises(TargetError) as caught:
            target.health()
    assert str(caught.value) == message.format(base=target.base)
    assert [r["method"] + " " + r["path"] for r in server.requests] == ["GET /v1/health"]


def test_a_signer_signs_each_request_and_a_broken_one_stops_the_run():
    seen: list[tuple] = []

    def signer(method, url, data, headers):
        seen.append((method, url, data, dict(headers)))
        return {**headers, "Authorization": "signed"}

    with Server(OK) as server:
        assert Target(server.url, signer=signer).query({"q": 1}).ok
        assert server.requests[0]["headers"]["authorization"] == "signed"
    assert seen == [("POST", server.url + "/v1/query", b'{"q": 1}', {"Content-Type": "application/json", "Accept": "application/json"})]

    def expired(*args):
        raise RuntimeError("the SSO session has expired")

    with pytest.raises(TargetError) as caught:
        Target("https://abc.execute-api.eu-west-1.amazonaws.com/v1", signer=expired).query({"q": 1})
    assert str(caught.value) == ("cannot sign the request with your AWS credentials (the SSO session has expired): refresh them "
                                 "(e.g. aws sso login) and run again; answers so far are cached")


def test_the_sigv4_signature_covers_the_body_and_the_json_headers(monkeypatch):
    from datetime import datetime

    import botocore.auth
    from botocore.credentials import Credentials

    class Frozen(datetime):
        @classmethod
        def utcnow(cls):
            return datetime(2026, 11, 30, 12, 0, 0)

        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 11, 30, 12, 0, 0, tzinfo=tz)

    monkeypatch.setattr(botocore.auth.datetime, "datetime", Frozen)
    sign = client.sigv4_signer(Credentials("AKIDEXAMPLE", "secret"), "eu-west-1")
    url = "https://abc.execute-api.eu-west-1.amazonaws.com/v1/query"
    json_headers = {"Content-Type": "application/json", "Accept": "application/json"}
    one = sign("POST", url, b'{"question": "a"}', json_headers)
    other = sign("POST", url, b'{"question": "b"}', json_headers)
    assert one["Content-Type"] == "application/json" and one["X-Amz-Date"] == "20261130T120000Z"
    assert "SignedHeaders=accept;content-type;host;x-amz-date," in one["Authorization"]
    assert one["Authorization"] != other["Authorization"]  # the body is signed


@pytest.mark.parametrize("url, base", [
    ("http://127.0.0.1:8787", "http://127.0.0.1:8787/v1/"),
    ("  http://127.0.0.1:8787/  ", "http://127.0.0.1:8787/v1/"),
    ("https://api.example.com/prod/v1", "https://api.example.com/prod/v1/"),
    ("https://api.example.com/prod?x=1#y", "https://api.example.com/prod/v1/"),
])
def test_api_base(url, base):
    assert client.api_base(url) == base


@pytest.mark.parametrize("url", ["ftp://host/", "127.0.0.1:8787", "http://", "file:///tmp/x"])
def test_a_url_that_is_not_http_is_refused(url):
    with pytest.raises(TargetError) as caught:
        client.api_base(url)
    assert str(caught.value) == f"--url {url!r}: expected http(s)://host[:port][/path], e.g. http://127.0.0.1:8787"


@pytest.mark.parametrize("value, seconds", [("0", 0.0), (" 2.5 ", 2.5), ("-3", 0.0), ("", None), (None, None), ("soon", None),
                                            ("Wed, 21 Oct 2015 07:28:00 GMT", 10.0), ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0)])
def test_retry_after_in_seconds_or_an_http_date(value, seconds):
    assert client.retry_after_seconds(value, now=1445412470.0) == seconds


def test_by_default_six_attempts_and_at_most_two_minutes_a_wait():
    sleeps: list[float] = []
    with Server((503, {"message": "busy"}, {})) as server:
        reply = Target(server.url, sleep=sleeps.append).query({"question": "q"})
    assert (reply.status, reply.attempts, len(server.requests)) == (503, 6, 6)
    assert sleeps == pytest.approx([1.0, 2.0, 4.0, 8.0, 16.0], abs=0.05)
    sleeps.clear()
    with Server((429, {}, {"Retry-After": "3600"}), OK) as server:
        assert Target(server.url, sleep=sleeps.append).query({"question": "q"}).ok
    assert sleeps == pytest.approx([120.0], abs=0.05)
