"""The model pipeline: fine-tune on Trainium, or compile a base model only, then register a version.

    ValidateInput (Lambda: request shape, hyperparameters, S3 data + base model, job names)
      -> compile_only?  yes: the base model itself is compiled (role "base")
                        no:  TrainModel (ml.trn1.*, optional managed spot, uncompressed output,
                             NEURON_COMPILE_CACHE_URL, torchrun across the NeuronCores) (role "finetuned")
      -> CompileForInferentia2 (the SERVING image runs `optimum-cli export neuron` with the serving
         contract's shape; skipped after training when train.py could compile, see below)
      -> RegisterModelVersion (CustomerMetadataProperties.Role; Approved when auto_deploy, else
         PendingManualApproval). The model deployer deploys it on approval (EventBridge), so the
         pipeline itself never touches the endpoint or the serving record.
      -> NotifySuccess; every failure -> NotifyFailure -> Fail

Jobs run through the AWS SDK integration (`aws-sdk:sagemaker:createTrainingJob`) and a
DescribeTrainingJob polling loop, not the optimized `.sync` integration: the optimized
integration validates its parameters against its own list of fields (CreateStateMachine fails
with "The field X is not supported by Step Functions" for fields it does not know), and these
jobs pass fields that list may lag behind (OutputDataConfig.CompressionType,
AlgorithmSpecification.ContainerEntrypoint/ContainerArguments, RetryStrategy, spot settings).
The SDK integration sends whatever the current CreateTrainingJob API accepts.

A compiled optimum-neuron model loads only under the optimum-neuron version that compiled it.
When the training image and the serving image carry the same version, train.py compiles at the
end of the training job; otherwise (today: 0.4.1 vs 0.4.4) the compile job runs inside the
serving image. Spot: optimum-neuron 0.4.1 cannot resume a run (`NeuronTrainer.train` refuses
`resume_from_checkpoint`), so an interrupted spot job restarts from step 0; no checkpoints are
synced (they could not be used) and `training.max_wait_hours` leaves room for a full restart.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from stacks import serving_contract
from stacks.config import TRN1_NEURON_CORES, ConfigError, StageConfig
from stacks.constructs.compliance import accept_function, acknowledge
from stacks.constructs.lifecycle import retention
from stacks.constructs.model_registry import ROLE_PROPERTY, ModelRegistry
from stacks.constructs.python_function import PythonFunction
from stacks.constructs.source_archive import SourceArchive
from stacks.constructs.workflow import SNS_SUBJECT_MAX, failed_executions_alarm, jsonata, workflow_log_group
from stacks.storage_stack import ARTIFACT_PREFIXES, StorageStack

PIPELINE_FAILED_ALARM = "model-pipeline-failed"  # Rag<Stage>-model-pipeline-failed (README, Operations)
ROOT = Path(__file__).resolve().parents[2]
TRAINING_CODE = ROOT / "model_artifacts" / "training"
HYPERPARAMETER_SPEC = TRAINING_CODE / "hyperparameters.json"
_RULES_PATH = ROOT / "lambda" / "validate_training_input" / "rules.py"

# --- The training image: pinned data (sagemaker.image_uris cannot resolve it, field notes) --------
TRAINING_IMAGE_REPOSITORY = "huggingface-pytorch-training-neuronx"
TRAINING_IMAGE_TAG = "2.8.0-transformers4.55.4-neuronx-py310-sdk2.26.0-ubuntu22.04"
TRAINING_IMAGE_OPTIMUM_NEURON = "0.4.1"  # what that image ships (Hugging Face's DLC table); requirements.txt pins it too
TRAINING_IMAGE_ACCOUNTS = {"us-east-1": "763104351884", "us-west-2": "763104351884"}  # regions where the image was seen
TRAINING_MAPPING_ID = "TrainingImageByRegion"
TRAINING_RULE_ID = "TrainingImageRegionSupported"

JOB_POLL_SECONDS = 300  # a Trainium job runs for hours; compile jobs for tens of minutes
COMPILE_POLL_SECONDS = 120
JOB_DONE, JOB_FAILED = "Completed", ["Failed", "Stopped"]


def compile_in_training_job(training_optimum_neuron: str = TRAINING_IMAGE_OPTIMUM_NEURON, serving_optimum_neuron: str = serving_contract.OPTIMUM_NEURON_VERSION) -> bool:
    """train.py may compile only if the serving container will accept its output."""
    return training_optimum_neuron == serving_optimum_neuron


def training_image_uri(region: str) -> str:
    if region not in TRAINING_IMAGE_ACCOUNTS:
        raise ConfigError("region", region, f"the Trainium training image is pinned for: {', '.join(sorted(TRAINING_IMAGE_ACCOUNTS))}")
    return f"{TRAINING_IMAGE_ACCOUNTS[region]}.dkr.ecr.{region}.amazonaws.com/{TRAINING_IMAGE_REPOSITORY}:{TRAINING_IMAGE_TAG}"


def load_rules():
    """lambda/validate_training_input/rules.py, the one rule set of the Lambda and the start script."""
    name = "validate_training_input_rules"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _RULES_PATH)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


class FineTuningPipeline(Construct):
    """Attributes: `state_machine`, `validator` (PythonFunction), `job_role`, `log_group`,
    `failed_alarm`, `job_prefix`, `compile_in_job`, `training_image`."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        storage: StorageStack,
        registry: ModelRegistry,
        topic: sns.ITopic,
        key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        self.stage = stage
        self.storage = storage
        self.registry = registry
        self.topic = topic
        self.key = key
        training = stage.training
        self.job_prefix = f"{stage.stack_prefix.lower()}-ft"
        self.compile_in_job = compile_in_training_job()
        self.contract = serving_contract.ServingContract.for_stack(self, stage.inference)
        cores = TRN1_NEURON_CORES[training.instance_type] * training.instance_count
        artifacts = storage.artifacts_bucket.bucket_name
        self.uris = {
            "output": f"s3://{artifacts}/{ARTIFACT_PREFIXES.training_output}",
            "models": f"s3://{artifacts}/{ARTIFACT_PREFIXES.models}",
            "cache": f"s3://{artifacts}/{ARTIFACT_PREFIXES.neuron_cache}",
        }
        self.code = SourceArchive(self, "TrainingCode", source_dir=TRAINING_CODE, exclude=["sample_data", "README.md"])
        self.training_image, training_repository = self._training_image()
        self.job_role, self.job_policy = self._job_role(training_repository)

        rules = load_rules()
        spec = json.loads(HYPERPARAMETER_SPEC.read_text())
        self.validator = PythonFunction(
            self,
            "ValidateInputFunction",
            source="validate_training_input",
            description="Validates a model pipeline request (data, base model, hyperparameters) and names its jobs",
            timeout=cdk.Duration.seconds(60),
            log_retention=retention(training.log_retention_days),
            log_encryption_key=key,  # the run's request: data and model locations, hyperparameters
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
        self.validator_policy = self._grant_validator()

        self.log_group = workflow_log_group(self, "Logs", name=f"{stage.stack_prefix}-model-pipeline", stage=stage, retention_days=training.log_retention_days, key=key)
        hours = training.max_runtime_hours + (training.max_wait_hours if training.use_spot else 0)
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=f"{stage.stack_prefix}-model-pipeline",
            definition_body=sfn.DefinitionBody.from_chainable(self._definition(cores)),
            query_language=sfn.QueryLanguage.JSONATA,
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
            timeout=cdk.Duration.hours(hours + 2 * training.max_runtime_hours + 3),
        )
        self.pipeline_policy = self._grant_pipeline()
        self.failed_alarm = failed_executions_alarm(self, "FailedExecutionsAlarm", state_machine=self.state_machine, stage=stage, name=PIPELINE_FAILED_ALARM, what="model pipeline")
        self._acknowledge()

    # --- images and IAM -------------------------------------------------------------------------

    def _training_image(self) -> tuple[str, str]:
        """(image URI, repository ARN): literal for a known region, else a mapping + region rule."""
        stack = cdk.Stack.of(self)
        if not cdk.Token.is_unresolved(stack.region):
            uri = training_image_uri(stack.region)
            return uri, f"arn:{stack.partition}:ecr:{stack.region}:{TRAINING_IMAGE_ACCOUNTS[stack.region]}:repository/{TRAINING_IMAGE_REPOSITORY}"
        mapping = cdk.CfnMapping(stack, TRAINING_MAPPING_ID, mapping={region: {"Account": account} for region, account in sorted(TRAINING_IMAGE_ACCOUNTS.items())})
        cdk.CfnRule(
            stack,
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

    def _arn(self, service: str, resource: str) -> str:
        stack = cdk.Stack.of(self)
        return f"arn:{stack.partition}:{service}:{stack.region}:{stack.account}:{resource}"

    def _job_role(self, training_repository: str) -> tuple[iam.Role, iam.Policy]:
        """The role SageMaker runs the jobs with: the buckets' prefixes, the two images, its logs."""
        role = iam.Role(self, "JobRole", assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"), description="Training and compile jobs of the model pipeline")
        p = ARTIFACT_PREFIXES
        data = self.storage.training_arn_export.value
        artifacts = self.storage.artifacts_arn_export.value
        asset = self.code.asset
        statements = [
            iam.PolicyStatement(sid="ReadTrainingData", actions=["s3:GetObject"], resources=[f"{data}/*"]),
            iam.PolicyStatement(sid="ListTrainingData", actions=["s3:ListBucket"], resources=[data]),
            iam.PolicyStatement(
                sid="ListArtifacts",
                actions=["s3:ListBucket"],
                resources=[artifacts],
                conditions={"StringLike": {"s3:prefix": [f"{prefix}*" for prefix in (p.base_models, p.neuron_cache, p.training_output, p.models)]}},
            ),
            iam.PolicyStatement(sid="ReadInputs", actions=["s3:GetObject"], resources=[f"{artifacts}/{p.base_models}*", f"{artifacts}/{p.training_output}*"]),
            iam.PolicyStatement(sid="ReadWriteCompileCache", actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"], resources=[f"{artifacts}/{p.neuron_cache}*"]),
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
        return role, iam.Policy(self, "JobPolicy", roles=[role], statements=statements)

    def _grant_validator(self) -> iam.Policy:
        p = ARTIFACT_PREFIXES
        artifacts = self.storage.artifacts_arn_export.value
        statements = [
            iam.PolicyStatement(actions=["s3:ListBucket"], resources=[self.storage.training_arn_export.value]),
            iam.PolicyStatement(actions=["s3:ListBucket"], resources=[artifacts], conditions={"StringLike": {"s3:prefix": [f"{p.base_models}*"]}}),
            iam.PolicyStatement(actions=["s3:GetObject"], resources=[f"{artifacts}/{p.base_models}*/config.json"]),
            iam.PolicyStatement(actions=["kms:Decrypt"], resources=[self.storage.key.key_arn]),
        ]
        return iam.Policy(self, "ValidatorPolicy", roles=[self.validator.role], statements=statements)

    def _grant_pipeline(self) -> iam.Policy:
        """What the SDK-integration tasks do not grant themselves (CallAwsService adds its own)."""
        statements = [
            iam.PolicyStatement(sid="RunJobs", actions=["sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob", "sagemaker:AddTags"], resources=[self._arn("sagemaker", f"training-job/{self.job_prefix}-*")]),
            iam.PolicyStatement(sid="PassJobRole", actions=["iam:PassRole"], resources=[self.job_role.role_arn], conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}),
            iam.PolicyStatement(sid="PublishEncrypted", actions=["kms:GenerateDataKey", "kms:Decrypt"], resources=[self.key.key_arn]),
        ]
        policy = iam.Policy(self, "PipelinePolicy", roles=[self.state_machine.role], statements=statements)
        self.state_machine.node.default_child.node.add_dependency(policy)  # not the role: that would be a cycle
        return policy

    # --- the state machine ----------------------------------------------------------------------

    @staticmethod
    def _channel(name: str, uri: str) -> dict[str, Any]:
        return {"ChannelName": name, "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}}}

    def _training_arguments(self, cores: int) -> dict[str, Any]:
        training, inference = self.stage.training, self.stage.inference
        pipeline_hyperparameters = {
            "compile_for_inference": "true" if self.compile_in_job else "false",
            "serving_batch_size": str(inference.batch_size),
            "serving_sequence_length": str(inference.sequence_length),
            "serving_tensor_parallel_size": str(inference.tensor_parallel_size),
            "serving_optimum_neuron_version": serving_contract.OPTIMUM_NEURON_VERSION,
            "sagemaker_program": "train.py",
            "sagemaker_submit_directory": self.code.s3_url,
            "sagemaker_torch_distributed_enabled": "true",
            "sagemaker_region": cdk.Stack.of(self).region,
        }
        stopping: dict[str, Any] = {"MaxRuntimeInSeconds": training.max_runtime_hours * 3600}
        if training.use_spot:
            stopping["MaxWaitTimeInSeconds"] = training.max_wait_hours * 3600
        output = self.uris["models"] if self.compile_in_job else self.uris["output"]
        return {
            "TrainingJobName": jsonata("$run.job_name"),
            "RoleArn": self.job_role.role_arn,
            "AlgorithmSpecification": {"TrainingImage": self.training_image, "TrainingInputMode": "File", "EnableSageMakerMetricsTimeSeries": True},
            "HyperParameters": jsonata(f"$merge([$run.hyperparameters, {json.dumps(pipeline_hyperparameters)}])"),
            "InputDataConfig": [self._channel("train", jsonata("$run.training_data_uri")), self._channel("base_model", jsonata("$run.base_model_uri"))],
            "OutputDataConfig": {"S3OutputPath": output, "KmsKeyId": self.storage.key.key_arn, "CompressionType": "NONE"},
            "ResourceConfig": {"InstanceType": training.instance_type, "InstanceCount": training.instance_count, "VolumeSizeInGB": training.volume_size_gib},
            "StoppingCondition": stopping,
            "EnableManagedSpotTraining": training.use_spot,
            # No CheckpointConfig: optimum-neuron 0.4.1 cannot resume from a checkpoint (see above).
            "RetryStrategy": {"MaximumRetryAttempts": 2},
            "Environment": {"NEURON_COMPILE_CACHE_URL": self.uris["cache"]},
            "Tags": [{"Key": "stage", "Value": self.stage.name}],
        }

    def _compile_arguments(self) -> dict[str, Any]:
        training = self.stage.training
        command = ["export", "neuron", "--model", "/opt/ml/input/data/model", "--task", "text-generation", *self.contract.neuron_export_arguments(), "--torch_dtype", "bfloat16", "/opt/ml/model"]
        return {
            "TrainingJobName": jsonata("$run.compile_job_name"),
            "RoleArn": self.job_role.role_arn,
            "AlgorithmSpecification": {"TrainingImage": self.contract.image, "TrainingInputMode": "File", "ContainerEntrypoint": ["optimum-cli"], "ContainerArguments": command},
            "InputDataConfig": [self._channel("model", jsonata("$model_uri"))],
            "OutputDataConfig": {"S3OutputPath": self.uris["models"], "KmsKeyId": self.storage.key.key_arn, "CompressionType": "NONE"},
            "ResourceConfig": {"InstanceType": training.instance_type, "InstanceCount": 1, "VolumeSizeInGB": training.volume_size_gib},
            "StoppingCondition": {"MaxRuntimeInSeconds": training.max_runtime_hours * 3600},
            "EnableNetworkIsolation": True,
            "Environment": {"HF_HUB_OFFLINE": "1"},
            "RetryStrategy": {"MaximumRetryAttempts": 1},
            "Tags": [{"Key": "stage", "Value": self.stage.name}],
        }

    def _job(self, name: str, arguments: dict[str, Any], *, job_name: str, poll_seconds: int, assign: dict[str, str], catch, failed: sfn.IChainable) -> tuple[sfn.IChainable, sfn.Choice]:
        """CreateTrainingJob (SDK integration) and a DescribeTrainingJob loop; returns (start, done-choice).

        The choice's `afterwards()` continues once the job completed; a failed or stopped job goes
        to `failed` with its FailureReason.
        """
        create = tasks.CallAwsService.jsonata(
            self,
            name,
            service="sagemaker",
            action="createTrainingJob",
            iam_resources=[self._arn("sagemaker", f"training-job/{self.job_prefix}-*")],
            parameters=arguments,
            assign=assign,
            outputs=jsonata("$states.input"),
        )
        create.add_retry(errors=["SageMaker.ResourceLimitExceededException", "SageMaker.ThrottlingException"], interval=cdk.Duration.seconds(60), max_attempts=3, backoff_rate=2)
        wait = sfn.Wait.jsonata(self, f"{name}Wait", time=sfn.WaitTime.duration(cdk.Duration.seconds(poll_seconds)))
        describe = tasks.CallAwsService.jsonata(
            self,
            f"{name}Status",
            service="sagemaker",
            action="describeTrainingJob",
            iam_resources=[self._arn("sagemaker", f"training-job/{self.job_prefix}-*")],
            parameters={"TrainingJobName": jsonata(job_name)},
            outputs=jsonata("{'status': $states.result.TrainingJobStatus, 'secondary': $states.result.SecondaryStatus, 'reason': $states.result.FailureReason}"),
        )
        describe.add_retry(errors=["SageMaker.ThrottlingException", "SageMaker.SageMakerException"], interval=cdk.Duration.seconds(30), max_attempts=5, backoff_rate=2)
        for state in (create, describe):
            catch(state)
        job_failed = sfn.Pass.jsonata(
            self,
            f"{name}Failed",
            outputs={"Error": "TrainingJobFailed", "Cause": jsonata(f"{job_name} & ' ' & $states.input.status & ': ' & ($exists($states.input.reason) ? $states.input.reason : 'no reason given')")},
        )
        job_failed.next(failed)
        choice = (
            sfn.Choice.jsonata(self, f"{name}Done?")
            .when(sfn.Condition.jsonata(jsonata(f"$states.input.status = '{JOB_DONE}'")), sfn.Pass.jsonata(self, f"{name}Completed"))
            .when(sfn.Condition.jsonata(jsonata(f"$states.input.status in {json.dumps(JOB_FAILED)}")), job_failed)
            .otherwise(wait)
        )
        sfn.Chain.start(create).next(wait).next(describe).next(choice)
        return create, choice

    def _definition(self, cores: int) -> sfn.IChainable:
        stage = self.stage
        notify_failure = tasks.SnsPublish.jsonata(
            self,
            "NotifyFailure",
            topic=self.topic,
            subject=f"{stage.stack_prefix} model pipeline failed"[:SNS_SUBJECT_MAX],
            message=sfn.TaskInput.from_text(jsonata("$string({'execution': $states.context.Execution.Id, 'job': $states.input.job, 'error': $states.input.Error, 'cause': $states.input.Cause})")),
            outputs=jsonata("$states.input"),
        )
        failed = sfn.Fail(self, "PipelineFailed", error=jsonata("$states.input.Error"), cause=jsonata("$states.input.Cause"))
        notify_failure.next(failed)
        with_job = sfn.Pass.jsonata(self, "NameTheJob", outputs=jsonata("$merge([$states.input, {'job': $run.job_name}])"))
        with_job.next(notify_failure)

        def catch(state, *, named: bool = True) -> None:
            # The failure message names the run's job once ValidateInput has named it.
            state.add_catch(with_job if named else notify_failure, errors=["States.ALL"], outputs=jsonata("$states.errorOutput"))

        validate = tasks.LambdaInvoke.jsonata(
            self,
            "ValidateInput",
            lambda_function=self.validator.function,
            payload=sfn.TaskInput.from_text(jsonata("$states.input")),
            assign={"run": jsonata("$states.result.Payload")},
            outputs=jsonata("$states.result.Payload"),
            retry_on_service_exceptions=True,
        )
        catch(validate, named=False)

        train, trained = self._job(
            "TrainModel",
            self._training_arguments(cores),
            job_name="$run.job_name",
            poll_seconds=JOB_POLL_SECONDS,
            assign={"role": "finetuned", "model_uri": jsonata(f"'{self.uris['models'] if self.compile_in_job else self.uris['output']}' & $run.job_name & '/output/model/'")},
            catch=catch,
            failed=with_job,
        )
        compile_job, compiled = self._job(
            "CompileForInferentia2",
            self._compile_arguments(),
            job_name="$run.compile_job_name",
            poll_seconds=COMPILE_POLL_SECONDS,
            assign={"model_uri": jsonata(f"'{self.uris['models']}' & $run.compile_job_name & '/output/model/'")},
            catch=catch,
            failed=with_job,
        )
        use_base = sfn.Pass.jsonata(self, "UseBaseModel", assign={"role": "base", "model_uri": jsonata("$run.base_model_uri")})
        use_base.next(compile_job)

        register = self._register(catch)
        notify_success = tasks.SnsPublish.jsonata(
            self,
            "NotifySuccess",
            topic=self.topic,
            subject=f"{stage.stack_prefix} model version registered"[:SNS_SUBJECT_MAX],
            message=sfn.TaskInput.from_text(jsonata(
                "$string({'execution': $states.context.Execution.Id, 'job': $run.job_name, 'role': $role, 'model_package': $package_arn, "
                "'model_uri': $model_uri, 'next': " + json.dumps(self._next_step()) + "})"
            )),
        )
        catch(notify_success)
        register.next(notify_success).next(sfn.Succeed(self, "Done"))
        compiled.afterwards().next(register)
        trained.afterwards().next(register if self.compile_in_job else compile_job)

        kind = (
            sfn.Choice.jsonata(self, "CompileOnly?")
            .when(sfn.Condition.jsonata(jsonata("$run.compile_only = true")), use_base)
            .otherwise(train)
        )
        return sfn.Chain.start(validate).next(kind)

    def _next_step(self) -> str:
        if self.stage.training.auto_deploy:
            return "approved on registration: the model deployer applies it (its outcome follows on this topic)"
        return "pending approval: approve it (aws sagemaker update-model-package --model-approval-status Approved) to deploy it"

    def _register(self, catch) -> sfn.IChainable:
        package_container = {key: value for key, value in self.contract.container_definition(jsonata("$model_uri")).items() if key != "Mode"}
        register = tasks.CallAwsService.jsonata(
            self,
            "RegisterModelVersion",
            service="sagemaker",
            action="createModelPackage",
            iam_resources=[self.registry.group_arn, self.registry.packages_arn],
            parameters={
                "ModelPackageGroupName": self.registry.group_name,
                "ModelPackageDescription": jsonata("$substring($run.description, 0, 1000)"),
                "ModelApprovalStatus": "Approved" if self.stage.training.auto_deploy else "PendingManualApproval",
                "InferenceSpecification": {
                    "Containers": [package_container],
                    "SupportedContentTypes": ["application/json"],
                    "SupportedResponseMIMETypes": ["application/json"],
                    "SupportedRealtimeInferenceInstanceTypes": [self.stage.inference.instance_type],
                },
                "CustomerMetadataProperties": {
                    ROLE_PROPERTY: jsonata("$role"),
                    "JobName": jsonata("$run.job_name"),
                    "TrainingDataUri": jsonata("$run.training_data_uri"),
                    "BaseModelUri": jsonata("$run.base_model_uri"),
                    "ModelUri": jsonata("$model_uri"),
                },
            },
            assign={"package_arn": jsonata("$states.result.ModelPackageArn")},
        )
        catch(register)
        return register

    # --- cdk-nag --------------------------------------------------------------------------------

    def _acknowledge(self) -> None:
        accept_function(
            self.validator.function,
            dead_letters="the pipeline's ValidateInput task invokes it synchronously (RequestResponse): a failure fails the "
                         "execution, which the model-pipeline-failed alarm and the lifecycle topic report",
            concurrency="one invocation per model-pipeline execution, which an operator starts: a reserved pool would take "
                        "concurrency from every other function of the account at all times, and Lambda refuses any "
                        "reservation in accounts at the new-account concurrency quota",
        )
        p = ARTIFACT_PREFIXES
        data, artifacts = self.storage.training_arn_export.name, self.storage.artifacts_arn_export.name
        arn = "arn:<AWS::Partition>:{service}:<AWS::Region>:<AWS::AccountId>:{resource}"
        for rule, reason in [
            (f"Resource::{data}/*", "Jobs read the training data prefix chosen per run; the bucket holds training data only"),
            (f"Resource::{artifacts}/{p.base_models}*", "Jobs read the base model folder chosen per run (many weight and tokenizer files)"),
            (f"Resource::{artifacts}/{p.training_output}*", "Training writes the merged model under its per-run job name; the compile job reads it"),
            (f"Resource::{artifacts}/{p.neuron_cache}*", "The Neuron compile cache is many graph files shared by all runs under neuron-cache/"),
            (f"Resource::{artifacts}/{p.models}*", "The serving artifacts (compiled graphs, sharded weights) are written under models/<job>/"),
            ("Resource::*", "ecr:GetAuthorizationToken has no resource-level permission; PutMetricData is limited to /aws/sagemaker/* namespaces"),
            ("Resource::" + arn.format(service="logs", resource="log-group:/aws/sagemaker/TrainingJobs:log-stream:*"), "SageMaker names one log stream per job host at run time"),
        ]:
            acknowledge(self.job_policy, f"AwsSolutions-IAM5[{rule}]", reason)
        acknowledge(self.validator_policy, f"AwsSolutions-IAM5[Resource::{artifacts}/{p.base_models}*/config.json]", "The validator reads only the config.json of the base model folder chosen per run")
        jobs = "Resource::" + arn.format(service="sagemaker", resource=f"training-job/{self.job_prefix}-*")
        acknowledge(self.pipeline_policy, f"AwsSolutions-IAM5[{jobs}]", "Training and compile jobs get a new name per run, always with this stage's prefix")
        stack = cdk.Stack.of(self)
        function_id = stack.resolve(stack.get_logical_id(self.validator.function.node.default_child))
        default_policy = self.state_machine.role.node.find_child("DefaultPolicy").node.default_child
        for rule, reason in [
            ("Resource::*", "Step Functions log delivery (logs:*LogDelivery, DescribeResourcePolicies) and X-Ray tracing have no resource-level permissions"),
            (f"Resource::<{function_id}.Arn>:*", "LambdaInvoke's grant covers the function's versions and aliases; the function is this stack's validator"),
            (jobs, "Training and compile jobs get a new name per run, always with this stage's prefix"),
            (self.registry.packages_finding, "Each run registers a new version inside this stage's model package group"),
        ]:
            acknowledge(default_policy, f"AwsSolutions-IAM5[{rule}]", reason)
