"""Template assertions for Rag<Stage>-Serving: API auth, validation, throttling, logs, the function,
and the least-privilege statements of its role. Uses the session synth (every stage, nag on)."""

from __future__ import annotations

import json

import aws_cdk as cdk
import pytest

from stacks.config import ServingConfig, StageConfig
from stacks.constructs.python_function import RUNTIME
from stacks.serving_stack import INTEGRATION_TIMEOUT_S, ServingStack, bedrock_model_arns

STAGES = ("dev", "prod")


def _resources(template: dict, kind: str) -> dict[str, dict]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def _one(template: dict, kind: str) -> dict:
    found = _resources(template, kind)
    assert len(found) == 1, (kind, list(found))
    return next(iter(found.values()))


@pytest.fixture(scope="module", params=STAGES)
def serving(request, synth):
    stage = synth.config.stages[request.param]
    return stage, synth.template(f"{stage.stack_prefix}-Serving")


def test_every_method_requires_iam_and_only_query_and_health_exist(serving):
    _, template = serving
    methods = _resources(template, "AWS::ApiGateway::Method")
    paths = {name: r for name, r in _resources(template, "AWS::ApiGateway::Resource").items()}
    routes = set()
    for method in methods.values():
        props = method["Properties"]
        assert props["AuthorizationType"] == "AWS_IAM"
        path = paths[props["ResourceId"]["Ref"]]["Properties"]["PathPart"]
        routes.add((props["HttpMethod"], path))
        assert props["Integration"]["Type"] == "AWS_PROXY"
        assert props["Integration"]["TimeoutInMillis"] == INTEGRATION_TIMEOUT_S * 1000
    assert routes == {("POST", "query"), ("GET", "health")}


def test_query_body_is_validated_against_the_request_model(serving):
    stage, template = serving
    validator_name, validator = next(iter(_resources(template, "AWS::ApiGateway::RequestValidator").items()))
    assert validator["Properties"]["ValidateRequestBody"] is True and validator["Properties"]["ValidateRequestParameters"] is True
    post = next(m["Properties"] for m in _resources(template, "AWS::ApiGateway::Method").values() if m["Properties"]["HttpMethod"] == "POST")
    assert post["RequestValidatorId"] == {"Ref": validator_name}
    model_name = post["RequestModels"]["application/json"]["Ref"]
    schema = template["Resources"][model_name]["Properties"]["Schema"]
    assert schema["$schema"] == "http://json-schema.org/draft-04/schema#"
    assert schema["additionalProperties"] is False and schema["required"] == ["question"]
    assert set(schema["properties"]) == {"question", "mode", "retriever", "top_k", "filters"}
    assert schema["properties"]["question"]["maxLength"] == stage.serving.max_question_chars
    assert schema["properties"]["top_k"] == {"type": "integer", "minimum": 1, "maximum": stage.serving.max_top_k}
    assert schema["properties"]["mode"]["enum"] == ["rag", "kb", "prompt"]
    bad_body = next(r["Properties"] for r in _resources(template, "AWS::ApiGateway::GatewayResponse").values()
                    if r["Properties"]["ResponseType"] == "BAD_REQUEST_BODY")
    assert "validationErrorString" in bad_body["ResponseTemplates"]["application/json"]


def test_stage_is_throttled_traced_and_access_logged(serving):
    stage, template = serving
    props = _one(template, "AWS::ApiGateway::Stage")["Properties"]
    settings = props["MethodSettings"]
    assert settings == [{
        "DataTraceEnabled": False, "HttpMethod": "*", "LoggingLevel": "ERROR", "MetricsEnabled": True, "ResourcePath": "/*",
        "ThrottlingBurstLimit": stage.serving.throttle_burst_limit, "ThrottlingRateLimit": stage.serving.throttle_rate_limit,
    }]
    assert props["TracingEnabled"] is True
    # Built from the group's name (`logGroupDestinationArnWithoutWildcard`): the ARN API Gateway stores.
    (reference,) = [part for part in props["AccessLogSetting"]["DestinationArn"]["Fn::Join"][1] if isinstance(part, dict) and "Ref" in part
                    and part["Ref"] in template["Resources"]]
    log_group = template["Resources"][reference["Ref"]]
    assert log_group["Type"] == "AWS::Logs::LogGroup"
    assert log_group["Properties"]["RetentionInDays"] == stage.serving.log_retention_days
    access_format = json.loads(props["AccessLogSetting"]["Format"])
    assert {"requestId", "userArn", "status", "integrationLatency"} <= set(access_format)
    assert _one(template, "AWS::ApiGateway::RestApi")["Properties"]["EndpointConfiguration"] == {"Types": ["REGIONAL"]}


def test_function_settings_come_from_config(serving):
    stage, template = serving
    props = _one(template, "AWS::Lambda::Function")["Properties"]
    assert props["FunctionName"] == f"{stage.stack_prefix}-query"  # Contract 7
    assert props["Runtime"] == RUNTIME.name and props["Handler"] == "query.handler.main"
    assert props["Timeout"] == stage.serving.lambda_timeout_s < INTEGRATION_TIMEOUT_S
    assert props["MemorySize"] == stage.serving.memory_size_mb
    assert props.get("ReservedConcurrentExecutions") == stage.serving.reserved_concurrency
    assert props["TracingConfig"] == {"Mode": "Active"} and props["LoggingConfig"]["LogFormat"] == "JSON"
    assert "Ref" in props["Layers"][0]  # the Powertools layer ARN from its public SSM parameter, not a bundle
    assert "Fn::ImportValue" in props["Role"] and "QueryRole" in json.dumps(props["Role"])  # the Search stack's query role


def test_role_statements_are_least_privilege(serving):
    stage, template = serving
    policies = {name: r["Properties"] for name, r in _resources(template, "AWS::IAM::Policy").items()}
    query = next(p for name, p in policies.items() if name.startswith("QueryPolicy"))
    statements = {s["Sid"]: s for s in query["PolicyDocument"]["Statement"]}
    expected = {"KnowledgeBaseRetrieve", "InvokeModels"} | ({"InvokeEndpoint"} if stage.serving.generator == "endpoint" else set())
    assert set(statements) == expected
    kb = statements["KnowledgeBaseRetrieve"]
    assert kb["Action"] == ["bedrock:Retrieve", "bedrock:RetrieveAndGenerate"]
    # Built from the id the deploy reads from the KnowledgeBase stack's SSM parameter: no export.
    parameter = next(part["Ref"] for part in kb["Resource"]["Fn::Join"][1] if isinstance(part, dict) and "Ref" in part
                     and part["Ref"].startswith("SsmParameterValue"))
    assert template["Parameters"][parameter] == {"Type": "AWS::SSM::Parameter::Value<String>",
                                                 "Default": f"/rag/{stage.name}/knowledge-base/id"}
    assert ":knowledge-base/" in json.dumps(kb["Resource"])
    models = statements["InvokeModels"]
    assert models["Action"] == "bedrock:InvokeModel"
    arns = sorted(json.dumps(r) for r in models["Resource"])
    assert len(arns) == 2
    assert any(stage.serving.bedrock_model_id in arn for arn in arns)
    assert any(stage.knowledge_base.embedding_model_id in arn for arn in arns)
    if "InvokeEndpoint" in statements:
        assert statements["InvokeEndpoint"]["Action"] == "sagemaker:InvokeEndpoint"
        assert f":endpoint/{stage.stack_prefix.lower()}-generator" in json.dumps(statements["InvokeEndpoint"]["Resource"])
    for statement in query["PolicyDocument"]["Statement"]:
        assert statement["Effect"] == "Allow" and "*" not in json.dumps(statement["Action"])
        assert json.dumps(statement["Resource"]).count("*") == 0
    logging = next(p for name, p in policies.items() if name.startswith("QueryLoggingPolicy"))
    (log_statement,) = logging["PolicyDocument"]["Statement"]
    assert log_statement["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert "Fn::GetAtt" in log_statement["Resource"]  # its own log group only


def test_query_role_in_search_stack_only_reads_the_index(synth):
    template = synth.template("RagDev-Search")
    role = next(r for name, r in template["Resources"].items() if name.startswith("QueryRole") and r["Type"] == "AWS::IAM::Role")
    (policy,) = role["Properties"]["Policies"]
    actions = {a for s in policy["PolicyDocument"]["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert actions == {"es:ESHttpGet", "es:ESHttpPost"}


def test_api_and_function_alarms_watch_the_named_api_and_function(serving):
    stage, template = serving
    prefix, monitoring = stage.stack_prefix, stage.monitoring
    alarms = {r["Properties"]["AlarmName"]: r["Properties"] for r in _resources(template, "AWS::CloudWatch::Alarm").values()}
    api = [{"Name": "ApiName", "Value": f"{prefix}-query"}, {"Name": "Stage", "Value": "v1"}]
    function = [{"Name": "FunctionName", "Value": f"{prefix}-query"}]
    expected = {
        f"{prefix}-api-5xx": ("AWS/ApiGateway", "5XXError", api, monitoring.api_5xx_threshold),
        f"{prefix}-api-latency": ("AWS/ApiGateway", "Latency", api, monitoring.api_latency_p90_ms),
        f"{prefix}-query-errors": ("AWS/Lambda", "Errors", function, monitoring.query_errors_threshold),
        f"{prefix}-query-throttles": ("AWS/Lambda", "Throttles", function, 1),
    }
    assert set(alarms) == set(expected)
    for name, (namespace, metric, dimensions, threshold) in expected.items():
        alarm = alarms[name]
        assert (alarm["Namespace"], alarm["MetricName"], alarm["Dimensions"], alarm["Threshold"]) == (namespace, metric, dimensions, threshold)
    assert alarms[f"{prefix}-api-latency"]["ExtendedStatistic"] == "p90"
    assert (alarms[f"{prefix}-api-latency"]["EvaluationPeriods"], alarms[f"{prefix}-api-latency"]["DatapointsToAlarm"]) == (3, 2)


def test_outputs_give_the_client_its_url(serving):
    _, template = serving
    assert "ApiUrl" in template["Outputs"]


# --- without a synth: the pieces that vary by config -------------------------------------------


def test_inference_profile_ids_grant_the_profile_and_its_model_in_any_region():
    stack = cdk.Stack(cdk.App(), "Probe", env=cdk.Environment(account="123456789012", region="eu-west-1"))
    text = lambda token: json.dumps(stack.resolve(token)).replace('{"Ref": "AWS::Partition"}', "aws")  # noqa: E731
    arn, grants = bedrock_model_arns(stack, "eu.amazon.nova-lite-v1:0")
    assert ":bedrock:eu-west-1:123456789012:inference-profile/eu.amazon.nova-lite-v1:0" in text(arn)
    assert len(grants) == 2 and ":bedrock:*::foundation-model/amazon.nova-lite-v1:0" in text(grants[1])
    arn, grants = bedrock_model_arns(stack, "amazon.nova-lite-v1:0")
    assert grants == [arn] and ":bedrock:eu-west-1::foundation-model/amazon.nova-lite-v1:0" in text(arn)
    assert len(bedrock_model_arns(stack, "ai21.jamba-1-5-large-v1:0")[1]) == 1  # a 4-letter provider is not a geography


class _Index:
    embedding_dimensions, endpoint_url, index_name = 1024, "https://search", "rag-documents"
    vector_field, text_field, metadata_field, pipeline_name, filterable_fields = "embedding", "text", "metadata", "rag-hybrid", ("a", "b")


class _Fake:
    def __init__(self, **attrs):
        self.__dict__.update(attrs)


def test_a_bedrock_generator_stage_gets_no_endpoint_settings():
    stage = StageConfig(name="lab", serving=ServingConfig(generator="bedrock"))
    env = ServingStack._environment(stage, _Fake(index=_Index()), _Fake(knowledge_base_id="KB"), _Fake(endpoint_name=None), "arn", False)
    assert env["GENERATOR"] == "bedrock" and not any(key.startswith("ENDPOINT_") for key in env)
    assert env["FILTERABLE_FIELDS"] == "a,b" and env["GENERATION_TIMEOUT_S"] == str(stage.serving.generation_timeout_s)


def test_timeouts_leave_the_function_time_to_answer():
    for timeout in (3, 10, 25, 28):
        serving = ServingConfig(lambda_timeout_s=timeout)
        assert serving.retrieval_timeout_s >= 1 and serving.generation_timeout_s >= 1
        assert serving.retrieval_timeout_s + serving.generation_timeout_s < timeout or timeout <= 3
