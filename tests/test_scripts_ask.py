"""scripts/ask.py's exact lines for HTTP errors, the bounds of its numeric options, and an AWS
configuration that cannot be read (complements test_query_client.py)."""

from __future__ import annotations

import json
import os
import sys
from email.message import Message
from pathlib import Path

import pytest
from botocore import exceptions

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import ask  # noqa: E402


def _headers(**values) -> Message:
    """Headers as urllib's HTTPError carries them."""
    message = Message()
    for key, value in values.items():
        message[key.replace("_", "-")] = value
    return message


@pytest.mark.parametrize("code, raw, headers, line", [
    (400, b'{"message": "unknown generator", "field": "generator"}', _headers(Retry_After="5"),
     "HTTP 400: unknown generator (field generator; retry after 5 s)"),
    (403, b'{"Message": "User: arn:aws:iam::1:user/x is not authorized"}', None,
     "HTTP 403: User: arn:aws:iam::1:user/x is not authorized (your principal needs execute-api:Invoke on this API)"),
    (403, b'{"message": "Missing Authentication Token"}', _headers(),
     "HTTP 403: Missing Authentication Token (API Gateway answers this for a path it does not have: check that --url is the API's "
     "base URL (\u2026/v1/))"),
    (403, b'{"message": "The request signature we calculated does not match"}', None,
     "HTTP 403: The request signature we calculated does not match (your credentials are invalid or expired: refresh them "
     "(e.g. aws sso login))"),
    (403, b'{"message": "The Security Token included in the request is invalid"}', None,
     "HTTP 403: The Security Token included in the request is invalid (your credentials are invalid or expired: refresh them "
     "(e.g. aws sso login))"),
    (403, b'{"message": "Token EXPIRED"}', None,
     "HTTP 403: Token EXPIRED (your credentials are invalid or expired: refresh them (e.g. aws sso login))"),
    (404, b"<html>Not Found</html>", None, "HTTP 404: <html>Not Found</html> (check --url: it must be the API's base URL)"),
    (500, b"\xff\xfeoops", None, "HTTP 500: \ufffd\ufffdoops"),  # not UTF-8: shown, not a crash
    (502, b'"just a string"', None, 'HTTP 502: "just a string"'),
    (502, b'{"message": ""}', None, 'HTTP 502: {"message": ""}'),
    (503, b"  ", _headers(Retry_After="30"), "HTTP 503: (empty body) (retry after 30 s)"),
    (500, b"x" * 400, None, "HTTP 500: " + "x" * 300),  # a long page is cut
])
def test_http_errors_are_one_line_with_what_to_do(code, raw, headers, line):
    assert ask.http_error_message(code, raw, headers) == line


@pytest.mark.parametrize("text, value", [("0.5", 0.5), ("900", 900.0), ("35", 35.0)])
def test_timeouts_within_bounds(text, value):
    assert ask.positive_float(text) == value


@pytest.mark.parametrize("text", ["0", "-1", "900.5", "inf", "nan"])
def test_timeouts_out_of_bounds(text):
    with pytest.raises(ask.argparse.ArgumentTypeError) as caught:
        ask.positive_float(text)
    assert str(caught.value) == f"{text!r} must be between 0 and 900 seconds"


@pytest.mark.parametrize("text, value", [("1", 1), ("999999", 999999), ("007", 7)])
def test_top_k_accepts_positive_integers(text, value):
    assert ask.positive_int(text) == value


@pytest.mark.parametrize("text", ["0", "1000000", "-1", "1.5", " 3"])
def test_top_k_refuses_anything_else(text):
    with pytest.raises(ask.argparse.ArgumentTypeError) as caught:
        ask.positive_int(text)
    assert str(caught.value) == f"{text!r} is not a positive integer"


def test_an_unreadable_aws_configuration_is_exit_3_in_one_line(monkeypatch, tmp_path, capsys):
    for key in [key for key in os.environ if key.startswith("AWS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # a custom domain names no region: reading the profile's fails on a profile that does not exist
    assert ask.main(["--url", "https://rag.example.com/v1/", "--profile", "nobody", "q"]) == ask.SETUP
    assert capsys.readouterr().err == "ask.py: AWS configuration: The config profile (nobody) could not be found\n"


@pytest.mark.parametrize("host, loopback", [("localhost", True), ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True),
                                            ("10.0.0.1", False), ("example.com", False), ("", False), (None, False)])
def test_loopback_hosts(host, loopback):
    assert ask.is_loopback(host) is loopback


@pytest.mark.parametrize("url, base", [
    ("http://localhost:8080", "http://localhost:8080/v1/"), ("https://rag.example.com/", "https://rag.example.com/v1/"),
    ("https://rag.example.com/prod//", "https://rag.example.com/prod/"), ("https://rag.example.com//", "https://rag.example.com/v1/"),
])
def test_base_urls(url, base):
    assert ask.base_url(url) == base


def test_requests_carry_json_headers_and_https_ones_are_signed_over_the_body(monkeypatch):
    import datetime as real

    import botocore.auth
    import botocore.session

    class Frozen(real.datetime):
        @classmethod
        def utcnow(cls):
            return real.datetime(2026, 11, 30, 12, 0, 0)

        @classmethod
        def now(cls, tz=None):
            return real.datetime(2026, 11, 30, 12, 0, 0, tzinfo=tz)

    monkeypatch.setattr(botocore.auth.datetime, "datetime", Frozen)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    session = botocore.session.Session()
    local = ask.build_request(session, "POST", "http://127.0.0.1:8080/v1/query", {"question": "q"}, None)
    assert (local.get_method(), local.data, dict(local.header_items())) == (
        "POST", b'{"question": "q"}', {"Content-type": "application/json", "Accept": "application/json"})
    health = ask.build_request(session, "GET", "http://127.0.0.1:8080/v1/health", None, None)
    assert (health.get_method(), health.data) == ("GET", None)
    url = "https://abc123defg.execute-api.eu-west-1.amazonaws.com/v1/query"
    one = ask.build_request(session, "POST", url, {"question": "a"}, None)
    other = ask.build_request(session, "POST", url, {"question": "b"}, None)
    authorization = one.get_header("Authorization")
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261130/eu-west-1/execute-api/aws4_request, "
                                    "SignedHeaders=accept;content-type;host;x-amz-date, Signature=")
    assert authorization != other.get_header("Authorization")  # the body is signed
    assert one.get_header("Content-type") == "application/json" and one.data == b'{"question": "a"}'


class _Session:
    """A botocore-like session: credentials, and a CloudFormation client that fails as told."""

    def __init__(self, error=None, credentials_error=None):
        self.error, self.credentials_error, self.services = error, credentials_error, []

    def get_credentials(self):
        if self.credentials_error:
            raise self.credentials_error
        from botocore.credentials import Credentials

        return Credentials("AKIDEXAMPLE", "secret")

    def get_config_variable(self, name):
        return None

    def create_client(self, service, region_name=None):
        self.services.append((service, region_name))
        session = self

        class Client:
            def describe_stacks(self, StackName):
                raise session.error

        return Client()


@pytest.mark.parametrize("error, code, line", [
    (exceptions.ClientError({"Error": {"Code": "AccessDenied", "Message": "not allowed"}}, "DescribeStacks"),
     ask.SETUP, "DescribeStacks RagDev-Serving in eu-west-1 failed: AccessDenied: not allowed"),
    (exceptions.ClientError({"Error": {"Code": "ValidationError", "Message": "bad name"}}, "DescribeStacks"),
     ask.SETUP, "DescribeStacks RagDev-Serving in eu-west-1 failed: ValidationError: bad name"),
    (exceptions.ClientError({}, "DescribeStacks"), ask.SETUP,
     "DescribeStacks RagDev-Serving in eu-west-1 failed: : "),
    (exceptions.EndpointConnectionError(endpoint_url="https://cloudformation.eu-west-1.amazonaws.com/"),
     ask.UNREACHABLE, 'could not reach CloudFormation in eu-west-1 (Could not connect to the endpoint URL: '
                      '"https://cloudformation.eu-west-1.amazonaws.com/"): check the network and --region'),
    (exceptions.ConnectTimeoutError(endpoint_url="https://cf"), ask.SETUP,
     'DescribeStacks RagDev-Serving in eu-west-1 failed: Connect timeout on endpoint URL: "https://cf"'),
])
def test_stack_lookup_failures(error, code, line):
    session = _Session(error)
    with pytest.raises(ask.Failure) as caught:
        ask.api_url_from_stack(session, "dev", "eu-west-1")
    assert (caught.value.code, str(caught.value)) == (code, line)
    assert session.services == [("cloudformation", "eu-west-1")]


def test_credentials_that_cannot_be_loaded_or_are_missing():
    with pytest.raises(ask.Failure) as caught:
        ask.frozen_credentials(_Session(credentials_error=exceptions.CredentialRetrievalError(provider="sso", error_msg="token expired")))
    assert (caught.value.code, str(caught.value)) == (ask.SETUP, "AWS credentials could not be loaded (Error when retrieving credentials "
                                                                 "from sso: token expired): run `aws sso login` or fix the profile")

    class Nobody(_Session):
        def get_credentials(self):
            return None

    with pytest.raises(ask.Failure) as caught:
        ask.frozen_credentials(Nobody())
    assert str(caught.value) == ("no AWS credentials found: set AWS_PROFILE or --profile, run `aws sso login`, or export "
                                 "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")


def test_an_answer_is_printed_with_its_sources_and_timings():
    result = {"answer": "Yearly [1].", "mode": "rag", "generator": "base", "model": "sagemaker:g/base", "model_version": "3",
              "citations": [{"n": 1, "source": "s3://d/kms.md", "score": 0.91234, "excerpt": "Keys rotate yearly."}, "junk",
                            {"n": 2, "source": "s3://d/b.md", "score": True}, {"n": 3, "source": "s3://d/c.md", "score": 1}],
              "timings_ms": {"retrieve": 80.0, "generate": 900.0, "total": 990.0}, "usage": {"input_tokens": 300, "output_tokens": 12}}
    assert ask.render(result) == (
        "Yearly [1].\n\n"
        "[1] s3://d/kms.md (score 0.912)\n    Keys rotate yearly.\n"
        "[2] s3://d/b.md\n    \n"  # a bool is not a score; no excerpt: empty
        "[3] s3://d/c.md (score 1.000)\n    \n\n"
        'mode=rag generator=base model=sagemaker:g/base version=3 retrieve=80.0ms generate=900.0ms total=990.0ms '
        'usage={"input_tokens": 300, "output_tokens": 12}')
    assert ask.render({"citations": "none", "timings_ms": [1]}) == (
        "\n\n\nmode=None generator=None model=None retrieve=Nonems generate=Nonems total=Nonems usage=null")


def test_filters_repeat_a_key_for_any_of_and_keep_everything_after_the_first_equals():
    assert ask.parse_filters(["k=1", "k=2", "k=x", "q=a=b", "n=-12", "big=1234567890123456", "s= 7"]) == {
        "k": [1, 2, "x"], "q": "a=b", "n": -12, "big": "1234567890123456", "s": " 7"}


@pytest.mark.parametrize("argv, body", [
    (["--mode", "kb", "q"], {"question": "q", "mode": "kb"}),
    (["--mode", "prompt", "--generator", "base", "q"], {"question": "q", "mode": "prompt", "generator": "base"}),
    (["--retriever", "kb", "--top-k", "1", "q"], {"question": "q", "retriever": "kb", "top_k": 1}),
])
def test_every_mode_and_retriever_can_be_asked_for(monkeypatch, capsys, argv, body):
    sent = []
    monkeypatch.setattr(ask, "send", lambda request, timeout: sent.append((request, timeout)) or {"answer": "a"})
    assert ask.main(["--url", "http://127.0.0.1:9", *argv]) == 0
    assert json.loads(sent[0][0].data) == body and sent[0][1] == 35.0


def test_an_interrupt_is_exit_130_in_one_line(monkeypatch, capsys):
    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(ask, "run", interrupted)
    assert ask.main(["q"]) == 130
    assert capsys.readouterr().err == "ask.py: interrupted\n"


def test_no_region_for_a_custom_domain_says_how_to_give_one(monkeypatch):
    monkeypatch.delenv("AWS_REGION", raising=False)
    with pytest.raises(ask.Failure) as caught:
        ask.region_for("https://rag.example.com/v1/", _Session(), None)
    assert (caught.value.code, str(caught.value)) == (ask.SETUP, "no AWS region: pass --region (or set AWS_REGION)")


def test_help_shows_what_the_script_does_and_its_exit_statuses_as_written():
    text = ask.build_parser().format_help()
    assert text.startswith("usage: ask.py [-h] (--stage STAGE | --url URL)")
    assert "\nAsk a deployed stage, or the local server, a question.\n" in text
    assert ("Exit status:\n  0  the API answered 200 (the answer, or the health JSON, is printed)\n"
            "  1  the API answered with an HTTP error (its status and message are printed)\n") in text  # line breaks kept
    assert "--top-k N" in text and "--filter KEY=VALUE" in text and "--timeout S" in text


class _Reply:
    def __init__(self, raw: bytes):
        self.raw = raw

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read(self):
        return self.raw


def _send_with(monkeypatch, outcome, url="https://rag.example.com/v1/query", timeout=2.0):
    def urlopen(request, timeout):
        if isinstance(outcome, BaseException):
            raise outcome
        return _Reply(outcome)

    monkeypatch.setattr(ask.urllib.request, "urlopen", urlopen)
    return ask.send(ask.urllib.request.Request(url), timeout)


class _BrokenError(ask.urllib.error.HTTPError):
    def read(self):
        raise ask.http.client.IncompleteRead(b"")


@pytest.mark.parametrize("outcome, code, line", [
    (ask.urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")), ask.UNREACHABLE,
     "could not reach https://rag.example.com/v1/query ([Errno 111] Connection refused): check --url and your network"),
    (TimeoutError("timed out"), ask.UNREACHABLE, "no answer from https://rag.example.com/v1/query within 2 s: try again, or a larger --timeout"),
    (ask.http.client.IncompleteRead(b"par", 10), ask.UNREACHABLE,
     "https://rag.example.com/v1/query broke off the answer (IncompleteRead: IncompleteRead(3 bytes read, 10 more expected)): check --url"),
    (_BrokenError("https://rag.example.com/v1/query", 502, "Bad Gateway", {}, None), ask.HTTP_ERROR, "HTTP 502: (empty body)"),
    (b"<html>\n<body>" + "é".encode() + b"\xff" + b"x" * 100, ask.UNREACHABLE,
     "https://rag.example.com/v1/query answered 200 but not with JSON ('<html> <body>\u00e9\ufffd" + "x" * 64 + "'...): is --url the API's "
     "base URL (the ApiUrl output, \u2026/v1/)?"),
])
def test_what_send_says_when_no_usable_answer_comes(monkeypatch, outcome, code, line):
    with pytest.raises(ask.Failure) as caught:
        _send_with(monkeypatch, outcome)
    assert (caught.value.code, str(caught.value)) == (code, line)


def test_health_and_json_print_readable_indented_json(monkeypatch, capsys):
    answer = {"status": "ok", "note": "梅雨"}
    monkeypatch.setattr(ask, "send", lambda request, timeout: answer)
    assert ask.main(["--url", "http://127.0.0.1:9", "--health"]) == 0
    assert capsys.readouterr().out == '{\n  "status": "ok",\n  "note": "梅雨"\n}\n'
    assert ask.main(["--url", "http://127.0.0.1:9", "--json", "q"]) == 0
    assert capsys.readouterr().out == '{\n  "status": "ok",\n  "note": "梅雨"\n}\n'


def test_health_of_a_custom_domain_is_signed_in_the_given_region(monkeypatch, capsys):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_REGION", raising=False)
    sent = []
    monkeypatch.setattr(ask, "send", lambda request, timeout: sent.append(request) or {"status": "ok"})
    assert ask.main(["--url", "https://rag.example.com/v1/", "--health", "--region", "ap-south-1"]) == 0
    assert sent[0].full_url == "https://rag.example.com/v1/health" and sent[0].get_method() == "GET"
    assert "/ap-south-1/execute-api/aws4_request" in sent[0].get_header("Authorization")


def test_an_aws_configuration_that_cannot_be_read_at_all_is_exit_3(monkeypatch, capsys):
    def broken(profile=None):
        raise exceptions.ProfileNotFound(profile=profile)

    monkeypatch.setattr(ask.botocore.session, "Session", broken)
    assert ask.main(["--url", "http://127.0.0.1:9", "--profile", "ghost", "q"]) == ask.SETUP
    assert capsys.readouterr().err == "ask.py: AWS configuration: The config profile (ghost) could not be found\n"


@pytest.mark.parametrize("argv, line", [
    (["--url", "http://127.0.0.1:9"], "ask.py: a question is required (or --health)\n"),
    (["--url", "http://127.0.0.1:9", "--retriever", "vector", "q"],
     "ask.py: argument --retriever: invalid choice: 'vector' (choose from 'kb', 'opensearch') (see ask.py --help)\n"),
])
def test_usage_lines(capsys, argv, line):
    assert ask.main(argv) == ask.USAGE
    assert capsys.readouterr().err == line


def test_a_stack_list_without_the_stack_has_no_api_url():
    class Empty(_Session):
        def create_client(self, service, region_name=None):
            return type("C", (), {"describe_stacks": lambda self, StackName: {"Stacks": []}})()

    with pytest.raises(ask.Failure) as caught:
        ask.api_url_from_stack(Empty(), "dev", "eu-west-1")
    assert str(caught.value) == "stack RagDev-Serving in eu-west-1 has no ApiUrl output: is it fully deployed? (or use --url)"
