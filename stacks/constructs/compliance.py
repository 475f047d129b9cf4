"""cdk-nag acknowledgements: one way to accept a finding, always on one construct, with a reason."""

from __future__ import annotations

import aws_cdk as cdk
from constructs import IConstruct


def acknowledge(construct: IConstruct, rule: str, reason: str) -> None:
    """Accepts cdk-nag finding `rule` (e.g. `AwsSolutions-IAM5[Action::s3:List*]`) on `construct`.

    The reason must say why the finding is acceptable for this resource; it is shown in the
    validation report and reviewed like code.
    """
    if len(reason) < 20:
        raise ValueError(f"acknowledgement of {rule} on {construct.node.path} needs a specific reason")
    cdk.Validations.of(construct).acknowledge(cdk.Acknowledgment(id=rule, reason=reason))
