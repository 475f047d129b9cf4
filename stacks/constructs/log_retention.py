"""Config's retention day counts as CDK's RetentionDays."""

from __future__ import annotations

from aws_cdk import aws_logs as logs

from stacks.config import LOG_RETENTION_DAYS


def retention(days: int) -> logs.RetentionDays:
    """The RetentionDays member for a day count; config has already checked CloudWatch offers it."""
    return getattr(logs.RetentionDays, LOG_RETENTION_DAYS[days])
