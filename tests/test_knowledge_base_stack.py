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


def named(template: dict, kind: str, prefix: str) -> tuple[str, dict]:
    (found,) = [(n, r) for n, r in template["Resources"].items() if r["Type"] == kind and n.startswith(prefix)]
    return found


@pytest.mark.parametrize(("stage", "stack", "search"), STAGES)
def test_s3_changes_flow_through_eventbridge_and_sqs_to_the_ingest_function(synth, stage, stack, search):
    template = template_of(synth, stack)
    config = synth.config.stages[stage]
    rule = only(template, "AWS::Events::Rule")["Properties"]
    pattern = rule["EventPattern"]
    assert pattern["source"] == ["aws.s3"] and pattern["detail-type"] == ["Object Created", "Object Deleted"]
    assert pattern["detail"]["object"]["key"] == [{"prefix": config.storage.documents_prefix}]
    changes, queue = named(template, "AWS::SQS::Queue", "IngestionChanges")
    dead, dead_queue = named(template, "AWS::SQS::Queue", "IngestionDeadLetters")
    # What EventBridge cannot deliver lands in the dead-letter queue too (with its alarm).
    assert rule["Targets"] == [{"Arn": {"Fn::GetAtt": [changes, "Arn"]}, "Id": "Target0",
                                "DeadLetterConfig": {"Arn": {"Fn::GetAtt": [dead, "Arn"]}},
                                "RetryPolicy": {"MaximumEventAgeInSeconds": 86400, "MaximumRetryAttempts": 185}}]
    dlq_policy = next(r["Properties"] for r in template["Resources"].values()
                      if r["Type"] == "AWS::SQS::QueuePolicy" and r["Properties"]["Queues"] == [{"Ref": dead}])
    assert any(st.get("Principal") == {"Service": "events.amazonaws.com"} and st["Action"] == "sqs:SendMessage"
               for st in dlq_policy["PolicyDocument"]["Statement"])
    redrive = queue["Properties"]["RedrivePolicy"]
    assert redrive == {"deadLetterTargetArn": {"Fn::GetAtt": [dead, "Arn"]}, "maxReceiveCount": config.knowledge_base.ingestion_max_attempts}
    # Messages in flight are data: prod keeps both queues when the stack goes.
    for resource in (queue, dead_queue):
        assert resource["DeletionPolicy"] == ("Retain" if config.retain_data else "Delete")

    function_name, function = named(template, "AWS::Lambda::Function", "IngestionHandlerFunction")
    props = function["Properties"]
    assert props["FunctionName"] == f"{config.stack_prefix}-ingest"
    # No reserved concurrency (refused in new accounts, and its throttles spend receives)...
    assert "ReservedConcurrentExecutions" not in props
    # ...and six function timeouts of visibility, as Lambda advises for SQS sources.
    assert queue["Properties"]["VisibilityTimeout"] >= 6 * props["Timeout"]
    env = props["Environment"]["Variables"]
    assert env["KNOWLEDGE_BASE_ID"] == {"Fn::GetAtt": ["KnowledgeBase", "KnowledgeBaseId"]}
    assert env["DATA_SOURCE_ID"] == {"Fn::GetAtt": ["Documents", "DataSourceId"]}
    assert env["DOCUMENTS_PREFIX"] == config.storage.documents_prefix
    assert env["INGESTION_QUEUE_URL"] == {"Ref": changes}
    assert env["RETRY_AFTER_S"] == str(config.knowledge_base.ingestion_retry_after_s) and int(env["RETRY_AFTER_S"]) <= 900
    assert env["MAX_JOB_RETRIES"] == str(config.knowledge_base.ingestion_job_retries)
    assert env["STAGE"] == stage and env["POWERTOOLS_METRICS_NAMESPACE"] == "RagIngestion"
    mapping = only(template, "AWS::Lambda::EventSourceMapping")["Properties"]
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": [changes, "Arn"]} and mapping["FunctionName"] == {"Ref": function_name}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["MaximumBatchingWindowInSeconds"] == config.knowledge_base.ingestion_batch_window_s
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 2}  # the event source mapping's minimum


@pytest.mark.parametrize(("stage", "stack", "search"), STAGES)
def test_ingest_may_start_and_read_jobs_of_this_knowledge_base_and_requeue_on_its_queue(synth, stage, stack, search):
    template = template_of(synth, stack)
    statements = [s for r in template["Resources"].values() if r["Type"] == "AWS::IAM::Policy"
                  for s in r["Properties"]["PolicyDocument"]["Statement"]]
    (jobs,) = [s for s in statements if "bedrock:StartIngestionJob" in s["Action"]]
    assert sorted(jobs["Action"]) == ["bedrock:GetIngestionJob", "bedrock:StartIngestionJob"]
    assert jobs["Resource"] == {"Fn::GetAtt": ["KnowledgeBase", "KnowledgeBaseArn"]}
    changes, _ = named(template, "AWS::SQS::Queue", "IngestionChanges")
    sends = [s for s in statements if "sqs:SendMessage" in s["Action"] and s["Resource"] == {"Fn::GetAtt": [changes, "Arn"]}]
    assert len(sends) == 2  # the function (deferrals, checks) and the first-sync custom resource


@pytest.mark.parametrize(("stage", "stack", "search"), STAGES)
def test_dead_letters_failed_jobs_and_failed_documents_raise_named_alarms(synth, stage, stack, search):
    template = template_of(synth, stack)
    alarms = {r["Properties"]["AlarmName"]: r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm"}
    prefix = synth.config.stages[stage].stack_prefix
    assert set(alarms) == {f"{prefix}-ingestion-dead-letters", f"{prefix}-ingestion-failed-jobs", f"{prefix}-ingestion-failed-documents"}
    dead, _ = named(template, "AWS::SQS::Queue", "IngestionDeadLetters")
    dlq = alarms[f"{prefix}-ingestion-dead-letters"]
    assert dlq["MetricName"] == "ApproximateNumberOfMessagesVisible" and dlq["Namespace"] == "AWS/SQS"
    assert dlq["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dead, "QueueName"]}}]
    assert dlq["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and dlq["Threshold"] == 1
    from ingest import handler

    for name, metric in ((f"{prefix}-ingestion-failed-jobs", handler.JOBS_FAILED), (f"{prefix}-ingestion-failed-documents", handler.DOCUMENTS_FAILED)):
        alarm = alarms[name]
        assert alarm["Namespace"] == "RagIngestion" and alarm["MetricName"] == metric and alarm["Statistic"] == "Sum"
        assert alarm["Dimensions"] == [{"Name": "service", "Value": "ingest"}, {"Name": "stage", "Value": stage}]
        assert alarm["Threshold"] == 1 and alarm["TreatMissingData"] == "notBreaching"


@pytest.mark.parametrize(("stage", "stack", "search"), STAGES)
def test_the_knowledge_base_id_is_published_in_ssm_for_the_serving_stack(synth, stage, stack, search):
    template = template_of(synth, stack)
    parameter = only(template, "AWS::SSM::Parameter")["Properties"]
    assert parameter["Name"] == f"/rag/{stage}/knowledge-base/id"
    assert parameter["Value"] == {"Fn::GetAtt": ["KnowledgeBase", "KnowledgeBaseId"]} and parameter["Type"] == "String"


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
    # `collection` (the evaluation's filter) is filterable by default.
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
    ("knowledge_base", {"ingestion_retry_after_s": 901}, "knowledge_base.ingestion_retry_after_s"),
    ("knowledge_base", {"ingestion_max_attempts": 1}, "knowledge_base.ingestion_max_attempts"),
    ("knowledge_base", {"ingestion_job_retries": 11}, "knowledge_base.ingestion_job_retries"),
    ("search", {"engine_version": "2.11"}, "search.engine_version"),
    ("search", {"hybrid_vector_weight": 1.0}, "search.hybrid_vector_weight"),
    ("search", {"index_name": "_rag"}, "search.index_name"),
    ("search", {"filterable_fields": ["text"]}, "search.filterable_fields"),
    ("monitoring", {"alarm_email": "not-an-address"}, "monitoring.alarm_email"),
    ("monitoring", {"api_latency_p90_ms": 30000}, "monitoring.api_latency_p90_ms"),
    ("monitoring", {"api_5xx_threshold": 0}, "monitoring.api_5xx_threshold"),
])
def test_bad_search_and_knowledge_base_config_fails_naming_the_key(section, values, key):
    from stacks.config import ConfigError, load_config

    with pytest.raises(ConfigError) as error:
        load_config({"stages": {"dev": {section: values}}})
    assert error.value.key == f"stages.dev.{key}"
