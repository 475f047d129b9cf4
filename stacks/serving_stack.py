"""Serving: the IAM-authorized REST API and the query Lambda (retrieve -> prompt -> generate).

Reads like the request path:

    api         API Gateway REST API (regional), SigV4/IAM authorization on every method,
                POST /query (validated against a JSON schema model) and GET /health, stage
                throttling, JSON access logs, X-Ray tracing; validation errors name the field
    function    the query Lambda (lambda/query), named `Rag<Stage>-query`: environment built here from
                the stage's typed config and the other stacks' objects (the one source of its
                names), timeout below the integration timeout, reserved concurrency from config
    policy      the rest of the function's permissions, on the Search stack's query role (which
                already holds its read-only es:ESHttpGet/Post on the vector index): Retrieve /
                RetrieveAndGenerate on this knowledge base, InvokeModel on the embedding and
                generation models, InvokeEndpoint on this stage's endpoint (generator endpoint)
    operations  access logs and the function's logs kept where the stage retains data and encrypted
                with the stage key (they hold questions); alarms on API 5xx and latency and on the
                function's errors and throttles, all on the stage's alarm topic

The knowledge base id comes from the KnowledgeBase stack's SSM parameter, resolved at this stack's
deploy, not from an export: replacing the knowledge base never meets an export in use.
"""

from __future__ import annotations

import json
import re

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.config import ServingConfig, StageConfig
from stacks.constructs.alarms import ALARM_PERIOD, alarm_name, stage_alarm
from stacks.constructs.compliance import acknowledge
from stacks.constructs.lifecycle import removal_policy, retention
from stacks.constructs.python_function import PythonFunction
from stacks.inference_stack import InferenceStack
from stacks.knowledge_base_stack import KnowledgeBaseStack
from stacks.search_stack import SearchStack
from stacks.storage_stack import StorageStack

API_STAGE_NAME = "v1"
# API Gateway's default (and, without a quota increase, maximum) REST integration timeout.
INTEGRATION_TIMEOUT_S = 29
METRICS_NAMESPACE = "RagServing"
# A Bedrock model id with a geography prefix (us., eu., apac., ...) names a cross-region inference profile.
_PROFILE_ID = re.compile(r"^([a-z]{2,4})\.([a-z0-9-]+\.[a-zA-Z0-9.\-:]+)$")

ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "extendedRequestId": "$context.extendedRequestId",
    "ip": "$context.identity.sourceIp",
    "caller": "$context.identity.caller",
    "userArn": "$context.identity.userArn",
    "requestTime": "$context.requestTime",
    "httpMethod": "$context.httpMethod",
    "resourcePath": "$context.resourcePath",
    "status": "$context.status",
    "protocol": "$context.protocol",
    "responseLength": "$context.responseLength",
    "responseLatency": "$context.responseLatency",
    "integrationLatency": "$context.integrationLatency",
    "integrationStatus": "$context.integration.status",
    "error": "$context.error.message",
    "xrayTraceId": "$context.xrayTraceId",
}


# --- operations (owned by ops): names the dashboard uses, alarms ---------------------------------
API_5XX_ALARM = "api-5xx"
API_LATENCY_ALARM = "api-latency"
QUERY_ERRORS_ALARM = "query-errors"
QUERY_THROTTLES_ALARM = "query-throttles"


def query_function_name(stage: StageConfig) -> str:
    """`RagDev-query` (Contract 7): the dashboard and alarms address the function by this name."""
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


def bedrock_model_arns(scope: Construct, model_id: str) -> tuple[str, list[str]]:
    """(the ARN the function calls, the ARNs its role may invoke) for a model or inference profile id.

    A cross-region inference profile routes to the same foundation model in several regions, so
    invoking one needs InvokeModel on the profile and on that model in any region.
    """
    stack = cdk.Stack.of(scope)
    profile = _PROFILE_ID.match(model_id)
    if profile is None:
        arn = stack.format_arn(service="bedrock", account="", resource="foundation-model", resource_name=model_id)
        return arn, [arn]
    profile_arn = stack.format_arn(service="bedrock", resource="inference-profile", resource_name=model_id)
    any_region_model = stack.format_arn(service="bedrock", region="*", account="", resource="foundation-model", resource_name=profile.group(2))
    return profile_arn, [profile_arn, any_region_model]


def query_request_schema(serving: ServingConfig) -> apigw.JsonSchema:
    """The POST /query body: the same shape the handler validates (it remains the authority)."""
    scalar = [apigw.JsonSchemaType.STRING, apigw.JsonSchemaType.NUMBER]
    return apigw.JsonSchema(
        schema=apigw.JsonSchemaVersion.DRAFT4,
        title="QueryRequest",
        type=apigw.JsonSchemaType.OBJECT,
        required=["question"],
        additional_properties=False,
        properties={
            "question": apigw.JsonSchema(type=apigw.JsonSchemaType.STRING, min_length=1, max_length=serving.max_question_chars),
            "mode": apigw.JsonSchema(type=apigw.JsonSchemaType.STRING, enum=["rag", "kb", "prompt"]),
            "retriever": apigw.JsonSchema(type=apigw.JsonSchemaType.STRING, enum=["kb", "opensearch"]),
            "top_k": apigw.JsonSchema(type=apigw.JsonSchemaType.INTEGER, minimum=1, maximum=serving.max_top_k),
            "filters": apigw.JsonSchema(
                type=apigw.JsonSchemaType.OBJECT,
                max_properties=10,
                additional_properties=apigw.JsonSchema(
                    type=[*scalar, apigw.JsonSchemaType.ARRAY],
                    items=apigw.JsonSchema(type=scalar),
                    min_items=1,
                    max_items=20,
                ),
            ),
        },
    )


class ServingStack(cdk.Stack):
    """API Gateway (IAM auth) -> query Lambda.

    Attributes: `api` (RestApi), `function` (PythonFunction), `policy` (the function's model and
    knowledge base permissions), `function_environment` (the function's environment, as synthesized),
    `alarms`, `alarm_names`.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        storage: StorageStack,  # its key encrypts the access and function logs
        search: SearchStack,
        knowledge_base: KnowledgeBaseStack,
        inference: InferenceStack,  # endpoint_name is None when inference is disabled
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        serving = stage.serving
        if serving.lambda_timeout_s >= INTEGRATION_TIMEOUT_S:
            raise ValueError(f"serving.lambda_timeout_s must be below the API's {INTEGRATION_TIMEOUT_S} s integration timeout")
        use_endpoint = serving.generator == "endpoint"
        if use_endpoint and inference.endpoint_name is None:
            raise ValueError("serving.generator 'endpoint' needs inference.enabled (no endpoint to call)")

        generation_arn, generation_grants = bedrock_model_arns(self, serving.bedrock_model_id)
        embedding_arn, _ = bedrock_model_arns(self, stage.knowledge_base.embedding_model_id)
        knowledge_base = knowledge_base.reference_in(self)  # resolved at deploy from SSM (ops: no export in use)
        self.function_environment = self._environment(stage, search, knowledge_base, inference, generation_arn, use_endpoint)

        # --- the function (its role lives in the Search stack: the domain access policy names it) ---
        self.function = PythonFunction(
            self,
            "Query",
            source="query",
            description=f"RAG query path of the {stage.name} stage: retrieve, prompt, generate",
            environment=self.function_environment,
            timeout=cdk.Duration.seconds(serving.lambda_timeout_s),
            memory_size=serving.memory_size_mb,
            log_retention=retention(serving.log_retention_days),
            role=search.query_role,
            # --- ops: name, concurrency cap, logs ---
            function_name=query_function_name(stage),
            # The API stage's throttle bounds the request rate; reserved concurrency (opt-in: new
            # accounts cannot reserve any) bounds how much of the account's concurrency it may take.
            reserved_concurrency=serving.reserved_concurrency,
            log_removal_policy=removal_policy(stage),
            log_encryption_key=storage.key,  # questions and answers can appear in its logs
        )

        # --- the rest of its permissions, specific statements only ---
        statements = [
            iam.PolicyStatement(
                sid="KnowledgeBaseRetrieve",
                actions=["bedrock:Retrieve", "bedrock:RetrieveAndGenerate"],
                resources=[knowledge_base.knowledge_base_arn],
            ),
            iam.PolicyStatement(
                sid="InvokeModels",  # Converse, RetrieveAndGenerate's generation and the question's embedding
                actions=["bedrock:InvokeModel"],
                resources=sorted({*generation_grants, embedding_arn}),
            ),
        ]
        if len(generation_grants) > 1:
            statements.append(
                iam.PolicyStatement(sid="ReadInferenceProfile", actions=["bedrock:GetInferenceProfile"], resources=[generation_arn])
            )
        if use_endpoint:
            endpoint_statement = inference.invoke_statement()
            endpoint_statement.sid = "InvokeEndpoint"
            statements.append(endpoint_statement)
        self.policy = iam.Policy(self, "QueryPolicy", roles=[search.query_role], statements=statements)
        self.function.function.node.add_dependency(self.policy)
        if len(generation_grants) > 1:
            model = _PROFILE_ID.match(serving.bedrock_model_id).group(2)
            acknowledge(
                self.policy,
                f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:bedrock:*::foundation-model/{model}]",
                "a cross-region inference profile invokes this one foundation model in whichever region it routes to",
            )

        self.api = self._api(stage, storage)
        serving_alarms = ServingAlarms(self, "Alarms", stage=stage)
        self.alarms, self.alarm_names = serving_alarms.alarms, serving_alarms.names
        cdk.CfnOutput(self, "ApiUrl", value=self.api.url, description="Base URL; POST <url>query, GET <url>health (SigV4, service execute-api)")
        cdk.CfnOutput(self, "FunctionName", value=self.function.function.function_name)

    # --- environment -------------------------------------------------------------------------

    @staticmethod
    def _environment(stage: StageConfig, search: SearchStack, knowledge_base: KnowledgeBaseStack, inference: InferenceStack, generation_arn: str, use_endpoint: bool) -> dict[str, str]:
        """The query function's environment: every name it reads (lambda/query/settings.py)."""
        serving, index = stage.serving, search.index
        environment = {
            "GENERATOR": serving.generator,
            "BEDROCK_MODEL_ARN": generation_arn,
            "KNOWLEDGE_BASE_ID": knowledge_base.knowledge_base_id,
            "EMBEDDING_MODEL_ID": stage.knowledge_base.embedding_model_id,
            "EMBEDDING_DIMENSIONS": str(index.embedding_dimensions),
            "OPENSEARCH_ENDPOINT": index.endpoint_url,
            "OPENSEARCH_INDEX": index.index_name,
            "OPENSEARCH_VECTOR_FIELD": index.vector_field,
            "OPENSEARCH_TEXT_FIELD": index.text_field,
            "OPENSEARCH_METADATA_FIELD": index.metadata_field,
            "OPENSEARCH_SEARCH_PIPELINE": index.pipeline_name,
            "FILTERABLE_FIELDS": ",".join(index.filterable_fields),
            "DEFAULT_RETRIEVER": serving.default_retriever,
            "DEFAULT_TOP_K": str(serving.default_top_k),
            "MAX_TOP_K": str(serving.max_top_k),
            "MAX_QUESTION_CHARS": str(serving.max_question_chars),
            "MAX_NEW_TOKENS": str(serving.max_new_tokens),
            "TEMPERATURE": str(serving.temperature),
            "RETRIEVAL_TIMEOUT_S": str(serving.retrieval_timeout_s),
            "GENERATION_TIMEOUT_S": str(serving.generation_timeout_s),
            "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
        }
        if use_endpoint:
            environment.update(inference.contract.lambda_environment(inference.endpoint_name))
        return environment

    # --- API -----------------------------------------------------------------------------------

    def _api(self, stage: StageConfig, storage: StorageStack) -> apigw.RestApi:
        serving = stage.serving
        # Who called, when, with what result: kept where the stage retains data (a generated
        # name, so a retained group never blocks a redeploy), encrypted with the stage key.
        access_logs = logs.LogGroup(
            self, "AccessLogs", retention=retention(serving.log_retention_days), removal_policy=removal_policy(stage),
            encryption_key=storage.key,
        )
        api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=api_name(stage),
            description=f"RAG query API of the {stage.name} stage (IAM/SigV4 on every method)",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=serving.api_cloudwatch_role,
            cloud_watch_role_removal_policy=cdk.RemovalPolicy.RETAIN,
            default_method_options=apigw.MethodOptions(authorization_type=apigw.AuthorizationType.IAM),
            deploy_options=apigw.StageOptions(
                stage_name=API_STAGE_NAME,
                throttling_rate_limit=serving.throttle_rate_limit,
                throttling_burst_limit=serving.throttle_burst_limit,
                tracing_enabled=True,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # never log request/response bodies (questions, answers)
                metrics_enabled=True,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FORMAT, separators=(",", ":"))),
            ),
        )
        validator = apigw.RequestValidator(
            self, "Validator", rest_api=api, request_validator_name="body-and-parameters",
            validate_request_body=True, validate_request_parameters=True,
        )
        model = api.add_model(
            "QueryRequestModel", content_type="application/json", model_name="QueryRequest", schema=query_request_schema(serving)
        )
        integration = apigw.LambdaIntegration(
            self.function.function, proxy=True, allow_test_invoke=False, timeout=cdk.Duration.seconds(INTEGRATION_TIMEOUT_S)
        )
        api.root.add_resource("query").add_method(
            "POST", integration, authorization_type=apigw.AuthorizationType.IAM,
            request_validator=validator, request_models={"application/json": model},
        )
        api.root.add_resource("health").add_method(
            "GET", integration, authorization_type=apigw.AuthorizationType.IAM, request_validator=validator,
        )
        # API Gateway's own rejections as JSON, with the request id (and the failing field for bodies).
        request_id = "\"request_id\":\"$context.requestId\""
        api.add_gateway_response(
            "BadRequestBody", type=apigw.ResponseType.BAD_REQUEST_BODY,
            templates={"application/json": "{\"message\":$context.error.validationErrorString," + request_id + "}"},
        )
        for name, response_type in (("Default4xx", apigw.ResponseType.DEFAULT_4_XX), ("Default5xx", apigw.ResponseType.DEFAULT_5_XX)):
            api.add_gateway_response(
                name, type=response_type,
                templates={"application/json": "{\"message\":$context.error.messageString," + request_id + "}"},
            )
        self._acknowledge_api(api, serving)
        return api

    def _acknowledge_api(self, api: apigw.RestApi, serving: ServingConfig) -> None:
        acknowledge(
            api.deployment_stage, "AwsSolutions-APIG3",
            "every method requires SigV4-signed IAM credentials and the stage is throttled; a WAF web ACL adds cost "
            "without filtering anything an unauthenticated caller can reach",
        )
        for method in api.methods:
            acknowledge(
                method, "AwsSolutions-COG4",
                "callers are AWS principals authorized by IAM (SigV4); a Cognito user pool authorizer is not the design",
            )
        if serving.api_cloudwatch_role:
            role = api.node.try_find_child("CloudWatchRole")
            if role is not None:
                acknowledge(
                    role, "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]",
                    "the account-wide API Gateway logging role (one per account and region, shared by every API) uses the "
                    "AWS-maintained policy API Gateway documents for it",
                )
