#!/usr/bin/env python3
"""Ask a deployed stage, or the local server, a question.

    python scripts/ask.py --stage dev "How do I rotate the KMS key?"
    python scripts/ask.py --stage prod --region eu-west-1 --generator finetuned "..."
    python scripts/ask.py --url https://abc123.execute-api.us-east-1.amazonaws.com/v1/ \\
        --mode rag --retriever opensearch --top-k 3 --filter category=security "..."
    python scripts/ask.py --url http://127.0.0.1:8080 --generator extractive "..."   # make local
    python scripts/ask.py --stage dev --health

`--stage` reads the API URL from the stack `Rag<Stage>-Serving` (output `ApiUrl`); `--url` takes
any base URL (a URL with no path gets the API's `/v1/`). Requests to https URLs are SigV4-signed
(service execute-api) with your usual AWS credentials (environment, profile, SSO; `--profile`);
the caller needs `execute-api:Invoke` on the API. Plain http is only for the local server on a
loopback address, and is not signed. The region is the one in an execute-api URL, else
`--region`, else `AWS_REGION`, else your profile's.

Exit status:
  0  the API answered 200 (the answer, or the health JSON, is printed)
  1  the API answered with an HTTP error (its status and message are printed)
  2  the command line is wrong (an option, a --filter, a --url)
  3  nothing was asked: AWS setup is missing (credentials, region, the stack or its output)
  4  no usable answer: the URL could not be reached, timed out, or did not answer in JSON
Every expected failure prints one line saying what is wrong and what to do, never a traceback.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import re
import socket
import sys
import urllib.error
import urllib.request
from typing import Any, NoReturn, Optional
from urllib.parse import urlsplit, urlunsplit

import botocore.exceptions
import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

_API_HOST = re.compile(r"^[a-z0-9]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")
STAGE_NAME = re.compile(r"[a-z][a-z0-9]{1,15}")
GENERATOR_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
API_PATH = "/v1/"  # the API Gateway stage (stacks/serving_stack.py API_STAGE_NAME) and the local server's prefix
PROG = "ask.py"

OK, HTTP_ERROR, USAGE, SETUP, UNREACHABLE = 0, 1, 2, 3, 4


class Failure(Exception):
    """An expected failure: `code` is the exit status, the message says what is wrong and what to do."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not argparse's usage block
        raise Failure(USAGE, f"{message} (see {PROG} --help)")


def is_loopback(host: Optional[str]) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def base_url(url: str) -> str:
    """A checked base URL ending in '/': https anywhere, http only on loopback; no path = the API's /v1/."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as error:
        raise Failure(USAGE, f"--url {url!r} is not a URL ({error})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Failure(USAGE, f"--url {url!r} must be http(s)://host[:port]/path, e.g. the ApiUrl output of Rag<Stage>-Serving")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise Failure(USAGE, f"--url {url!r}: plain http is only for the local server on 127.0.0.1 or localhost; use https")
    if parts.query or parts.fragment:
        raise Failure(USAGE, f"--url {url!r} must not have a query or fragment: pass the API's base URL")
    path = parts.path.rstrip("/") + "/" if parts.path.strip("/") else API_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def region_for(url: str, session, requested: Optional[str]) -> str:
    """The signing region: an execute-api host names it; else --region, AWS_REGION, the profile."""
    match = _API_HOST.match(urlsplit(url).hostname or "")
    if match:
        if requested and requested != match.group(1):
            raise Failure(USAGE, f"--region {requested} but the URL's API is in {match.group(1)}: drop --region or fix the URL")
        return match.group(1)
    region = requested or os.environ.get("AWS_REGION") or session_region(session)
    if not region:
        raise Failure(SETUP, "no AWS region: pass --region (or set AWS_REGION)")
    return region


def session_region(session) -> Optional[str]:
    try:
        return session.get_config_variable("region")
    except botocore.exceptions.BotoCoreError as error:
        raise Failure(SETUP, f"AWS configuration: {error}") from None


def frozen_credentials(session):
    try:
        credentials = session.get_credentials()
        frozen = credentials.get_frozen_credentials() if credentials is not None else None
    except botocore.exceptions.ProfileNotFound as error:
        raise Failure(SETUP, f"{error}: pass an existing --profile (see `aws configure list-profiles`)") from None
    except botocore.exceptions.BotoCoreError as error:  # SSO token expired, credential_process failed, ...
        raise Failure(SETUP, f"AWS credentials could not be loaded ({error}): run `aws sso login` or fix the profile") from None
    if frozen is None or not frozen.access_key:
        raise Failure(SETUP, "no AWS credentials found: set AWS_PROFILE or --profile, run `aws sso login`, "
                             "or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    return frozen


def api_url_from_stack(session, stage: str, region: Optional[str]) -> str:
    stack_name = f"Rag{stage.capitalize()}-Serving"
    region = region or os.environ.get("AWS_REGION") or session_region(session)
    if not region:
        raise Failure(SETUP, f"no AWS region to find {stack_name} in: pass --region (or set AWS_REGION)")
    frozen_credentials(session)  # a clear message before botocore's
    try:
        cloudformation = session.create_client("cloudformation", region_name=region)
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except botocore.exceptions.ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "")
        if code == "ValidationError" and "does not exist" in message:
            raise Failure(SETUP, f"stack {stack_name} does not exist in {region}: deploy the stage "
                                 f"(make deploy STAGE={stage}), pass the right --region, or use --url") from None
        raise Failure(SETUP, f"DescribeStacks {stack_name} in {region} failed: {code}: {message}") from None
    except botocore.exceptions.EndpointConnectionError as error:
        raise Failure(UNREACHABLE, f"could not reach CloudFormation in {region} ({error}): check the network and --region") from None
    except botocore.exceptions.BotoCoreError as error:
        raise Failure(SETUP, f"DescribeStacks {stack_name} in {region} failed: {error}") from None
    for output in (stacks[0].get("Outputs") or []) if stacks else []:
        if output.get("OutputKey") == "ApiUrl":
            return output["OutputValue"]
    raise Failure(SETUP, f"stack {stack_name} in {region} has no ApiUrl output: is it fully deployed? (or use --url)")


def build_request(session, method: str, url: str, body: Optional[dict], region: Optional[str]) -> urllib.request.Request:
    """Signed for https; plain for http on loopback (the local server takes no credentials)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if urlsplit(url).scheme == "https":
        signing_region = region_for(url, session, region)
        request = AWSRequest(method=method, url=url, data=data, headers=headers)
        SigV4Auth(frozen_credentials(session), "execute-api", signing_region).add_auth(request)
        headers = dict(request.headers.items())
    return urllib.request.Request(url, data=data, method=method, headers=headers)


def parse_filters(items: list[str]) -> dict:
    filters: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise Failure(USAGE, f"--filter {item!r}: use key=value (repeat the key for any-of)")
        typed: Any = int(value) if re.fullmatch(r"-?\d{1,15}", value) else value
        if key in filters:
            filters[key] = (filters[key] if isinstance(filters[key], list) else [filters[key]]) + [typed]
        else:
            filters[key] = typed
    return filters


def render(result: dict) -> str:
    lines = [str(result.get("answer", "")), ""]
    citations = result.get("citations")
    for citation in citations if isinstance(citations, list) else []:
        if not isinstance(citation, dict):
            continue
        score = citation.get("score")
        shown = f" (score {score:.3f})" if isinstance(score, (int, float)) and not isinstance(score, bool) else ""
        lines.append(f"[{citation.get('n')}] {citation.get('source')}{shown}")
        lines.append(f"    {citation.get('excerpt', '')}")
    timings = result.get("timings_ms") if isinstance(result.get("timings_ms"), dict) else {}
    version = result.get("model_version")
    lines.append("")
    lines.append(
        f"mode={result.get('mode')} generator={result.get('generator')} model={result.get('model')}"
        f"{'' if version is None else f' version={version}'} "
        f"retrieve={timings.get('retrieve')}ms generate={timings.get('generate')}ms total={timings.get('total')}ms "
        f"usage={json.dumps(result.get('usage'))}"
    )
    return "\n".join(lines)


def http_error_message(code: int, raw: bytes, headers) -> str:
    text = raw.decode("utf-8", "replace").strip()
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    message = body.get("message") or body.get("Message") if isinstance(body, dict) else None
    shown = str(message) if message else (text[:300] or "(empty body)")
    hints = []
    if code == 403 and "Missing Authentication Token" in shown:
        hints.append("API Gateway answers this for a path it does not have: check that --url is the API's base URL (…/v1/)")
    elif code == 403 and ("security token" in shown.lower() or "signature" in shown.lower() or "expired" in shown.lower()):
        hints.append("your credentials are invalid or expired: refresh them (e.g. aws sso login)")
    elif code == 403:
        hints.append("your principal needs execute-api:Invoke on this API")
    elif code == 404:
        hints.append("check --url: it must be the API's base URL")
    retry_after = headers.get("Retry-After") if headers is not None else None
    if retry_after:
        hints.append(f"retry after {retry_after} s")
    if isinstance(body, dict) and body.get("field"):
        hints.insert(0, f"field {body['field']}")
    return f"HTTP {code}: {shown}" + (f" ({'; '.join(hints)})" if hints else "")


def send(request: urllib.request.Request, timeout: float) -> Any:
    url = request.full_url
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as error:
        try:
            raw = error.read()
        except (OSError, http.client.HTTPException):
            raw = b""
        raise Failure(HTTP_ERROR, http_error_message(error.code, raw, error.headers)) from None
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise Failure(UNREACHABLE, f"no answer from {url} within {timeout:g} s: try again, or a larger --timeout") from None
        local = is_loopback(urlsplit(url).hostname)
        what = "is the local server running (make local)?" if local else "check --url and your network"
        raise Failure(UNREACHABLE, f"could not reach {url} ({reason}): {what}") from None
    except (socket.timeout, TimeoutError):
        raise Failure(UNREACHABLE, f"no answer from {url} within {timeout:g} s: try again, or a larger --timeout") from None
    except (http.client.HTTPException, OSError) as error:
        raise Failure(UNREACHABLE, f"{url} broke off the answer ({type(error).__name__}: {error}): check --url") from None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        start = raw[:80].decode("utf-8", "replace").replace("\n", " ")
        raise Failure(UNREACHABLE, f"{url} answered 200 but not with JSON ({start!r}...): "
                                   "is --url the API's base URL (the ApiUrl output, …/v1/)?") from None


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                    epilog="\n\n".join(__doc__.split("\n\n")[2:]))
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--stage", help="stage name (reads the ApiUrl output of Rag<Stage>-Serving)")
    where.add_argument("--url", help="the API's base URL (e.g. https://…/v1/, or http://127.0.0.1:PORT for make local)")
    parser.add_argument("question", nargs="?", help="the question")
    parser.add_argument("--mode", choices=("rag", "kb", "prompt"))
    parser.add_argument("--retriever", choices=("kb", "opensearch"))
    parser.add_argument("--generator", help="who generates in modes rag and prompt: bedrock, base, finetuned "
                                            "(deployed) or extractive, llm, bedrock (local)")
    parser.add_argument("--top-k", type=positive_int, metavar="N")
    parser.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE", help="repeat a key for any-of")
    parser.add_argument("--health", action="store_true", help="GET health instead of asking")
    parser.add_argument("--json", action="store_true", help="print the raw JSON response")
    parser.add_argument("--profile", help="AWS profile")
    parser.add_argument("--region", help="AWS region (default: AWS_REGION, then your profile's)")
    parser.add_argument("--timeout", type=positive_float, default=35.0, metavar="S", help="seconds to wait for the answer")
    return parser


def positive_int(text: str) -> int:
    if not re.fullmatch(r"\d{1,6}", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 900:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 900 seconds")
    return value


def run(argv: Optional[list[str]]) -> int:
    args = build_parser().parse_args(argv)
    if not args.health and not (args.question or "").strip():
        raise Failure(USAGE, "a question is required (or --health)")
    if args.stage is not None and not STAGE_NAME.fullmatch(args.stage):
        raise Failure(USAGE, f"--stage {args.stage!r} is not a stage name (lowercase letters and digits, e.g. dev)")
    if args.generator is not None and not GENERATOR_NAME.fullmatch(args.generator):
        raise Failure(USAGE, f"--generator {args.generator!r} is not a generator name (e.g. bedrock, base, finetuned, extractive)")
    if args.region is not None and not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", args.region):
        raise Failure(USAGE, f"--region {args.region!r} is not an AWS region name (e.g. us-east-1)")
    filters = parse_filters(args.filter)

    try:
        session = botocore.session.Session(profile=args.profile)
    except botocore.exceptions.BotoCoreError as error:
        raise Failure(SETUP, f"AWS configuration: {error}") from None
    base = base_url(args.url if args.url is not None else api_url_from_stack(session, args.stage, args.region))
    if args.health:
        request = build_request(session, "GET", base + "health", None, args.region)
    else:
        body: dict = {"question": args.question}
        for key, value in (("mode", args.mode), ("retriever", args.retriever), ("top_k", args.top_k), ("generator", args.generator)):
            if value is not None:
                body[key] = value
        if filters:
            body["filters"] = filters
        request = build_request(session, "POST", base + "query", body, args.region)
    result = send(request, args.timeout)
    if args.json or args.health or not isinstance(result, dict):
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        print(render(result))
    return OK


def main(argv: Optional[list[str]] = None) -> int:
    try:
        return run(argv)
    except Failure as failure:
        print(f"{PROG}: {failure}", file=sys.stderr)
        return failure.code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
