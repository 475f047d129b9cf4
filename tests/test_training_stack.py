"""The fine-tuning pipeline: the state machine as synthesized, its IAM, the input rules, the start script."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

ROOT = Path(__file__).resolve().parents[1]
SPEC = json.loads((ROOT / "model_artifacts" / "training" / "hyperparameters.json").read_text())


def render(value) -> str:
    """A DefinitionString with its Fn::Join parts flattened (tokens shown as <ref>)."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        return "".join(render(part) for part in value["Fn::Join"][1])
    return "<ref>"


def resources(template: dict, kind: str) -> dict:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def definition(template: dict) -> dict:
    (machine,) = resources(template, "AWS::StepFunctions::StateMachine").values()
    text = render(machine["Properties"]["DefinitionString"])
    return json.loads(text)  # every token sits inside a JSON string of the definition


def statements(template: dict) -> list[dict]:
    found = []
    for policy in resources(template, "AWS::IAM::Policy").values():
        found.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return found


def actions_of(statement: dict) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


@pytest.fixture(scope="module")
def manual(synth):
    """prod: on-demand training, new versions wait for approval."""
    return synth.template("RagProd-Training")


@pytest.fixture(scope="module")
def manual_states(manual):
    return definition(manual)["States"]


@pytest.fixture(scope="module")
def deploying(synth):
    """dev: managed spot training and auto-deploy to the stage's endpoint."""
    return synth.template("RagDev-Training"), synth.stage("dev").inference


# --- the state machine ---------------------------------------------------------------------------


def test_pipeline_states_and_order(manual_states, manual):
    (machine,) = resources(manual, "AWS::StepFunctions::StateMachine").values()
    assert machine["Properties"]["TracingConfiguration"] == {"Enabled": True}
    assert machine["Properties"]["LoggingConfiguration"]["Level"] == "ALL"
    assert manual_states["ValidateInput"]["Next"] == "TrainModel"
    assert manual_states["TrainModel"]["Next"] == "CompileForInferentia2"  # versions differ today
    assert manual_states["CompileForInferentia2"]["Next"] == "RegisterModelVersion"
    assert manual_states["RegisterModelVersion"]["Next"] == "NotifySuccess"
    assert manual_states["NotifySuccess"]["Next"] == "Done"
    assert not {"CreateModel", "UpdateEndpoint"} & set(manual_states)  # prod waits for approval


def test_training_job_on_trainium_with_checkpoints_cache_and_uncompressed_output(manual_states):
    job = manual_states["TrainModel"]
    assert job["Resource"].endswith(":states:::sagemaker:createTrainingJob.sync")
    args = job["Arguments"]
    assert args["ResourceConfig"]["InstanceType"].startswith("ml.trn1")
    assert args["ResourceConfig"]["InstanceType"] == "ml.trn1.2xlarge"
    assert args["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"
    assert "/checkpoints/' & $run.job_name" in args["CheckpointConfig"]["S3Uri"]
    assert args["Environment"]["NEURON_COMPILE_CACHE_URL"].endswith("/neuron-cache/")
    assert args["OutputDataConfig"]["CompressionType"] == "NONE"
    assert args["StoppingCondition"] == {"MaxRuntimeInSeconds": 24 * 3600}
    assert args["EnableManagedSpotTraining"] is False
    assert "huggingface-pytorch-training-neuronx:" in args["AlgorithmSpecification"]["TrainingImage"]
    hyper = args["HyperParameters"]
    for fragment in ('"sagemaker_program": "train.py"', '"sagemaker_torch_distributed_enabled": "true"', '"serving_batch_size": "4"', '"serving_sequence_length": "4096"', '"serving_tensor_parallel_size": "2"', '"compile_for_inference": "false"'):
        assert fragment in hyper
    assert {c["ChannelName"] for c in args["InputDataConfig"]} == {"train", "base_model"}


def test_compile_job_uses_the_serving_image_and_the_contract_shape(manual_states):
    from stacks import serving_contract
    from stacks.training_stack import compile_in_training_job

    assert compile_in_training_job() is False
    assert compile_in_training_job("0.4.4", "0.4.4") is True
    args = manual_states["CompileForInferentia2"]["Arguments"]
    assert args["AlgorithmSpecification"]["ContainerEntrypoint"] == ["optimum-cli"]
    command = args["AlgorithmSpecification"]["ContainerArguments"]
    assert command[:2] == ["export", "neuron"] and command[-1] == "/opt/ml/model"
    assert " ".join(serving_contract.neuron_export_arguments(__import__("stacks.config", fromlist=["InferenceConfig"]).InferenceConfig())) in " ".join(command)
    assert args["OutputDataConfig"]["S3OutputPath"].endswith("/models/")  # the endpoint role reads models/ only
    assert args["EnableNetworkIsolation"] is True


def test_registry_step_registers_pending_approval_in_the_stage_group(manual, manual_states):
    (group,) = resources(manual, "AWS::SageMaker::ModelPackageGroup").values()
    assert group["Properties"]["ModelPackageGroupName"] == "RagProd-finetuned"
    register = manual_states["RegisterModelVersion"]
    assert register["Resource"].endswith(":states:::aws-sdk:sagemaker:createModelPackage")
    args = register["Arguments"]
    assert args["ModelPackageGroupName"] == "RagProd-finetuned"
    assert args["ModelApprovalStatus"] == "PendingManualApproval"
    (container,) = args["InferenceSpecification"]["Containers"]
    assert container["ModelDataSource"]["S3DataSource"]["CompressionType"] == "None"
    assert container["ModelDataSource"]["S3DataSource"]["S3Uri"] == "{% $model_uri %}"


def test_every_task_fails_into_the_notification(manual_states):
    tasks = [name for name, state in manual_states.items() if state["Type"] == "Task" and not name.startswith("Notify")]
    assert set(tasks) == {"ValidateInput", "TrainModel", "CompileForInferentia2", "RegisterModelVersion"}
    for name in tasks + ["NotifySuccess"]:
        assert any(c["ErrorEquals"] == ["States.ALL"] and c["Next"] == "NotifyFailure" for c in manual_states[name]["Catch"]), name
    assert manual_states["NotifyFailure"]["Resource"].endswith(":states:::sns:publish")
    assert manual_states["NotifyFailure"]["Next"] == "PipelineFailed"
    assert manual_states["PipelineFailed"]["Type"] == "Fail"


def test_deploy_branch_with_spot_and_wait_loop(deploying):
    template, inference = deploying
    states = definition(template)["States"]
    train = states["TrainModel"]["Arguments"]
    assert train["EnableManagedSpotTraining"] is True
    assert train["StoppingCondition"] == {"MaxRuntimeInSeconds": 24 * 3600, "MaxWaitTimeInSeconds": 30 * 3600}
    assert train["ResourceConfig"]["InstanceType"] == "ml.trn1.2xlarge"
    assert states["RegisterModelVersion"]["Arguments"]["ModelApprovalStatus"] == "Approved"
    assert states["RegisterModelVersion"]["Next"] == "CreateModel"
    assert states["CreateModel"]["Next"] == "CreateEndpointConfig"
    assert states["CreateEndpointConfig"]["Next"] == "UpdateEndpoint"
    assert states["UpdateEndpoint"]["Arguments"]["EndpointName"] == inference.endpoint_name
    assert states["UpdateEndpoint"]["Arguments"]["RetainDeploymentConfig"] is True
    assert states["UpdateEndpoint"]["Next"] == "WaitForEndpoint"
    assert states["WaitForEndpoint"]["Next"] == "DescribeEndpoint"
    choice = states["EndpointInService?"]
    assert choice["Default"] == "WaitForEndpoint"
    targets = {rule["Next"] for rule in choice["Choices"]}
    assert targets == {"Deployed", "UpdateRolledBack"}
    assert states["UpdateRolledBack"]["Next"] == "NotifyFailure"
    assert states["Deployed"]["Next"] == "NotifySuccess"
    variant = states["CreateEndpointConfig"]["Arguments"]["ProductionVariants"][0]
    assert variant["VariantName"] == "AllTraffic" and variant["InstanceType"] == "ml.inf2.xlarge"
    model = states["CreateModel"]["Arguments"]
    assert model["PrimaryContainer"]["Environment"]["SM_ON_BATCH_SIZE"] == "4"
    assert model["EnableNetworkIsolation"] is True
    for name in ("CreateModel", "CreateEndpointConfig", "UpdateEndpoint", "DescribeEndpoint"):
        assert any(c["Next"] == "NotifyFailure" for c in states[name]["Catch"]), name


def test_auto_deploy_without_endpoint_fails_at_synth_naming_the_key():
    import aws_cdk as cdk

    from stacks.config import ConfigError, InferenceConfig, ServingConfig, StageConfig, TrainingConfig
    from stacks.storage_stack import StorageStack
    from stacks.training_stack import TrainingStack

    class NoEndpoint:
        endpoint_name = None
        execution_role = None

    stage = StageConfig(name="noep", training=TrainingConfig(auto_deploy=True), inference=InferenceConfig(enabled=False), serving=ServingConfig(default_generator="bedrock"))
    app = cdk.App(context={k: v for k, v in json.loads((ROOT / "cdk.json").read_text())["context"].items() if k != "stages"})
    storage = StorageStack(app, "S", stage=stage)
    with pytest.raises(ConfigError, match=r"stages\.noep\.training\.auto_deploy"):
        TrainingStack(app, "T", stage=stage, storage=storage, deploy_target=NoEndpoint())


# --- IAM -----------------------------------------------------------------------------------------


def test_pipeline_iam_is_scoped_to_prefixes_roles_and_repositories(manual):
    found = statements(manual)
    text = json.dumps(found)
    create = [s for s in found if "sagemaker:CreateTrainingJob" in actions_of(s)]
    assert create and all("training-job/ragprod-ft-*" in json.dumps(s["Resource"]) for s in create)
    passes = [s for s in found if "iam:PassRole" in actions_of(s)]
    assert passes and all(s["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}} for s in passes)
    pulls = [s for s in found if "ecr:BatchGetImage" in actions_of(s)]
    assert len(pulls) == 1 and "huggingface-pytorch-training-neuronx" in json.dumps(pulls[0]) and "huggingface-vllm-inference-neuronx" in json.dumps(pulls[0])
    for statement in found:
        if statement["Resource"] == "*":
            assert set(actions_of(statement)) <= {"ecr:GetAuthorizationToken", "cloudwatch:PutMetricData", "xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets", "logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery", "logs:DeleteLogDelivery", "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies", "logs:DescribeLogGroups"}, statement
    assert "s3:*" not in text and '"sagemaker:*"' not in text


# --- input rules (the Lambda's and the start script's) ------------------------------------------

import validate_training_input.handler as handler  # noqa: E402
from validate_training_input import rules  # noqa: E402

SETTINGS = rules.Settings(
    training_bucket="train-bkt",
    artifacts_bucket="art-bkt",
    base_models_root="base-models/",
    default_base_model_prefix="base-models/qwen3-1.7b/",
    job_prefix="ragdev-ft",
    neuron_cores=2,
    spec=rules.user_spec(SPEC),
)


def test_user_spec_excludes_pipeline_keys_and_help():
    spec = rules.user_spec(SPEC)
    assert "serving_batch_size" not in spec and "compile_for_inference" not in spec
    assert "learning_rate" in spec and "help" not in spec["learning_rate"]
    assert len(json.dumps(spec, separators=(",", ":"))) < 2500  # fits the Lambda environment (4 KB total)


def test_valid_request_is_normalized_to_strings():
    out = rules.validate_request({"training_data_prefix": "datasets/v1/", "hyperparameters": {"learning_rate": 0.0001, "packing": False, "lora_r": 8, "lr_scheduler_type": "linear"}}, SETTINGS)
    assert out["base_model_prefix"] == "base-models/qwen3-1.7b/"
    assert out["hyperparameters"] == {"learning_rate": "0.0001", "packing": "false", "lora_r": "8", "lr_scheduler_type": "linear"}


@pytest.mark.parametrize(
    "request_, fragment",
    [
        ({"training_data_prefix": "s3://b/x/"}, "training_data_prefix"),
        ({"training_data_prefix": "data"}, "training_data_prefix"),
        ({"training_data_prefix": "d/", "base_model_prefix": "models/x/"}, "base_model_prefix"),
        ({"training_data_prefix": "d/", "hyperparameters": {"serving_batch_size": 8}}, "set by the pipeline"),
        ({"training_data_prefix": "d/", "hyperparameters": {"lora_r": 0}}, "outside"),
        ({"training_data_prefix": "d/", "hyperparameters": {"lora_r": 2.5}}, "integer"),
        ({"training_data_prefix": "d/", "hyperparameters": {"packing": "maybe"}}, "true or false"),
        ({"training_data_prefix": "d/", "hyperparameters": {"tensor_parallel_size": 4}}, "must divide"),
        ({"training_data_prefix": "d/", "extra": 1}, "unknown key"),
        ([], "JSON object"),
    ],
)
def test_invalid_requests_name_the_problem(request_, fragment):
    with pytest.raises(rules.InputError) as error:
        rules.validate_request(request_, SETTINGS)
    assert fragment in str(error.value)


def test_job_names_are_valid_and_prefixed():
    names = rules.job_names("ragproduction1234-ft", now=datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc), token="abc123")
    assert names["job_name"] == "ragproduction1234-ft-20250102-030405-abc123"
    assert all(len(n) <= 63 and n.startswith("ragproduction1234-ft-") for n in names.values())


def s3_stub(s3, *, data_keys, model_keys, config=b'{"model_type": "qwen3"}'):
    stub = Stubber(s3)
    stub.add_response("list_objects_v2", {"Contents": [{"Key": k, "Size": 10} for k in data_keys], "IsTruncated": False}, {"Bucket": "train-bkt", "Prefix": "datasets/v1/"})
    stub.add_response("list_objects_v2", {"Contents": [{"Key": "base-models/qwen3-1.7b/" + k} for k in model_keys], "IsTruncated": False}, {"Bucket": "art-bkt", "Prefix": "base-models/qwen3-1.7b/"})
    if "config.json" in model_keys:
        stub.add_response("get_object", {"Body": StreamingBody(io.BytesIO(config), len(config))}, {"Bucket": "art-bkt", "Key": "base-models/qwen3-1.7b/config.json"})
    return stub


@pytest.fixture
def s3():
    import botocore.session

    return botocore.session.get_session().create_client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def test_handler_prepares_the_run(s3):
    with s3_stub(s3, data_keys=["datasets/v1/a.jsonl", "datasets/v1/readme.txt"], model_keys=["config.json", "model.safetensors", "tokenizer.json"]):
        out = handler.handle({"training_data_prefix": "datasets/v1/"}, SETTINGS, s3)
    assert out["training_data_uri"] == "s3://train-bkt/datasets/v1/"
    assert out["base_model_uri"] == "s3://art-bkt/base-models/qwen3-1.7b/"
    assert out["checks"] == {"data_files": 1, "data_bytes": 10, "model_type": "qwen3"}
    assert out["compile_job_name"] == out["job_name"] + "-inf2"


def test_handler_rejects_missing_data_and_unsupported_model(s3):
    with s3_stub(s3, data_keys=["datasets/v1/notes.txt"], model_keys=["config.json", "tokenizer.json"], config=b'{"model_type": "gpt2"}'):
        with pytest.raises(handler.InvalidTrainingInput) as error:
            handler.handle({"training_data_prefix": "datasets/v1/"}, SETTINGS, s3)
    problems = json.loads(str(error.value))
    assert any("no *.jsonl" in p for p in problems)
    assert any("'gpt2'" in p for p in problems)
    assert any("safetensors" in p for p in problems)


def test_lambda_environment_matches_the_rules(manual):
    functions = resources(manual, "AWS::Lambda::Function")
    (env,) = [f["Properties"]["Environment"]["Variables"] for f in functions.values() if "HYPERPARAMETER_SPEC" in f["Properties"]["Environment"]["Variables"]]
    assert json.loads(env["HYPERPARAMETER_SPEC"]) == rules.user_spec(SPEC)
    assert env["JOB_PREFIX"] == "ragprod-ft" and env["NEURON_CORES"] == "2" and env["BASE_MODELS_ROOT"] == "base-models/"


# --- the start script ----------------------------------------------------------------------------

import importlib.util  # noqa: E402

_spec = importlib.util.spec_from_file_location("start_training", ROOT / "scripts" / "start_training.py")
start_training = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(start_training)


class FakeSession:
    def __init__(self):
        import botocore.session

        core = botocore.session.get_session()
        self.clients = {name: core.create_client(name, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x") for name in ("cloudformation", "lambda", "s3", "stepfunctions")}
        self.stubs = {name: Stubber(client) for name, client in self.clients.items()}

    def client(self, name):
        return self.clients[name]


def env_variables() -> dict:
    return {
        "TRAINING_BUCKET": "train-bkt", "ARTIFACTS_BUCKET": "art-bkt", "BASE_MODELS_ROOT": "base-models/",
        "DEFAULT_BASE_MODEL_PREFIX": "base-models/qwen3-1.7b/", "JOB_PREFIX": "ragdev-ft", "NEURON_CORES": "2",
        "HYPERPARAMETER_SPEC": json.dumps(rules.user_spec(SPEC)),
    }


def test_start_script_validates_then_starts_the_execution(capsys):
    session = FakeSession()
    machine = "arn:aws:states:us-east-1:123456789012:stateMachine:RagDev-fine-tuning"
    cfn = session.stubs["cloudformation"]
    cfn.add_response("describe_stack_resources", {"StackResources": [{"LogicalResourceId": "ValidateInputFunction5A418754", "PhysicalResourceId": "fn-validate", "ResourceType": "AWS::Lambda::Function", "Timestamp": datetime(2025, 1, 1), "ResourceStatus": "CREATE_COMPLETE"}]}, {"StackName": "RagDev-Training"})
    cfn.add_response("describe_stacks", {"Stacks": [{"StackName": "RagDev-Training", "CreationTime": datetime(2025, 1, 1), "StackStatus": "CREATE_COMPLETE", "Outputs": [{"OutputKey": "StateMachineArn", "OutputValue": machine}]}]}, {"StackName": "RagDev-Training"})
    session.stubs["lambda"].add_response("get_function_configuration", {"Environment": {"Variables": env_variables()}}, {"FunctionName": "fn-validate"})
    session.stubs["s3"] = s3_stub(session.clients["s3"], data_keys=["datasets/v1/a.jsonl"], model_keys=["config.json", "model.safetensors", "tokenizer.json"])
    expected_input = json.dumps({"training_data_prefix": "datasets/v1/", "hyperparameters": {"learning_rate": 0.0001, "packing": False}})
    session.stubs["stepfunctions"].add_response("start_execution", {"executionArn": machine.replace("stateMachine", "execution") + ":run1", "startDate": datetime(2025, 1, 1)}, {"stateMachineArn": machine, "input": expected_input, "name": "run1"})
    for stub in session.stubs.values():
        stub.activate()
    status = start_training.main(["--stage", "dev", "--data", "datasets/v1/", "--hp", "learning_rate=0.0001", "--hp", "packing=false", "--name", "run1"], session=session)
    assert status == 0
    assert capsys.readouterr().out.strip().endswith(":run1")
    for stub in session.stubs.values():
        stub.assert_no_pending_responses()


def test_start_script_refuses_an_invalid_request_before_starting(capsys):
    session = FakeSession()
    session.stubs["cloudformation"].add_response("describe_stack_resources", {"StackResources": [{"LogicalResourceId": "ValidateInputFunctionX", "PhysicalResourceId": "fn", "ResourceType": "AWS::Lambda::Function", "Timestamp": datetime(2025, 1, 1), "ResourceStatus": "CREATE_COMPLETE"}]}, {"StackName": "RagDev-Training"})
    session.stubs["lambda"].add_response("get_function_configuration", {"Environment": {"Variables": env_variables()}}, {"FunctionName": "fn"})
    for stub in session.stubs.values():
        stub.activate()
    status = start_training.main(["--stage", "dev", "--data", "datasets/v1/", "--hp", "lora_r=0"], session=session)
    assert status == 2
    assert "hyperparameters.lora_r" in capsys.readouterr().err
