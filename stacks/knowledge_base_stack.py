"""KnowledgeBase: the Bedrock knowledge base on the search domain, its S3 data source and ingestion.

Stateless (the vectors live in the Search stack's index, the documents in Storage): it can be
destroyed and redeployed; a redeploy syncs the documents again. Reads like the data path:

    knowledge base   OPENSEARCH_MANAGED_CLUSTER over the index the Search stack created (index
                     and field names from the same SearchConfig the custom resource used), Titan
                     Text Embeddings v2 with the configured dimensions, the Search stack's KB role
    data source      the documents bucket prefix, chunking from config
    Ingestion        S3 Object Created/Deleted -> EventBridge rule -> SQS (batching) -> ingest
                     Lambda (reserved concurrency 1) -> StartIngestionJob; ConflictException and
                     throttling send the batch back to the queue; after N receives -> DLQ + alarm
    first sync       on create, one message into the same queue, so a new stage starts indexed
                     and the first sync gets the same conflict handling and retries as the rest
"""

from __future__ import annotations

import hashlib

import aws_cdk as cdk
from aws_cdk import aws_bedrock as bedrock
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from aws_cdk import custom_resources as cr
from constructs import Construct

from stacks.config import KnowledgeBaseConfig, StageConfig
from stacks.constructs.python_function import PythonFunction
from stacks.constructs.lifecycle import retention
from stacks.search_stack import TITAN_V2_MODEL_ID, SearchStack
from stacks.storage_stack import StorageStack

DEPLOY_SYNC_SOURCE = "rag.deploy"  # lambda/ingest/handler.py DEPLOY_SOURCE


def replacement_suffix(*values) -> str:
    """8 hex chars that change with the properties whose change replaces the resource.

    CloudFormation creates the replacement before deleting the old one, so a fixed name would
    collide (knowledge base names per account, data source names per knowledge base).
    """
    return hashlib.sha256("|".join(map(str, values)).encode()).hexdigest()[:8]


def chunking_configuration(kb: KnowledgeBaseConfig) -> bedrock.CfnDataSource.ChunkingConfigurationProperty:
    """The data source's chunking, from config (changing it replaces the data source; a sync follows)."""
    strategy = kb.chunking_strategy
    if strategy == "FIXED_SIZE":
        return bedrock.CfnDataSource.ChunkingConfigurationProperty(
            chunking_strategy=strategy,
            fixed_size_chunking_configuration=bedrock.CfnDataSource.FixedSizeChunkingConfigurationProperty(
                max_tokens=kb.chunk_max_tokens, overlap_percentage=kb.chunk_overlap_percentage),
        )
    if strategy == "HIERARCHICAL":
        return bedrock.CfnDataSource.ChunkingConfigurationProperty(
            chunking_strategy=strategy,
            hierarchical_chunking_configuration=bedrock.CfnDataSource.HierarchicalChunkingConfigurationProperty(
                level_configurations=[
                    bedrock.CfnDataSource.HierarchicalChunkingLevelConfigurationProperty(max_tokens=kb.hierarchical_parent_max_tokens),
                    bedrock.CfnDataSource.HierarchicalChunkingLevelConfigurationProperty(max_tokens=kb.chunk_max_tokens),
                ],
                overlap_tokens=kb.hierarchical_overlap_tokens,
            ),
        )
    if strategy == "SEMANTIC":
        return bedrock.CfnDataSource.ChunkingConfigurationProperty(
            chunking_strategy=strategy,
            semantic_chunking_configuration=bedrock.CfnDataSource.SemanticChunkingConfigurationProperty(
                breakpoint_percentile_threshold=kb.semantic_breakpoint_percentile,
                buffer_size=kb.semantic_buffer_size,
                max_tokens=kb.chunk_max_tokens,
            ),
        )
    return bedrock.CfnDataSource.ChunkingConfigurationProperty(chunking_strategy="NONE")


def chunking_key(kb: KnowledgeBaseConfig) -> tuple:
    """The settings the chunking configuration actually uses (they replace the data source when changed)."""
    used = {
        "FIXED_SIZE": (kb.chunk_max_tokens, kb.chunk_overlap_percentage),
        "HIERARCHICAL": (kb.hierarchical_parent_max_tokens, kb.chunk_max_tokens, kb.hierarchical_overlap_tokens),
        "SEMANTIC": (kb.semantic_breakpoint_percentile, kb.semantic_buffer_size, kb.chunk_max_tokens),
        "NONE": (),
    }
    return (kb.chunking_strategy, *used[kb.chunking_strategy])


class Ingestion(Construct):
    """S3 changes under the documents prefix -> one ingestion job per batch, with retries, DLQ and alarm."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig, storage: StorageStack,
                 knowledge_base: bedrock.CfnKnowledgeBase, data_source: bedrock.CfnDataSource) -> None:
        super().__init__(scope, construct_id)
        kb = stage.knowledge_base
        prefix = stage.storage.documents_prefix
        log_retention = retention(stage.search.log_retention_days)

        self.dead_letter_queue = sqs.Queue(
            self, "DeadLetters", encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
            retention_period=cdk.Duration.days(14),
        )
        self.queue = sqs.Queue(
            self,
            "Changes",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            # A batch that hit ConflictException becomes visible again after this: the retry delay.
            visibility_timeout=cdk.Duration.seconds(kb.ingestion_retry_after_s),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letter_queue, max_receive_count=kb.ingestion_max_attempts),
        )
        self.rule = events.Rule(
            self,
            "DocumentChanges",
            description=f"Objects created or deleted under s3://<documents>/{prefix}",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created", "Object Deleted"],
                detail={"bucket": {"name": [storage.documents_bucket.bucket_name]}, "object": {"key": [{"prefix": prefix}]}},
            ),
            targets=[targets.SqsQueue(self.queue)],
        )
        self.handler = PythonFunction(
            self,
            "Handler",
            source="ingest",
            description="Starts one knowledge base ingestion job per batch of document changes",
            timeout=cdk.Duration.seconds(30),
            log_retention=log_retention,
            reserved_concurrency=1,  # one caller of StartIngestionJob at a time
            environment={
                "KNOWLEDGE_BASE_ID": knowledge_base.attr_knowledge_base_id,
                "DATA_SOURCE_ID": data_source.attr_data_source_id,
                "DOCUMENTS_BUCKET": storage.documents_bucket.bucket_name,
                "DOCUMENTS_PREFIX": prefix,
            },
        )
        self.handler.function.add_to_role_policy(iam.PolicyStatement(
            actions=["bedrock:StartIngestionJob"], resources=[knowledge_base.attr_knowledge_base_arn]))
        self.handler.function.add_event_source(event_sources.SqsEventSource(
            self.queue,
            batch_size=10,
            max_batching_window=cdk.Duration.seconds(kb.ingestion_batch_window_s) if kb.ingestion_batch_window_s else None,
            report_batch_item_failures=True,
        ))
        self.dead_letter_alarm = cloudwatch.Alarm(
            self,
            "DeadLettersAlarm",
            alarm_description=f"Document changes failed {kb.ingestion_max_attempts} ingestion attempts: see the ingest function's logs",
            metric=self.dead_letter_queue.metric_approximate_number_of_messages_visible(period=cdk.Duration.minutes(5), statistic="Maximum"),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

        # First sync of a new stage (and after the data source is replaced): a message into the same queue.
        sync_role = iam.Role(self, "FirstSyncRole", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                             description="Sends the first-sync message of a new knowledge base data source")
        sync_logs = logs.LogGroup(self, "FirstSyncLogs", retention=log_retention, removal_policy=cdk.RemovalPolicy.DESTROY)
        sync_logs.grant_write(sync_role)
        message = cdk.Stack.of(self).to_json_string({
            "source": DEPLOY_SYNC_SOURCE,
            "detail-type": "Initial sync",
            "detail": {"dataSourceId": data_source.attr_data_source_id},
        })
        send = cr.AwsSdkCall(
            service="SQS",
            action="sendMessage",
            parameters={"QueueUrl": self.queue.queue_url, "MessageBody": message},
            physical_resource_id=cr.PhysicalResourceId.of(f"first-sync-{stage.name}"),
        )
        self.first_sync = cr.AwsCustomResource(
            self,
            "FirstSync",
            on_create=send,
            on_update=send,  # only runs when its properties change, i.e. a new data source
            policy=cr.AwsCustomResourcePolicy.from_statements([
                iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[self.queue.queue_arn]),
            ]),
            role=sync_role,
            log_group=sync_logs,
            install_latest_aws_sdk=False,
        )
        # The message must find the consumer wired (the event source mapping), not just the queue.
        self.first_sync.node.add_dependency(self.handler.function)


class KnowledgeBaseStack(cdk.Stack):
    """Bedrock knowledge base on the Search stack's index, its S3 data source and automatic ingestion.

    Attributes: `knowledge_base` (CfnKnowledgeBase), `data_source` (CfnDataSource),
    `knowledge_base_id`, `knowledge_base_arn`, `ingestion` (queue, DLQ, alarm, handler).
    """

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig, storage: StorageStack,
                 search: SearchStack, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        kb = stage.knowledge_base
        index = search.index
        model_arn = self.format_arn(service="bedrock", account="", resource="foundation-model", resource_name=TITAN_V2_MODEL_ID)

        self.knowledge_base = bedrock.CfnKnowledgeBase(
            self,
            "KnowledgeBase",
            name=f"rag-{stage.name}-{replacement_suffix(index.domain_name, index.index_name, index.vector_field, index.text_field, index.metadata_field, kb.embedding_model_id, kb.embedding_dimensions)}",
            description=f"Documents of the {stage.name} stage, embedded with Titan v2 ({kb.embedding_dimensions} dimensions)",
            role_arn=search.knowledge_base_role.role_arn,
            knowledge_base_configuration=bedrock.CfnKnowledgeBase.KnowledgeBaseConfigurationProperty(
                type="VECTOR",
                vector_knowledge_base_configuration=bedrock.CfnKnowledgeBase.VectorKnowledgeBaseConfigurationProperty(
                    embedding_model_arn=model_arn,
                    embedding_model_configuration=bedrock.CfnKnowledgeBase.EmbeddingModelConfigurationProperty(
                        bedrock_embedding_model_configuration=bedrock.CfnKnowledgeBase.BedrockEmbeddingModelConfigurationProperty(
                            dimensions=kb.embedding_dimensions, embedding_data_type="FLOAT32"),
                    ),
                ),
            ),
            storage_configuration=bedrock.CfnKnowledgeBase.StorageConfigurationProperty(
                type="OPENSEARCH_MANAGED_CLUSTER",
                opensearch_managed_cluster_configuration=bedrock.CfnKnowledgeBase.OpenSearchManagedClusterConfigurationProperty(
                    domain_arn=index.domain_arn,
                    domain_endpoint=index.endpoint_url,  # https://...: Bedrock's pattern requires the scheme
                    vector_index_name=index.index_name,
                    field_mapping=bedrock.CfnKnowledgeBase.OpenSearchManagedClusterFieldMappingProperty(
                        vector_field=index.vector_field, text_field=index.text_field, metadata_field=index.metadata_field),
                ),
            ),
        )
        # The index must exist before the knowledge base: Search (with its index resource) deploys first.
        self.knowledge_base.node.add_dependency(search.vector_index)
        self.knowledge_base_id = self.knowledge_base.attr_knowledge_base_id
        self.knowledge_base_arn = self.knowledge_base.attr_knowledge_base_arn

        self.data_source = bedrock.CfnDataSource(
            self,
            "Documents",
            knowledge_base_id=self.knowledge_base_id,
            name=f"documents-{replacement_suffix(*chunking_key(kb))}",
            description=f"s3://<documents bucket>/{stage.storage.documents_prefix}",
            data_source_configuration=bedrock.CfnDataSource.DataSourceConfigurationProperty(
                type="S3",
                s3_configuration=bedrock.CfnDataSource.S3DataSourceConfigurationProperty(
                    bucket_arn=storage.documents_bucket.bucket_arn,
                    bucket_owner_account_id=self.account,
                    inclusion_prefixes=[stage.storage.documents_prefix],
                ),
            ),
            # What happens to the vectors when the data source goes: a retained stage keeps them.
            data_deletion_policy="RETAIN" if stage.retain_data else "DELETE",
            vector_ingestion_configuration=bedrock.CfnDataSource.VectorIngestionConfigurationProperty(
                chunking_configuration=chunking_configuration(kb)),
        )

        self.ingestion = Ingestion(self, "Ingestion", stage=stage, storage=storage,
                                   knowledge_base=self.knowledge_base, data_source=self.data_source)

        cdk.CfnOutput(self, "KnowledgeBaseId", value=self.knowledge_base_id)
        cdk.CfnOutput(self, "DataSourceId", value=self.data_source.attr_data_source_id)
        cdk.CfnOutput(self, "IngestionDeadLetterQueueUrl", value=self.ingestion.dead_letter_queue.queue_url)
