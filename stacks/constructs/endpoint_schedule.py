"""Idle cost: EventBridge Scheduler switches the stage's endpoint on and off through the model deployer.

Two schedules from config (`inference.power_on_schedule`, `inference.power_off_schedule`, in
`inference.schedule_timezone`) start the deployer with `{"action": "power", ...}`; the deployer
writes the record's power and has CloudFormation apply it (the endpoint and its scaling and
alarms are created or deleted; the models stay in S3 and the record keeps their versions).
"""

from __future__ import annotations

import json

from aws_cdk import aws_iam as iam
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.config import StageConfig


class EndpointSchedule(Construct):
    """Attributes: `role`, `schedules` ({"on": CfnSchedule, "off": CfnSchedule})."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig, deployer: sfn.IStateMachine) -> None:
        super().__init__(scope, construct_id)
        inference = stage.inference
        if inference.power_on_schedule is None or inference.power_off_schedule is None:
            raise ValueError("EndpointSchedule needs inference.power_on_schedule and power_off_schedule")
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("scheduler.amazonaws.com"), description=f"{stage.stack_prefix}: the power schedule starts the model deployer")
        self.role.add_to_policy(iam.PolicyStatement(actions=["states:StartExecution"], resources=[deployer.state_machine_arn]))
        self.schedules = {}
        for power, expression in (("on", inference.power_on_schedule), ("off", inference.power_off_schedule)):
            self.schedules[power] = scheduler.CfnSchedule(
                self,
                f"Power{power.capitalize()}",
                description=f"{stage.stack_prefix}: switch the Inferentia2 endpoint {power}",
                schedule_expression=expression,
                schedule_expression_timezone=inference.schedule_timezone,
                flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
                state="ENABLED",
                target=scheduler.CfnSchedule.TargetProperty(
                    arn=deployer.state_machine_arn,
                    role_arn=self.role.role_arn,
                    input=json.dumps({"action": "power", "power": power, "source": "schedule"}),
                    retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(maximum_retry_attempts=3, maximum_event_age_in_seconds=3600),
                ),
            )
