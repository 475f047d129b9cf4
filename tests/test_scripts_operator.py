"""The operator scripts' paths the other script tests leave out: every AWS error's one line and
exit status, following an execution, rollback choices, the start script's request and dry run,
and the README cost table written in place. AWS is botocore's Stubber."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path

import pytest
from botocore import exceptions
from botocore.stub import Stubber

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import cost_table  # noqa: E402
import endpoint_power  # noqa: E402
import operator_cli as cli  # noqa: E402
import rollback_model  # noqa: E402
import start_training  # noqa: E402

from tests.test_operator_scripts import _CORE  # noqa: E402  (one botocore session: its loader has the service models already)
DEPLOYER = "arn:aws:states:us-east-1:111122223333:stateMachine:RagDev-model-deployer"
EXECUTION = "arn:aws:states:us-east-1:111122223333:execution:RagDev-model-deployer:e1"
T0 = datetime(2026, 1, 1)


class Session:
    def __init__(self, *services: str) -> None:
        self.clients = {name: _CORE.create_client(name, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
                        for name in services}
        self.stubs = {name: Stubber(client) for name, client in self.clients.items()}
        for stub in self.stubs.values():
            stub.activate()

    def client(self, name):
        return self.clients[name]

    def outputs(self, stack="RagDev-Training", **values):
        self.stubs["cloudformation"].add_response("describe_stacks", {"Stacks": [{
            "StackName": stack, "CreationTime": T0, "StackStatus": "UPDATE_COMPLETE",
            "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in values.items()]}]}, {"StackName": stack})

    def done(self):
        for stub in self.stubs.values():
            stub.assert_no_pending_responses()


def _client_error(code: str, message: str) -> exceptions.ClientError:
    return exceptions.ClientError({"Error": {"Code": code, "Message": message}}, "DescribeStacks")


@pytest.mark.parametrize("error, region, status, line", [
    (exceptions.PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"), None, cli.EXIT_ENVIRONMENT,
     "no AWS credentials: configure a profile (aws configure / aws sso login) or set AWS_PROFILE"),
    (exceptions.NoRegionError(), None, cli.EXIT_ENVIRONMENT, "no AWS region: pass --region or set AWS_REGION"),
    (exceptions.ConnectTimeoutError(endpoint_url="https://states.eu-west-1.amazonaws.com"), "eu-west-1", cli.EXIT_ENVIRONMENT,
     'cannot reach AWS in eu-west-1 (Connect timeout on endpoint URL: "https://states.eu-west-1.amazonaws.com"): check the network, '
     "a proxy, or the region name"),
    (exceptions.ReadTimeoutError(endpoint_url="https://x"), None, cli.EXIT_ENVIRONMENT,
     'cannot reach AWS (Read timeout on endpoint URL: "https://x"): check the network, a proxy, or the region name'),
    (_client_error("ValidationError", "Stack with id RagQa-Training does not exist"), "eu-west-1", cli.EXIT_AWS,
     "Stack with id RagQa-Training does not exist in eu-west-1: deploy the stage first (make deploy STAGE=...), or pass the right "
     "--stage/--region"),
    (_client_error("ValidationError", "Template format error"), None, cli.EXIT_AWS, "AWS refused (ValidationError): Template format error"),
    (_client_error("UnrecognizedClientException", "bad token"), "us-east-1", cli.EXIT_ENVIRONMENT,
     "AWS rejected the credentials (UnrecognizedClientException): refresh them (aws sso login, or new keys)"),
    (_client_error("InvalidClientTokenId", "bad"), None, cli.EXIT_ENVIRONMENT,
     "AWS rejected the credentials (InvalidClientTokenId): refresh them (aws sso login, or new keys)"),
    (_client_error("ExpiredTokenException", "old"), None, cli.EXIT_ENVIRONMENT,
     "AWS rejected the credentials (ExpiredTokenException): refresh them (aws sso login, or new keys)"),
    (_client_error("AccessDenied", "User x is not authorized"), None, cli.EXIT_AWS, "access denied: User x is not authorized"),
    (_client_error("ThrottlingException", "Rate exceeded"), "us-east-1", cli.EXIT_AWS, "AWS refused in us-east-1 (ThrottlingException): Rate exceeded"),
    (exceptions.ClientError({}, "StartExecution"), None, cli.EXIT_AWS,
     "AWS refused (): An error occurred (Unknown) when calling the StartExecution operation: Unknown"),
])
def test_every_expected_aws_error_is_one_line_with_its_exit_status(capsys, error, region, status, line):
    def fail():
        raise error

    assert cli.run(fail, region=region) == status
    assert capsys.readouterr().err == f"error: {line}\n"


def test_an_interrupt_is_exit_130_and_an_operator_error_keeps_its_status(capsys):
    def interrupted():
        raise KeyboardInterrupt

    assert cli.run(interrupted) == 130
    assert capsys.readouterr().err == "interrupted\n"
    assert cli.run(lambda: (_ for _ in ()).throw(cli.OperatorError("nothing to do", cli.EXIT_INVALID))) == cli.EXIT_INVALID
    assert capsys.readouterr().err == "error: nothing to do\n"
    assert cli.run(lambda: 7) == 7


def test_stack_names_and_outputs():
    assert cli.stack_name("dev", "Training") == "RagDev-Training" and cli.stack_name("prod2", "Serving") == "RagProd2-Serving"
    session = Session("cloudformation")
    session.outputs(DeployerArn=DEPLOYER)
    session.stubs["cloudformation"].add_response("describe_stacks", {"Stacks": [{"StackName": "RagDev-Training", "CreationTime": T0,
                                                                                "StackStatus": "CREATE_IN_PROGRESS"}]})
    assert cli.stack_outputs(session.client("cloudformation"), "RagDev-Training") == {"DeployerArn": DEPLOYER}
    assert cli.stack_outputs(session.client("cloudformation"), "RagDev-Training") == {}
    with pytest.raises(cli.OperatorError) as caught:
        cli.require_output({}, "DeployerArn", "RagDev-Training")
    assert (str(caught.value), caught.value.status) == (
        "stack RagDev-Training has no DeployerArn output: deploy the stage with this checkout first (make deploy STAGE=...)", cli.EXIT_AWS)


def test_following_an_execution_prints_each_status_once_and_returns_its_outcome():
    session = Session("stepfunctions")
    sfn = session.stubs["stepfunctions"]
    for status in ("RUNNING", "RUNNING", "FAILED"):
        answer = {"executionArn": EXECUTION, "stateMachineArn": DEPLOYER, "status": status, "startDate": T0}
        if status == "FAILED":
            answer["error"] = "States.TaskFailed"
        sfn.add_response("describe_execution", answer, {"executionArn": EXECUTION})
    sleeps: list[float] = []
    lines: list[str] = []

    class Out:
        def write(self, text):
            lines.append(text)

    result = cli.wait_for_execution(session.client("stepfunctions"), EXECUTION, poll_seconds=7, sleep=sleeps.append, out=Out())
    assert result == ("FAILED", "States.TaskFailed")  # no cause: the error
    assert "".join(lines) == "execution running\nexecution failed\n" and sleeps == [7, 7]
    sfn.add_response("describe_execution", {"executionArn": EXECUTION, "stateMachineArn": DEPLOYER, "status": "SUCCEEDED", "startDate": T0})
    assert cli.wait_for_execution(session.client("stepfunctions"), EXECUTION, sleep=sleeps.append, out=Out()) == ("SUCCEEDED", None)
    session.done()


def test_power_on_without_wait_prints_the_execution_and_returns(capsys):
    session = Session("cloudformation", "stepfunctions")
    session.outputs(DeployerArn=DEPLOYER)
    session.stubs["stepfunctions"].add_response("start_execution", {"executionArn": EXECUTION, "startDate": T0}, {
        "stateMachineArn": DEPLOYER, "input": json.dumps({"action": "power", "power": "on", "source": "operator"})})
    assert endpoint_power.main(["--stage", "dev", "on"], session=session) == 0
    assert capsys.readouterr().out == EXECUTION + "\n"
    session.done()
    assert cli.start_execution(_stub_start(), DEPLOYER, {"a": 1}, name="n1") == EXECUTION


def _stub_start():
    session = Session("stepfunctions")
    session.stubs["stepfunctions"].add_response("start_execution", {"executionArn": EXECUTION, "startDate": T0},
                                                {"stateMachineArn": DEPLOYER, "input": '{"a": 1}', "name": "n1"})
    return session.client("stepfunctions")


# --- rollback -------------------------------------------------------------------------------------

GROUP = "ragdev-models"


def _registry(session, versions: dict[int, str]) -> None:
    arns = {v: f"arn:aws:sagemaker:us-east-1:111122223333:model-package/{GROUP}/{v}" for v in versions}
    sm = session.stubs["sagemaker"]
    sm.add_response("list_model_packages", {"ModelPackageSummaryList": [
        {"ModelPackageArn": arns[v], "ModelPackageStatus": "Completed", "CreationTime": T0} for v in versions]},
        {"ModelPackageGroupName": GROUP, "ModelApprovalStatus": "Approved", "SortBy": "CreationTime", "SortOrder": "Descending"})
    for v, role in versions.items():
        described = {"ModelPackageArn": arns[v], "ModelPackageVersion": v, "ModelPackageName": GROUP, "CreationTime": T0,
                     "ModelPackageStatus": "Completed", "ModelPackageStatusDetails": {"ValidationStatuses": []}}
        if role:
            described["CustomerMetadataProperties"] = {"Role": role}
        sm.add_response("describe_model_package", described, {"ModelPackageName": arns[v]})


def test_rollback_of_the_base_variant_to_a_chosen_version_and_wait(capsys):
    session = Session("cloudformation", "ssm", "sagemaker", "stepfunctions")
    session.outputs(DeployerArn=DEPLOYER, ModelPackageGroupName=GROUP)
    session.stubs["ssm"].add_response("get_parameter", {"Parameter": {"Name": "/rag/dev/serving/base", "Value": "none", "Type": "String"}},
                                      {"Name": "/rag/dev/serving/base"})
    _registry(session, {4: "base", 3: "finetuned", 2: "base", 1: None})
    arn = f"arn:aws:sagemaker:us-east-1:111122223333:model-package/{GROUP}/2"
    sfn = session.stubs["stepfunctions"]
    sfn.add_response("start_execution", {"executionArn": EXECUTION, "startDate": T0}, {
        "stateMachineArn": DEPLOYER, "input": json.dumps({"action": "deploy", "model_package_arn": arn, "source": "rollback"})})
    sfn.add_response("describe_execution", {"executionArn": EXECUTION, "stateMachineArn": DEPLOYER, "status": "SUCCEEDED", "startDate": T0,
                                            "output": '{"deployed": 2}'})
    assert rollback_model.main(["--stage", "dev", "--role", "base", "--to", "2", "--wait"], session=session, sleep=lambda s: None) == 0
    captured = capsys.readouterr()
    assert captured.err == "base: none -> 2\nexecution succeeded\n"  # nothing serves (no record): 'none'
    assert captured.out == EXECUTION + "\n" + json.dumps({"status": "SUCCEEDED", "result": {"deployed": 2}}, indent=2) + "\n"
    session.done()


def test_approved_versions_of_a_role_newest_first():
    session = Session("sagemaker")
    _registry(session, {3: "finetuned", 9: "finetuned", 5: "base", 7: None})
    assert rollback_model.approved_versions(session.client("sagemaker"), GROUP, "finetuned") == [
        (9, f"arn:aws:sagemaker:us-east-1:111122223333:model-package/{GROUP}/9"),
        (3, f"arn:aws:sagemaker:us-east-1:111122223333:model-package/{GROUP}/3")]


@pytest.mark.parametrize("versions, current, wanted, role, result", [
    ([(9, "a9"), (5, "a5"), (3, "a3")], 9, None, "finetuned", (5, "a5")),  # the newest older than what serves
    ([(9, "a9"), (5, "a5")], 6, None, "finetuned", (5, "a5")),
    ([(9, "a9"), (5, "a5")], None, None, "base", (9, "a9")),  # nothing serves: the newest
    ([(9, "a9"), (5, "a5")], 9, 9, "finetuned", (9, "a9")),  # --to may name what serves
    ([(5, "a5")], 5, None, "finetuned", "the finetuned variant serves version 5 and there is no older Approved finetuned version to roll back to"),
    ([], None, None, "base", "the base variant serves nothing and there is no older Approved base version to roll back to"),
    ([], 3, 2, "base", "version 2 is not an Approved base version of this stage (approved: none)"),
])
def test_which_version_a_rollback_deploys(versions, current, wanted, role, result):
    if isinstance(result, tuple):
        assert rollback_model.choose(versions, current, wanted, role) == result
    else:
        with pytest.raises(cli.OperatorError) as caught:
            rollback_model.choose(versions, current, wanted, role)
        assert (str(caught.value), caught.value.status) == (result, cli.EXIT_INVALID)


def test_the_rollback_roles_and_default():
    args = rollback_model.parser().parse_args(["--stage", "dev"])
    assert (args.role, args.to, args.wait, args.region) == ("finetuned", None, False, None)
    with pytest.raises(SystemExit):
        rollback_model.parser().parse_args(["--stage", "dev", "--role", "other"])


# --- the start script -----------------------------------------------------------------------------

def _args(*argv):
    return start_training.parser().parse_args(["--stage", "dev", *argv])


def test_the_request_from_the_command_line():
    assert start_training.build_request(_args("--data", "datasets/v1/", "--hp", "learning_rate=1e-4", "--hp", "packing=false",
                                              "--hp", "lr_scheduler_type=cosine", "--hp", "lora_target_modules=q_proj,v_proj",
                                              "--hp", "note=", "--base-model", "base-models/qwen3-1.7b/", "--description", "why")) == {
        "training_data_prefix": "datasets/v1/",
        "hyperparameters": {"learning_rate": 1e-4, "packing": False, "lr_scheduler_type": "cosine", "lora_target_modules": "q_proj,v_proj",
                            "note": ""},
        "base_model_prefix": "base-models/qwen3-1.7b/", "description": "why"}
    assert start_training.build_request(_args("--data", "d/")) == {"training_data_prefix": "d/"}
    assert start_training.build_request(_args("--compile-only", "--base-model", "base-models/x/")) == {
        "compile_only": True, "base_model_prefix": "base-models/x/"}
    with pytest.raises(start_training.rules.InputError) as caught:
        start_training.parse_hyperparameters(["a=1", "=2", "b", "c=3"])
    assert caught.value.problems == ["--hp '=2': expected NAME=VALUE, e.g. --hp learning_rate=1e-4",
                                     "--hp 'b': expected NAME=VALUE, e.g. --hp learning_rate=1e-4"]
    assert start_training.parse_hyperparameters(["note=a=b", "n=2"]) == {"note": "a=b", "n": 2}
    with pytest.raises(start_training.rules.InputError) as caught:
        start_training.build_request(_args("--hp", "lora_r=8"))
    assert caught.value.problems == ["--data is required (the training data prefix, e.g. datasets/v1/), or pass --compile-only for a base model"]
    with pytest.raises(start_training.rules.InputError) as caught:
        start_training.build_request(_args("--compile-only", "--hp", "lora_r=8"))
    assert caught.value.problems == ["--compile-only compiles the base model as it is: leave out --data and --hp"]


def _validator(session, resources):
    session.stubs["cloudformation"].add_response("describe_stack_resources", {"StackResources": [
        {"LogicalResourceId": logical, "PhysicalResourceId": physical, "ResourceType": kind, "Timestamp": T0, "ResourceStatus": "CREATE_COMPLETE"}
        for logical, physical, kind in resources]}, {"StackName": "RagDev-Training"})


def test_a_dry_run_validates_and_prints_the_request_without_starting(capsys):
    from tests.test_validate_training_input import env_variables

    session = Session("cloudformation", "lambda", "stepfunctions")
    _validator(session, [("PipelineValidateInputFunctionRole1", "role", "AWS::IAM::Role"),
                         ("PipelineValidateInputFunction5A4", "fn-validate", "AWS::Lambda::Function")])
    session.stubs["lambda"].add_response("get_function_configuration", {"Environment": {"Variables": env_variables()}},
                                         {"FunctionName": "fn-validate"})
    assert start_training.main(["--stage", "dev", "--data", "datasets/v1/", "--hp", "lora_r=8", "--no-s3-check", "--dry-run"],
                               session=session) == 0
    assert capsys.readouterr().out == json.dumps({"training_data_prefix": "datasets/v1/", "hyperparameters": {"lora_r": 8}}, indent=2) + "\n"
    session.done()


def test_a_given_state_machine_skips_the_stack_lookup(capsys):
    from tests.test_validate_training_input import env_variables

    session = Session("cloudformation", "lambda", "stepfunctions")
    _validator(session, [("PipelineValidateInputFunction5A4", "fn", "AWS::Lambda::Function")])
    session.stubs["lambda"].add_response("get_function_configuration", {"Environment": {"Variables": env_variables()}})
    machine = "arn:aws:states:us-east-1:111122223333:stateMachine:other"
    session.stubs["stepfunctions"].add_response("start_execution", {"executionArn": machine + ":x", "startDate": T0}, {
        "stateMachineArn": machine, "input": json.dumps({"training_data_prefix": "d/"})})
    assert start_training.main(["--stage", "dev", "--data", "d/", "--no-s3-check", "--state-machine-arn", machine], session=session) == 0
    assert capsys.readouterr().out == machine + ":x\n"
    session.done()


def test_a_stack_without_the_validator_function_says_what_to_do(capsys):
    session = Session("cloudformation", "lambda")
    _validator(session, [("OtherFunction", "fn", "AWS::Lambda::Function"), ("ValidateInputFunctionAlarm", "a", "AWS::CloudWatch::Alarm")])
    assert start_training.main(["--stage", "dev", "--data", "d/"], session=session) == cli.EXIT_AWS
    assert capsys.readouterr().err == ("error: stack RagDev-Training has no validator function: deploy the stage with this checkout first\n")


# --- the README cost table --------------------------------------------------------------------------

def test_the_cost_table_is_written_between_the_markers(tmp_path, monkeypatch, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{cost_table.BEGIN}\nold table\n{cost_table.END}\nafter\n")
    monkeypatch.setattr(cost_table, "README", readme)
    table = cost_table.render(cost_table.stages_from_cdk_json())
    assert cost_table.main(["--write"]) == 0
    assert readme.read_text() == f"# Title\n\nbefore\n{cost_table.BEGIN}\n{table}\n{cost_table.END}\nafter\n"
    assert capsys.readouterr().out == ""
    assert cost_table.main([]) == 0
    assert capsys.readouterr().out == table + "\n"
    assert cost_table.readme_table(readme.read_text()) == table


def test_each_stage_row_adds_up():
    from dataclasses import replace

    import pricing
    from stacks.config import StageConfig

    stage = StageConfig(name="qa")
    masters = replace(stage, search=replace(stage.search, dedicated_master_count=3, dedicated_master_instance_type="m7g.large.search"))
    off = replace(masters, inference=replace(masters.inference, enabled=False))
    costs = cost_table.stage_costs(masters)
    search = masters.search
    assert costs["search"] == pytest.approx(
        search.data_node_count * pricing.opensearch_instance_per_hour(search.data_node_instance_type)
        + 3 * pricing.opensearch_instance_per_hour("m7g.large.search")
        + pricing.opensearch_storage_per_hour(search.volume_size_gib * search.data_node_count))
    assert cost_table.stage_costs(off) == {"search": costs["search"], "variant": 0.0, "variants": 0.0}
    rows = cost_table.render([masters, off]).splitlines()
    assert rows[0] == (f"Prices: on-demand list prices, {pricing.prices()['region']}, {pricing.prices()['currency']} per hour, checked "
                       f"{pricing.checked()} (`pricing/prices.json`).")
    inference = masters.inference
    assert rows[4] == (f"| qa | {costs['search']:.2f} ({search.data_node_count} x {search.data_node_instance_type} + 3 x m7g.large.search) | "
                       f"{costs['variant']:.2f} ({inference.min_instances} x {inference.instance_type}) | {costs['variants']:.2f} | "
                       f"{costs['search'] + costs['variants']:.2f} | {costs['search']:.2f} |")
    assert rows[5] == (f"| qa | {costs['search']:.2f} ({search.data_node_count} x {search.data_node_instance_type} + 3 x m7g.large.search) | "
                       f"0.00 (none) | 0.00 | {costs['search']:.2f} | {costs['search']:.2f} |")


# --- command lines ------------------------------------------------------------------------------------

@pytest.mark.parametrize("parser, argv, message", [
    (endpoint_power.parser, ["on"], "the following arguments are required: --stage"),
    (endpoint_power.parser, ["--stage", "dev", "sideways"], "argument power: invalid choice: 'sideways' (choose from 'on', 'off')"),
    (endpoint_power.parser, ["--stage", "dev"], "the following arguments are required: power"),
    (rollback_model.parser, [], "the following arguments are required: --stage"),
    (rollback_model.parser, ["--stage", "dev", "--to", "six"], "argument --to: invalid int value: 'six'"),
    (start_training.parser, ["--data", "d/"], "the following arguments are required: --stage"),
])
def test_command_line_mistakes_are_refused_by_the_parser(capsys, parser, argv, message):
    with pytest.raises(SystemExit) as caught:
        parser().parse_args(argv)
    assert caught.value.code == 2 and capsys.readouterr().err.strip().endswith(message)


@pytest.mark.parametrize("main, argv", [
    (endpoint_power.main, ["--stage", "dev", "off"]), (rollback_model.main, ["--stage", "dev"]),
    (start_training.main, ["--stage", "dev", "--data", "d/"])])
def test_the_region_flag_makes_the_session_and_names_the_region_in_errors(monkeypatch, capsys, main, argv):
    for key in [key for key in os.environ if key.startswith("AWS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    import boto3

    def offline(self, *args, **kwargs):
        raise exceptions.EndpointConnectionError(endpoint_url=f"https://cloudformation.{self.meta.region_name}.amazonaws.com/")

    monkeypatch.setattr(boto3.session.Session, "client", lambda self, name: type("C", (), {
        "describe_stacks": offline, "describe_stack_resources": offline, "meta": type("M", (), {"region_name": self.region_name})()})())
    assert main([*argv, "--region", "eu-west-1"]) == cli.EXIT_ENVIRONMENT
    assert capsys.readouterr().err == ('error: cannot reach AWS in eu-west-1 (Could not connect to the endpoint URL: '
                                       '"https://cloudformation.eu-west-1.amazonaws.com/"): check the network, a proxy, or the region name\n')


def test_a_stage_without_a_deployer_names_the_stack(capsys):
    session = Session("cloudformation", "stepfunctions")
    session.outputs(stack="RagQa-Training", StateMachineArn="x")
    assert endpoint_power.main(["--stage", "qa", "on"], session=session) == cli.EXIT_AWS
    assert capsys.readouterr().err == ("error: stack RagQa-Training has no DeployerArn output: deploy the stage with this checkout first "
                                       "(make deploy STAGE=...)\n")


def test_the_readme_table_needs_both_markers():
    for text in (f"{cost_table.BEGIN}\nrows", f"rows\n{cost_table.END}", "no table"):
        with pytest.raises(ValueError) as caught:
            cost_table.readme_table(text)
        assert str(caught.value) == f"README.md lacks the markers {cost_table.BEGIN!r} ... {cost_table.END!r}"


@pytest.mark.parametrize("parser, does", [
    (endpoint_power.parser, "Switch the stage's Inferentia2 endpoint on or off through its model deployer."),
    (rollback_model.parser, "Deploy the previous approved version of a role through the stage's model deployer."),
    (start_training.parser, "Validate a model pipeline request and start the stage's pipeline."),
])
def test_help_says_what_the_script_does_and_its_exit_statuses(parser, does):
    text = " ".join(parser().format_help().split())
    assert does in text and text.endswith(cli.EXIT_CODES_HELP)
    assert "--hp NAME=VALUE" in text or "--to VERSION" in text or parser is endpoint_power.parser


def test_without_boto3_the_scripts_say_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)  # what `import boto3` sees where it is not installed
    with pytest.raises(cli.OperatorError) as caught:
        cli.make_session("eu-west-1")
    assert (str(caught.value), caught.value.status) == (
        "boto3 is not installed: run `make test` once (it creates .venv) and use .venv/bin/python", cli.EXIT_ENVIRONMENT)


def test_a_rollback_that_waits_polls_every_thirty_seconds(capsys):
    session = Session("cloudformation", "ssm", "sagemaker", "stepfunctions")
    session.outputs(DeployerArn=DEPLOYER, ModelPackageGroupName=GROUP)
    session.stubs["ssm"].add_response("get_parameter", {"Parameter": {"Name": "/rag/dev/serving/finetuned", "Value": "9|models/f9/",
                                                                      "Type": "String"}})
    _registry(session, {9: "finetuned", 8: "finetuned"})
    sfn = session.stubs["stepfunctions"]
    sfn.add_response("start_execution", {"executionArn": EXECUTION, "startDate": T0})
    for status in ("RUNNING", "SUCCEEDED"):
        sfn.add_response("describe_execution", {"executionArn": EXECUTION, "stateMachineArn": DEPLOYER, "status": status, "startDate": T0})
    sleeps: list[float] = []
    assert rollback_model.main(["--stage", "dev", "--wait"], session=session, sleep=sleeps.append) == 0
    assert sleeps == [30.0] and capsys.readouterr().err == "finetuned: 9 -> 8\nexecution running\nexecution succeeded\n"


@pytest.mark.parametrize("main, argv, outputs, missing", [
    (rollback_model.main, ["--stage", "qa"], {"ModelPackageGroupName": GROUP}, "DeployerArn"),
    (rollback_model.main, ["--stage", "qa"], {"DeployerArn": DEPLOYER}, "ModelPackageGroupName"),
])
def test_a_missing_output_names_the_stack(capsys, main, argv, outputs, missing):
    session = Session("cloudformation")
    session.outputs(stack="RagQa-Training", **outputs)
    assert main(argv, session=session) == cli.EXIT_AWS
    assert capsys.readouterr().err == (f"error: stack RagQa-Training has no {missing} output: deploy the stage with this checkout first "
                                       "(make deploy STAGE=...)\n")


def test_the_start_script_without_a_state_machine_output_names_the_stack():
    session = Session("cloudformation")
    session.outputs(stack="RagQa-Training", DeployerArn=DEPLOYER)
    with pytest.raises(cli.OperatorError) as caught:
        start_training.state_machine_arn(session.client("cloudformation"), "qa")
    assert str(caught.value) == ("stack RagQa-Training has no StateMachineArn output: deploy the stage with this checkout first "
                                 "(make deploy STAGE=...)")


def test_the_cost_table_script_reads_its_command_line(tmp_path, monkeypatch, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"{cost_table.BEGIN}\n{cost_table.END}\n")
    monkeypatch.setattr(cost_table, "README", readme)
    monkeypatch.setattr(sys, "argv", ["scripts/cost_table.py", "--write"])
    assert cost_table.main() == 0
    assert capsys.readouterr().out == "" and cost_table.readme_table(readme.read_text()).startswith("Prices: on-demand list prices")
