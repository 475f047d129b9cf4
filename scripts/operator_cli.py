"""What the model lifecycle's operator scripts share: one AWS session, stack outputs, and errors
that speak to people (one line saying what is wrong and what to do, never a traceback for an
expected mistake).

Exit status of every script that uses it:
    0  done
    2  the request is invalid (arguments, values): nothing was started
    3  the AWS environment is not usable: no credentials, no region, the service cannot be reached
    4  AWS refused or the stage is not there (stack not deployed, access denied, ...)
    5  the started work finished but did not succeed (`--wait`)
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable, Optional

EXIT_OK, EXIT_INVALID, EXIT_ENVIRONMENT, EXIT_AWS, EXIT_FAILED = 0, 2, 3, 4, 5
EXIT_CODES_HELP = "exit status: 0 done, 2 invalid request, 3 no credentials/region/network, 4 refused by AWS or stage not deployed, 5 finished without success"


class OperatorError(Exception):
    """An expected problem: `message` says what is wrong and what to do; `status` is the exit code."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def stack_name(stage: str, part: str) -> str:
    return f"Rag{stage.capitalize()}-{part}"


def make_session(region: Optional[str]):
    """A boto3 session in `region`, else AWS_REGION, else AWS_DEFAULT_REGION / the profile's region."""
    try:
        import boto3
    except ImportError:  # pragma: no cover - boto3 is in requirements-dev.txt
        raise OperatorError("boto3 is not installed: run `make test` once (it creates .venv) and use .venv/bin/python", EXIT_ENVIRONMENT) from None
    session = boto3.session.Session(region_name=region or os.environ.get("AWS_REGION") or None)
    if not session.region_name:
        raise OperatorError("no AWS region: pass --region or set AWS_REGION (the stage's region)", EXIT_ENVIRONMENT)
    return session


def stack_outputs(cloudformation, name: str) -> dict[str, str]:
    stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    return {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}


def require_output(outputs: dict[str, str], key: str, stack: str) -> str:
    if key not in outputs:
        raise OperatorError(f"stack {stack} has no {key} output: deploy the stage with this checkout first (make deploy STAGE=...)", EXIT_AWS)
    return outputs[key]


def explain(error: BaseException, region: Optional[str]) -> Optional[OperatorError]:
    """The one-line explanation of an AWS client error, or None if it is not an expected one."""
    from botocore import exceptions

    where = f" in {region}" if region else ""
    if isinstance(error, (exceptions.NoCredentialsError, exceptions.PartialCredentialsError)):
        return OperatorError("no AWS credentials: configure a profile (aws configure / aws sso login) or set AWS_PROFILE", EXIT_ENVIRONMENT)
    if isinstance(error, exceptions.NoRegionError):
        return OperatorError("no AWS region: pass --region or set AWS_REGION", EXIT_ENVIRONMENT)
    if isinstance(error, (exceptions.EndpointConnectionError, exceptions.ConnectTimeoutError, exceptions.ReadTimeoutError)):
        return OperatorError(f"cannot reach AWS{where} ({error}): check the network, a proxy, or the region name", EXIT_ENVIRONMENT)
    if isinstance(error, exceptions.ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", str(error))
        if code == "ValidationError" and "does not exist" in message:
            return OperatorError(f"{message}{where}: deploy the stage first (make deploy STAGE=...), or pass the right --stage/--region", EXIT_AWS)
        if code in ("ExpiredToken", "ExpiredTokenException", "UnrecognizedClientException", "InvalidClientTokenId"):
            return OperatorError(f"AWS rejected the credentials ({code}): refresh them (aws sso login, or new keys)", EXIT_ENVIRONMENT)
        if code in ("AccessDenied", "AccessDeniedException"):
            return OperatorError(f"access denied{where}: {message}", EXIT_AWS)
        return OperatorError(f"AWS refused{where} ({code}): {message}", EXIT_AWS)
    return None


def run(main: Callable[[], int], *, region: Optional[str] = None) -> int:
    """Runs `main`, turning expected failures into one line on stderr and an exit status."""
    try:
        return main()
    except OperatorError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - only botocore's expected errors are explained; others re-raise
        explained = explain(error, region)
        if explained is None:
            raise
        print(f"error: {explained}", file=sys.stderr)
        return explained.status


def start_execution(stepfunctions, arn: str, request: dict[str, Any], name: Optional[str] = None) -> str:
    arguments = {"stateMachineArn": arn, "input": json.dumps(request)}
    if name:
        arguments["name"] = name
    return stepfunctions.start_execution(**arguments)["executionArn"]


def wait_for_execution(stepfunctions, execution_arn: str, *, poll_seconds: float = 30.0, sleep: Optional[Callable[[float], None]] = None,
                       out=None) -> tuple[str, Any]:
    """Polls until the execution ends, printing its status as it goes; returns (status, output or cause)."""
    sleep = sleep or time.sleep
    out = out or sys.stderr
    last = None
    while True:
        described = stepfunctions.describe_execution(executionArn=execution_arn)
        status = described["status"]
        if status != last:
            print(f"execution {status.lower()}", file=out)
            last = status
        if status != "RUNNING":
            if status == "SUCCEEDED":
                return status, json.loads(described.get("output") or "null")
            return status, described.get("cause") or described.get("error")
        sleep(poll_seconds)


def deploy(stepfunctions, deployer_arn: str, request: dict[str, Any], *, wait: bool, sleep: Optional[Callable[[float], None]] = None) -> int:
    """Starts the model deployer with `request`, prints the execution ARN; with `wait`, follows it
    and prints the outcome as JSON. Returns the exit status."""
    execution = start_execution(stepfunctions, deployer_arn, request)
    print(execution)
    if not wait:
        return EXIT_OK
    status, result = wait_for_execution(stepfunctions, execution, sleep=sleep)
    print(json.dumps({"status": status, "result": result}, indent=2))  # the execution's JSON output, or its cause/error text
    return EXIT_OK if status == "SUCCEEDED" else EXIT_FAILED
