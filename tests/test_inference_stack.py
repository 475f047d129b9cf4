"""The inference stack's templates (from the session synth) and its variants (constructed, not synthesized)."""

from __future__ import annotations

import json
from pathlib import Path

import aws_cdk as cdk
import pytest

from stacks import serving_contract as contract
from stacks.config import load_config
from stacks.inference_stack import InferenceStack
from stacks.storage_stack import StorageStack

STAGES = ("dev", "prod")
CDK_CONTEXT = json.loads((Path(__file__).resolve().parents[1] / "cdk.json").read_text())["context"]


def _resources(template: dict, type_name: str) -> dict:
    return {name: res for name, res in template["Resources"].items() if res["Type"] == type_name}


def _one(template: dict, type_name: str) -> dict:
    (resource,) = _resources(template, type_name).values()
    return resource


@pytest.fixture(scope="module")
def templates(synth) -> dict[str, dict]:
    return {stage: synth.template(f"Rag{stage.capitalize()}-Inference") for stage in STAGES}


def _inference(synth, stage):
    return synth.config.stages[stage].inference


@pytest.mark.parametrize("stage", STAGES)
def test_one_complete_endpoint_per_enabled_stage(templates, stage):
    counts = {type_name: len(_resources(templates[stage], type_name)) for type_name in (
        "AWS::SageMaker::Model", "AWS::SageMaker::EndpointConfig", "AWS::SageMaker::Endpoint",
        "AWS::ApplicationAutoScaling::ScalableTarget", "AWS::ApplicationAutoScaling::ScalingPolicy",
        "AWS::CloudWatch::Alarm", "AWS::IAM::Role", "AWS::Logs::LogGroup")}
    assert counts == {"AWS::SageMaker::Model": 1, "AWS::SageMaker::EndpointConfig": 1, "AWS::SageMaker::Endpoint": 1,
                      "AWS::ApplicationAutoScaling::ScalableTarget": 1, "AWS::ApplicationAutoScaling::ScalingPolicy": 1,
                      "AWS::CloudWatch::Alarm": 2, "AWS::IAM::Role": 1, "AWS::Logs::LogGroup": 1}


@pytest.mark.parametrize("stage", STAGES)
def test_model_is_the_serving_contract_on_an_uncompressed_models_prefix(synth, templates, stage):
    model = _one(templates[stage], "AWS::SageMaker::Model")["Properties"]
    container = model["PrimaryContainer"]
    assert model["EnableNetworkIsolation"] is True
    assert model["ExecutionRoleArn"] == {"Fn::GetAtt": [next(iter(_resources(templates[stage], "AWS::IAM::Role"))), "Arn"]}
    assert container["Image"] == {"Fn::FindInMap": [contract.MAPPING_ID, {"Ref": "AWS::Region"}, "Image"]}
    assert container["Mode"] == "SingleModel"
    assert container["Environment"] == contract.container_environment(_inference(synth, stage))
    source = container["ModelDataSource"]["S3DataSource"]
    assert (source["S3DataType"], source["CompressionType"]) == ("S3Prefix", "None")
    parts = source["S3Uri"]["Fn::Join"][1]
    assert parts[0] == "s3://" and "Fn::ImportValue" in parts[1] and parts[2] == "/models/current/"
    assert "ModelDataUrl" not in container and "ModelName" not in model  # no tarball; generated name


@pytest.mark.parametrize("stage, instance_type", [("dev", "ml.inf2.xlarge"), ("prod", "ml.inf2.8xlarge")])
def test_endpoint_config_on_inf2_with_neuron_timeouts(synth, templates, stage, instance_type):
    config = _one(templates[stage], "AWS::SageMaker::EndpointConfig")["Properties"]
    inference = _inference(synth, stage)
    (variant,) = config["ProductionVariants"]
    assert variant["InstanceType"] == inference.instance_type == instance_type
    assert variant["InitialInstanceCount"] == inference.min_instances
    assert variant["VariantName"] == "AllTraffic" and variant["InitialVariantWeight"] == 1
    assert variant["ModelName"] == {"Fn::GetAtt": ["Model", "ModelName"]}
    assert variant["ModelDataDownloadTimeoutInSeconds"] == inference.model_data_download_timeout_s <= 3600
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == inference.startup_health_check_timeout_s <= 3600
    assert variant["VolumeSizeInGB"] == inference.volume_size_gib  # inf2 is EBS-only
    assert "Fn::ImportValue" in config["KmsKeyId"]  # the storage key encrypts the ML volume
    assert "EndpointConfigName" not in config  # generated: a change replaces it, the endpoint updates in place


@pytest.mark.parametrize("stage", STAGES)
def test_endpoint_keeps_scaled_capacity_and_rolls_back_on_5xx(templates, stage):
    template = templates[stage]
    endpoint = _one(template, "AWS::SageMaker::Endpoint")["Properties"]
    (errors_alarm,) = [name for name, res in _resources(template, "AWS::CloudWatch::Alarm").items()
                       if res["Properties"]["MetricName"] == "Invocation5XXErrors"]
    assert endpoint["EndpointName"] == f"rag{stage}-generator"
    assert endpoint["EndpointConfigName"] == {"Fn::GetAtt": ["EndpointConfig", "EndpointConfigName"]}
    assert endpoint["RetainAllVariantProperties"] is True
    deployment = endpoint["DeploymentConfig"]
    assert deployment["AutoRollbackConfiguration"] == {"Alarms": [{"AlarmName": {"Ref": errors_alarm}}]}
    policy = deployment["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"]["Type"] == "ALL_AT_ONCE"
    assert 600 <= policy["MaximumExecutionTimeoutInSeconds"] <= 28800 and policy["TerminationWaitInSeconds"] > 0


@pytest.mark.parametrize("stage, bounds", [("dev", (1, 1)), ("prod", (1, 2))])
def test_target_tracking_on_invocations_per_instance(synth, templates, stage, bounds):
    template = templates[stage]
    target_name, target = next(iter(_resources(template, "AWS::ApplicationAutoScaling::ScalableTarget").items()))
    props = target["Properties"]
    assert (props["MinCapacity"], props["MaxCapacity"]) == bounds
    assert props["ResourceId"] == f"endpoint/rag{stage}-generator/variant/AllTraffic"
    assert (props["ServiceNamespace"], props["ScalableDimension"]) == ("sagemaker", "sagemaker:variant:DesiredInstanceCount")
    assert "RoleARN" not in props  # the service-linked role
    assert target["DependsOn"] == ["Endpoint"]
    policy = _one(template, "AWS::ApplicationAutoScaling::ScalingPolicy")["Properties"]
    assert policy["PolicyType"] == "TargetTrackingScaling" and policy["ScalingTargetId"] == {"Ref": target_name}
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["PredefinedMetricSpecification"] == {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}
    assert tracking["TargetValue"] == _inference(synth, stage).target_invocations_per_instance
    assert tracking["ScaleInCooldown"] > tracking["ScaleOutCooldown"] > 0


@pytest.mark.parametrize("stage", STAGES)
def test_alarms_on_5xx_errors_and_model_latency(synth, templates, stage):
    inference = _inference(synth, stage)
    alarms = {res["Properties"]["MetricName"]: res["Properties"] for res in _resources(templates[stage], "AWS::CloudWatch::Alarm").values()}
    dimensions = [{"Name": "EndpointName", "Value": f"rag{stage}-generator"}, {"Name": "VariantName", "Value": "AllTraffic"}]
    errors, latency = alarms["Invocation5XXErrors"], alarms["ModelLatency"]
    assert errors["Namespace"] == latency["Namespace"] == "AWS/SageMaker"
    assert errors["Dimensions"] == latency["Dimensions"] == dimensions
    assert (errors["Statistic"], errors["Threshold"], errors["ComparisonOperator"]) == ("Sum", inference.errors_alarm_threshold, "GreaterThanOrEqualToThreshold")
    assert (latency["ExtendedStatistic"], latency["ComparisonOperator"]) == ("p90", "GreaterThanThreshold")
    assert latency["Threshold"] == inference.latency_alarm_p90_s * 1_000_000  # ModelLatency is in microseconds
    assert errors["TreatMissingData"] == latency["TreatMissingData"] == "notBreaching"


@pytest.mark.parametrize("stage", STAGES)
def test_execution_role_reads_models_prefix_pulls_the_image_and_writes_its_logs(templates, stage):
    template = templates[stage]
    role = _one(template, "AWS::IAM::Role")["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}}]
    assert "ManagedPolicyArns" not in role and "Policies" not in role
    statements = {s["Sid"]: s for s in _one(template, "AWS::IAM::Policy")["Properties"]["PolicyDocument"]["Statement"]}
    assert set(statements) == {"ListServingArtifacts", "ReadServingArtifacts", "DecryptServingArtifacts",
                               "PullInferenceImage", "EcrLogin", "WriteEndpointLogs", "EndpointInstanceMetrics"}
    assert statements["ListServingArtifacts"]["Condition"] == {"StringLike": {"s3:prefix": ["models/*"]}}
    assert statements["ReadServingArtifacts"]["Action"] == "s3:GetObject"
    assert statements["ReadServingArtifacts"]["Resource"]["Fn::Join"][1][1] == "/models/*"
    assert statements["DecryptServingArtifacts"]["Action"] == "kms:Decrypt"
    assert sorted(statements["PullInferenceImage"]["Action"]) == ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    assert statements["PullInferenceImage"]["Resource"]["Fn::Join"][1][-1] == ":repository/huggingface-vllm-inference-neuronx"
    assert statements["WriteEndpointLogs"]["Resource"] == {"Fn::GetAtt": [next(iter(_resources(template, "AWS::Logs::LogGroup"))), "Arn"]}
    wildcard = {sid for sid, s in statements.items() if s["Resource"] == "*"}
    assert wildcard == {"EcrLogin", "EndpointInstanceMetrics"}
    everything = json.dumps(list(statements.values()))
    assert '"s3:*"' not in everything and '"*:*"' not in everything and "training-output" not in everything


@pytest.mark.parametrize("stage", STAGES)
def test_region_agnostic_template_maps_the_image_and_guards_the_region(templates, stage):
    template = templates[stage]
    assert template["Mappings"][contract.MAPPING_ID] == contract.region_mapping()
    assertion = template["Rules"][contract.RULE_ID]["Assertions"][0]
    assert assertion["Assert"] == {"Fn::Contains": [list(contract.supported_regions()), {"Ref": "AWS::Region"}]}
    assert ", ".join(contract.supported_regions()) in assertion["AssertDescription"]


@pytest.mark.parametrize("stage", STAGES)
def test_log_group_is_the_one_sagemaker_writes_with_retention(synth, templates, stage):
    log_group = _one(templates[stage], "AWS::Logs::LogGroup")
    assert log_group["Properties"]["LogGroupName"] == f"/aws/sagemaker/Endpoints/rag{stage}-generator"
    assert log_group["Properties"]["RetentionInDays"] == _inference(synth, stage).log_retention_days
    assert log_group["DeletionPolicy"] == ("Retain" if synth.config.stages[stage].retain_data else "Delete")


def test_stack_exposes_what_training_and_serving_need(synth):
    stack = synth.stage("dev").inference
    assert isinstance(stack, InferenceStack)
    assert stack.endpoint_name == "ragdev-generator" and stack.endpoint is not None
    assert stack.execution_role is not None and isinstance(stack.contract, contract.ServingContract)
    assert stack.contract.lambda_environment(stack.endpoint_name)["ENDPOINT_NAME"] == "ragdev-generator"
    statement = stack.invoke_statement().to_statement_json()
    assert statement["Action"] == "sagemaker:InvokeEndpoint"
    assert stack.resolve(statement["Resource"])["Fn::Join"][1][-1] == ":endpoint/ragdev-generator"


# --- variants: constructed only (no synthesis), so they cost milliseconds ----------------------------

def _build(stage_settings: dict) -> tuple[cdk.App, InferenceStack]:
    stage = load_config({"stages": {"dev": stage_settings}}).stages["dev"]
    flags = {key: value for key, value in CDK_CONTEXT.items() if key != "stages"}  # cdk.json's feature flags
    app = cdk.App(context=flags)
    env = cdk.Environment(account=stage.account, region=stage.region) if stage.region else None
    storage = StorageStack(app, "S", stage=stage, env=env)
    return app, InferenceStack(app, "I", stage=stage, storage=storage, env=env)


def test_disabled_stage_keeps_only_the_execution_role():
    _, stack = _build({"inference": {"enabled": False}, "serving": {"default_generator": "bedrock"}})
    assert (stack.endpoint, stack.endpoint_name, stack.endpoint_arn, stack.model, stack.scalable_target) == (None,) * 5
    kinds = {child.cfn_resource_type for child in stack.node.find_all() if isinstance(child, cdk.CfnResource)}
    assert kinds == {"AWS::IAM::Role", "AWS::IAM::Policy"}
    assert stack.node.try_find_child(contract.MAPPING_ID) is None  # no region rule either
    with pytest.raises(ValueError, match="disabled"):
        stack.invoke_statement()


def test_explicit_supported_region_uses_the_literal_image():
    _, stack = _build({"region": "us-west-2", "account": "111122223333"})
    assert stack.contract.image == contract.IMAGE_URIS["us-west-2"]
    assert stack.node.try_find_child(contract.MAPPING_ID) is None


def test_explicit_unsupported_region_fails_at_synth_with_the_supported_list():
    with pytest.raises(contract.UnsupportedRegionError, match="'eu-north-1'.*supported regions: ap-northeast-1"):
        _build({"region": "eu-north-1"})
    _build({"region": "eu-north-1", "inference": {"enabled": False}, "serving": {"default_generator": "bedrock"}})  # fine without an endpoint
