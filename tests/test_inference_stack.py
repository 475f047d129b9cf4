"""The Inference stack: what CloudFormation would create for a given serving record.

The template does not contain the record: CloudFormation resolves it at deploy time. So these
tests evaluate the synthesized template (tests/cfn_eval.py) under records, the way CloudFormation
would, and prove the lifecycle's promises on the result: the default record creates no endpoint;
two records differ only where a version is read; every transition the deployer runs in one step
keeps what SageMaker requires (same variant names, no scalable target on a removed variant, no
instance type change under autoscaling).
"""

from __future__ import annotations

import json
from pathlib import Path

import aws_cdk as cdk
import pytest

from shared import model_record
from stacks import serving_contract as contract
from stacks.config import load_config
from stacks.inference_stack import InferenceStack
from stacks.storage_stack import StorageStack
from tests.cfn_eval import Evaluator

STAGES = ("dev", "prod")
CDK_CONTEXT = json.loads((Path(__file__).resolve().parents[1] / "cdk.json").read_text())["context"]
BASE_1 = "1|models/ragdev-ft-base-inf2/output/model/"
FT_2 = "2|models/ragdev-ft-run2-inf2/output/model/"
FT_3 = "3|models/ragdev-ft-run3-inf2/output/model/"
EXPECTED_KINDS = {"AWS::IAM::Role", "AWS::IAM::Policy", "AWS::Logs::LogGroup"}


@pytest.fixture(scope="module")
def templates(synth) -> dict[str, dict]:
    return {stage: synth.template(f"Rag{stage.capitalize()}-Inference") for stage in STAGES}


def deployed(template: dict, base="none", finetuned="none", endpoint="on") -> dict[str, dict]:
    """What CloudFormation creates for this record: {logical id: resolved resource}."""
    return Evaluator(template, {"BaseRecord": base, "FinetunedRecord": finetuned, "EndpointPower": endpoint}).resources()


def of_type(resources: dict, kind: str) -> dict:
    return {lid: res for lid, res in resources.items() if res["Type"] == kind}


def one(resources: dict, kind: str) -> dict:
    (resource,) = of_type(resources, kind).values()
    return resource["Properties"]


def differences(left, right, path="") -> list[str]:
    if isinstance(left, dict) and isinstance(right, dict):
        return [d for key in sorted(set(left) | set(right)) for d in differences(left.get(key), right.get(key), f"{path}.{key}")]
    if isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        return [d for i, (a, b) in enumerate(zip(left, right)) for d in differences(a, b, f"{path}[{i}]")]
    return [] if left == right else [path]


# --- the record is read at deploy time -----------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_the_record_is_three_ssm_parameters_resolved_at_deploy_time(templates, stage):
    parameters = {name: spec for name, spec in templates[stage]["Parameters"].items() if name != "BootstrapVersion"}
    assert parameters == {
        "BaseRecord": {"Type": "AWS::SSM::Parameter::Value<String>", "Default": model_record.record_parameter(stage, "base"), "Description": parameters["BaseRecord"]["Description"]},
        "FinetunedRecord": {"Type": "AWS::SSM::Parameter::Value<String>", "Default": model_record.record_parameter(stage, "finetuned"), "Description": parameters["FinetunedRecord"]["Description"]},
        "EndpointPower": {"Type": "AWS::SSM::Parameter::Value<String>", "Default": model_record.power_parameter(stage), "Description": parameters["EndpointPower"]["Description"]},
    }
    # The CDK CLI never skips a deploy of a stack with SSM-typed parameters (it cannot know their
    # values) unless the description opts out; none here does, so `cdk deploy` always re-reads them.
    assert not any("[cdk:skip]" in spec["Description"] for spec in parameters.values())


@pytest.mark.parametrize("stage", STAGES)
def test_the_first_deploy_into_an_empty_account_creates_no_endpoint(templates, stage):
    """The record the Training stack creates: no model for either role, power on."""
    resources = deployed(templates[stage])
    assert {res["Type"] for res in resources.values()} == EXPECTED_KINDS
    log_group = one(resources, "AWS::Logs::LogGroup")
    assert log_group["LogGroupName"] == f"/aws/sagemaker/Endpoints/rag{stage}-generator"


@pytest.mark.parametrize("stage", STAGES)
def test_the_power_off_keeps_only_what_costs_nothing(templates, stage):
    assert {res["Type"] for res in deployed(templates[stage], BASE_1, FT_2, "off").values()} == EXPECTED_KINDS


def test_two_records_differ_only_where_the_version_is_read(templates):
    before = deployed(templates["dev"], BASE_1, FT_2)
    after = deployed(templates["dev"], BASE_1, FT_3)
    assert set(before) == set(after)
    changed = [f"{lid}{path}" for lid in before for path in differences(before[lid], after[lid])]
    (config_id,) = of_type(before, "AWS::SageMaker::EndpointConfig")
    (model_id,) = [lid for lid in of_type(before, "AWS::SageMaker::Model") if "Finetuned" in lid]
    assert sorted(changed) == sorted([
        f"{config_id}.Properties.EndpointConfigName",
        f"{model_id}.Properties.PrimaryContainer.ModelDataSource.S3DataSource.S3Uri",
    ])
    assert before[model_id]["Properties"]["PrimaryContainer"]["ModelDataSource"]["S3DataSource"]["S3Uri"].endswith("/models/ragdev-ft-run2-inf2/output/model/")


def test_synth_is_independent_of_the_record_and_deterministic():
    """An unchanged checkout synthesizes the same template, whatever was deployed since."""
    first, second = (_build({})[0].synth().get_stack_by_name("I").template for _ in range(2))
    assert first == second
    assert "|models/" not in json.dumps(first)  # no record value is baked in: CloudFormation reads it


# --- the endpoint a record gives ----------------------------------------------------------------


@pytest.mark.parametrize("stage, instance_type", [("dev", "ml.inf2.xlarge"), ("prod", "ml.inf2.8xlarge")])
def test_base_and_finetuned_side_by_side_each_scaled_and_alarmed_on_its_own(synth, templates, stage, instance_type):
    inference = synth.config.stages[stage].inference
    resources = deployed(templates[stage], BASE_1, FT_2)
    config = one(resources, "AWS::SageMaker::EndpointConfig")
    assert [v["VariantName"] for v in config["ProductionVariants"]] == ["base", "finetuned"]
    for variant in config["ProductionVariants"]:
        assert variant["InstanceType"] == inference.instance_type == instance_type
        assert variant["InitialInstanceCount"] == inference.min_instances and variant["VolumeSizeInGB"] == inference.volume_size_gib
        assert variant["ModelDataDownloadTimeoutInSeconds"] <= 3600 and variant["ContainerStartupHealthCheckTimeoutInSeconds"] <= 3600
        assert "InferenceAmiVersion" not in variant
    name = config["EndpointConfigName"]
    assert model_record.versions_from_config_name(name) == {"base": "1", "finetuned": "2"}
    assert name.startswith(f"rag{stage}-generator-b1-f2-") and len(name) <= 63
    targets = of_type(resources, "AWS::ApplicationAutoScaling::ScalableTarget")
    assert sorted(t["Properties"]["ResourceId"] for t in targets.values()) == [f"endpoint/rag{stage}-generator/variant/base", f"endpoint/rag{stage}-generator/variant/finetuned"]
    assert {(t["Properties"]["MinCapacity"], t["Properties"]["MaxCapacity"]) for t in targets.values()} == {(inference.min_instances, inference.max_instances)}
    policies = of_type(resources, "AWS::ApplicationAutoScaling::ScalingPolicy")
    assert len(policies) == 2
    alarms = [a["Properties"] for a in of_type(resources, "AWS::CloudWatch::Alarm").values()]
    assert sorted(a["AlarmName"] for a in alarms) == sorted(f"Rag{stage.capitalize()}-generator-{v}-{k}" for v in ("base", "finetuned") for k in ("5xx", "p90-latency"))
    assert all(a["AlarmActions"] and a["OKActions"] for a in alarms)  # every alarm reaches the stage's topic
    endpoint = one(resources, "AWS::SageMaker::Endpoint")
    assert endpoint["EndpointName"] == f"rag{stage}-generator" and endpoint["RetainAllVariantProperties"] is True
    rollback = endpoint["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]
    assert rollback == [{"AlarmName": f"<ref:{lid}>"} for lid, a in of_type(resources, "AWS::CloudWatch::Alarm").items() if a["Properties"]["MetricName"] == "Invocation5XXErrors"]
    assert endpoint["DeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["Type"] == "ALL_AT_ONCE"


def test_one_role_gives_one_variant_and_no_alarm_or_target_for_the_other(templates):
    resources = deployed(templates["dev"], finetuned=FT_2)
    config = one(resources, "AWS::SageMaker::EndpointConfig")
    assert [v["VariantName"] for v in config["ProductionVariants"]] == ["finetuned"]
    assert model_record.versions_from_config_name(config["EndpointConfigName"]) == {"base": None, "finetuned": "2"}
    assert [t["Properties"]["ResourceId"] for t in of_type(resources, "AWS::ApplicationAutoScaling::ScalableTarget").values()] == ["endpoint/ragdev-generator/variant/finetuned"]
    assert {a["Properties"]["Dimensions"][1]["Value"] for a in of_type(resources, "AWS::CloudWatch::Alarm").values()} == {"finetuned"}
    assert len(one(resources, "AWS::SageMaker::Endpoint")["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]) == 1


def test_the_model_is_the_serving_contract_on_the_recorded_prefix(synth, templates):
    resources = deployed(templates["dev"], BASE_1, FT_2)
    models = {lid: res["Properties"] for lid, res in of_type(resources, "AWS::SageMaker::Model").items()}
    (base,) = [m for lid, m in models.items() if "Base" in lid]
    container = base["PrimaryContainer"]
    assert base["EnableNetworkIsolation"] is True and "ModelName" not in base
    assert container["Environment"] == contract.container_environment(synth.config.stages["dev"].inference)
    assert container["ModelDataSource"]["S3DataSource"] == {"S3Uri": "s3://<import:RagDev-Storage:ExportsOutputRefArtifacts82DD59A14F4A635A>/models/ragdev-ft-base-inf2/output/model/", "S3DataType": "S3Prefix", "CompressionType": "None"}


# --- transitions: what SageMaker will and will not accept ----------------------------------------


def variants(resources: dict) -> dict[str, str]:
    config = of_type(resources, "AWS::SageMaker::EndpointConfig")
    if not config:
        return {}
    return {v["VariantName"]: v["InstanceType"] for v in next(iter(config.values()))["Properties"]["ProductionVariants"]}


@pytest.mark.parametrize(
    "before, after",
    [
        ((BASE_1, FT_2, "on"), (BASE_1, FT_3, "on")),  # a new fine-tuned version
        (("none", FT_2, "on"), ("none", FT_3, "on")),
        ((BASE_1, "none", "on"), ("2|models/ragdev-ft-base2-inf2/output/model/", "none", "on")),  # a new base version
    ],
)
def test_one_step_transitions_keep_the_variant_names_and_registered_targets(templates, before, after):
    old, new = deployed(templates["dev"], *before), deployed(templates["dev"], *after)
    assert variants(old) == variants(new)  # blue/green needs the same variant names; no instance type change
    old_targets = {lid for lid in of_type(old, "AWS::ApplicationAutoScaling::ScalableTarget")}
    assert old_targets == set(of_type(new, "AWS::ApplicationAutoScaling::ScalableTarget"))  # nothing removed under the update
    old_config, new_config = (one(r, "AWS::SageMaker::EndpointConfig")["EndpointConfigName"] for r in (old, new))
    assert old_config != new_config  # a named, create-only resource must get a new name to be replaced


@pytest.mark.parametrize(
    "before, after",
    [((BASE_1, "none", "on"), (BASE_1, FT_2, "on")), (("none", FT_2, "on"), (BASE_1, FT_2, "on"))],
)
def test_a_change_of_the_variant_set_goes_through_an_endpoint_that_is_off(templates, before, after):
    """The deployer's two steps: (old record, power off) deletes the endpoint, then the new record creates it."""
    old, middle, new = deployed(templates["dev"], *before), deployed(templates["dev"], *before[:2], "off"), deployed(templates["dev"], *after)
    assert variants(old) != variants(new)
    assert not of_type(middle, "AWS::SageMaker::Endpoint") and not of_type(middle, "AWS::ApplicationAutoScaling::ScalableTarget")
    assert of_type(new, "AWS::SageMaker::Endpoint")


# --- IAM, logs, the stack's interface -----------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_execution_role_reads_models_prefix_pulls_the_image_and_reads_its_rollback_alarms(templates, stage):
    template = templates[stage]
    (policy,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::IAM::Policy"]
    statements = {s["Sid"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"]}
    assert set(statements) == {"ListServingArtifacts", "ReadServingArtifacts", "DecryptServingArtifacts", "PullInferenceImage", "EcrLogin", "WriteEndpointLogs", "EndpointInstanceMetrics", "ReadRollbackAlarms"}
    assert statements["ListServingArtifacts"]["Condition"] == {"StringLike": {"s3:prefix": ["models/*"]}}
    assert statements["ReadServingArtifacts"]["Resource"]["Fn::Join"][1][1] == "/models/*"
    assert statements["ReadRollbackAlarms"]["Action"] == "cloudwatch:DescribeAlarms"
    assert statements["ReadRollbackAlarms"]["Resource"]["Fn::Join"][1][-1] == f":alarm:Rag{stage.capitalize()}-generator-*"
    wildcard = {sid for sid, s in statements.items() if s["Resource"] == "*"}
    assert wildcard == {"EcrLogin", "EndpointInstanceMetrics"}


@pytest.mark.parametrize("stage", STAGES)
def test_the_endpoint_log_group_goes_with_the_stack_so_a_redeploy_can_create_it_again(synth, templates, stage):
    (log_group,) = [r for r in templates[stage]["Resources"].values() if r["Type"] == "AWS::Logs::LogGroup"]
    assert log_group["Properties"]["RetentionInDays"] == synth.config.stages[stage].inference.log_retention_days
    assert log_group["DeletionPolicy"] == "Delete"  # its name is SageMaker's: a retained copy would block the redeploy
    assert "Condition" not in log_group  # survives power off: the logs of earlier runs stay


def test_stack_exposes_what_serving_needs(synth):
    stack = synth.stage("dev").inference
    assert stack.endpoint_name == "ragdev-generator"
    statement = stack.invoke_statement().to_statement_json()
    assert statement["Action"] == "sagemaker:InvokeEndpoint"
    assert stack.resolve(statement["Resource"])["Fn::Join"][1][-1] == ":endpoint/ragdev-generator"
    assert stack.contract.lambda_environment(stack.endpoint_name)["ENDPOINT_NAME"] == "ragdev-generator"


@pytest.mark.parametrize("stage", STAGES)
def test_region_agnostic_template_maps_the_image_and_guards_the_region(templates, stage):
    template = templates[stage]
    assert template["Mappings"][contract.MAPPING_ID] == contract.region_mapping()
    assertion = template["Rules"][contract.RULE_ID]["Assertions"][0]
    assert assertion["Assert"] == {"Fn::Contains": [list(contract.supported_regions()), {"Ref": "AWS::Region"}]}


# --- variants: constructed only (no full-app synthesis) ------------------------------------------


def _build(stage_settings: dict) -> tuple[cdk.App, InferenceStack]:
    stage = load_config({"stages": {"dev": stage_settings}}).stages["dev"]
    app = cdk.App(context={key: value for key, value in CDK_CONTEXT.items() if key != "stages"})
    env = cdk.Environment(account=stage.account, region=stage.region) if stage.region else None
    storage = StorageStack(app, "S", stage=stage, env=env)
    return app, InferenceStack(app, "I", stage=stage, storage=storage, env=env)


def test_serve_base_false_never_has_a_base_variant():
    app, stack = _build({"inference": {"serve_base": False}})
    template = app.synth().get_stack_by_name("I").template
    assert "BaseRecord" not in template["Parameters"]
    resources = deployed(template, finetuned=FT_2)
    assert variants(resources) == {"finetuned": "ml.inf2.xlarge"}
    assert one(resources, "AWS::SageMaker::EndpointConfig")["EndpointConfigName"].startswith("ragdev-generator-b0-f2-")


def test_disabled_stage_has_no_inference_resources():
    _, stack = _build({"inference": {"enabled": False}, "serving": {"default_generator": "bedrock"}})
    assert (stack.generator, stack.endpoint_name, stack.endpoint_arn) == (None, None, None)
    assert not [child for child in stack.node.find_all() if isinstance(child, cdk.CfnResource)]
    assert stack.node.try_find_child(contract.MAPPING_ID) is None
    with pytest.raises(ValueError, match="disabled"):
        stack.invoke_statement()


def test_explicit_supported_region_uses_the_literal_image():
    _, stack = _build({"region": "us-west-2", "account": "111122223333"})
    assert stack.contract.image == contract.IMAGE_URIS["us-west-2"]
    assert stack.node.try_find_child(contract.MAPPING_ID) is None


def test_explicit_unsupported_region_fails_at_synth_with_the_supported_list():
    with pytest.raises(contract.UnsupportedRegionError, match="'eu-north-1'.*supported regions: ap-northeast-1"):
        _build({"region": "eu-north-1"})
    _build({"region": "eu-north-1", "inference": {"enabled": False}, "serving": {"default_generator": "bedrock"}})


def test_a_definition_change_renames_the_endpoint_config():
    names = []
    for settings in ({}, {"inference": {"batch_size": 8}}, {"inference": {"volume_size_gib": 80}}):
        app, _ = _build(settings)
        config = deployed(app.synth().get_stack_by_name("I").template, BASE_1, FT_2)
        names.append(one(config, "AWS::SageMaker::EndpointConfig")["EndpointConfigName"])
    assert len(set(names)) == 3 and all(name.startswith("ragdev-generator-b1-f2-") for name in names)
