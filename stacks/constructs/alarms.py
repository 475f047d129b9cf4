"""Alarms that reach someone: every alarm of a stage notifies the stage's one alarm topic.

The topic lives in the stage's Monitoring stack, which deploys before every stack that has
alarms. It has a fixed name, so its ARN is built in the consumer stack from that name and the
stack's own account, region and partition: no cross-stack export ties the stacks together.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_sns as sns

from stacks.config import StageConfig

_TOPIC_ID = "StageAlarmTopic"


def alarm_topic_name(stage: StageConfig) -> str:
    """`RagDev-alarms`: the name of the stage's alarm topic."""
    return f"{stage.stack_prefix}-alarms"


def alarm_topic_arn(scope: cdk.Stack, stage: StageConfig) -> str:
    return scope.format_arn(service="sns", resource=alarm_topic_name(stage), arn_format=cdk.ArnFormat.NO_RESOURCE_NAME)


def alarm_topic(scope: cdk.Stack, stage: StageConfig) -> sns.ITopic:
    """The stage's alarm topic as seen from stack `scope` (one reference per stack)."""
    existing = scope.node.try_find_child(_TOPIC_ID)
    if existing is not None:
        return existing
    return sns.Topic.from_topic_arn(scope, _TOPIC_ID, alarm_topic_arn(scope, stage))


def notify(alarm: cloudwatch.Alarm, stage: StageConfig, *, on_ok: bool = True) -> cloudwatch.Alarm:
    """Sends `alarm`'s state changes (ALARM, and OK again unless `on_ok` is false) to the topic."""
    action = cw_actions.SnsAction(alarm_topic(cdk.Stack.of(alarm), stage))
    alarm.add_alarm_action(action)
    if on_ok:
        alarm.add_ok_action(action)
    return alarm
