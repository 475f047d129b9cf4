"""Config validation: each bad value fails with one message naming the key, the value and what is allowed."""

from __future__ import annotations

import pytest

from stacks.config import ConfigError, StageConfig, load_config
from tests.conftest import cdk_json_context


def load(stages: dict):
    return load_config({"stages": stages})


def test_cdk_json_defines_dev_and_prod():
    config = load_config(cdk_json_context())
    assert set(config.stages) == {"dev", "prod"}
    assert config.stages["prod"].retain_data and not config.stages["dev"].retain_data


def test_defaults_fill_what_a_stage_leaves_out():
    stage = load({"qa": {}}).stages["qa"]
    assert stage == StageConfig(name="qa")
    assert stage.stack_prefix == "RagQa"


@pytest.mark.parametrize(
    ("stages", "key", "fragment"),
    [
        ({"dev": {"colour": "blue"}}, "stages.dev.colour", "unknown key; known keys: account"),
        ({"dev": {"storage": {"documentz_prefix": "d/"}}}, "stages.dev.storage.documentz_prefix", "unknown key"),
        ({"dev": {"retain_data": "yes"}}, "stages.dev.retain_data", "must be true or false"),
        ({"dev": {"search": {"data_node_count": "2"}}}, "stages.dev.search.data_node_count", "must be an integer"),
        ({"dev": {"search": {"data_node_count": True}}}, "stages.dev.search.data_node_count", "must be an integer"),
        ({"dev": {"search": {"filterable_fields": "year"}}}, "stages.dev.search.filterable_fields", "a list of strings"),
        ({"dev": {"storage": {"documents_prefix": "docs"}}}, "stages.dev.storage.documents_prefix", "ending in '/'"),
        ({"dev": {"storage": {"abort_incomplete_upload_days": 0}}}, "stages.dev.storage.abort_incomplete_upload_days", "allowed: 1..365"),
        ({"dev": {"search": {"engine_version": "2.11"}}}, "stages.dev.search.engine_version", "2.13 or later"),
        ({"dev": {"search": {"index_name": "_Docs"}}}, "stages.dev.search.index_name", "pattern"),
        ({"dev": {"search": {"multi_az": True, "data_node_count": 3}}}, "stages.dev.search.data_node_count", "even number"),
        ({"dev": {"knowledge_base": {"embedding_dimensions": 768}}}, "stages.dev.knowledge_base.embedding_dimensions", "allowed: 256, 512, 1024"),
        ({"dev": {"inference": {"instance_type": "ml.g5.xlarge"}}}, "stages.dev.inference.instance_type", "allowed: ml.inf2.xlarge"),
        ({"dev": {"inference": {"tensor_parallel_size": 8}}}, "stages.dev.inference.tensor_parallel_size", "at most the 2 NeuronCores"),
        ({"dev": {"inference": {"model_data_download_timeout_s": 4000}}}, "stages.dev.inference.model_data_download_timeout_s", "allowed: 60..3600"),
        ({"dev": {"training": {"instance_type": "ml.p4d.24xlarge"}}}, "stages.dev.training.instance_type", "allowed: ml.trn1.2xlarge"),
        ({"dev": {"serving": {"lambda_timeout_s": 29}}}, "stages.dev.serving.lambda_timeout_s", "allowed: 3..28"),
        ({"dev": {"serving": {"temperature": 1.5}}}, "stages.dev.serving.temperature", "0.0..1.0"),
        ({"dev": {"inference": {"enabled": False}, "serving": {"default_generator": "finetuned"}}}, "stages.dev.serving.default_generator",
         "'auto' or 'bedrock' when inference.enabled is false"),
        ({"dev": {"inference": {"enabled": False}, "serving": {"default_generator": "base"}}}, "stages.dev.serving.default_generator",
         "'auto' or 'bedrock' when inference.enabled is false"),
        ({"dev": {"serving": {"default_generator": "endpoint"}}}, "stages.dev.serving.default_generator", "allowed: auto, bedrock, base, finetuned"),
        ({"dev": {"serving": {"generator": "bedrock"}}}, "stages.dev.serving.generator", "unknown key"),  # replaced by default_generator
        ({"dev": {"inference": {"sequence_length": 1024}, "serving": {"max_new_tokens": 513}}}, "stages.dev.serving.max_new_tokens",
         "at most half of inference.sequence_length (512)"),
        ({"dev": {"account": "12345"}}, "stages.dev.account", "12-digit"),
        ({"Dev": {}}, "stages.Dev.name", "lowercase"),
        ({"dev": {"name": "prod"}}, "stages.dev.name", "not settable"),
        ({"dev": "small"}, "stages.dev", "an object"),
    ],
)
def test_bad_value_names_key_value_and_allowed(stages, key, fragment):
    with pytest.raises(ConfigError) as caught:
        load(stages)
    assert caught.value.key == key
    message = str(caught.value)
    assert message.startswith(f"invalid config {key}=")
    assert fragment in message


def test_missing_stages_is_an_error():
    with pytest.raises(ConfigError, match="stages"):
        load_config({})


def test_stage_selection():
    config = load({"dev": {}, "prod": {}})
    assert [stage.name for stage in config.select("all")] == ["dev", "prod"]
    assert [stage.name for stage in config.select("prod")] == ["prod"]
    with pytest.raises(ConfigError, match=r"invalid config stage='qa': allowed: dev, prod, all"):
        config.select("qa")


def test_integers_are_accepted_where_numbers_are_expected():
    assert load({"dev": {"serving": {"temperature": 0}}}).stages["dev"].serving.temperature == 0.0


def test_the_serving_cross_field_rules_hold_at_their_boundaries():
    """The limits themselves are allowed (a `<` for `<=` slip fails here)."""
    stage = load({"dev": {"inference": {"sequence_length": 1024}, "serving": {"max_new_tokens": 512}}}).stages["dev"]
    assert stage.serving.max_new_tokens == 512
    # without an endpoint the sequence length does not bound the answer, and auto/bedrock are fine
    stage = load({"dev": {"inference": {"enabled": False, "sequence_length": 1024}, "serving": {"max_new_tokens": 4096}}}).stages["dev"]
    assert stage.serving.default_generator == "auto"
    assert load({"dev": {"inference": {"enabled": False}, "serving": {"default_generator": "bedrock"}}}).stages["dev"].serving.default_generator == "bedrock"


def test_a_stage_that_never_serves_the_base_model_cannot_default_to_it():
    """`inference.serve_base` (Contract 3, config of branch lifecycle) false forbids the default `base`."""
    import dataclasses

    from stacks.config import InferenceConfig, ServingConfig

    @dataclasses.dataclass(frozen=True)
    class WithoutBase(InferenceConfig):
        serve_base: bool = False

    with pytest.raises(ConfigError, match="not 'base' when inference.serve_base is false") as caught:
        StageConfig(name="dev", inference=WithoutBase(), serving=ServingConfig(default_generator="base")).validate()
    assert caught.value.key == "serving.default_generator"
    StageConfig(name="dev", inference=WithoutBase(), serving=ServingConfig(default_generator="finetuned")).validate()
