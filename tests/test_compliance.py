"""External oracles over every synthesized template: CloudFormation's schema (cfn-lint) and cdk-nag."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_s3 as s3

# cfn-lint warnings we accept, each with why. Errors are never ignored.
ACCEPTED_WARNINGS = {
    # CDK's own constructs (e.g. the BucketNotificationsHandler) add a DependsOn that a GetAtt
    # already implies; harmless, and not ours to change.
    "W3005",
}
LINT_REGIONS = ["us-east-1", "us-west-2"]  # regions with both trn1 and inf2 SageMaker capacity


def _lint(path: str) -> list[str]:
    from cfnlint.api import ManualArgs, lint

    matches = lint(Path(path).read_text(), config=ManualArgs(regions=LINT_REGIONS))
    return [f"{Path(path).name}: {match}" for match in matches if match.rule.id not in ACCEPTED_WARNINGS]


@pytest.fixture(scope="module")
def lint_findings(synth) -> dict[str, list[str]]:
    paths = [str(Path(synth.assembly.directory) / stack.template_file) for stack in synth.assembly.stacks]
    # cfn-lint spends ~1 s of schema validation per template: use both cores.
    with multiprocessing.get_context("fork").Pool(2) as pool:
        return dict(zip((Path(p).name for p in paths), pool.map(_lint, paths)))


def test_every_template_passes_cfn_lint(lint_findings):
    findings = [finding for per_template in lint_findings.values() for finding in per_template]
    assert not findings, "\n".join(findings)


def test_cfn_lint_covers_every_stack(synth, lint_findings):
    assert len(lint_findings) == len(synth.stack_names) >= 2


def test_cfn_lint_catches_a_schema_error():
    """The oracle is live: a misspelled property fails."""
    template = {"Resources": {"Bucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketNme": "x"}}}}
    from cfnlint.api import ManualArgs, lint

    assert any(match.rule.id == "E3002" for match in lint(json.dumps(template), config=ManualArgs(regions=LINT_REGIONS)))


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
