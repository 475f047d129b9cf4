"""The serving path's operational names and alarms: what the dashboard and the alarms address.

The API and the query function have fixed names (`Rag<Stage>-query`), so the Monitoring stack,
which deploys first, graphs them from these plain strings without importing anything.
"""

from __future__ import annotations

from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from stacks.config import StageConfig
from stacks.constructs.alarms import ALARM_PERIOD, alarm_name, stage_alarm

API_STAGE_NAME = "v1"
METRICS_NAMESPACE = "RagServing"  # the query function's metrics (lambda/query/handler.py)
API_5XX_ALARM = "api-5xx"
API_LATENCY_ALARM = "api-latency"
QUERY_ERRORS_ALARM = "query-errors"
QUERY_THROTTLES_ALARM = "query-throttles"


def query_function_name(stage: StageConfig) -> str:
    """`RagDev-query`: the dashboard and alarms address the function by this name."""
    return f"{stage.stack_prefix}-query"


def api_name(stage: StageConfig) -> str:
    """`RagDev-query`: the REST API's name, its CloudWatch metrics' ApiName dimension."""
    return f"{stage.stack_prefix}-query"


def api_metric(stage: StageConfig, name: str, statistic: str) -> cloudwatch.Metric:
    return cloudwatch.Metric(namespace="AWS/ApiGateway", metric_name=name, statistic=statistic, period=ALARM_PERIOD,
                             dimensions_map={"ApiName": api_name(stage), "Stage": API_STAGE_NAME})


def function_metric(stage: StageConfig, name: str, statistic: str) -> cloudwatch.Metric:
    return cloudwatch.Metric(namespace="AWS/Lambda", metric_name=name, statistic=statistic, period=ALARM_PERIOD,
                             dimensions_map={"FunctionName": query_function_name(stage)})


class ServingAlarms(Construct):
    """API 5xx and latency, query function errors and throttles. Attributes: `alarms`, `names`."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig) -> None:
        super().__init__(scope, construct_id)
        monitoring = stage.monitoring
        greater = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
        specs = [
            ("Api5xxAlarm", API_5XX_ALARM, api_metric(stage, "5XXError", "Sum"), monitoring.api_5xx_threshold, 1, None,
             f"The API answered 5xx {monitoring.api_5xx_threshold}+ times in 5 minutes: look up the request ids in the query function's logs."),
            ("ApiLatencyAlarm", API_LATENCY_ALARM, api_metric(stage, "Latency", "p90"), monitoring.api_latency_p90_ms, 3, 2,
             f"API p90 latency above {monitoring.api_latency_p90_ms} ms: compare retrieve and generate latency on the dashboard."),
            ("QueryErrorsAlarm", QUERY_ERRORS_ALARM, function_metric(stage, "Errors", "Sum"), monitoring.query_errors_threshold, 1, None,
             "The query function crashed or timed out (handled errors are HTTP answers, not Lambda errors): read its logs."),
            ("QueryThrottlesAlarm", QUERY_THROTTLES_ALARM, function_metric(stage, "Throttles", "Sum"), 1, 1, None,
             "Lambda throttled the query function (account concurrency or its reserved concurrency): callers got errors."),
        ]
        self.alarms = [
            stage_alarm(self, construct, stage=stage, name=name, description=description, metric=metric, threshold=threshold,
                        comparison=greater, evaluation_periods=periods, datapoints_to_alarm=datapoints)
            for construct, name, metric, threshold, periods, datapoints, description in specs
        ]
        self.names = [alarm_name(stage, spec[1]) for spec in specs]


