"""Rag<Stage>-Monitoring: the encrypted alarm topic CloudWatch can publish to, the optional e-mail,
and a dashboard that addresses every resource by a name known at synth."""

from __future__ import annotations

import json

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match, Template

import pricing
from stacks.config import MonitoringConfig, StageConfig
from stacks.monitoring_stack import MonitoringStack, always_on_costs, cost_markdown
from stacks.serving_contract import endpoint_name as endpoint_name_for

STAGES = ("dev", "prod")
PSEUDO = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012", "AWS::URLSuffix": "amazonaws.com"}


def rendered(value) -> str:
    """A template string value with pseudo parameters filled in (the dashboard body is a Fn::Join)."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return PSEUDO[value["Ref"]]
    separator, parts = value["Fn::Join"]
    return separator.join(rendered(part) for part in parts)


def only(template: dict, kind: str) -> dict:
    (found,) = [r for r in template["Resources"].values() if r["Type"] == kind]
    return found


@pytest.fixture(scope="module", params=STAGES)
def monitoring(request, synth):
    stage = synth.config.stages[request.param]
    return stage, synth.template(f"{stage.stack_prefix}-Monitoring")


@pytest.fixture(scope="module")
def dashboard(monitoring):
    stage, template = monitoring
    body = json.loads(rendered(only(template, "AWS::CloudWatch::Dashboard")["Properties"]["DashboardBody"]))
    return stage, body, json.dumps(body)


def test_topic_has_the_contracts_name_and_its_own_rotating_key(monitoring):
    stage, template = monitoring
    topic = only(template, "AWS::SNS::Topic")["Properties"]
    assert topic["TopicName"] == f"{stage.stack_prefix}-alarms"
    (key_id,) = [name for name, r in template["Resources"].items() if r["Type"] == "AWS::KMS::Key"]
    assert topic["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    assert template["Resources"][key_id]["Properties"]["EnableKeyRotation"] is True


def test_cloudwatch_may_use_the_key_and_publish_for_this_stages_alarms_only(monitoring):
    stage, template = monitoring
    key_statements = only(template, "AWS::KMS::Key")["Properties"]["KeyPolicy"]["Statement"]
    (kms,) = [s for s in key_statements if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}]
    assert sorted(kms["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    topic_statements = only(template, "AWS::SNS::TopicPolicy")["Properties"]["PolicyDocument"]["Statement"]
    (publish,) = [s for s in topic_statements if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}]
    assert publish["Action"] == "sns:Publish" and publish["Effect"] == "Allow"
    for statement in (kms, publish):
        assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
        assert rendered(statement["Condition"]["ArnLike"]["aws:SourceArn"]) == f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:{stage.stack_prefix}-*"
    assert any(s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in topic_statements)


def test_no_subscription_unless_configured_and_one_e_mail_when_it_is(monitoring):
    _, template = monitoring
    assert not [r for r in template["Resources"].values() if r["Type"] == "AWS::SNS::Subscription"]
    stage = StageConfig(name="qa", monitoring=MonitoringConfig(alarm_email="oncall@example.com"))
    stack = MonitoringStack(cdk.App(), "RagQa-Monitoring", stage=stage)
    template = Template.from_stack(stack)
    template.has_resource_properties("AWS::SNS::Subscription", {
        "Protocol": "email", "Endpoint": "oncall@example.com", "TopicArn": {"Ref": Match.string_like_regexp("^AlarmTopic")}})
    (dashboard,) = template.find_resources("AWS::CloudWatch::Dashboard").values()
    widgets = json.loads(rendered(dashboard["Properties"]["DashboardBody"]))["widgets"]
    assert "alarm" not in {widget["type"] for widget in widgets} and len(widgets) > 10  # no status widget without alarms


def test_dashboard_lists_every_named_alarm_of_the_stage(synth, dashboard):
    stage, body, _ = dashboard
    (status,) = [w for w in body["widgets"] if w["type"] == "alarm"]
    listed = {arn.rsplit(":", 1)[1] for arn in status["properties"]["alarms"]}
    named = {r["Properties"]["AlarmName"] for name in synth.stack_names if name.startswith(f"{stage.stack_prefix}-")
             for r in synth.template(name)["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm" and "AlarmName" in r["Properties"]}
    assert named and listed == named


def test_dashboard_graphs_the_query_metrics_by_mode_and_generator(dashboard):
    _, body, text = dashboard
    expressions = [m[0]["expression"] for w in body["widgets"] if w["type"] == "metric"
                   for m in w["properties"].get("metrics", []) if isinstance(m[0], dict) and "expression" in m[0]]
    for metric in ("Queries", "QueryClientErrors", "QueryServerErrors", "QueryLatency", "RetrieveLatency", "GenerateLatency",
                   "InputTokens", "OutputTokens"):
        assert any(f'{{RagServing,generator,mode,service}} MetricName=\\"{metric}\\" service=\\"query\\"' in json.dumps(e) for e in expressions), metric


def metric_arrays(body: dict) -> list[list]:
    """Every [namespace, metric, dimension, value, ...] entry of the dashboard's graphs."""
    return [[part for part in m if not isinstance(part, dict)] for w in body["widgets"] if w["type"] == "metric"
            for m in w["properties"].get("metrics", []) if isinstance(m[0], str) and m[0] not in (".", "..")]


def test_dashboard_addresses_the_stages_resources_by_name(dashboard):
    stage, body, text = dashboard
    prefix = stage.stack_prefix
    arrays = metric_arrays(body)
    assert ["AWS/ApiGateway", "5XXError", "ApiName", f"{prefix}-query", "Stage", "v1"] in arrays
    assert ["AWS/Lambda", "Throttles", "FunctionName", f"{prefix}-query"] in arrays
    assert ["AWS/Lambda", "Errors", "FunctionName", f"{prefix}-ingest"] in arrays
    assert ["RagIngestion", "IngestionJobsFailed", "service", "ingest", "stage", stage.name] in arrays
    assert ["AWS/ES", "FreeStorageSpace", "ClientId", "123456789012", "DomainName", f"rag-{stage.name}-search"] in arrays
    assert f'EndpointName=\\"{endpoint_name_for(stage)}\\"' in text  # a SEARCH over every variant of the endpoint
    (dead_letters,) = [w for w in body["widgets"] if w["properties"].get("title") == "Ingestion dead letters"]
    assert dead_letters["properties"]["annotations"]["alarms"] == [
        f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:{prefix}-ingestion-dead-letters"]


def test_the_dashboards_names_are_the_ones_the_stacks_create(synth):
    for stages in synth.stages:
        prefix = stages.storage.stack_name.split("-")[0]
        stage = next(c for c in synth.config.stages.values() if c.stack_prefix == prefix)
        assert stages.inference.endpoint_name == endpoint_name_for(stage)
        functions = {r["Properties"].get("FunctionName") for name in (stages.serving.stack_name, stages.knowledge_base.stack_name)
                     for r in synth.template(name)["Resources"].values() if r["Type"] == "AWS::Lambda::Function"}
        assert {f"{prefix}-query", f"{prefix}-ingest"} <= functions
        (api,) = [r for r in synth.template(stages.serving.stack_name)["Resources"].values() if r["Type"] == "AWS::ApiGateway::RestApi"]
        assert api["Properties"]["Name"] == f"{prefix}-query"


def test_dashboard_shows_the_always_on_cost_from_the_price_table(dashboard):
    stage, body, _ = dashboard
    texts = [w["properties"]["markdown"] for w in body["widgets"] if w["type"] == "text"]
    assert cost_markdown(stage) in texts


def test_always_on_cost_of_prod_is_its_nodes_storage_masters_and_endpoint():
    stage = StageConfig(name="p")
    lines = {line.part: line for line in always_on_costs(stage)}
    search = stage.search
    assert lines["OpenSearch data nodes"].per_hour == pytest.approx(pricing.opensearch_instance_per_hour(search.data_node_instance_type))
    assert lines["OpenSearch storage"].per_month == pytest.approx(search.volume_size_gib * pricing.prices()["opensearch_gp3_gib_month"])
    assert "OpenSearch dedicated masters" not in lines  # none by default
    assert lines["Endpoint, while switched on"].per_hour == pytest.approx(pricing.sagemaker_hosting_per_hour(stage.inference.instance_type))
    markdown = cost_markdown(stage)
    total = sum(line.per_hour for line in lines.values())
    assert f"**${total:,.3f}**" in markdown and f"**${total * 730:,.0f}**" in markdown and pricing.checked() in markdown
