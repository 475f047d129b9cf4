"""Search: the OpenSearch Service domain the knowledge base stores its vectors in, and the index.

Stateful (prod retains the domain and its logs). Reads like the request path:

    roles       the three IAM roles that talk to the domain, created here so the domain access
                policy can name them (no `*` principal) without cross-stack cycles:
                index admin (the custom resource; FGAC master), knowledge base, query (serving)
    DomainLogs  CloudWatch log groups for slow, application and audit logs + their resource policy,
                encrypted with the stage key (slow logs carry query text)
    domain      OpenSearch, public endpoint (knowledge bases do not support VPC domains) behind IAM
                and fine-grained access control; HTTPS/TLS 1.2+, node-to-node and at-rest
                encryption with the project key; engine upgrades in place (EnableVersionUpgrade)
    VectorIndex custom resource (one provider): k-NN index, FGAC roles + mappings, hybrid pipeline
    DomainAlarms the recommended alarms (red/yellow status, free storage, JVM pressure, blocked
                writes, key inaccessible), all on the stage's alarm topic

The domain is the L1 `CfnDomain`: the L2 would add two AWS SDK custom resources (access policy,
log resource policy) that this stack writes directly, and every property here maps 1:1 to the
CloudFormation reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_opensearchservice as opensearch
from aws_cdk import custom_resources as cr
from constructs import Construct

from stacks.config import KnowledgeBaseConfig, SearchConfig, StageConfig
from stacks.constructs.alarms import alarm_name, stage_alarm
from stacks.constructs.compliance import DEPLOY_TIME_CONCURRENCY, accept, accept_function, acknowledge, invoked_by_cloudformation
from stacks.constructs.lifecycle import removal_policy, retention
from stacks.constructs.python_function import PythonFunction
from stacks.storage_stack import StorageStack

TLS_POLICY = "Policy-Min-TLS-1-2-PFS-2023-10"
TITAN_V2_MODEL_ID = "amazon.titan-embed-text-v2:0"
# What each principal may call on the domain (the domain access policy and the roles' own policies agree).
ADMIN_HTTP_ACTIONS = ["es:ESHttpGet", "es:ESHttpHead", "es:ESHttpPut", "es:ESHttpPost", "es:ESHttpDelete", "es:ESHttpPatch"]
KB_INDEX_ACTIONS = ["es:ESHttpGet", "es:ESHttpPost", "es:ESHttpPut", "es:ESHttpDelete"]
KB_INDEX_ROOT_ACTIONS = ["es:ESHttpGet", "es:ESHttpHead"]
QUERY_ACTIONS = ["es:ESHttpGet", "es:ESHttpPost"]


def domain_name_for(stage: StageConfig) -> str:
    """Explicit, so the ARN is known without referencing the domain (and fits Bedrock's DomainArn pattern)."""
    return f"rag-{stage.name}-search"


@dataclass(frozen=True)
class VectorIndexInfo:
    """What other stacks need to know about the index (the single source: SearchConfig + KB dimensions).

    Hybrid queries through `pipeline_name` list the BM25 sub-query first and the k-NN one second;
    `hybrid_weights` is that order: (lexical, vector).
    """

    endpoint_url: str  # https://<domain endpoint>
    domain_arn: str
    domain_name: str
    index_name: str
    vector_field: str
    text_field: str
    metadata_field: str
    filterable_fields: tuple[str, ...]
    pipeline_name: str
    hybrid_weights: tuple[float, float]
    embedding_dimensions: int


class DomainLogs(Construct):
    """Log groups for the domain's slow, application and audit logs, writable by OpenSearch only for this domain."""

    KINDS = {
        "SEARCH_SLOW_LOGS": "search-slow",
        "INDEX_SLOW_LOGS": "index-slow",
        "ES_APPLICATION_LOGS": "application",
        "AUDIT_LOGS": "audit",
    }

    def __init__(self, scope: Construct, construct_id: str, *, domain_name: str, domain_arn: str,
                 retention: logs.RetentionDays, removal: cdk.RemovalPolicy, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.groups = {
            kind: logs.LogGroup(self, suffix.title().replace("-", ""), log_group_name=f"/aws/opensearch/{domain_name}/{suffix}",
                                retention=retention, removal_policy=removal, encryption_key=key)
            for kind, suffix in self.KINDS.items()
        }
        stack = cdk.Stack.of(self)
        self.policy = logs.ResourcePolicy(
            self,
            "DeliveryPolicy",
            resource_policy_name=f"{domain_name}-log-delivery",
            policy_statements=[
                iam.PolicyStatement(
                    principals=[iam.ServicePrincipal("es.amazonaws.com")],
                    actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                    resources=[group.log_group_arn for group in self.groups.values()],
                    conditions={"StringEquals": {"aws:SourceAccount": stack.account}, "ArnLike": {"aws:SourceArn": domain_arn}},
                )
            ],
        )

    def publishing_options(self) -> dict[str, opensearch.CfnDomain.LogPublishingOptionProperty]:
        return {
            kind: opensearch.CfnDomain.LogPublishingOptionProperty(cloud_watch_logs_log_group_arn=group.log_group_arn, enabled=True)
            for kind, group in self.groups.items()
        }


class VectorIndex(Construct):
    """The custom resource that creates the vector index, FGAC roles/mappings and the hybrid pipeline.

    Its function runs as `admin_role`, the domain's FGAC master user. One provider for the stack.
    """

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig, admin_role: iam.Role,
                 endpoint_url: str, knowledge_base_role: iam.IRole, query_role: iam.IRole, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        search, kb = stage.search, stage.knowledge_base
        log_retention = retention(search.log_retention_days)
        log_removal = removal_policy(stage)  # the record of every index and security change
        self.function = PythonFunction(
            self,
            "Handler",
            source="vector_index",
            description="Creates the k-NN index, FGAC roles and hybrid search pipeline on the OpenSearch domain",
            timeout=cdk.Duration.minutes(10),  # retries 403s while IAM and FGAC propagate
            log_retention=log_retention,
            log_removal_policy=log_removal,
            log_encryption_key=key,  # index and role names, request errors from the domain
            role=admin_role,
        )
        framework_role = iam.Role(self, "ProviderRole", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                                  description="Runs the CDK custom resource provider framework for the vector index")
        framework_logs = logs.LogGroup(self, "ProviderLogs", retention=log_retention, removal_policy=log_removal, encryption_key=key)
        framework_logs.grant_write(framework_role)
        self.provider = cr.Provider(self, "Provider", on_event_handler=self.function.function, framework_on_event_role=framework_role,
                                    log_group=framework_logs)
        self.resource = cdk.CustomResource(
            self,
            "Resource",
            service_token=self.provider.service_token,
            resource_type="Custom::VectorIndex",
            properties=vector_index_properties(
                search, kb, endpoint_url=endpoint_url, retain=stage.retain_data,
                knowledge_base_role_arn=knowledge_base_role.role_arn, query_role_arn=query_role.role_arn,
            ),
        )
        stack = cdk.Stack.of(self)
        handler_id = stack.resolve(stack.get_logical_id(self.function.function.node.default_child))
        acknowledge(
            framework_role.node.find_child("DefaultPolicy"),
            f"AwsSolutions-IAM5[Resource::<{handler_id}.Arn>:*]",
            "The provider framework may invoke any version of the one handler function it fronts",
        )
        self._accept_functions()

    def _accept_functions(self) -> None:
        accept_function(
            self.function.function,
            dead_letters="the provider framework invokes it synchronously for each CloudFormation event of the index and "
                         "reports its error to CloudFormation, which fails (and rolls back) the stack operation",
            concurrency=DEPLOY_TIME_CONCURRENCY,
        )
        framework = self.provider.node.find_child("framework-onEvent")
        accept_function(
            framework,
            dead_letters=invoked_by_cloudformation("CDK's provider framework of the vector index"),
            concurrency=DEPLOY_TIME_CONCURRENCY,
        )
        accept(framework, "CDK's provider framework only relays CloudFormation events to the vector-index handler, which "
                          "is traced and sized for the work: 128 MB is enough to relay, and its own trace adds nothing "
                          "the handler's trace and the stack events do not show",
               nag=["LambdaDefaultMemorySize", "LambdaTracing"])


def vector_index_properties(search: SearchConfig, kb: KnowledgeBaseConfig, *, endpoint_url: str, retain: bool,
                            knowledge_base_role_arn: str, query_role_arn: str) -> dict:
    """The custom resource's properties: names and mapping from the same config objects as the knowledge base."""
    lexical = round(1.0 - search.hybrid_vector_weight, 6)
    return {
        "Endpoint": endpoint_url,
        "IndexName": search.index_name,
        "VectorField": search.vector_field,
        "TextField": search.text_field,
        "MetadataField": search.metadata_field,
        "FilterableFields": list(search.filterable_fields),
        "Dimensions": kb.embedding_dimensions,
        "NumberOfReplicas": 1 if search.data_node_count > 1 else 0,
        "PipelineName": search.search_pipeline_name,
        "HybridWeights": [lexical, search.hybrid_vector_weight],
        "KnowledgeBaseRoleArn": knowledge_base_role_arn,
        "QueryRoleArn": query_role_arn,
        "RetainIndex": retain,
        "AuditLogging": True,
    }


class DomainAlarms(Construct):
    """The alarms AWS recommends for an OpenSearch Service domain, on the stage's alarm topic.

    Attributes: `alarms`, `names` (their names, plain strings).
    """

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig, domain_name: str) -> None:
        super().__init__(scope, construct_id)
        account = cdk.Stack.of(self).account
        greater = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
        free_mib = stage.search.volume_size_gib * 1024 // 4  # a quarter of one data node's volume

        def metric(name: str, statistic: str, minutes: int = 1) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace="AWS/ES", metric_name=name, statistic=statistic, period=cdk.Duration.minutes(minutes),
                                     dimensions_map={"DomainName": domain_name, "ClientId": account})

        specs = [
            ("ClusterRedAlarm", "search-cluster-red", metric("ClusterStatus.red", "Maximum"), 1, greater, 1,
             "A primary shard is unassigned: searches and ingestion fail. Check node health and free storage; AWS restores red clusters from snapshots."),
            ("ClusterYellowAlarm", "search-cluster-yellow", metric("ClusterStatus.yellow", "Maximum"), 1, greater, 5,
             "A replica shard is unassigned for 5 minutes: one more node loss loses data. Check nodes and free storage."),
            ("FreeStorageAlarm", "search-free-storage", metric("FreeStorageSpace", "Minimum"), free_mib,
             cloudwatch.ComparisonOperator.LESS_THAN_OR_EQUAL_TO_THRESHOLD, 1,
             f"A data node has a quarter or less of its {stage.search.volume_size_gib} GiB left: raise search.volume_size_gib before writes are blocked."),
            ("JvmPressureAlarm", "search-jvm-pressure", metric("JVMMemoryPressure", "Maximum"), 95, greater, 3,
             "JVM memory pressure at 95% for 3 minutes: out-of-memory errors follow. Use a larger search.data_node_instance_type."),
            ("WritesBlockedAlarm", "search-writes-blocked", metric("ClusterIndexWritesBlocked", "Maximum", 5), 1, greater, 1,
             "The domain blocks writes (low storage or memory): ingestion jobs fail until it is fixed."),
            ("KeyInaccessibleAlarm", "search-key-inaccessible", metric("KMSKeyInaccessible", "Maximum"), 1, greater, 1,
             "The domain cannot use its KMS key (the stage key): re-enable the key or restore its policy at once."),
        ]
        self.alarms = [
            stage_alarm(self, construct, stage=stage, name=name, description=description, metric=m, threshold=threshold,
                        comparison=comparison, evaluation_periods=periods)
            for construct, name, m, threshold, comparison, periods, description in specs
        ]
        self.names = [alarm_name(stage, spec[1]) for spec in specs]


class SearchStack(cdk.Stack):
    """OpenSearch domain + vector index for the knowledge base and the direct hybrid retriever.

    Attributes: `domain` (CfnDomain), `vector_index` (CustomResource), `knowledge_base_role`,
    `query_role`, `index` (VectorIndexInfo), `alarms` and `alarm_names`.
    """

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig, storage: StorageStack, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        search = stage.search
        removal = removal_policy(stage)
        domain_name = domain_name_for(stage)
        # Built from the name, so roles and policies can name the domain without depending on it.
        domain_arn = self.format_arn(service="es", resource="domain", resource_name=domain_name)
        index_arn = f"{domain_arn}/{search.index_name}"
        nag_domain_arn = f"arn:<AWS::Partition>:es:<AWS::Region>:<AWS::AccountId>:domain/{domain_name}"

        # --- the roles that talk to the domain (all permissions inline: no attach-after-create races) ---
        admin_role = iam.Role(
            self,
            "IndexAdminRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="FGAC master user of the search domain; only the vector-index custom resource assumes it",
            inline_policies={"DomainHttp": iam.PolicyDocument(statements=[
                iam.PolicyStatement(actions=ADMIN_HTTP_ACTIONS, resources=[f"{domain_arn}/*"]),
            ])},
        )
        acknowledge(admin_role, f"AwsSolutions-IAM5[Resource::{nag_domain_arn}/*]",
                    "FGAC master of this one domain: creates the index, security roles/mappings and search pipeline")
        self.knowledge_base_role = self._knowledge_base_role(stage, storage, domain_arn, index_arn)
        self.query_role = iam.Role(
            self,
            "QueryRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Serving Lambda role: read-only searches of the vector index (FGAC reader role)",
            inline_policies={"SearchIndex": iam.PolicyDocument(statements=[
                iam.PolicyStatement(actions=QUERY_ACTIONS, resources=[index_arn, f"{index_arn}/_search"]),
            ])},
        )

        # --- logs and the domain ---
        domain_logs = DomainLogs(self, "Logs", domain_name=domain_name, domain_arn=domain_arn,
                                 retention=retention(search.log_retention_days), removal=removal, key=storage.key)
        self.domain = opensearch.CfnDomain(
            self,
            "Domain",
            domain_name=domain_name,
            engine_version=f"OpenSearch_{search.engine_version}",
            cluster_config=opensearch.CfnDomain.ClusterConfigProperty(
                instance_type=search.data_node_instance_type,
                instance_count=search.data_node_count,
                dedicated_master_enabled=search.dedicated_master_count > 0,
                dedicated_master_type=search.dedicated_master_instance_type if search.dedicated_master_count else None,
                dedicated_master_count=search.dedicated_master_count or None,
                zone_awareness_enabled=search.multi_az,
                zone_awareness_config=opensearch.CfnDomain.ZoneAwarenessConfigProperty(availability_zone_count=2) if search.multi_az else None,
                multi_az_with_standby_enabled=False,
            ),
            ebs_options=opensearch.CfnDomain.EBSOptionsProperty(ebs_enabled=True, volume_type="gp3", volume_size=search.volume_size_gib),
            encryption_at_rest_options=opensearch.CfnDomain.EncryptionAtRestOptionsProperty(enabled=True, kms_key_id=storage.key.key_id),
            node_to_node_encryption_options=opensearch.CfnDomain.NodeToNodeEncryptionOptionsProperty(enabled=True),
            domain_endpoint_options=opensearch.CfnDomain.DomainEndpointOptionsProperty(enforce_https=True, tls_security_policy=TLS_POLICY),
            advanced_security_options=opensearch.CfnDomain.AdvancedSecurityOptionsInputProperty(
                enabled=True,
                internal_user_database_enabled=False,  # IAM principals only: no master password anywhere
                anonymous_auth_enabled=False,
                master_user_options=opensearch.CfnDomain.MasterUserOptionsProperty(master_user_arn=admin_role.role_arn),
            ),
            log_publishing_options=domain_logs.publishing_options(),
            access_policies=self._access_policy(domain_arn, index_arn, admin_role).to_json(),
            software_update_options=opensearch.CfnDomain.SoftwareUpdateOptionsProperty(auto_software_update_enabled=True),
        )
        self.domain.apply_removal_policy(removal)
        # A new engine_version upgrades the domain in place; without it CloudFormation would replace
        # the domain, which fails for a named one (and would lose the index).
        self.domain.cfn_options.update_policy = cdk.CfnUpdatePolicy(enable_version_upgrade=True)
        self.domain.node.add_dependency(domain_logs.policy)  # OpenSearch checks it can write the logs at create
        self._acknowledge_domain(stage)

        endpoint_url = cdk.Fn.join("", ["https://", self.domain.attr_domain_endpoint])
        index = VectorIndex(self, "VectorIndex", stage=stage, admin_role=admin_role, endpoint_url=endpoint_url,
                            knowledge_base_role=self.knowledge_base_role, query_role=self.query_role, key=storage.key)
        self.vector_index = index.resource
        self.index = VectorIndexInfo(
            endpoint_url=endpoint_url,
            domain_arn=self.domain.attr_arn,
            domain_name=domain_name,
            index_name=search.index_name,
            vector_field=search.vector_field,
            text_field=search.text_field,
            metadata_field=search.metadata_field,
            filterable_fields=search.filterable_fields,
            pipeline_name=search.search_pipeline_name,
            hybrid_weights=(round(1.0 - search.hybrid_vector_weight, 6), search.hybrid_vector_weight),
            embedding_dimensions=stage.knowledge_base.embedding_dimensions,
        )
        domain_alarms = DomainAlarms(self, "Alarms", stage=stage, domain_name=domain_name)
        self.alarms, self.alarm_names = domain_alarms.alarms, domain_alarms.names
        cdk.CfnOutput(self, "DomainEndpoint", value=endpoint_url)
        cdk.CfnOutput(self, "IndexName", value=search.index_name)

    def _knowledge_base_role(self, stage: StageConfig, storage: StorageStack, domain_arn: str, index_arn: str) -> iam.Role:
        """Assumed by Bedrock for this account's knowledge bases only; every permission inline."""
        prefix = stage.storage.documents_prefix
        documents_export = storage.documents_arn_export.name
        documents_bucket_arn = storage.documents_arn_export.value
        nag_index_arn = f"arn:<AWS::Partition>:es:<AWS::Region>:<AWS::AccountId>:domain/{domain_name_for(stage)}/{stage.search.index_name}"
        principal = iam.ServicePrincipal("bedrock.amazonaws.com").with_conditions({
            "StringEquals": {"aws:SourceAccount": self.account},
            "ArnLike": {"aws:SourceArn": self.format_arn(service="bedrock", resource="knowledge-base", resource_name="*")},
        })
        model_arn = self.format_arn(service="bedrock", account="", resource="foundation-model", resource_name=TITAN_V2_MODEL_ID)
        role = iam.Role(
            self,
            "KnowledgeBaseRole",
            assumed_by=principal,
            description="Bedrock knowledge base service role: embeds documents and reads/writes the vector index",
            inline_policies={"KnowledgeBase": iam.PolicyDocument(statements=[
                iam.PolicyStatement(sid="IndexDocuments", actions=KB_INDEX_ACTIONS, resources=[f"{index_arn}/*"]),
                iam.PolicyStatement(sid="IndexItself", actions=KB_INDEX_ROOT_ACTIONS, resources=[index_arn]),
                iam.PolicyStatement(sid="DescribeDomain", actions=["es:DescribeDomain"], resources=[domain_arn]),
                iam.PolicyStatement(sid="Embed", actions=["bedrock:InvokeModel"], resources=[model_arn]),
                iam.PolicyStatement(sid="ListDocuments", actions=["s3:ListBucket"], resources=[documents_bucket_arn],
                                    conditions={"StringLike": {"s3:prefix": [prefix, f"{prefix}*"]}}),
                iam.PolicyStatement(sid="ReadDocuments", actions=["s3:GetObject"], resources=[f"{documents_bucket_arn}/{prefix}*"]),
                iam.PolicyStatement(sid="DecryptDocuments", actions=["kms:Decrypt"], resources=[storage.key.key_arn],
                                    conditions={"StringEquals": {"kms:ViaService": f"s3.{self.region}.amazonaws.com"}}),
            ])},
        )
        acknowledge(role, f"AwsSolutions-IAM5[Resource::{nag_index_arn}/*]",
                    "Documents of the one vector index: Bedrock writes and deletes them by id under the index path")
        acknowledge(role, f"AwsSolutions-IAM5[Resource::{documents_export}/{prefix}*]",
                    "Objects under the documents prefix only: the knowledge base's source files")
        return role

    def _access_policy(self, domain_arn: str, index_arn: str, admin_role: iam.IRole) -> iam.PolicyDocument:
        """Names exactly the three roles that need the domain, each on the paths it uses."""
        return iam.PolicyDocument(statements=[
            iam.PolicyStatement(sid="IndexAdmin", principals=[iam.ArnPrincipal(admin_role.role_arn)],
                                actions=ADMIN_HTTP_ACTIONS, resources=[f"{domain_arn}/*"]),
            iam.PolicyStatement(sid="KnowledgeBase", principals=[iam.ArnPrincipal(self.knowledge_base_role.role_arn)],
                                actions=sorted(set(KB_INDEX_ACTIONS + KB_INDEX_ROOT_ACTIONS)), resources=[index_arn, f"{index_arn}/*"]),
            iam.PolicyStatement(sid="Query", principals=[iam.ArnPrincipal(self.query_role.role_arn)],
                                actions=QUERY_ACTIONS, resources=[index_arn, f"{index_arn}/_search"]),
        ])

    def _acknowledge_domain(self, stage: StageConfig) -> None:
        acknowledge(self.domain, "AwsSolutions-OS1",
                    "Bedrock knowledge bases do not support VPC domains; the public endpoint is IAM-signed and FGAC-protected")
        acknowledge(self.domain, "AwsSolutions-OS3",
                    "Bedrock calls the domain from AWS-owned addresses: access is limited by IAM principals and FGAC, not IPs")
        if stage.search.dedicated_master_count == 0:
            acknowledge(self.domain, "AwsSolutions-OS4", f"Stage {stage.name} is a one-node development domain; prod uses dedicated masters")
        if not stage.search.multi_az:
            acknowledge(self.domain, "AwsSolutions-OS7", f"Stage {stage.name} is a one-node development domain; prod is multi-AZ")
        accept(self.domain, "Bedrock knowledge bases do not support VPC domains: the public endpoint accepts only SigV4 "
                            "requests of the three roles the access policy names, with fine-grained access control and "
                            "no anonymous or internal users (as AwsSolutions-OS1)",
               nag=["OpenSearchInVPCOnly"])
