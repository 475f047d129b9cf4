"""Monitoring: the stage's alarm topic (every alarm of every stack notifies it) and its dashboard.

Deploys right after Storage and before every stack with alarms, and imports nothing: the other
stacks build the topic's ARN from its fixed name (stacks/constructs/alarms.py), and the dashboard
addresses every resource by a name known at synth (function, API, endpoint, domain, alarm names),
so it can exist before the resources it shows.

    AlarmTopic      SNS topic `Rag<Stage>-alarms`, encrypted with its own KMS key (CloudWatch may
                    use the key and publish, for this stage's alarms only), optional e-mail
    StageDashboard  `Rag<Stage>-operations`: alarms, traffic/errors/latency by mode and generator
                    (the query function's metrics), API and function, endpoint, ingestion,
                    OpenSearch health, and the estimated cost of the always-on parts
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

import pricing
from stacks import serving_contract
from stacks.config import StageConfig
from stacks.constructs.alarms import alarm_name, alarm_name_pattern, alarm_topic_name
from stacks.knowledge_base_stack import DEAD_LETTERS_ALARM, INGESTION_NAMESPACE, INGEST_SERVICE, ingest_function_name
from stacks.search_stack import domain_name_for
from stacks.constructs.serving_alarms import API_STAGE_NAME, METRICS_NAMESPACE, api_name, query_function_name

PERIOD = cdk.Duration.minutes(5)
# The query function's metrics carry these dimensions (lambda/query/handler.py).
QUERY_DIMENSIONS = "{%s,generator,mode,service}" % METRICS_NAMESPACE
INGESTION_JOB_METRICS = ("IngestionJobsStarted", "IngestionJobsCompleted", "IngestionJobRetries", "IngestionJobsFailed",
                         "IngestionSyncsDeferred")
INGESTION_DOCUMENT_METRICS = ("IngestionDocumentsIndexed", "IngestionDocumentsDeleted", "IngestionDocumentsFailed")


def dashboard_name(stage: StageConfig) -> str:
    return f"{stage.stack_prefix}-operations"


@dataclass(frozen=True)
class CostLine:
    part: str
    detail: str
    per_hour: float

    @property
    def per_month(self) -> float:
        return self.per_hour * pricing.hours_per_month()


def always_on_costs(stage: StageConfig) -> list[CostLine]:
    """What the stage costs per hour before any request, at on-demand list prices (pricing/)."""
    search, inference = stage.search, stage.inference
    lines = [
        CostLine("OpenSearch data nodes", f"{search.data_node_count} x {search.data_node_instance_type}",
                 search.data_node_count * pricing.opensearch_instance_per_hour(search.data_node_instance_type)),
        CostLine("OpenSearch storage", f"{search.data_node_count} x {search.volume_size_gib} GiB gp3",
                 pricing.opensearch_storage_per_hour(search.data_node_count * search.volume_size_gib)),
    ]
    if search.dedicated_master_count:
        lines.append(CostLine("OpenSearch dedicated masters", f"{search.dedicated_master_count} x {search.dedicated_master_instance_type}",
                              search.dedicated_master_count * pricing.opensearch_instance_per_hour(search.dedicated_master_instance_type)))
    if inference.enabled:
        lines.append(CostLine("Endpoint, while switched on", f"{inference.min_instances} x {inference.instance_type} (autoscaling minimum)",
                              inference.min_instances * pricing.sagemaker_hosting_per_hour(inference.instance_type)))
    return lines


def cost_markdown(stage: StageConfig) -> str:
    lines = always_on_costs(stage)
    rows = [f"| {line.part} | {line.detail} | ${line.per_hour:,.3f} | ${line.per_month:,.0f} |" for line in lines]
    total = sum(line.per_hour for line in lines)
    return "\n".join([
        f"### Estimated always-on cost ({stage.name})",
        "| Part | Sizing | Per hour | Per month |",
        "| --- | --- | --- | --- |",
        *rows,
        f"| **Total** | | **${total:,.3f}** | **${total * pricing.hours_per_month():,.0f}** |",
        "",
        f"On-demand list prices in {pricing.region()}, checked {pricing.checked()} (pricing/prices.json). Requests "
        "(Bedrock tokens, Lambda, API Gateway), ingestion, training, logs and S3 come on top.",
    ])


class AlarmTopic(Construct):
    """The stage's alarm topic with its own key. Attributes: `topic`, `key`."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        # CloudWatch publishes as itself: the documented conditions name this account's alarms.
        alarms_of_this_stage = {
            "StringEquals": {"aws:SourceAccount": stack.account},
            "ArnLike": {"aws:SourceArn": stack.format_arn(service="cloudwatch", resource="alarm", resource_name=alarm_name_pattern(stage),
                                                          arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME)},
        }
        self.key = kms.Key(
            self,
            "Key",
            description=f"Encrypts the {stage.name} stage's alarm notifications (SNS topic {alarm_topic_name(stage)})",
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.DESTROY,  # holds no data: messages in flight only
        )
        # Without kms:GenerateDataKey* and kms:Decrypt on the topic's key, CloudWatch cannot publish
        # to an encrypted topic and every notification is dropped.
        self.key.add_to_resource_policy(iam.PolicyStatement(
            sid="CloudWatchAlarmsPublishEncrypted",
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            actions=["kms:Decrypt", "kms:GenerateDataKey*"],
            resources=["*"],
            conditions=alarms_of_this_stage,
        ))
        self.topic = sns.Topic(
            self,
            "Topic",
            topic_name=alarm_topic_name(stage),
            display_name=f"{stage.stack_prefix} alarms",
            master_key=self.key,
            enforce_ssl=True,
        )
        self.topic.add_to_resource_policy(iam.PolicyStatement(
            sid="CloudWatchAlarmsPublish",
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            actions=["sns:Publish"],
            resources=[self.topic.topic_arn],
            conditions=alarms_of_this_stage,
        ))
        if stage.monitoring.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(stage.monitoring.alarm_email))


class StageDashboard(Construct):
    """The stage's CloudWatch dashboard. Attribute: `dashboard`."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig, alarm_names: Sequence[str]) -> None:
        super().__init__(scope, construct_id)
        self.stage = stage
        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=dashboard_name(stage),
                                              default_interval=cdk.Duration.hours(3))
        self.dashboard.add_widgets(cloudwatch.TextWidget(markdown=self._header(), width=24, height=2))
        overview = [cloudwatch.AlarmStatusWidget(
            title="Alarms (all notify the stage's alarm topic)",
            alarms=[cloudwatch.Alarm.from_alarm_name(self, f"Alarm{index}", name) for index, name in enumerate(alarm_names)],
            width=14, height=6,
        )] if alarm_names else []  # CloudWatch refuses an alarm status widget without alarms
        self.dashboard.add_widgets(*overview, cloudwatch.TextWidget(markdown=cost_markdown(stage), width=10, height=6))
        self._queries()
        self._api_and_function()
        if stage.inference.enabled:
            self._endpoint()
        self._ingestion()
        self._search()

    def _header(self) -> str:
        return (f"# {self.stage.stack_prefix}: operations\n"
                f"Alarms go to SNS topic `{alarm_topic_name(self.stage)}`. What each alarm means and what to do: README, *Operations*.")

    @staticmethod
    def _graph(title: str, metrics: Sequence[cloudwatch.IMetric], *, width: int = 8, right: Sequence[cloudwatch.IMetric] = ()) -> cloudwatch.GraphWidget:
        return cloudwatch.GraphWidget(title=title, left=list(metrics), right=list(right), width=width, height=6, period=PERIOD)

    @staticmethod
    def _search_expression(schema: str, terms: str, statistic: str, label: str = "") -> cloudwatch.SearchExpression:
        return cloudwatch.SearchExpression(expression=f"SEARCH('{schema} {terms}', '{statistic}', {int(PERIOD.to_seconds())})",
                                           label=label, period=PERIOD)

    def _query_metric(self, name: str, statistic: str) -> cloudwatch.SearchExpression:
        """One series per (mode, generator) the query function has reported."""
        return self._search_expression(QUERY_DIMENSIONS, f'MetricName="{name}" service="query"', statistic, label=f"{name} ")

    def _queries(self) -> None:
        self.dashboard.add_widgets(
            self._graph("Queries by mode and generator", [self._query_metric("Queries", "Sum")]),
            self._graph("Errors by mode and generator (4xx, 5xx)",
                        [self._query_metric("QueryClientErrors", "Sum"), self._query_metric("QueryServerErrors", "Sum")]),
            self._graph("Query latency p90 (ms)", [self._query_metric("QueryLatency", "p90")]),
        )
        self.dashboard.add_widgets(
            self._graph("Retrieval latency p90 (ms)", [self._query_metric("RetrieveLatency", "p90")]),
            self._graph("Generation latency p90 (ms)", [self._query_metric("GenerateLatency", "p90")]),
            self._graph("Tokens by mode and generator", [self._query_metric("InputTokens", "Sum"), self._query_metric("OutputTokens", "Sum")]),
        )

    def _api_and_function(self) -> None:
        stage = self.stage

        def api(name: str, statistic: str, label: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace="AWS/ApiGateway", metric_name=name, statistic=statistic, period=PERIOD, label=label,
                                     dimensions_map={"ApiName": api_name(stage), "Stage": API_STAGE_NAME})

        def function(name: str, statistic: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace="AWS/Lambda", metric_name=name, statistic=statistic, period=PERIOD, label=f"{name} {statistic}",
                                     dimensions_map={"FunctionName": query_function_name(stage)})

        self.dashboard.add_widgets(
            self._graph("API requests and errors", [api("Count", "Sum", "requests"), api("4XXError", "Sum", "4xx"), api("5XXError", "Sum", "5xx")]),
            self._graph("API latency (ms)", [api("Latency", "p50", "p50"), api("Latency", "p90", "p90"), api("Latency", "p99", "p99"),
                                             api("IntegrationLatency", "p90", "integration p90")]),
            self._graph("Query function", [function("Invocations", "Sum"), function("Errors", "Sum"), function("Throttles", "Sum")],
                        right=[function("ConcurrentExecutions", "Maximum"), function("Duration", "p90")]),
        )

    def _endpoint(self) -> None:
        schema = "{AWS/SageMaker,EndpointName,VariantName}"
        endpoint = f'EndpointName="{serving_contract.endpoint_name(self.stage)}"'

        def by_variant(name: str, statistic: str) -> cloudwatch.SearchExpression:
            return self._search_expression(schema, f'{endpoint} MetricName="{name}"', statistic, label=f"{name} ")

        self.dashboard.add_widgets(
            self._graph(f"Endpoint {serving_contract.endpoint_name(self.stage)}: invocations by variant", [by_variant("Invocations", "Sum")]),
            self._graph("Model latency p90 by variant (microseconds)", [by_variant("ModelLatency", "p90")]),
            self._graph("Endpoint errors by variant", [by_variant("Invocation5XXErrors", "Sum"), by_variant("Invocation4XXErrors", "Sum")]),
        )

    def _ingestion(self) -> None:
        stage = self.stage

        def ingestion(name: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace=INGESTION_NAMESPACE, metric_name=name, statistic="Sum", period=PERIOD,
                                     label=name.removeprefix("Ingestion"), dimensions_map={"service": INGEST_SERVICE, "stage": stage.name})

        def ingest_function(name: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace="AWS/Lambda", metric_name=name, statistic="Sum", period=PERIOD, label=f"ingest {name}",
                                     dimensions_map={"FunctionName": ingest_function_name(stage)})

        dead_letters = cloudwatch.Alarm.from_alarm_name(self, "DeadLetters", alarm_name(stage, DEAD_LETTERS_ALARM))
        self.dashboard.add_widgets(
            self._graph("Ingestion jobs", [ingestion(name) for name in INGESTION_JOB_METRICS],
                        right=[ingest_function("Errors"), ingest_function("Throttles")]),
            self._graph("Ingested documents", [ingestion(name) for name in INGESTION_DOCUMENT_METRICS]),
            cloudwatch.AlarmWidget(title="Ingestion dead letters", alarm=dead_letters, width=8, height=6),
        )

    def _search(self) -> None:
        stage = self.stage
        account = cdk.Stack.of(self).account

        def domain(name: str, statistic: str, label: str = "") -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace="AWS/ES", metric_name=name, statistic=statistic, period=cdk.Duration.minutes(1),
                                     label=label or name, dimensions_map={"DomainName": domain_name_for(stage), "ClientId": account})

        self.dashboard.add_widgets(
            self._graph("OpenSearch cluster status", [domain(f"ClusterStatus.{color}", "Maximum", color) for color in ("green", "yellow", "red")],
                        width=6),
            self._graph("Free storage, smallest node (MiB)", [domain("FreeStorageSpace", "Minimum")], width=6),
            self._graph("JVM memory pressure and CPU (%)", [domain("JVMMemoryPressure", "Maximum"), domain("CPUUtilization", "Maximum")], width=6),
            self._graph("Search latency (ms) and rate", [domain("SearchLatency", "Average")], right=[domain("SearchRate", "Average")], width=6),
        )


class MonitoringStack(cdk.Stack):
    """The stage's alarm topic and dashboard. Attributes: `topic`, `key`, `dashboard`.

    `alarm_names` are the stage's fixed alarm names (plain strings) the dashboard lists.
    """

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig, alarm_names: Sequence[str] = (), **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        alarm_topic = AlarmTopic(self, "AlarmTopic", stage=stage)
        self.topic, self.key = alarm_topic.topic, alarm_topic.key
        self.dashboard = StageDashboard(self, "Operations", stage=stage, alarm_names=alarm_names).dashboard
        cdk.CfnOutput(self, "AlarmTopicArn", value=self.topic.topic_arn)
        cdk.CfnOutput(self, "DashboardName", value=dashboard_name(stage))
