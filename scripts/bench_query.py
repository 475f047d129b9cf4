#!/usr/bin/env python3
"""Benchmarks of the query function against its targets (offline, no AWS account needed).

    .venv/bin/python scripts/bench_query.py [--runs 15] [--requests 2000] [--check]

1. Cold import: a fresh interpreter importing `query.handler` vs one importing `boto3` alone,
   the two alternating (so a busy machine slows both alike), median of --runs each after one
   warm-up each. As in Lambda, the function's own code has no bytecode (the asset ships none
   and /var/task is read-only, so every cold start compiles it): it is imported from a copy of
   lambda/query and lambda/shared with `-B`; boto3 and the local aws-lambda-powertools (standing
   in for the public layer) use their installed bytecode. Target: at most 1.3x.
2. Per-request overhead: `handler.main` on warm stubbed clients (botocore Stubber: the SDK
   still validates and serializes every request), for each mode and generator; the endpoint's
   state is one stubbed DescribeEndpoint, cached as in Lambda; JSON logs and EMF metrics (with
   their three dimensions) are written (to /dev/null). Target: p50 under 2 ms.
3. Deployed code size: the function's asset (lambda/query + lambda/shared, no bytecode) as a
   deflated zip, which is what Lambda stores. Target: under 100 KB.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAMBDA = ROOT / "lambda"
TARGET_IMPORT_RATIO = 1.3
TARGET_P50_MS = 2.0
TARGET_ZIP_BYTES = 100 * 1024

_TIMER = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def cold_imports(runs: int) -> tuple[float, float]:
    """(median ms of `import boto3`, median ms of `import query.handler`), runs alternating."""
    with tempfile.TemporaryDirectory() as copy:
        for folder in ("query", "shared"):
            shutil.copytree(LAMBDA / folder, Path(copy) / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        env = {**os.environ, "PYTHONPATH": copy, "AWS_REGION": "us-east-1"}
        samples: dict[str, list[float]] = {"boto3": [], "query.handler": []}
        for i in range(runs + 1):
            for module in samples:
                out = subprocess.run([sys.executable, "-B", "-c", _TIMER.format(module=module)], env=env, cwd=copy,
                                     capture_output=True, text=True, check=True)
                if i:  # the first round warms the file cache
                    samples[module].append(float(out.stdout.strip()) * 1000)
    return statistics.median(samples["boto3"]), statistics.median(samples["query.handler"])


def request_overhead(requests: int) -> dict[str, dict[str, float]]:
    sys.path[:0] = [str(LAMBDA), str(ROOT)]
    sys.stdout = open(os.devnull, "w")  # Powertools binds its log stream on first use
    try:
        from tests.test_query_helpers import (
            call,
            converse_response,
            described,
            endpoint_response,
            make_clients,
            retrieve_response,
            settings,
            stream,
        )
        from query import aws_backend, handler
        from shared.opensearch_http import OpenSearchResponse

        hits = OpenSearchResponse(200, {"hits": {"hits": [
            {"_id": "a", "_score": 0.9, "_source": {"text": "Keys rotate yearly.", "x-amz-bedrock-kb-source-uri": "s3://docs/kms.md"}},
        ]}})
        question = "How do keys rotate?"
        cases = {  # name: (default generator, body)
            "rag/kb/finetuned": ("auto", {"question": question}),
            "rag/kb/base": ("auto", {"question": question, "generator": "base"}),
            "rag/kb/bedrock": ("bedrock", {"question": question}),
            "rag/os/bedrock": ("bedrock", {"question": question, "retriever": "opensearch"}),
            "prompt/finetuned": ("finetuned", {"question": question, "mode": "prompt"}),
            "kb (managed)": ("auto", {"question": question, "mode": "kb"}),
            "400 invalid": ("auto", {"question": ""}),
        }
        results = {}
        for name, (default, body) in cases.items():
            s = settings(DEFAULT_GENERATOR=default)
            clients, stubs = make_clients(s)
            for stub in stubs.stubbers:
                stub.activate()
            stubs.control.add_response("describe_endpoint", described(), None)  # read once, then cached for 30 s
            handler.configure(settings=s, backend=aws_backend.build(s, clients))
            samples = []
            for i in range(requests + 50):
                mode = body.get("mode", "rag")
                if not body.get("question"):
                    pass
                elif mode == "kb":
                    stubs.agent.add_response("retrieve_and_generate", {"output": {"text": "Yearly."}, "sessionId": "s-1", "citations": []})
                else:
                    if mode == "rag" and body.get("retriever") == "opensearch":
                        stubs.runtime.add_response("invoke_model", {"body": stream({"embedding": [0.1, 0.2, 0.3, 0.4]}), "contentType": "application/json"})
                        stubs.search.responses.append(hits)
                    elif mode == "rag":
                        stubs.agent.add_response("retrieve", retrieve_response("Keys rotate yearly.", "Use EnableKeyRotation."))
                    if default == "bedrock" or body.get("generator") == "bedrock":
                        stubs.runtime.add_response("converse", converse_response("Yearly [1]."))
                    else:
                        stubs.sagemaker.add_response("invoke_endpoint", endpoint_response("Yearly [1]."))
                started = time.perf_counter()
                status = call(body)[0]
                elapsed = (time.perf_counter() - started) * 1000
                assert status in (200, 400), (name, status)
                if i >= 50:  # warm-up: first client use, caches
                    samples.append(elapsed)
            for stub in stubs.stubbers:
                stub.deactivate()
            samples.sort()
            results[name] = {
                "p50_ms": round(statistics.median(samples), 3),
                "p95_ms": round(samples[int(len(samples) * 0.95)], 3),
                "p99_ms": round(samples[int(len(samples) * 0.99)], 3),
            }
        handler.configure()
        return results
    finally:
        sys.stdout.close()
        sys.stdout = sys.__stdout__


def code_size() -> tuple[int, int]:
    buffer = io.BytesIO()
    raw = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for folder in ("query", "shared"):
            for path in sorted((LAMBDA / folder).rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                    archive.write(path, path.relative_to(LAMBDA))
                    raw += path.stat().st_size
    return len(buffer.getvalue()), raw


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    boto3_ms, handler_ms = cold_imports(args.runs)
    overhead = request_overhead(args.requests)
    zipped, unzipped = code_size()
    ratio = handler_ms / boto3_ms
    report = {
        "cold_import_ms": {"boto3": round(boto3_ms, 1), "query.handler": round(handler_ms, 1), "ratio": round(ratio, 2), "target_ratio": TARGET_IMPORT_RATIO},
        "request_overhead": overhead,
        "code_size_bytes": {"zip": zipped, "unzipped": unzipped, "target_zip": TARGET_ZIP_BYTES},
        "python": sys.version.split()[0],
    }
    missed = []
    if ratio > TARGET_IMPORT_RATIO:
        missed.append(f"cold import ratio {ratio:.2f} > {TARGET_IMPORT_RATIO}")
    for name, numbers in overhead.items():
        if numbers["p50_ms"] >= TARGET_P50_MS:
            missed.append(f"{name} p50 {numbers['p50_ms']} ms >= {TARGET_P50_MS}")
    if zipped >= TARGET_ZIP_BYTES:
        missed.append(f"code size {zipped} B >= {TARGET_ZIP_BYTES}")
    if args.json:
        print(json.dumps({**report, "missed": missed}, indent=2))
    else:
        print(f"cold import   boto3 {boto3_ms:.1f} ms | query.handler {handler_ms:.1f} ms | ratio {ratio:.2f} (target <= {TARGET_IMPORT_RATIO})")
        for name, numbers in overhead.items():
            print(f"per request   {name:<17} p50 {numbers['p50_ms']:.3f} ms  p95 {numbers['p95_ms']:.3f} ms  p99 {numbers['p99_ms']:.3f} ms (target p50 < {TARGET_P50_MS})")
        print(f"code size     {zipped / 1024:.1f} KB zipped, {unzipped / 1024:.1f} KB unzipped (target < {TARGET_ZIP_BYTES // 1024} KB)")
        print("all targets met" if not missed else "MISSED: " + "; ".join(missed))
    return 1 if (missed and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
