"""External oracles over every synthesized template: CloudFormation's schema (cfn-lint) and cdk-nag."""

from __future__ import annotations

import json
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_s3 as s3

from tests.cfn_lint_oracle import PROBE_NAME


@pytest.fixture(scope="module")
def lint_findings(synth) -> dict[str, list[str]]:
    return dict(synth.lint.get(timeout=600))


@pytest.mark.cfn_lint
def test_every_template_passes_cfn_lint(synth, lint_findings):
    findings = [finding for name in synth.stack_names for finding in lint_findings[name]]
    assert not findings, "\n".join(findings)


@pytest.mark.cfn_lint
def test_cfn_lint_covers_every_stack(synth, lint_findings):
    assert set(synth.stack_names) <= set(lint_findings)
    assert len(synth.stack_names) >= 12


@pytest.mark.cfn_lint
def test_cfn_lint_catches_a_schema_error(lint_findings):
    """The oracle is live: the probe template's misspelled property fails."""
    assert any("E3002" in finding for finding in lint_findings[PROBE_NAME])


def acknowledgements(synth) -> list[tuple[str, str, str]]:
    """(construct path, rule, reason) of every acknowledgement, as recorded in the assembly."""
    found = []
    for name in synth.stack_names:
        metadata = json.loads((Path(synth.assembly.directory) / f"{name}.metadata.json").read_text())
        for path, entries in metadata.items():
            for entry in entries:
                if entry["type"] == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                    found.extend((path, rule, reason) for rule, reason in entry["data"].items())
    return found


def test_every_acknowledgement_sits_on_a_resource_with_a_specific_reason(synth):
    """cdk-nag passed during the session synth; what it let through was acknowledged, with reasons."""
    found = acknowledgements(synth)
    assert found, "expected the acknowledgements to be recorded in the cloud assembly"
    for path, rule, reason in found:
        assert path.count("/") >= 2, f"{rule} is acknowledged on a whole stack ({path}), not on a resource"
        assert len(reason) >= 20, f"{path}: acknowledgement of {rule} needs a specific reason"


def test_cdk_nag_fails_synth_on_an_unacknowledged_finding(tmp_path):
    """The plugin is live: an unencrypted, unlogged bucket makes the synth fail."""
    from cdk_nag import AwsSolutionsChecks

    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Careless")
    s3.Bucket(stack, "Open")
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    with pytest.raises(Exception, match="AwsSolutions-S1|Validation failed|validation"):
        app.synth()
