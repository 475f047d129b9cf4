"""The serving record's SSM parameters (lambda/shared/model_record.py), created before the Inference stack's first deploy.

A custom resource (lambda/serving_record) creates each parameter only if it is missing: `none`
for both roles and `on` for the power, so the first deploy of Inference resolves a record with no
model and creates no endpoint. CloudFormation never writes a value afterwards (an
`AWS::SSM::Parameter` resource would reset the value on any update of itself); the model deployer
is the only writer. Stages that retain data keep the record when the stack is deleted.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from stacks import serving_contract
from stacks.config import StageConfig
from stacks.constructs.compliance import DEPLOY_TIME_CONCURRENCY, accept_function, invoked_by_cloudformation
from stacks.constructs.lifecycle import retention
from stacks.constructs.python_function import PythonFunction

record = serving_contract.model_record


def initial_record(stage: StageConfig) -> dict[str, str]:
    """{parameter name: value written when it does not exist}: no model yet, power on."""
    values = {record.record_parameter(stage.name, role): record.NOT_DEPLOYED for role in record.ROLES}
    values[record.power_parameter(stage.name)] = record.POWER_ON
    return values


def parameter_arn(scope: Construct, name: str) -> str:
    return cdk.Stack.of(scope).format_arn(service="ssm", resource="parameter", resource_name=name.lstrip("/"))


class ServingRecord(Construct):
    """Attributes: `names` ({"base", "finetuned", "endpoint": parameter name}), `arns` (same keys),
    `path` (`/rag/<stage>/serving/`), `function`, `resource`."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig, log_retention_days: int, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.path = record.parameter_path(stage.name)
        self.names = {role: record.record_parameter(stage.name, role) for role in record.ROLES}
        self.names["endpoint"] = record.power_parameter(stage.name)
        self.arns = {key: parameter_arn(self, name) for key, name in self.names.items()}
        retain = stage.retain_data

        self.function = PythonFunction(
            self,
            "Function",
            source="serving_record",
            description="Creates the serving record's SSM parameters when missing; never overwrites them",
            timeout=cdk.Duration.seconds(60),
            log_retention=retention(log_retention_days),
            log_encryption_key=key,
        )
        accept_function(self.function.function, dead_letters=invoked_by_cloudformation("the serving record's custom resource handler"),
                        concurrency=DEPLOY_TIME_CONCURRENCY)
        actions = ["ssm:PutParameter"] if retain else ["ssm:PutParameter", "ssm:DeleteParameters"]
        policy = iam.Policy(self, "Policy", roles=[self.function.role], statements=[iam.PolicyStatement(actions=actions, resources=list(self.arns.values()))])
        self.resource = cdk.CustomResource(
            self,
            "Parameters",
            service_token=self.function.function.function_arn,
            resource_type="Custom::ServingRecord",
            properties={"Parameters": initial_record(stage), "RetainOnDelete": "true" if retain else "false"},
        )
        self.resource.node.add_dependency(policy)
