"""Template assertions for Rag<Stage>-Serving: API auth, validation, throttling, logs, the function,
and the least-privilege statements of its role. Uses the session synth (every stage, nag on)."""

from __future__ import annotations

import json

import aws_cdk as cdk
import pytest

from shared import model_record
from stacks.config import InferenceConfig, ServingConfig, StageConfig
from stacks.constructs.bedrock_model import MODEL_REGIONS, BedrockModel, UnsupportedModelRegionError
from stacks.constructs.python_function import RUNTIME
from stacks.serving_stack import (
    INTEGRATION_TIMEOUT_S,
    REQUEST_GENERATORS,
    ServingStack,
    endpoint_name,
    power_parameter,
    unreserved_concurrency_reason,
)

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
    assert set(schema["properties"]) == {"question", "mode", "retriever", "top_k", "filters", "generator"}
    assert schema["properties"]["generator"] == {"type": "string", "enum": ["bedrock", "base", "finetuned"]}
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
    assert props["FunctionName"] == f"{stage.stack_prefix}-query"  # the name the dashboard and alarms address
    assert props["Runtime"] == RUNTIME.name and props["Handler"] == "query.handler.main"
    assert props["Timeout"] == stage.serving.lambda_timeout_s < INTEGRATION_TIMEOUT_S
    assert props["MemorySize"] == stage.serving.memory_size_mb
    assert props.get("ReservedConcurrentExecutions") == stage.serving.reserved_concurrency
    assert props["TracingConfig"] == {"Mode": "Active"} and props["LoggingConfig"]["LogFormat"] == "JSON"
    assert "Ref" in props["Layers"][0]  # the Powertools layer ARN from its public SSM parameter, not a bundle
    assert "Fn::ImportValue" in props["Role"] and "QueryRole" in json.dumps(props["Role"])  # the Search stack's query role


def test_an_unreserved_query_function_says_what_bounds_it_and_a_reserved_one_is_not_excused(serving):
    stage, template = serving
    props = _one(template, "AWS::Lambda::Function")
    skips = {entry["id"]: entry["comment"] for entry in props["Metadata"]["checkov"]["skip"]}
    assert stage.serving.reserved_concurrency is None  # neither shipped stage reserves concurrency
    assert skips["CKV_AWS_115"] == unreserved_concurrency_reason(stage.serving)
    bound = ServingConfig(throttle_rate_limit=7, throttle_burst_limit=9, lambda_timeout_s=10)
    assert "bound it to 79 concurrent executions" in unreserved_concurrency_reason(bound)  # 7/s x 10 s + 9
    assert "(7/s, burst 9)" in unreserved_concurrency_reason(bound)
    assert unreserved_concurrency_reason(ServingConfig(reserved_concurrency=50)) is None  # then the tools see the cap


def test_role_statements_are_least_privilege(serving):
    stage, template = serving
    policies = {name: r for name, r in _resources(template, "AWS::IAM::Policy").items()}
    query = next(p["Properties"] for name, p in policies.items() if name.startswith("QueryPolicy"))
    statements = {s["Sid"]: s for s in query["PolicyDocument"]["Statement"]}
    assert set(statements) == {"KnowledgeBaseRetrieve", "InvokeModels", "InvokeEndpoint", "ReadEndpointPower"}  # both stages have inference
    kb = statements["KnowledgeBaseRetrieve"]
    assert kb["Action"] == ["bedrock:Retrieve", "bedrock:RetrieveAndGenerate"]
    # Built from the id the deploy reads from the KnowledgeBase stack's SSM parameter: no export.
    parameter = next(part["Ref"] for part in kb["Resource"]["Fn::Join"][1] if isinstance(part, dict) and "Ref" in part
                     and part["Ref"].startswith("SsmParameterValue"))
    assert template["Parameters"][parameter] == {"Type": "AWS::SSM::Parameter::Value<String>",
                                                 "Default": f"/rag/{stage.name}/knowledge-base/id"}
    assert ":knowledge-base/" in json.dumps(kb["Resource"])
    models = statements["InvokeModels"]
    assert models["Action"] == "bedrock:InvokeModel" and len(models["Resource"]) == 2
    generation, embedding = (json.dumps(r) for r in models["Resource"])
    assert "Fn::If" in generation and "foundation-model/amazon.nova-lite-v1:0" in generation and ":inference-profile/" in generation
    assert "foundation-model/" + stage.knowledge_base.embedding_model_id in embedding and "Fn::If" not in embedding
    endpoint = statements["InvokeEndpoint"]
    assert endpoint["Action"] == ["sagemaker:DescribeEndpoint", "sagemaker:InvokeEndpoint"]
    assert json.dumps(endpoint["Resource"]).endswith(f':endpoint/{stage.stack_prefix.lower()}-generator"]]}}')
    power = statements["ReadEndpointPower"]
    assert power["Action"] == "ssm:GetParameter"
    assert json.dumps(power["Resource"]).endswith(f':parameter{model_record.power_parameter(stage.name)}"]]}}')
    for statement in query["PolicyDocument"]["Statement"]:
        assert statement["Effect"] == "Allow" and "*" not in json.dumps(statement["Action"])
        assert json.dumps(statement["Resource"]).count("*") == 0
    logging = next(p["Properties"] for name, p in policies.items() if name.startswith("QueryLoggingPolicy"))
    (log_statement,) = logging["PolicyDocument"]["Statement"]
    assert log_statement["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert "Fn::GetAtt" in log_statement["Resource"]  # its own log group only


def test_the_profile_grants_exist_only_where_the_model_is_reached_through_a_profile(serving):
    stage, template = serving
    (name, policy), = [(n, p) for n, p in _resources(template, "AWS::IAM::Policy").items() if n.startswith("GenerationModelProfilePolicy")]
    condition = template["Conditions"][policy["Condition"]]
    on_demand = template["Conditions"][condition["Fn::Not"][0]["Condition"]]
    mapping_name = on_demand["Fn::Equals"][0]["Fn::FindInMap"][0]
    mapping = template["Mappings"][mapping_name]
    known = MODEL_REGIONS[stage.serving.bedrock_model_id]
    assert set(mapping) == set(known.regions())
    assert {region for region, row in mapping.items() if row["Form"] == "on-demand"} == set(known.on_demand)
    assert mapping["us-west-2"] == {"Form": "profile", "Profile": "us.amazon.nova-lite-v1:0"}
    assert mapping["eu-west-1"]["Profile"] == "eu.amazon.nova-lite-v1:0" and mapping["ap-south-1"]["Profile"] == "apac.amazon.nova-lite-v1:0"
    through, read = policy["Properties"]["PolicyDocument"]["Statement"]
    assert through["Action"] == "bedrock:InvokeModel" and ":bedrock:*::foundation-model/amazon.nova-lite-v1:0" in json.dumps(through["Resource"])
    assert list(through["Condition"]["StringEquals"]) == ["bedrock:InferenceProfileArn"]
    assert through["Condition"]["StringEquals"]["bedrock:InferenceProfileArn"] == read["Resource"]  # only through this profile
    assert read["Action"] == "bedrock:GetInferenceProfile"
    (rule,) = [r for name, r in template["Rules"].items() if name.startswith("GenerationModelRegionSupported")]
    assert rule["Assertions"][0]["Assert"]["Fn::Contains"][0] == list(known.regions())


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


def _probe(region: str | None = "eu-west-1") -> tuple[cdk.Stack, callable]:
    env = cdk.Environment(account="123456789012", region=region) if region else None
    stack = cdk.Stack(cdk.App(), "Probe", env=env)
    return stack, lambda token: json.dumps(stack.resolve(token)).replace('{"Ref": "AWS::Partition"}', "aws")


def test_an_inference_profile_id_grants_the_profile_and_its_model_only_through_it():
    stack, text = _probe()
    model = BedrockModel(stack, "M", model_id="eu.amazon.nova-lite-v1:0", config_key="k")
    assert ":bedrock:eu-west-1:123456789012:inference-profile/eu.amazon.nova-lite-v1:0" in text(model.invoke_arn)
    through, read = (stack.resolve(s.to_statement_json()) for s in model.profile_statements)
    assert ":bedrock:*::foundation-model/amazon.nova-lite-v1:0" in text(through["Resource"])
    assert through["Condition"] == {"StringEquals": {"bedrock:InferenceProfileArn": stack.resolve(model.invoke_arn)}}
    assert model.profile_condition is None and read["Action"] == "bedrock:GetInferenceProfile"


@pytest.mark.parametrize(
    "region, expected",
    [
        ("us-east-1", ":bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0"),  # on demand in-region
        ("eu-west-2", ":bedrock:eu-west-2::foundation-model/amazon.nova-lite-v1:0"),
        ("us-west-2", ":bedrock:us-west-2:123456789012:inference-profile/us.amazon.nova-lite-v1:0"),
        ("eu-central-1", ":bedrock:eu-central-1:123456789012:inference-profile/eu.amazon.nova-lite-v1:0"),
        ("ap-northeast-2", ":bedrock:ap-northeast-2:123456789012:inference-profile/apac.amazon.nova-lite-v1:0"),
    ],
)
def test_a_known_model_in_a_concrete_region_is_called_in_the_form_that_region_offers(region, expected):
    stack, text = _probe(region)
    model = BedrockModel(stack, "M", model_id="amazon.nova-lite-v1:0", config_key="k")
    assert expected in text(model.invoke_arn)
    assert bool(model.profile_statements) == (":inference-profile/" in expected)
    assert model.profile_condition is None and model.node.try_find_child("ByRegion") is None  # decided at synth, no mapping


def test_a_known_model_in_a_region_without_it_fails_at_synth_naming_the_key():
    stack, _ = _probe("sa-east-1")
    with pytest.raises(UnsupportedModelRegionError, match=r"invalid config stages.dev.serving.bedrock_model_id='amazon.nova-lite-v1:0'.*sa-east-1"):
        BedrockModel(stack, "M", model_id="amazon.nova-lite-v1:0", config_key="stages.dev.serving.bedrock_model_id")


def test_other_models_are_called_in_region_and_a_provider_is_not_a_geography():
    stack, text = _probe()
    for model_id in ("amazon.titan-embed-text-v2:0", "meta.llama3-8b-instruct-v1:0", "ai21.jamba-1-5-large-v1:0"):
        model = BedrockModel(stack, model_id.split(".")[0].replace("-", ""), model_id=model_id, config_key="k")
        assert f":bedrock:eu-west-1::foundation-model/{model_id}" in text(model.invoke_arn) and not model.profile_statements


def test_the_endpoint_name_and_power_parameter_follow_contract_3():
    stage = StageConfig(name="lab")
    assert endpoint_name(stage) == "raglab-generator" and power_parameter("lab") == model_record.power_parameter("lab")
    assert endpoint_name(StageConfig(name="lab", inference=InferenceConfig(enabled=False), serving=ServingConfig(default_generator="bedrock"))) is None


class _Index:
    embedding_dimensions, endpoint_url, index_name = 1024, "https://search", "rag-documents"
    vector_field, text_field, metadata_field, pipeline_name, filterable_fields = "embedding", "text", "metadata", "rag-hybrid", ("a", "b")


class _Fake:
    def __init__(self, **attrs):
        self.__dict__.update(attrs)


def test_a_stage_without_inference_gets_no_endpoint_settings():
    stage = StageConfig(name="lab", inference=InferenceConfig(enabled=False))
    env = ServingStack._environment(stage, _Fake(index=_Index()), _Fake(knowledge_base_id="KB"), "arn", None)
    assert env["DEFAULT_GENERATOR"] == "auto" and env["STAGE_NAME"] == "lab"
    assert not any(key.startswith("ENDPOINT_") for key in env) and "SERVE_BASE" not in env
    assert env["FILTERABLE_FIELDS"] == "a,b" and env["GENERATION_TIMEOUT_S"] == str(stage.serving.generation_timeout_s)


def test_a_stage_with_inference_gets_the_endpoint_whether_or_not_it_exists():
    stage = StageConfig(name="lab", serving=ServingConfig(default_generator="finetuned"))
    env = ServingStack._environment(stage, _Fake(index=_Index()), _Fake(knowledge_base_id="KB"), "arn", endpoint_name(stage))
    assert env["ENDPOINT_NAME"] == "raglab-generator" and env["ENDPOINT_POWER_PARAMETER"] == "/rag/lab/serving/endpoint"
    assert env["ENDPOINT_SEQUENCE_LENGTH"] == str(stage.inference.sequence_length) and env["SERVE_BASE"] == "true"
    assert env["DEFAULT_GENERATOR"] == "finetuned" and env["ENDPOINT_MODEL_NAME"] == "rag-generator"


def test_timeouts_leave_the_function_time_to_answer():
    for timeout in (3, 10, 25, 28):
        serving = ServingConfig(lambda_timeout_s=timeout)
        assert serving.retrieval_timeout_s >= 1 and serving.generation_timeout_s >= 1
        assert serving.retrieval_timeout_s + serving.generation_timeout_s < timeout or timeout <= 3
