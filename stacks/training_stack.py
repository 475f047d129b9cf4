"""Training: the model lifecycle of a stage, from a training run to what the endpoint serves.

    ServingRecord     the record's SSM parameters (created if missing; Inference resolves them)
    ModelRegistry     the model package group (base and fine-tuned versions)
    FineTuningPipeline  fine-tune on Trainium, or compile a base model only, then register
    ModelDeployer     writes the record and has CloudFormation apply it (approval rule included)
    EndpointSchedule  switches the endpoint on/off on a schedule (when configured)

This stack deploys BEFORE Inference (stacks/stage.py): the record must exist when Inference first
resolves it, and the deployer addresses the Inference stack by name, not by reference.
"""

from __future__ import annotations

from typing import Optional

import aws_cdk as cdk
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from stacks.config import StageConfig
from stacks.constructs.alarms import alarm_name
from stacks.constructs.endpoint_schedule import EndpointSchedule
from stacks.constructs.fine_tuning_pipeline import (  # noqa: F401 (re-exported for scripts and tests)
    PIPELINE_FAILED_ALARM,
    FineTuningPipeline,
    compile_in_training_job,
    load_rules,
    training_image_uri,
)
from stacks.constructs.model_deployer import APPROVAL_UNDELIVERED_ALARM, DEPLOYER_FAILED_ALARM, ModelDeployer
from stacks.constructs.model_registry import ModelRegistry
from stacks.constructs.serving_record import ServingRecord
from stacks.storage_stack import StorageStack


class TrainingStack(cdk.Stack):
    """Attributes: `topic`, `record`, `registry`, `pipeline`, `deployer` (None without inference),
    `schedule` (None without a schedule), `state_machine` (the pipeline's), `alarm_names`."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig, storage: StorageStack, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        training = stage.training
        self.topic = sns.Topic(self, "Notifications", display_name=f"{stage.stack_prefix} model lifecycle", master_key=storage.key, enforce_ssl=True)
        if training.notification_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(training.notification_email))

        self.registry = ModelRegistry(self, "Registry", stage=stage)
        self.pipeline = FineTuningPipeline(self, "Pipeline", stage=stage, storage=storage, registry=self.registry, topic=self.topic, key=storage.key)
        self.state_machine = self.pipeline.state_machine
        self.record: Optional[ServingRecord] = None
        self.deployer: Optional[ModelDeployer] = None
        self.schedule: Optional[EndpointSchedule] = None
        self.alarm_names = [alarm_name(stage, PIPELINE_FAILED_ALARM)]
        if stage.inference.enabled:
            self.record = ServingRecord(self, "ServingRecord", stage=stage, log_retention_days=training.log_retention_days, key=storage.key)
            self.deployer = ModelDeployer(
                self,
                "Deployer",
                stage=stage,
                registry=self.registry,
                serving_record=self.record,
                artifacts_bucket_name=storage.artifacts_bucket.bucket_name,
                topic=self.topic,
                key=storage.key,
            )
            self.alarm_names += [alarm_name(stage, DEPLOYER_FAILED_ALARM), alarm_name(stage, APPROVAL_UNDELIVERED_ALARM)]
            if stage.inference.power_on_schedule is not None:
                self.schedule = EndpointSchedule(self, "PowerSchedule", stage=stage, deployer=self.deployer.state_machine)
            cdk.CfnOutput(self, "DeployerArn", value=self.deployer.state_machine.state_machine_arn, description="Switch the endpoint (scripts/endpoint_power.py) or roll back (scripts/rollback_model.py)")
            cdk.CfnOutput(self, "ApprovalDeadLetterQueueUrl", value=self.deployer.approval_dead_letters.queue_url, description="Approval events EventBridge could not deliver to the model deployer")

        cdk.CfnOutput(self, "StateMachineArn", value=self.state_machine.state_machine_arn, description="Start a run: scripts/start_training.py (--compile-only for a base model)")
        cdk.CfnOutput(self, "ModelPackageGroupName", value=self.registry.group_name)
        cdk.CfnOutput(self, "NotificationTopicArn", value=self.topic.topic_arn)
