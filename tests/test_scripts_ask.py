"""scripts/ask.py's exact lines for HTTP errors, the bounds of its numeric options, and an AWS
configuration that cannot be read (complements test_query_client.py)."""

from __future__ import annotations

import sys
from email.message import Message
from pathlib import Path

import pytest

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
    for key in [key for key in __import__("os").environ if key.startswith("AWS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # a custom domain names no region: reading the profile's fails on a profile that does not exist
    assert ask.main(["--url", "https://rag.example.com/v1/", "--profile", "nobody", "q"]) == ask.SETUP
    assert capsys.readouterr().err == "ask.py: AWS configuration: The config profile (nobody) could not be found\n"
