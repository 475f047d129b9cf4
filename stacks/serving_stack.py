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
                generation models (in-region or through a cross-region inference profile, chosen
                per region: stacks/constructs/bedrock_model.py), and on a stage with inference
                DescribeEndpoint + InvokeEndpoint on this stage's endpoint and GetParameter on its
                power parameter (the generators base and finetuned; the endpoint may not exist yet)
    operations  access logs and the function's logs kept where the stage retains data and encrypted
                with the stage key (they hold questions); alarms on API 5xx and latency and on the
                function's errors and throttles, all on the stage's alarm topic
                (stacks/constructs/serving_alarms.py)

The knowledge base id comes from the KnowledgeBase stack's SSM parameter, resolved at this stack's
deploy, not from an export: replacing the knowledge base never meets an export in use.
"""

from __future__ import annotations

import json

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks import serving_contract
from stacks.config import SERVING_GENERATOR_CHOICES, ServingConfig, StageConfig
from stacks.constructs.bedrock_model import BedrockModel
from stacks.constructs.compliance import accept, accept_function, acknowledge
from stacks.constructs.lifecycle import removal_policy, retention
from stacks.constructs.python_function import PythonFunction
from stacks.constructs.serving_alarms import API_STAGE_NAME, METRICS_NAMESPACE, ServingAlarms, api_name, query_function_name
from stacks.inference_stack import InferenceStack
from stacks.knowledge_base_stack import KnowledgeBaseStack
from stacks.search_stack import SearchStack
from stacks.storage_stack import StorageStack

# API Gateway's default (and, without a quota increase, maximum) REST integration timeout.
INTEGRATION_TIMEOUT_S = 29
# The request field `generator` on a deployed stage (`auto` is only a config value).
REQUEST_GENERATORS = [name for name in SERVING_GENERATOR_CHOICES if name != "auto"]

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


def endpoint_name(stage: StageConfig) -> str | None:
    """The stage's endpoint name, whether or not the endpoint exists; None without inference."""
    return serving_contract.endpoint_name(stage) if stage.inference.enabled else None


power_parameter = serving_contract.model_record.power_parameter  # the endpoint's power switch


def unreserved_concurrency_reason(serving: ServingConfig) -> str | None:
    """Why the query function may run without reserved concurrency (None when the stage reserves some).

    The API admits at most `burst` requests at once plus `rate` a second, each running at most the
    function's timeout: that bounds its concurrency without a reservation.
    """
    if serving.reserved_concurrency is not None:
        return None
    most = serving.throttle_rate_limit * serving.lambda_timeout_s + serving.throttle_burst_limit
    return ("reserved concurrency is opt-in (serving.reserved_concurrency): Lambda refuses any reservation in accounts at "
            "the new-account quota, and a cap below what the API admits would turn admitted requests into 5xx; the "
            f"stage's throttle ({serving.throttle_rate_limit}/s, burst {serving.throttle_burst_limit}) and the "
            f"{serving.lambda_timeout_s} s timeout bound it to {most} concurrent executions, and the query-throttles "
            "alarm reports when the account's pool runs out")


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
            "generator": apigw.JsonSchema(type=apigw.JsonSchemaType.STRING, enum=REQUEST_GENERATORS),
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

    Attributes: `api` (RestApi), `function` (PythonFunction), `policy` (the function's model,
    knowledge base and endpoint permissions), `profile_policies` (grants only a cross-region
    inference profile needs), `generation_model` / `embedding_model` (BedrockModel),
    `function_environment` (the function's environment, as synthesized), `alarms`, `alarm_names`.
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
        endpoint = endpoint_name(stage)
        if inference.endpoint_name is not None and inference.endpoint_name != endpoint:
            raise ValueError(f"the Inference stack names the endpoint {inference.endpoint_name!r}, expected {endpoint!r}")

        self.generation_model = BedrockModel(
            self, "GenerationModel", model_id=serving.bedrock_model_id, config_key=f"stages.{stage.name}.serving.bedrock_model_id"
        )
        self.embedding_model = BedrockModel(
            self, "EmbeddingModel", model_id=stage.knowledge_base.embedding_model_id, config_key=f"stages.{stage.name}.knowledge_base.embedding_model_id"
        )
        knowledge_base = knowledge_base.reference_in(self)  # resolved at deploy from SSM: no export in use
        self.function_environment = self._environment(stage, search, knowledge_base, self.generation_model.invoke_arn, endpoint)

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
            function_name=query_function_name(stage),
            # The API stage's throttle bounds the request rate; reserved concurrency (opt-in: new
            # accounts cannot reserve any) bounds how much of the account's concurrency it may take.
            reserved_concurrency=serving.reserved_concurrency,
            log_removal_policy=removal_policy(stage),
            log_encryption_key=storage.key,  # questions and answers can appear in its logs
        )

        # --- the rest of its permissions, specific statements only ---
        self.policy = iam.Policy(self, "QueryPolicy", roles=[search.query_role], statements=self._statements(stage, knowledge_base, endpoint))
        self.function.function.node.add_dependency(self.policy)
        self.profile_policies = self._profile_policies(search)
        self._accept_function(serving)

        self.api = self._api(stage, storage)
        serving_alarms = ServingAlarms(self, "Alarms", stage=stage)
        self.alarms, self.alarm_names = serving_alarms.alarms, serving_alarms.names
        cdk.CfnOutput(self, "ApiUrl", value=self.api.url, description="Base URL; POST <url>query, GET <url>health (SigV4, service execute-api)")
        cdk.CfnOutput(self, "FunctionName", value=self.function.function.function_name)

    def _accept_function(self, serving: ServingConfig) -> None:
        accept_function(
            self.function.function,
            dead_letters="API Gateway invokes it synchronously (Lambda proxy): a failure is the caller's 5xx answer, "
                         "counted by the api-5xx and query-errors alarms; a function DLQ only receives asynchronous events",
            concurrency=unreserved_concurrency_reason(serving),
        )

    # --- environment -------------------------------------------------------------------------

    @staticmethod
    def _environment(stage: StageConfig, search: SearchStack, knowledge_base: KnowledgeBaseStack, generation_arn: str, endpoint: str | None) -> dict[str, str]:
        """The query function's environment: every name it reads (lambda/query/settings.py)."""
        serving, index = stage.serving, search.index
        environment = {
            "STAGE_NAME": stage.name,
            "DEFAULT_GENERATOR": serving.default_generator,
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
        if endpoint is not None:
            environment.update({
                serving_contract.LAMBDA_ENV_ENDPOINT_NAME: endpoint,
                serving_contract.LAMBDA_ENV_SERVED_MODEL_NAME: serving_contract.SERVED_MODEL_NAME,
                serving_contract.LAMBDA_ENV_SEQUENCE_LENGTH: str(stage.inference.sequence_length),
                "SERVE_BASE": "true" if stage.inference.serve_base else "false",
                "ENDPOINT_POWER_PARAMETER": power_parameter(stage.name),
            })
        return environment

    # --- permissions -------------------------------------------------------------------------

    def _statements(self, stage: StageConfig, knowledge_base: KnowledgeBaseStack, endpoint: str | None) -> list[iam.PolicyStatement]:
        """Every form of the models' grants, the knowledge base, and (with inference) the endpoint and its power."""
        statements = [
            iam.PolicyStatement(
                sid="KnowledgeBaseRetrieve",
                actions=["bedrock:Retrieve", "bedrock:RetrieveAndGenerate"],
                resources=[knowledge_base.knowledge_base_arn],
            ),
            iam.PolicyStatement(
                sid="InvokeModels",  # Converse, RetrieveAndGenerate's generation and the question's embedding
                actions=["bedrock:InvokeModel"],
                resources=[self.generation_model.invoke_arn, self.embedding_model.invoke_arn],
            ),
        ]
        if endpoint is not None:
            statements += [
                iam.PolicyStatement(
                    sid="InvokeEndpoint",  # the generators base and finetuned (TargetVariant), and their status
                    actions=["sagemaker:DescribeEndpoint", "sagemaker:InvokeEndpoint"],
                    resources=[self.format_arn(service="sagemaker", resource="endpoint", resource_name=endpoint)],
                ),
                iam.PolicyStatement(
                    sid="ReadEndpointPower",
                    actions=["ssm:GetParameter"],
                    resources=[self.format_arn(service="ssm", resource="parameter", resource_name=power_parameter(stage.name).lstrip("/"))],
                ),
            ]
        return statements

    def _profile_policies(self, search: SearchStack) -> list[iam.Policy]:
        """The grants only a cross-region inference profile needs: one policy per such model, which
        exists only where the profile form is used (a CloudFormation condition in agnostic stacks)."""
        policies = []
        for model in (self.generation_model, self.embedding_model):
            if not model.profile_statements:
                continue
            policy = iam.Policy(self, f"{model.node.id}ProfilePolicy", roles=[search.query_role], statements=model.profile_statements)
            if model.profile_condition is not None:
                policy.node.default_child.cfn_options.condition = model.profile_condition
            acknowledge(
                policy,
                f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:bedrock:*::foundation-model/{model.foundation_model_id}]",
                "a cross-region inference profile invokes its one foundation model in whichever region it routes to; "
                "the grant holds only through this profile (condition bedrock:InferenceProfileArn)",
            )
            policies.append(policy)
        return policies

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
        accept(api.deployment_stage,
               "every method requires SigV4-signed IAM credentials (API Gateway rejects unsigned calls before the "
               "integration) and the stage is throttled; a WAF web ACL (a monthly fee plus per request) filters nothing an "
               "unauthenticated caller can reach; revisit if a public, non-IAM front end is added",
               nag=["APIGWAssociatedWithWAF"])
        accept(api.deployment_stage,
               "no method may be cached: POST /query answers depend on the body and on the caller (a cache keyed on method "
               "and path would serve one caller's answer to another), and GET /health must report the live state",
               checkov=["CKV_AWS_120"], nag=["APIGWCacheEnabledAndEncrypted"])
        accept(api.deployment_stage,
               "a client certificate authenticates API Gateway to an HTTP backend; the only integration is Lambda proxy "
               "(AWS_PROXY), which API Gateway calls through the Lambda API with IAM, where a client certificate does not apply",
               nag=["APIGWSSLEnabled"])
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
