"""How long things live: config's retention days and the stage's removal policy, as CDK values."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_logs as logs

from stacks.config import LOG_RETENTION_DAYS, StageConfig


def retention(days: int) -> logs.RetentionDays:
    """The RetentionDays member for a day count; config has already checked CloudWatch offers it."""
    return getattr(logs.RetentionDays, LOG_RETENTION_DAYS[days])


def removal_policy(stage: StageConfig) -> cdk.RemovalPolicy:
    """What happens to a stage's data when its stack goes: kept where `retain_data`, else destroyed."""
    return cdk.RemovalPolicy.RETAIN if stage.retain_data else cdk.RemovalPolicy.DESTROY
