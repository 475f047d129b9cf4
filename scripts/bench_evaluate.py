#!/usr/bin/env python3
"""Measure the evaluation harness's own overhead against the time of the calls it makes.

Starts the stand-in query API (`evaluation.stub_target`) in another process on 127.0.0.1 with a
fixed answer time, runs `evaluate.py run` in this process over the shipped set's test part
(every configuration the stub offers, no cache, 1,000 bootstrap resamples, reports written), and
reports the harness's CPU time (this process: HTTP client, JSON, scoring, bootstrap, reports)
as a share of the summed call time. Medians of --repeat runs.

    python scripts/bench_evaluate.py                 # 200 ms answers (a fast real generator)
    python scripts/bench_evaluate.py --delay-ms 50   # a harsher bound
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stderr
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluation import cli  # noqa: E402


def one_run(url: str, out: Path, concurrency: int) -> dict:
    started = time.perf_counter()
    with redirect_stderr(io.StringIO()):
        status = cli.main(["run", "--url", url, "--out", str(out), "--no-cache", "--quiet", "--concurrency", str(concurrency)])
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"evaluate.py run failed with status {status}")
    summary = json.loads((out / "summary.json").read_text())
    overhead = summary["run"]["overhead"]
    return {"wall_s": wall, "calls": summary["run"]["calls"], **overhead}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay-ms", type=float, default=200.0, help="the stub's answer time (default 200 ms)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-m", "evaluation.stub_target", "--corpus", str(ROOT / "model_artifacts" / "sample_documents"),
                               "--delay-ms", str(args.delay_ms)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        port = server.stdout.readline().split()[1]
        results = []
        with tempfile.TemporaryDirectory() as folder:
            for n in range(args.repeat):
                results.append(one_run(f"http://127.0.0.1:{port}", Path(folder) / f"run{n}", args.concurrency))
    finally:
        server.terminate()
        server.wait(timeout=10)
    ratio = statistics.median(r["ratio"] for r in results)
    print(json.dumps({
        "delay_ms": args.delay_ms, "concurrency": args.concurrency, "runs": args.repeat, "calls_per_run": results[0]["calls"],
        "median_harness_cpu_s": round(statistics.median(r["harness_cpu_s"] for r in results), 3),
        "median_call_s": round(statistics.median(r["call_s"] for r in results), 2),
        "median_wall_s": round(statistics.median(r["wall_s"] for r in results), 2),
        "median_overhead_percent": round(100 * ratio, 2),
        "median_harness_cpu_ms_per_call": round(1000 * statistics.median(r["harness_cpu_s"] / r["calls"] for r in results), 2),
    }, indent=2))
    return 0 if ratio < 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
