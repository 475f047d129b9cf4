"""The operator scripts (start a run, switch the endpoint, roll back) and train.py speak to people:
one line and a documented exit status for every expected mistake, never a traceback.

AWS is botocore's Stubber; the subprocess runs have no credentials, EC2 metadata lookups are
disabled, and nothing reaches the network.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import botocore.session
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from botocore.stub import Stubber

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(SCRIPTS))

import operator_cli as cli  # noqa: E402


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


endpoint_power = load("endpoint_power")
rollback_model = load("rollback_model")
start_training = load("start_training")

DEPLOYER = "arn:aws:states:us-east-1:111122223333:stateMachine:RagDev-model-deployer"
GROUP = "ragdev-models-0f1e2d3c"


_CORE = botocore.session.get_session()  # one botocore session: its loader caches the service models


class Session:
    def __init__(self, *services: str) -> None:
        core = _CORE
        self.clients = {name: core.create_client(name, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x") for name in services}
        self.stubs = {name: Stubber(client) for name, client in self.clients.items()}
        for stub in self.stubs.values():
            stub.activate()

    def client(self, name):
        return self.clients[name]

    def done(self):
        for stub in self.stubs.values():
            stub.assert_no_pending_responses()


def outputs(session: Session, **values) -> None:
    session.stubs["cloudformation"].add_response(
        "describe_stacks",
        {"Stacks": [{"StackName": "RagDev-Training", "CreationTime": datetime(2026, 1, 1), "StackStatus": "UPDATE_COMPLETE", "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in values.items()]}]},
        {"StackName": "RagDev-Training"},
    )


def script(args: list[str], **env) -> subprocess.CompletedProcess:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    clean.update({"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", **env})
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=clean, cwd=str(ROOT), timeout=60)


# --- expected mistakes: one line, an exit status, no traceback ----------------------------------


def test_no_region_is_one_line_and_exit_3_without_a_traceback():
    result = script([str(SCRIPTS / "start_training.py"), "--stage", "dev", "--data", "d/"])
    assert result.returncode == cli.EXIT_ENVIRONMENT, result.stderr
    assert result.stderr == "error: no AWS region: pass --region or set AWS_REGION (the stage's region)\n"


@pytest.fixture
def no_aws(monkeypatch):
    """No region, no credentials, no config files, no EC2 metadata lookups (nothing reaches the network)."""
    for key in [key for key in os.environ if key.startswith("AWS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")


@pytest.mark.parametrize("main, argv", [(endpoint_power.main, ["--stage", "dev", "off"]), (rollback_model.main, ["--stage", "dev"])])
def test_no_region_in_the_other_scripts(no_aws, capsys, main, argv):
    assert main(argv) == cli.EXIT_ENVIRONMENT
    assert capsys.readouterr().err == "error: no AWS region: pass --region or set AWS_REGION (the stage's region)\n"


def test_no_credentials_is_one_line_and_exit_3_and_aws_region_is_honoured(no_aws, monkeypatch, capsys):
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert endpoint_power.main(["--stage", "dev", "on"]) == cli.EXIT_ENVIRONMENT
    err = capsys.readouterr().err
    assert err.startswith("error: no AWS credentials: configure a profile") and err.count("\n") == 1


def test_region_flag_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert cli.make_session("us-west-2").region_name == "us-west-2"
    assert cli.make_session(None).region_name == "eu-west-1"


@pytest.mark.parametrize(
    "error, status, fragment",
    [
        (NoCredentialsError(), cli.EXIT_ENVIRONMENT, "no AWS credentials"),
        (EndpointConnectionError(endpoint_url="https://states.us-east-1.amazonaws.com"), cli.EXIT_ENVIRONMENT, "cannot reach AWS in us-east-1"),
        (ClientError({"Error": {"Code": "ValidationError", "Message": "Stack with id RagDev-Training does not exist"}}, "DescribeStacks"), cli.EXIT_AWS, "deploy the stage first"),
        (ClientError({"Error": {"Code": "ExpiredToken", "Message": "expired"}}, "DescribeStacks"), cli.EXIT_ENVIRONMENT, "refresh them"),
        (ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "StartExecution"), cli.EXIT_AWS, "access denied in us-east-1"),
    ],
)
def test_aws_errors_become_one_line(capsys, error, status, fragment):
    def fail():
        raise error

    assert cli.run(fail, region="us-east-1") == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err


def test_unexpected_errors_are_not_hidden():
    with pytest.raises(ZeroDivisionError):
        cli.run(lambda: 1 / 0)


def test_hp_without_equals_is_refused_before_any_aws_call(capsys):
    assert start_training.main(["--stage", "dev", "--data", "d/", "--hp", "learning_rate"], session=object()) == cli.EXIT_INVALID
    assert capsys.readouterr().err.strip() == "invalid: --hp 'learning_rate': expected NAME=VALUE, e.g. --hp learning_rate=1e-4"


@pytest.mark.parametrize("argv, fragment", [(["--stage", "dev"], "--data is required"), (["--stage", "dev", "--compile-only", "--data", "d/"], "leave out --data and --hp")])
def test_start_script_request_shape_mistakes(capsys, argv, fragment):
    assert start_training.main(argv, session=object()) == cli.EXIT_INVALID
    assert fragment in capsys.readouterr().err


def test_every_script_documents_its_exit_codes():
    for name in ("start_training", "endpoint_power", "rollback_model"):
        text = (SCRIPTS / f"{name}.py").read_text()
        assert "Exit status: 0" in text and "3 no credentials" in text, name
    assert "Exit status: 0" in (ROOT / "model_artifacts" / "training" / "train.py").read_text()


# --- the compile-only start -------------------------------------------------------------------------


def test_compile_only_start_validates_the_base_model_and_starts(capsys):
    from tests.test_validate_training_input import env_variables, s3_stub  # the validator's environment and S3 answers

    session = Session("cloudformation", "lambda", "stepfunctions")
    session.clients["s3"] = _CORE.create_client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    session.stubs["cloudformation"].add_response("describe_stack_resources", {"StackResources": [{"LogicalResourceId": "PipelineValidateInputFunction5A418754", "PhysicalResourceId": "fn", "ResourceType": "AWS::Lambda::Function", "Timestamp": datetime(2026, 1, 1), "ResourceStatus": "CREATE_COMPLETE"}]}, {"StackName": "RagDev-Training"})
    session.stubs["lambda"].add_response("get_function_configuration", {"Environment": {"Variables": env_variables()}}, {"FunctionName": "fn"})
    stub = s3_stub(session.clients["s3"], data_keys=[], model_keys=["config.json", "model.safetensors", "tokenizer.json"], skip_data=True)
    stub.activate()
    session.stubs["s3"] = stub
    machine = "arn:aws:states:us-east-1:111122223333:stateMachine:RagDev-model-pipeline"
    outputs(session, StateMachineArn=machine)
    session.stubs["stepfunctions"].add_response("start_execution", {"executionArn": machine + ":b1", "startDate": datetime(2026, 1, 1)}, {"stateMachineArn": machine, "input": json.dumps({"compile_only": True})})
    assert start_training.main(["--stage", "dev", "--compile-only"], session=session) == 0
    assert capsys.readouterr().out.strip().endswith(":b1")
    session.done()


# --- endpoint power -----------------------------------------------------------------------------------


def test_power_off_starts_the_deployer_and_waits_for_the_outcome(capsys):
    session = Session("cloudformation", "stepfunctions")
    outputs(session, DeployerArn=DEPLOYER)
    execution = DEPLOYER.replace("stateMachine", "execution") + ":p1"
    sfn = session.stubs["stepfunctions"]
    sfn.add_response("start_execution", {"executionArn": execution, "startDate": datetime(2026, 1, 1)}, {"stateMachineArn": DEPLOYER, "input": json.dumps({"action": "power", "power": "off", "source": "operator"})})
    sfn.add_response("describe_execution", {"executionArn": execution, "stateMachineArn": DEPLOYER, "status": "RUNNING", "startDate": datetime(2026, 1, 1)}, {"executionArn": execution})
    sfn.add_response("describe_execution", {"executionArn": execution, "stateMachineArn": DEPLOYER, "status": "SUCCEEDED", "startDate": datetime(2026, 1, 1), "output": "{}"}, {"executionArn": execution})
    assert endpoint_power.main(["--stage", "dev", "off", "--wait"], session=session, sleep=lambda seconds: None) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.split("\n", 1)[1])["status"] == "SUCCEEDED"
    assert "execution running" in captured.err and "execution succeeded" in captured.err
    session.done()


def test_a_failed_deployment_is_exit_5(capsys):
    session = Session("cloudformation", "stepfunctions")
    outputs(session, DeployerArn=DEPLOYER)
    execution = DEPLOYER + ":p2"
    session.stubs["stepfunctions"].add_response("start_execution", {"executionArn": execution, "startDate": datetime(2026, 1, 1)})
    session.stubs["stepfunctions"].add_response("describe_execution", {"executionArn": execution, "stateMachineArn": DEPLOYER, "status": "FAILED", "startDate": datetime(2026, 1, 1), "cause": "stack UPDATE_ROLLBACK_COMPLETE"})
    assert endpoint_power.main(["--stage", "dev", "on", "--wait"], session=session, sleep=lambda seconds: None) == cli.EXIT_FAILED
    assert "UPDATE_ROLLBACK_COMPLETE" in capsys.readouterr().out


def test_a_stage_deployed_without_a_deployer_says_what_to_do(capsys):
    session = Session("cloudformation", "stepfunctions")
    outputs(session, StateMachineArn="x")
    assert endpoint_power.main(["--stage", "dev", "on"], session=session) == cli.EXIT_AWS
    assert "has no DeployerArn output: deploy the stage with this checkout first" in capsys.readouterr().err


# --- rollback -------------------------------------------------------------------------------------------


def registry(session: Session, versions: dict[int, str]) -> None:
    summaries = [{"ModelPackageArn": f"arn:aws:sagemaker:us-east-1:111122223333:model-package/{GROUP}/{v}", "ModelPackageStatus": "Completed", "CreationTime": datetime(2026, 1, v)} for v in sorted(versions, reverse=True)]
    sm = session.stubs["sagemaker"]
    sm.add_response("list_model_packages", {"ModelPackageSummaryList": summaries}, {"ModelPackageGroupName": GROUP, "ModelApprovalStatus": "Approved", "SortBy": "CreationTime", "SortOrder": "Descending"})
    for summary in summaries:
        version = int(summary["ModelPackageArn"].rsplit("/", 1)[1])
        sm.add_response("describe_model_package", {"ModelPackageName": GROUP, "ModelPackageArn": summary["ModelPackageArn"], "ModelPackageVersion": version, "CreationTime": datetime(2026, 1, 1), "ModelPackageStatus": "Completed", "ModelPackageStatusDetails": {"ValidationStatuses": []}, "CustomerMetadataProperties": {"Role": versions[version]}}, {"ModelPackageName": summary["ModelPackageArn"]})


def test_rollback_deploys_the_previous_approved_version_of_the_role(capsys):
    session = Session("cloudformation", "ssm", "sagemaker", "stepfunctions")
    outputs(session, DeployerArn=DEPLOYER, ModelPackageGroupName=GROUP)
    session.stubs["ssm"].add_response("get_parameter", {"Parameter": {"Name": "/rag/dev/serving/finetuned", "Value": "7|models/f7/", "Type": "String"}}, {"Name": "/rag/dev/serving/finetuned"})
    registry(session, {7: "finetuned", 6: "base", 5: "finetuned", 3: "finetuned"})
    expected = {"action": "deploy", "model_package_arn": f"arn:aws:sagemaker:us-east-1:111122223333:model-package/{GROUP}/5", "source": "rollback"}
    session.stubs["stepfunctions"].add_response("start_execution", {"executionArn": DEPLOYER + ":r1", "startDate": datetime(2026, 1, 1)}, {"stateMachineArn": DEPLOYER, "input": json.dumps(expected)})
    assert rollback_model.main(["--stage", "dev"], session=session) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == "finetuned: 7 -> 5" and captured.out.strip().endswith(":r1")
    session.done()


def test_rollback_with_nothing_older_says_so(capsys):
    session = Session("cloudformation", "ssm", "sagemaker", "stepfunctions")
    outputs(session, DeployerArn=DEPLOYER, ModelPackageGroupName=GROUP)
    session.stubs["ssm"].add_response("get_parameter", {"Parameter": {"Name": "/rag/dev/serving/finetuned", "Value": "2|models/f2/", "Type": "String"}})
    registry(session, {2: "finetuned", 1: "base"})
    assert rollback_model.main(["--stage", "dev"], session=session) == cli.EXIT_INVALID
    assert "no older Approved finetuned version to roll back to" in capsys.readouterr().err


def test_rollback_to_a_version_that_is_not_approved_is_refused(capsys):
    with pytest.raises(cli.OperatorError, match="version 4 is not an Approved finetuned version .* 5, 3"):
        rollback_model.choose([(5, "a5"), (3, "a3")], 7, 4, "finetuned")
    assert rollback_model.choose([(5, "a5"), (3, "a3")], 7, 3, "finetuned") == (3, "a3")
    assert rollback_model.choose([(5, "a5"), (3, "a3")], None, None, "base") == (5, "a5")


# --- train.py ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "-inf"])
def test_train_refuses_non_finite_numbers_in_one_line(value):
    result = script([str(ROOT / "model_artifacts" / "training" / "train.py"), "--dry-run", f"--learning_rate={value}"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"learning_rate: expected a finite number, got '{value}'" in result.stderr


def test_train_dry_run_prints_strict_json():
    sample = ROOT / "model_artifacts" / "training" / "sample_data"
    result = script([str(ROOT / "model_artifacts" / "training" / "train.py"), "--dry-run", "--train_dir", str(sample), "--neuron_cores", "2"])

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    parsed = json.loads(result.stdout, parse_constant=refuse)
    assert result.returncode == 0 and parsed["valid"] is True


def test_train_reports_a_broken_base_model_config_without_a_traceback(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    sample = ROOT / "model_artifacts" / "training" / "sample_data"
    result = script([str(ROOT / "model_artifacts" / "training" / "train.py"), "--dry-run", "--train_dir", str(sample), "--base_model_dir", str(tmp_path)])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "is not valid JSON" in json.loads(result.stdout)["errors"][0]
