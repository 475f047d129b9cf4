"""The training pipeline's input rules (lambda/validate_training_input: the Lambda's and the start
script's) and the start script, without a synth."""

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


def s3_stub(s3, *, data_keys, model_keys, config=b'{"model_type": "qwen3"}', skip_data=False):
    stub = Stubber(s3)
    if not skip_data:  # a compile-only run has no training data to check
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
