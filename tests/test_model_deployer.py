"""The model deployer, run offline: the synthesized state machine, every JSONata expression evaluated
by the reference engine, AWS answering from a script. One test per lifecycle transition and per
failure branch (busy stack, no-op update, rolled-back update, failed restore, refused requests).
"""

from __future__ import annotations

import json

import pytest

from tests.sfn_interpreter import Interpreter, ServiceError, Services, definition_from_template

STAGE = "dev"
PATH = f"/rag/{STAGE}/serving/"
BUCKET = "ragdev-artifacts-1a2b3c"
GROUP = "ragdev-models-0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"  # the name's suffix is the stack id's UUID (tests/cfn_eval.py)
PACKAGE = f"arn:aws:sagemaker:us-east-1:111122223333:model-package/{GROUP}/"
EXEC_ROLE = "arn:aws:iam::111122223333:role/cdk-hnb659fds-cfn-exec-role-111122223333-us-east-1"


def imports(template: dict) -> dict[str, str]:
    names = {value for value in json.dumps(template).split('"') if value.startswith("RagDev-Storage:")}
    return {name: BUCKET for name in names if "ExportsOutputRefArtifacts" in name}


@pytest.fixture(scope="module")
def definition(synth):
    template = synth.template("RagDev-Training")
    return definition_from_template(template, "Deployer", imports=imports(template))


@pytest.fixture(scope="module")
def prod_definition(synth):
    template = synth.template("RagProd-Training")
    found = {value: BUCKET.replace("dev", "prod") for value in json.dumps(template).split('"') if "ExportsOutputRefArtifacts" in value}
    return definition_from_template(template, "Deployer", imports=found)


def record(base="none", finetuned="none", endpoint="on") -> dict:
    return {"base": base, "finetuned": finetuned, "endpoint": endpoint}


def package(version: int, role: str, *, approval="Approved", group=GROUP, prefix=None) -> dict:
    uri = f"s3://{BUCKET}/{prefix or f'models/ragdev-ft-run{version}-inf2/output/model/'}"
    return {
        "ModelPackageArn": f"{PACKAGE}{version}", "ModelPackageGroupName": group, "ModelPackageVersion": version,
        "ModelApprovalStatus": approval, "CustomerMetadataProperties": {"Role": role, "JobName": f"ragdev-ft-run{version}"},
        "InferenceSpecification": {"Containers": [{"Image": "img", "ModelDataSource": {"S3DataSource": {"S3Uri": uri, "S3DataType": "S3Prefix", "CompressionType": "None"}}}]},
    }


class Aws(Services):
    """SSM that remembers what is written, and a stack whose updates answer from a script."""

    def __init__(self, current: dict, *, missing: tuple = ()) -> None:
        super().__init__()
        self.ssm = {PATH + key: value for key, value in current.items()}
        self.missing = missing
        self.default("ssm:getParameters", self._get)
        self.default("ssm:putParameter", self._put)
        self.default("sns:publish", lambda arguments: {"MessageId": "m-1"})

    def _get(self, arguments: dict) -> dict:
        found = [{"Name": name, "Value": self.ssm[name], "Type": "String"} for name in arguments["Names"] if name not in self.missing]
        return {"Parameters": found, "InvalidParameters": [name for name in arguments["Names"] if name in self.missing]}

    def _put(self, arguments: dict) -> dict:
        assert arguments["Overwrite"] is True and arguments["Type"] == "String"
        self.ssm[arguments["Name"]] = arguments["Value"]
        return {"Version": 7, "Tier": "Standard"}

    def record(self) -> dict:
        return {name[len(PATH):]: value for name, value in self.ssm.items()}

    def stack_updates(self, *outcomes: str) -> "Aws":
        """Each outcome: 'ok' (update in progress then complete), 'noop', 'busy', 'rollback', 'refused'."""
        for outcome in outcomes:
            if outcome == "noop":
                self.answer("cloudformation:updateStack", ServiceError("CloudFormation.CloudFormationException", "No updates are to be performed."))
            elif outcome == "busy":
                self.answer("cloudformation:updateStack", ServiceError("CloudFormation.CloudFormationException", "Stack:arn:aws:cloudformation:us-east-1:111122223333:stack/RagDev-Inference/x is in UPDATE_IN_PROGRESS state and can not be updated."))
            elif outcome == "refused":
                self.answer("cloudformation:updateStack", ServiceError("CloudFormation.CloudFormationException", "Parameters: [BaseRecord] must have values"))
            else:
                self.answer("cloudformation:updateStack", {"StackId": "arn:aws:cloudformation:us-east-1:111122223333:stack/RagDev-Inference/x"})
                final = {"ok": "UPDATE_COMPLETE", "rollback": "UPDATE_ROLLBACK_COMPLETE"}[outcome]
                self.answer("cloudformation:describeStacks",
                            {"Stacks": [{"StackName": "RagDev-Inference", "StackStatus": "UPDATE_IN_PROGRESS"}]},
                            {"Stacks": [{"StackName": "RagDev-Inference", "StackStatus": final, "StackStatusReason": "Resource handler returned message: \"ResourceLimitExceeded\"" if outcome == "rollback" else None}]})
        return self

    def notifications(self) -> list[dict]:
        return [json.loads(arguments["Message"]) for arguments in self.called("sns:publish")]

    def written(self) -> list[tuple[str, str]]:
        return [(arguments["Name"][len(PATH):], arguments["Value"]) for arguments in self.called("ssm:putParameter")]


def run(jsonata, definition, aws: Aws, request: dict):
    return Interpreter(jsonata, definition, aws).run(request)


def deploy(version: int, source="approval") -> dict:
    return {"action": "deploy", "model_package_arn": f"{PACKAGE}{version}", "source": source}


# --- the stack update it asks for ------------------------------------------------------------------


def test_update_stack_reapplies_the_previous_template_with_every_parameter_reread(jsonata, definition):
    aws = Aws(record()).answer("sagemaker:describeModelPackage", package(1, "base")).stack_updates("ok")
    result = run(jsonata, definition, aws, deploy(1))
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    (update,) = aws.called("cloudformation:updateStack")
    assert update == {
        "StackName": "RagDev-Inference",
        "UsePreviousTemplate": True,
        "Parameters": [{"ParameterKey": key, "UsePreviousValue": True} for key in ("BaseRecord", "FinetunedRecord", "EndpointPower")],
        "Capabilities": ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
        "RoleARN": EXEC_ROLE,
    }
    assert not any("UpdateEndpoint" in name or name.startswith("sagemaker:update") for name, _ in aws.calls)


# --- transitions -----------------------------------------------------------------------------------


def test_none_to_base_is_one_step_that_creates_the_endpoint(jsonata, definition):
    aws = Aws(record()).answer("sagemaker:describeModelPackage", package(1, "base")).stack_updates("ok")
    result = run(jsonata, definition, aws, deploy(1))
    assert result.status == "SUCCEEDED"
    assert aws.record() == record(base="1|models/ragdev-ft-run1-inf2/output/model/")
    assert len(aws.called("cloudformation:updateStack")) == 1
    (message,) = aws.notifications()
    assert message["outcome"] == "deployed" and message["package"]["version"] == "1" and message["package"]["role"] == "base"


def test_base_to_base_and_finetuned_switches_the_endpoint_off_then_applies_both(jsonata, definition):
    base = "1|models/ragdev-ft-run1-inf2/output/model/"
    aws = Aws(record(base=base)).answer("sagemaker:describeModelPackage", package(2, "finetuned")).stack_updates("ok", "ok")
    result = run(jsonata, definition, aws, deploy(2))
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    first, second = [dict(aws.written()[i:i + 3]) for i in (0, 3)]
    assert first == record(base=base, endpoint="off")  # step 1: the old record with the power off
    assert second == record(base=base, finetuned="2|models/ragdev-ft-run2-inf2/output/model/")  # step 2: the new one, on
    assert len(aws.called("cloudformation:updateStack")) == 2
    assert aws.notifications()[-1]["outcome"] == "deployed"


def test_a_new_finetuned_version_is_one_in_place_update(jsonata, definition):
    base, old = "1|models/b/", "2|models/ragdev-ft-run2-inf2/output/model/"
    aws = Aws(record(base=base, finetuned=old)).answer("sagemaker:describeModelPackage", package(3, "finetuned")).stack_updates("ok")
    result = run(jsonata, definition, aws, deploy(3))
    assert result.status == "SUCCEEDED"
    assert aws.record() == record(base=base, finetuned="3|models/ragdev-ft-run3-inf2/output/model/")
    assert len(aws.called("cloudformation:updateStack")) == 1


@pytest.mark.parametrize("power, before", [("off", "on"), ("on", "off")])
def test_power_switch_is_one_step_and_keeps_the_versions(jsonata, definition, power, before):
    current = record(base="1|models/b/", finetuned="2|models/f/", endpoint=before)
    aws = Aws(current).stack_updates("ok")
    result = run(jsonata, definition, aws, {"action": "power", "power": power, "source": "schedule"})
    assert result.status == "SUCCEEDED"
    assert aws.record() == {**current, "endpoint": power}
    assert len(aws.called("cloudformation:updateStack")) == 1


def test_rollback_to_an_older_version_is_accepted_from_the_rollback_command(jsonata, definition):
    aws = Aws(record(finetuned="5|models/f5/")).answer("sagemaker:describeModelPackage", package(4, "finetuned")).stack_updates("ok")
    result = run(jsonata, definition, aws, deploy(4, source="rollback"))
    assert result.status == "SUCCEEDED"
    assert aws.record()["finetuned"] == "4|models/ragdev-ft-run4-inf2/output/model/"


def test_a_base_model_after_a_finetuned_one_also_takes_the_off_on_path(jsonata, definition):
    finetuned = "3|models/f3/"
    aws = Aws(record(finetuned=finetuned)).answer("sagemaker:describeModelPackage", package(4, "base")).stack_updates("ok", "ok")
    result = run(jsonata, definition, aws, deploy(4))
    assert result.status == "SUCCEEDED"
    assert dict(aws.written()[:3])["endpoint"] == "off" and aws.record() == record(base="4|models/ragdev-ft-run4-inf2/output/model/", finetuned=finetuned)


def test_a_version_for_a_stopped_endpoint_is_recorded_and_stays_off(jsonata, definition):
    aws = Aws(record(base="1|models/b/", endpoint="off")).answer("sagemaker:describeModelPackage", package(2, "finetuned")).stack_updates("ok")
    result = run(jsonata, definition, aws, deploy(2))
    assert result.status == "SUCCEEDED"
    assert aws.record()["endpoint"] == "off" and aws.record()["finetuned"].startswith("2|")
    assert len(aws.called("cloudformation:updateStack")) == 1


# --- CloudFormation's answers --------------------------------------------------------------------


def test_no_updates_to_perform_counts_as_done(jsonata, definition):
    current = record(base="1|models/ragdev-ft-run1-inf2/output/model/")
    aws = Aws(current).answer("sagemaker:describeModelPackage", package(1, "base")).stack_updates("noop")
    result = run(jsonata, definition, aws, deploy(1))
    assert result.status == "SUCCEEDED"
    assert aws.notifications()[-1]["outcome"] == "deployed"
    assert not aws.called("cloudformation:describeStacks")


def test_another_update_in_progress_is_waited_for(jsonata, definition):
    aws = Aws(record()).answer("sagemaker:describeModelPackage", package(1, "base")).stack_updates("busy", "busy", "ok")
    result = run(jsonata, definition, aws, deploy(1))
    assert result.status == "SUCCEEDED"
    assert len(aws.called("cloudformation:updateStack")) == 3
    assert result.path.count("WaitForOtherUpdate") == 2


def test_a_rolled_back_update_restores_the_previous_record_and_reports_it(jsonata, definition):
    current = record(base="1|models/b/", finetuned="2|models/f2/")
    aws = Aws(current).answer("sagemaker:describeModelPackage", package(3, "finetuned")).stack_updates("rollback", "noop")
    result = run(jsonata, definition, aws, deploy(3))
    assert result.status == "FAILED" and result.error == "rolled_back"
    assert "UPDATE_ROLLBACK_COMPLETE" in result.cause and "ResourceLimitExceeded" in result.cause
    assert aws.record() == current  # the record says again what CloudFormation rolled back to
    assert [value for name, value in aws.written() if name == "finetuned"] == ["3|models/ragdev-ft-run3-inf2/output/model/", "2|models/f2/"]
    assert aws.notifications()[-1]["outcome"] == "rolled_back"


def test_a_failure_in_the_second_step_restores_the_running_endpoint(jsonata, definition):
    base = "1|models/b/"
    aws = Aws(record(base=base)).answer("sagemaker:describeModelPackage", package(2, "finetuned")).stack_updates("ok", "rollback", "ok")
    result = run(jsonata, definition, aws, deploy(2))
    assert result.status == "FAILED" and result.error == "rolled_back"
    assert aws.record() == record(base=base)  # power on again with the base alone
    assert len(aws.called("cloudformation:updateStack")) == 3


def test_a_refused_update_is_restored_and_reported(jsonata, definition):
    aws = Aws(record()).answer("sagemaker:describeModelPackage", package(1, "base")).stack_updates("refused", "noop")
    result = run(jsonata, definition, aws, deploy(1))
    assert result.status == "FAILED" and result.error == "rolled_back"
    assert "must have values" in result.cause
    assert aws.record() == record()


def test_a_failed_restore_is_reported_with_both_reasons(jsonata, definition):
    aws = Aws(record()).answer("sagemaker:describeModelPackage", package(1, "base")).stack_updates("rollback", "rollback")
    result = run(jsonata, definition, aws, deploy(1))
    assert result.status == "FAILED" and result.error == "restore_failed"
    assert result.cause.count("UPDATE_ROLLBACK_COMPLETE") == 2 and "restoring the previous record failed too" in result.cause
    assert aws.notifications()[-1]["outcome"] == "restore_failed"


def test_an_ssm_failure_while_writing_restores(jsonata, definition):
    aws = Aws(record()).answer("sagemaker:describeModelPackage", package(1, "base"))
    aws.answer("ssm:putParameter", ServiceError("Ssm.SsmException", "Rate exceeded"))
    aws.stack_updates("noop")
    result = run(jsonata, definition, aws, deploy(1))
    assert result.status == "FAILED" and result.error == "rolled_back" and "Rate exceeded" in result.cause


# --- requests it refuses, without touching anything ----------------------------------------------


@pytest.mark.parametrize(
    "current, answer, source, fragment",
    [
        (record(), package(1, "finetuned", approval="PendingManualApproval"), "approval", "is PendingManualApproval, not Approved"),
        (record(), package(1, "finetuned", group="another-group"), "approval", "not in the registry of this stage"),
        (record(), package(1, "teacher"), "approval", "role teacher has no variant"),
        (record(), package(1, "finetuned", prefix="training-output/x/"), "approval", "not under the serving prefix models/"),
        (record(finetuned="7|models/f7/"), package(6, "finetuned"), "approval", "older than the finetuned version serving (7|models/f7/)"),
    ],
)
def test_packages_that_must_not_deploy_are_skipped_and_reported(jsonata, definition, current, answer, source, fragment):
    aws = Aws(current).answer("sagemaker:describeModelPackage", answer)
    result = run(jsonata, definition, aws, deploy(answer["ModelPackageVersion"], source=source))
    assert result.status == "SUCCEEDED"
    (message,) = aws.notifications()
    assert message["outcome"] == "skipped" and fragment in message["reason"]
    assert not aws.called("ssm:putParameter") and not aws.called("cloudformation:updateStack")


@pytest.fixture(scope="module")
def no_base_definition(synth):
    """A stage with inference.serve_base false: its deployer knows the finetuned role only.

    (`synth` only orders its tests with the others of this module: the suite runs synth-based
    tests first, and the expression-coverage test at the end must come after these.)"""
    import aws_cdk as cdk

    from stacks.config import load_config
    from stacks.storage_stack import StorageStack
    from stacks.training_stack import TrainingStack
    from tests.conftest import cdk_json_context

    stage = load_config({"stages": {"dev": {"inference": {"serve_base": False}}}}).stages["dev"]
    app = cdk.App(context={key: value for key, value in cdk_json_context().items() if key != "stages"})
    storage = StorageStack(app, "RagDev-Storage", stage=stage)
    TrainingStack(app, "RagDev-Training", stage=stage, storage=storage)
    template = app.synth().get_stack_by_name("RagDev-Training").template
    return definition_from_template(template, "Deployer", imports=imports(template))


def test_base_versions_are_skipped_where_serve_base_is_false(jsonata, no_base_definition):
    aws = Aws(record()).answer("sagemaker:describeModelPackage", package(1, "base"))
    result = run(jsonata, no_base_definition, aws, deploy(1))
    assert result.status == "SUCCEEDED"
    assert aws.notifications()[0]["outcome"] == "skipped" and "role base has no variant on this stage" in aws.notifications()[0]["reason"]
    parameters = aws.called("cloudformation:updateStack")
    assert not parameters
    aws = Aws(record()).answer("sagemaker:describeModelPackage", package(2, "finetuned")).stack_updates("ok")
    assert run(jsonata, no_base_definition, aws, deploy(2)).status == "SUCCEEDED"
    assert [p["ParameterKey"] for p in aws.called("cloudformation:updateStack")[0]["Parameters"]] == ["FinetunedRecord", "EndpointPower"]


@pytest.mark.parametrize("request_", [{"action": "deploy"}, {"action": "power", "power": "dim"}, {"action": "dance"}, {}])
def test_invalid_requests_fail_and_are_reported(jsonata, definition, request_):
    aws = Aws(record())
    result = run(jsonata, definition, aws, request_)
    assert result.status == "FAILED" and result.error == "invalid"
    assert aws.notifications()[0]["outcome"] == "invalid"
    assert not aws.called("ssm:putParameter")


def test_a_missing_record_parameter_fails_naming_it(jsonata, definition):
    aws = Aws(record(), missing=(PATH + "endpoint",))
    result = run(jsonata, definition, aws, {"action": "power", "power": "on"})
    assert result.status == "FAILED" and "/rag/dev/serving/endpoint" in result.cause and "redeploy the Training stack" in result.cause


def test_an_unreadable_package_fails_before_writing(jsonata, definition):
    aws = Aws(record()).answer("sagemaker:describeModelPackage", ServiceError("SageMaker.SageMakerException", "ValidationException: Model package not found"))
    result = run(jsonata, definition, aws, deploy(9))
    assert result.status == "FAILED" and result.error == "failed" and "not found" in result.cause
    assert not aws.called("ssm:putParameter")


def test_prod_deployer_uses_its_own_stage(jsonata, prod_definition):
    aws = Aws(record())
    aws.ssm = {key.replace("/dev/", "/prod/"): value for key, value in aws.ssm.items()}
    aws.default("ssm:getParameters", lambda a: {"Parameters": [{"Name": n, "Value": aws.ssm[n]} for n in a["Names"]], "InvalidParameters": []})
    aws.default("ssm:putParameter", lambda a: aws.ssm.__setitem__(a["Name"], a["Value"]) or {"Version": 1})
    aws.stack_updates("ok")
    result = run(jsonata, prod_definition, aws, {"action": "power", "power": "off"})
    assert result.status == "SUCCEEDED"
    assert aws.ssm["/rag/prod/serving/endpoint"] == "off"
    assert aws.called("cloudformation:updateStack")[0]["StackName"] == "RagProd-Inference"



def test_every_jsonata_expression_of_the_deployer_was_evaluated_by_the_tests_above(definition, no_base_definition):
    from tests.sfn_interpreter import expressions_in

    for machine in (definition, no_base_definition):
        untried = expressions_in(machine) - Interpreter.evaluated
        assert not untried, f"no test evaluated: {sorted(untried)}"
