"""Switch a stage's Inferentia2 endpoint off (no instance cost) or on again: one command.

    python scripts/endpoint_power.py --stage dev off [--wait] [--region us-east-1]
    python scripts/endpoint_power.py --stage dev on --wait

Starts the stage's model deployer with {"action": "power", ...}: it writes the serving record's
power and has CloudFormation apply it (the endpoint, its scaling and alarms are deleted or
created; the models stay in S3 and the record keeps their versions, so `on` brings back exactly
what served). Without --wait it prints the execution ARN and returns; with --wait it follows the
execution (creating an inf2 endpoint takes 10-30 minutes) and prints the outcome as JSON.
`inference.power_on_schedule` / `power_off_schedule` do the same on a schedule.

Exit status: 0 started (or, with --wait, succeeded), 2 invalid request, 3 no credentials,
region or network, 4 refused by AWS or stage not deployed, 5 the deployer did not succeed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import operator_cli as cli  # noqa: E402

DEPLOYER_OUTPUT = "DeployerArn"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Switch the stage's Inferentia2 endpoint on or off through its model deployer.", epilog=cli.EXIT_CODES_HELP)
    parser.add_argument("--stage", required=True, help="stage name (e.g. dev)")
    parser.add_argument("power", choices=["on", "off"], help="on: create the endpoint with the recorded versions; off: delete it")
    parser.add_argument("--wait", action="store_true", help="follow the deployment until it ends")
    parser.add_argument("--region", help="AWS region (default: AWS_REGION, else your profile's)")
    return parser


def deployer_arn(cloudformation, stage: str) -> str:
    name = cli.stack_name(stage, "Training")
    return cli.require_output(cli.stack_outputs(cloudformation, name), DEPLOYER_OUTPUT, name)


def switch(args: argparse.Namespace, session, sleep=None) -> int:
    session = session or cli.make_session(args.region)
    arn = deployer_arn(session.client("cloudformation"), args.stage)
    request = {"action": "power", "power": args.power, "source": "operator"}
    return cli.deploy(session.client("stepfunctions"), arn, request, wait=args.wait, sleep=sleep)


def main(argv: list[str] | None = None, *, session=None, sleep=None) -> int:
    args = parser().parse_args(argv)
    return cli.run(lambda: switch(args, session, sleep), region=args.region)


if __name__ == "__main__":
    sys.exit(main())
