"""The model deployer: the one way a model version, or the power, reaches the endpoint.

Every path that changes what serves starts this state machine: an approval in the registry
(EventBridge rule on "SageMaker Model Package State Change"; an approval event EventBridge cannot
deliver lands in a dead-letter queue and fires an alarm), the pipeline with auto-deploy
(it registers the version as Approved, which fires the same rule), `scripts/rollback_model.py`,
`scripts/endpoint_power.py` and the power schedule. It never calls UpdateEndpoint: it writes the
serving record (SSM, lambda/shared/model_record.py) and has CloudFormation apply it:

    Start -> ReadRecord (ssm:GetParameters) -> Route
      deploy: DescribePackage -> CheckPackage (approved? this registry? a role this stage serves?
              for approvals: not older than what serves) -> PlanDeploy
      power:  PlanPower
    -> Plan: one step, or two when the set of variants on a running endpoint changes (switch it
       off with the old record, then apply the new one: SageMaker's blue/green needs the same
       variant names and cannot remove a variant that autoscaling has registered)
    -> per step: WriteRecord (ssm:PutParameter) -> ApplyRecord (cloudformation:UpdateStack on
       Rag<Stage>-Inference, UsePreviousTemplate, every parameter UsePreviousValue, the CDK
       bootstrap's CloudFormation execution role) -> poll DescribeStacks to UPDATE_COMPLETE
       ("No updates are to be performed" = done; another update in progress = wait and retry)
    -> a failed or rolled-back update: restore the previous record and apply it again
    -> Notify (SNS) with the outcome -> Done / DeployFailed

Request (execution input):
    {"action": "deploy", "model_package_arn": "...", "source": "approval" | "rollback" | "operator"}
    {"action": "power", "power": "on" | "off", "source": "schedule" | "operator"}
"""

from __future__ import annotations

import json

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from stacks import serving_contract
from stacks.config import StageConfig
from stacks.constructs.alarms import ALARM_PERIOD, stage_alarm
from stacks.constructs.compliance import accept, acknowledge
from stacks.constructs.generator_endpoint import parameter_ids, served_roles
from stacks.constructs.lifecycle import removal_policy
from stacks.constructs.model_registry import ROLE_PROPERTY, ModelRegistry
from stacks.constructs.serving_record import ServingRecord
from stacks.constructs.workflow import SNS_SUBJECT_MAX, cloudformation_execution_role_arn, failed_executions_alarm, jsonata, workflow_log_group
from stacks.storage_stack import ARTIFACT_PREFIXES

DEPLOYER_FAILED_ALARM = "model-deployer-failed"  # Rag<Stage>-model-deployer-failed (README, Operations)
APPROVAL_UNDELIVERED_ALARM = "model-approval-undelivered"  # Rag<Stage>-model-approval-undelivered (README, Operations)

record = serving_contract.model_record
STACK_POLL_SECONDS = 30
BUSY_RETRY_SECONDS = 60
MAX_BUSY_RETRIES = 120  # two hours of someone else's stack update
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]
SUCCESS_OUTCOMES = ("deployed", "unchanged", "skipped")
NO_UPDATES = "No updates are to be performed"
BUSY = "_IN_PROGRESS state"
APPROVAL_EVENT = "SageMaker Model Package State Change"


def inference_stack_name(stage: StageConfig) -> str:
    return f"{stage.stack_prefix}-Inference"


class ModelDeployer(Construct):
    """Attributes: `state_machine`, `approval_rule`, `approval_dead_letters` (approval events EventBridge
    could not deliver), `log_group`, `failed_alarm`, `undelivered_alarm`, `stack_name`."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        registry: ModelRegistry,
        serving_record: ServingRecord,
        artifacts_bucket_name: str,
        topic: sns.ITopic,
        key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        self.stage = stage
        self.registry = registry
        self.record = serving_record
        self.topic = topic
        self.stack_name = inference_stack_name(stage)
        self.roles = list(served_roles(stage))
        self.models_uri = f"s3://{artifacts_bucket_name}/{ARTIFACT_PREFIXES.models}"
        self.bucket_uri = f"s3://{artifacts_bucket_name}/"
        stack = cdk.Stack.of(self)
        self.stack_arn = stack.format_arn(service="cloudformation", resource="stack", resource_name=f"{self.stack_name}/*")
        self.execution_role_arn = cloudformation_execution_role_arn(self)

        self.log_group = workflow_log_group(self, "Logs", name=f"{stage.stack_prefix}-model-deployer", stage=stage, retention_days=stage.training.log_retention_days, key=key)
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=f"{stage.stack_prefix}-model-deployer",
            definition_body=sfn.DefinitionBody.from_chainable(self._definition()),
            query_language=sfn.QueryLanguage.JSONATA,
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
            timeout=cdk.Duration.hours(8),
        )
        policy = iam.Policy(
            self,
            "DeployPolicy",
            roles=[self.state_machine.role],
            statements=[
                iam.PolicyStatement(sid="PassCloudFormationRole", actions=["iam:PassRole"], resources=[self.execution_role_arn], conditions={"StringEquals": {"iam:PassedToService": "cloudformation.amazonaws.com"}}),
                iam.PolicyStatement(sid="PublishEncrypted", actions=["kms:GenerateDataKey", "kms:Decrypt"], resources=[key.key_arn]),
            ],
        )
        self.state_machine.node.default_child.node.add_dependency(policy)
        self.failed_alarm = failed_executions_alarm(self, "FailedExecutionsAlarm", state_machine=self.state_machine, stage=stage, name=DEPLOYER_FAILED_ALARM, what="model deployer")

        # An approval event the rule cannot deliver (after its retries) is kept here and alarmed:
        # otherwise an approved version would silently never deploy.
        self.approval_dead_letters = sqs.Queue(
            self, "ApprovalDeadLetters", encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
            retention_period=cdk.Duration.days(14), removal_policy=removal_policy(stage),
        )
        self.approval_rule = events.Rule(
            self,
            "ApprovalRule",
            description=f"{stage.stack_prefix}: an approved model version is deployed by the model deployer",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=[APPROVAL_EVENT],
                detail={"ModelPackageGroupName": [registry.group_name], "ModelApprovalStatus": ["Approved"]},
            ),
            targets=[
                targets.SfnStateMachine(
                    self.state_machine,
                    input=events.RuleTargetInput.from_object({"action": "deploy", "source": "approval", "model_package_arn": events.EventField.from_path("$.detail.ModelPackageArn")}),
                    retry_attempts=3,
                    dead_letter_queue=self.approval_dead_letters,
                )
            ],
        )
        self.undelivered_alarm = stage_alarm(
            self, "ApprovalUndeliveredAlarm", stage=stage, name=APPROVAL_UNDELIVERED_ALARM,
            description="EventBridge could not start the model deployer for an approved model version: the message in the "
                        "approval dead-letter queue names the version; fix the cause, deploy it with scripts/rollback_model.py --to, purge the queue.",
            metric=self.approval_dead_letters.metric_approximate_number_of_messages_visible(period=ALARM_PERIOD, statistic="Maximum"),
            threshold=1, comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        )
        self._acknowledge()

    # --- expressions ----------------------------------------------------------------------------

    def _roles_literal(self) -> str:
        return json.dumps(self.roles)

    def _served(self) -> str:
        """JSONata function: the comma-joined roles a record serves ('' when off or empty)."""
        return (
            "$served := function($r) { ("
            f"$s := $filter({self._roles_literal()}, function($role) {{ $r.endpoint = 'on' and $lookup($r, $role) != 'none' }});"
            " $exists($s) ? $join($s, ',') : '' ) }"
        )

    def _definition(self) -> sfn.IChainable:
        stage = self.stage
        path = self.record.path
        names = self.record.names

        notify = tasks.SnsPublish.jsonata(
            self,
            "Notify",
            topic=self.topic,
            subject=jsonata(f"$substring('{stage.stack_prefix} model deployer: ' & $outcome, 0, {SNS_SUBJECT_MAX})"),
            message=sfn.TaskInput.from_text(jsonata(
                "$string({'outcome': $outcome, 'reason': $reason, 'request': $request, 'package': $package, "
                "'previous': $previous, 'target': $target, 'execution': $states.context.Execution.Id})"
            )),
        )
        done = sfn.Succeed(self, "Done")
        deploy_failed = sfn.Fail(self, "DeployFailed", error=jsonata("$outcome"), cause=jsonata("$reason"))
        notify.next(
            sfn.Choice.jsonata(self, "Succeeded?")
            .when(sfn.Condition.jsonata(jsonata(f"$outcome in {json.dumps(list(SUCCESS_OUTCOMES))}")), done)
            .otherwise(deploy_failed)
        )

        def outcome(construct_id: str, value: str, reason: str) -> sfn.Pass:
            state = sfn.Pass.jsonata(self, construct_id, assign={"outcome": value, "reason": jsonata(reason)})
            state.next(notify)
            return state

        failed = outcome("Failed", "failed", "$states.input.Cause")
        start = sfn.Pass.jsonata(
            self,
            "Start",
            assign={"request": jsonata("$states.input"), "package": None, "target": None, "previous": None, "outcome": "", "reason": "", "steps": [], "step": 0, "restoring": False, "busy": 0},
        )
        read = tasks.CallAwsService.jsonata(
            self,
            "ReadRecord",
            service="ssm",
            action="getParameters",
            # IAM's spelling (CDK would grant `ssm:getParameters`): the same permission, as IAM ignores
            # case, but checkov's CKV_AWS_108 misreads the lower-case form as an action without resource
            # constraints (data exfiltration); these three parameters are the only resources.
            iam_action="ssm:GetParameters",
            iam_resources=list(self.record.arns.values()),
            parameters={"Names": [names["base"], names["finetuned"], names["endpoint"]]},
            assign={"previous": jsonata(f"$merge($states.result.Parameters.{{$substringAfter(Name, '{path}'): Value}})")},
            outputs=jsonata("{'missing': $states.result.InvalidParameters}"),
        )
        read.add_catch(failed, errors=["States.ALL"], outputs=jsonata("$states.errorOutput"))
        incomplete = outcome("RecordIncomplete", "failed", "'the serving record is incomplete (missing: ' & $join($states.input.missing, ', ') & '): redeploy the Training stack, it creates missing parameters'")
        invalid = outcome("InvalidRequest", "invalid", "'expected {\"action\": \"deploy\", \"model_package_arn\": ...} or {\"action\": \"power\", \"power\": \"on\"|\"off\"}, got ' & $string($request)")

        # --- deploy a version ------------------------------------------------------------------
        describe = tasks.CallAwsService.jsonata(
            self,
            "DescribePackage",
            service="sagemaker",
            action="describeModelPackage",
            iam_resources=[self.registry.packages_arn],
            parameters={"ModelPackageName": jsonata("$request.model_package_arn")},
            assign={"package": jsonata(
                "{'arn': $states.result.ModelPackageArn, 'group': $states.result.ModelPackageGroupName, "
                "'version': $string($states.result.ModelPackageVersion), "
                f"'role': $states.result.CustomerMetadataProperties.{ROLE_PROPERTY}, "
                "'approval': $states.result.ModelApprovalStatus, "
                "'uri': $states.result.InferenceSpecification.Containers[0].ModelDataSource.S3DataSource.S3Uri}"
            )},
        )
        describe.add_catch(failed, errors=["States.ALL"], outputs=jsonata("$states.errorOutput"))
        check = sfn.Pass.jsonata(self, "CheckPackage", assign={"reason": jsonata(self._skip_reason())})
        skipped = outcome("Skipped", "skipped", "$reason")
        plan_deploy = sfn.Pass.jsonata(
            self,
            "PlanDeploy",
            assign={"target": jsonata(f"$merge([$previous, {{$package.role: $package.version & '{record.SEPARATOR}' & $substringAfter($package.uri, '{self.bucket_uri}')}}])")},
        )
        plan_power = sfn.Pass.jsonata(self, "PlanPower", assign={"target": jsonata("$merge([$previous, {'endpoint': $request.power}])")})
        plan = sfn.Pass.jsonata(
            self,
            "Plan",
            assign={"steps": jsonata(
                f"( {self._served()}; $old := $served($previous); $new := $served($target);"
                " $old != '' and $new != '' and $old != $new ? [$merge([$previous, {'endpoint': 'off'}]), $target] : [$target] )"
            ), "step": 0},
        )
        plan_deploy.next(plan)
        plan_power.next(plan)

        # --- apply the plan, step by step --------------------------------------------------------
        put = tasks.CallAwsService.jsonata(
            self,
            "PutParameter",
            service="ssm",
            action="putParameter",
            iam_action="ssm:PutParameter",  # spelled as IAM does, like ReadRecord's
            iam_resources=list(self.record.arns.values()),
            parameters={"Name": jsonata("$states.input.name"), "Value": jsonata("$states.input.value"), "Type": "String", "Overwrite": True},
        )
        write = sfn.Map.jsonata(
            self,
            "WriteRecord",
            items=sfn.ProvideItems.jsonata(jsonata(f"$each($steps[$step], function($v, $k) {{ {{'name': '{path}' & $k, 'value': $v}} }})")),
            max_concurrency=1,
            outputs=jsonata("{}"),
        )
        write.item_processor(put)
        apply = tasks.CallAwsService.jsonata(
            self,
            "ApplyRecord",
            service="cloudformation",
            action="updateStack",
            iam_resources=[self.stack_arn],
            parameters={
                "StackName": self.stack_name,
                "UsePreviousTemplate": True,
                "Parameters": [{"ParameterKey": key, "UsePreviousValue": True} for key in parameter_ids(stage)],
                "Capabilities": CAPABILITIES,
                "RoleARN": self.execution_role_arn,
            },
        )
        refused = sfn.Choice.jsonata(self, "UpdateRefused?")
        apply.add_catch(refused, errors=["States.ALL"], outputs=jsonata("$states.errorOutput"))
        wait_busy = sfn.Wait.jsonata(self, "WaitForOtherUpdate", time=sfn.WaitTime.duration(cdk.Duration.seconds(BUSY_RETRY_SECONDS)))
        count_busy = sfn.Pass.jsonata(self, "CountWait", assign={"busy": jsonata("$busy + 1")})
        count_busy.next(wait_busy).next(apply)
        wait_stack = sfn.Wait.jsonata(self, "WaitForStack", time=sfn.WaitTime.duration(cdk.Duration.seconds(STACK_POLL_SECONDS)))
        describe_stack = tasks.CallAwsService.jsonata(
            self,
            "DescribeStack",
            service="cloudformation",
            action="describeStacks",
            iam_resources=[self.stack_arn],
            parameters={"StackName": self.stack_name},
            outputs=jsonata("{'status': $states.result.Stacks[0].StackStatus, 'reason': $states.result.Stacks[0].StackStatusReason}"),
        )
        describe_stack.add_retry(errors=["CloudFormation.CloudFormationException"], interval=cdk.Duration.seconds(10), max_attempts=3, backoff_rate=2)

        step_failed = sfn.Choice.jsonata(self, "Restoring?")
        for state in (write, describe_stack):
            state.add_catch(step_failed, errors=["States.ALL"], outputs=jsonata("{'reason': $states.errorOutput.Cause}"))
        stack_failed = sfn.Pass.jsonata(self, "StackUpdateFailed", outputs=jsonata("{'reason': 'stack ' & $states.input.status & ': ' & ($exists($states.input.reason) ? $states.input.reason : 'no reason given')}"))
        stack_failed.next(step_failed)
        refused_other = sfn.Pass.jsonata(self, "UpdateNotStarted", outputs=jsonata("{'reason': $states.input.Cause}"))
        refused_other.next(step_failed)

        step_applied = sfn.Choice.jsonata(self, "MoreSteps?")
        next_step = sfn.Pass.jsonata(self, "NextStep", assign={"step": jsonata("$step + 1")})
        next_step.next(write)
        applied = outcome("Applied", "deployed", "$restoring ? $reason : ''")
        restored = outcome("Restored", "rolled_back", "$reason")
        step_applied.when(sfn.Condition.jsonata(jsonata("$step + 1 < $count($steps)")), next_step)
        step_applied.when(sfn.Condition.jsonata(jsonata("$restoring")), restored)
        step_applied.otherwise(applied)

        refused.when(sfn.Condition.jsonata(jsonata(f"$contains($states.input.Cause, '{NO_UPDATES}')")), step_applied)
        refused.when(sfn.Condition.jsonata(jsonata(f"$contains($states.input.Cause, '{BUSY}') and $busy < {MAX_BUSY_RETRIES}")), count_busy)
        refused.otherwise(refused_other)

        stack_done = (
            sfn.Choice.jsonata(self, "StackDone?")
            .when(sfn.Condition.jsonata(jsonata("$states.input.status = 'UPDATE_COMPLETE'")), step_applied)
            .when(sfn.Condition.jsonata(jsonata("$contains($states.input.status, '_IN_PROGRESS')")), wait_stack)
            .otherwise(stack_failed)
        )
        restore = sfn.Pass.jsonata(self, "Restore", assign={"restoring": True, "steps": jsonata("[$previous]"), "step": 0, "busy": 0, "reason": jsonata("$states.input.reason")})
        restore.next(write)
        restore_failed = outcome("RestoreFailed", "restore_failed", "$reason & '; restoring the previous record failed too: ' & $states.input.reason")
        step_failed.when(sfn.Condition.jsonata(jsonata("$restoring")), restore_failed).otherwise(restore)

        sfn.Chain.start(write).next(apply).next(wait_stack).next(describe_stack).next(stack_done)
        plan.next(write)

        route = (
            sfn.Choice.jsonata(self, "Route")
            .when(sfn.Condition.jsonata(jsonata("$count($states.input.missing) > 0")), incomplete)
            .when(sfn.Condition.jsonata(jsonata("$request.action = 'deploy' and $type($request.model_package_arn) = 'string'")), describe)
            .when(sfn.Condition.jsonata(jsonata("$request.action = 'power' and $request.power in ['on', 'off']")), plan_power)
            .otherwise(invalid)
        )
        describe.next(check).next(
            sfn.Choice.jsonata(self, "Deployable?").when(sfn.Condition.jsonata(jsonata("$reason = ''")), plan_deploy).otherwise(skipped)
        )
        return sfn.Chain.start(start).next(read).next(route)

    def _skip_reason(self) -> str:
        """'' when the package may be deployed, else why not (JSONata)."""
        current = "$lookup($previous, $package.role)"
        current_version = f"({current} = 'none' ? 0 : $number($substringBefore({current}, '{record.SEPARATOR}')))"
        return (
            f"$package.group != '{self.registry.group_name}' ? 'model package ' & $package.arn & ' is not in the registry of this stage' : "
            "$package.approval != 'Approved' ? 'version ' & $package.version & ' is ' & $package.approval & ', not Approved' : "
            f"$not($package.role in {self._roles_literal()}) ? 'role ' & $string($package.role) & ' has no variant on this stage (inference.serve_base is false, or the version has no Role)' : "
            f"$substring($package.uri, 0, $length('{self.models_uri}')) != '{self.models_uri}' ? 'model data ' & $package.uri & ' is not under the serving prefix models/' : "
            f"$request.source = 'approval' and $number($package.version) < {current_version} ? 'version ' & $package.version & ' is older than the ' & $package.role & ' version serving (' & {current} & '): use scripts/rollback_model.py to go back' : "
            "''"
        )

    def _acknowledge(self) -> None:
        queue = self.approval_dead_letters
        acknowledge(queue, "AwsSolutions-SQS3", "this is the dead-letter queue of the approval rule's target (EventBridge "
                                                "DeadLetterConfig, which this rule does not recognise)")
        accept(queue, "this is the dead-letter queue of the approval rule's target: an operator reads its messages after the "
                      "model-approval-undelivered alarm and deploys the version by hand; nothing redrives them",
               nag=["SQSRedrivePolicy"])
        accept(queue, "encrypted at rest with SQS-managed server-side encryption (SqsManagedSseEnabled: true); this check "
                      "recognises only a KMS key (KmsMasterKeyId)",
               checkov=["CKV_AWS_27"])
        default_policy = self.state_machine.role.node.find_child("DefaultPolicy").node.default_child
        for rule, reason in [
            ("Resource::*", "Step Functions log delivery (logs:*LogDelivery, DescribeResourcePolicies) and X-Ray tracing have no resource-level permissions"),
            (self.registry.packages_finding, "The deployer describes versions of this stage's model package group only"),
            (f"Resource::arn:<AWS::Partition>:cloudformation:<AWS::Region>:<AWS::AccountId>:stack/{self.stack_name}/*", "The stage's Inference stack, whose id suffix CloudFormation assigns at creation"),
        ]:
            acknowledge(default_policy, f"AwsSolutions-IAM5[{rule}]", reason)
