"""stacks/constructs/alarms.py: an alarm notifies the stage's topic, addressed by its fixed name."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk.assertions import Template

from stacks.config import StageConfig
from stacks.constructs.alarms import alarm_name, alarm_topic_name, notify, stage_alarm


def test_notify_adds_alarm_and_ok_actions_on_the_stage_topic():
    stage = StageConfig(name="qa")
    stack = cdk.Stack(cdk.App(), "S")
    metric = cloudwatch.Metric(namespace="N", metric_name="M")
    notify(cloudwatch.Alarm(stack, "A", metric=metric, threshold=1, evaluation_periods=1), stage)
    notify(cloudwatch.Alarm(stack, "B", metric=metric, threshold=1, evaluation_periods=1), stage, on_ok=False)
    found = Template.from_stack(stack).find_resources("AWS::CloudWatch::Alarm")
    alarms = {logical_id[0]: resource for logical_id, resource in found.items()}  # ids start with the construct id
    expected = {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":sns:", {"Ref": "AWS::Region"}, ":", {"Ref": "AWS::AccountId"}, ":RagQa-alarms"]]}
    assert alarm_topic_name(stage) == "RagQa-alarms"
    assert alarms["A"]["Properties"]["AlarmActions"] == [expected]
    assert alarms["A"]["Properties"]["OKActions"] == [expected]
    assert alarms["B"]["Properties"]["AlarmActions"] == [expected]
    assert "OKActions" not in alarms["B"]["Properties"]


def test_stage_alarm_is_named_in_the_stage_says_where_the_runbook_is_and_notifies():
    stage = StageConfig(name="qa")
    stack = cdk.Stack(cdk.App(), "S")
    stage_alarm(stack, "A", stage=stage, name="thing-broke", description="The thing broke: restart it.",
                metric=cloudwatch.Metric(namespace="N", metric_name="M"), threshold=1,
                comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD)
    (alarm,) = Template.from_stack(stack).find_resources("AWS::CloudWatch::Alarm").values()
    props = alarm["Properties"]
    assert props["AlarmName"] == alarm_name(stage, "thing-broke") == "RagQa-thing-broke"
    assert props["AlarmDescription"] == "The thing broke: restart it. Runbook: README, Operations, thing-broke."
    assert props["TreatMissingData"] == "notBreaching"
    assert len(props["AlarmActions"]) == 1 and props["AlarmActions"] == props["OKActions"]
