"""The serving contract (stacks/serving_contract.py), its maintenance script and the inference config.

No synthesis here: stacks are only constructed (cheap) to resolve tokens.
"""

import importlib.util
import json
import re
from pathlib import Path

import aws_cdk as cdk
import pytest

from stacks import serving_contract as contract
from stacks.config import (
    INF2_NEURON_CORES,
    ConfigError,
    InferenceConfig,
    inf2_min_tensor_parallel,
    load_config,
)

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("image_uris_script", ROOT / "scripts" / "image_uris.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- image URIs ------------------------------------------------------------------------------

def test_every_pinned_uri_is_the_vllm_neuronx_image_of_its_region():
    assert len(contract.IMAGE_URIS) >= 5 and "us-east-1" in contract.IMAGE_URIS
    pattern = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com/([a-z0-9-]+):(\S+)$")
    for region, uri in contract.IMAGE_URIS.items():
        account, host_region, repository, tag = pattern.match(uri).groups()
        assert (account, host_region, repository, tag) == ("763104351884", region, contract.IMAGE_REPOSITORY, contract.IMAGE_TAG)
    assert "neuronx" in contract.IMAGE_TAG and f"optimum{contract.SDK_FRAMEWORK_VERSION}" in contract.IMAGE_TAG


def test_unsupported_region_fails_naming_every_supported_region():
    with pytest.raises(contract.UnsupportedRegionError) as caught:
        contract.image_uri("eu-north-1")
    message = str(caught.value)
    assert "'eu-north-1'" in message
    for region in contract.IMAGE_URIS:
        assert region in message


def test_concrete_region_stack_gets_the_literal_uri_and_no_mapping():
    app = cdk.App()
    stack = cdk.Stack(app, "Concrete", env=cdk.Environment(account="111122223333", region="eu-west-1"))
    assert contract.image_uri_for(stack) == contract.IMAGE_URIS["eu-west-1"]
    assert contract.image_repository_arn_for(stack).endswith(":ecr:eu-west-1:763104351884:repository/huggingface-vllm-inference-neuronx")
    assert stack.node.try_find_child("ServingImageByRegion") is None


def test_concrete_unsupported_region_fails_when_the_stack_asks():
    app = cdk.App()
    stack = cdk.Stack(app, "Elsewhere", env=cdk.Environment(region="eu-north-1"))
    bound = contract.ServingContract.for_stack(stack, InferenceConfig())  # lazy: a disabled stage never asks
    with pytest.raises(contract.UnsupportedRegionError, match="supported regions: ap-northeast-1"):
        bound.container_definition("s3://b/models/current/")


def test_region_agnostic_stack_resolves_through_one_mapping_and_a_region_rule():
    app = cdk.App()
    stack = cdk.Stack(app, "Agnostic")
    image = contract.image_uri_for(stack)
    repository = contract.image_repository_arn_for(stack)
    assert stack.resolve(image) == {"Fn::FindInMap": [contract.MAPPING_ID, {"Ref": "AWS::Region"}, "Image"]}
    assert {"Fn::FindInMap": [contract.MAPPING_ID, {"Ref": "AWS::Region"}, "Account"]} in stack.resolve(repository)["Fn::Join"][1]
    assert isinstance(stack.node.find_child(contract.MAPPING_ID), cdk.CfnMapping)
    assert isinstance(stack.node.find_child(contract.RULE_ID), cdk.CfnRule)
    assert len(stack.node.children) == 2  # asked twice, created once
    mapping = contract.region_mapping()
    assert {region: row["Image"] for region, row in mapping.items()} == contract.IMAGE_URIS
    assert all(row["Account"] == "763104351884" for row in mapping.values())
    with pytest.raises(ValueError, match="concrete region"):
        contract.image_uri(cdk.Aws.REGION)


# --- container definition ---------------------------------------------------------------------

def test_container_environment_drives_optimum_neuron_serve():
    env = contract.container_environment(InferenceConfig(instance_type="ml.inf2.24xlarge", tensor_parallel_size=8, batch_size=8, sequence_length=8192))
    assert env["SM_ON_MODEL"] == "/opt/ml/model" == contract.MODEL_DIR
    assert env["SM_ON_SERVED_MODEL_NAME"] == contract.SERVED_MODEL_NAME
    assert (env["SM_ON_TENSOR_PARALLEL_SIZE"], env["SM_ON_BATCH_SIZE"], env["SM_ON_SEQUENCE_LENGTH"]) == ("8", "8", "8192")
    assert env["HF_HUB_OFFLINE"] == "1"
    assert all(isinstance(value, str) for value in env.values())  # SageMaker wants strings


def test_container_definition_reads_an_uncompressed_prefix():
    definition = contract.container_definition(region="us-west-2", model_s3_uri="s3://artifacts/models/current/", inference=InferenceConfig())
    assert definition == {
        "Image": contract.IMAGE_URIS["us-west-2"],
        "Mode": "SingleModel",
        "ModelDataSource": {"S3DataSource": {"S3Uri": "s3://artifacts/models/current/", "S3DataType": "S3Prefix", "CompressionType": "None"}},
        "Environment": contract.container_environment(InferenceConfig()),
    }
    assert "ModelDataUrl" not in definition  # no model.tar.gz


@pytest.mark.parametrize("uri", ["s3://artifacts/models/model.tar.gz", "s3://artifacts/models/current", "https://x/models/current/"])
def test_container_definition_rejects_what_is_not_an_s3_prefix(uri):
    with pytest.raises(ValueError, match="model_s3_uri"):
        contract.container_definition(region="us-east-1", model_s3_uri=uri, inference=InferenceConfig())


def test_step_functions_placeholders_pass_through():
    definition = contract.container_definition_with_image(image="img", model_s3_uri="$.model.s3_uri", inference=InferenceConfig())
    assert definition["ModelDataSource"]["S3DataSource"]["S3Uri"] == "$.model.s3_uri"


def test_contract_object_binds_everything_for_the_training_and_serving_stacks():
    app = cdk.App()
    stack = cdk.Stack(app, "Bound", env=cdk.Environment(region="us-east-1"))
    inference = InferenceConfig(batch_size=2, sequence_length=2048)
    bound = contract.ServingContract.for_stack(stack, inference)
    model = bound.model_definition(model_s3_uri="s3://b/models/v7/", execution_role_arn="arn:aws:iam::111122223333:role/r")
    assert model["PrimaryContainer"] == bound.container_definition("s3://b/models/v7/")
    assert model["EnableNetworkIsolation"] is True
    assert model["ExecutionRoleArn"].endswith(":role/r")
    assert bound.lambda_environment("ragdev-generator") == {
        "ENDPOINT_NAME": "ragdev-generator", "ENDPOINT_MODEL_NAME": "rag-generator", "ENDPOINT_SEQUENCE_LENGTH": "2048"}
    # The compile flags and the serving flags agree, so the container accepts the compiled model.
    flags = dict(zip(bound.neuron_export_arguments()[::2], bound.neuron_export_arguments()[1::2]))
    env = bound.environment
    assert flags == {"--instance_type": "inf2", "--tensor_parallel_size": env["SM_ON_TENSOR_PARALLEL_SIZE"],
                     "--batch_size": env["SM_ON_BATCH_SIZE"], "--sequence_length": env["SM_ON_SEQUENCE_LENGTH"]}


def test_every_inf2_type_is_ebs_only_so_takes_a_volume_size():
    assert all(contract.supports_volume_size(instance) for instance in INF2_NEURON_CORES)
    assert not contract.supports_volume_size("ml.g5.xlarge")  # NVMe instance store


# --- the maintenance script ---------------------------------------------------------------------

def test_script_reads_the_pinned_block_and_would_write_it_unchanged():
    script = _script()
    source = (ROOT / "stacks" / "serving_contract.py").read_text()
    pinned = script.read_pinned(source)
    assert pinned["IMAGE_URIS"] == contract.IMAGE_URIS and pinned["IMAGE_TAG"] == contract.IMAGE_TAG
    pins = {"SDK_FRAMEWORK_VERSION": pinned["SDK_FRAMEWORK_VERSION"], "IMAGE_TAG": pinned["IMAGE_TAG"], "IMAGE_URIS": pinned["IMAGE_URIS"]}
    assert script.replace_block(source, script.render_block(pinned["SDK_FRAMEWORK"], pins)) == source


def _fake_table():
    entry = lambda prefix, sdk: {  # noqa: E731
        "py_versions": ["py310"], "registries": {"us-east-1": "763104351884", "eu-west-1": "763104351884"},
        "tag_prefix": prefix, "repository": "huggingface-vllm-inference-neuronx",
        "container_version": {"neuronx": "ubuntu22.04"}, "sdk_versions": sdk}
    return {"inference": {"processors": ["neuronx"], "version_aliases": {"0.4": "0.4.4"}, "versions": {
        "0.4.2": entry("0.11.0-optimum0.4.2", ["sdk2.26.0"]),
        "0.4.4": entry("0.11.0-optimum0.4.4", ["sdk2.26.0", "sdk2.26.1"]),
        "0.4.10": entry("0.12.0-optimum0.4.10", ["sdk2.27.0"])}}}


def test_script_builds_tags_like_the_sdk_and_detects_drift():
    script = _script()
    table = _fake_table()
    pins = script.expected_pins(table, "0.4")
    assert pins["SDK_FRAMEWORK_VERSION"] == "0.4.4"
    assert pins["IMAGE_URIS"]["us-east-1"] == contract.IMAGE_URIS["us-east-1"]
    assert script.expected_pins(table, "latest")["SDK_FRAMEWORK_VERSION"] == "0.4.10"  # numeric, not lexical
    pinned = {"SDK_FRAMEWORK_VERSION": "0.4.4", "IMAGE_TAG": contract.IMAGE_TAG, "IMAGE_URIS": dict(contract.IMAGE_URIS)}
    problems = script.diff(pinned, pins)
    assert any(line.startswith("us-west-2:") for line in problems)  # pinned, but not in the fake table
    assert not any(line.startswith("us-east-1:") for line in problems)
    with pytest.raises(SystemExit, match="known: 0.4.2, 0.4.4, 0.4.10"):
        script.expected_pins(table, "9.9")


def test_script_verifies_against_a_table_file(tmp_path, capsys):
    script = _script()
    table = _fake_table()
    table["inference"]["versions"]["0.4.4"]["registries"] = {region: "763104351884" for region in contract.IMAGE_URIS}
    path = tmp_path / "huggingface-vllm-neuronx.json"
    path.write_text(json.dumps(table))
    assert script.main(["--table", str(path)]) == 0
    table["inference"]["versions"]["0.4.4"]["sdk_versions"] = ["sdk2.27.0"]
    path.write_text(json.dumps(table))
    assert script.main(["--table", str(path)]) == 1
    assert "DRIFT IMAGE_TAG" in capsys.readouterr().out


# --- inference config -----------------------------------------------------------------------------

def _stage_inference(**inference):
    return load_config({"stages": {"dev": {"inference": inference, "serving": {"default_generator": "bedrock"}}}}).stages["dev"].inference


@pytest.mark.parametrize(
    "inference, key, fragment",
    [
        ({"instance_type": "ml.g5.2xlarge"}, "stages.dev.inference.instance_type", "allowed: ml.inf2.xlarge, ml.inf2.8xlarge"),
        ({"instance_type": "ml.inf2.8xlarge", "tensor_parallel_size": 4}, "stages.dev.inference.tensor_parallel_size", "at most the 2 NeuronCores of ml.inf2.8xlarge"),
        ({"tensor_parallel_size": 3}, "stages.dev.inference.tensor_parallel_size", "one of 1, 2, 4, 8, 12, 24"),
        ({"instance_type": "ml.inf2.24xlarge", "tensor_parallel_size": 4, "model_params_billions": 34}, "stages.dev.inference.tensor_parallel_size", "needs at least 8 NeuronCores"),
        ({"instance_type": "ml.inf2.48xlarge", "tensor_parallel_size": 24, "model_params_billions": 200}, "stages.dev.inference.tensor_parallel_size", "more NeuronCores than any inf2"),
        ({"model_params_billions": 8}, "stages.dev.inference.instance_type", "needs about 24 GiB of host memory"),
        ({"model_data_download_timeout_s": 3601}, "stages.dev.inference.model_data_download_timeout_s", "allowed: 60..3600"),
        ({"startup_health_check_timeout_s": 7200}, "stages.dev.inference.startup_health_check_timeout_s", "allowed: 60..3600"),
        ({"power_on_schedule": "cron(0 8 ? * MON-FRI *)"}, "stages.dev.inference.power_off_schedule", "set both"),
        ({"power_on_schedule": "rate(1 day)", "power_off_schedule": "cron(0 20 * * ? *)"}, "stages.dev.inference.power_on_schedule", "cron expression"),
        ({"power_on_schedule": "cron(0 8 * * ?)", "power_off_schedule": "cron(0 20 * * ? *)"}, "stages.dev.inference.power_on_schedule", "cron expression"),
        ({"schedule_timezone": "Paris"}, "stages.dev.inference.schedule_timezone", "IANA time zone"),
        ({"min_instances": 2, "max_instances": 1}, "stages.dev.inference.max_instances", "allowed: 2..10"),
        ({"volume_size_gib": 600}, "stages.dev.inference.volume_size_gib", "allowed: 1..512"),
        ({"latency_alarm_p90_s": 0}, "stages.dev.inference.latency_alarm_p90_s", "allowed: 1..60"),
        ({"model_params_billions": "8b"}, "stages.dev.inference.model_params_billions", "a number"),
    ],
)
def test_bad_inference_config_names_the_key_and_what_is_allowed(inference, key, fragment):
    with pytest.raises(ConfigError) as caught:
        _stage_inference(**inference)
    assert caught.value.key == key
    assert fragment in str(caught.value)


def test_sizing_rule_matches_the_documented_table():
    # model_artifacts/inference/README.md: size -> smallest tensor parallel size.
    assert [inf2_min_tensor_parallel(size) for size in (1.7, 4, 8, 13, 34, 70)] == [1, 1, 2, 4, 8, 24]
    readme = (ROOT / "model_artifacts" / "inference" / "README.md").read_text()
    for size, tp in ((1.7, 1), (8, 2), (13, 4), (70, 24)):
        assert re.search(rf"\|\s*{size:g}B?[^|]*\|[^|]*\|\s*{tp}\s*\|", readme), f"{size}B row with min TP {tp} missing"


def test_defaults_are_the_smallest_sensible_endpoint():
    inference = _stage_inference()
    assert (inference.instance_type, inference.tensor_parallel_size, inference.min_instances, inference.max_instances) == ("ml.inf2.xlarge", 2, 1, 1)
    assert inference.serve_base is True and inference.power_on_schedule is None
    assert 600 <= inference.model_data_download_timeout_s <= 3600 and 600 <= inference.startup_health_check_timeout_s <= 3600
    assert _stage_inference(enabled=False).enabled is False


def test_endpoint_config_definition_has_one_variant_per_role():
    app = cdk.App()
    stack = cdk.Stack(app, "Variant", env=cdk.Environment(region="us-east-1"))
    bound = contract.ServingContract.for_stack(stack, InferenceConfig(instance_type="ml.inf2.8xlarge", min_instances=2, max_instances=3))
    variants = [bound.production_variant(f"m-{role}", role=role) for role in contract.ROLES]
    definition = bound.endpoint_config_definition(variants=variants, kms_key_arn="arn:aws:kms:us-east-1:111122223333:key/k")
    assert definition == {
        "ProductionVariants": [{
            "VariantName": role, "ModelName": f"m-{role}", "InstanceType": "ml.inf2.8xlarge", "InitialInstanceCount": 2,
            "InitialVariantWeight": 1.0, "ModelDataDownloadTimeoutInSeconds": 1200,
            "ContainerStartupHealthCheckTimeoutInSeconds": 1800, "VolumeSizeInGB": 64} for role in ("base", "finetuned")],
        "KmsKeyId": "arn:aws:kms:us-east-1:111122223333:key/k",
    }
    assert contract.VARIANT_NAMES == {"base": "base", "finetuned": "finetuned"}  # autoscaling is registered per name
    assert contract.INFERENCE_AMI_VERSION is None


def test_config_name_fits_for_the_longest_stage_and_the_digest_follows_the_definition():
    contract.check_config_name_length("rag" + "x" * 16 + "-generator")
    with pytest.raises(ValueError, match="63 characters"):
        contract.check_config_name_length("rag" + "x" * 30 + "-generator")
    # The same definition, however its keys were ordered, names the same config (no spurious replacement).
    assert contract.definition_digest({"a": 1, "b": {"c": 2, "d": 3}}) == contract.definition_digest({"b": {"d": 3, "c": 2}, "a": 1})
    assert contract.definition_digest({"a": 1}) != contract.definition_digest({"a": 2})
    assert re.fullmatch(r"[0-9a-f]{8}", contract.definition_digest({}))
