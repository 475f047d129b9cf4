"""The KnowledgeBase stack's promises: the knowledge base sits on exactly the index the Search
stack's custom resource creates, the data source chunks as configured, and ingestion never
loses a change (queue, retries, DLQ + alarm, a first sync on create)."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest

from stacks.config import INDEX_NAME_PATTERN, KnowledgeBaseConfig

STAGES = [("dev", "RagDev-KnowledgeBase", "RagDev-Search"), ("prod", "RagProd-KnowledgeBase", "RagProd-Search")]


@functools.lru_cache(maxsize=None)
def _read(path: str) -> dict:
    return json.loads(Path(path).read_text())


def template_of(synth, stack: str) -> dict:
    """The synthesized template, read once from the assembly directory (jsii round trips cost ~0.1 s each)."""
    return _read(str(Path(synth.assembly.directory) / f"{stack}.template.json"))
SAMPLES = Path(__file__).resolve().parents[1] / "model_artifacts" / "sample_documents"


def only(template: dict, kind: str) -> dict:
    found = [res for res in template["Resources"].values() if res["Type"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def only_named(template: dict, kind: str) -> tuple[str, dict]:
    found = [(n, r) for n, r in template["Resources"].items() if r["Type"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.mark.parametrize(("stage", "stack", "search"), STAGES)
def test_knowledge_base_on_the_managed_cluster_with_https_endpoint(synth, stage, stack, search):
    kb = only(template_of(synth, stack), "AWS::Bedrock::KnowledgeBase")["Properties"]
    storage = kb["StorageConfiguration"]
    assert storage["Type"] == "OPENSEARCH_MANAGED_CLUSTER"
    cluster = storage["OpensearchManagedClusterConfiguration"]
    endpoint = cluster["DomainEndpoint"]["Fn::Join"][1]
    assert endpoint[0] == "https://" and "DomainEndpoint" in endpoint[1]["Fn::ImportValue"]
    assert f"{search}:" in cluster["DomainArn"]["Fn::ImportValue"] and "DomainArn" in cluster["DomainArn"]["Fn::ImportValue"]
    assert re.match(INDEX_NAME_PATTERN, cluster["VectorIndexName"])
    assert "KnowledgeBaseRole" in kb["RoleArn"]["Fn::ImportValue"]


@pytest.mark.parametrize(("stage", "stack", "search"), STAGES)
def test_index_and_field_names_are_the_ones_the_custom_resource_creates(synth, stage, stack, search):
    cluster = only(template_of(synth, stack), "AWS::Bedrock::KnowledgeBase")["Properties"]["StorageConfiguration"][
        "OpensearchManagedClusterConfiguration"]
    index = only(template_of(synth, search), "Custom::VectorIndex")["Properties"]
    assert cluster["VectorIndexName"] == index["IndexName"]
    assert cluster["FieldMapping"] == {
        "VectorField": index["VectorField"], "TextField": index["TextField"], "MetadataField": index["MetadataField"]}


@pytest.mark.parametrize(("stage", "stack", "search"), STAGES)
def test_titan_v2_embeddings_with_the_index_dimensions(synth, stage, stack, search):
    vector = only(template_of(synth, stack), "AWS::Bedrock::KnowledgeBase")["Properties"]["KnowledgeBaseConfiguration"]
    assert vector["Type"] == "VECTOR"
    config = vector["VectorKnowledgeBaseConfiguration"]
    assert config["EmbeddingModelArn"]["Fn::Join"][1][-1] == "::foundation-model/amazon.titan-embed-text-v2:0"
    dimensions = config["EmbeddingModelConfiguration"]["BedrockEmbeddingModelConfiguration"]["Dimensions"]
    assert dimensions == only(template_of(synth, search), "Custom::VectorIndex")["Properties"]["Dimensions"]
    assert dimensions == synth.config.stages[stage].knowledge_base.embedding_dimensions in (256, 512, 1024)


def test_the_knowledge_base_waits_for_the_index(synth):
    for stage_stacks in synth.stages:
        kb_stack, search = stage_stacks.knowledge_base, stage_stacks.search
        assert search.vector_index in kb_stack.knowledge_base.node.dependencies
        artifact = synth.assembly.get_stack_by_name(kb_stack.stack_name)
        assert search.stack_name in [dependency.id for dependency in artifact.dependencies]


@pytest.mark.parametrize(("stage", "stack", "search"), STAGES)
def test_data_source_reads_the_documents_prefix_with_configured_chunking(synth, stage, stack, search):
    config = synth.config.stages[stage]
    source = only(template_of(synth, stack), "AWS::Bedrock::DataSource")["Properties"]
    assert source["KnowledgeBaseId"] == {"Fn::GetAtt": ["KnowledgeBase", "KnowledgeBaseId"]}
    s3 = source["DataSourceConfiguration"]["S3Configuration"]
    assert s3["InclusionPrefixes"] == [config.storage.documents_prefix]
    assert "Documents" in s3["BucketArn"]["Fn::ImportValue"]
    assert source["DataDeletionPolicy"] == ("RETAIN" if config.retain_data else "DELETE")
    chunking = source["VectorIngestionConfiguration"]["ChunkingConfiguration"]
    assert chunking == {"ChunkingStrategy": "FIXED_SIZE", "FixedSizeChunkingConfiguration": {
        "MaxTokens": config.knowledge_base.chunk_max_tokens, "OverlapPercentage": config.knowledge_base.chunk_overlap_percentage}}


@pytest.mark.parametrize(("strategy", "expected"), [
    ("FIXED_SIZE", {"chunking_strategy": "FIXED_SIZE", "fixed_size_chunking_configuration": {"max_tokens": 300, "overlap_percentage": 20}}),
    ("HIERARCHICAL", {"chunking_strategy": "HIERARCHICAL", "hierarchical_chunking_configuration": {
        "level_configurations": [{"max_tokens": 1500}, {"max_tokens": 300}], "overlap_tokens": 60}}),
    ("SEMANTIC", {"chunking_strategy": "SEMANTIC", "semantic_chunking_configuration": {
        "breakpoint_percentile_threshold": 95, "buffer_size": 0, "max_tokens": 300}}),
    ("NONE", {"chunking_strategy": "NONE"}),
])
def test_every_chunking_strategy_maps_to_its_cloudformation_shape(strategy, expected):
    from stacks.knowledge_base_stack import chunking_configuration

    def plain(value):
        if isinstance(value, list):
            return [plain(v) for v in value]
        if hasattr(value, "_values"):
            return {k: plain(v) for k, v in value._values.items()}
        return value

    assert plain(chunking_configuration(KnowledgeBaseConfig(chunking_strategy=strategy))) == expected


def test_names_change_exactly_when_cloudformation_must_replace():
    from stacks.knowledge_base_stack import chunking_key, replacement_suffix

    base = KnowledgeBaseConfig()
    # A setting the strategy does not use leaves the data source (and its vectors) alone...
    assert chunking_key(base) == chunking_key(KnowledgeBaseConfig(semantic_buffer_size=1, ingestion_batch_window_s=5))
    # ...one it uses gives a new name, so the replacement does not collide with the old data source.
    assert replacement_suffix(*chunking_key(base)) != replacement_suffix(*chunking_key(KnowledgeBaseConfig(chunk_max_tokens=512)))
    assert chunking_key(KnowledgeBaseConfig(chunking_strategy="NONE")) == ("NONE",)


@pytest.mark.parametrize(("stage", "stack", "search"), STAGES)
def test_knowledge_base_and_data_source_names_are_valid(synth, stage, stack, search):
    template = template_of(synth, stack)
    kb_name = only(template, "AWS::Bedrock::KnowledgeBase")["Properties"]["Name"]
    source_name = only(template, "AWS::Bedrock::DataSource")["Properties"]["Name"]
    for name in (kb_name, source_name):  # CloudFormation's pattern for both
        assert re.fullmatch(r"([0-9a-zA-Z][_-]?){1,100}", name), name
    assert kb_name.startswith(f"rag-{stage}-")


@pytest.mark.parametrize(("stage", "stack", "search"), STAGES)
def test_s3_changes_flow_through_eventbridge_and_sqs_to_a_single_ingest_function(synth, stage, stack, search):
    template = template_of(synth, stack)
    config = synth.config.stages[stage]
    rule = only(template, "AWS::Events::Rule")["Properties"]
    pattern = rule["EventPattern"]
    assert pattern["source"] == ["aws.s3"] and pattern["detail-type"] == ["Object Created", "Object Deleted"]
    assert pattern["detail"]["object"]["key"] == [{"prefix": config.storage.documents_prefix}]
    queues = {n: r for n, r in template["Resources"].items() if r["Type"] == "AWS::SQS::Queue"}
    (changes,) = [n for n in queues if n.startswith("IngestionChanges")]
    (dead,) = [n for n in queues if n.startswith("IngestionDeadLetters")]
    assert rule["Targets"] == [{"Arn": {"Fn::GetAtt": [changes, "Arn"]}, "Id": "Target0"}]
    redrive = queues[changes]["Properties"]["RedrivePolicy"]
    assert redrive == {"deadLetterTargetArn": {"Fn::GetAtt": [dead, "Arn"]}, "maxReceiveCount": config.knowledge_base.ingestion_max_attempts}
    assert queues[changes]["Properties"]["VisibilityTimeout"] == config.knowledge_base.ingestion_retry_after_s

    (function_name,) = [n for n, r in template["Resources"].items()
                        if r["Type"] == "AWS::Lambda::Function" and r["Properties"].get("Handler") == "ingest.handler.main"]
    function = template["Resources"][function_name]["Properties"]
    assert function["ReservedConcurrentExecutions"] == 1
    assert function["Timeout"] * 4 <= config.knowledge_base.ingestion_retry_after_s
    env = function["Environment"]["Variables"]
    assert env["KNOWLEDGE_BASE_ID"] == {"Fn::GetAtt": ["KnowledgeBase", "KnowledgeBaseId"]}
    assert env["DATA_SOURCE_ID"] == {"Fn::GetAtt": ["Documents", "DataSourceId"]}
    assert env["DOCUMENTS_PREFIX"] == config.storage.documents_prefix
    mapping = only(template, "AWS::Lambda::EventSourceMapping")["Properties"]
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": [changes, "Arn"]} and mapping["FunctionName"] == {"Ref": function_name}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["MaximumBatchingWindowInSeconds"] == config.knowledge_base.ingestion_batch_window_s


@pytest.mark.parametrize(("stage", "stack", "search"), STAGES)
def test_ingest_may_start_jobs_on_this_knowledge_base_only(synth, stage, stack, search):
    template = template_of(synth, stack)
    statements = [s for r in template["Resources"].values() if r["Type"] == "AWS::IAM::Policy"
                  for s in r["Properties"]["PolicyDocument"]["Statement"]]
    (start,) = [s for s in statements if s["Action"] == "bedrock:StartIngestionJob"]
    assert start["Resource"] == {"Fn::GetAtt": ["KnowledgeBase", "KnowledgeBaseArn"]}


@pytest.mark.parametrize(("stage", "stack", "search"), STAGES)
def test_dead_letters_raise_an_alarm(synth, stage, stack, search):
    template = template_of(synth, stack)
    alarm = only(template, "AWS::CloudWatch::Alarm")["Properties"]
    (dead,) = [n for n, r in template["Resources"].items() if r["Type"] == "AWS::SQS::Queue" and n.startswith("IngestionDeadLetters")]
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible" and alarm["Namespace"] == "AWS/SQS"
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dead, "QueueName"]}}]
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold" and alarm["Threshold"] == 0


@pytest.mark.parametrize(("stage", "stack", "search"), STAGES)
def test_first_sync_after_deploy_goes_through_the_ingestion_queue(synth, stage, stack, search):
    from ingest.handler import DEPLOY_SOURCE

    template = template_of(synth, stack)
    sync_name, sync = only_named(template, "Custom::AWS")
    create = json.dumps(sync["Properties"]["Create"])
    assert '"action\\":\\"sendMessage\\"' in create
    assert f'\\\\\\"source\\\\\\":\\\\\\"{DEPLOY_SOURCE}\\\\\\"' in create
    (changes,) = [n for n, r in template["Resources"].items() if r["Type"] == "AWS::SQS::Queue" and n.startswith("IngestionChanges")]
    assert {"Ref": changes} in sync["Properties"]["Create"]["Fn::Join"][1]
    assert any(d.startswith("IngestionHandlerFunctionSqsEventSource") for d in sync["DependsOn"])  # the consumer is wired first
    assert sync["Properties"]["InstallLatestAwsSdk"] is False


def test_sample_documents_carry_only_filterable_metadata(synth):
    documents = sorted(p for p in SAMPLES.glob("*.md") if p.name != "README.md")
    assert len(documents) >= 3
    # Contract 6: `collection` (the evaluation's filter) becomes filterable by default on branch ops.
    filterable = set(synth.config.stages["dev"].search.filterable_fields) | {"collection"}
    for document in documents:
        sidecar = document.with_name(document.name + ".metadata.json")
        attributes = json.loads(sidecar.read_text())["metadataAttributes"]
        assert set(attributes) <= filterable, sidecar.name


@pytest.mark.parametrize(("section", "values", "key"), [
    ("knowledge_base", {"embedding_dimensions": 768}, "knowledge_base.embedding_dimensions"),
    ("knowledge_base", {"chunking_strategy": "HIERARCHICAL", "hierarchical_parent_max_tokens": 200}, "knowledge_base.hierarchical_parent_max_tokens"),
    ("knowledge_base", {"semantic_breakpoint_percentile": 40}, "knowledge_base.semantic_breakpoint_percentile"),
    ("knowledge_base", {"ingestion_retry_after_s": 30}, "knowledge_base.ingestion_retry_after_s"),
    ("search", {"engine_version": "2.11"}, "search.engine_version"),
    ("search", {"hybrid_vector_weight": 1.0}, "search.hybrid_vector_weight"),
    ("search", {"index_name": "_rag"}, "search.index_name"),
    ("search", {"filterable_fields": ["text"]}, "search.filterable_fields"),
])
def test_bad_search_and_knowledge_base_config_fails_naming_the_key(section, values, key):
    from stacks.config import ConfigError, load_config

    with pytest.raises(ConfigError) as error:
        load_config({"stages": {"dev": {section: values}}})
    assert error.value.key == f"stages.dev.{key}"
