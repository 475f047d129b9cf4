"""Inference: the base and fine-tuned models side by side on one Inferentia2 endpoint.

Stateless: everything here can be destroyed and redeployed (the models live in the storage
stack's artifacts bucket, the serving record in SSM). Which version each variant serves is not in
this template: it is the serving record (`lambda/shared/model_record.py`), resolved by
CloudFormation at deploy time (`stacks/constructs/generator_endpoint.py`). The record's parameters
are created by the Training stack, which deploys first; the model deployer there writes the record
and then asks CloudFormation to update this stack. A `cdk deploy` from an unchanged checkout
resolves the same record, so it changes nothing about what serves.

With `inference.enabled: false` the stack holds nothing (the stage is Bedrock-only):
`endpoint_name`, `endpoint_arn` and `generator` are None.
"""

from __future__ import annotations

from typing import Optional

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.config import StageConfig
from stacks.constructs.generator_endpoint import GeneratorEndpoint
from stacks.serving_contract import ServingContract
from stacks.storage_stack import StorageStack


class InferenceStack(cdk.Stack):
    """Attributes: `contract` (ServingContract), `generator` (GeneratorEndpoint or None), and for the
    serving and training stacks `endpoint_name`, `endpoint_arn`, `execution_role` (None when disabled),
    `alarm_names` (the variants' alarms, each existing only while its variant does)."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig, storage: StorageStack, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.contract = ServingContract.for_stack(self, stage.inference)
        self.generator: Optional[GeneratorEndpoint] = None
        self.endpoint_name: Optional[str] = None
        self.endpoint_arn: Optional[str] = None
        self.execution_role: Optional[iam.IRole] = None
        self.alarm_names: list[str] = []
        if not stage.inference.enabled:
            return
        self.generator = GeneratorEndpoint(
            self,
            "Generator",
            stage=stage,
            contract=self.contract,
            artifacts_bucket_name=storage.artifacts_bucket.bucket_name,
            artifacts_bucket_arn=storage.artifacts_arn_export.value,
            artifacts_bucket_export=storage.artifacts_arn_export.name,
            key=storage.key,
        )
        self.endpoint_name = self.generator.endpoint_name
        self.endpoint_arn = self.generator.endpoint_arn
        self.execution_role = self.generator.execution_role
        self.alarm_names = list(self.generator.alarm_names)
        cdk.CfnOutput(self, "EndpointName", value=self.endpoint_name, description="Exists while the serving record names a model and the power is on")

    def invoke_statement(self) -> iam.PolicyStatement:
        """sagemaker:InvokeEndpoint on this endpoint only (for the query Lambda's role)."""
        if self.generator is None:
            raise ValueError("inference is disabled for this stage: there is no endpoint to invoke")
        return self.generator.invoke_statement()
