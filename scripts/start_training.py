"""Start a run of a deployed stage's model pipeline: a fine-tuning run, or a compile-only run of a base model.

    python scripts/start_training.py --stage dev --data datasets/support-v3/ \\
        [--base-model base-models/qwen3-1.7b/] [--hp learning_rate=1e-4 --hp num_train_epochs=2] \\
        [--description "why"] [--name run-42] [--region us-east-1] [--no-s3-check] [--dry-run]
    python scripts/start_training.py --stage dev --compile-only [--base-model base-models/qwen3-1.7b/]

A fine-tuning run trains on Trainium and registers a `finetuned` version; a compile-only run
compiles the base model itself for Inferentia2 with the serving contract's settings and registers
it as the `base` version. Either is deployed by the stage's model deployer once approved
(immediately where `training.auto_deploy` is on).

The request is checked here with the same code the pipeline's first state runs
(lambda/validate_training_input/rules.py) and the same settings (the deployed validator function's
environment), including the S3 checks unless --no-s3-check. The state machine ARN comes from the
`StateMachineArn` output of stack `Rag<Stage>-Training` unless given. Prints the execution ARN.
The region is --region, else AWS_REGION / AWS_DEFAULT_REGION, else your profile's.

Exit status: 0 started (or valid with --dry-run), 2 invalid request, 3 no credentials, region or
network, 4 refused by AWS or stage not deployed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lambda"))
sys.path.insert(0, str(ROOT / "scripts"))

import operator_cli as cli  # noqa: E402
from validate_training_input import rules  # noqa: E402

STACK_OUTPUT = "StateMachineArn"


def parse_hyperparameters(pairs: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    problems = []
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            problems.append(f"--hp {pair!r}: expected NAME=VALUE, e.g. --hp learning_rate=1e-4")
            continue
        try:
            values[name] = json.loads(text)  # numbers and booleans as JSON; anything else stays text
        except ValueError:
            values[name] = text
    if problems:
        raise rules.InputError(problems)
    return values


def build_request(args: argparse.Namespace) -> dict[str, Any]:
    if args.compile_only:
        if args.data or args.hp:
            raise rules.InputError(["--compile-only compiles the base model as it is: leave out --data and --hp"])
        request: dict[str, Any] = {"compile_only": True}
    else:
        if not args.data:
            raise rules.InputError(["--data is required (the training data prefix, e.g. datasets/v1/), or pass --compile-only for a base model"])
        request = {"training_data_prefix": args.data}
        hyper = parse_hyperparameters(args.hp)
        if hyper:
            request["hyperparameters"] = hyper
    if args.base_model:
        request["base_model_prefix"] = args.base_model
    if args.description:
        request["description"] = args.description
    return request


def stack_name(stage: str) -> str:
    return cli.stack_name(stage, "Training")


def state_machine_arn(cloudformation, stage: str) -> str:
    return cli.require_output(cli.stack_outputs(cloudformation, stack_name(stage)), STACK_OUTPUT, stack_name(stage))


def settings_from_stack(cloudformation, lambda_client, stage: str) -> rules.Settings:
    """Reads the validator function's environment (the stack's single source of the rule settings)."""
    resources = cloudformation.describe_stack_resources(StackName=stack_name(stage))["StackResources"]
    function = next(
        (r["PhysicalResourceId"] for r in resources if r["ResourceType"] == "AWS::Lambda::Function" and "ValidateInputFunction" in r["LogicalResourceId"]),
        None,
    )
    if function is None:
        raise cli.OperatorError(f"stack {stack_name(stage)} has no validator function: deploy the stage with this checkout first", cli.EXIT_AWS)
    env = lambda_client.get_function_configuration(FunctionName=function)["Environment"]["Variables"]
    return rules.Settings.from_env(env)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Validate a model pipeline request and start the stage's pipeline.", epilog=cli.EXIT_CODES_HELP)
    parser.add_argument("--stage", required=True, help="stage name (e.g. dev): stack Rag<Stage>-Training")
    parser.add_argument("--data", help="training data prefix in the training bucket, ending in '/'")
    parser.add_argument("--compile-only", action="store_true", help="compile the base model for Inferentia2 and register it as the base version (no training)")
    parser.add_argument("--base-model", help="base model folder under base-models/ of the artifacts bucket (default: the stage's)")
    parser.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE", help="hyperparameter override (repeatable)")
    parser.add_argument("--description", help="why this run (stored with the model version)")
    parser.add_argument("--state-machine-arn", help="skip the stack lookup")
    parser.add_argument("--name", help="execution name (default: generated)")
    parser.add_argument("--region", help="AWS region (default: AWS_REGION, else your profile's)")
    parser.add_argument("--no-s3-check", action="store_true", help="skip the S3 existence checks (the pipeline still runs them)")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the request, start nothing")
    return parser


def start(args: argparse.Namespace, session) -> int:
    try:
        request = build_request(args)
    except rules.InputError as error:
        for problem in error.problems:
            print(f"invalid: {problem}", file=sys.stderr)
        return cli.EXIT_INVALID
    session = session or cli.make_session(args.region)
    cloudformation = session.client("cloudformation")
    try:
        settings = settings_from_stack(cloudformation, session.client("lambda"), args.stage)
        normalized = rules.validate_request(request, settings)
        if not args.no_s3_check:
            rules.check_s3(session.client("s3"), normalized, settings)
    except rules.InputError as error:
        for problem in error.problems:
            print(f"invalid: {problem}", file=sys.stderr)
        return cli.EXIT_INVALID
    if args.dry_run:
        print(json.dumps(request, indent=2))
        return cli.EXIT_OK
    arn = args.state_machine_arn or state_machine_arn(cloudformation, args.stage)
    print(cli.start_execution(session.client("stepfunctions"), arn, request, args.name))
    return cli.EXIT_OK


def main(argv: list[str] | None = None, *, session=None) -> int:
    args = parser().parse_args(argv)
    return cli.run(lambda: start(args, session), region=args.region)


if __name__ == "__main__":
    sys.exit(main())
