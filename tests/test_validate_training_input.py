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
    """One S3 client for the module (made once: ~0.3 s); each test stubs it in a `with` block."""
    if not _S3:
        import botocore.session

        _S3.append(botocore.session.get_session().create_client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"))
    return _S3[0]


_S3: list = []


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


# --- every rule, with the message an operator reads (start_training.py prints it, the pipeline notifies it)

PACKING, LORA_R, LEARNING_RATE = SETTINGS.spec["packing"], SETTINGS.spec["lora_r"], SETTINGS.spec["learning_rate"]
SCHEDULE, MODULES = SETTINGS.spec["lr_scheduler_type"], SETTINGS.spec["lora_target_modules"]


@pytest.mark.parametrize("name, value, entry, expected", [
    ("packing", True, PACKING, "true"),
    ("packing", False, PACKING, "false"),
    ("packing", "TRUE", PACKING, "true"),
    ("packing", "False", PACKING, "false"),
    ("lora_r", "8", LORA_R, "8"),
    ("lora_r", 8.0, LORA_R, "8"),
    ("learning_rate", "1e-4", LEARNING_RATE, "0.0001"),
    ("lr_scheduler_type", "constant_with_warmup", SCHEDULE, "constant_with_warmup"),
    ("lora_target_modules", "q_proj,v_proj", MODULES, "q_proj,v_proj"),
    ("free_text", "any thing", {"type": "str"}, "any thing"),  # a string entry without choices or pattern
])
def test_hyperparameter_values_become_the_strings_the_training_job_takes(name, value, entry, expected):
    assert rules.hyperparameter_value(name, value, entry) == expected


@pytest.mark.parametrize("name, value, entry, problem", [
    ("packing", "yes", PACKING, "hyperparameters.packing: expected true or false, got 'yes'"),
    ("packing", 1, PACKING, "hyperparameters.packing: expected true or false, got 1"),
    ("lora_r", True, LORA_R, "hyperparameters.lora_r: expected a number, got True"),
    ("lora_r", 2.5, LORA_R, "hyperparameters.lora_r: expected an integer, got 2.5"),
    ("lora_r", "eight", LORA_R, "hyperparameters.lora_r: expected an integer, got 'eight'"),
    ("learning_rate", "fast", LEARNING_RATE, "hyperparameters.learning_rate: expected a number, got 'fast'"),
    ("lora_r", 0, LORA_R, "hyperparameters.lora_r: 0 is outside 1..256"),
    ("lr_scheduler_type", "cos", SCHEDULE, "hyperparameters.lr_scheduler_type: 'cos' is not one of linear, cosine, constant, constant_with_warmup"),
    ("lr_scheduler_type", 3, SCHEDULE, "hyperparameters.lr_scheduler_type: expected a string, got 3"),
    ("lora_target_modules", "q_proj, v_proj", MODULES,
     f"hyperparameters.lora_target_modules: 'q_proj, v_proj' does not match {MODULES['pattern']}"),
])
def test_hyperparameter_values_that_break_their_rule_are_named(name, value, entry, problem):
    with pytest.raises(rules.InputError) as error:
        rules.hyperparameter_value(name, value, entry)
    assert error.value.problems == [problem] and str(error.value) == problem


def test_every_problem_of_a_request_is_reported_at_once():
    request = {"training_data_prefix": "Data/", "base_model_prefix": "base-models/", "description": 5, "zeal": 1,
               "hyperparameters": {"packing": "maybe", "batch": 3, "lora_r": 0, "serving_batch_size": 8}}
    with pytest.raises(rules.InputError) as error:
        rules.validate_request(request, SETTINGS)
    settable = ", ".join(sorted(SETTINGS.spec))
    assert error.value.problems == [
        "unknown key 'zeal' (allowed: training_data_prefix, base_model_prefix, hyperparameters, description, compile_only)",
        "training_data_prefix: 'Data/' must be a key prefix in the training bucket ending in '/' (lowercase, no s3://)",
        "base_model_prefix: 'base-models/' must be a folder under base-models/ in the artifacts bucket, ending in '/'",
        "description must be a string of at most 1000 characters",
        f"hyperparameters.batch: unknown or set by the pipeline (settable: {settable})",
        "hyperparameters.lora_r: 0 is outside 1..256",
        "hyperparameters.packing: expected true or false, got 'maybe'",
        f"hyperparameters.serving_batch_size: unknown or set by the pipeline (settable: {settable})",
    ]
    assert str(error.value) == "; ".join(error.value.problems)


@pytest.mark.parametrize("base", [5, "base-models/Qwen 3/", "models/qwen3/", "base-models/qwen3", "base-models/"])
def test_the_base_model_is_a_folder_under_the_base_models_root(base):
    with pytest.raises(rules.InputError) as error:
        rules.validate_request({"training_data_prefix": "d/", "base_model_prefix": base}, SETTINGS)
    assert error.value.problems == [f"base_model_prefix: {base!r} must be a folder under base-models/ in the artifacts bucket, ending in '/'"]


def test_hyperparameters_must_be_an_object():
    with pytest.raises(rules.InputError) as error:
        rules.validate_request({"training_data_prefix": "d/", "hyperparameters": ["lora_r", 8]}, SETTINGS)
    assert error.value.problems == ["hyperparameters must be an object"]


@pytest.mark.parametrize("cores, size, ok", [(2, 1, True), (2, 2, True), (2, 4, False), (32, 8, True), (32, 3, False)])
def test_training_tensor_parallelism_must_divide_the_jobs_cores(cores, size, ok):
    settings = rules.Settings(**{**vars(SETTINGS), "neuron_cores": cores})
    request = {"training_data_prefix": "d/", "hyperparameters": {"tensor_parallel_size": size}}
    if ok:
        assert rules.validate_request(request, settings)["hyperparameters"] == {"tensor_parallel_size": str(size)}
    else:
        with pytest.raises(rules.InputError) as error:
            rules.validate_request(request, settings)
        assert error.value.problems == [f"hyperparameters.tensor_parallel_size: {size} must divide the job's {cores} NeuronCores"]


def test_a_compile_only_flag_that_is_not_a_boolean_is_checked_as_a_training_run():
    with pytest.raises(rules.InputError) as error:
        rules.validate_request({"compile_only": "yes", "training_data_prefix": "d/", "hyperparameters": {"lora_r": 8}}, SETTINGS)
    assert error.value.problems == ["compile_only: expected true or false, got 'yes'"]


def test_descriptions_default_to_what_the_run_does():
    training = rules.validate_request({"training_data_prefix": "datasets/v1/"}, SETTINGS)
    assert training == {"compile_only": False, "training_data_prefix": "datasets/v1/", "base_model_prefix": "base-models/qwen3-1.7b/",
                        "hyperparameters": {}, "description": "Fine-tuned from base-models/qwen3-1.7b/ on datasets/v1/"}
    compile_only = rules.validate_request({"compile_only": True, "base_model_prefix": "base-models/llama-3b/"}, SETTINGS)
    assert compile_only == {"compile_only": True, "training_data_prefix": None, "base_model_prefix": "base-models/llama-3b/",
                            "hyperparameters": {}, "description": "Base model base-models/llama-3b/ compiled for Inferentia2"}
    assert rules.validate_request({"compile_only": True, "description": "why"}, SETTINGS)["description"] == "why"


def test_user_spec_keeps_every_rule_of_the_entries_it_keeps():
    spec = rules.user_spec(SPEC)
    assert spec["lr_scheduler_type"] == {"type": "choice", "choices": ["linear", "cosine", "constant", "constant_with_warmup"]}
    assert spec["lora_target_modules"] == {"type": "str", "pattern": SPEC["lora_target_modules"]["pattern"]}
    assert spec["lora_r"] == {"type": "int", "min": 1, "max": 256}
    assert "_comment" not in spec


def test_settings_come_from_the_validator_functions_environment():
    env = {"TRAINING_BUCKET": "tb", "ARTIFACTS_BUCKET": "ab", "BASE_MODELS_ROOT": "base-models/", "DEFAULT_BASE_MODEL_PREFIX": "base-models/m/",
           "JOB_PREFIX": "ragqa-ft", "NEURON_CORES": "32", "HYPERPARAMETER_SPEC": json.dumps({"lora_r": {"type": "int", "min": 1, "max": 2}})}
    assert rules.Settings.from_env(env) == rules.Settings("tb", "ab", "base-models/", "base-models/m/", "ragqa-ft", 32, {"lora_r": {"type": "int", "min": 1, "max": 2}})


def test_the_handler_reads_its_settings_once(monkeypatch):
    env = {"TRAINING_BUCKET": "tb", "ARTIFACTS_BUCKET": "ab", "BASE_MODELS_ROOT": "base-models/", "DEFAULT_BASE_MODEL_PREFIX": "base-models/m/",
           "JOB_PREFIX": "ragqa-ft", "NEURON_CORES": "2", "HYPERPARAMETER_SPEC": "{}"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(handler, "_settings", None)
    first = handler.settings()
    assert first == rules.Settings.from_env(env)
    monkeypatch.setenv("JOB_PREFIX", "changed")
    assert handler.settings() is first


def test_job_names_without_a_clock_or_token_use_utc_now_and_a_random_token(monkeypatch):
    import re
    import time

    monkeypatch.setenv("TZ", "America/New_York")  # an operator's machine: the names stay in UTC
    time.tzset()
    try:
        before = datetime.now(timezone.utc).replace(microsecond=0)
        names = rules.job_names("ragdev-ft")
        after = datetime.now(timezone.utc)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    match = re.fullmatch(r"ragdev-ft-(\d{8}-\d{6})-([0-9a-f]{6})", names["job_name"])
    assert match and before <= datetime.strptime(match[1], "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc) <= after
    assert names == {"job_name": match[0], "compile_job_name": match[0] + "-inf2", "model_name": match[0], "endpoint_config_name": match[0]}
    assert rules.job_names("ragdev-ft")["job_name"] != names["job_name"]  # another token (or second)


def test_listing_follows_continuation_tokens_and_an_empty_prefix_has_no_keys(s3):
    with Stubber(s3) as stub:
        stub.add_response("list_objects_v2", {"Contents": [{"Key": "d/a.jsonl", "Size": 1}], "IsTruncated": True, "NextContinuationToken": "t1"},
                          {"Bucket": "b", "Prefix": "d/"})
        stub.add_response("list_objects_v2", {"Contents": [{"Key": "d/b.jsonl", "Size": 2}], "IsTruncated": False, "NextContinuationToken": "t2"},
                          {"Bucket": "b", "Prefix": "d/", "ContinuationToken": "t1"})
        stub.add_response("list_objects_v2", {"IsTruncated": False}, {"Bucket": "b", "Prefix": "empty/"})
        assert [item["Key"] for item in rules._list_keys(s3, "b", "d/")] == ["d/a.jsonl", "d/b.jsonl"]
        assert rules._list_keys(s3, "b", "empty/") == []
        stub.assert_no_pending_responses()


def _prepared_request(**request):
    return {"training_data_prefix": "datasets/v1/", **request}


@pytest.mark.parametrize("model_keys, config, problems", [
    (["model.safetensors", "tokenizer.json"], None, ["base_model_prefix: no config.json under s3://art-bkt/base-models/qwen3-1.7b/"]),
    (["config.json", "model.safetensors", "tokenizer.json"], b"[1, 2]", ["base_model_prefix: base-models/qwen3-1.7b/config.json is not a JSON object"]),
    (["config.json", "model.safetensors", "tokenizer.json"], b"{not json", ["base_model_prefix: base-models/qwen3-1.7b/config.json is not a JSON object"]),
    (["config.json", "model.safetensors", "tokenizer.json"], b'{"model_type": "gpt2"}', ["base_model_prefix: model_type 'gpt2' is not one of llama, qwen3"]),
    (["config.json", "model.bin", "tokenizer.json"], b'{"model_type": "llama"}', ["base_model_prefix: no *.safetensors weights under base-models/qwen3-1.7b/"]),
    (["config.json", "model.safetensors", "vocab.txt"], b'{"model_type": "llama"}', ["base_model_prefix: no tokenizer.json or tokenizer.model under base-models/qwen3-1.7b/"]),
])
def test_each_missing_piece_of_the_base_model_is_named(s3, model_keys, config, problems):
    with s3_stub(s3, data_keys=["datasets/v1/a.jsonl"], model_keys=model_keys, config=config or b""):
        with pytest.raises(rules.InputError) as error:
            rules.check_s3(s3, _prepared_request(base_model_prefix="base-models/qwen3-1.7b/"), SETTINGS)
    assert error.value.problems == problems


def test_a_sentencepiece_tokenizer_and_several_data_files_pass(s3):
    with s3_stub(s3, data_keys=["datasets/v1/a.jsonl", "datasets/v1/b.jsonl", "datasets/v1/c.csv"],
                 model_keys=["config.json", "model-00001.safetensors", "tokenizer.model"], config=b'{"model_type": "llama"}') as stub:
        found = rules.check_s3(s3, _prepared_request(base_model_prefix="base-models/qwen3-1.7b/"), SETTINGS)
        stub.assert_no_pending_responses()
    assert found == {"data_files": 2, "data_bytes": 20, "model_type": "llama"}


def test_a_compile_only_run_lists_no_training_data_and_registers_no_data_uri(s3):
    with s3_stub(s3, data_keys=[], model_keys=["config.json", "model.safetensors", "tokenizer.json"], skip_data=True) as stub:
        out = rules.prepare({"compile_only": True}, SETTINGS, s3, now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), token="c0ffee")
        stub.assert_no_pending_responses()
    assert out["training_data_uri"] == rules.NO_DATA and out["checks"] == {"data_files": 0, "data_bytes": 0, "model_type": "qwen3"}
    assert out["job_name"] == "ragdev-ft-20260102-030405-c0ffee" and out["base_model_uri"] == "s3://art-bkt/base-models/qwen3-1.7b/"


def test_an_input_that_is_not_an_object_says_so():
    with pytest.raises(rules.InputError) as error:
        rules.validate_request(["datasets/v1/"], SETTINGS)
    assert error.value.problems == ["the input must be a JSON object"]
