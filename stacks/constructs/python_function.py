"""A Python Lambda function with the project's defaults, defined once for every handler.

The code needs no bundling (no Docker): each handler uses only what the Lambda runtime ships
(boto3, botocore, urllib3) plus Powertools from AWS's public layer, whose ARN AWS publishes in a
public SSM parameter resolved at deploy time. The asset is the handler's own folder plus
`lambda/shared/`, so a change to one handler does not redeploy the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from stacks.constructs.compliance import acknowledge

LAMBDA_ROOT = Path(__file__).resolve().parents[2] / "lambda"
SHARED_FOLDER = "shared"
RUNTIME = lambda_.Runtime.PYTHON_3_14
ARCHITECTURE = lambda_.Architecture.ARM_64
POWERTOOLS_LAYER_PARAMETER = "/aws/service/powertools/python/arm64/python3.14/latest"


def handler_asset_excludes(source: str) -> list[str]:
    """Glob excludes that keep only `lambda/<source>/` and `lambda/shared/`, minus bytecode."""
    return ["*", f"!{source}", f"!{source}/**", f"!{SHARED_FOLDER}", f"!{SHARED_FOLDER}/**", "**/__pycache__", "**/*.pyc"]


class PythonFunction(Construct):
    """A handler from `lambda/<source>/handler.py` (entry `main`) with logging, tracing and Powertools.

    The log group always has a generated name (so a retained group never blocks a redeploy);
    `log_removal_policy` keeps it when the stack goes, `log_encryption_key` encrypts it (the
    key's policy must let CloudWatch Logs use it). `function_name` fixes the function's name for
    dashboards and alarms that address it without a cross-stack reference.

    Attributes: `function`, `log_group`, `role`.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        source: str,
        description: str,
        timeout: cdk.Duration,
        log_retention: logs.RetentionDays,
        environment: Optional[dict[str, str]] = None,
        memory_size: int = 256,
        reserved_concurrency: Optional[int] = None,
        role: Optional[iam.IRole] = None,
        function_name: Optional[str] = None,
        log_removal_policy: cdk.RemovalPolicy = cdk.RemovalPolicy.DESTROY,
        log_encryption_key: Optional[kms.IKey] = None,
    ) -> None:
        super().__init__(scope, construct_id)
        if not (LAMBDA_ROOT / source / "handler.py").is_file():
            raise ValueError(f"PythonFunction source '{source}': lambda/{source}/handler.py does not exist")

        self.log_group = logs.LogGroup(
            self, "Logs", retention=log_retention, removal_policy=log_removal_policy, encryption_key=log_encryption_key
        )
        # An explicit role without the AWSLambdaBasicExecutionRole managed policy: logging is
        # granted on this function's own log group only.
        self.role = role or iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"), description=f"Execution role of {source}")
        logging = iam.Policy(
            self,
            "LoggingPolicy",
            roles=[self.role],
            statements=[
                iam.PolicyStatement(
                    actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                    resources=[self.log_group.log_group_arn],
                )
            ],
        )
        layer_arn = ssm.StringParameter.value_for_string_parameter(self, POWERTOOLS_LAYER_PARAMETER)
        self.function = lambda_.Function(
            self,
            "Function",
            function_name=function_name,
            description=description,
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler=f"{source}.handler.main",
            code=lambda_.Code.from_asset(str(LAMBDA_ROOT), exclude=handler_asset_excludes(source), ignore_mode=cdk.IgnoreMode.GLOB),
            layers=[lambda_.LayerVersion.from_layer_version_arn(self, "Powertools", layer_arn)],
            timeout=timeout,
            memory_size=memory_size,
            reserved_concurrent_executions=reserved_concurrency,
            role=self.role,
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=lambda_.ApplicationLogLevel.INFO,
            system_log_level_v2=lambda_.SystemLogLevel.WARN,
            tracing=lambda_.Tracing.ACTIVE,
            environment={"POWERTOOLS_SERVICE_NAME": source, **(environment or {})},
        )
        self.function.node.add_dependency(logging)
        # Active tracing makes CDK add X-Ray statements to the role's default policy (which lives
        # with the role, in whichever stack owns it).
        tracing_policy = self.role.node.try_find_child("DefaultPolicy")
        if tracing_policy is not None:
            acknowledge(
                tracing_policy,
                "AwsSolutions-IAM5[Resource::*]",
                "X-Ray PutTraceSegments/PutTelemetryRecords support no resource-level permissions",
            )
