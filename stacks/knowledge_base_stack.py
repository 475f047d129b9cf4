"""KnowledgeBase: the Bedrock knowledge base on the search domain, its S3 data source and ingestion.

Stateless (the vectors live in the Search stack's index, the documents in Storage): it can be
destroyed and redeployed; a redeploy syncs the documents again. Reads like the data path:

    knowledge base   OPENSEARCH_MANAGED_CLUSTER over the index the Search stack created (index
                     and field names from the same SearchConfig the custom resource used), Titan
                     Text Embeddings v2 with the configured dimensions, the Search stack's KB role
    data source      the documents bucket prefix, chunking from config
    Ingestion        S3 Object Created/Deleted -> EventBridge rule (its own DLQ) -> SQS
                     (batching) -> ingest Lambda (at most 2 at a time, by the event source
                     mapping's maximum concurrency) -> StartIngestionJob; a running job defers
                     the batch (a new delayed message, no receive spent); every started job is
                     checked later (GetIngestionJob) and a failed one retried, then alarmed;
                     real failures -> N receives -> DLQ + alarm
    first sync       on create, one message into the same queue, so a new stage starts indexed
                     and the first sync gets the same conflict handling and retries as the rest
    published id     the knowledge base id in an SSM parameter, which the Serving stack resolves
                     at deploy: replacing the knowledge base (a new index name) never meets an
                     export in use
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_bedrock as bedrock
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_ssm as ssm
from aws_cdk import custom_resources as cr
from constructs import Construct

from stacks.config import KnowledgeBaseConfig, StageConfig
from stacks.constructs.alarms import ALARM_PERIOD, alarm_name, stage_alarm
from stacks.constructs.compliance import DEPLOY_TIME_CONCURRENCY, accept, accept_function, invoked_by_cloudformation
from stacks.constructs.lifecycle import removal_policy, retention
from stacks.constructs.python_function import PythonFunction
from stacks.search_stack import TITAN_V2_MODEL_ID, SearchStack
from stacks.storage_stack import StorageStack

DEPLOY_SYNC_SOURCE = "rag.deploy"  # lambda/ingest/handler.py DEPLOY_SOURCE
# The ingest function's metrics (lambda/ingest/handler.py publishes them with these names).
INGESTION_NAMESPACE = "RagIngestion"
INGEST_SERVICE = "ingest"
JOBS_FAILED_METRIC = "IngestionJobsFailed"
DOCUMENTS_FAILED_METRIC = "IngestionDocumentsFailed"
# Alarm names within the stage (alarms.alarm_name): the dashboard and the README use them too.
DEAD_LETTERS_ALARM = "ingestion-dead-letters"
FAILED_JOBS_ALARM = "ingestion-failed-jobs"
FAILED_DOCUMENTS_ALARM = "ingestion-failed-documents"
INGEST_TIMEOUT = cdk.Duration.seconds(60)
# Lambda's guidance for SQS event sources: a visibility timeout of at least six function timeouts.
VISIBILITY_TIMEOUT = cdk.Duration.seconds(6 * 60)
# How long deferred syncs wait for a running job, and started jobs are checked, before giving up.
MAX_WAIT = cdk.Duration.hours(24)
# The event source mapping's cap (its minimum): one job runs per data source anyway.
MAX_CONCURRENCY = 2
# The id of the function CDK's AwsCustomResource shares within a stack (aws-cdk-lib custom-resources).
AWS_CUSTOM_RESOURCE_SINGLETON = "AWS679f53fac002430cb0da5b7982bd2287"


def ingest_function_name(stage: StageConfig) -> str:
    """`RagDev-ingest`: fixed, so the dashboard addresses it without a cross-stack reference."""
    return f"{stage.stack_prefix}-ingest"


def knowledge_base_id_parameter(stage: StageConfig) -> str:
    """The SSM parameter holding the stage's knowledge base id (written here, read by Serving)."""
    return f"/rag/{stage.name}/knowledge-base/id"


def ingestion_metric(stage: StageConfig, name: str, *, statistic: str = "Sum") -> cloudwatch.Metric:
    """One of the ingest function's metrics (EMF, dimensions service and stage)."""
    return cloudwatch.Metric(namespace=INGESTION_NAMESPACE, metric_name=name, statistic=statistic, period=ALARM_PERIOD,
                             dimensions_map={"service": INGEST_SERVICE, "stage": stage.name})


@dataclass(frozen=True)
class KnowledgeBaseRef:
    """The knowledge base as another stack sees it: resolved at that stack's deploy, no export."""

    knowledge_base_id: str
    knowledge_base_arn: str


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
    """S3 changes under the documents prefix -> one ingestion job per batch, each job checked.

    Attributes: `queue`, `dead_letter_queue` (also the EventBridge target's), `rule`, `handler`,
    `alarms` (dead letters, failed jobs, failed documents), `first_sync`.
    """

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig, storage: StorageStack,
                 knowledge_base: bedrock.CfnKnowledgeBase, data_source: bedrock.CfnDataSource) -> None:
        super().__init__(scope, construct_id)
        kb = stage.knowledge_base
        prefix = stage.storage.documents_prefix
        log_retention = retention(stage.search.log_retention_days)
        removal = removal_policy(stage)  # messages in flight are data: prod keeps the queues

        self.dead_letter_queue = sqs.Queue(
            self, "DeadLetters", encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
            retention_period=cdk.Duration.days(14), removal_policy=removal,
        )
        self.queue = sqs.Queue(
            self,
            "Changes",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            # A failed message comes back after this; a sync that meets a running job is re-sent
            # with a delay instead, so only real failures spend receives.
            visibility_timeout=VISIBILITY_TIMEOUT,
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letter_queue, max_receive_count=kb.ingestion_max_attempts),
            removal_policy=removal,
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
            # Events EventBridge cannot deliver (after its retries) land in the same dead-letter queue.
            targets=[targets.SqsQueue(self.queue, dead_letter_queue=self.dead_letter_queue,
                                      retry_attempts=185, max_event_age=cdk.Duration.hours(24))],
        )
        self.handler = PythonFunction(
            self,
            "Handler",
            source="ingest",
            function_name=ingest_function_name(stage),
            description="Starts one knowledge base ingestion job per batch of document changes and checks how each job ends",
            timeout=INGEST_TIMEOUT,
            log_retention=log_retention,
            log_removal_policy=removal,
            log_encryption_key=storage.key,  # document keys (names) and ingestion failure reasons
            environment={
                "KNOWLEDGE_BASE_ID": knowledge_base.attr_knowledge_base_id,
                "DATA_SOURCE_ID": data_source.attr_data_source_id,
                "DOCUMENTS_BUCKET": storage.documents_bucket.bucket_name,
                "DOCUMENTS_PREFIX": prefix,
                "INGESTION_QUEUE_URL": self.queue.queue_url,
                "RETRY_AFTER_S": str(kb.ingestion_retry_after_s),
                "MAX_JOB_RETRIES": str(kb.ingestion_job_retries),
                "MAX_WAIT_S": str(int(MAX_WAIT.to_seconds())),
                "STAGE": stage.name,
                "POWERTOOLS_METRICS_NAMESPACE": INGESTION_NAMESPACE,
            },
        )
        self.handler.function.add_to_role_policy(iam.PolicyStatement(
            actions=["bedrock:StartIngestionJob", "bedrock:GetIngestionJob"], resources=[knowledge_base.attr_knowledge_base_arn]))
        # Deferred syncs and job checks are the function's own delayed messages.
        self.queue.grant_send_messages(self.handler.function)
        self.handler.function.add_event_source(event_sources.SqsEventSource(
            self.queue,
            batch_size=10,
            max_batching_window=cdk.Duration.seconds(kb.ingestion_batch_window_s) if kb.ingestion_batch_window_s else None,
            # No reserved concurrency: it is refused in accounts with the default quota, and
            # throttled receives would count towards maxReceiveCount.
            max_concurrency=MAX_CONCURRENCY,
            report_batch_item_failures=True,
        ))
        self.alarms = self._alarms(stage)
        self.first_sync = self._first_sync(stage, data_source, log_retention, removal, storage)
        self._accept(kb)

    def _accept(self, kb: KnowledgeBaseConfig) -> None:
        redrive = (f"after {kb.ingestion_max_attempts} receives the change queue's redrive policy moves a failed message "
                   "to the dead-letter queue, which the ingestion-dead-letters alarm watches")
        accept_function(
            self.handler.function,
            dead_letters=f"its SQS event source mapping invokes it synchronously (a function DLQ only receives "
                         f"asynchronous events): {redrive}",
            concurrency=f"its SQS event source mapping caps it at {MAX_CONCURRENCY} concurrent invocations "
                        "(ScalingConfig.MaximumConcurrency, which this check does not read); reserved concurrency is "
                        "refused in accounts at the new-account quota, and its throttled receives would count towards "
                        "maxReceiveCount",
        )
        (mapping,) = [child for child in self.handler.function.node.children if isinstance(child, lambda_.EventSourceMapping)]
        accept(mapping,
               f"on-failure destinations are for stream and Kafka sources; for an SQS source the queue's redrive policy is "
               f"the failure destination: {redrive}",
               nag=["LambdaEventSourceMappingDestination"])
        for queue in (self.queue, self.dead_letter_queue):
            accept(queue, "encrypted at rest with SQS-managed server-side encryption (SqsManagedSseEnabled: true); this "
                          "check recognises only a KMS key (KmsMasterKeyId)",
                   checkov=["CKV_AWS_27"])
        accept(self.dead_letter_queue, "this is the dead-letter queue (of the change queue and of the EventBridge target): "
                                       "its messages are read by an operator after the ingestion-dead-letters alarm, "
                                       "not redriven automatically",
               nag=["SQSRedrivePolicy"])

    def _alarms(self, stage: StageConfig) -> list[cloudwatch.Alarm]:
        kb = stage.knowledge_base
        greater = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
        return [
            stage_alarm(
                self, "DeadLettersAlarm", stage=stage, name=DEAD_LETTERS_ALARM,
                description=f"Document changes failed {kb.ingestion_max_attempts} ingestion attempts, or EventBridge could not "
                            "deliver them: read the ingest function's errors, fix the cause, start a sync by hand, purge the queue.",
                metric=self.dead_letter_queue.metric_approximate_number_of_messages_visible(period=ALARM_PERIOD, statistic="Maximum"),
                threshold=1, comparison=greater,
            ),
            stage_alarm(
                self, "FailedJobsAlarm", stage=stage, name=FAILED_JOBS_ALARM,
                description=f"An ingestion job failed {kb.ingestion_job_retries + 1} time(s), or ran longer than "
                            f"{int(MAX_WAIT.to_hours())} h: its failure reasons are in the ingest function's logs.",
                metric=ingestion_metric(stage, JOBS_FAILED_METRIC), threshold=1, comparison=greater,
            ),
            stage_alarm(
                self, "FailedDocumentsAlarm", stage=stage, name=FAILED_DOCUMENTS_ALARM,
                description="An ingestion job completed but could not index some documents (format, size, metadata): "
                            "list them with get-ingestion-job / the knowledge base's logs and fix or remove them.",
                metric=ingestion_metric(stage, DOCUMENTS_FAILED_METRIC), threshold=1, comparison=greater,
            ),
        ]

    def _first_sync(self, stage: StageConfig, data_source: bedrock.CfnDataSource, log_retention: logs.RetentionDays,
                    removal: cdk.RemovalPolicy, storage: StorageStack) -> cr.AwsCustomResource:
        """First sync of a new stage (and after the data source is replaced): a message into the same queue."""
        sync_role = iam.Role(self, "FirstSyncRole", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                             description="Sends the first-sync message of a new knowledge base data source")
        sync_logs = logs.LogGroup(self, "FirstSyncLogs", retention=log_retention, removal_policy=removal, encryption_key=storage.key)
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
        first_sync = cr.AwsCustomResource(
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
        first_sync.node.add_dependency(self.handler.function)
        singleton = cdk.Stack.of(self).node.find_child(AWS_CUSTOM_RESOURCE_SINGLETON)
        accept_function(
            singleton,
            dead_letters=invoked_by_cloudformation("CDK's AwsCustomResource handler (the first-sync message)"),
            concurrency=DEPLOY_TIME_CONCURRENCY,
            environment=False,
        )
        accept(singleton, "CDK's AwsCustomResource handler makes one SDK call (sqs:SendMessage) when a data source is "
                          "created: 128 MB is enough, and a trace would add nothing the stack events do not show",
               nag=["LambdaDefaultMemorySize", "LambdaTracing"])
        return first_sync


class KnowledgeBaseStack(cdk.Stack):
    """Bedrock knowledge base on the Search stack's index, its S3 data source and automatic ingestion.

    Attributes: `knowledge_base` (CfnKnowledgeBase), `data_source` (CfnDataSource),
    `knowledge_base_id`, `knowledge_base_arn` (for this stack only: other stacks use
    `reference_in`), `ingestion` (queues, alarms, handler), `alarm_names`.
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
        self.alarm_names = [alarm_name(stage, name) for name in (DEAD_LETTERS_ALARM, FAILED_JOBS_ALARM, FAILED_DOCUMENTS_ALARM)]

        # Other stacks read the id from this parameter at their own deploy (`reference_in`): a
        # replaced knowledge base (new index name) updates it, and no export in use blocks that.
        self.id_parameter_name = knowledge_base_id_parameter(stage)
        ssm.StringParameter(self, "KnowledgeBaseIdParameter", parameter_name=self.id_parameter_name,
                            string_value=self.knowledge_base_id,
                            description=f"Id of the {stage.name} stage's knowledge base (resolved by Rag{stage.name.capitalize()}-Serving at deploy)")
        # MIGRATION: Serving imported these two exports before it read the parameter. They stay
        # (now imported by no one, so a replacement may change them) until every deployed stage
        # has run this version once; then delete these two lines.
        self.export_value(self.knowledge_base.attr_knowledge_base_arn)
        self.export_value(self.knowledge_base.attr_knowledge_base_id)

        cdk.CfnOutput(self, "KnowledgeBaseId", value=self.knowledge_base_id)
        cdk.CfnOutput(self, "DataSourceId", value=self.data_source.attr_data_source_id)
        cdk.CfnOutput(self, "IngestionDeadLetterQueueUrl", value=self.ingestion.dead_letter_queue.queue_url)

    def reference_in(self, consumer: cdk.Stack) -> KnowledgeBaseRef:
        """The knowledge base id and ARN as `consumer` sees them: its deploy reads the SSM parameter.

        The consumer must deploy after this stack (stage.py orders the stacks).
        """
        knowledge_base_id = ssm.StringParameter.value_for_string_parameter(consumer, self.id_parameter_name)
        arn = consumer.format_arn(service="bedrock", resource="knowledge-base", resource_name=knowledge_base_id)
        return KnowledgeBaseRef(knowledge_base_id=knowledge_base_id, knowledge_base_arn=arn)
