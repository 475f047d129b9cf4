"""The stage's model registry: one model package group for the base and the fine-tuned versions.

Each version carries `CustomerMetadataProperties.Role` (`base` for a compile-only run of a base
model, `finetuned` for a training run) and its compiled model's S3 prefix in the container's
ModelDataSource. The group is retained on every stage (its versions are the record of what was
trained, and CloudFormation cannot delete a group that still holds versions), so its name carries
the stack's creation id: a destroy and redeploy of the Training stack gets a new, empty group
instead of failing on a name that is taken. The name is all lowercase, as SageMaker writes it in
ARNs, so IAM statements can name it.
"""

from __future__ import annotations

import json

import aws_cdk as cdk
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from stacks.config import StageConfig
from stacks.constructs.workflow import stack_instance_id

ROLE_PROPERTY = "Role"  # CustomerMetadataProperties key: "base" or "finetuned"


class ModelRegistry(Construct):
    """Attributes: `group` (CfnModelPackageGroup), `group_name` (token), `group_arn`, `packages_arn`
    (ARN pattern of its versions), `packages_finding` (that pattern in cdk-nag's IAM5 spelling)."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        name_prefix = f"{stage.stack_prefix.lower()}-models"
        self.group_name = cdk.Fn.join("-", [name_prefix, stack_instance_id(self)])
        self.group = sagemaker.CfnModelPackageGroup(
            self,
            "Group",
            model_package_group_name=self.group_name,
            model_package_group_description=f"Generators of stage {stage.name}: base models compiled for Inferentia2 and fine-tuned versions",
        )
        self.group.apply_removal_policy(cdk.RemovalPolicy.RETAIN)
        self.group_arn = self.group.attr_model_package_group_arn
        self.packages_arn = f"arn:{stack.partition}:sagemaker:{stack.region}:{stack.account}:model-package/{self.group_name}/*"
        # How cdk-nag spells that ARN in an IAM5 finding (for the acknowledgements of its users).
        suffix = json.dumps(stack.resolve(stack_instance_id(self)), separators=(",", ":"))
        self.packages_finding = f"Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:model-package/{name_prefix}-{suffix}/*"
