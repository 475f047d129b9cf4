"""scripts/ask.py as a person uses it: signing, local mode, regions, and one clear line for every mistake.

The API is a local HTTP server on 127.0.0.1 (plain http, as `make local` serves) or a stubbed
urlopen for https; CloudFormation is botocore's Stubber. A few runs go through a real subprocess
to prove no traceback reaches the terminal. AWS configuration is isolated per test (no profile
files, no instance metadata).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.error
from pathlib import Path

import botocore.session
import pytest
from botocore.stub import Stubber

from tests.json_api_stub import JsonApiStub

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "ask.py"
_SPEC = importlib.util.spec_from_file_location("ask", SCRIPT)
ask = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(ask)

URL = "https://abc123defg.execute-api.eu-west-1.amazonaws.com/v1/"
ANSWER = {
    "answer": "Yearly [1].", "citations": [{"n": 1, "source": "s3://d/kms.md", "score": 0.91, "excerpt": "Keys rotate yearly."}],
    "mode": "rag", "generator": "finetuned", "model": "sagemaker:ragdev-generator/finetuned", "model_version": "7",
    "timings_ms": {"retrieve": 80.0, "generate": 900.0, "total": 990.0}, "usage": {"input_tokens": 300, "output_tokens": 12},
}


def isolated_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment with no AWS configuration at all (and no metadata-service probing)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE=str(tmp_path / "none-config"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none-creds"),
               AWS_EC2_METADATA_DISABLED="true", HOME=str(tmp_path))
    env.update(extra)
    return env


@pytest.fixture
def no_aws(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    for key, value in isolated_env(tmp_path).items():
        if key.startswith("AWS_") or key == "HOME":
            monkeypatch.setenv(key, value)


@pytest.fixture
def creds(no_aws, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token")


@pytest.fixture(scope="module")
def module_api():
    with JsonApiStub() as api:
        yield api


@pytest.fixture
def api(module_api):
    module_api.requests.clear()
    module_api.answer = (200, json.dumps(ANSWER).encode(), {})
    return module_api


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture
def https(monkeypatch):
    """Captures https requests (urlopen) and answers 200 with ANSWER."""
    sent: dict = {}

    def urlopen(request, timeout):
        sent.update(url=request.full_url, body=json.loads(request.data) if request.data else None, timeout=timeout,
                    headers={k.lower(): v for k, v in request.header_items()})
        return Response(json.dumps(ANSWER).encode())

    monkeypatch.setattr(ask.urllib.request, "urlopen", urlopen)
    return sent


# --- local mode and options ---


def test_local_url_without_path_posts_to_v1_query_unsigned_with_every_option(api, no_aws, capsys):
    code = ask.main(["--url", api.url, "--mode", "rag", "--retriever", "opensearch", "--generator", "extractive", "--top-k", "3",
                     "--filter", "year=2024", "--filter", "year=2025", "--filter", "team=-ops", "How?"])
    assert code == 0
    [request] = api.requests
    assert (request["method"], request["path"]) == ("POST", "/v1/query")
    assert "authorization" not in request["headers"]  # no credentials needed (or present) for the local server
    assert json.loads(request["body"]) == {"question": "How?", "mode": "rag", "retriever": "opensearch", "top_k": 3, "generator": "extractive",
                               "filters": {"year": [2024, 2025], "team": "-ops"}}
    out = capsys.readouterr().out
    assert "Yearly [1]." in out and "[1] s3://d/kms.md (score 0.910)" in out
    assert "generator=finetuned model=sagemaker:ragdev-generator/finetuned version=7" in out and "total=990.0ms" in out


def test_health_gets_health_under_the_given_path(api, no_aws, capsys):
    api.answer = (200, b'{"status": "ok", "default_generator": "extractive"}', {})
    assert ask.main(["--url", f"{api.url}/v1/", "--health"]) == 0
    assert api.requests[0]["method"] == "GET" and api.requests[0]["path"] == "/v1/health"
    assert json.loads(capsys.readouterr().out)["status"] == "ok"


def test_json_prints_the_raw_answer(api, no_aws, capsys):
    assert ask.main(["--url", api.url, "--json", "q"]) == 0
    assert json.loads(capsys.readouterr().out) == ANSWER


# --- signing and regions ---


def test_https_requests_are_signed_for_execute_api_in_the_urls_region(creds, https, monkeypatch):
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    assert ask.main(["--url", URL, "--generator", "base", "q"]) == 0
    authorization = https["headers"]["authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/execute-api/aws4_request" in authorization  # the URL's region wins over AWS_REGION
    assert https["headers"]["x-amz-security-token"] == "token"
    assert https["url"] == URL + "query" and https["body"] == {"question": "q", "generator": "base"} and https["timeout"] == 35.0


@pytest.mark.parametrize("flag, env, expected", [("us-west-2", None, "us-west-2"), (None, "ap-south-1", "ap-south-1"),
                                                 ("us-west-2", "ap-south-1", "us-west-2")])
def test_custom_domains_sign_in_region_from_flag_then_aws_region(creds, https, monkeypatch, flag, env, expected):
    if env:
        monkeypatch.setenv("AWS_REGION", env)
    assert ask.main(["--url", "https://rag.example.com/v1/", *(["--region", flag] if flag else []), "q"]) == 0
    assert f"/{expected}/execute-api/aws4_request" in https["headers"]["authorization"]


def test_the_profile_region_is_the_last_resort(creds, https, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ca-central-1")
    assert ask.main(["--url", "https://rag.example.com/", "q"]) == 0
    assert "/ca-central-1/execute-api/" in https["headers"]["authorization"]
    assert https["url"] == "https://rag.example.com/v1/query"


def stubbed_session(region: str, answer=None, error: str | None = None):
    session = botocore.session.Session()
    client = session.create_client("cloudformation", region_name=region)
    stubber = Stubber(client)
    if error:
        stubber.add_client_error("describe_stacks", service_error_code="ValidationError", service_message=error,
                                 expected_params={"StackName": "RagDev-Serving"})
    else:
        stubber.add_response("describe_stacks", answer, {"StackName": "RagDev-Serving"})
    stubber.activate()
    session.create_client = lambda service, region_name=None: (seen.append(region_name), client)[1]
    seen: list = []
    session.seen = seen
    return session


def test_stage_reads_the_api_url_from_the_stack_in_the_requested_region(creds, https, monkeypatch):
    session = stubbed_session("eu-west-1", {"Stacks": [{"StackName": "RagDev-Serving", "CreationTime": "2026-01-01T00:00:00Z",
                                                         "StackStatus": "UPDATE_COMPLETE",
                                                         "Outputs": [{"OutputKey": "ApiUrl", "OutputValue": URL}]}]})
    monkeypatch.setattr(ask.botocore.session, "Session", lambda profile=None: session)
    assert ask.main(["--stage", "dev", "--region", "eu-west-1", "--health"]) == 0
    assert session.seen == ["eu-west-1"] and https["url"] == URL + "health"


def test_stage_honours_aws_region(creds, https, monkeypatch):
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    session = stubbed_session("eu-west-1", {"Stacks": [{"StackName": "RagDev-Serving", "CreationTime": "2026-01-01T00:00:00Z",
                                                         "StackStatus": "CREATE_COMPLETE",
                                                         "Outputs": [{"OutputKey": "ApiUrl", "OutputValue": URL}]}]})
    monkeypatch.setattr(ask.botocore.session, "Session", lambda profile=None: session)
    assert ask.main(["--stage", "dev", "q"]) == 0
    assert session.seen == ["eu-west-1"]


# --- every expected mistake: one line, the documented exit code ---


def one_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ask.py: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    return lines[0]


@pytest.mark.parametrize("argv, words", [
    ([], "one of the arguments --stage --url is required"),
    (["--url", "http://127.0.0.1:1"], "a question is required"),
    (["--url", "http://127.0.0.1:1", "   "], "a question is required"),
    (["--stage", "dev", "--url", "http://127.0.0.1:1", "q"], "not allowed with argument"),
    (["--url", "http://127.0.0.1:1", "--top-k", "three", "q"], "not a positive integer"),
    (["--url", "http://127.0.0.1:1", "--top-k", "0", "q"], "not a positive integer"),
    (["--url", "http://127.0.0.1:1", "--mode", "chat", "q"], "invalid choice"),
    (["--url", "http://127.0.0.1:1", "--filter", "no-equals", "q"], "--filter 'no-equals': use key=value"),
    (["--url", "http://127.0.0.1:1", "--filter", "=x", "q"], "use key=value"),
    (["--url", "http://127.0.0.1:1", "--generator", "Fine Tuned", "q"], "not a generator name"),
    (["--url", "http://127.0.0.1:1", "--timeout", "nan", "q"], "between 0 and 900"),
    (["--url", "http://127.0.0.1:1", "--timeout", "soon", "q"], "not a number of seconds"),
    (["--url", "http://127.0.0.1:1", "--region", "Europe", "q"], "not an AWS region name"),
    (["--stage", "Dev!", "q"], "not a stage name"),
    (["--url", "ftp://host/", "q"], "must be http(s)://"),
    (["--url", "abc123.execute-api.eu-west-1.amazonaws.com/v1/", "q"], "must be http(s)://"),
    (["--url", "http://example.com/v1/", "q"], "plain http is only for the local server"),
    (["--url", "https://host:99999/", "q"], "is not a URL"),
    (["--url", "https://host/v1/?x=1", "q"], "must not have a query"),
    (["--url", URL, "--region", "us-east-1", "q"], "the URL's API is in eu-west-1"),
    (["--url", "http://127.0.0.1:1", "--unknown", "q"], "unrecognized arguments"),
])
def test_command_line_mistakes_exit_2_with_one_line(no_aws, capsys, argv, words):
    assert ask.main(argv) == 2
    assert words in one_line(capsys)


def test_no_credentials_exits_3(no_aws, capsys):
    assert ask.main(["--url", URL, "q"]) == 3
    assert "no AWS credentials found: set AWS_PROFILE or --profile" in one_line(capsys)


def test_a_missing_profile_exits_3(no_aws, capsys):
    assert ask.main(["--url", URL, "--profile", "nobody", "q"]) == 3
    assert "nobody" in one_line(capsys)


def test_no_region_for_a_custom_domain_exits_3(creds, capsys):
    assert ask.main(["--url", "https://rag.example.com/v1/", "q"]) == 3
    assert "no AWS region: pass --region" in one_line(capsys)


def test_no_region_for_a_stage_exits_3(creds, capsys):
    assert ask.main(["--stage", "dev", "q"]) == 3
    assert "no AWS region to find RagDev-Serving in: pass --region" in one_line(capsys)


def test_a_stack_that_does_not_exist_exits_3(creds, monkeypatch, capsys):
    session = stubbed_session("eu-west-1", error="Stack with id RagDev-Serving does not exist")
    monkeypatch.setattr(ask.botocore.session, "Session", lambda profile=None: session)
    assert ask.main(["--stage", "dev", "--region", "eu-west-1", "q"]) == 3
    assert "stack RagDev-Serving does not exist in eu-west-1: deploy the stage" in one_line(capsys)


def test_a_stack_without_the_output_exits_3(creds, monkeypatch, capsys):
    session = stubbed_session("eu-west-1", {"Stacks": [{"StackName": "RagDev-Serving", "CreationTime": "2026-01-01T00:00:00Z",
                                                         "StackStatus": "CREATE_IN_PROGRESS"}]})
    monkeypatch.setattr(ask.botocore.session, "Session", lambda profile=None: session)
    assert ask.main(["--stage", "dev", "--region", "eu-west-1", "q"]) == 3
    assert "has no ApiUrl output" in one_line(capsys)


def test_an_unreachable_local_server_exits_4(no_aws, capsys):
    assert ask.main(["--url", f"http://127.0.0.1:{free_port()}", "q"]) == 4
    assert "could not reach" in (line := one_line(capsys)) and "make local" in line


def test_a_non_json_answer_exits_4(api, no_aws, capsys):
    api.answer = (200, b"<html>a web page</html>", {"Content-Type": "text/html"})
    assert ask.main(["--url", api.url, "q"]) == 4
    assert "answered 200 but not with JSON" in one_line(capsys)


def test_a_timeout_exits_4(no_aws, capsys, monkeypatch):
    def urlopen(request, timeout):
        raise urllib.error.URLError(TimeoutError("timed out"))

    monkeypatch.setattr(ask.urllib.request, "urlopen", urlopen)
    assert ask.main(["--url", "http://127.0.0.1:9", "--timeout", "2", "q"]) == 4
    assert "no answer from http://127.0.0.1:9/v1/query within 2 s" in one_line(capsys)


def test_a_peer_that_breaks_off_exits_4(no_aws, capsys):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def hang_up():
        connection, _ = listener.accept()
        connection.recv(65536)
        connection.close()

    threading.Thread(target=hang_up, daemon=True).start()
    try:
        assert ask.main(["--url", f"http://127.0.0.1:{listener.getsockname()[1]}", "q"]) == 4
    finally:
        listener.close()
    assert "broke off the answer" in one_line(capsys)


@pytest.mark.parametrize("status, body, headers, words", [
    (400, {"message": "unknown generator 'gpt'; allowed: extractive, llm, bedrock", "field": "generator", "request_id": "r"}, {},
     "HTTP 400: unknown generator 'gpt'; allowed: extractive, llm, bedrock (field generator)"),
    (503, {"message": "generator 'finetuned' has no model on this stage yet"}, {"Retry-After": "30"},
     "HTTP 503: generator 'finetuned' has no model on this stage yet (retry after 30 s)"),
    (403, {"message": "Missing Authentication Token"}, {}, "check that --url is the API's base URL"),
    (403, {"Message": "User: arn:aws:iam::1:user/x is not authorized to perform: execute-api:Invoke"}, {}, "needs execute-api:Invoke"),
    (403, {"message": "The security token included in the request is expired"}, {}, "aws sso login"),
    (404, "<html>Not Found</html>", {}, "HTTP 404: <html>Not Found</html> (check --url"),
    (500, "", {}, "HTTP 500: (empty body)"),
    (429, {"message": "too many requests; retry later"}, {"Retry-After": "1"}, "HTTP 429: too many requests; retry later (retry after 1 s)"),
])
def test_http_errors_exit_1_with_the_message_and_what_to_do(api, no_aws, capsys, status, body, headers, words):
    api.answer = (status, (json.dumps(body) if isinstance(body, dict) else body).encode(), headers)
    assert ask.main(["--url", api.url, "q"]) == 1
    assert words in one_line(capsys)


def test_render_tolerates_answers_missing_keys():
    text = ask.render({"citations": [{"n": 1}, "junk", {"score": "high"}], "timings_ms": None})
    assert "[1] None" in text and "mode=None" in text


# --- as a person runs it: a real process, no traceback ---


def test_the_script_never_shows_a_traceback_for_expected_mistakes(tmp_path):
    env = isolated_env(tmp_path)
    runs = {
        3: [sys.executable, str(SCRIPT), "--url", URL, "q"],  # no credentials
        2: [sys.executable, str(SCRIPT), "--url", "http://127.0.0.1:1", "--filter", "oops", "q"],
        4: [sys.executable, str(SCRIPT), "--url", f"http://127.0.0.1:{free_port()}", "q"],
    }
    processes = {code: subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
                 for code, argv in runs.items()}
    stage = subprocess.run([sys.executable, str(SCRIPT), "--stage", "dev", "q"], env={**env, "AWS_ACCESS_KEY_ID": "AKID",
                           "AWS_SECRET_ACCESS_KEY": "s"}, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert stage.returncode == 3 and "no AWS region" in stage.stderr and "Traceback" not in stage.stderr
    for code, process in processes.items():
        out, err = process.communicate(timeout=60)
        assert process.returncode == code, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
