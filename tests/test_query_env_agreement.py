"""The Serving stack and the query handler agree on names: the handler runs with exactly the
environment the synthesized template gives the function (intrinsics replaced by plausible values).

A renamed variable on either side fails here: a name the handler needs but the template lacks
(Settings raises), a name the template sets but the handler never reads (asserted), or a value
the handler cannot use (the request fails).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from query import aws_backend, handler
from query.settings import Settings
from tests.test_query_helpers import described, endpoint_response, event, make_clients, retrieve_response

RUNTIME_ENV = {"AWS_REGION": "us-east-1", "AWS_LAMBDA_FUNCTION_NAME": "query"}  # set by Lambda itself
READ_BY_POWERTOOLS = {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"}
PSEUDO = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012", "AWS::URLSuffix": "amazonaws.com"}


def resolve(value: Any, template: dict) -> Any:
    """A deploy-time value for an intrinsic: pseudo parameters and imports become plausible
    strings; mappings and conditions are evaluated as CloudFormation would in us-east-1."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        if "knowledgebaseid" in value["Ref"]:  # the knowledge base id's SSM parameter, resolved at deploy
            return "KBIMPORTED"
        return PSEUDO.get(value["Ref"], f"ref{value['Ref']}")
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(resolve(part, template) for part in parts)
    if "Fn::FindInMap" in value:
        name, first, second = (resolve(part, template) for part in value["Fn::FindInMap"])
        return template["Mappings"][name][first][second]
    if "Fn::If" in value:
        condition, if_true, if_false = value["Fn::If"]
        return resolve(if_true if condition_holds(condition, template) else if_false, template)
    if "Fn::ImportValue" in value:
        name = json.dumps(value["Fn::ImportValue"])
        if "KnowledgeBaseId" in name:
            return "KBIMPORTED"
        if "DomainEndpoint" in name:
            return "search-rag.us-east-1.es.amazonaws.com"
        return "imported"
    raise AssertionError(f"unexpected intrinsic in the function environment: {value}")


def condition_holds(name: str, template: dict) -> bool:
    expression = template["Conditions"][name]
    if "Fn::Equals" in expression:
        left, right = (resolve(part, template) for part in expression["Fn::Equals"])
        return left == right
    if "Fn::Not" in expression:
        (inner,) = expression["Fn::Not"]
        return not condition_holds(inner["Condition"], template)
    raise AssertionError(f"unexpected condition {expression}")


class Recording(dict):
    """An environment that remembers which names were read."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


@pytest.fixture(scope="module", params=["dev", "prod"])
def template_env(request, synth) -> tuple[Any, dict[str, str]]:
    stage = synth.config.stages[request.param]
    template = synth.template(f"{stage.stack_prefix}-Serving")
    (function,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Function"]
    variables = function["Properties"]["Environment"]["Variables"]
    return stage, {**RUNTIME_ENV, **{name: resolve(value, template) for name, value in variables.items()}}


def test_the_handler_reads_every_variable_the_template_sets_and_needs_no_other(template_env):
    _, env = template_env
    recording = Recording(env)
    Settings.from_env(recording)  # raises SettingsError naming a missing variable
    unread = set(env) - recording.read - READ_BY_POWERTOOLS - set(RUNTIME_ENV)
    assert not unread, f"the template sets variables the handler never reads: {sorted(unread)}"


def test_the_handler_serves_with_exactly_the_template_environment(template_env, monkeypatch):
    stage, env = template_env
    monkeypatch.setattr("os.environ", dict(env))
    handler.configure()
    try:
        assert handler.main(event(method="GET", resource="/nowhere"), None)["statusCode"] == 404  # builds settings from env
        settings = handler._settings  # made by the handler from the environment above
        assert settings.endpoint_name == f"rag{stage.name}-generator" and settings.stage == stage.name
        assert settings.bedrock_model_arn == "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0"  # on demand there
        clients, stubs = make_clients(settings)
        handler.configure(settings=settings, backend=aws_backend.build(settings, clients))
        stubs.control.add_response("describe_endpoint", described(variants=("finetuned",), config=f"rag{stage.name}-generator-b0-f4-0123abcd"),
                                   {"EndpointName": f"rag{stage.name}-generator"})
        stubs.agent.add_response("retrieve", retrieve_response("Fact one."), {
            "knowledgeBaseId": "KBIMPORTED", "retrievalQuery": {"text": "q?"},
            "retrievalConfiguration": {"vectorSearchConfiguration": {"numberOfResults": stage.serving.default_top_k, "overrideSearchType": "SEMANTIC"}},
        })
        stubs.sagemaker.add_response("invoke_endpoint", endpoint_response("Answer [1]."), {
            "EndpointName": f"rag{stage.name}-generator", "TargetVariant": "finetuned", "ContentType": "application/json",
            "Accept": "application/json", "Body": _AnyBody(),
        })
        with stubs.agent, stubs.runtime, stubs.sagemaker, stubs.control, stubs.ssm:
            health = json.loads(handler.main(event(method="GET", resource="/health"), None)["body"])
            response = handler.main(event({"question": "q?", "retriever": "kb"}), None)
        assert health["default_generator"] == "finetuned" and health["generators"]["finetuned"]["version"] == "4"
        assert health["default_generator_setting"] == stage.serving.default_generator and health["default_retriever"] == stage.serving.default_retriever
        assert response["statusCode"] == 200, response
        stubs.verify()
        body = json.loads(response["body"])
        assert body["citations"][0]["n"] == 1 and (body["generator"], body["model_version"]) == ("finetuned", "4")
    finally:
        handler.configure()


class _AnyBody:
    def __eq__(self, other):
        request = json.loads(other)
        return request["model"] == "rag-generator" and request["messages"][-1]["role"] == "user"
