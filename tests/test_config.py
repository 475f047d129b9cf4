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
        ({"dev": {"training": {"auto_deploy": True}, "inference": {"enabled": False}}}, "stages.dev.training.auto_deploy", "no endpoint to deploy to"),
        ({"dev": {"training": {"use_spot": True, "max_runtime_hours": 24, "max_wait_hours": 47}}}, "stages.dev.training.max_wait_hours", "allowed: 48..672"),
        ({"dev": {"training": {"use_spot": True, "max_runtime_hours": 400, "max_wait_hours": 672}}}, "stages.dev.training.max_wait_hours", "allowed: 800..672"),
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
    """`inference.serve_base` false forbids the default `base`, and only `base`."""
    with pytest.raises(ConfigError, match="not 'base' when inference.serve_base is false") as caught:
        load({"dev": {"inference": {"serve_base": False}, "serving": {"default_generator": "base"}}})
    assert caught.value.key == "stages.dev.serving.default_generator"
    assert load({"dev": {"inference": {"serve_base": False}, "serving": {"default_generator": "finetuned"}}}).stages["dev"].serving.default_generator == "finetuned"


@pytest.mark.parametrize("runtime, wait, ok", [(24, 48, True), (24, 47, False), (1, 2, True), (1, 1, False), (336, 672, True), (337, 672, False)])
def test_spot_wait_leaves_room_for_one_full_restart_at_the_boundary(runtime, wait, ok):
    """optimum-neuron 0.4.1 restarts an interrupted run from step 0: max_wait >= 2 x max_runtime, <= 28 days."""
    stages = {"dev": {"training": {"use_spot": True, "max_runtime_hours": runtime, "max_wait_hours": wait}}}
    if ok:
        assert load(stages).stages["dev"].training.max_wait_hours == wait
    else:
        with pytest.raises(ConfigError, match="max_wait_hours"):
            load(stages)
    load({"dev": {"training": {"use_spot": False, "max_runtime_hours": runtime, "max_wait_hours": 1}}})  # on demand: not used


# --- every documented range, at both ends (README's configuration reference is the oracle) ---------

import re  # noqa: E402
from pathlib import Path  # noqa: E402

from stacks.config import ServingConfig, inf2_min_tensor_parallel  # noqa: E402

README = (Path(__file__).resolve().parents[1] / "README.md").read_text().split("## Configuration reference", 1)[1]
DOCUMENTED_RANGES = [(key, int(low), int(high)) for key, low, high in
                     re.findall(r"^\| `([a-z_]+\.[a-z0-9_]+)` \|[^|\n]*\|[^|\n]*?, (\d+)\.\.(\d+)(?![\w.`])[^|\n]*\|$", README, flags=re.M)]
# What else a stage needs for a value at a documented limit to be valid on its own.
AROUND = {
    "serving.max_new_tokens": {"inference": {"sequence_length": 32768}},
    "inference.sequence_length": {"serving": {"max_new_tokens": 1}},
    "serving.max_top_k": {"serving": {"default_top_k": 1}},
    "inference.min_instances": {"inference": {"max_instances": 10}},
}


def with_value(key: str, value) -> dict:
    section, name = key.split(".")
    stage = {part: dict(values) for part, values in AROUND.get(key, {}).items()}
    stage.setdefault(section, {})[name] = value
    return {"dev": stage}


def test_the_readme_documents_a_range_for_every_bounded_integer():
    assert len(DOCUMENTED_RANGES) >= 37  # the others name the key that bounds them (tested below)
    assert ("storage.abort_incomplete_upload_days", 1, 365) in DOCUMENTED_RANGES


@pytest.mark.parametrize("key, low, high", DOCUMENTED_RANGES, ids=[key for key, _, _ in DOCUMENTED_RANGES])
def test_every_documented_range_holds_at_both_ends(key, low, high):
    section, name = key.split(".")
    for value in (low, high):
        assert getattr(getattr(load(with_value(key, value)).stages["dev"], section), name) == value
    for value in (low - 1, high + 1):
        with pytest.raises(ConfigError) as caught:
            load(with_value(key, value))
        assert str(caught.value) == f"invalid config stages.dev.{key}={value}: allowed: {low}..{high}"


@pytest.mark.parametrize("key, bound, value, ok, allowed", [
    ("knowledge_base.hierarchical_parent_max_tokens", {"chunk_max_tokens": 300}, 301, True, None),
    ("knowledge_base.hierarchical_parent_max_tokens", {"chunk_max_tokens": 300}, 300, False, "301..8192"),
    ("knowledge_base.hierarchical_parent_max_tokens", {"chunk_max_tokens": 300}, 8193, False, "301..8192"),
    ("knowledge_base.hierarchical_overlap_tokens", {"chunk_max_tokens": 300}, 299, True, None),
    ("knowledge_base.hierarchical_overlap_tokens", {"chunk_max_tokens": 300}, 300, False, "1..299"),
    ("knowledge_base.hierarchical_overlap_tokens", {"chunk_max_tokens": 300}, 0, False, "1..299"),
    ("inference.max_instances", {"min_instances": 3}, 3, True, None),
    ("inference.max_instances", {"min_instances": 3}, 2, False, "3..10"),
    ("serving.default_top_k", {"max_top_k": 7}, 7, True, None),
    ("serving.default_top_k", {"max_top_k": 7}, 8, False, "1..7"),
])
def test_ranges_bounded_by_another_key_hold_at_that_keys_value(key, bound, value, ok, allowed):
    section, name = key.split(".")
    settings = {**bound, name: value, **({"chunking_strategy": "HIERARCHICAL"} if section == "knowledge_base" else {})}
    if ok:
        assert getattr(getattr(load({"dev": {section: settings}}).stages["dev"], section), name) == value
    else:
        with pytest.raises(ConfigError) as caught:
            load({"dev": {section: settings}})
        assert caught.value.key == f"stages.dev.{key}" and str(caught.value).endswith(f"allowed: {allowed}")


@pytest.mark.parametrize("chunk_max_tokens", [20, 50, 2000, 8192])
def test_hierarchical_sizes_do_not_bound_other_chunking_strategies(chunk_max_tokens):
    """A fixed-size or semantic stage never uses the hierarchical sizes, so their defaults (parent
    1500, overlap 60) must not refuse its chunk size (they did: 2000-token fixed chunks failed)."""
    for strategy in ("FIXED_SIZE", "SEMANTIC", "NONE"):
        kb = load({"dev": {"knowledge_base": {"chunking_strategy": strategy, "chunk_max_tokens": chunk_max_tokens}}}).stages["dev"].knowledge_base
        assert kb.chunk_max_tokens == chunk_max_tokens


@pytest.mark.parametrize("settings, message", [
    ({'search': {'engine_version': '2.12'}},
     "invalid config stages.dev.search.engine_version='2.12': OpenSearch 2.13 or later, as 'major.minor': knowledge bases need it"),
    ({'search': {'engine_version': '1.30'}},
     "invalid config stages.dev.search.engine_version='1.30': OpenSearch 2.13 or later, as 'major.minor': knowledge bases need it"),
    ({'search': {'engine_version': '2.13.1'}},
     "invalid config stages.dev.search.engine_version='2.13.1': OpenSearch 2.13 or later, as 'major.minor': knowledge bases need it"),
    ({'search': {'engine_version': 'v3.1'}},
     "invalid config stages.dev.search.engine_version='v3.1': OpenSearch 2.13 or later, as 'major.minor': knowledge bases need it"),
    ({'search': {'data_node_instance_type': 'r7g.large'}},
     "invalid config stages.dev.search.data_node_instance_type='r7g.large': must be an OpenSearch instance type like r7g.large.search (pattern ^[a-z0-9]+\\.[a-z0-9]+\\.search$)"),
    ({'search': {'dedicated_master_instance_type': 'm7g.large'}},
     "invalid config stages.dev.search.dedicated_master_instance_type='m7g.large': must be an OpenSearch instance type (pattern ^[a-z0-9]+\\.[a-z0-9]+\\.search$)"),
    ({'search': {'dedicated_master_count': 2}},
     'invalid config stages.dev.search.dedicated_master_count=2: allowed: 0, 3, 5'),
    ({'search': {'text_field': 'embedding'}},
     "invalid config stages.dev.search.vector_field='embedding': vector, text and metadata fields must differ"),
    ({'search': {'metadata_field': 'text'}},
     "invalid config stages.dev.search.vector_field='embedding': vector, text and metadata fields must differ"),
    ({'search': {'vector_field': '1vec'}},
     "invalid config stages.dev.search.vector_field='1vec': must be a field name (letters, digits, _ or -) (pattern ^[a-zA-Z][a-zA-Z0-9_\\-]{0,63}$)"),
    ({'search': {'search_pipeline_name': 'rag hybrid'}},
     "invalid config stages.dev.search.search_pipeline_name='rag hybrid': must be a field name (letters, digits, _ or -) (pattern ^[a-zA-Z][a-zA-Z0-9_\\-]{0,63}$)"),
    ({'search': {'filterable_fields': ['category', 'text']}},
     "invalid config stages.dev.search.filterable_fields='text': a field name distinct from the vector, text and metadata fields"),
    ({'search': {'filterable_fields': ['year!']}},
     "invalid config stages.dev.search.filterable_fields='year!': a field name distinct from the vector, text and metadata fields"),
    ({'search': {'hybrid_vector_weight': 0.0}},
     'invalid config stages.dev.search.hybrid_vector_weight=0.0: between 0 and 1, exclusive (both sub-queries count)'),
    ({'search': {'hybrid_vector_weight': 1.0}},
     'invalid config stages.dev.search.hybrid_vector_weight=1.0: between 0 and 1, exclusive (both sub-queries count)'),
    ({'search': {'log_retention_days': 31}},
     'invalid config stages.dev.search.log_retention_days=31: allowed: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 3653'),
    ({'knowledge_base': {'chunking_strategy': 'fixed'}},
     "invalid config stages.dev.knowledge_base.chunking_strategy='fixed': allowed: FIXED_SIZE, HIERARCHICAL, SEMANTIC, NONE"),
    ({'knowledge_base': {'embedding_model_id': 'cohere.embed-english-v3'}},
     "invalid config stages.dev.knowledge_base.embedding_model_id='cohere.embed-english-v3': allowed: amazon.titan-embed-text-v2:0"),
    ({'training': {'base_model_s3_prefix': 'base-models/qwen3'}},
     "invalid config stages.dev.training.base_model_s3_prefix='base-models/qwen3': must be an S3 prefix ending in '/' (pattern ^([a-z0-9][a-z0-9\\-_.]*/)+$)"),
    ({'training': {'notification_email': 'ops@example'}},
     "invalid config stages.dev.training.notification_email='ops@example': must be an e-mail address (pattern ^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$)"),
    ({'training': {'log_retention_days': 100}},
     'invalid config stages.dev.training.log_retention_days=100: allowed: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 3653'),
    ({'inference': {'instance_type': 'ml.inf2.24xlarge', 'tensor_parallel_size': 24}},
     'invalid config stages.dev.inference.tensor_parallel_size=24: one of 1, 2, 4, 8, 12, 24 and at most the 12 NeuronCores of ml.inf2.24xlarge'),
    ({'inference': {'instance_type': 'ml.inf2.24xlarge', 'tensor_parallel_size': 3}},
     'invalid config stages.dev.inference.tensor_parallel_size=3: one of 1, 2, 4, 8, 12, 24 and at most the 12 NeuronCores of ml.inf2.24xlarge'),
    ({'inference': {'model_params_billions': 0.09}},
     'invalid config stages.dev.inference.model_params_billions=0.09: allowed: 0.1..500 (billions of parameters)'),
    ({'inference': {'model_params_billions': 501}},
     'invalid config stages.dev.inference.model_params_billions=501.0: allowed: 0.1..500 (billions of parameters)'),
    ({'inference': {'instance_type': 'ml.inf2.8xlarge', 'model_params_billions': 8, 'tensor_parallel_size': 1}},
     'invalid config stages.dev.inference.tensor_parallel_size=1: a 8B-parameter model (16 GB of bf16 weights) needs at least 2 NeuronCores (16 GB each, 70% of it for weights); see model_artifacts/inference/README.md'),
    ({'inference': {'instance_type': 'ml.inf2.48xlarge', 'model_params_billions': 200, 'tensor_parallel_size': 24}},
     'invalid config stages.dev.inference.tensor_parallel_size=24: a 200B-parameter model (400 GB of bf16 weights) needs more NeuronCores than any inf2 instance has (16 GB each, 70% of it for weights); see model_artifacts/inference/README.md'),
    ({'inference': {'model_params_billions': 5.4}},
     "invalid config stages.dev.inference.instance_type='ml.inf2.xlarge': a 5.4B-parameter model needs about 16.2 GiB of host memory to load; ml.inf2.xlarge has 16 GiB"),
    ({'inference': {'log_retention_days': 2}},
     'invalid config stages.dev.inference.log_retention_days=2: allowed: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 3653'),
    ({'inference': {'power_on_schedule': 'cron(0 8 * * ? *)'}},
     'invalid config stages.dev.inference.power_off_schedule=None: set both power_on_schedule and power_off_schedule, or neither (an endpoint switched on by a schedule must be switched off by one)'),
    ({'inference': {'power_off_schedule': 'cron(0 8 * * ? *)'}},
     'invalid config stages.dev.inference.power_on_schedule=None: set both power_on_schedule and power_off_schedule, or neither (an endpoint switched on by a schedule must be switched off by one)'),
    ({'inference': {'power_on_schedule': 'rate(1 day)', 'power_off_schedule': 'cron(0 8 * * ? *)'}},
     "invalid config stages.dev.inference.power_on_schedule='rate(1 day)': must be an EventBridge Scheduler cron expression like cron(0 8 ? * MON-FRI *) (pattern ^cron\\(\\S+ \\S+ \\S+ \\S+ \\S+ \\S+\\)$)"),
    ({'inference': {'power_on_schedule': 'cron(0 8 * * ? *)', 'power_off_schedule': 'cron(0 20 * * ?)'}},
     "invalid config stages.dev.inference.power_off_schedule='cron(0 20 * * ?)': must be an EventBridge Scheduler cron expression like cron(0 8 ? * MON-FRI *) (pattern ^cron\\(\\S+ \\S+ \\S+ \\S+ \\S+ \\S+\\)$)"),
    ({'inference': {'schedule_timezone': 'paris'}},
     "invalid config stages.dev.inference.schedule_timezone='paris': must be an IANA time zone like Europe/Paris, or UTC (pattern ^(UTC|[A-Z][A-Za-z_]+(/[A-Za-z0-9_+\\-]+){1,2})$)"),
    ({'inference': {'enabled': False, 'power_on_schedule': 'cron(0 8 * * ? *)', 'power_off_schedule': 'cron(0 20 * * ? *)'}},
     "invalid config stages.dev.inference.power_on_schedule='cron(0 8 * * ? *)': none when inference.enabled is false (there is no endpoint to switch)"),
    ({'serving': {'bedrock_model_id': 'nova lite'}},
     "invalid config stages.dev.serving.bedrock_model_id='nova lite': must be a Bedrock model id like amazon.nova-lite-v1:0 (pattern ^([a-z]{2,4}\\.)?[a-z0-9-]+\\.[a-zA-Z0-9.\\-:]+$)"),
    ({'serving': {'default_retriever': 'bm25'}},
     "invalid config stages.dev.serving.default_retriever='bm25': allowed: kb, opensearch"),
    ({'serving': {'temperature': -0.01}},
     'invalid config stages.dev.serving.temperature=-0.01: allowed: 0.0..1.0'),
    ({'serving': {'log_retention_days': 4}},
     'invalid config stages.dev.serving.log_retention_days=4: allowed: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 3653'),
    ({'monitoring': {'alarm_email': 'ops at example.com'}},
     "invalid config stages.dev.monitoring.alarm_email='ops at example.com': must be an e-mail address (pattern ^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$)"),
    ({'region': 'useast1'},
     "invalid config stages.dev.region='useast1': must be an AWS region like us-east-1 (pattern ^[a-z]{2}(-gov)?-[a-z]+-\\d$)"),
    ({'colour': 'blue'},
     "invalid config stages.dev.colour='blue': unknown key; known keys: account, inference, knowledge_base, monitoring, name, region, retain_data, search, serving, storage, training"),
    ({'inference': {'enabled': False}, 'serving': {'default_generator': 'finetuned'}},
     "invalid config stages.dev.serving.default_generator='finetuned': 'auto' or 'bedrock' when inference.enabled is false (no endpoint to call)"),
    ({'inference': {'serve_base': False}, 'serving': {'default_generator': 'base'}},
     "invalid config stages.dev.serving.default_generator='base': not 'base' when inference.serve_base is false (the stage never serves the base model)"),
    ({'inference': {'sequence_length': 1024}, 'serving': {'max_new_tokens': 513}},
     'invalid config stages.dev.serving.max_new_tokens=513: at most half of inference.sequence_length (512): the rest holds the prompt'),
    ({'training': {'auto_deploy': True}, 'inference': {'enabled': False}},
     'invalid config stages.dev.training.auto_deploy=True: false when inference.enabled is false (there is no endpoint to deploy to)'),
    ({'account': '12345'},
     "invalid config stages.dev.account='12345': must be a 12-digit AWS account id (pattern ^\\d{12}$)"),
    ({'search': {'filterable_fields': 'year'}},
     "invalid config stages.dev.search.filterable_fields='year': a list of strings"),
    ({'retain_data': 'yes'},
     "invalid config stages.dev.retain_data='yes': must be true or false"),
    ({'search': {'multi_az': True, 'data_node_count': 3}},
     'invalid config stages.dev.search.data_node_count=3: an even number when multi_az is true (two zones)'),
    ({'storage': {'documents_prefix': 'Docs/'}},
     "invalid config stages.dev.storage.documents_prefix='Docs/': must be an S3 prefix ending in '/' (pattern ^([a-z0-9][a-z0-9\\-_.]*/)+$)"),
    ({'search': {'index_name': '_docs'}},
     "invalid config stages.dev.search.index_name='_docs': must be a lowercase index name Bedrock accepts (pattern ^(?![\\-_+.])[a-z0-9][a-z0-9\\-_\\.]*$)"),
    ({'name': 'prod'},
     "invalid config stages.dev.name='prod': not settable: the stage's key is its name"),
    ({'inference': {'instance_type': 'ml.inf2.48xlarge', 'model_params_billions': 500, 'tensor_parallel_size': 24}},
     'invalid config stages.dev.inference.tensor_parallel_size=24: a 500B-parameter model (1000 GB of bf16 weights) needs more NeuronCores than any inf2 instance has (16 GB each, 70% of it for weights); see model_artifacts/inference/README.md'),
    ({'inference': {'instance_type': 'ml.inf2.24xlarge', 'model_params_billions': 100, 'tensor_parallel_size': 12}},
     'invalid config stages.dev.inference.tensor_parallel_size=12: a 100B-parameter model (200 GB of bf16 weights) needs at least 24 NeuronCores (16 GB each, 70% of it for weights); see model_artifacts/inference/README.md'),
    ({'inference': {'sequence_length': 1025}, 'serving': {'max_new_tokens': 513}},
     'invalid config stages.dev.serving.max_new_tokens=513: at most half of inference.sequence_length (512): the rest holds the prompt'),
])
def test_each_rule_says_which_key_which_value_and_what_is_allowed(settings, message):
    """The whole message, as `cdk synth` prints it: the full key, the value given, the rule."""
    with pytest.raises(ConfigError) as caught:
        load({"dev": settings})
    assert str(caught.value) == message and message.startswith(f"invalid config {caught.value.key}=")


@pytest.mark.parametrize("raw, message", [
    ({"stages": []}, "invalid config stages=[]: an object mapping stage names to their settings"),
    ({"stages": {}}, "invalid config stages={}: an object mapping stage names to their settings"),
    ({}, "invalid config stages=None: an object mapping stage names to their settings"),
    ({"stages": {"dev": "small"}}, "invalid config stages.dev='small': an object of stage settings"),
])
def test_a_context_without_stages_says_what_it_needs(raw, message):
    with pytest.raises(ConfigError) as caught:
        load_config(raw)
    assert str(caught.value) == message


@pytest.mark.parametrize("settings", [
    {"search": {"engine_version": "2.13"}}, {"search": {"engine_version": "10.0"}},
    {"search": {"multi_az": True, "data_node_count": 2}}, {"search": {"multi_az": False, "data_node_count": 3}},
    {"search": {"dedicated_master_count": 5}}, {"search": {"hybrid_vector_weight": 0.01}}, {"search": {"hybrid_vector_weight": 0.99}},
    {"search": {"filterable_fields": []}}, {"search": {"log_retention_days": 3653}},
    {"inference": {"instance_type": "ml.inf2.24xlarge", "tensor_parallel_size": 12}},
    {"inference": {"instance_type": "ml.inf2.48xlarge", "model_params_billions": 70, "tensor_parallel_size": 24}},
    {"inference": {"model_params_billions": 16 / 3}},  # 1.5 x its bf16 weights = exactly the 16 GiB of ml.inf2.xlarge
    {"inference": {"model_params_billions": 0.1, "tensor_parallel_size": 1}},
    {"inference": {"power_on_schedule": "cron(0 8 ? * MON-FRI *)", "power_off_schedule": "cron(0 20 ? * MON-FRI *)",
                   "schedule_timezone": "America/Argentina/Buenos_Aires"}},
    {"inference": {"enabled": False}, "training": {"auto_deploy": False}},
    {"training": {"notification_email": "ops@example.com", "log_retention_days": 1}},
    {"serving": {"temperature": 1.0, "bedrock_model_id": "us.amazon.nova-lite-v1:0"}}, {"serving": {"temperature": 0.0}},
    {"account": "123456789012", "region": "us-gov-west-1"}, {"monitoring": {"alarm_email": "ops@example.com"}},
])
def test_values_just_inside_each_rule_are_accepted(settings):
    assert load({"dev": settings}).stages["dev"].name == "dev"


@pytest.mark.parametrize("name, ok", [("ab", True), ("a" * 16, True), ("a", False), ("a" * 17, False), ("2ab", False), ("dev-1", False)])
def test_stage_names_are_2_to_16_lowercase_letters_and_digits(name, ok):
    if ok:
        assert load({name: {}}).stages[name].stack_prefix == "Rag" + name.capitalize()
    else:
        with pytest.raises(ConfigError) as caught:
            load({name: {}})
        assert str(caught.value) == (f"invalid config stages.{name}.name={name!r}: must be lowercase letters and digits, 2-16 characters "
                                     "(pattern ^[a-z][a-z0-9]{1,15}$)")


@pytest.mark.parametrize("raw, problem", [
    ({"stages": []}, "an object mapping stage names to their settings"),
    ({"stages": {}}, "an object mapping stage names to their settings"),
    ({"stages": {"dev": {"search": "big"}}}, "invalid config stages.dev.search='big': an object"),
    ({"stages": {"dev": {"search": {"filterable_fields": ["a", 1]}}}}, "a list of strings"),
    ({"stages": {"dev": {"serving": {"temperature": "0.5"}}}}, "invalid config stages.dev.serving.temperature='0.5': must be a number"),
    ({"stages": {"dev": {"serving": {"reserved_concurrency": True}}}}, "must be an integer"),
    ({"stages": {"dev": {"training": {"notification_email": 5}}}}, "invalid config stages.dev.training.notification_email=5: must be a string"),
])
def test_malformed_json_is_named_precisely(raw, problem):
    with pytest.raises(ConfigError) as caught:
        load_config(raw)
    assert problem in str(caught.value)


def test_types_are_coerced_only_where_lossless():
    stage = load({"dev": {"search": {"filterable_fields": ["year"], "hybrid_vector_weight": 1 - 0.25}, "training": {"notification_email": None},
                          "serving": {"reserved_concurrency": 10}}}).stages["dev"]
    assert stage.search.filterable_fields == ("year",) and stage.training.notification_email is None
    assert stage.serving.reserved_concurrency == 10 and stage.search.hybrid_vector_weight == 0.75
    assert isinstance(load({"dev": {"search": {"hybrid_vector_weight": 1 - 0.5}}}).stages["dev"].search.hybrid_vector_weight, float)


@pytest.mark.parametrize("timeout, retrieval, generation", [(3, 1, 1), (10, 2, 7), (25, 5, 19), (28, 5, 22), (9, 1, 7)])
def test_the_query_functions_time_is_split_between_retrieval_and_generation(timeout, retrieval, generation):
    serving = ServingConfig(lambda_timeout_s=timeout)
    assert (serving.retrieval_timeout_s, serving.generation_timeout_s) == (retrieval, generation)
    assert serving.retrieval_timeout_s + serving.generation_timeout_s < timeout or timeout == 3


@pytest.mark.parametrize("billions, size", [(0.1, 1), (5.6, 1), (5.61, 2), (11.2, 2), (11.3, 4), (44.8, 8), (44.81, 12), (67.1, 12), (67.3, 24), (134.3, 24), (134.5, 25)])
def test_the_smallest_tensor_parallel_size_that_holds_the_weights(billions, size):
    """bf16 weights (2 bytes a parameter) in 70% of 16 GB per NeuronCore: 11.2 GB a core."""
    assert inf2_min_tensor_parallel(billions) == size
