"""The query function's parts at their edges: endpoint states and what each 503 says, Bedrock
context windows, the two retrievers on odd answers, citations, the prompt budget's cut, prompt
assembly and Converse answers. Pure functions or botocore's Stubber; no handler round trip."""

from __future__ import annotations

import io
import json

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.response import StreamingBody

from query import aws_backend, budget, citations, generators, prompts, retrievers
from query.aws_backend import RETRY_ABSENT_S, RETRY_CREATING_S, RETRY_UNKNOWN_S
from query.prompts import Passage, Prompt
from shared.api import UpstreamError
from shared.endpoint_codec import EndpointPayloadError
from shared.opensearch_http import OpenSearchResponse
from tests.test_query_helpers import ENDPOINT, describe_params, described, make_clients, not_found, power, settings

MODEL = f"sagemaker:{ENDPOINT}/finetuned"


def status_of(role: str = "finetuned", **env):
    """(status, stubs) with nothing queued yet: the caller queues, then calls `read()`."""
    s = settings(**env)
    clients, stubs = make_clients(s)
    generator = aws_backend.build(s, clients).generators[role]

    def read():
        with stubs.control, stubs.ssm:
            result = generator.status()
        stubs.verify()
        return result

    return read, stubs


@pytest.mark.parametrize("queue, reason", [
    (lambda stubs: stubs.control.add_client_error("describe_endpoint", "ValidationException", "Endpoint name too long", 400,
                                                   expected_params=describe_params()),
     f"the state of endpoint '{ENDPOINT}' could not be read (ValidationException); retry shortly"),
    (lambda stubs: stubs.control.add_client_error("describe_endpoint", "AccessDeniedException", "no", 403, expected_params=describe_params()),
     f"the state of endpoint '{ENDPOINT}' could not be read (AccessDeniedException); retry shortly"),
    (lambda stubs: (not_found(stubs.control), stubs.ssm.add_client_error("get_parameter", "ThrottlingException", "slow", 400)),
     f"the state of endpoint '{ENDPOINT}' could not be read (ThrottlingException); retry shortly"),
    (lambda stubs: (not_found(stubs.control), power(stubs.ssm, "sideways")),
     f"the state of endpoint '{ENDPOINT}' could not be read (InvalidPowerValue); retry shortly"),
])
def test_a_state_that_cannot_be_read_is_a_short_503(queue, reason):
    read, stubs = status_of()
    queue(stubs)
    status = read()
    assert (status.name, status.available, status.model, status.reason, status.retry_after_s, status.context_tokens) == (
        "finetuned", False, MODEL, reason, RETRY_UNKNOWN_S, 4096)


def test_transport_failures_and_codeless_errors_are_named_too():
    s = settings()
    clients, _ = make_clients(s)

    class Broken:
        def __init__(self, error):
            self.error = error

        def describe_endpoint(self, **kwargs):
            raise self.error

        def get_parameter(self, **kwargs):
            raise self.error

    for error, name in ((EndpointConnectionError(endpoint_url="https://sagemaker"), "EndpointConnectionError"),
                        (ClientError({}, "DescribeEndpoint"), "ClientError")):
        clients.control = Broken(error)
        assert aws_backend.EndpointState(s, clients).snapshot().error == name
        clients.control = Broken(ClientError({"Error": {"Code": "ValidationException", "Message": "Could not find endpoint"}}, "DescribeEndpoint"))
        clients.control_ssm = Broken(error)
        snapshot = aws_backend.EndpointState(s, clients).snapshot()
        assert (snapshot.exists, snapshot.error, snapshot.power_missing) == (False, name, False)


@pytest.mark.parametrize("answer, power_value, role, reason, retry", [
    (described(status="Creating", variants=()), None, "finetuned",
     f"generator 'finetuned' is being deployed on endpoint '{ENDPOINT}' (status Creating): retry in a few minutes", RETRY_CREATING_S),
    (described(status="Deleting"), "on", "finetuned", f"endpoint '{ENDPOINT}' is being replaced: retry in a few minutes", RETRY_CREATING_S),
    (described(status="Deleting"), "off", "base",
     "generator 'base' is switched off on stage 'dev' (its endpoint is off to save cost): switch it on with scripts/endpoint_power.py "
     "--stage dev on and retry in about 15 minutes", RETRY_ABSENT_S),
    (described(status="Failed", variants=()), None, "finetuned",
     f"endpoint '{ENDPOINT}' is Failed: see its FailureReason (aws sagemaker describe-endpoint --endpoint-name {ENDPOINT}) and the "
     "Inference stack's events", RETRY_CREATING_S),
    (described(variants=("base",)), None, "finetuned",
     "generator 'finetuned' has no model on stage 'dev' yet: start a fine-tuning run with scripts/start_training.py --stage dev --data "
     "<training data prefix>/ (the pipeline deploys the new version when training.auto_deploy is on, or once you approve it)", RETRY_ABSENT_S),
    (None, "missing", "finetuned",
     "stage 'dev' has no serving record yet (SSM parameter /rag/dev/serving/endpoint is missing): deploy the stage (make deploy STAGE=dev)",
     RETRY_ABSENT_S),
])
def test_each_unavailable_state_says_what_to_do_and_keeps_its_model(answer, power_value, role, reason, retry):
    read, stubs = status_of(role)
    if answer is None:
        not_found(stubs.control)
    else:
        stubs.control.add_response("describe_endpoint", answer, describe_params())
    if power_value == "missing":
        stubs.ssm.add_client_error("get_parameter", "ParameterNotFound", "none", 400)
    elif power_value:
        power(stubs.ssm, power_value)
    status = read()
    assert (status.name, status.available, status.model, status.reason, status.retry_after_s) == (role, False, f"sagemaker:{ENDPOINT}/{role}", reason, retry)


def test_config_switches_say_what_to_set():
    read, _ = status_of("base", SERVE_BASE="false")
    status = read()
    assert (status.model, status.reason) == (f"sagemaker:{ENDPOINT}/base", "generator 'base' is switched off on stage 'dev' "
                                             "(inference.serve_base is false in its config): set it to true and deploy the stage")
    read, _ = status_of("finetuned", DEFAULT_GENERATOR="bedrock", ENDPOINT_NAME="", ENDPOINT_POWER_PARAMETER="")
    status = read()
    assert (status.name, status.model, status.retry_after_s) == ("finetuned", None, RETRY_ABSENT_S)
    assert status.reason == ("generator 'finetuned' needs an Inferentia2 endpoint and stage 'dev' has none (inference.enabled is false "
                             "in its config): set it to true and deploy the stage")


def test_an_available_role_reports_its_name_version_and_window():
    read, stubs = status_of("base")
    stubs.control.add_response("describe_endpoint", described(), describe_params())
    assert read() == aws_backend.GeneratorStatus("base", True, f"sagemaker:{ENDPOINT}/base", "3", None, 4096)


@pytest.mark.parametrize("arn_model, window", [
    ("amazon.nova-lite-v1:0", 300_000), ("us.amazon.nova-micro-v1:0", 128_000), ("us-gov.amazon.nova-pro-v1:0", 300_000),
    ("global.amazon.nova-lite-v1:0", 300_000), ("anthropic.claude-3-haiku-20240307-v1:0", None), ("xx.amazon.nova-lite-v1:0", None),
])
def test_bedrock_context_windows_by_model_and_profile(arn_model, window):
    s = settings(BEDROCK_MODEL_ARN=f"arn:aws:bedrock:us-east-1::foundation-model/{arn_model}")
    status = aws_backend.BedrockGenerator(s, make_clients(s)[0]).status()
    assert (status.name, status.available, status.model, status.context_tokens) == ("bedrock", True, arn_model, window)


# --- retrievers --------------------------------------------------------------------------------


@pytest.mark.parametrize("location, uri", [
    ({"type": "S3", "s3Location": {"uri": "s3://docs/a.md"}}, "s3://docs/a.md"),
    ({"type": "WEB", "webLocation": {"url": "https://example.com/a"}}, "https://example.com/a"),
    ({"type": "CUSTOM", "customDocumentLocation": {"id": "doc-7"}}, "doc-7"),
    ({"type": "S3", "s3Location": {"uri": ""}, "webLocation": {"url": 5}}, "S3"),
    ({"type": "SHAREPOINT"}, "SHAREPOINT"),
    ({"type": ""}, "unknown"), ({"type": 3}, "unknown"), ({}, "unknown"), (None, "unknown"), ("s3://x", "unknown"),
    ({"s3Location": {"uri": "s3://docs/\ud800.md"}}, "s3://docs/\ufffd.md"),
    ({"type": "\udc00"}, "\ufffd"),
])
def test_a_results_location_becomes_a_citable_source(location, uri):
    assert retrievers.location_uri(location) == uri


def test_knowledge_base_filters():
    assert retrievers.kb_filter({}) is None
    assert retrievers.kb_filter({"year": 2020}) == {"equals": {"key": "year", "value": 2020}}
    assert retrievers.kb_filter({"year": [2020, 2021], "category": "a"}) == {"andAll": [
        {"in": {"key": "year", "value": [2020, 2021]}}, {"equals": {"key": "category", "value": "a"}}]}


class Retrieve:
    def __init__(self, response):
        self.response, self.calls = response, []

    def retrieve(self, **kwargs):
        self.calls.append(kwargs)
        return self.response


def test_knowledge_base_results_without_text_are_skipped_and_the_rest_numbered():
    client = Retrieve({"retrievalResults": [
        {"content": {}, "location": {"type": "S3", "s3Location": {"uri": "s3://d/0"}}},
        {"content": {"text": "  "}},
        {"content": {"text": "one"}, "location": {"type": "S3", "s3Location": {"uri": "s3://d/1"}}, "score": 0.5},
        {"content": {"text": "two"}, "score": float("nan")},
    ]})
    passages = retrievers.retrieve_kb(client, knowledge_base_id="KB", question="q", top_k=5, filters={"year": 2020})
    assert passages == [Passage(1, "one", "s3://d/1", 0.5), Passage(2, "two", "unknown", None)]
    assert client.calls[0]["retrievalConfiguration"]["vectorSearchConfiguration"]["filter"] == {"equals": {"key": "year", "value": 2020}}


class Embed:
    def __init__(self, vector):
        self.vector = vector

    def invoke_model(self, **kwargs):
        data = json.dumps({"embedding": self.vector}).encode()
        return {"body": StreamingBody(io.BytesIO(data), len(data))}


def search_with(*answers):
    calls = []

    def search(path, body):
        calls.append((path, body))
        return answers[len(calls) - 1]

    return search, calls


def opensearch(search, *, filters=None, top_k=5):
    return retrievers.retrieve_opensearch(search, Embed([0.1, 0.2]), index="rag-documents", pipeline="rag-hybrid",
                                          embedding_model_id="m", dimensions=2, vector_field="embedding", text_field="text",
                                          metadata_field="metadata", question="q", top_k=top_k, filters=filters or {})


def test_the_hybrid_query_filters_both_sub_queries_by_term_or_terms():
    search, calls = search_with(OpenSearchResponse(200, {"hits": {"hits": []}}))
    assert opensearch(search, filters={"year": 2020, "category": ["a", "b"]}, top_k=3) == []
    path, body = calls[0]
    assert path == "/rag-documents/_search?search_pipeline=rag-hybrid"
    terms = [{"term": {"year": 2020}}, {"terms": {"category": ["a", "b"]}}]
    assert body == {"size": 3, "_source": {"excludes": ["embedding"]}, "query": {"hybrid": {"queries": [
        {"bool": {"must": [{"match": {"text": {"query": "q"}}}], "filter": terms}},
        {"knn": {"embedding": {"vector": [0.1, 0.2], "k": 3, "filter": {"bool": {"filter": terms}}}}}]}}}


@pytest.mark.parametrize("answer", [
    OpenSearchResponse(200, "not json"), OpenSearchResponse(200, {"hits": {"hits": 5}}), OpenSearchResponse(200, {"hits": None}),
])
def test_odd_search_answers_give_no_passages(answer):
    assert opensearch(search_with(answer)[0]) == []


def test_odd_hits_are_skipped_and_sources_found_where_they_are():
    hits = [
        "not a hit", {"_id": "h0"}, {"_id": "h1", "_source": {"text": 5}}, {"_id": "h2", "_source": {"text": " "}},
        {"_id": "h3", "_source": {"text": "a", "x-amz-bedrock-kb-source-uri": "s3://d/a"}, "_score": 2},
        {"_id": "h4", "_source": {"text": "b", "metadata": json.dumps({"source": "s3://d/b"})}},
        {"_id": "h5", "_source": {"text": "c", "metadata": {"x-amz-bedrock-kb-source-uri": "s3://d/c", "source": "other"}}},
        {"_id": "h6", "_source": {"text": "d", "metadata": "{not json"}},
        {"_source": {"text": "e", "metadata": {"source": 7}}},
    ]
    passages = opensearch(search_with(OpenSearchResponse(200, {"hits": {"hits": hits}}))[0], top_k=10)
    assert [(p.n, p.text, p.source, p.score) for p in passages] == [
        (1, "a", "s3://d/a", 2.0), (2, "b", "s3://d/b", None), (3, "c", "s3://d/c", None), (4, "d", "opensearch:h6", None),
        (5, "e", "opensearch:unknown", None)]


def test_upstream_failures_name_the_dependency_and_keep_its_answer_short():
    with pytest.raises(UpstreamError) as error:
        opensearch(search_with(OpenSearchResponse(500, {"error": "x" * 1000}))[0])
    assert error.value.status == 500 and str(error.value) == "OpenSearch search returned HTTP 500: " + json.dumps({"error": "x" * 1000})[:500]
    with pytest.raises(UpstreamError) as error:
        retrievers.embed(Embed([0.1]), model_id="m", dimensions=2, text="q")
    assert error.value.status == 502 and str(error.value) == "embedding model returned HTTP 502: expected 2 dimensions"


# --- citations ---------------------------------------------------------------------------------


@pytest.mark.parametrize("part, end", [
    ({"text": "First"}, 5),  # found at the very start
    ({"text": " twice "}, 11),  # trimmed, its first occurrence
    ({"text": 7, "span": {"start": 0, "end": 0}}, 1),  # span.end is the index of the part's last character
    ({"text": "absent", "span": {"end": 2}}, 3),
    ({"span": {"end": 500}}, 27),
    ({"span": {"end": -1}}, 27), ({"span": {"end": True}}, 27), ({}, 27),
])
def test_where_a_cited_part_ends(part, end):
    text = "First twice, then twice ok."
    assert citations._part_end(text, {"generatedResponsePart": {"textResponsePart": part}}) == end


def test_kb_citations_are_numbered_by_source_and_marked_where_each_part_ends():
    ref = lambda uri, text=None: {"location": {"type": "S3", "s3Location": {"uri": uri}}, **({"content": {"text": text}} if text else {})}  # noqa: E731
    response = {"output": {"text": " One. Two. "}, "citations": [
        {"generatedResponsePart": {"textResponsePart": {"text": "One."}}, "retrievedReferences": [ref("s3://a", "alpha"), ref("s3://b")]},
        {"generatedResponsePart": {"textResponsePart": {"text": "One."}}, "retrievedReferences": [ref("s3://a", "alpha")]},
        {"generatedResponsePart": {"textResponsePart": {"text": "Two."}}, "retrievedReferences": [ref("s3://b")]},
    ]}
    text, cited = citations.kb_answer_and_citations(response)
    assert text == "One.[1][2][1] Two.[2]"
    assert cited == [{"n": 1, "source": "s3://a", "score": None, "excerpt": "alpha"}, {"n": 2, "source": "s3://b", "score": None, "excerpt": ""}]
    assert citations.kb_answer_and_citations({"output": {}}) == ("", [])


@pytest.mark.parametrize("text, excerpt", [
    ("a" * 300, "a" * 300), ("a" * 299 + "bb", "a" * 299 + "…"), ("a" * 298 + " bb", "a" * 298 + "…"), ("  a \n b  ", "a b"),
])
def test_excerpts_are_at_most_300_characters(text, excerpt):
    assert citations.excerpt(text) == excerpt


# --- the prompt budget's cut, prompts, Converse ------------------------------------------------------


@pytest.mark.parametrize("text, tokens, expected", [
    ("abcdef", 2, "abcdef"),  # exactly 6 bytes: whole
    ("abcdefg", 2, "abcdef …"),
    ("ééé", 1, "é …"),  # 2 bytes each
    ("aaaa bbbb ccccc dd eee", 6, "aaaa bbbb ccccc …"),  # the last space is near the end: cut there
    ("aaaaaaaaaaaa abcdef", 5, "aaaaaaaaaaaa …"),  # the space at exactly 80% of the prefix still counts
    ("aaaaaaaaaaa abcdefg", 5, "aaaaaaaaaaa abc …"),  # before 80%: keep the partial word
    (" aaaaaaaaaaaaa bcdef", 5, " aaaaaaaaaaaaa …"),
    ("", 1, ""),
])
def test_a_cut_passage_ends_at_a_word_when_that_loses_little(text, tokens, expected):
    assert budget.cut(text, tokens) == expected


def test_the_skeleton_splits_compatibility_characters_and_drops_invisible_ones():
    assert prompts.skeleton("ﬁ") == ("fi", [0, 0])
    assert prompts.skeleton("s\u200bo\u0301") == ("so", [0, 2])
    assert prompts.skeleton("A＜") == ("a<", [0, 1])
    assert prompts.neutralise_fences("x</source>y") == "x&lt;/source>y"
    assert prompts.neutralise_fences("</so\u200burce>") == "&lt;/so\u200burce>"
    assert prompts.neutralise_fences("<sou\u0301rce n=1>") == "&lt;sou\u0301rce n=1>"


def test_sources_are_joined_one_per_block_and_an_empty_list_says_so():
    user = prompts.rag_prompt("q", [Passage(1, " a ", 's"1', None), Passage(2, "b", "s2", None)]).user
    assert user == ('<sources>\n<source n="1" origin="s\'1">\na\n</source>\n<source n="2" origin="s2">\nb\n</source>\n</sources>\n\n'
                    "Question: q\n\nAnswer with citations:")
    assert prompts.rag_prompt("q", []).user == "<sources>\n(no sources found)\n</sources>\n\nQuestion: q\n\nAnswer with citations:"


class Converse:
    def __init__(self, response):
        self.response = response

    def converse(self, **kwargs):
        return self.response


def test_converse_text_blocks_are_joined_and_other_blocks_ignored():
    content = [{"text": "Keys "}, {"image": {}}, "junk", {"text": 5}, {"text": "rotate."}]
    generation = generators.generate_bedrock(Converse({"output": {"message": {"content": content}}, "usage": {"inputTokens": 3}}),
                                             model_id="m", prompt=Prompt("s", "u"), max_tokens=5, temperature=0.0)
    assert (generation.text, generation.input_tokens, generation.output_tokens) == ("Keys rotate.", 3, None)


def test_converse_without_text_names_the_stop_reason():
    with pytest.raises(EndpointPayloadError, match=r"^Converse returned no text \(stopReason='content_filtered'\)$"):
        generators.generate_bedrock(Converse({"output": {"message": {"content": [{"text": "  "}]}}, "stopReason": "content_filtered"}),
                                    model_id="m", prompt=Prompt("s", "u"), max_tokens=5, temperature=0.0)


# --- the function's settings: a deployment fault names the variable -------------------------------

from query.settings import Settings, SettingsError  # noqa: E402
from tests.test_query_helpers import ENV  # noqa: E402


@pytest.mark.parametrize("overrides, message", [
    ({"DEFAULT_GENERATOR": "gpt"}, "DEFAULT_GENERATOR='gpt': allowed ('auto', 'finetuned', 'base', 'bedrock')"),
    ({"DEFAULT_GENERATOR": "base", "ENDPOINT_NAME": ""}, "DEFAULT_GENERATOR='base' needs ENDPOINT_NAME (the stage's endpoint)"),
    ({"SERVE_BASE": "yes"}, "SERVE_BASE='yes': allowed 'true', 'false'"),
    ({"MAX_TOP_K": "ten"}, "environment: environment variable MAX_TOP_K='ten' is not an integer"),
    ({"RETRIEVAL_TIMEOUT_S": "soon"}, "environment: environment variable RETRIEVAL_TIMEOUT_S='soon' is not a number"),
    ({"TEMPERATURE": "nan"}, "environment: environment variable TEMPERATURE='nan' is not a finite number"),
    ({"KNOWLEDGE_BASE_ID": ""}, "environment: environment variable KNOWLEDGE_BASE_ID is missing"),
    ({"OPENSEARCH_ENDPOINT": "http://search"}, "OPENSEARCH_ENDPOINT must start with https://"),
    ({"MAX_TOP_K": "0"}, "environment: max_top_k=0 must be at least 1"),
    ({"DEFAULT_TOP_K": "11"}, "environment: default_top_k=11 must be within 1..max_top_k=10"),
    ({"DEFAULT_TOP_K": "0"}, "environment: default_top_k=0 must be within 1..max_top_k=10"),
    ({"MAX_QUESTION_CHARS": "0"}, "environment: max_question_chars=0 must be at least 1"),
    ({"MAX_NEW_TOKENS": "0"}, "environment: max_new_tokens=0 must be at least 1"),
    ({"TEMPERATURE": "2.01"}, "environment: temperature=2.01 must be within 0.0..2.0"),
    ({"TEMPERATURE": "-0.01"}, "environment: temperature=-0.01 must be within 0.0..2.0"),
])
def test_a_wrong_environment_names_the_variable(overrides, message):
    with pytest.raises(SettingsError) as error:
        Settings.from_env({**ENV, **overrides})
    assert str(error.value) == message


def test_an_absent_number_is_missing_not_malformed():
    with pytest.raises(SettingsError) as error:
        Settings.from_env({k: v for k, v in ENV.items() if k != "EMBEDDING_DIMENSIONS"})
    assert str(error.value) == "environment: environment variable EMBEDDING_DIMENSIONS is missing"


def test_optional_variables_and_their_defaults():
    env = {k: v for k, v in ENV.items() if k not in ("RETRIEVAL_TIMEOUT_S", "DEFAULT_RETRIEVER", "ENDPOINT_MODEL_NAME", "ENDPOINT_SEQUENCE_LENGTH",
                                                      "FILTERABLE_FIELDS", "SERVE_BASE")}
    s = Settings.from_env({**env, "MAX_TOP_K": "1", "DEFAULT_TOP_K": "1", "MAX_QUESTION_CHARS": "1", "MAX_NEW_TOKENS": "1", "TEMPERATURE": "2.0"})
    assert (s.retrieval_timeout_s, s.default_retriever, s.endpoint_model, s.endpoint_sequence_length, s.filterable_fields, s.serve_base) == (
        5.0, "kb", "", None, (), True)
    assert (s.max_top_k, s.default_top_k, s.max_question_chars, s.max_new_tokens, s.temperature) == (1, 1, 1, 1, 2.0)
    assert Settings.from_env({**ENV, "SERVE_BASE": "false", "TEMPERATURE": "0"}).serve_base is False
    # values other than the dataclass's own defaults, so a variable read under another name shows
    s = Settings.from_env({**ENV, "DEFAULT_RETRIEVER": "opensearch", "GENERATION_TIMEOUT_S": "7.5", "RETRIEVAL_TIMEOUT_S": "2"})
    assert (s.default_retriever, s.generation_timeout_s, s.retrieval_timeout_s) == ("opensearch", 7.5, 2.0)
    assert Settings.local(filterable_fields=" a, ,b ,").filterable_fields == ("a", "b")


@pytest.mark.parametrize("kwargs, message", [
    ({"default_generator": ""}, "default_generator must be a generator name or 'auto'"),
    ({"default_generator": None}, "default_generator must be a generator name or 'auto'"),
    ({"filterable_fields": "a,b"}, "filterable_fields must be a tuple of field names, not a string"),
    ({"temperature": float("inf")}, "temperature=inf must be within 0.0..2.0"),
])
def test_settings_made_in_code_are_checked_too(kwargs, message):
    with pytest.raises(SettingsError) as error:
        Settings(**kwargs)
    assert str(error.value) == message
