"""Start a fine-tuning run on a deployed stage.

    python scripts/start_training.py --stage dev --data datasets/support-v3/ \
        [--base-model base-models/qwen3-1.7b/] [--hp learning_rate=1e-4 --hp num_train_epochs=2] \
        [--description "why"] [--state-machine-arn arn:...] [--name run-42] [--no-s3-check] [--dry-run]

The request is checked here with the same code the pipeline's first state runs
(lambda/validate_training_input/rules.py) and the same settings: the deployed validator
function's environment (buckets, prefixes, the hyperparameter spec from
model_artifacts/training/hyperparameters.json, the job's NeuronCores), including the S3 checks
unless --no-s3-check.
The state machine ARN comes from the `StateMachineArn` output of stack `Rag<Stage>-Training`
(CloudFormation DescribeStacks) unless given. Prints the execution ARN.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lambda"))

from validate_training_input import rules  # noqa: E402

STACK_OUTPUT = "StateMachineArn"


def parse_hyperparameters(pairs: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise rules.InputError([f"--hp {pair!r}: expected name=value"])
        try:
            values[name] = json.loads(text)  # numbers and booleans as JSON; anything else stays text
        except ValueError:
            values[name] = text
    return values


def build_request(args: argparse.Namespace) -> dict[str, Any]:
    request: dict[str, Any] = {"training_data_prefix": args.data}
    if args.base_model:
        request["base_model_prefix"] = args.base_model
    hyper = parse_hyperparameters(args.hp)
    if hyper:
        request["hyperparameters"] = hyper
    if args.description:
        request["description"] = args.description
    return request


def stack_name(stage: str) -> str:
    return f"Rag{stage.capitalize()}-Training"


def state_machine_arn(cloudformation, stage: str) -> str:
    stack = cloudformation.describe_stacks(StackName=stack_name(stage))["Stacks"][0]
    for output in stack.get("Outputs", []):
        if output["OutputKey"] == STACK_OUTPUT:
            return output["OutputValue"]
    raise SystemExit(f"stack {stack_name(stage)} has no {STACK_OUTPUT} output: is the training stack deployed?")


def settings_from_stack(cloudformation, lambda_client, stage: str) -> rules.Settings:
    """Reads the validator function's environment (the stack's single source of the rule settings)."""
    resources = cloudformation.describe_stack_resources(StackName=stack_name(stage))["StackResources"]
    function = next(
        (r["PhysicalResourceId"] for r in resources if r["ResourceType"] == "AWS::Lambda::Function" and r["LogicalResourceId"].startswith("ValidateInputFunction")),
        None,
    )
    if function is None:
        raise SystemExit(f"stack {stack_name(stage)} has no validator function")
    env = lambda_client.get_function_configuration(FunctionName=function)["Environment"]["Variables"]
    return rules.Settings.from_env(env)


def main(argv: list[str] | None = None, *, session=None) -> int:
    parser = argparse.ArgumentParser(description="Validate a fine-tuning request and start the stage's training pipeline.")
    parser.add_argument("--stage", required=True, help="stage name (e.g. dev): stack Rag<Stage>-Training")
    parser.add_argument("--data", required=True, help="training data prefix in the training bucket, ending in '/'")
    parser.add_argument("--base-model", help="base model folder under base-models/ of the artifacts bucket (default: the stage's)")
    parser.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE", help="hyperparameter override (repeatable)")
    parser.add_argument("--description", help="why this run (stored with the model version)")
    parser.add_argument("--state-machine-arn", help="skip the stack lookup")
    parser.add_argument("--name", help="execution name (default: generated)")
    parser.add_argument("--region", help="AWS region (default: your profile's)")
    parser.add_argument("--no-s3-check", action="store_true", help="skip the S3 existence checks (the pipeline still runs them)")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the input, start nothing")
    args = parser.parse_args(argv)

    if session is None:
        import boto3

        session = boto3.session.Session(region_name=args.region)
    cloudformation = session.client("cloudformation")
    request = build_request(args)
    try:
        settings = settings_from_stack(cloudformation, session.client("lambda"), args.stage)
        normalized = rules.validate_request(request, settings)
        if not args.no_s3_check:
            rules.check_s3(session.client("s3"), normalized, settings)
    except rules.InputError as error:
        for problem in error.problems:
            print(f"invalid: {problem}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(json.dumps(request, indent=2))
        return 0
    arn = args.state_machine_arn or state_machine_arn(cloudformation, args.stage)
    start = {"stateMachineArn": arn, "input": json.dumps(request)}
    if args.name:
        start["name"] = args.name
    execution = session.client("stepfunctions").start_execution(**start)
    print(execution["executionArn"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
