"""cdk-nag's NIST 800-53 rev 5 pack (and HIPAA, PCI DSS, Serverless) over every stack of both stages,
on the session's construct tree.

`validate_scope` walks the already-synthesized app (about 0.2 s for NIST, 0.3 s for the other three
together): no second synth. It honours the same `Validations.acknowledge` acknowledgements as the
AwsSolutions pack (stacks/constructs/compliance.py).
"""

from __future__ import annotations

import aws_cdk as cdk
import pytest
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from cdk_nag import HIPAASecurityChecks, NIST80053R5Checks, PCIDSS321Checks, ServerlessChecks

from stacks.constructs import compliance
from stacks.constructs.compliance import accept, accept_inline_policies, acknowledge

OTHER_PACKS = {"HIPAA": HIPAASecurityChecks, "PCI DSS 3.2.1": PCIDSS321Checks, "Serverless": ServerlessChecks}


def findings_of(scope, pack=NIST80053R5Checks) -> list[tuple[str, str]]:
    report = pack().validate_scope(scope)
    return sorted({(violation.rule_name, resource.construct_path)
                   for violation in report.violations for resource in violation.violating_resources})


@pytest.fixture(scope="module")
def app(synth):
    return synth.stages[0].storage.node.root


@pytest.fixture(scope="module")
def nist(app) -> list[tuple[str, str]]:
    return findings_of(app)


def test_the_pack_sees_both_stages(synth, app):
    stacks = {child.stack_name for child in app.node.children if isinstance(child, cdk.Stack)}
    assert set(synth.stack_names) <= stacks and {"RagDev-Storage", "RagProd-Storage"} <= stacks


def test_no_unexplained_nist_findings(nist):
    assert len(nist) == 0, ("NIST 800-53 findings neither fixed nor acknowledged with a reason: fix them, or accept() them "
                            "on the resource (stacks/constructs/compliance.py):\n" + "\n".join(map(str, nist)))


@pytest.mark.parametrize("pack", OTHER_PACKS)
def test_no_unexplained_findings_of_the_other_packs(app, pack):
    """The same acknowledgements cover the rules these packs share with NIST (compliance.RULE_PACKS)."""
    findings = findings_of(app, OTHER_PACKS[pack])
    assert len(findings) == 0, "\n".join(map(str, findings))


def test_the_pack_is_live_and_honours_acknowledgements():
    app = cdk.App()
    stack = cdk.Stack(app, "Careless")
    plain = s3.Bucket(stack, "Plain")
    excused = s3.Bucket(stack, "Excused")
    acknowledge(excused.node.default_child, "NIST.800.53.R5-S3BucketReplicationEnabled",
                "a probe bucket: nothing in it needs a second region")
    found = findings_of(app)
    assert ("NIST.800.53.R5-S3BucketReplicationEnabled", plain.node.default_child.node.path) in found
    assert ("NIST.800.53.R5-S3BucketReplicationEnabled", excused.node.default_child.node.path) not in found


def test_accept_covers_every_pack_with_the_rule_and_writes_the_checkov_skip():
    app = cdk.App()
    stack = cdk.Stack(app, "Probe")
    plain, excused = (s3.Bucket(stack, name) for name in ("Plain", "Excused"))
    accept(excused, "a probe bucket: nothing in it needs a second region", checkov=["CKV_AWS_18"], nag=["S3BucketReplicationEnabled"])
    for pack in (NIST80053R5Checks, HIPAASecurityChecks, PCIDSS321Checks):
        found = {rule.split("-", 1)[1] for rule, path in findings_of(app, pack) if path == excused.node.default_child.node.path}
        assert "S3BucketReplicationEnabled" not in found, pack
        assert any(rule.endswith("-S3BucketReplicationEnabled") and path == plain.node.default_child.node.path
                   for rule, path in findings_of(app, pack)), pack
    assert excused.node.default_child.get_metadata("checkov") == {
        "skip": [{"id": "CKV_AWS_18", "comment": "a probe bucket: nothing in it needs a second region"}]}
    with pytest.raises(ValueError, match="RULE_PACKS"):
        accept(plain, "a rule this project never accepted anywhere", nag=["S3BucketLoggingEnabled"])


def test_accept_function_accepts_what_every_function_shares_and_its_own_reasons():
    app = cdk.App()
    stack = cdk.Stack(app, "Probe")
    code = lambda_.Code.from_inline("def main(event, context): return None")
    function = lambda_.Function(stack, "Fn", runtime=lambda_.Runtime.PYTHON_3_13, handler="index.main", code=code,
                                environment={"NAME": "value"})
    compliance.accept_function(function, dead_letters="a probe: invoked synchronously by nobody at all",
                               concurrency="a probe: it never runs, so it needs no reserved pool")
    skips = {entry["id"]: entry["comment"] for entry in function.node.default_child.get_metadata("checkov")["skip"]}
    assert skips == {"CKV_AWS_117": compliance.NO_VPC, "CKV_AWS_116": "a probe: invoked synchronously by nobody at all",
                     "CKV_AWS_115": "a probe: it never runs, so it needs no reserved pool",
                     "CKV_AWS_173": compliance.NO_SECRETS_IN_ENVIRONMENT}
    rules = {rule.split("-", 1)[1] for rule, path in findings_of(app) if path.startswith(function.node.path)}
    assert not rules & {"LambdaDLQ", "LambdaInsideVPC", "LambdaConcurrency"}, rules


def test_inline_policies_are_accepted_on_each_policy_and_role_that_has_one():
    app = cdk.App()
    stack = cdk.Stack(app, "Probe")
    principal = iam.ServicePrincipal("lambda.amazonaws.com")
    statement = iam.PolicyStatement(actions=["s3:GetObject"], resources=["arn:aws:s3:::probe/key"])
    inline = iam.Role(stack, "Inline", assumed_by=principal, inline_policies={"P": iam.PolicyDocument(statements=[statement])})
    bare = iam.Role(stack, "Bare", assumed_by=principal)
    iam.Policy(stack, "Attached", roles=[bare], statements=[statement])
    accept_inline_policies(stack)
    assert not [f for f in findings_of(app) if f[0].endswith("IAMNoInlinePolicy")]

    def acknowledged(construct) -> bool:
        return any(entry.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY for entry in construct.node.metadata)

    assert acknowledged(inline.node.default_child) and acknowledged(stack.node.find_child("Attached").node.default_child)
    assert not acknowledged(bare.node.default_child)  # no inline policy: nothing to accept
