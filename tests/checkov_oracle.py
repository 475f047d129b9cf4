"""checkov over every synthesized template, in the background (its own venv: see requirements-checkov.txt).

`start(templates)` launches one checkov process over all templates (plus a probe that must fail,
proving the oracle is live) and returns at once; `collect(run)` waits and parses its JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
PROBE_FILE = "checkov-probe.template.json"
# A bucket with nothing: checkov must report it (CKV_AWS_18 access logging among others) - and
# the same bucket with a skip of CKV_AWS_18 in its Metadata must not.
PROBE = {"Resources": {
    "Careless": {"Type": "AWS::S3::Bucket", "Properties": {}},
    "Excused": {"Type": "AWS::S3::Bucket", "Properties": {},
                "Metadata": {"checkov": {"skip": [{"id": "CKV_AWS_18", "comment": "probe: a skip with its reason"}]}}},
}}


@dataclass
class CheckovRun:
    process: subprocess.Popen | None
    output: Path
    error: str = ""


@dataclass(frozen=True)
class Finding:
    check_id: str
    resource: str  # e.g. AWS::S3::Bucket.Careless
    file: str  # template file name
    name: str
    comment: str = ""  # the skip's reason (skipped findings)


def start(templates: dict[str, dict], folder: Path) -> CheckovRun:
    """Writes the templates to `folder` and starts checkov over them; never blocks."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name, template in {**templates, PROBE_FILE.removesuffix(".template.json"): PROBE}.items():
        path = folder / f"{name}.template.json"
        path.write_text(json.dumps(template))
        files.append(str(path))
    output = folder / "checkov.json"
    if not CHECKOV.exists():
        return CheckovRun(None, output, f"{CHECKOV} is missing: run `make test` (it creates .venv-checkov on first use)")
    arguments = [str(CHECKOV), "--framework", "cloudformation", "--output", "json", "--compact", "--skip-download"]
    for file in files:
        arguments += ["--file", file]
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_NO_OUTPUT_ON_ERROR": "TRUE"}
    with output.open("w") as sink:
        process = subprocess.Popen(arguments, stdout=sink, stderr=subprocess.PIPE, cwd=folder, env=env, text=True)
    return CheckovRun(process, output)


def collect(run: CheckovRun, timeout_s: float = 600) -> dict[str, list[Finding]]:
    """{"failed": [...], "skipped": [...], "passed": [...]} once checkov is done; raises with its stderr if it broke."""
    if run.process is None:
        raise RuntimeError(run.error)
    _, stderr = run.process.communicate(timeout=timeout_s)
    try:
        report = json.loads(run.output.read_text())
    except ValueError:
        raise RuntimeError(f"checkov exited {run.process.returncode} without a JSON report: {stderr[-2000:]}") from None
    reports = report if isinstance(report, list) else [report]
    found: dict[str, list[Finding]] = {"failed": [], "skipped": [], "passed": []}
    for each in reports:
        for kind in found:
            for check in each.get("results", {}).get(f"{kind}_checks", []):
                found[kind].append(Finding(
                    check_id=check["check_id"], resource=check["resource"], file=Path(check["file_path"]).name,
                    name=check.get("check_name", ""), comment=(check.get("check_result") or {}).get("suppress_comment", "") or "",
                ))
    return found
