"""Training: the Step Functions pipeline that fine-tunes on Trainium, registers and (optionally) deploys.

    ValidateInput (Lambda: shape, hyperparameters, S3 data + base model, job names)
      -> TrainModel (createTrainingJob.sync on ml.trn1.*, checkpoints, optional Spot, uncompressed
         output, NEURON_COMPILE_CACHE_URL, torchrun across the NeuronCores)
      -> [CompileForInferentia2] (createTrainingJob.sync with the SERVING image: only when the
         training image's optimum-neuron differs from the serving image's, see below)
      -> RegisterModelVersion (model package group of this stage)
      -> auto_deploy: CreateModel -> CreateEndpointConfig -> UpdateEndpoint -> wait InService
         otherwise: stop with the version PendingManualApproval
      -> NotifySuccess; every failure -> NotifyFailure -> Fail

A compiled optimum-neuron model loads only under the optimum-neuron version that compiled it.
When the training image and the serving image (stacks/serving_contract.py) carry the same
version, train.py compiles at the end of the training job; otherwise the pipeline compiles the
merged model in a short second job that runs `optimum-cli export neuron` inside the serving image
itself. Either way the compile shape (batch size, sequence length, tensor parallel size) comes from
InferenceConfig through the serving contract: one source.

The query language is JSONata throughout. CDK's SageMakerCreateTrainingJob cannot set
CheckpointConfig, Spot, RetryStrategy or CompressionType, so the jobs are CustomStates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Protocol

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from stacks import serving_contract
from stacks.config import TRN1_NEURON_CORES, ConfigError, StageConfig
from stacks.constructs.compliance import acknowledge
from stacks.constructs.lifecycle import removal_policy, retention
from stacks.constructs.python_function import PythonFunction
from stacks.constructs.source_archive import SourceArchive
from stacks.storage_stack import ARTIFACT_PREFIXES, StorageStack

ROOT = Path(__file__).resolve().parents[1]
TRAINING_CODE = ROOT / "model_artifacts" / "training"
HYPERPARAMETER_SPEC = TRAINING_CODE / "hyperparameters.json"
# Loaded the way the Lambda and the start script load it: one rule set (lambda/validate_training_input).
_RULES_PATH = ROOT / "lambda" / "validate_training_input" / "rules.py"

# --- The training image: pinned data (sagemaker.image_uris cannot resolve it, field notes) --------
TRAINING_IMAGE_REPOSITORY = "huggingface-pytorch-training-neuronx"
TRAINING_IMAGE_TAG = "2.8.0-transformers4.55.4-neuronx-py310-sdk2.26.0-ubuntu22.04"
TRAINING_IMAGE_OPTIMUM_NEURON = "0.4.1"  # what that image ships (Hugging Face's DLC table); requirements.txt pins it too
TRAINING_IMAGE_ACCOUNTS = {  # regions where the image was seen; add others only after checking
    "us-east-1": "763104351884",
    "us-west-2": "763104351884",
}
TRAINING_MAPPING_ID = "TrainingImageByRegion"
TRAINING_RULE_ID = "TrainingImageRegionSupported"

CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
TRAINING_JOB_SYNC = "sagemaker:createTrainingJob.sync"
TRAINING_EVENTS_RULE = "StepFunctionsGetEventsForSageMakerTrainingJobsRule"
ENDPOINT_POLL_SECONDS = 60
SNS_SUBJECT_MAX = 100


class DeployTarget(Protocol):
    """What the pipeline needs from the inference stack to deploy a new version."""

    endpoint_name: Optional[str]
    execution_role: iam.IRole


def compile_in_training_job(training_optimum_neuron: str = TRAINING_IMAGE_OPTIMUM_NEURON, serving_optimum_neuron: str = serving_contract.OPTIMUM_NEURON_VERSION) -> bool:
    """train.py may compile only if the serving container will accept its output."""
    return training_optimum_neuron == serving_optimum_neuron


def training_image_uri(region: str) -> str:
    if region not in TRAINING_IMAGE_ACCOUNTS:
        raise ConfigError("region", region, f"the Trainium training image is pinned for: {', '.join(sorted(TRAINING_IMAGE_ACCOUNTS))}")
    return f"{TRAINING_IMAGE_ACCOUNTS[region]}.dkr.ecr.{region}.amazonaws.com/{TRAINING_IMAGE_REPOSITORY}:{TRAINING_IMAGE_TAG}"


def load_rules():
    import importlib.util
    import sys

    name = "validate_training_input_rules"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _RULES_PATH)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def jsonata(expression: str) -> str:
    return "{% " + expression + " %}"


class TrainingStack(cdk.Stack):
    """The fine-tuning pipeline. Attributes: `state_machine`, `model_package_group_name`, `topic`."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        storage: StorageStack,
        deploy_target: Optional[DeployTarget] = None,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        training, inference = stage.training, stage.inference
        deploy = training.auto_deploy
        if deploy and (deploy_target is None or deploy_target.endpoint_name is None):
            raise ConfigError(f"stages.{stage.name}.training.auto_deploy", True, "false when the stage has no endpoint (inference.enabled is false)")
        self.stage_config = stage
        self.storage = storage
        self.job_prefix = f"{stage.stack_prefix.lower()}-ft"
        self.model_package_group_name = f"{stage.stack_prefix}-finetuned"
        self.compile_in_job = compile_in_training_job()
        self.contract = serving_contract.ServingContract.for_stack(self, inference)
        cores = TRN1_NEURON_CORES[training.instance_type] * training.instance_count
        artifacts = storage.artifacts_bucket.bucket_name
        self.uris = {
            "output": f"s3://{artifacts}/{ARTIFACT_PREFIXES.training_output}",
            "models": f"s3://{artifacts}/{ARTIFACT_PREFIXES.models}",
            "checkpoints": f"s3://{artifacts}/{ARTIFACT_PREFIXES.checkpoints}",
            "cache": f"s3://{artifacts}/{ARTIFACT_PREFIXES.neuron_cache}",
        }

        self.code = SourceArchive(self, "TrainingCode", source_dir=TRAINING_CODE, exclude=["sample_data", "README.md"])
        self.job_role = self._job_role()
        self.topic = sns.Topic(self, "Notifications", display_name=f"{stage.stack_prefix} fine-tuning", master_key=storage.key, enforce_ssl=True)
        if training.notification_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(training.notification_email))
        group = sagemaker.CfnModelPackageGroup(
            self,
            "ModelPackageGroup",
            model_package_group_name=self.model_package_group_name,
            model_package_group_description=f"Fine-tuned generators of stage {stage.name} (one version per training run)",
        )
        group.apply_removal_policy(removal_policy(stage))

        rules = load_rules()
        spec = json.loads(HYPERPARAMETER_SPEC.read_text())
        self.validator = PythonFunction(
            self,
            "ValidateInputFunction",
            source="validate_training_input",
            description="Validates a fine-tuning request (data, base model, hyperparameters) and names its jobs",
            timeout=cdk.Duration.seconds(60),
            log_retention=retention(training.log_retention_days),
            environment={
                "TRAINING_BUCKET": storage.training_bucket.bucket_name,
                "ARTIFACTS_BUCKET": artifacts,
                "BASE_MODELS_ROOT": ARTIFACT_PREFIXES.base_models,
                "DEFAULT_BASE_MODEL_PREFIX": training.base_model_s3_prefix,
                "JOB_PREFIX": self.job_prefix,
                "NEURON_CORES": str(cores),
                "HYPERPARAMETER_SPEC": json.dumps(rules.user_spec(spec), separators=(",", ":"), sort_keys=True),
            },
        )
        self._grant_validator()

        log_group = logs.LogGroup(
            self,
            "PipelineLogs",
            log_group_name=f"/aws/vendedlogs/states/{stage.stack_prefix}-fine-tuning",
            retention=retention(training.log_retention_days),
            removal_policy=removal_policy(stage),
        )
        definition = self._definition(deploy_target if deploy else None, cores)
        hours = training.max_runtime_hours + (training.max_wait_hours if training.use_spot else 0)
        self.state_machine = sfn.StateMachine(
            self,
            "Pipeline",
            state_machine_name=f"{stage.stack_prefix}-fine-tuning",
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            query_language=sfn.QueryLanguage.JSONATA,
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
            timeout=cdk.Duration.hours(2 * hours + 3),
        )
        self._grant_pipeline(deploy_target if deploy else None)
        self._acknowledge(deploy)
        cdk.CfnOutput(self, "StateMachineArn", value=self.state_machine.state_machine_arn, description="Start a fine-tuning run: scripts/start_training.py")
        cdk.CfnOutput(self, "ModelPackageGroupName", value=self.model_package_group_name)
        cdk.CfnOutput(self, "NotificationTopicArn", value=self.topic.topic_arn)

    # --- images ---------------------------------------------------------------------------------

    def _training_image(self) -> tuple[str, str]:
        """(image URI, repository ARN): literal for a known region, else a mapping + region rule."""
        if not cdk.Token.is_unresolved(self.region):
            account = TRAINING_IMAGE_ACCOUNTS.get(self.region) or training_image_uri(self.region)
            return training_image_uri(self.region), f"arn:{self.partition}:ecr:{self.region}:{account}:repository/{TRAINING_IMAGE_REPOSITORY}"
        mapping = cdk.CfnMapping(self, TRAINING_MAPPING_ID, mapping={region: {"Account": account} for region, account in sorted(TRAINING_IMAGE_ACCOUNTS.items())})
        cdk.CfnRule(
            self,
            TRAINING_RULE_ID,
            assertions=[
                cdk.CfnRuleAssertion(
                    assert_=cdk.Fn.condition_contains(sorted(TRAINING_IMAGE_ACCOUNTS), cdk.Aws.REGION),
                    assert_description=f"The Trainium training image is pinned only for: {', '.join(sorted(TRAINING_IMAGE_ACCOUNTS))}.",
                )
            ],
        )
        account = mapping.find_in_map(cdk.Aws.REGION, "Account")
        uri = f"{account}.dkr.ecr.{cdk.Aws.REGION}.{cdk.Aws.URL_SUFFIX}/{TRAINING_IMAGE_REPOSITORY}:{TRAINING_IMAGE_TAG}"
        return uri, f"arn:{cdk.Aws.PARTITION}:ecr:{cdk.Aws.REGION}:{account}:repository/{TRAINING_IMAGE_REPOSITORY}"

    # --- IAM ------------------------------------------------------------------------------------

    def _arn(self, service: str, resource: str) -> str:
        return f"arn:{self.partition}:{service}:{self.region}:{self.account}:{resource}"

    def _job_role(self) -> iam.Role:
        """The role SageMaker runs both jobs with: the buckets' prefixes, the two images, its logs."""
        self.training_image, training_repository = self._training_image()
        role = iam.Role(self, "JobRole", assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"), description="Fine-tuning and compile jobs")
        p = ARTIFACT_PREFIXES
        data = self.storage.training_arn_export.value
        artifacts = self.storage.artifacts_arn_export.value
        self._artifacts_arn = artifacts
        asset = self.code.asset
        statements = [
            iam.PolicyStatement(sid="ReadTrainingData", actions=["s3:GetObject"], resources=[f"{data}/*"]),
            iam.PolicyStatement(sid="ListTrainingData", actions=["s3:ListBucket"], resources=[data]),
            iam.PolicyStatement(
                sid="ListArtifacts",
                actions=["s3:ListBucket"],
                resources=[artifacts],
                conditions={"StringLike": {"s3:prefix": [f"{prefix}*" for prefix in (p.base_models, p.checkpoints, p.neuron_cache, p.training_output, p.models)]}},
            ),
            iam.PolicyStatement(sid="ReadInputs", actions=["s3:GetObject"], resources=[f"{artifacts}/{p.base_models}*", f"{artifacts}/{p.training_output}*"]),
            iam.PolicyStatement(
                sid="ReadWriteCheckpointsAndCache",
                actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                resources=[f"{artifacts}/{p.checkpoints}*", f"{artifacts}/{p.neuron_cache}*"],
            ),
            iam.PolicyStatement(sid="WriteOutputs", actions=["s3:PutObject", "s3:AbortMultipartUpload"], resources=[f"{artifacts}/{p.training_output}*", f"{artifacts}/{p.models}*"]),
            iam.PolicyStatement(sid="ReadCode", actions=["s3:GetObject"], resources=[asset.bucket.arn_for_objects(asset.s3_object_key)]),
            iam.PolicyStatement(sid="UseStageKey", actions=["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"], resources=[self.storage.key.key_arn]),
            iam.PolicyStatement(sid="PullImages", actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"], resources=[training_repository, self.contract.image_repository_arn]),
            iam.PolicyStatement(sid="EcrLogin", actions=["ecr:GetAuthorizationToken"], resources=["*"]),
            iam.PolicyStatement(
                sid="JobLogs",
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[self._arn("logs", "log-group:/aws/sagemaker/TrainingJobs"), self._arn("logs", "log-group:/aws/sagemaker/TrainingJobs:log-stream:*")],
            ),
            iam.PolicyStatement(sid="JobMetrics", actions=["cloudwatch:PutMetricData"], resources=["*"], conditions={"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}}),
        ]
        self.job_policy = iam.Policy(self, "JobPolicy", roles=[role], statements=statements)
        return role

    def _grant_validator(self) -> None:
        p = ARTIFACT_PREFIXES
        statements = [
            iam.PolicyStatement(actions=["s3:ListBucket"], resources=[self.storage.training_arn_export.value]),
            iam.PolicyStatement(actions=["s3:ListBucket"], resources=[self._artifacts_arn], conditions={"StringLike": {"s3:prefix": [f"{p.base_models}*"]}}),
            iam.PolicyStatement(actions=["s3:GetObject"], resources=[f"{self._artifacts_arn}/{p.base_models}*/config.json"]),
            iam.PolicyStatement(actions=["kms:Decrypt"], resources=[self.storage.key.key_arn]),
        ]
        self.validator_policy = iam.Policy(self, "ValidatorPolicy", roles=[self.validator.role], statements=statements)

    def _grant_pipeline(self, deploy_target: Optional[DeployTarget]) -> None:
        """What the SDK-integration tasks do not grant themselves (CallAwsService adds its own)."""
        role = self.state_machine.role
        statements = [
            iam.PolicyStatement(sid="RunJobs", actions=["sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob", "sagemaker:AddTags"], resources=[self._jobs_arn()]),
            iam.PolicyStatement(sid="SyncJobEvents", actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"], resources=[self._arn("events", f"rule/{TRAINING_EVENTS_RULE}")]),
            iam.PolicyStatement(sid="PassJobRole", actions=["iam:PassRole"], resources=[self.job_role.role_arn], conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}),
            iam.PolicyStatement(sid="PublishEncrypted", actions=["kms:GenerateDataKey", "kms:Decrypt"], resources=[self.storage.key.key_arn]),
        ]
        if deploy_target is not None:
            statements += [
                iam.PolicyStatement(sid="EndpointConfigKey", actions=["kms:CreateGrant", "kms:DescribeKey"], resources=[self.storage.key.key_arn]),
                iam.PolicyStatement(sid="PassModelRole", actions=["iam:PassRole"], resources=[deploy_target.execution_role.role_arn], conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}),
            ]
        self.pipeline_policy = iam.Policy(self, "PipelinePolicy", roles=[role], statements=statements)
        self.state_machine.node.default_child.node.add_dependency(self.pipeline_policy)  # not the role: that would be a cycle

    def _jobs_arn(self) -> str:
        return self._arn("sagemaker", f"training-job/{self.job_prefix}-*")

    # --- the state machine ----------------------------------------------------------------------

    def _training_job(self, cores: int) -> sfn.CustomState:
        training, inference = self.stage_config.training, self.stage_config.inference
        pipeline_hyperparameters = {
            "compile_for_inference": "true" if self.compile_in_job else "false",
            "serving_batch_size": str(inference.batch_size),
            "serving_sequence_length": str(inference.sequence_length),
            "serving_tensor_parallel_size": str(inference.tensor_parallel_size),
            "serving_optimum_neuron_version": serving_contract.OPTIMUM_NEURON_VERSION,
            "sagemaker_program": "train.py",
            "sagemaker_submit_directory": self.code.s3_url,
            "sagemaker_torch_distributed_enabled": "true",
            "sagemaker_region": self.region,
        }
        stopping: dict[str, Any] = {"MaxRuntimeInSeconds": training.max_runtime_hours * 3600}
        if training.use_spot:
            stopping["MaxWaitTimeInSeconds"] = training.max_wait_hours * 3600
        output = self.uris["models"] if self.compile_in_job else self.uris["output"]
        arguments = {
            "TrainingJobName": jsonata("$run.job_name"),
            "RoleArn": self.job_role.role_arn,
            "AlgorithmSpecification": {"TrainingImage": self.training_image, "TrainingInputMode": "File", "EnableSageMakerMetricsTimeSeries": True},
            "HyperParameters": jsonata(f"$merge([$run.hyperparameters, {json.dumps(pipeline_hyperparameters)}])"),
            "InputDataConfig": [
                self._channel("train", jsonata("$run.training_data_uri")),
                self._channel("base_model", jsonata("$run.base_model_uri")),
            ],
            "OutputDataConfig": {"S3OutputPath": output, "KmsKeyId": self.storage.key.key_arn, "CompressionType": "NONE"},
            "ResourceConfig": {"InstanceType": training.instance_type, "InstanceCount": training.instance_count, "VolumeSizeInGB": training.volume_size_gib},
            "StoppingCondition": stopping,
            "EnableManagedSpotTraining": training.use_spot,
            "CheckpointConfig": {"S3Uri": jsonata(f"'{self.uris['checkpoints']}' & $run.job_name & '/'"), "LocalPath": CHECKPOINT_LOCAL_PATH},
            "RetryStrategy": {"MaximumRetryAttempts": 2},
            "Environment": {"NEURON_COMPILE_CACHE_URL": self.uris["cache"]},
            "Tags": [{"Key": "stage", "Value": self.stage_config.name}],
        }
        return self._sync_job("TrainModel", arguments, assign={"model_uri": jsonata(f"'{output}' & $run.job_name & '/output/model/'")})

    def _compile_job(self) -> sfn.CustomState:
        command = ["export", "neuron", "--model", "/opt/ml/input/data/model", "--task", "text-generation", *self.contract.neuron_export_arguments(), "--torch_dtype", "bfloat16", "/opt/ml/model"]
        arguments = {
            "TrainingJobName": jsonata("$run.compile_job_name"),
            "RoleArn": self.job_role.role_arn,
            "AlgorithmSpecification": {"TrainingImage": self.contract.image, "TrainingInputMode": "File", "ContainerEntrypoint": ["optimum-cli"], "ContainerArguments": command},
            "InputDataConfig": [self._channel("model", jsonata("$model_uri"))],
            "OutputDataConfig": {"S3OutputPath": self.uris["models"], "KmsKeyId": self.storage.key.key_arn, "CompressionType": "NONE"},
            "ResourceConfig": {"InstanceType": self.stage_config.training.instance_type, "InstanceCount": 1, "VolumeSizeInGB": self.stage_config.training.volume_size_gib},
            "StoppingCondition": {"MaxRuntimeInSeconds": self.stage_config.training.max_runtime_hours * 3600},
            "EnableNetworkIsolation": True,
            "Environment": {"HF_HUB_OFFLINE": "1"},
            "RetryStrategy": {"MaximumRetryAttempts": 1},
            "Tags": [{"Key": "stage", "Value": self.stage_config.name}],
        }
        return self._sync_job("CompileForInferentia2", arguments, assign={"model_uri": jsonata(f"'{self.uris['models']}' & $run.compile_job_name & '/output/model/'")})

    @staticmethod
    def _channel(name: str, uri: str) -> dict[str, Any]:
        return {"ChannelName": name, "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}}}

    def _sync_job(self, name: str, arguments: dict[str, Any], *, assign: dict[str, str]) -> sfn.CustomState:
        state = sfn.CustomState(
            self,
            name,
            state_json={
                "Type": "Task",
                "Resource": f"arn:{cdk.Aws.PARTITION}:states:::{TRAINING_JOB_SYNC}",
                "Arguments": arguments,
                "Assign": assign,
                "Output": jsonata("$states.input"),
            },
        )
        state.add_retry(errors=["SageMaker.AmazonSageMakerException"], interval=cdk.Duration.seconds(30), max_attempts=3, backoff_rate=2)
        return state

    def _definition(self, deploy_target: Optional[DeployTarget], cores: int) -> sfn.IChainable:
        inference = self.stage_config.inference
        notify_failure = tasks.SnsPublish.jsonata(
            self,
            "NotifyFailure",
            topic=self.topic,
            subject=f"{self.stage_config.stack_prefix} fine-tuning failed"[:SNS_SUBJECT_MAX],
            message=sfn.TaskInput.from_text(jsonata("$string({'execution': $states.context.Execution.Id, 'job': $states.input.job, 'error': $states.input.Error, 'cause': $states.input.Cause})")),
            outputs=jsonata("$states.input"),
        )
        failed = sfn.Fail(self, "PipelineFailed", error=jsonata("$states.input.Error"), cause=jsonata("$states.input.Cause"))
        notify_failure.next(failed)

        def catch(state, *, with_job: bool = True) -> None:
            # The failure message names the run's training job once ValidateInput has named it.
            outputs = "$merge([$states.errorOutput, {'job': $run.job_name}])" if with_job else "$states.errorOutput"
            state.add_catch(notify_failure, errors=["States.ALL"], outputs=jsonata(outputs))

        validate = tasks.LambdaInvoke.jsonata(
            self,
            "ValidateInput",
            lambda_function=self.validator.function,
            payload=sfn.TaskInput.from_text(jsonata("$states.input")),
            assign={"run": jsonata("$states.result.Payload")},
            outputs=jsonata("$states.result.Payload"),
            retry_on_service_exceptions=True,
        )
        catch(validate, with_job=False)
        train = self._training_job(cores)
        catch(train)
        chain = sfn.Chain.start(validate).next(train)
        if not self.compile_in_job:
            compile_job = self._compile_job()
            catch(compile_job)
            chain = chain.next(compile_job)

        package_container = {key: value for key, value in self.contract.container_definition(jsonata("$model_uri")).items() if key != "Mode"}
        register = tasks.CallAwsService.jsonata(
            self,
            "RegisterModelVersion",
            service="sagemaker",
            action="createModelPackage",
            iam_resources=[self._arn("sagemaker", f"model-package-group/{self.model_package_group_name.lower()}"), self._arn("sagemaker", f"model-package/{self.model_package_group_name.lower()}/*")],
            parameters={
                "ModelPackageGroupName": self.model_package_group_name,
                "ModelPackageDescription": jsonata("$substring($run.description, 0, 1000)"),
                "ModelApprovalStatus": "Approved" if deploy_target is not None else "PendingManualApproval",
                "InferenceSpecification": {
                    "Containers": [package_container],
                    "SupportedContentTypes": ["application/json"],
                    "SupportedResponseMIMETypes": ["application/json"],
                    "SupportedRealtimeInferenceInstanceTypes": [inference.instance_type],
                },
                "CustomerMetadataProperties": {
                    "TrainingJobName": jsonata("$run.job_name"),
                    "TrainingDataUri": jsonata("$run.training_data_uri"),
                    "BaseModelUri": jsonata("$run.base_model_uri"),
                    "ModelUri": jsonata("$model_uri"),
                },
            },
            assign={"package_arn": jsonata("$states.result.ModelPackageArn")},
        )
        catch(register)
        chain = chain.next(register)

        if deploy_target is not None:
            chain = chain.next(self._deploy_chain(deploy_target, catch))
            outcome = "deployed to endpoint " + deploy_target.endpoint_name
        else:
            outcome = "registered, pending manual approval"
        notify_success = tasks.SnsPublish.jsonata(
            self,
            "NotifySuccess",
            topic=self.topic,
            subject=f"{self.stage_config.stack_prefix} fine-tuning succeeded"[:SNS_SUBJECT_MAX],
            message=sfn.TaskInput.from_text(jsonata(f"$string({{'execution': $states.context.Execution.Id, 'job': $run.job_name, 'model_package': $package_arn, 'model_uri': $model_uri, 'outcome': {json.dumps(outcome)}}})")),
        )
        catch(notify_success)
        return chain.next(notify_success).next(sfn.Succeed(self, "Done"))

    def _deploy_chain(self, target: DeployTarget, catch) -> sfn.IChainable:
        configs = self._arn("sagemaker", f"endpoint-config/{self.job_prefix}-*")
        endpoint = self._arn("sagemaker", "endpoint/*") if cdk.Token.is_unresolved(target.endpoint_name) else self._arn("sagemaker", f"endpoint/{target.endpoint_name.lower()}")
        create_model = tasks.CallAwsService.jsonata(
            self,
            "CreateModel",
            service="sagemaker",
            action="createModel",
            iam_resources=[self._arn("sagemaker", f"model/{self.job_prefix}-*")],
            parameters={"ModelName": jsonata("$run.model_name"), **self.contract.model_definition(model_s3_uri=jsonata("$model_uri"), execution_role_arn=target.execution_role.role_arn)},
        )
        config_parameters = {"EndpointConfigName": jsonata("$run.endpoint_config_name"), **self.contract.endpoint_config_definition(model_name=jsonata("$run.model_name"), kms_key_arn=self.storage.key.key_arn)}
        create_config = tasks.CallAwsService.jsonata(
            self,
            "CreateEndpointConfig",
            service="sagemaker",
            action="createEndpointConfig",
            iam_resources=[configs],
            parameters=config_parameters,
        )
        update = tasks.CallAwsService.jsonata(
            self,
            "UpdateEndpoint",
            service="sagemaker",
            action="updateEndpoint",
            iam_resources=[endpoint, configs],
            # Keep the endpoint's blue/green + alarm rollback and the autoscaled instance count.
            parameters={"EndpointName": target.endpoint_name, "EndpointConfigName": jsonata("$run.endpoint_config_name"), "RetainDeploymentConfig": True, "RetainAllVariantProperties": True},
        )
        wait = sfn.Wait.jsonata(self, "WaitForEndpoint", time=sfn.WaitTime.duration(cdk.Duration.seconds(ENDPOINT_POLL_SECONDS)))
        describe = tasks.CallAwsService.jsonata(
            self,
            "DescribeEndpoint",
            service="sagemaker",
            action="describeEndpoint",
            iam_resources=[endpoint],
            parameters={"EndpointName": target.endpoint_name},
            outputs=jsonata("$states.result"),
        )
        choice = (
            sfn.Choice.jsonata(self, "EndpointInService?")
            .when(sfn.Condition.jsonata(jsonata("$states.input.EndpointStatus = 'InService' and $states.input.EndpointConfigName = $run.endpoint_config_name")), sfn.Pass.jsonata(self, "Deployed"))
            .when(
                sfn.Condition.jsonata(jsonata("$states.input.EndpointStatus in ['Failed', 'OutOfService'] or ($states.input.EndpointStatus = 'InService' and $states.input.EndpointConfigName != $run.endpoint_config_name)")),
                sfn.Pass.jsonata(self, "UpdateRolledBack", outputs={"Error": "EndpointUpdateFailed", "Cause": jsonata("$string($states.input)"), "job": jsonata("$run.job_name")}).next(self.node.find_child("NotifyFailure")),
            )
            .otherwise(wait)
        )
        for state in (create_model, create_config, update, describe):
            catch(state)
        sfn.Chain.start(create_model).next(create_config).next(update).next(wait).next(describe).next(choice)
        # Only "Deployed" continues (to NotifySuccess); the other branches loop or fail.
        return sfn.Chain.custom(create_model, choice.afterwards().end_states, choice)

    # --- cdk-nag --------------------------------------------------------------------------------

    def _acknowledge(self, deploy: bool) -> None:
        p = ARTIFACT_PREFIXES
        data, artifacts = self.storage.training_arn_export.name, self.storage.artifacts_arn_export.name
        group = self.model_package_group_name.lower()
        arn = "arn:<AWS::Partition>:{service}:<AWS::Region>:<AWS::AccountId>:{resource}"
        for rule, reason in [
            (f"Resource::{data}/*", "Jobs read the training data prefix chosen per run; the bucket holds training data only"),
            (f"Resource::{artifacts}/{p.base_models}*", "Jobs read the base model folder chosen per run (many weight and tokenizer files)"),
            (f"Resource::{artifacts}/{p.training_output}*", "Training writes the merged model under its per-run job name; the compile job reads it"),
            (f"Resource::{artifacts}/{p.checkpoints}*", "Checkpoint sync writes and restores per-run checkpoint files under checkpoints/"),
            (f"Resource::{artifacts}/{p.neuron_cache}*", "The Neuron compile cache is many graph files shared by all runs under neuron-cache/"),
            (f"Resource::{artifacts}/{p.models}*", "The serving artifacts (compiled graphs, sharded weights) are written under models/<job>/"),
            ("Resource::*", "ecr:GetAuthorizationToken has no resource-level permission; PutMetricData is limited to /aws/sagemaker/* namespaces"),
            ("Resource::" + arn.format(service="logs", resource="log-group:/aws/sagemaker/TrainingJobs:log-stream:*"), "SageMaker names one log stream per job host at run time"),
        ]:
            acknowledge(self.job_policy, f"AwsSolutions-IAM5[{rule}]", reason)
        acknowledge(self.validator_policy, f"AwsSolutions-IAM5[Resource::{artifacts}/{p.base_models}*/config.json]", "The validator reads only the config.json of the base model folder chosen per run")
        acknowledge(self.pipeline_policy, "AwsSolutions-IAM5[Resource::" + arn.format(service="sagemaker", resource=f"training-job/{self.job_prefix}-*") + "]", "Training and compile jobs get a new name per run, always with this stage's prefix")
        function_id = self.resolve(self.get_logical_id(self.validator.function.node.default_child))
        default_policy = self.state_machine.role.node.find_child("DefaultPolicy").node.default_child
        findings = [
            ("Resource::*", "Step Functions log delivery (logs:*LogDelivery, DescribeResourcePolicies) and X-Ray tracing have no resource-level permissions"),
            (f"Resource::<{function_id}.Arn>:*", "LambdaInvoke's grant covers the function's versions and aliases; the function is this stack's validator"),
            ("Resource::" + arn.format(service="sagemaker", resource=f"model-package/{group}/*"), "Each run registers a new version inside this stage's model package group"),
        ]
        if deploy:
            findings += [
                ("Resource::" + arn.format(service="sagemaker", resource=f"model/{self.job_prefix}-*"), "Each deployed run creates a model named after its job, with this stage's prefix"),
                ("Resource::" + arn.format(service="sagemaker", resource=f"endpoint-config/{self.job_prefix}-*"), "Each deployed run creates an endpoint config named after its job, with this stage's prefix"),
            ]
        for rule, reason in findings:
            acknowledge(default_policy, f"AwsSolutions-IAM5[{rule}]", reason)
