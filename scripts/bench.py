#!/usr/bin/env python3
"""Measures synth and test time against the floor, in one run, and prints medians and ratios.

    floor       a fresh process: import aws_cdk, synthesize one empty stack, CDK's built-in
                CloudFormation validation off as in app.py (on, it adds about 2 s to the floor
                and would hide that much of the app's own cost)
    synth app   a fresh process: `python app.py` for every stage (what the CLI runs)
    synth cli   `cdk synth -c stage=all`, as the README says (adds the CLI's own start-up)
    tests       the whole test suite (`python -m pytest`)

Usage: scripts/bench.py [--runs N]   (run from the repository root, after `make synth`)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(ROOT / ".venv" / "bin" / "python")
FLOOR = """
import aws_cdk as cdk
app = cdk.App(outdir={outdir!r}, builtin_cloud_formation_validation=False)
stack = cdk.Stack(app, "Floor")
cdk.CfnWaitConditionHandle(stack, "Nothing")
app.synth()
"""


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    env = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20", "CDK_DISABLE_VERSION_CHECK": "1"}
    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    with tempfile.TemporaryDirectory() as scratch:
        app_env = {**env, "CDK_OUTDIR": f"{scratch}/app.out", "CDK_CONTEXT_JSON": json.dumps({**context, "stage": "all"})}
        commands = {
            "floor": ([PYTHON, "-c", FLOOR.format(outdir=f"{scratch}/floor.out")], env),
            "synth app": ([PYTHON, "app.py"], app_env),
            "synth cli": ([str(ROOT / "node_modules/.bin/cdk"), "synth", "--no-notices", "--quiet", "-c", "stage=all", "-o", f"{scratch}/cli.out"], env),
            "tests": ([PYTHON, "-m", "pytest", "-q", "-p", "no:randomly"], env),
        }
        medians = {}
        for name, (command, command_env) in commands.items():
            samples = [timed(command, command_env) for _ in range(runs)]
            medians[name] = statistics.median(samples)
            print(f"{name:10s} median {medians[name]:6.2f} s   runs: {', '.join(f'{s:.2f}' for s in samples)}", flush=True)
    floor = medians["floor"]
    print(f"\nsynth app / floor = {medians['synth app'] / floor:.2f}")
    print(f"synth cli / floor = {medians['synth cli'] / floor:.2f}")
    print(f"tests / floor     = {medians['tests'] / floor:.2f}")


if __name__ == "__main__":
    sys.exit(main())
