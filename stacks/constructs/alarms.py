"""Alarms that reach someone: every alarm of a stage notifies the stage's one alarm topic.

The topic lives in the stage's Monitoring stack, which deploys before every stack that has
alarms. It has a fixed name, so its ARN is built in the consumer stack from that name and the
stack's own account, region and partition: no cross-stack export ties the stacks together.

Alarm names: `stage_alarm` names an alarm `Rag<Stage>-<name>` (the dashboard and the README
address it by that name); an alarm created without a name gets one from CloudFormation that
starts with its stack's name, `Rag<Stage>-<Part>-...`. Either way every alarm of a stage matches
`alarm_name_pattern(stage)`, which is what the topic's policy lets publish.
"""

from __future__ import annotations

from typing import Optional

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_sns as sns
from constructs import Construct

from stacks.config import StageConfig

_TOPIC_ID = "StageAlarmTopic"
# The period of every stage alarm unless it says otherwise: long enough to be cheap and quiet.
ALARM_PERIOD = cdk.Duration.minutes(5)


def alarm_topic_name(stage: StageConfig) -> str:
    """`RagDev-alarms`: the name of the stage's alarm topic."""
    return f"{stage.stack_prefix}-alarms"


def alarm_topic_arn(scope: cdk.Stack, stage: StageConfig) -> str:
    return scope.format_arn(service="sns", resource=alarm_topic_name(stage), arn_format=cdk.ArnFormat.NO_RESOURCE_NAME)


def alarm_name(stage: StageConfig, name: str) -> str:
    """`RagDev-ingestion-dead-letters`: an alarm's fixed name within its stage."""
    return f"{stage.stack_prefix}-{name}"


def alarm_name_pattern(stage: StageConfig) -> str:
    """Every alarm name of the stage, fixed or generated (both start with the stage's prefix)."""
    return f"{stage.stack_prefix}-*"


def alarm_arn(scope: cdk.Stack, stage: StageConfig, name: str) -> str:
    """The ARN of the stage alarm `name` (as given to `stage_alarm`), built in `scope`'s account and region."""
    return scope.format_arn(service="cloudwatch", resource="alarm", resource_name=alarm_name(stage, name),
                            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME)


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


def stage_alarm(
    scope: Construct,
    construct_id: str,
    *,
    stage: StageConfig,
    name: str,
    description: str,
    metric: cloudwatch.IMetric,
    threshold: float,
    comparison: cloudwatch.ComparisonOperator,
    evaluation_periods: int = 1,
    datapoints_to_alarm: Optional[int] = None,
    treat_missing_data: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
) -> cloudwatch.Alarm:
    """An alarm named `Rag<Stage>-<name>` that notifies the stage's topic.

    `description` says what the alarm means and what to do first; the README's operations
    section has the longer runbook under the same name.
    """
    alarm = cloudwatch.Alarm(
        scope,
        construct_id,
        alarm_name=alarm_name(stage, name),
        alarm_description=f"{description} Runbook: README, Operations, {name}.",
        metric=metric,
        threshold=threshold,
        comparison_operator=comparison,
        evaluation_periods=evaluation_periods,
        datapoints_to_alarm=datapoints_to_alarm,
        treat_missing_data=treat_missing_data,
    )
    return notify(alarm, stage)
