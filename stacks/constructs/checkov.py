"""checkov skips: one way to accept a checkov finding, always on one resource, with a reason.

checkov reads skips from the resource's CloudFormation `Metadata`:
`{"checkov": {"skip": [{"id": "CKV_AWS_117", "comment": "<why>"}]}}`. The comment is the
reason shown in checkov's report (`suppress_comment`) and reviewed like code, as the cdk-nag
acknowledgements are (stacks/constructs/compliance.py).
"""

from __future__ import annotations

import re

import aws_cdk as cdk
from constructs import IConstruct

CHECK_ID = re.compile(r"CKV2?_AWS_\d+")


def skip_check(construct: IConstruct, check_id: str, reason: str) -> None:
    """Skips checkov check `check_id` on `construct` (an L1 resource, or an L2 whose default child is one)."""
    if not CHECK_ID.fullmatch(check_id):
        raise ValueError(f"{check_id!r} is not a checkov AWS check id (e.g. CKV_AWS_117)")
    if len(reason.strip()) < 20:
        raise ValueError(f"skipping {check_id} on {construct.node.path} needs a specific reason")
    resource = construct if isinstance(construct, cdk.CfnResource) else construct.node.default_child
    if not isinstance(resource, cdk.CfnResource):
        raise ValueError(f"{construct.node.path} is not a CloudFormation resource: skip the check on the resource itself")
    current = resource.get_metadata("checkov") or {}
    skips = [entry for entry in current.get("skip", []) if entry.get("id") != check_id]
    resource.add_metadata("checkov", {**current, "skip": [*skips, {"id": check_id, "comment": reason.strip()}]})
