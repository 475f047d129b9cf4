"""checkov over every synthesized template: every finding fixed, or skipped on its resource with a reason."""

from __future__ import annotations

import aws_cdk as cdk
import pytest
from aws_cdk import aws_s3 as s3

from stacks.constructs.checkov import skip_check
from tests import checkov_oracle

pytestmark = pytest.mark.background_oracle
PROBE_FILE = checkov_oracle.PROBE_FILE


@pytest.fixture(scope="module")
def checkov(synth) -> dict[str, list[checkov_oracle.Finding]]:
    return checkov_oracle.collect(synth.checkov)


def unexplained(checkov) -> list[tuple[str, str, str]]:
    return sorted({(f.check_id, f.file.removesuffix(".template.json"), f.resource) for f in checkov["failed"] if f.file != PROBE_FILE})


def test_checkov_is_live_and_reads_skips(checkov):
    """The probe: a bare bucket fails CKV_AWS_18; the same bucket with a Metadata skip is skipped, with its comment."""
    failed = {(f.check_id, f.resource) for f in checkov["failed"] if f.file == PROBE_FILE}
    assert ("CKV_AWS_18", "AWS::S3::Bucket.Careless") in failed
    assert ("CKV_AWS_18", "AWS::S3::Bucket.Excused") not in failed
    [skip] = [f for f in checkov["skipped"] if f.file == PROBE_FILE]
    assert (skip.check_id, skip.comment) == ("CKV_AWS_18", "probe: a skip with its reason")


def test_checkov_covers_every_stack(synth, checkov):
    seen = {f.file.removesuffix(".template.json") for kind in checkov.values() for f in kind}
    assert set(synth.stack_names) <= seen


def test_every_checkov_skip_has_a_specific_reason(checkov):
    for finding in checkov["skipped"]:
        assert len(finding.comment) >= 20, f"{finding.file} {finding.resource}: skip of {finding.check_id} needs a reason"


def test_no_unexplained_checkov_findings(checkov):
    findings = unexplained(checkov)
    assert len(findings) == 0, ("checkov findings neither fixed nor skipped with a reason: fix them, or accept() them on "
                                "the resource (stacks/constructs/compliance.py):\n" + "\n".join(map(str, findings)))


def test_skip_check_writes_checkov_metadata_on_the_resource(tmp_path):
    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Probe")
    bucket = s3.Bucket(stack, "Logs")
    skip_check(bucket, "CKV_AWS_18", "this bucket receives the access logs of the others")
    skip_check(bucket, "CKV_AWS_21", "log objects are written once; versioning adds nothing here")
    skip_check(bucket, "CKV_AWS_18", "the access-log bucket does not log itself")  # replaces, no duplicate
    template = app.synth().get_stack_by_name("Probe").template
    [resource] = [r for r in template["Resources"].values() if r["Type"] == "AWS::S3::Bucket"]
    assert resource["Metadata"]["checkov"] == {"skip": [
        {"id": "CKV_AWS_21", "comment": "log objects are written once; versioning adds nothing here"},
        {"id": "CKV_AWS_18", "comment": "the access-log bucket does not log itself"},
    ]}


@pytest.mark.parametrize("check_id, reason, words", [
    ("AwsSolutions-S1", "a reason that is long enough", "not a checkov AWS check id"),
    ("CKV_AWS_18", "short", "needs a specific reason"),
])
def test_skip_check_refuses_bad_ids_and_empty_reasons(check_id, reason, words):
    stack = cdk.Stack(cdk.App(), "Probe")
    with pytest.raises(ValueError, match=words):
        skip_check(s3.Bucket(stack, "B"), check_id, reason)
    with pytest.raises(ValueError, match="not a CloudFormation resource"):
        skip_check(stack, "CKV_AWS_18", "a stack is not a resource to skip on")
