#!/usr/bin/env python3
"""Ask a deployed stage a question: SigV4-signs the request with your AWS credentials.

    python scripts/ask.py --stage dev "How do I rotate the KMS key?"
    python scripts/ask.py --url https://abc123.execute-api.us-east-1.amazonaws.com/prod/ \\
        --mode rag --retriever opensearch --top-k 3 --filter category=security "..."
    python scripts/ask.py --stage dev --health

`--stage` reads the API URL from the stack `Rag<Stage>-Serving` (output `ApiUrl`); `--url`
skips that lookup. Credentials and region come from the usual AWS configuration (environment,
profile, SSO); the caller needs `execute-api:Invoke` on the API. Exit status: 0 on 200,
1 on an HTTP error (the error body is printed), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.error
import urllib.request

import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

_API_HOST = re.compile(r"^https://[a-z0-9]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?/")


def api_url_from_stack(session, stage: str) -> str:
    stack_name = f"Rag{stage.capitalize()}-Serving"
    cloudformation = session.create_client("cloudformation")
    stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    for output in stacks[0].get("Outputs", []):
        if output["OutputKey"] == "ApiUrl":
            return output["OutputValue"]
    raise SystemExit(f"stack {stack_name} has no ApiUrl output")


def signed(session, method: str, url: str, body: dict | None) -> urllib.request.Request:
    match = _API_HOST.match(url)
    region = match.group(1) if match else session.get_config_variable("region")
    credentials = session.get_credentials()
    if credentials is None:
        raise SystemExit("no AWS credentials found (set a profile, environment variables or SSO)")
    data = None if body is None else json.dumps(body).encode()
    request = AWSRequest(method=method, url=url, data=data, headers={"Content-Type": "application/json"})
    SigV4Auth(credentials.get_frozen_credentials(), "execute-api", region).add_auth(request)
    return urllib.request.Request(url, data=data, method=method, headers=dict(request.headers.items()))


def parse_filters(items: list[str]) -> dict:
    filters: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--filter {item!r}: use key=value (repeat the key for any-of)")
        typed = int(value) if value.lstrip("-").isdigit() else value
        if key in filters:
            filters[key] = (filters[key] if isinstance(filters[key], list) else [filters[key]]) + [typed]
        else:
            filters[key] = typed
    return filters


def render(result: dict) -> str:
    lines = [result["answer"], ""]
    for citation in result.get("citations", []):
        score = "" if citation.get("score") is None else f" (score {citation['score']:.3f})"
        lines.append(f"[{citation['n']}] {citation['source']}{score}")
        lines.append(f"    {citation['excerpt']}")
    timings = result.get("timings_ms", {})
    lines.append("")
    lines.append(
        f"mode={result.get('mode')} model={result.get('model')} "
        f"retrieve={timings.get('retrieve')}ms generate={timings.get('generate')}ms total={timings.get('total')}ms "
        f"usage={json.dumps(result.get('usage'))}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--stage", help="stage name (reads the ApiUrl output of Rag<Stage>-Serving)")
    where.add_argument("--url", help="the API's base URL (ends with the stage path, e.g. /prod/)")
    parser.add_argument("question", nargs="?", help="the question")
    parser.add_argument("--mode", choices=("rag", "kb", "prompt"))
    parser.add_argument("--retriever", choices=("kb", "opensearch"))
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--health", action="store_true", help="GET /health instead of asking")
    parser.add_argument("--json", action="store_true", help="print the raw JSON response")
    parser.add_argument("--profile", help="AWS profile")
    args = parser.parse_args(argv)
    if not args.health and not args.question:
        parser.error("a question is required (or --health)")

    session = botocore.session.Session(profile=args.profile)
    base = (args.url or api_url_from_stack(session, args.stage)).rstrip("/") + "/"
    if args.health:
        request = signed(session, "GET", base + "health", None)
    else:
        body: dict = {"question": args.question}
        for key, value in (("mode", args.mode), ("retriever", args.retriever), ("top_k", args.top_k)):
            if value is not None:
                body[key] = value
        if args.filter:
            body["filters"] = parse_filters(args.filter)
        request = signed(session, "POST", base + "query", body)
    try:
        with urllib.request.urlopen(request, timeout=35) as response:
            result = json.loads(response.read())
    except urllib.error.HTTPError as error:
        print(f"HTTP {error.code}: {error.read().decode('utf-8', 'replace')}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json or args.health else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
