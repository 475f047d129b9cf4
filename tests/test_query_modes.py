"""Every mode and generator, end to end through the handler, with botocore Stubber.

Stubber checks each request against the real API model (and against the expected parameters
given here), so a wrong parameter name or shape fails these tests.
"""

from __future__ import annotations

import json

from botocore.stub import ANY

from shared.opensearch_http import OpenSearchResponse
from tests.test_query_helpers import (  # noqa: F401  (wired is a fixture)
    ENV,
    MODEL_ARN,
    described,
    call,
    converse_response,
    endpoint_response,
    retrieve_params,
    retrieve_response,
    stream,
    wired,
)

QUESTION = "How do I rotate the KMS key?"


def _endpoint_body(expected_user_contains: list[str]):
    """A matcher for InvokeEndpoint's Body: decodes it and checks the chat request."""

    class Body:
        def __eq__(self, other):
            request = json.loads(other)
            user = request["messages"][-1]["content"]
            assert request["model"] == ENV["ENDPOINT_MODEL_NAME"]
            assert request["max_tokens"] == int(ENV["MAX_NEW_TOKENS"])
            assert request["messages"][0]["role"] == "system"
            for fragment in expected_user_contains:
                assert fragment in user, (fragment, user)
            return True

    return Body()


def test_rag_kb_retriever_endpoint_generator_returns_only_cited_sources_in_order(wired):
    stubs = wired(endpoint=described())
    stubs.agent.add_response("retrieve", retrieve_response("Rotation is yearly.", "Unrelated text.", "Use EnableKeyRotation."), retrieve_params(QUESTION))
    stubs.sagemaker.add_response(
        "invoke_endpoint",
        endpoint_response("Enable rotation with EnableKeyRotation [3]; it rotates yearly [1]. [9]"),
        {
            "EndpointName": ENV["ENDPOINT_NAME"],
            "TargetVariant": "finetuned",
            "ContentType": "application/json",
            "Accept": "application/json",
            "Body": _endpoint_body(['<source n="1" origin="s3://docs/doc1.md">', "Rotation is yearly.", f"Question: {QUESTION}"]),
        },
    )
    status, body, headers = call({"question": QUESTION})
    assert status == 200, body
    stubs.verify()
    assert [c["n"] for c in body["citations"]] == [3, 1]  # order of first citation; [9] names no source
    assert body["citations"][0] == {"n": 3, "source": "s3://docs/doc3.md", "score": 0.6, "excerpt": "Use EnableKeyRotation."}
    assert body["mode"] == "rag" and body["model"] == "sagemaker:ragdev-generator/finetuned"
    assert body["generator"] == "finetuned" and body["model_version"] == "7"  # from the endpoint config's name
    assert body["usage"] == {"input_tokens": 120, "output_tokens": 30}
    assert set(body["timings_ms"]) == {"retrieve", "generate", "total"}
    assert body["timings_ms"]["total"] >= body["timings_ms"]["generate"]
    assert headers["X-Request-Id"] == "req-123"


def test_rag_with_bedrock_generator_uses_converse(wired):
    stubs = wired(DEFAULT_GENERATOR="bedrock")
    stubs.agent.add_response("retrieve", retrieve_response("Alpha fact."), retrieve_params(QUESTION, top_k=2))
    stubs.runtime.add_response(
        "converse",
        converse_response("Alpha [1]."),
        {
            "modelId": MODEL_ARN,
            "system": [{"text": ANY}],
            "messages": [{"role": "user", "content": [{"text": ANY}]}],
            "inferenceConfig": {"maxTokens": 256, "temperature": 0.2},
        },
    )
    status, body, _ = call({"question": QUESTION, "top_k": 2})
    assert status == 200, body
    stubs.verify()
    assert body["model"] == "amazon.nova-lite-v1:0"
    assert body["citations"] == [{"n": 1, "source": "s3://docs/doc1.md", "score": 0.8, "excerpt": "Alpha fact."}]
    assert body["usage"] == {"input_tokens": 100, "output_tokens": 20}


def test_rag_kb_retriever_translates_filters(wired):
    stubs = wired(DEFAULT_GENERATOR="bedrock")
    expected_filter = {"andAll": [{"equals": {"key": "category", "value": "security"}}, {"in": {"key": "year", "value": [2024, 2025]}}]}
    stubs.agent.add_response("retrieve", retrieve_response("Fact."), retrieve_params(QUESTION, flt=expected_filter))
    stubs.runtime.add_response("converse", converse_response("No citation here."), None)
    status, body, _ = call({"question": QUESTION, "filters": {"category": "security", "year": [2024, 2025]}})
    assert status == 200, body
    stubs.verify()
    assert body["citations"] == []  # nothing cited, nothing returned


def test_rag_opensearch_retriever_embeds_then_runs_hybrid_query_through_the_pipeline(wired):
    stubs = wired(DEFAULT_GENERATOR="bedrock")
    stubs.runtime.add_response(
        "invoke_model",
        {"body": stream({"embedding": [0.1, 0.2, 0.3, 0.4], "inputTextTokenCount": 7}), "contentType": "application/json"},
        {
            "modelId": ENV["EMBEDDING_MODEL_ID"],
            "contentType": "application/json",
            "accept": "application/json",
            "body": json.dumps({"inputText": QUESTION, "dimensions": 4, "normalize": True}),
        },
    )
    hits = {
        "hits": {
            "hits": [
                {"_id": "a", "_score": 0.92, "_source": {"text": "Hybrid one.", "x-amz-bedrock-kb-source-uri": "s3://docs/one.md"}},
                {"_id": "b", "_score": 0.51, "_source": {"text": "Hybrid two.", "metadata": json.dumps({"source": "s3://docs/two.md"})}},
            ]
        }
    }
    stubs.search.responses.append(OpenSearchResponse(status=200, body=hits))
    stubs.runtime.add_response("converse", converse_response("Two [2], then one [1]."), None)
    status, body, _ = call({"question": QUESTION, "retriever": "opensearch", "top_k": 2, "filters": {"category": ["a", "b"]}})
    assert status == 200, body
    stubs.verify()
    path, query = stubs.search.calls[0]
    assert path == "/rag-documents/_search?search_pipeline=rag-hybrid"
    lexical, knn = query["query"]["hybrid"]["queries"]
    assert lexical == {"bool": {"must": [{"match": {"text": {"query": QUESTION}}}], "filter": [{"terms": {"category": ["a", "b"]}}]}}
    assert knn == {"knn": {"embedding": {"vector": [0.1, 0.2, 0.3, 0.4], "k": 2, "filter": {"bool": {"filter": [{"terms": {"category": ["a", "b"]}}]}}}}}
    assert query["size"] == 2 and query["_source"] == {"excludes": ["embedding"]}
    assert [(c["n"], c["source"], c["score"]) for c in body["citations"]] == [(2, "s3://docs/two.md", 0.51), (1, "s3://docs/one.md", 0.92)]


def test_kb_mode_uses_retrieve_and_generate_and_numbers_references(wired):
    stubs = wired()  # mode kb never asks the endpoint's state
    answer = "Keys rotate yearly. Use EnableKeyRotation."
    reference = lambda uri, text: {"content": {"text": text}, "location": {"type": "S3", "s3Location": {"uri": uri}}}  # noqa: E731
    stubs.agent.add_response(
        "retrieve_and_generate",
        {
            "output": {"text": answer},
            "sessionId": "s-1",
            "citations": [
                {"generatedResponsePart": {"textResponsePart": {"text": "Keys rotate yearly.", "span": {"start": 0, "end": 18}}},
                 "retrievedReferences": [reference("s3://docs/a.md", "Rotation yearly.")]},
                {"generatedResponsePart": {"textResponsePart": {"text": "Use EnableKeyRotation.", "span": {"start": 20, "end": 41}}},
                 "retrievedReferences": [reference("s3://docs/b.md", "API call."), reference("s3://docs/a.md", "Rotation yearly.")]},
            ],
        },
        {
            "input": {"text": QUESTION},
            "retrieveAndGenerateConfiguration": {
                "type": "KNOWLEDGE_BASE",
                "knowledgeBaseConfiguration": {
                    "knowledgeBaseId": ENV["KNOWLEDGE_BASE_ID"],
                    "modelArn": MODEL_ARN,
                    "retrievalConfiguration": {"vectorSearchConfiguration": {"numberOfResults": 3, "overrideSearchType": "SEMANTIC"}},
                    "generationConfiguration": {"inferenceConfig": {"textInferenceConfig": {"maxTokens": 256, "temperature": 0.2}}},
                },
            },
        },
    )
    status, body, _ = call({"question": QUESTION, "mode": "kb"})
    assert status == 200, body
    stubs.verify()
    assert body["answer"] == "Keys rotate yearly.[1] Use EnableKeyRotation.[2][1]"
    assert [(c["n"], c["source"]) for c in body["citations"]] == [(1, "s3://docs/a.md"), (2, "s3://docs/b.md")]
    assert body["model"] == "amazon.nova-lite-v1:0" and body["mode"] == "kb"
    assert body["timings_ms"]["retrieve"] == 0


def test_prompt_mode_calls_no_retriever(wired):
    stubs = wired(endpoint=described())
    stubs.sagemaker.add_response(
        "invoke_endpoint",
        endpoint_response("Probably yearly [1]."),
        {"EndpointName": ENV["ENDPOINT_NAME"], "TargetVariant": "finetuned", "ContentType": "application/json", "Accept": "application/json", "Body": _endpoint_body([f"Question: {QUESTION}"])},
    )
    status, body, _ = call({"question": QUESTION, "mode": "prompt"})
    assert status == 200, body
    stubs.verify()  # no retrieve was queued: a Retrieve call would have failed the stub
    assert body["citations"] == [] and body["mode"] == "prompt" and body["timings_ms"]["retrieve"] == 0


def test_prompt_mode_with_bedrock(wired):
    stubs = wired(DEFAULT_GENERATOR="bedrock")
    stubs.runtime.add_response("converse", converse_response("Baseline."), None)
    status, body, _ = call({"question": QUESTION, "mode": "prompt"})
    assert status == 200 and body["answer"] == "Baseline." and body["model"] == "amazon.nova-lite-v1:0"


def test_health_says_what_is_deployed_without_calling_models(wired):
    stubs = wired(endpoint=described(variants=("finetuned",), config="ragdev-generator-b0-f7-0123abcd"))
    status, body, _ = call(method="GET", resource="/health")
    stubs.verify()  # one DescribeEndpoint, no model call
    assert status == 200 and body["status"] == "ok" and body["prompt_version"].startswith("rag-")
    assert body["default_generator"] == "finetuned"
    assert body["generators"]["finetuned"] == {"available": True, "model": "sagemaker:ragdev-generator/finetuned", "version": "7", "reason": None}
    base = body["generators"]["base"]
    assert base["available"] is False and base["version"] is None and "has no model on stage 'dev' yet" in base["reason"]
    assert body["generators"]["bedrock"] == {"available": True, "model": "amazon.nova-lite-v1:0", "version": None, "reason": None}


def test_endpoint_prompt_is_trimmed_to_the_model_context(wired):
    stubs = wired(endpoint=described(), ENDPOINT_SEQUENCE_LENGTH="600", MAX_NEW_TOKENS="100")
    stubs.agent.add_response("retrieve", retrieve_response("a" * 300, "b" * 300, "c" * 300), retrieve_params(QUESTION))
    sent = {}

    class Capture:
        def __eq__(self, other):
            sent["user"] = json.loads(other)["messages"][-1]["content"]
            return True

    stubs.sagemaker.add_response("invoke_endpoint", endpoint_response("A [1]."),
                                 {"EndpointName": ANY, "TargetVariant": "finetuned", "ContentType": ANY, "Accept": ANY, "Body": Capture()})
    status, _, _ = call({"question": QUESTION})
    assert status == 200
    assert 'n="1"' in sent["user"] and 'n="3"' not in sent["user"]
