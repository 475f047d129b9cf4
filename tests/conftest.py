"""Shared fixtures. Every stage is synthesized ONCE per test run (session scope), with cdk-nag on."""

from __future__ import annotations

import json
import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
# Test apps skip CDK's built-in CloudFormation validation (~4 s a synth), as app.py does:
# cfn-lint is the schema oracle here.
os.environ.setdefault("CDK_VALIDATION", "false")


def cdk_json_context() -> dict[str, Any]:
    """The context the CDK CLI would pass: cdk.json's `context` block."""
    return json.loads((ROOT / "cdk.json").read_text())["context"]


@dataclass
class Synthesized:
    """The cloud assembly of every stage, plus the objects that built it."""

    config: Any  # stacks.config.AppConfig
    stages: list  # list[stacks.stage.StageStacks]
    assembly: Any  # aws_cdk.cx_api.CloudAssembly
    lint: Any = field(default=None)  # multiprocessing AsyncResult: cfn-lint findings, started after synth
    checkov: Any = field(default=None)  # tests.checkov_oracle.CheckovRun: checkov in its own process, started after synth

    @property
    def stack_names(self) -> list[str]:
        return sorted(stack.stack_name for stack in self.assembly.stacks)

    def template(self, stack_name: str) -> dict:
        return self.assembly.get_stack_by_name(stack_name).template

    def assertions(self, stack_name: str):
        # Template.from_stack would re-run the validation plugins; the synthesized JSON is the truth.
        from aws_cdk.assertions import Template

        return Template.from_json(self.template(stack_name))

    def stage(self, name: str):
        return next(stage for stage in self.stages if stage.storage.stack_name.startswith(f"Rag{name.capitalize()}-"))


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    from app import build_app
    from stacks.config import load_config
    from tests import checkov_oracle
    from tests.cfn_lint_oracle import lint_template, probe_template

    context = {**cdk_json_context(), "stage": "all"}
    app, stages = build_app(context, outdir=str(tmp_path_factory.mktemp("cdk.out")))
    assembly = app.synth()  # raises if cdk-nag reports an unacknowledged finding
    result = Synthesized(config=load_config(context), stages=stages, assembly=assembly)
    # cfn-lint spends ~1 s of schema validation per template: it runs on both cores in the
    # background while the other tests go on, and the lint tests (ordered last) collect it.
    jobs = [(name, json.dumps(result.template(name))) for name in result.stack_names]
    # checkov (its own venv) runs as one more background process; its tests are ordered last too.
    result.checkov = checkov_oracle.start({name: result.template(name) for name in result.stack_names},
                                          tmp_path_factory.mktemp("checkov"))
    with multiprocessing.get_context("fork").Pool(2) as pool:
        result.lint = pool.starmap_async(lint_template, [*jobs, probe_template()])
        yield result
        pool.close()
    if result.checkov.process is not None and result.checkov.process.poll() is None:
        result.checkov.process.kill()


def pytest_collection_modifyitems(items):
    """Synth-based tests first (to start the background lint early), lint tests last."""

    def rank(item) -> int:
        if item.get_closest_marker("cfn_lint") or item.get_closest_marker("background_oracle"):
            return 2
        return 0 if "synth" in getattr(item, "fixturenames", ()) else 1

    items.sort(key=rank)


@pytest.fixture(scope="session")
def jsonata():
    """The reference JSONata engine (npm `jsonata`), one Node process for the whole session."""
    from tests.jsonata_engine import JsonataEngine

    engine = JsonataEngine()
    yield engine
    engine.close()
