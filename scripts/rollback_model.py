"""Roll a stage's fine-tuned (or base) variant back to the previous approved version: one command.

    python scripts/rollback_model.py --stage prod [--role finetuned] [--to 6] [--wait] [--region ...]

Reads what serves from the serving record (SSM), finds the newest *Approved* version of the same
role in the stage's model registry that is older than it (or version --to), and starts the
stage's model deployer with it (source "rollback", so the deployer accepts an older version). The
deployer writes the record and has CloudFormation apply it, like every other deployment; the
registry's approval statuses are left as they are (reject a bad version yourself if it should
never come back: `aws sagemaker update-model-package --model-approval-status Rejected`).

Exit status: 0 started (or, with --wait, succeeded), 2 invalid request or nothing to roll back
to, 3 no credentials, region or network, 4 refused by AWS or stage not deployed, 5 the deployer
did not succeed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "lambda"))

import operator_cli as cli  # noqa: E402
from shared import model_record  # noqa: E402

ROLE_PROPERTY = "Role"  # stacks/constructs/model_registry.py


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Deploy the previous approved version of a role through the stage's model deployer.", epilog=cli.EXIT_CODES_HELP)
    parser.add_argument("--stage", required=True, help="stage name (e.g. prod)")
    parser.add_argument("--role", choices=list(model_record.ROLES), default="finetuned", help="which variant to roll back (default: finetuned)")
    parser.add_argument("--to", type=int, metavar="VERSION", help="deploy this approved version instead of the previous one")
    parser.add_argument("--wait", action="store_true", help="follow the deployment until it ends")
    parser.add_argument("--region", help="AWS region (default: AWS_REGION, else your profile's)")
    return parser


def serving_version(ssm, stage: str, role: str) -> Optional[int]:
    value = ssm.get_parameter(Name=model_record.record_parameter(stage, role))["Parameter"]["Value"]
    parsed = model_record.parse_record(value)
    return int(parsed.version) if parsed else None


def approved_versions(sagemaker, group: str, role: str) -> list[tuple[int, str]]:
    """[(version, package ARN)] of the group's Approved versions of `role`, newest first."""
    found = []
    for page in sagemaker.get_paginator("list_model_packages").paginate(ModelPackageGroupName=group, ModelApprovalStatus="Approved", SortBy="CreationTime", SortOrder="Descending"):
        for summary in page["ModelPackageSummaryList"]:
            described = sagemaker.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
            if described.get("CustomerMetadataProperties", {}).get(ROLE_PROPERTY) == role:
                found.append((int(described["ModelPackageVersion"]), described["ModelPackageArn"]))
    return sorted(found, reverse=True)


def choose(versions: list[tuple[int, str]], current: Optional[int], wanted: Optional[int], role: str) -> tuple[int, str]:
    if wanted is not None:
        for version, arn in versions:
            if version == wanted:
                return version, arn
        raise cli.OperatorError(f"version {wanted} is not an Approved {role} version of this stage (approved: {', '.join(str(v) for v, _ in versions) or 'none'})", cli.EXIT_INVALID)
    older = [(version, arn) for version, arn in versions if current is None or version < current]
    if not older:
        serving = f"version {current}" if current is not None else "nothing"
        raise cli.OperatorError(f"the {role} variant serves {serving} and there is no older Approved {role} version to roll back to", cli.EXIT_INVALID)
    return older[0]


def rollback(args: argparse.Namespace, session, sleep=None) -> int:
    session = session or cli.make_session(args.region)
    training = cli.stack_name(args.stage, "Training")
    outputs = cli.stack_outputs(session.client("cloudformation"), training)
    deployer = cli.require_output(outputs, "DeployerArn", training)
    group = cli.require_output(outputs, "ModelPackageGroupName", training)
    current = serving_version(session.client("ssm"), args.stage, args.role)
    version, arn = choose(approved_versions(session.client("sagemaker"), group, args.role), current, args.to, args.role)
    print(f"{args.role}: {current if current is not None else 'none'} -> {version}", file=sys.stderr)
    request = {"action": "deploy", "model_package_arn": arn, "source": "rollback"}
    return cli.deploy(session.client("stepfunctions"), deployer, request, wait=args.wait, sleep=sleep)


def main(argv: list[str] | None = None, *, session=None, sleep=None) -> int:
    args = parser().parse_args(argv)
    return cli.run(lambda: rollback(args, session, sleep), region=args.region)


if __name__ == "__main__":
    sys.exit(main())
