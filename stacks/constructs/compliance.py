"""Accepted compliance findings: always on one construct, with a reason a reviewer can check.

Three oracles read the templates: cdk-nag's AwsSolutions pack (every synth), and in the tests
checkov and cdk-nag's NIST 800-53 rev 5 pack; HIPAA, PCI DSS and Serverless share most of NIST's
rules. `acknowledge` accepts one cdk-nag rule id; `accept` accepts one finding in every oracle
that reports it (a checkov skip in the resource's Metadata, stacks/constructs/checkov.py, and the
rule in every cdk-nag pack that has it) with one reason. The reasons every function or policy of
the project shares are the constants below; the others sit next to the code they explain.
"""

from __future__ import annotations

from typing import Iterable

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from constructs import IConstruct

from stacks.constructs.checkov import skip_check

NIST, HIPAA, PCI, SERVERLESS = "NIST.800.53.R5", "HIPAA.Security", "PCI.DSS.321", "Serverless"
# The cdk-nag 3.0.2 packs that have each rule this project accepts somewhere (a rule id is
# `<pack>-<rule>`). tests/test_nist_800_53.py runs all four packs: a pack missing here shows there.
RULE_PACKS: dict[str, tuple[str, ...]] = {
    "APIGWAssociatedWithWAF": (NIST, PCI),
    "APIGWCacheEnabledAndEncrypted": (NIST, HIPAA, PCI),
    "APIGWSSLEnabled": (NIST, HIPAA, PCI),
    "IAMNoInlinePolicy": (NIST, HIPAA, PCI),
    "LambdaConcurrency": (NIST, HIPAA),
    "LambdaDLQ": (NIST, HIPAA, SERVERLESS),
    "LambdaInsideVPC": (NIST, HIPAA, PCI),
    "OpenSearchInVPCOnly": (NIST, HIPAA, PCI),
    "S3BucketReplicationEnabled": (NIST, HIPAA, PCI),
    "S3DefaultEncryptionKMS": (NIST, HIPAA, PCI),
    "LambdaDefaultMemorySize": (SERVERLESS,),
    "LambdaEventSourceMappingDestination": (SERVERLESS,),
    "LambdaTracing": (SERVERLESS,),
    "SQSRedrivePolicy": (SERVERLESS,),
}

NO_VPC = (
    "no VPC by design: the function calls only public, SigV4-signed AWS endpoints (Bedrock, SageMaker runtime, S3, "
    "SSM, SQS, CloudFormation) and the search domain, whose endpoint is public because Bedrock knowledge bases do "
    "not support VPC domains (AwsSolutions-OS1); a VPC would add NAT or endpoint cost and isolate nothing"
)
NO_SECRETS_IN_ENVIRONMENT = (
    "the environment holds resource names, ids and settings and never a secret: its values are plain text in this "
    "template anyway, and Lambda encrypts them at rest with its service key; a customer key would add a kms:Decrypt "
    "grant to the role and protect nothing"
)
DEPLOY_TIME_CONCURRENCY = (
    "runs only while CloudFormation deploys this stack (one invocation per custom-resource event): a reserved pool "
    "would take concurrency from every other function of the account at all times, and Lambda refuses any "
    "reservation in accounts at the new-account concurrency quota"
)
INLINE_POLICY = (
    "inline by design: the statements are written for the one role this policy belongs to and live and die with "
    "it; a managed policy could be attached to other principals, and one attached after its role is created races "
    "the resources that need it (403s); what the statements allow is reviewed by AwsSolutions-IAM5"
)


def invoked_by_cloudformation(what: str) -> str:
    """The dead-letter reason of a custom-resource handler that CloudFormation invokes; `what` names it."""
    return (f"{what}: CloudFormation invokes it during a deployment of this stack, and a failure fails (or times out) "
            "that stack operation, which is where it is seen; a dead-lettered event could not be replayed into the "
            "finished operation")


def acknowledge(construct: IConstruct, rule: str, reason: str) -> None:
    """Accepts cdk-nag finding `rule` (e.g. `AwsSolutions-IAM5[Action::s3:List*]`) on `construct`.

    The reason must say why the finding is acceptable for this resource; it is shown in the
    validation report and reviewed like code.
    """
    _acknowledge_all(construct, [rule], reason)


def _acknowledge_all(construct: IConstruct, rules: list[str], reason: str) -> None:
    """One call for several rules: each call crosses into the CDK's Node process (synth time)."""
    if len(reason) < 20:
        raise ValueError(f"acknowledgement of {', '.join(rules)} on {construct.node.path} needs a specific reason")
    if rules:
        cdk.Validations.of(construct).acknowledge(*(cdk.Acknowledgment(id=rule, reason=reason) for rule in rules))


def accept(construct: IConstruct, reason: str, *, checkov: Iterable[str] = (), nag: Iterable[str] = ()) -> None:
    """Accepts one finding on `construct` in every oracle that reports it, with one reason.

    `checkov`: check ids (a skip in the resource's Metadata: `construct` is the resource or an L2
    whose default child is); `nag`: rule names without the pack (`LambdaDLQ`), acknowledged in
    every pack of RULE_PACKS that has the rule.
    """
    for check in checkov:
        skip_check(construct, check, reason)
    rules = []
    for rule in nag:
        if rule not in RULE_PACKS:
            raise ValueError(f"{rule!r}: say in RULE_PACKS which cdk-nag packs have this rule")
        rules += [f"{pack}-{rule}" for pack in RULE_PACKS[rule]]
    if rules:
        _acknowledge_all(construct, rules, reason)


def accept_function(function: IConstruct, *, dead_letters: str, concurrency: str | None = None, environment: bool = True) -> None:
    """The findings a Lambda function of this project may have, accepted on it.

    Every function: no VPC (NO_VPC). `dead_letters`: why a function dead-letter queue would
    never hold anything useful, i.e. who invokes it and where its failures go. `concurrency`:
    why it has no reserved concurrency (None where it has one). `environment`: it has variables,
    none of them a secret (checkov asks for a customer key on them).
    """
    accept(function, NO_VPC, checkov=["CKV_AWS_117"], nag=["LambdaInsideVPC"])
    accept(function, dead_letters, checkov=["CKV_AWS_116"], nag=["LambdaDLQ"])
    if concurrency is not None:
        accept(function, concurrency, checkov=["CKV_AWS_115"], nag=["LambdaConcurrency"])
    if environment:
        accept(function, NO_SECRETS_IN_ENVIRONMENT, checkov=["CKV_AWS_173"])


def accept_inline_policies(scope: IConstruct) -> None:
    """Accepts IAMNoInlinePolicy on every IAM policy and every role with inline policies under `scope`."""
    stack = cdk.Stack.of(scope)
    for construct in scope.node.find_all():
        if isinstance(construct, iam.CfnPolicy) or (isinstance(construct, iam.CfnRole) and stack.resolve(construct.policies)):
            accept(construct, INLINE_POLICY, nag=["IAMNoInlinePolicy"])
