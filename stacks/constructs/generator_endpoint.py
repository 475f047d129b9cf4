"""The stage's Inferentia2 endpoint, shaped at deploy time by the serving record (lambda/shared/model_record.py).

Three CloudFormation parameters of type `AWS::SSM::Parameter::Value<String>` resolve the record on
every create and update of the stack (CloudFormation reads Parameter Store again each time, also
when the parameter is passed with UsePreviousValue):

    BaseRecord / FinetunedRecord   "none" | "<version>|<models/... prefix>"
    EndpointPower                  "on" | "off"

Conditions turn the record into resources: a role has a model, a variant and its own scaling and
alarms only while its record is not `none` and the power is `on`; the endpoint (and its config)
exists while at least one role is served. So the first deploy into an empty account creates no
model, no endpoint, no scalable target and no alarm on a variant that does not exist.

Values are read with Fn::Split on `|` and Fn::Select (the record with "|-" appended, so the
selected index exists even for `none` and nothing depends on CloudFormation skipping properties of
resources whose condition is false).

The endpoint config's name is `<endpoint>-b<base version|0>-f<finetuned version|0>-<8 hex>`, the hex
being a digest of the synth-time definition (models, variants, key): whenever CloudFormation must
replace the config (all its properties are create-only), its name changes too, which a named
resource needs, and the query Lambda reads the versions from the name.

SageMaker's rules this design keeps (see README "How each lifecycle transition deploys"):
- a version change of a variant that exists keeps the variant set: the endpoint updates in place,
  blue/green with the 5xx alarms as auto-rollback, autoscaling stays registered (changing a
  variant's model is allowed with autoscaling);
- a change of the variant *set* (adding or removing a role on a running endpoint) would need the
  same variant names for blue/green and cannot remove a variant with a registered scalable
  target: the model deployer switches the endpoint off and on around it instead (two stack
  updates);
- changing `inference.instance_type` or `inference.serve_base` on a running endpoint is the same
  kind of change: switch the endpoint off first (scripts/endpoint_power.py), deploy, switch it on.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from stacks import serving_contract
from stacks.config import StageConfig
from stacks.constructs.alarms import alarm_arn, alarm_name, stage_alarm
from stacks.constructs.compliance import acknowledge
from stacks.constructs.lifecycle import retention
from stacks.storage_stack import ARTIFACT_PREFIXES

record = serving_contract.model_record
SCALE_OUT_COOLDOWN_S = 300
SCALE_IN_COOLDOWN_S = 900  # a new inf2 instance takes many minutes to serve: give capacity back slowly
ROLLBACK_BAKE_S = 300
RECORD_SUFFIX = "|-"  # appended before Fn::Split so index 1 exists even for "none"

# CloudFormation logical ids of the record's parameters (the model deployer names them in UpdateStack).
PARAMETER_IDS = {"base": "BaseRecord", "finetuned": "FinetunedRecord"}
POWER_PARAMETER_ID = "EndpointPower"


def served_roles(stage: StageConfig) -> tuple[str, ...]:
    """Roles that may get a variant on this stage (`inference.serve_base: false` drops the base)."""
    return tuple(role for role in serving_contract.ROLES if role != "base" or stage.inference.serve_base)


def parameter_ids(stage: StageConfig) -> list[str]:
    """Every parameter of the Inference stack, in template order."""
    return [PARAMETER_IDS[role] for role in served_roles(stage)] + [POWER_PARAMETER_ID]


def generator_alarm(variant: str, what: str = "") -> str:
    """`generator-finetuned-5xx`: an endpoint variant's alarm name within the stage (`*`: all of them)."""
    return f"generator-{variant}-{what}" if what else f"generator-{variant}"


class GeneratorEndpoint(Construct):
    """Models, endpoint config, endpoint, per-variant scaling and alarms, all conditional on the record.

    Attributes: `endpoint_name`, `endpoint_arn`, `execution_role`, `log_group`, `parameters`
    ({role: CfnParameter}), `power_parameter`, `serve` ({role: CfnCondition}), `serve_any`,
    `models` ({role: CfnModel}), `endpoint_config`, `endpoint`, `scalable_targets`,
    `scaling_policies`, `alarms` ({role: (errors, latency)}).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        contract: serving_contract.ServingContract,
        artifacts_bucket_name: str,
        artifacts_bucket_arn: str,
        artifacts_bucket_export: str,
        key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        inference = stage.inference
        self.stage = stage
        self.contract = contract
        self.roles = served_roles(stage)
        self.endpoint_name = serving_contract.endpoint_name(stage)
        serving_contract.check_config_name_length(self.endpoint_name)
        self.endpoint_arn = stack.format_arn(service="sagemaker", resource="endpoint", resource_name=self.endpoint_name)

        kms_key_arn = key.key_arn
        self.execution_role, self._policy = self._execution_role(artifacts_bucket_arn, artifacts_bucket_export, kms_key_arn)
        # SageMaker writes to this name: a retained copy would block a redeploy, so it goes with the stack.
        # Encrypted with the stage key: the model server's output can quote prompts and answers.
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"/aws/sagemaker/Endpoints/{self.endpoint_name}",
            retention=retention(inference.log_retention_days),
            removal_policy=cdk.RemovalPolicy.DESTROY,
            encryption_key=key,
        )
        self._grant_runtime()

        # --- the record, resolved at deploy time -------------------------------------------------
        self.parameters = {}
        for role in self.roles:
            parameter = cdk.CfnParameter(
                stack,
                PARAMETER_IDS[role],
                type="AWS::SSM::Parameter::Value<String>",
                default=record.record_parameter(stage.name, role),
                description=f"Serving record of the {role} variant: 'none' or '<version>|<models/... prefix>' (written by the model deployer)",
            )
            self.parameters[role] = parameter
        self.power_parameter = cdk.CfnParameter(
            stack,
            POWER_PARAMETER_ID,
            type="AWS::SSM::Parameter::Value<String>",
            default=record.power_parameter(stage.name),
            description="Endpoint power: 'on' or 'off' (scripts/endpoint_power.py, the schedule)",
        )
        power_on = self._condition("PowerOn", cdk.Fn.condition_equals(self.power_parameter.value_as_string, record.POWER_ON))
        self.serve: dict[str, cdk.CfnCondition] = {}
        for role in self.roles:
            deployed = cdk.Fn.condition_not(cdk.Fn.condition_equals(self.parameters[role].value_as_string, record.NOT_DEPLOYED))
            self.serve[role] = self._condition(f"Serve{role.capitalize()}", cdk.Fn.condition_and(power_on, deployed))
        if len(self.roles) > 1:
            self.serve_any = self._condition("ServeAny", cdk.Fn.condition_or(*self.serve.values()))
        else:
            self.serve_any = self.serve[self.roles[0]]

        # --- per role: model, alarms ---------------------------------------------------------------
        self.models: dict[str, sagemaker.CfnModel] = {}
        self.alarms: dict[str, tuple[cloudwatch.Alarm, cloudwatch.Alarm]] = {}
        self.alarm_names: list[str] = []  # plain strings (the dashboard lists them without a reference)
        model_definitions = {}
        for role in self.roles:
            prefix = self._record_part(role, 1)
            definition = contract.model_definition(
                model_s3_uri=cdk.Fn.join("", ["s3://", artifacts_bucket_name, "/", prefix]),
                execution_role_arn=self.execution_role.role_arn,
            )
            model = sagemaker.CfnModel(self, f"{role.capitalize()}Model")
            for name, value in definition.items():
                model.add_property_override(name, value)
            model.cfn_options.condition = self.serve[role]
            model.node.add_dependency(self._policy)  # SageMaker checks S3 and ECR access at creation
            self.models[role] = model
            model_definitions[role] = definition
            self.alarms[role] = self._alarms(role)

        # --- endpoint config: one variant per served role -----------------------------------------
        variants = []
        for role in self.roles:
            variant = contract.production_variant(self.models[role].attr_model_name, role=role)
            variants.append(cdk.Fn.condition_if(self.serve[role].logical_id, variant, cdk.Aws.NO_VALUE) if len(self.roles) > 1 else variant)
        config_definition = contract.endpoint_config_definition(variants=variants, kms_key_arn=kms_key_arn)
        digest = serving_contract.definition_digest(stack.resolve({"models": model_definitions, "config": config_definition}))
        version = {role: (cdk.Token.as_string(cdk.Fn.condition_if(self.serve[role].logical_id, self._record_part(role, 0), record.NO_VERSION)) if role in self.roles else record.NO_VERSION) for role in serving_contract.ROLES}
        self.endpoint_config_name = cdk.Fn.join("-", [self.endpoint_name, cdk.Fn.join("", ["b", version["base"]]), cdk.Fn.join("", ["f", version["finetuned"]]), digest])
        # The key as the L1 property (not an override), so the compliance packs see the volumes encrypted.
        self.endpoint_config = sagemaker.CfnEndpointConfig(self, "Config", production_variants=[], kms_key_id=config_definition.get("KmsKeyId"))
        self.endpoint_config.add_property_override("EndpointConfigName", self.endpoint_config_name)
        for name, value in config_definition.items():
            if name != "KmsKeyId":
                self.endpoint_config.add_property_override(name, value)
        self.endpoint_config.cfn_options.condition = self.serve_any

        # --- the endpoint: blue/green, rolled back by the served variants' 5xx alarms --------------
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
                auto_rollback_configuration=sagemaker.CfnEndpoint.AutoRollbackConfigProperty(alarms=[]),
            ),
        )
        rollback_alarms = []
        for role in self.roles:
            alarm = {"AlarmName": self.alarms[role][0].alarm_name}
            rollback_alarms.append(cdk.Fn.condition_if(self.serve[role].logical_id, alarm, cdk.Aws.NO_VALUE) if len(self.roles) > 1 else alarm)
        self.endpoint.add_property_override("DeploymentConfig.AutoRollbackConfiguration.Alarms", rollback_alarms)
        self.endpoint.cfn_options.condition = self.serve_any
        self.endpoint.node.add_dependency(self.log_group)

        # --- scaling: one scalable target per variant ----------------------------------------------
        self.scalable_targets: dict[str, appscaling.CfnScalableTarget] = {}
        self.scaling_policies: dict[str, appscaling.CfnScalingPolicy] = {}
        for role in self.roles:
            self._scaling(role)

    # --- helpers ---------------------------------------------------------------------------------

    def _condition(self, construct_id: str, expression: cdk.ICfnConditionExpression) -> cdk.CfnCondition:
        """A stack-level condition with a readable logical id (the README and the tests name them)."""
        return cdk.CfnCondition(cdk.Stack.of(self), construct_id, expression=expression)

    def _record_part(self, role: str, index: int) -> str:
        """Part `index` of the role's record: 0 = version, 1 = model prefix."""
        value = cdk.Fn.join("", [self.parameters[role].value_as_string, RECORD_SUFFIX])
        return cdk.Fn.select(index, cdk.Fn.split(record.SEPARATOR, value))

    def _variant_name(self, role: str) -> str:
        return serving_contract.VARIANT_NAMES[role]

    def _alarms(self, role: str) -> tuple[cloudwatch.Alarm, cloudwatch.Alarm]:
        inference = self.stage.inference
        variant = self._variant_name(role)
        dimensions = {"EndpointName": self.endpoint_name, "VariantName": variant}
        errors = stage_alarm(
            self,
            f"{role.capitalize()}Errors5xxAlarm",
            stage=self.stage,
            name=generator_alarm(variant, "5xx"),
            description=f"{self.endpoint_name}/{variant}: the model container answered 5xx (this alarm also rolls back a deployment).",
            metric=cloudwatch.Metric(namespace="AWS/SageMaker", metric_name="Invocation5XXErrors", dimensions_map=dimensions, statistic="Sum", period=cdk.Duration.minutes(5)),
            threshold=inference.errors_alarm_threshold,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        )
        latency = stage_alarm(
            self,
            f"{role.capitalize()}LatencyAlarm",
            stage=self.stage,
            name=generator_alarm(variant, "p90-latency"),
            description=f"{self.endpoint_name}/{variant}: p90 model latency above {inference.latency_alarm_p90_s} s.",
            metric=cloudwatch.Metric(namespace="AWS/SageMaker", metric_name="ModelLatency", dimensions_map=dimensions, statistic="p90", period=cdk.Duration.minutes(5)),
            threshold=inference.latency_alarm_p90_s * 1_000_000,  # ModelLatency is in microseconds
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=3,
            datapoints_to_alarm=2,
        )
        for alarm in (errors, latency):
            alarm.node.default_child.cfn_options.condition = self.serve[role]
        self.alarm_names += [alarm_name(self.stage, generator_alarm(variant, what)) for what in ("5xx", "p90-latency")]
        return errors, latency

    def _scaling(self, role: str) -> None:
        inference = self.stage.inference
        variant = self._variant_name(role)
        # L1 on purpose: Application Auto Scaling uses its SageMaker service-linked role.
        target = appscaling.CfnScalableTarget(
            self,
            f"{role.capitalize()}ScalableTarget",
            service_namespace="sagemaker",
            resource_id=f"endpoint/{self.endpoint_name}/variant/{variant}",
            scalable_dimension="sagemaker:variant:DesiredInstanceCount",
            min_capacity=inference.min_instances,
            max_capacity=inference.max_instances,
        )
        target.cfn_options.condition = self.serve[role]
        target.node.add_dependency(self.endpoint)  # the variant must exist to register it
        policy = appscaling.CfnScalingPolicy(
            self,
            f"{role.capitalize()}InvocationsPerInstance",
            policy_name=f"{self.endpoint_name}-{variant}-invocations-per-instance",
            policy_type="TargetTrackingScaling",
            scaling_target_id=target.ref,
            target_tracking_scaling_policy_configuration=appscaling.CfnScalingPolicy.TargetTrackingScalingPolicyConfigurationProperty(
                target_value=float(inference.target_invocations_per_instance),
                predefined_metric_specification=appscaling.CfnScalingPolicy.PredefinedMetricSpecificationProperty(predefined_metric_type="SageMakerVariantInvocationsPerInstance"),
                scale_out_cooldown=SCALE_OUT_COOLDOWN_S,
                scale_in_cooldown=SCALE_IN_COOLDOWN_S,
            ),
        )
        policy.cfn_options.condition = self.serve[role]
        self.scalable_targets[role] = target
        self.scaling_policies[role] = policy

    def _execution_role(self, bucket_arn: str, bucket_export: str, kms_key_arn: str) -> tuple[iam.Role, iam.Policy]:
        """SageMaker's role: read the serving artifacts (models/ only) and decrypt them."""
        models_prefix = ARTIFACT_PREFIXES.models
        stack = cdk.Stack.of(self)
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
                iam.PolicyStatement(sid="ListServingArtifacts", actions=["s3:ListBucket"], resources=[bucket_arn], conditions={"StringLike": {"s3:prefix": [f"{models_prefix}*"]}}),
                iam.PolicyStatement(sid="ReadServingArtifacts", actions=["s3:GetObject"], resources=[f"{bucket_arn}/{models_prefix}*"]),
                iam.PolicyStatement(
                    sid="DecryptServingArtifacts",
                    actions=["kms:Decrypt"],
                    resources=[kms_key_arn],
                    conditions={"StringEquals": {"kms:ViaService": f"s3.{stack.region}.amazonaws.com"}},
                ),
            ],
        )
        acknowledge(
            policy,
            f"AwsSolutions-IAM5[Resource::{bucket_export}/{models_prefix}*]",
            "The serving artifacts are many files (configs, compiled graphs, sharded weights) under models/ and nowhere else",
        )
        return role, policy

    def _grant_runtime(self) -> None:
        """Pull the image, write logs and metrics, and read the rollback alarms (blue/green needs it)."""
        stack = cdk.Stack.of(self)
        alarms = alarm_arn(stack, self.stage, generator_alarm("*"))
        for statement in (
            iam.PolicyStatement(sid="PullInferenceImage", actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"], resources=[self.contract.image_repository_arn]),
            iam.PolicyStatement(sid="EcrLogin", actions=["ecr:GetAuthorizationToken"], resources=["*"]),
            iam.PolicyStatement(sid="WriteEndpointLogs", actions=["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"], resources=[self.log_group.log_group_arn]),
            iam.PolicyStatement(sid="EndpointInstanceMetrics", actions=["cloudwatch:PutMetricData"], resources=["*"], conditions={"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}}),
            # Deployment guardrails read the auto-rollback alarms with the endpoint's execution role.
            iam.PolicyStatement(sid="ReadRollbackAlarms", actions=["cloudwatch:DescribeAlarms"], resources=[alarms]),
        ):
            self._policy.add_statements(statement)
        acknowledge(
            self._policy,
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken and cloudwatch:PutMetricData have no resource-level permissions (the latter is limited to /aws/sagemaker/* namespaces)",
        )
        acknowledge(
            self._policy,
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:cloudwatch:<AWS::Region>:<AWS::AccountId>:alarm:{alarm_name(self.stage, generator_alarm('*'))}]",
            "The variants' rollback alarms exist only while their variant does; their fixed names share one prefix",
        )

    def invoke_statement(self) -> iam.PolicyStatement:
        return iam.PolicyStatement(actions=["sagemaker:InvokeEndpoint"], resources=[self.endpoint_arn])
