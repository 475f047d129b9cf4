"""Storage: the S3 buckets every other part reads or writes, and the key that encrypts them (and
every log group of the stage).

Stateful: prod retains it (and the data in it) when the stack is deleted; dev destroys it.
"""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.config import StageConfig
from stacks.constructs.compliance import DEPLOY_TIME_CONCURRENCY, accept, accept_function, acknowledge, invoked_by_cloudformation
from stacks.constructs.lifecycle import removal_policy


@dataclass(frozen=True)
class ArtifactPrefixes:
    """Layout of the model artifacts bucket: one prefix per kind of object."""

    base_models: str = "base-models/"  # base weights the training jobs start from (no hub access)
    source: str = "source/"  # training code packages
    neuron_cache: str = "neuron-cache/"  # Neuron compile cache shared between jobs
    checkpoints: str = "checkpoints/"  # training checkpoints (resumable, e.g. after a spot interruption)
    training_output: str = "training-output/"  # what each training job writes
    models: str = "models/"  # compiled, uncompressed serving artifacts the endpoints load


ARTIFACT_PREFIXES = ArtifactPrefixes()
# Where each data bucket's content comes from again if a region is lost (no cross-region replica).
DATA_BUCKET_SOURCES = {
    "Documents": "the documents are a copy of the source of record they are uploaded from",
    "TrainingData": "the training data is uploaded from the data set it was prepared from",
    "Artifacts": "the model artifacts are rebuilt by the model pipeline from the training data and a public base model",
}


@dataclass(frozen=True)
class ExportedArn:
    """A bucket ARN exported under a fixed name, for other stacks' IAM statements.

    CDK's generated export names are internal; a fixed name keeps the consumers' templates and the
    cdk-nag finding ids that quote them (e.g. `Resource::RagDev-Storage:DocumentsBucketArn/*`) stable.
    """

    name: str  # the export name, as cdk-nag findings spell the ARN
    value: str  # Fn::ImportValue of it: use only in other stacks


class StorageStack(cdk.Stack):
    """Buckets for documents, training data, model artifacts and their access logs.

    Attributes: `key`, `documents_bucket`, `training_bucket`, `artifacts_bucket`,
    `access_logs_bucket`, `documents_prefix`, and the buckets' ARNs for other stacks:
    `documents_arn_export`, `training_arn_export`, `artifacts_arn_export`.
    """

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        storage = stage.storage
        removal = removal_policy(stage)
        self.documents_prefix = storage.documents_prefix

        self.key = kms.Key(
            self,
            "DataKey",
            description=f"Encrypts the {stage.name} stage's documents, training data and model artifacts",
            alias=f"alias/rag-{stage.name}-data",
            enable_key_rotation=True,
            removal_policy=removal,
        )
        self._let_cloudwatch_logs_use_key()
        self.access_logs_bucket = self._access_logs_bucket(stage, removal)
        self.documents_bucket = self._data_bucket("Documents", stage, removal, event_bridge=True)
        self.training_bucket = self._data_bucket("TrainingData", stage, removal)
        self.artifacts_bucket = self._data_bucket(
            "Artifacts",
            stage,
            removal,
            extra_rules=[
                # Checkpoints only matter while a job can still resume; the final model is in training-output/.
                s3.LifecycleRule(id="ExpireCheckpoints", prefix=ARTIFACT_PREFIXES.checkpoints, expiration=cdk.Duration.days(storage.checkpoint_expiry_days)),
            ],
        )

        self.documents_arn_export = self._export_arn("DocumentsBucketArn", self.documents_bucket)
        self.training_arn_export = self._export_arn("TrainingBucketArn", self.training_bucket)
        self.artifacts_arn_export = self._export_arn("ArtifactsBucketArn", self.artifacts_bucket)
        self._acknowledge_cdk_helpers()

        for name, bucket in (
            ("DocumentsBucketName", self.documents_bucket),
            ("TrainingDataBucketName", self.training_bucket),
            ("ArtifactsBucketName", self.artifacts_bucket),
        ):
            cdk.CfnOutput(self, name, value=bucket.bucket_name)
        cdk.CfnOutput(self, "DocumentsPrefix", value=storage.documents_prefix)

    def _let_cloudwatch_logs_use_key(self) -> None:
        """Every log group of the stage is encrypted with this key (questions, document names and
        model output can appear in them): CloudWatch Logs may use it for log groups of this account
        and region only (the encryption context names the log group)."""
        self.key.add_to_resource_policy(iam.PolicyStatement(
            sid="CloudWatchLogsEncryptsLogGroups",
            principals=[iam.ServicePrincipal(f"logs.{self.region}.amazonaws.com")],
            actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
            resources=["*"],
            conditions={"ArnLike": {"kms:EncryptionContext:aws:logs:arn": self.format_arn(
                service="logs", resource="log-group", resource_name="*", arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME)}},
        ))

    def _export_arn(self, name: str, bucket: s3.Bucket) -> ExportedArn:
        export = f"{self.stack_name}:{name}"
        return ExportedArn(name=export, value=self.export_value(bucket.bucket_arn, name=export))

    def _acknowledge_cdk_helpers(self) -> None:
        """CDK's own helper Lambdas (bucket notifications; emptying the buckets of a stage that
        does not retain data), which the project cannot configure."""
        handler = next(child for child in self.node.children if child.node.id.startswith("BucketNotificationsHandler"))
        acknowledge(
            handler.node.find_child("Role"),
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
            "CDK's BucketNotificationsHandler (turns on EventBridge delivery at deploy) hard-codes this logging policy",
        )
        helpers = [(handler, "CDK's BucketNotificationsHandler, which turns on EventBridge delivery of the documents bucket")]
        auto_delete = self.node.try_find_child("Custom::S3AutoDeleteObjectsCustomResourceProvider")
        if auto_delete is not None:
            helpers.append((auto_delete.node.find_child("Handler"), "CDK's AutoDeleteObjects handler, which empties a bucket of this stage when the stack deletes it"))
        for function, what in helpers:
            accept_function(
                function,
                dead_letters=invoked_by_cloudformation(what),
                concurrency=DEPLOY_TIME_CONCURRENCY,
                environment=False,
            )

    def _access_logs_bucket(self, stage: StageConfig, removal: cdk.RemovalPolicy) -> s3.Bucket:
        # Server access log delivery supports only SSE-S3 on the target bucket, not SSE-KMS.
        bucket = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(id="ExpireAccessLogs", expiration=cdk.Duration.days(stage.storage.access_log_expiry_days)),
                *self._hygiene_rules(stage),
            ],
            removal_policy=removal,
            auto_delete_objects=not stage.retain_data,
        )
        acknowledge(bucket, "AwsSolutions-S1", "This is the server access log target; logging it into itself would loop")
        accept(bucket, "the server access log target of the other buckets: logging it into itself would log its own log "
                       "deliveries in a loop; reads of it are CloudTrail data events where the account records them",
               checkov=["CKV_AWS_18"])
        accept(bucket, "the server access log target: S3 server access logging delivers only to SSE-S3 (AES256) buckets, "
                       "not SSE-KMS; the log records hold request metadata, the data buckets use the stage key",
               nag=["S3DefaultEncryptionKMS"])
        self._accept_single_region(bucket, "its access log records expire after storage.access_log_expiry_days")
        return bucket

    @staticmethod
    def _accept_single_region(bucket: s3.Bucket, what: str) -> None:
        accept(bucket, "single-region project: the buckets are versioned and a stage that retains data keeps them, "
                       f"and {what}; cross-region replication is a disaster-recovery decision (a second region, a "
                       "replica key, twice the storage) to add as a configuration option when a stage needs it",
               nag=["S3BucketReplicationEnabled"])

    def _data_bucket(
        self,
        construct_id: str,
        stage: StageConfig,
        removal: cdk.RemovalPolicy,
        *,
        event_bridge: bool = False,
        extra_rules: tuple = (),
    ) -> s3.Bucket:
        bucket = s3.Bucket(
            self,
            construct_id,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs_bucket,
            server_access_logs_prefix=f"{construct_id.lower()}/",
            event_bridge_enabled=event_bridge,
            lifecycle_rules=[*self._hygiene_rules(stage), *extra_rules],
            removal_policy=removal,
            auto_delete_objects=not stage.retain_data,
        )
        self._accept_single_region(bucket, DATA_BUCKET_SOURCES[construct_id])
        return bucket

    @staticmethod
    def _hygiene_rules(stage: StageConfig) -> list[s3.LifecycleRule]:
        """Rules every bucket gets: no forgotten multipart uploads, no unbounded old versions."""
        return [
            s3.LifecycleRule(
                id="AbortIncompleteUploads",
                abort_incomplete_multipart_upload_after=cdk.Duration.days(stage.storage.abort_incomplete_upload_days),
            ),
            s3.LifecycleRule(
                id="ExpireNoncurrentVersions",
                noncurrent_version_expiration=cdk.Duration.days(stage.storage.noncurrent_version_expiry_days),
            ),
        ]
