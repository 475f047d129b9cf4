"""Inference: the fine-tuned model on an Inferentia2 real-time endpoint, with autoscaling and alarms.

Stateless: everything here can be destroyed and redeployed (the model data lives in the storage
stack). The container, its environment and the model data source come from the serving contract
(`stacks/serving_contract.py`), the same definition the training pipeline deploys new models with.

With `inference.enabled: false` the stack still exists, holding only the SageMaker execution role
(so the training pipeline's grants on it stay valid) and no model, endpoint, scaling or alarms;
`endpoint`, `endpoint_name` and `endpoint_arn` are then None, and the serving path uses Bedrock.

Names: the endpoint has a fixed name (`<prefix>-generator`: the query Lambda and the pipeline's
UpdateEndpoint address it); the model and endpoint config get generated names, so any change
creates new ones and CloudFormation updates the endpoint in place (blue/green, rolled back if the
5xx alarm fires while the new fleet bakes). `RetainAllVariantProperties` keeps the instance count
autoscaling chose across deploys.
"""

from __future__ import annotations

from typing import Optional

import aws_cdk as cdk
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from stacks.config import StageConfig
from stacks.constructs.alarms import notify
from stacks.constructs.compliance import acknowledge
from stacks.constructs.lifecycle import retention
from stacks.serving_contract import VARIANT_NAME, ServingContract
from stacks.storage_stack import ARTIFACT_PREFIXES, StorageStack

SCALE_OUT_COOLDOWN_S = 300
SCALE_IN_COOLDOWN_S = 900  # a new inf2 instance takes many minutes to serve: give capacity back slowly
ROLLBACK_BAKE_S = 300


class InferenceStack(cdk.Stack):
    """SageMaker model + endpoint config + endpoint on ml.inf2, its scaling and its alarms.

    Attributes: `contract` (ServingContract), `execution_role`, `model_s3_uri`, and when enabled
    `model`, `endpoint_config`, `endpoint`, `endpoint_name`, `endpoint_arn`, `scalable_target`, `scaling_policy`,
    `log_group`, `errors_alarm`, `latency_alarm` (None otherwise).
    """

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig, storage: StorageStack, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        inference = stage.inference
        if not inference.model_s3_prefix.startswith(ARTIFACT_PREFIXES.models):
            raise ValueError(f"inference.model_s3_prefix must be under {ARTIFACT_PREFIXES.models}")  # config checks it too
        self.contract = ServingContract.for_stack(self, inference)
        self.model_s3_uri = f"s3://{storage.artifacts_bucket.bucket_name}/{inference.model_s3_prefix}"
        self.execution_role = self._execution_role(storage)

        self.model: Optional[sagemaker.CfnModel] = None
        self.endpoint_config: Optional[sagemaker.CfnEndpointConfig] = None
        self.endpoint: Optional[sagemaker.CfnEndpoint] = None
        self.endpoint_name: Optional[str] = None
        self.endpoint_arn: Optional[str] = None
        self.scalable_target: Optional[appscaling.CfnScalableTarget] = None
        self.scaling_policy: Optional[appscaling.CfnScalingPolicy] = None
        self.log_group: Optional[logs.LogGroup] = None
        self.errors_alarm: Optional[cloudwatch.Alarm] = None
        self.latency_alarm: Optional[cloudwatch.Alarm] = None
        if not inference.enabled:
            return

        self.endpoint_name = f"{stage.stack_prefix.lower()}-generator"
        self.endpoint_arn = self.format_arn(service="sagemaker", resource="endpoint", resource_name=self.endpoint_name)
        self.log_group = logs.LogGroup(
            self,
            "EndpointLogs",
            log_group_name=f"/aws/sagemaker/Endpoints/{self.endpoint_name}",
            retention=retention(inference.log_retention_days),
            # SageMaker fixes the name, and this stack has no termination protection: a retained
            # group would make the redeploy after a destroy fail (AlreadyExists). Container logs
            # are diagnostics, not access or audit data.
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        self._grant_runtime(self.log_group)

        # The contract's CreateModel parameters are CloudFormation's property names too: they go in
        # unchanged, so the stack and the training pipeline deploy the very same definition.
        self.model = sagemaker.CfnModel(self, "Model")
        definition = self.contract.model_definition(model_s3_uri=self.model_s3_uri, execution_role_arn=self.execution_role.role_arn)
        for name, value in definition.items():
            self.model.add_property_override(name, value)
        # The role's policy must exist before SageMaker checks the model's S3 and ECR access.
        self.model.node.add_dependency(self._execution_policy)

        # Same for the endpoint config: the pipeline's CreateEndpointConfig uses this very definition.
        self.endpoint_config = sagemaker.CfnEndpointConfig(self, "EndpointConfig", production_variants=[])
        config_definition = self.contract.endpoint_config_definition(model_name=self.model.attr_model_name, kms_key_arn=storage.key.key_arn)
        for name, value in config_definition.items():
            self.endpoint_config.add_property_override(name, value)

        self.errors_alarm, self.latency_alarm = self._alarms(stage)

        deploy_timeout = min(28800, inference.model_data_download_timeout_s + inference.startup_health_check_timeout_s + 1800 + ROLLBACK_BAKE_S)
        self.endpoint = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_name=self.endpoint_name,
            endpoint_config_name=self.endpoint_config.attr_endpoint_config_name,
            retain_all_variant_properties=True,
            deployment_config=sagemaker.CfnEndpoint.DeploymentConfigProperty(
                blue_green_update_policy=sagemaker.CfnEndpoint.BlueGreenUpdatePolicyProperty(
                    traffic_routing_configuration=sagemaker.CfnEndpoint.TrafficRoutingConfigProperty(type="ALL_AT_ONCE", wait_interval_in_seconds=0),
                    termination_wait_in_seconds=ROLLBACK_BAKE_S,
                    maximum_execution_timeout_in_seconds=deploy_timeout,
                ),
                auto_rollback_configuration=sagemaker.CfnEndpoint.AutoRollbackConfigProperty(
                    alarms=[sagemaker.CfnEndpoint.AlarmProperty(alarm_name=self.errors_alarm.alarm_name)],
                ),
            ),
        )
        self.endpoint.node.add_dependency(self.log_group)

        # L1 on purpose: Application Auto Scaling uses its SageMaker service-linked role and ignores a
        # RoleARN, so the L2's extra (permission-less) role would only be noise.
        self.scalable_target = appscaling.CfnScalableTarget(
            self,
            "ScalableTarget",
            service_namespace="sagemaker",
            resource_id=f"endpoint/{self.endpoint_name}/variant/{VARIANT_NAME}",
            scalable_dimension="sagemaker:variant:DesiredInstanceCount",
            min_capacity=inference.min_instances,
            max_capacity=inference.max_instances,
        )
        self.scalable_target.node.add_dependency(self.endpoint)  # the variant must exist to register it
        self.scaling_policy = appscaling.CfnScalingPolicy(
            self,
            "InvocationsPerInstance",
            policy_name=f"{self.endpoint_name}-invocations-per-instance",
            policy_type="TargetTrackingScaling",
            scaling_target_id=self.scalable_target.ref,
            target_tracking_scaling_policy_configuration=appscaling.CfnScalingPolicy.TargetTrackingScalingPolicyConfigurationProperty(
                target_value=float(inference.target_invocations_per_instance),
                predefined_metric_specification=appscaling.CfnScalingPolicy.PredefinedMetricSpecificationProperty(
                    predefined_metric_type="SageMakerVariantInvocationsPerInstance",
                ),
                scale_out_cooldown=SCALE_OUT_COOLDOWN_S,
                scale_in_cooldown=SCALE_IN_COOLDOWN_S,
            ),
        )

        cdk.CfnOutput(self, "EndpointName", value=self.endpoint_name)
        cdk.CfnOutput(self, "ModelDataPrefix", value=inference.model_s3_prefix)

    def _execution_role(self, storage: StorageStack) -> iam.Role:
        """SageMaker's role: read the serving artifacts (models/ only) and decrypt them."""
        models_prefix = ARTIFACT_PREFIXES.models
        bucket_export = storage.artifacts_arn_export.name
        bucket_arn = storage.artifacts_arn_export.value
        role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="SageMaker execution role of the Inferentia2 endpoint: reads models/ of the artifacts bucket",
        )
        policy = iam.Policy(
            self,
            "ExecutionPolicy",
            roles=[role],
            statements=[
                iam.PolicyStatement(
                    sid="ListServingArtifacts",
                    actions=["s3:ListBucket"],
                    resources=[bucket_arn],
                    conditions={"StringLike": {"s3:prefix": [f"{models_prefix}*"]}},
                ),
                iam.PolicyStatement(
                    sid="ReadServingArtifacts",
                    actions=["s3:GetObject"],
                    resources=[f"{bucket_arn}/{models_prefix}*"],
                ),
                iam.PolicyStatement(
                    sid="DecryptServingArtifacts",
                    actions=["kms:Decrypt"],
                    resources=[storage.key.key_arn],
                    conditions={"StringEquals": {"kms:ViaService": f"s3.{self.region}.amazonaws.com"}},
                ),
            ],
        )
        acknowledge(
            policy,
            f"AwsSolutions-IAM5[Resource::{bucket_export}/{models_prefix}*]",
            "The serving artifacts are many files (configs, compiled graphs, sharded weights) under models/ and nowhere else",
        )
        self._execution_policy = policy
        return role

    def _grant_runtime(self, log_group: logs.LogGroup) -> None:
        """What the endpoint needs at run time: pull the image, write its logs and metrics."""
        statements = [
            iam.PolicyStatement(
                sid="PullInferenceImage",
                actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                resources=[self.contract.image_repository_arn],
            ),
            iam.PolicyStatement(sid="EcrLogin", actions=["ecr:GetAuthorizationToken"], resources=["*"]),
            iam.PolicyStatement(
                sid="WriteEndpointLogs",
                actions=["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[log_group.log_group_arn],
            ),
            iam.PolicyStatement(
                sid="EndpointInstanceMetrics",
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}},
            ),
        ]
        for statement in statements:
            self._execution_policy.add_statements(statement)
        acknowledge(
            self._execution_policy,
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken and cloudwatch:PutMetricData have no resource-level permissions (the latter is limited to /aws/sagemaker/* namespaces)",
        )

    def _alarms(self, stage: StageConfig) -> tuple[cloudwatch.Alarm, cloudwatch.Alarm]:
        inference = stage.inference
        dimensions = {"EndpointName": self.endpoint_name, "VariantName": VARIANT_NAME}
        errors = cloudwatch.Alarm(
            self,
            "Errors5xxAlarm",
            alarm_description=f"{self.endpoint_name}: the model container answered 5xx (also rolls back a deployment)",
            metric=cloudwatch.Metric(
                namespace="AWS/SageMaker",
                metric_name="Invocation5XXErrors",
                dimensions_map=dimensions,
                statistic="Sum",
                period=cdk.Duration.minutes(5),
            ),
            threshold=inference.errors_alarm_threshold,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        latency = cloudwatch.Alarm(
            self,
            "ModelLatencyAlarm",
            alarm_description=f"{self.endpoint_name}: p90 model latency above {inference.latency_alarm_p90_s} s",
            metric=cloudwatch.Metric(
                namespace="AWS/SageMaker",
                metric_name="ModelLatency",  # microseconds
                dimensions_map=dimensions,
                statistic="p90",
                period=cdk.Duration.minutes(5),
            ),
            threshold=inference.latency_alarm_p90_s * 1_000_000,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=3,
            datapoints_to_alarm=2,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        return notify(errors, stage), notify(latency, stage)

    def invoke_statement(self) -> iam.PolicyStatement:
        """sagemaker:InvokeEndpoint on this endpoint only (for the query Lambda's role)."""
        if self.endpoint_arn is None:
            raise ValueError("inference is disabled for this stage: there is no endpoint to invoke")
        return iam.PolicyStatement(actions=["sagemaker:InvokeEndpoint"], resources=[self.endpoint_arn])
