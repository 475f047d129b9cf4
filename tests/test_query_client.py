"""scripts/ask.py: SigV4 signing for execute-api, request building and output (offline)."""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import botocore.session
import pytest

_SPEC = importlib.util.spec_from_file_location("ask", Path(__file__).resolve().parents[1] / "scripts" / "ask.py")
ask = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(ask)

URL = "https://abc123defg.execute-api.eu-west-1.amazonaws.com/v1/"


@pytest.fixture
def session(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return botocore.session.Session()


def test_requests_are_signed_for_execute_api_in_the_api_region(session):
    request = ask.signed(session, "POST", URL + "query", {"question": "q"})
    authorization = request.get_header("Authorization")
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/execute-api/aws4_request" in authorization  # region from the URL, not the profile
    assert request.get_header("X-amz-security-token") == "token"
    assert json.loads(request.data) == {"question": "q"} and request.get_method() == "POST"


def test_the_command_sends_the_options_it_was_given(session, monkeypatch, capsys):
    sent = {}

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def urlopen(request, timeout):
        sent.update(url=request.full_url, body=json.loads(request.data), timeout=timeout)
        return Response(json.dumps({
            "answer": "Yearly [1].", "citations": [{"n": 1, "source": "s3://d/kms.md", "score": 0.91, "excerpt": "Keys rotate yearly."}],
            "mode": "rag", "model": "sagemaker:ragdev-generator", "timings_ms": {"retrieve": 80.0, "generate": 900.0, "total": 990.0},
            "usage": {"input_tokens": 300, "output_tokens": 12},
        }).encode())

    monkeypatch.setattr(ask.urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(ask.botocore.session, "Session", lambda profile=None: session)
    code = ask.main(["--url", URL, "--retriever", "opensearch", "--top-k", "3", "--filter", "year=2024", "--filter", "year=2025", "How?"])
    assert code == 0
    assert sent["url"] == URL + "query" and sent["timeout"] > 29
    assert sent["body"] == {"question": "How?", "retriever": "opensearch", "top_k": 3, "filters": {"year": [2024, 2025]}}
    out = capsys.readouterr().out
    assert "Yearly [1]." in out and "[1] s3://d/kms.md (score 0.910)" in out and "total=990.0ms" in out


def test_bad_filters_are_rejected_before_sending():
    with pytest.raises(SystemExit):
        ask.parse_filters(["no-equals-sign"])
