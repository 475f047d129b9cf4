"""The model pipeline: the synthesized state machine run offline (real JSONata engine), its IAM, the
input rules' environment (the rules themselves and the start script: test_validate_training_input.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.sfn_interpreter import Interpreter, ServiceError, Services, definition_from_template

ROOT = Path(__file__).resolve().parents[1]
SPEC = json.loads((ROOT / "model_artifacts" / "training" / "hyperparameters.json").read_text())
BUCKET, DATA_BUCKET = "ragprod-artifacts-1a2b3c", "ragprod-training-4d5e6f"


def resources(template: dict, kind: str) -> dict:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def statements(template: dict) -> list[dict]:
    found = []
    for policy in resources(template, "AWS::IAM::Policy").values():
        found.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return found


def actions_of(statement: dict) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def imports(template: dict) -> dict[str, str]:
    names = {value for value in json.dumps(template).split('"') if ":Exports" in value}
    return {name: BUCKET if "RefArtifacts" in name else DATA_BUCKET if "RefTraining" in name else f"<{name}>" for name in names}


@pytest.fixture(scope="module")
def manual(synth):
    """prod: on-demand training, new versions wait for approval."""
    return synth.template("RagProd-Training")


@pytest.fixture(scope="module")
def manual_states(manual):
    return definition_from_template(manual, "Pipeline", imports=imports(manual))["States"]


@pytest.fixture(scope="module")
def pipeline(manual):
    return definition_from_template(manual, "Pipeline", imports=imports(manual))


@pytest.fixture(scope="module")
def dev_pipeline(synth):
    template = synth.template("RagDev-Training")
    return definition_from_template(template, "Pipeline", imports=imports(template))


def prepared(compile_only: bool = False) -> dict:
    """What the validator Lambda returns (rules.prepare)."""
    base = {"job_name": "ragprod-ft-20261130-080000-abc123", "compile_job_name": "ragprod-ft-20261130-080000-abc123-inf2",
            "model_name": "ragprod-ft-20261130-080000-abc123", "endpoint_config_name": "ragprod-ft-20261130-080000-abc123",
            "base_model_prefix": "base-models/qwen3-1.7b/", "base_model_uri": f"s3://{BUCKET}/base-models/qwen3-1.7b/",
            "checks": {"data_files": 0 if compile_only else 1, "data_bytes": 10, "model_type": "qwen3"}}
    if compile_only:
        return {**base, "compile_only": True, "training_data_prefix": None, "training_data_uri": "none", "hyperparameters": {}, "description": "Base model base-models/qwen3-1.7b/ compiled for Inferentia2"}
    return {**base, "compile_only": False, "training_data_prefix": "datasets/v1/", "training_data_uri": f"s3://{DATA_BUCKET}/datasets/v1/",
            "hyperparameters": {"learning_rate": "0.0001"}, "description": "Fine-tuned from base-models/qwen3-1.7b/ on datasets/v1/"}


def aws(payload: dict, *statuses: str) -> Services:
    services = Services()
    services.answer("lambda:invoke", {"Payload": payload, "StatusCode": 200})
    services.default("sagemaker:createTrainingJob", lambda arguments: {"TrainingJobArn": "arn:aws:sagemaker:us-east-1:111122223333:training-job/" + arguments["TrainingJobName"]})
    for status in statuses:
        services.answer("sagemaker:describeTrainingJob", {"TrainingJobStatus": status, "SecondaryStatus": status, **({"FailureReason": "AlgorithmError: out of memory"} if status == "Failed" else {})})
    services.default("sagemaker:createModelPackage", lambda arguments: {"ModelPackageArn": "arn:aws:sagemaker:us-east-1:111122223333:model-package/ragprod-models-x/3"})
    services.default("sns:publish", lambda arguments: {"MessageId": "m"})
    return services


# --- the state machine, run ----------------------------------------------------------------------


def test_a_training_run_trains_then_compiles_in_the_serving_image_and_registers_a_finetuned_version(jsonata, pipeline):
    services = aws(prepared(), "InProgress", "Completed", "Completed")
    result = Interpreter(jsonata, pipeline, services).run({"training_data_prefix": "datasets/v1/"})
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    train, compile_ = services.called("sagemaker:createTrainingJob")
    assert train["TrainingJobName"] == "ragprod-ft-20261130-080000-abc123"
    assert train["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{DATA_BUCKET}/datasets/v1/"
    assert train["OutputDataConfig"] == {"S3OutputPath": f"s3://{BUCKET}/training-output/", "KmsKeyId": train["OutputDataConfig"]["KmsKeyId"], "CompressionType": "NONE"}
    hyper = train["HyperParameters"]
    assert hyper["learning_rate"] == "0.0001" and hyper["compile_for_inference"] == "false" and hyper["serving_tensor_parallel_size"] == "2"
    assert all(isinstance(value, str) for value in hyper.values())
    assert compile_["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{BUCKET}/training-output/ragprod-ft-20261130-080000-abc123/output/model/"
    (register,) = services.called("sagemaker:createModelPackage")
    assert register["ModelApprovalStatus"] == "PendingManualApproval"
    assert register["CustomerMetadataProperties"]["Role"] == "finetuned"
    source = register["InferenceSpecification"]["Containers"][0]["ModelDataSource"]["S3DataSource"]
    assert source["S3Uri"] == f"s3://{BUCKET}/models/ragprod-ft-20261130-080000-abc123-inf2/output/model/"
    message = json.loads(services.called("sns:publish")[0]["Message"])
    assert message["role"] == "finetuned" and "pending approval" in message["next"]
    assert result.waits == 3  # one poll while in progress, one per completed job


def test_a_compile_only_run_registers_the_base_model_as_the_base_version(jsonata, pipeline):
    services = aws(prepared(compile_only=True), "Completed")
    result = Interpreter(jsonata, pipeline, services).run({"compile_only": True})
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    (compile_,) = services.called("sagemaker:createTrainingJob")
    assert compile_["TrainingJobName"].endswith("-inf2")
    assert compile_["AlgorithmSpecification"]["ContainerEntrypoint"] == ["optimum-cli"]
    assert compile_["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{BUCKET}/base-models/qwen3-1.7b/"
    (register,) = services.called("sagemaker:createModelPackage")
    assert register["CustomerMetadataProperties"]["Role"] == "base"
    assert register["CustomerMetadataProperties"]["TrainingDataUri"] == "none"
    assert "TrainModel" not in result.path


def test_dev_registers_approved_so_the_deployer_takes_over(jsonata, dev_pipeline):
    payload = {key: value.replace("ragprod", "ragdev") if isinstance(value, str) else value for key, value in prepared().items()}
    services = aws(payload, "Completed", "Completed")
    result = Interpreter(jsonata, dev_pipeline, services).run({"training_data_prefix": "datasets/v1/"})
    assert result.status == "SUCCEEDED"
    train = services.called("sagemaker:createTrainingJob")[0]
    assert train["EnableManagedSpotTraining"] is True
    assert train["StoppingCondition"] == {"MaxRuntimeInSeconds": 12 * 3600, "MaxWaitTimeInSeconds": 30 * 3600}
    assert services.called("sagemaker:createModelPackage")[0]["ModelApprovalStatus"] == "Approved"
    assert "model deployer applies it" in json.loads(services.called("sns:publish")[0]["Message"])["next"]
    assert not [name for name, _ in services.calls if name.startswith(("sagemaker:createEndpoint", "sagemaker:updateEndpoint", "cloudformation:"))]


def test_a_failed_job_is_reported_with_its_reason_and_fails_the_execution(jsonata, pipeline):
    services = aws(prepared(), "Failed")
    result = Interpreter(jsonata, pipeline, services).run({"training_data_prefix": "datasets/v1/"})
    assert result.status == "FAILED" and result.error == "TrainingJobFailed"
    assert "out of memory" in result.cause
    message = json.loads(services.called("sns:publish")[0]["Message"])
    assert message["job"] == "ragprod-ft-20261130-080000-abc123" and "out of memory" in message["cause"]
    assert not services.called("sagemaker:createModelPackage")


def test_a_failed_compile_job_is_reported_with_its_job_name(jsonata, pipeline):
    services = aws(prepared(compile_only=True), "Failed")
    result = Interpreter(jsonata, pipeline, services).run({"compile_only": True})
    assert result.status == "FAILED" and result.error == "TrainingJobFailed"
    assert result.cause.startswith("ragprod-ft-20261130-080000-abc123-inf2 Failed: ")
    assert not services.called("sagemaker:createModelPackage")


def test_an_invalid_request_stops_before_any_job(jsonata, pipeline):
    services = Services()
    services.answer("lambda:invoke", ServiceError("InvalidTrainingInput", '["training_data_prefix: None must be a key prefix"]'))
    services.default("sns:publish", lambda arguments: {"MessageId": "m"})
    result = Interpreter(jsonata, pipeline, services).run({})
    assert result.status == "FAILED" and result.error == "InvalidTrainingInput"
    assert not services.called("sagemaker:createTrainingJob")
    assert "training_data_prefix" in json.loads(services.called("sns:publish")[0]["Message"])["cause"]


def test_a_refused_create_training_job_is_caught_and_reported(jsonata, pipeline):
    services = aws(prepared())
    services.answer("sagemaker:createTrainingJob", ServiceError("SageMaker.SageMakerException", "ResourceLimitExceeded: ml.trn1.2xlarge for training job usage: 0"))
    result = Interpreter(jsonata, pipeline, services).run({"training_data_prefix": "datasets/v1/"})
    assert result.status == "FAILED" and "ResourceLimitExceeded" in result.cause


def test_every_jsonata_expression_of_the_pipeline_was_evaluated_by_the_runs_above(pipeline, dev_pipeline):
    from tests.sfn_interpreter import expressions_in

    for machine in (pipeline, dev_pipeline):
        untried = expressions_in(machine) - Interpreter.evaluated
        assert not untried, f"no test evaluated: {sorted(untried)}"


# --- the state machine, as synthesized -----------------------------------------------------------


def test_jobs_use_the_sdk_integration_with_every_field_and_no_checkpoints(manual_states):
    train = manual_states["TrainModel"]
    assert train["Resource"].endswith(":states:::aws-sdk:sagemaker:createTrainingJob")  # not the optimized .sync
    args = train["Arguments"]
    assert args["ResourceConfig"]["InstanceType"] == "ml.trn1.2xlarge"
    assert "CheckpointConfig" not in args  # optimum-neuron 0.4.1 cannot resume: nothing to sync
    assert args["Environment"]["NEURON_COMPILE_CACHE_URL"].endswith("/neuron-cache/")
    assert args["OutputDataConfig"]["CompressionType"] == "NONE"
    assert args["EnableManagedSpotTraining"] is False and args["RetryStrategy"] == {"MaximumRetryAttempts": 2}
    assert "huggingface-pytorch-training-neuronx:" in args["AlgorithmSpecification"]["TrainingImage"]
    assert not any(state.get("Resource", "").endswith(".sync") for state in manual_states.values())


def test_compile_job_uses_the_serving_image_and_the_contract_shape(manual_states):
    from stacks import serving_contract
    from stacks.config import InferenceConfig
    from stacks.training_stack import compile_in_training_job

    assert compile_in_training_job() is False
    assert compile_in_training_job("0.4.4", "0.4.4") is True
    args = manual_states["CompileForInferentia2"]["Arguments"]
    assert args["AlgorithmSpecification"]["ContainerEntrypoint"] == ["optimum-cli"]
    command = args["AlgorithmSpecification"]["ContainerArguments"]
    assert command[:2] == ["export", "neuron"] and command[-1] == "/opt/ml/model"
    assert " ".join(serving_contract.neuron_export_arguments(InferenceConfig())) in " ".join(command)
    assert args["OutputDataConfig"]["S3OutputPath"].endswith("/models/")  # the endpoint role reads models/ only
    assert args["EnableNetworkIsolation"] is True


def test_registry_is_retained_with_a_name_that_a_redeploy_never_finds_taken(manual):
    (group,) = resources(manual, "AWS::SageMaker::ModelPackageGroup").values()
    assert group["DeletionPolicy"] == "Retain"
    name = group["Properties"]["ModelPackageGroupName"]["Fn::Join"]
    assert name[1][0] == "ragprod-models" and name[1][1] == {"Fn::Select": [2, {"Fn::Split": ["/", {"Ref": "AWS::StackId"}]}]}


def test_every_task_fails_into_the_notification(manual_states):
    tasks = [name for name, state in manual_states.items() if state["Type"] == "Task" and not name.startswith("Notify")]
    assert set(tasks) == {"ValidateInput", "TrainModel", "TrainModelStatus", "CompileForInferentia2", "CompileForInferentia2Status", "RegisterModelVersion"}
    for name in tasks + ["NotifySuccess"]:
        assert any(c["ErrorEquals"] == ["States.ALL"] and c["Next"] in ("NotifyFailure", "NameTheJob") for c in manual_states[name]["Catch"]), name
    assert manual_states["NotifyFailure"]["Next"] == "PipelineFailed"


def test_pipeline_and_deployer_log_groups_are_kept_per_stage_and_never_collide(synth):
    for stage, policy in (("dev", "Delete"), ("prod", "Retain")):
        groups = resources(synth.template(f"Rag{stage.capitalize()}-Training"), "AWS::Logs::LogGroup")
        named = [g for g in groups.values() if "LogGroupName" in g["Properties"]]
        assert len(named) == 2
        for group in named:
            parts = group["Properties"]["LogGroupName"]["Fn::Join"][1]
            assert parts[0].startswith("/aws/vendedlogs/states/") and parts[1]["Fn::Select"][1]["Fn::Split"][1] == {"Ref": "AWS::StackId"}
            assert group["DeletionPolicy"] == policy


def test_every_state_machine_has_an_alarm_on_failed_executions(synth):
    for stage in ("dev", "prod"):
        template = synth.template(f"Rag{stage.capitalize()}-Training")
        machines = resources(template, "AWS::StepFunctions::StateMachine")
        alarms = resources(template, "AWS::CloudWatch::Alarm")
        watched = {m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Ref"] for a in alarms.values() for m in a["Properties"].get("Metrics", []) if "MetricStat" in m}
        assert watched == set(machines)
        for alarm in alarms.values():
            assert alarm["Properties"]["AlarmActions"] and alarm["Properties"]["Threshold"] == 1


# --- IAM -----------------------------------------------------------------------------------------


def test_pipeline_iam_is_scoped_to_prefixes_roles_and_repositories(manual):
    found = statements(manual)
    text = json.dumps(found)
    create = [s for s in found if "sagemaker:CreateTrainingJob" in actions_of(s)]
    assert create and all("training-job/ragprod-ft-*" in json.dumps(s["Resource"]) for s in create)
    passes = [s for s in found if "iam:PassRole" in actions_of(s)]
    assert {json.dumps(s["Condition"]) for s in passes} == {json.dumps({"StringEquals": {"iam:PassedToService": service}}) for service in ("sagemaker.amazonaws.com", "cloudformation.amazonaws.com")}
    pulls = [s for s in found if "ecr:BatchGetImage" in actions_of(s)]
    assert len(pulls) == 1 and "huggingface-pytorch-training-neuronx" in json.dumps(pulls[0]) and "huggingface-vllm-inference-neuronx" in json.dumps(pulls[0])
    for statement in found:
        if statement["Resource"] == "*":
            assert set(actions_of(statement)) <= {"ecr:GetAuthorizationToken", "cloudwatch:PutMetricData", "xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets", "logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery", "logs:DeleteLogDelivery", "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies", "logs:DescribeLogGroups"}, statement
    assert "s3:*" not in text and '"sagemaker:*"' not in text and "checkpoints/" not in text


def test_deployer_may_update_only_its_stage_inference_stack_as_the_bootstrap_role(manual):
    found = statements(manual)
    lower = lambda statement: [action.lower() for action in actions_of(statement)]  # noqa: E731 (IAM actions are case-insensitive)
    updates = [s for s in found if "cloudformation:updatestack" in lower(s)]
    assert updates and all(":stack/RagProd-Inference/*" in json.dumps(s["Resource"]) for s in updates)
    (passed,) = [s for s in found if s.get("Condition", {}).get("StringEquals", {}).get("iam:PassedToService") == "cloudformation.amazonaws.com"]
    assert passed["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/cdk-hnb659fds-cfn-exec-role-${AWS::AccountId}-${AWS::Region}"}
    writes = [s for s in found if "ssm:putparameter" in lower(s)]
    assert writes and all("parameter/rag/prod/serving/" in json.dumps(s["Resource"]) for s in writes)
    assert not [s for s in found if any(a.startswith(("sagemaker:updateendpoint", "sagemaker:createendpoint")) for a in lower(s))]


def test_approval_rule_starts_the_deployer_for_approved_versions_of_this_registry(manual):
    (rule,) = resources(manual, "AWS::Events::Rule").values()
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.sagemaker"] and pattern["detail-type"] == ["SageMaker Model Package State Change"]
    assert pattern["detail"]["ModelApprovalStatus"] == ["Approved"]
    assert "Fn::Join" in pattern["detail"]["ModelPackageGroupName"][0]
    (target,) = rule["Properties"]["Targets"]
    assert '"action":"deploy"' in target["InputTransformer"]["InputTemplate"].replace(" ", "") and "<detail-ModelPackageArn>" in target["InputTransformer"]["InputTemplate"]


def test_an_approval_eventbridge_cannot_deliver_is_kept_and_alarmed(manual):
    (rule,) = resources(manual, "AWS::Events::Rule").values()
    (target,) = rule["Properties"]["Targets"]
    (queue_id,) = [name for name in resources(manual, "AWS::SQS::Queue") if name.startswith("DeployerApprovalDeadLetters")]
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [queue_id, "Arn"]}}
    queue = manual["Resources"][queue_id]
    assert queue["DeletionPolicy"] == "Retain" and queue["Properties"]["SqsManagedSseEnabled"] is True  # prod keeps what it holds
    (policy,) = [p["Properties"] for p in resources(manual, "AWS::SQS::QueuePolicy").values() if p["Properties"]["Queues"] == [{"Ref": queue_id}]]
    sends = [s for s in policy["PolicyDocument"]["Statement"] if s.get("Principal") == {"Service": "events.amazonaws.com"}]
    assert sends and all(s["Condition"]["ArnEquals"]["aws:SourceArn"] == {"Fn::GetAtt": [next(iter(resources(manual, "AWS::Events::Rule"))), "Arn"]} for s in sends)
    (alarm,) = [a["Properties"] for a in resources(manual, "AWS::CloudWatch::Alarm").values() if a["Properties"]["AlarmName"] == "RagProd-model-approval-undelivered"]
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue_id, "QueueName"]}}]
    assert alarm["Threshold"] == 1 and alarm["AlarmActions"]


def test_serving_record_is_created_if_missing_and_kept_on_retained_stages(synth):
    for stage, retain in (("dev", "false"), ("prod", "true")):
        (record,) = resources(synth.template(f"Rag{stage.capitalize()}-Training"), "Custom::ServingRecord").values()
        assert record["Properties"]["Parameters"] == {f"/rag/{stage}/serving/base": "none", f"/rag/{stage}/serving/finetuned": "none", f"/rag/{stage}/serving/endpoint": "on"}
        assert record["Properties"]["RetainOnDelete"] == retain
        assert not resources(synth.template(f"Rag{stage.capitalize()}-Training"), "AWS::SSM::Parameter")  # CloudFormation would overwrite the value


# --- the input rules as deployed (their logic: tests/test_validate_training_input.py) ------------

from validate_training_input import rules  # noqa: E402


def test_lambda_environment_matches_the_rules(manual):
    functions = resources(manual, "AWS::Lambda::Function")
    (env,) = [f["Properties"]["Environment"]["Variables"] for f in functions.values() if "HYPERPARAMETER_SPEC" in f["Properties"]["Environment"]["Variables"]]
    assert json.loads(env["HYPERPARAMETER_SPEC"]) == rules.user_spec(SPEC)
    assert env["JOB_PREFIX"] == "ragprod-ft" and env["NEURON_CORES"] == "2" and env["BASE_MODELS_ROOT"] == "base-models/"


def test_power_schedule_starts_the_deployer_from_config():
    import aws_cdk as cdk

    from stacks.config import load_config
    from stacks.storage_stack import StorageStack
    from stacks.training_stack import TrainingStack
    from tests.conftest import cdk_json_context

    settings = {"inference": {"power_on_schedule": "cron(0 8 ? * MON-FRI *)", "power_off_schedule": "cron(0 20 ? * MON-FRI *)", "schedule_timezone": "Europe/Paris"}}
    stage = load_config({"stages": {"dev": settings}}).stages["dev"]
    app = cdk.App(context={key: value for key, value in cdk_json_context().items() if key != "stages"})
    stack = TrainingStack(app, "RagDev-Training", stage=stage, storage=StorageStack(app, "RagDev-Storage", stage=stage))
    template = app.synth().get_stack_by_name("RagDev-Training").template
    schedules = {r["Properties"]["ScheduleExpression"]: r["Properties"] for r in resources(template, "AWS::Scheduler::Schedule").values()}
    deployer = stack.resolve(stack.deployer.state_machine.state_machine_arn)
    for expression, power in (("cron(0 8 ? * MON-FRI *)", "on"), ("cron(0 20 ? * MON-FRI *)", "off")):
        schedule = schedules[expression]
        assert schedule["ScheduleExpressionTimezone"] == "Europe/Paris" and schedule["FlexibleTimeWindow"] == {"Mode": "OFF"}
        assert schedule["Target"]["Arn"] == deployer
        assert json.loads(schedule["Target"]["Input"]) == {"action": "power", "power": power, "source": "schedule"}
    role_policy = [s for s in statements(template) if s["Action"] == "states:StartExecution" and s["Resource"] == deployer]
    assert role_policy
