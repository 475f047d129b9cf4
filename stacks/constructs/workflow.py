"""What every Step Functions workflow of the model lifecycle shares: JSONata text, log groups whose
names never collide across a destroy and redeploy, an alarm on failed executions, the bootstrap's
CloudFormation execution role.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.config import ConfigError, StageConfig
from stacks.constructs.alarms import stage_alarm
from stacks.constructs.lifecycle import removal_policy, retention

SNS_SUBJECT_MAX = 100


def jsonata(expression: str) -> str:
    """A JSONata expression as Step Functions expects it in a JSONata state's field."""
    return "{% " + expression + " %}"


def stack_instance_id(scope: Construct) -> str:
    """The UUID in the stack's id: unique per stack *creation*, so a destroy and redeploy gets a new one.

    A retained resource with a fixed name blocks the redeploy of its stack (the name is taken);
    suffixing the name with this keeps the name readable and the prefix fixed (IAM, log delivery).
    """
    return cdk.Fn.select(2, cdk.Fn.split("/", cdk.Aws.STACK_ID))


def workflow_log_group(scope: Construct, construct_id: str, *, name: str, stage: StageConfig, retention_days: int, key: kms.IKey) -> logs.LogGroup:
    """`/aws/vendedlogs/states/<name>-<stack uuid>`: kept with the stage's data policy, never in the way,
    encrypted with the stage key `key` (execution data: requests, job names, failure causes).

    The `/aws/vendedlogs/` prefix lets Step Functions' log delivery use one resource policy entry for
    all of them (CloudWatch Logs caps the policy size).
    """
    return logs.LogGroup(
        scope,
        construct_id,
        log_group_name=cdk.Fn.join("", [f"/aws/vendedlogs/states/{name}-", stack_instance_id(scope)]),
        retention=retention(retention_days),
        removal_policy=removal_policy(stage),
        encryption_key=key,
    )


def failed_executions_alarm(scope: Construct, construct_id: str, *, state_machine: sfn.StateMachine, stage: StageConfig, name: str, what: str) -> cloudwatch.Alarm:
    """Alarm `Rag<Stage>-<name>` when any execution fails, times out or is aborted (on the stage's topic)."""
    failed = state_machine.metric_failed(period=cdk.Duration.minutes(5), statistic="Sum")
    timed_out = state_machine.metric_timed_out(period=cdk.Duration.minutes(5), statistic="Sum")
    aborted = state_machine.metric_aborted(period=cdk.Duration.minutes(5), statistic="Sum")
    return stage_alarm(
        scope,
        construct_id,
        stage=stage,
        name=name,
        description=f"An execution of the {what} failed, timed out or was aborted: read its execution history.",
        metric=cloudwatch.MathExpression(
            expression="FILL(failed, 0) + FILL(timedOut, 0) + FILL(aborted, 0)",
            using_metrics={"failed": failed, "timedOut": timed_out, "aborted": aborted},
            period=cdk.Duration.minutes(5),
            label="unsuccessful executions",
        ),
        threshold=1,
        comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
    )


def cloudformation_execution_role_arn(scope: Construct) -> str:
    """The CDK bootstrap's CloudFormation execution role of the stack's environment.

    `cdk deploy` has CloudFormation act as this role; the model deployer passes the same one, so
    a stack update started by the pipeline has exactly the permissions a developer's deploy has.
    """
    stack = cdk.Stack.of(scope)
    synthesizer = stack.synthesizer
    if not isinstance(synthesizer, cdk.DefaultStackSynthesizer):
        raise ConfigError("synthesizer", type(synthesizer).__name__, "the default stack synthesizer (its bootstrap roles are what the model deployer passes to CloudFormation)")
    qualifier = synthesizer.bootstrap_qualifier or cdk.DefaultStackSynthesizer.DEFAULT_QUALIFIER
    return cdk.Fn.sub(f"arn:${{AWS::Partition}}:iam::${{AWS::AccountId}}:role/cdk-{qualifier}-cfn-exec-role-${{AWS::AccountId}}-${{AWS::Region}}")
