#!/usr/bin/env python3
"""Mutation testing with mutmut 3: how many realistic bugs the tests catch, per file.

    python scripts/mutation.py                                   # lambda/, stacks/config.py, model_artifacts/training/
    python scripts/mutation.py lambda/vector_index lambda/shared/opensearch_http.py
    python scripts/mutation.py stacks/config.py --tests tests/test_config.py

mutmut copies the code it mutates into `mutants/` and maps each mutant to a module name from its
path, so the run happens in a scratch copy of the work tree (build/mutation/work) where `lambda/`
is renamed `src/` (the layout mutmut understands; handlers then import as `query.handler`, exactly
as under pytest.ini's `pythonpath = lambda`). The source tree is never touched.

Tests: by default the test files that exercise each path (TESTS_FOR below; anything else runs the
whole suite, which works but re-synthesizes per mutant). Summary: build/mutation/summary.md and
summary.json, with the killed share per file. Mutants that only change a logging call (message
text, `extra` keys) are counted apart as "logging": they alter log output, not behaviour, and no
behaviour test should pin them. Exit status: 0 when the run completed (whatever the score), 2 on
bad arguments, 3 when mutmut is missing or failed.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "mutation"
DEFAULT_PATHS = ["lambda", "stacks/config.py", "model_artifacts/training"]
# Which tests exercise which source path (first matching prefix wins); others: the whole suite.
TESTS_FOR = {
    "lambda/vector_index": ["tests/test_vector_index_handler.py", "tests/test_vector_index_adversarial.py"],
    "lambda/shared/opensearch_http.py": ["tests/test_opensearch_http.py", "tests/test_vector_index_handler.py",
                                         "tests/test_vector_index_adversarial.py"],
    "lambda/ingest": ["tests/test_ingest_handler.py"],
    "lambda/query": ["tests/test_query_errors.py", "tests/test_query_helpers.py", "tests/test_query_modes.py",
                     "tests/test_query_prompts.py", "tests/test_query_properties.py"],
    "lambda/shared": ["tests/test_query_errors.py", "tests/test_query_helpers.py", "tests/test_query_modes.py",
                      "tests/test_endpoint_codec.py", "tests/test_model_record.py", "tests/test_ingest_handler.py"],
    "lambda/validate_training_input": ["tests/test_train_script.py"],
    "stacks/config.py": ["tests/test_config.py"],
    "model_artifacts/training": ["tests/test_train_script.py"],
}
MUTANT_LINE = re.compile(r"^\s*(?P<name>\S+__mutmut_\d+): (?P<status>.+)$")


def tests_for(paths: list[str]) -> list[str]:
    chosen: list[str] = []
    for path in paths:
        match = next((tests for prefix, tests in TESTS_FOR.items() if path == prefix or path.startswith(prefix.rstrip("/") + "/")
                      or prefix.startswith(path.rstrip("/") + "/")), None)
        if match is None:
            return ["tests"]
        for prefix, tests in TESTS_FOR.items():  # a folder takes the tests of everything under it
            if prefix == path or prefix.startswith(path.rstrip("/") + "/") or path.startswith(prefix.rstrip("/") + "/"):
                chosen += [t for t in tests if t not in chosen]
    return [t for t in chosen if (ROOT / t).exists()] or ["tests"]


def scratch_copy(work: Path) -> None:
    """The work tree's files (tracked and new, not ignored) with lambda/ renamed src/."""
    if work.exists():
        shutil.rmtree(work)
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    for name in listed:
        source = ROOT / name
        if not source.is_file():
            continue
        target = work / ("src/" + name[len("lambda/"):] if name.startswith("lambda/") else name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    ini = work / "pytest.ini"
    ini.write_text(re.sub(r"^pythonpath = .*$", "pythonpath = . src", ini.read_text(), flags=re.M))
    (work / "lambda").symlink_to("src")  # stacks find handler folders under lambda/


def mutmut_config(paths: list[str], tests: list[str]) -> str:
    sources = ["src/" + p[len("lambda/"):] if p.startswith("lambda/") else ("src" if p == "lambda" else p) for p in paths]
    lines = ["[mutmut]", "source_paths=" + "\n    ".join(sources),
             "pytest_add_cli_args_test_selection=" + "\n    ".join(tests),
             "pytest_add_cli_args=-p no:cacheprovider -q",
             "also_copy=" + "\n    ".join(["src/", "tests/", "stacks/", "model_artifacts/", "pricing/", "scripts/",
                                             "pytest.ini", "app.py", "cdk.json", "package.json"])]
    return "\n".join(lines) + "\n"


def is_logging_only(diff: str) -> bool:
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    return bool(changed) and all("logger." in line or line.strip(" +-").startswith("extra=") for line in changed)


def summarize(work: Path, mutmut: str) -> dict:
    listing = subprocess.run([mutmut, "results", "--all", "true"], cwd=work, capture_output=True, text=True).stdout
    if not listing.strip():
        listing = subprocess.run([mutmut, "results"], cwd=work, capture_output=True, text=True).stdout
    per_file: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    survivors: list[dict] = []
    for line in listing.splitlines():
        match = MUTANT_LINE.match(line)
        if not match:
            continue
        name, status = match["name"], match["status"].strip()
        module = name.split(".x_")[0].split(".xǁ")[0]
        if status == "survived":
            diff = subprocess.run([mutmut, "show", name], cwd=work, capture_output=True, text=True).stdout
            if is_logging_only(diff):
                status = "logging"
            else:
                survivors.append({"mutant": name, "diff": "\n".join(l for l in diff.splitlines() if l[:1] in "+-" and l[:3] not in ("+++", "---"))})
        per_file[module][status] += 1
    files = {}
    for module, counts in sorted(per_file.items()):
        killed, survived = counts.get("killed", 0), counts.get("survived", 0)
        files[module] = {**counts, "score": round(killed / (killed + survived), 4) if killed + survived else None}
    killed = sum(c.get("killed", 0) for c in per_file.values())
    survived = sum(c.get("survived", 0) for c in per_file.values())
    return {"files": files, "killed": killed, "survived": survived,
            "score": round(killed / (killed + survived), 4) if killed + survived else None, "survivors": survivors}


def write_summary(summary: dict, paths: list[str], tests: list[str]) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "summary.json").write_text(json.dumps({"paths": paths, "tests": tests, **summary}, indent=1))
    lines = [f"# Mutation testing (mutmut 3): {' '.join(paths)}", "",
             f"Killed share: **{summary['score']:.1%}** ({summary['killed']} killed, {summary['survived']} survived; "
             "logging-only mutants, timeouts and mutants no test reaches are listed apart)" if summary["score"] is not None
             else "No mutant was checked.", "", f"Tests: {' '.join(tests)}", "",
             "| module | killed | survived | logging | no tests | timeout | other | score |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for module, c in summary["files"].items():
        other = sum(v for k, v in c.items() if k not in ("killed", "survived", "logging", "no tests", "timeout", "score"))
        score = "-" if c["score"] is None else f"{c['score']:.1%}"
        lines.append(f"| {module} | {c.get('killed', 0)} | {c.get('survived', 0)} | {c.get('logging', 0)} | {c.get('no tests', 0)} "
                     f"| {c.get('timeout', 0)} | {other} | {score} |")
    lines += ["", "## Survivors", ""]
    for survivor in summary["survivors"]:
        lines += [f"### {survivor['mutant']}", "", "```diff", survivor["diff"], "```", ""]
    path = OUT / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", default=DEFAULT_PATHS, help="files or folders to mutate (default: %(default)s)")
    parser.add_argument("--tests", nargs="+", help="test files to run (default: the ones that exercise the paths)")
    parser.add_argument("--max-children", type=int, default=2, help="parallel mutants (default: %(default)s, the cores here)")
    args = parser.parse_args(argv)
    for path in args.paths:
        if not (ROOT / path).exists():
            print(f"mutation.py: {path} does not exist (paths are relative to the repository root)", file=sys.stderr)
            return 2
    mutmut = shutil.which("mutmut", path=str(Path(sys.executable).parent))
    if mutmut is None:
        print("mutation.py: mutmut is not installed in this venv: run `make mutation` (installs requirements-mutation.txt)", file=sys.stderr)
        return 3
    tests = args.tests or tests_for(args.paths)
    work = OUT / "work"
    print(f"mutating {' '.join(args.paths)} against {' '.join(tests)} in {work.relative_to(ROOT)}", flush=True)
    scratch_copy(work)
    (work / "setup.cfg").write_text(mutmut_config(args.paths, tests))
    run = subprocess.run([mutmut, "run", "--max-children", str(args.max_children)], cwd=work)
    if run.returncode not in (0, 1):
        print(f"mutation.py: mutmut run exited {run.returncode}", file=sys.stderr)
        return 3
    summary = summarize(work, mutmut)
    path = write_summary(summary, args.paths, tests)
    score = "n/a" if summary["score"] is None else f"{summary['score']:.1%}"
    print(f"killed share {score}: {summary['killed']} killed, {summary['survived']} survived; summary in {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
