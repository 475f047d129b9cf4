"""Shared helpers of the query tests: an environment like the Serving stack's, stubbed clients.

Real botocore clients (no network, fake credentials) wrapped in `Stubber`, so every request the
handler makes is checked against the service's API model; a fake OpenSearch transport records
the signed-request path and body.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import botocore.session
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from query import aws_backend, handler
from query.settings import Settings
from shared.opensearch_http import OpenSearchResponse

REGION = "us-east-1"
MODEL_ARN = f"arn:aws:bedrock:{REGION}::foundation-model/amazon.nova-lite-v1:0"
ENDPOINT = "ragdev-generator"
# The endpoint config name of the standard DescribeEndpoint answer: base version 3, fine-tuned 7.
CONFIG_NAME = f"{ENDPOINT}-b3-f7-0123abcd"
ENV = {
    "AWS_REGION": REGION,
    "STAGE_NAME": "dev",
    "DEFAULT_GENERATOR": "finetuned",
    "BEDROCK_MODEL_ARN": MODEL_ARN,
    "ENDPOINT_NAME": ENDPOINT,
    "ENDPOINT_MODEL_NAME": "rag-generator",
    "ENDPOINT_SEQUENCE_LENGTH": "4096",
    "SERVE_BASE": "true",
    "ENDPOINT_POWER_PARAMETER": "/rag/dev/serving/endpoint",
    "KNOWLEDGE_BASE_ID": "KBTEST1234",
    "EMBEDDING_MODEL_ID": "amazon.titan-embed-text-v2:0",
    "EMBEDDING_DIMENSIONS": "4",
    "OPENSEARCH_ENDPOINT": "https://search-rag.us-east-1.es.amazonaws.com",
    "OPENSEARCH_INDEX": "rag-documents",
    "OPENSEARCH_VECTOR_FIELD": "embedding",
    "OPENSEARCH_TEXT_FIELD": "text",
    "OPENSEARCH_METADATA_FIELD": "metadata",
    "OPENSEARCH_SEARCH_PIPELINE": "rag-hybrid",
    "FILTERABLE_FIELDS": "category,year",
    "DEFAULT_RETRIEVER": "kb",
    "DEFAULT_TOP_K": "3",
    "MAX_TOP_K": "10",
    "MAX_QUESTION_CHARS": "200",
    "MAX_NEW_TOKENS": "256",
    "TEMPERATURE": "0.2",
    "RETRIEVAL_TIMEOUT_S": "5",
    "GENERATION_TIMEOUT_S": "20",
}

_SESSION = botocore.session.get_session()
_CLIENTS: dict[str, Any] = {}


def raw_client(service_name: str):
    """One real client per service per test run (creating the first one costs ~0.2 s)."""
    if service_name not in _CLIENTS:
        _CLIENTS[service_name] = _SESSION.create_client(
            service_name, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
        )
    return _CLIENTS[service_name]


def settings(**overrides: str) -> Settings:
    return Settings.from_env({**ENV, **overrides})


def stream(payload: Any) -> StreamingBody:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return StreamingBody(io.BytesIO(data), len(data))


@dataclass
class FakeSearch:
    """Stands in for the signed OpenSearch transport: records calls, returns canned responses."""

    responses: list[Any] = field(default_factory=list)
    calls: list[tuple[str, dict]] = field(default_factory=list)

    def __call__(self, path: str, body: dict) -> OpenSearchResponse:
        self.calls.append((path, body))
        response = self.responses.pop(0)
        if isinstance(response, BaseException):
            raise response
        return response


@dataclass
class Stubs:
    """Stubbers on the clients of one test; `verify()` asserts every queued call happened."""

    agent: Stubber
    runtime: Stubber
    sagemaker: Stubber  # sagemaker-runtime: InvokeEndpoint
    control: Stubber  # sagemaker: DescribeEndpoint
    ssm: Stubber  # GetParameter (the endpoint's power)
    search: FakeSearch

    @property
    def stubbers(self) -> tuple[Stubber, ...]:
        return (self.agent, self.runtime, self.sagemaker, self.control, self.ssm)

    def verify(self) -> None:
        for stub in self.stubbers:
            stub.assert_no_pending_responses()
        assert not self.search.responses, "queued OpenSearch responses were not used"


def make_clients(s: Settings) -> tuple[aws_backend.AwsClients, Stubs]:
    agent, runtime, sagemaker = raw_client("bedrock-agent-runtime"), raw_client("bedrock-runtime"), raw_client("sagemaker-runtime")
    control, ssm = raw_client("sagemaker"), raw_client("ssm")
    clients = aws_backend.AwsClients(s)
    # cached_property: presetting the attribute replaces the lazily-made real client
    clients.retrieval = clients.managed_rag = agent
    clients.embedding = clients.bedrock = runtime
    clients.endpoint = sagemaker
    clients.control, clients.control_ssm = control, ssm
    fake_search = FakeSearch()
    clients.search = fake_search
    return clients, Stubs(Stubber(agent), Stubber(runtime), Stubber(sagemaker), Stubber(control), Stubber(ssm), fake_search)


def described(status: str = "InService", variants: tuple[str, ...] = ("base", "finetuned"), config: str = CONFIG_NAME,
              pending: tuple[str, ...] = ()) -> dict:
    """A DescribeEndpoint answer (every member its API model requires)."""
    response: dict[str, Any] = {
        "EndpointName": ENDPOINT,
        "EndpointArn": f"arn:aws:sagemaker:{REGION}:123456789012:endpoint/{ENDPOINT}",
        "EndpointConfigName": config,
        "EndpointStatus": status,
        "CreationTime": datetime(2026, 11, 1, tzinfo=timezone.utc),
        "LastModifiedTime": datetime(2026, 11, 2, tzinfo=timezone.utc),
    }
    if variants:
        response["ProductionVariants"] = [{"VariantName": name, "CurrentInstanceCount": 1} for name in variants]
    if pending:
        response["PendingDeploymentSummary"] = {"EndpointConfigName": f"{ENDPOINT}-b3-f8-89abcdef",
                                                "ProductionVariants": [{"VariantName": name} for name in pending]}
    return response


def describe_params() -> dict:
    return {"EndpointName": ENDPOINT}


def not_found(stub: Stubber) -> None:
    """DescribeEndpoint's answer for an endpoint that does not exist (a ValidationException)."""
    stub.add_client_error("describe_endpoint", service_error_code="ValidationException",
                          service_message=f'Could not find endpoint "arn:aws:sagemaker:{REGION}:123456789012:endpoint/{ENDPOINT}".',
                          http_status_code=400, expected_params=describe_params())


def power(stub: Stubber, value: str) -> None:
    stub.add_response("get_parameter", {"Parameter": {"Name": ENV["ENDPOINT_POWER_PARAMETER"], "Type": "String", "Value": value, "Version": 3}},
                      {"Name": ENV["ENDPOINT_POWER_PARAMETER"]})


@pytest.fixture
def wired():
    """Configures the handler with the test environment and stubbed clients; `setup(**env)` returns the Stubs.

    `endpoint` queues the first DescribeEndpoint answer (default: in service with both variants;
    None queues nothing, for requests that never ask the endpoint's state).
    """
    created: list[Stubs] = []

    def setup(*, endpoint: dict | None = None, **overrides: str):
        s = settings(**overrides)
        clients, stubs = make_clients(s)
        for stub in stubs.stubbers:
            stub.activate()
        if endpoint is not None:
            stubs.control.add_response("describe_endpoint", endpoint, describe_params())
        handler.configure(settings=s, backend=aws_backend.build(s, clients))
        created.append(stubs)
        return stubs

    yield setup
    for stubs in created:
        for stub in stubs.stubbers:
            stub.deactivate()
    handler.configure()


def event(body: Any = None, *, method: str = "POST", resource: str = "/query", raw: str | None = None) -> dict:
    return {
        "httpMethod": method,
        "resource": resource,
        "path": resource,
        "body": raw if raw is not None else (None if body is None else json.dumps(body)),
        "isBase64Encoded": False,
        "requestContext": {"requestId": "req-123"},
    }


def call(body: Any = None, **kwargs) -> tuple[int, dict, dict]:
    """Runs the handler; returns (status, decoded body, headers)."""
    response = handler.main(event(body, **kwargs), None)
    return response["statusCode"], json.loads(response["body"]), response["headers"]


# --- canned AWS responses -------------------------------------------------------------------


def retrieve_response(*texts: str) -> dict:
    return {
        "retrievalResults": [
            {
                "content": {"text": text, "type": "TEXT"},
                "location": {"type": "S3", "s3Location": {"uri": f"s3://docs/doc{i}.md"}},
                "score": round(0.9 - i / 10, 2),
            }
            for i, text in enumerate(texts, start=1)
        ]
    }


def retrieve_params(question: str, top_k: int = 3, flt: dict | None = None) -> dict:
    vector_search: dict[str, Any] = {"numberOfResults": top_k, "overrideSearchType": "SEMANTIC"}
    if flt:
        vector_search["filter"] = flt
    return {
        "knowledgeBaseId": ENV["KNOWLEDGE_BASE_ID"],
        "retrievalQuery": {"text": question},
        "retrievalConfiguration": {"vectorSearchConfiguration": vector_search},
    }


def endpoint_response(text: str, prompt_tokens: int = 120, completion_tokens: int = 30) -> dict:
    body = {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
    }
    return {"Body": stream(body), "ContentType": "application/json"}


def converse_response(text: str) -> dict:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 100, "outputTokens": 20, "totalTokens": 120},
        "metrics": {"latencyMs": 300},
    }


def client_error(stub: Stubber, method: str, code: str, status: int = 400) -> None:
    stub.add_client_error(method, service_error_code=code, service_message=f"secret detail {code}", http_status_code=status)


def test_settings_match_the_stub_environment():
    s = settings()
    assert s.default_generator == "finetuned" and s.endpoint_name == ENDPOINT and s.filterable_fields == ("category", "year") and s.endpoint_sequence_length == 4096
