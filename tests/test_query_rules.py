"""Every rule of the query API at its edge, as a caller or an operator sees it.

The 400 messages (the caller corrects the request from them: each names the field), the routes and
request ids, the query function's metrics with their units and values, the `query served` log record, the
response timings, and how generators are chosen and reported unavailable. Time is a fake clock
where a value depends on it, so every number is exact.
"""

from __future__ import annotations

import base64
import json
import logging

import pytest

from query import handler, request as query_request, service
from query.prompts import Passage
from query.service import Backend, GeneratorStatus, ManagedAnswer
from query.settings import Settings, SettingsError
from shared import api
from shared.endpoint_codec import Generation
from tests.test_query_backend import FakeGenerator, local  # noqa: F401  (local is a fixture)
from tests.test_query_helpers import call, event

SETTINGS = Settings.local(filterable_fields=("category", "year"), max_question_chars=200, max_top_k=10, default_top_k=3)
ALLOWED_FIELDS = "question, mode, retriever, top_k, filters, generator"


@pytest.mark.parametrize("evt, message", [
    ({"body": None}, "body: a JSON object is required"),
    ({"body": ""}, "body: a JSON object is required"),
    ({"body": {"question": "q"}}, "body: must be a JSON text"),
    ({"body": "eyJx!!", "isBase64Encoded": True}, "body: is not valid base64-encoded UTF-8"),  # not the base64 alphabet
    ({"body": base64.b64encode(b"\xff\xfe").decode(), "isBase64Encoded": True}, "body: is not valid base64-encoded UTF-8"),
    ({"body": '{"question": NaN}'}, "body: is not valid JSON"),
    ({"body": "{"}, "body: is not valid JSON"),
    ({"body": '"' + "q" * 70_000 + '"'}, "body: larger than 65536 bytes"),
])
def test_a_body_that_is_no_json_object_is_refused_with_what_is_wrong(evt, message):
    with pytest.raises(api.ApiError) as error:
        query_request.parse_body(evt)
    assert (error.value.status, error.value.field, error.value.message) == (400, "body", message)


def test_a_base64_body_is_decoded():
    raw = base64.b64encode(json.dumps({"question": "é?"}).encode()).decode()
    assert query_request.parse_body({"body": raw, "isBase64Encoded": True}) == {"question": "é?"}


@pytest.mark.parametrize("body, field, message", [
    ([], "body", "body: must be a JSON object"),
    ({"Question": "q"}, "Question", f"Question: unknown field; allowed: {ALLOWED_FIELDS}"),
    ({"q" * 100: 1}, json.dumps("q" * 64), f"{json.dumps('q' * 64)}: unknown field; allowed: {ALLOWED_FIELDS}"),
    ({"question?": 1}, '"question?"', f'"question?": unknown field; allowed: {ALLOWED_FIELDS}'),
    ({}, "question", "question: is required"),
    ({"question": 5}, "question", "question: must be a string"),
    ({"question": "\ud800"}, "question", "question: must be valid Unicode text (it holds a lone surrogate such as \\ud800)"),
    ({"question": " \n "}, "question", "question: must not be empty"),
    ({"question": "q" * 201}, "question", "question: longer than 200 characters"),
    ({"question": "q", "mode": 3}, "mode", "mode: must be a string, one of: rag, kb, prompt"),
    ({"question": "q", "mode": "RAG"}, "mode", "mode: must be one of: rag, kb, prompt"),
    ({"question": "q", "retriever": "bm25"}, "retriever", "retriever: must be one of: kb, opensearch"),
    ({"question": "q", "mode": "kb", "retriever": "opensearch"}, "retriever", "retriever: mode 'kb' always uses the knowledge base; omit it or use 'kb'"),
    ({"question": "q", "top_k": "3"}, "top_k", "top_k: must be an integer"),
    ({"question": "q", "top_k": True}, "top_k", "top_k: must be an integer"),
    ({"question": "q", "top_k": 0}, "top_k", "top_k: must be between 1 and 10"),
    ({"question": "q", "top_k": 11}, "top_k", "top_k: must be between 1 and 10"),
    ({"question": "q", "filters": []}, "filters", "filters: must be an object of field: value"),
    ({"question": "q", "filters": {"colour": "x"}}, "filters.colour", "filters.colour: not a filterable field; filterable: category, year"),
    ({"question": "q", "filters": {"category": []}}, "filters.category", "filters.category: a list needs 1 to 20 values"),
    ({"question": "q", "filters": {"category": ["a"] * 21}}, "filters.category", "filters.category: a list needs 1 to 20 values"),
    ({"question": "q", "filters": {"category": None}}, "filters.category", "filters.category: values must be strings or numbers"),
    ({"question": "q", "filters": {"category": [True]}}, "filters.category", "filters.category: values must be strings or numbers"),
    ({"question": "q", "filters": {"category": ""}}, "filters.category", "filters.category: strings must have 1 to 256 characters"),
    ({"question": "q", "filters": {"category": "x" * 257}}, "filters.category", "filters.category: strings must have 1 to 256 characters"),
    ({"question": "q", "filters": {"category": "\udc00"}}, "filters.category",
     "filters.category: strings must be valid Unicode text (one holds a lone surrogate such as \\ud800)"),
    ({"question": "q", "filters": {"year": float("inf")}}, "filters.year", "filters.year: numbers must be finite and at most 2^53 in magnitude"),
    ({"question": "q", "filters": {"year": 2**53 + 1}}, "filters.year", "filters.year: numbers must be finite and at most 2^53 in magnitude"),
    ({"question": "q", "mode": "prompt", "filters": {"year": 2020}}, "filters", "filters: mode 'prompt' does not retrieve; filters do not apply"),
    ({"question": "q", "generator": "gpt"}, "generator", "generator: must be one of: finetuned, base, bedrock"),
    ({"question": "q", "generator": 5}, "generator", "generator: must be a string, one of: finetuned, base, bedrock"),
    ({"question": "q", "mode": "kb", "generator": "base"}, "generator",
     "generator: mode 'kb' always uses 'bedrock' (Bedrock's managed RAG); omit it or use 'bedrock'"),
])
def test_each_rejection_names_its_field_and_says_what_is_allowed(body, field, message):
    with pytest.raises(api.ApiError) as error:
        query_request.validate(body, SETTINGS)
    assert (error.value.status, error.value.field, error.value.message) == (400, field, message)


def test_a_stage_without_filterable_fields_says_so():
    with pytest.raises(api.ApiError, match=r"^filters\.a: not a filterable field; filterable: none on this stage$"):
        query_request.validate({"question": "q", "filters": {"a": 1}}, Settings.local(filterable_fields=()))


@pytest.mark.parametrize("filters", [{"category": "x" * 256}, {"category": ["a"] * 20}, {"year": 2**53}, {"year": -(2**53)}, {"year": 2.5}])
def test_filter_values_at_their_limits_are_accepted(filters):
    assert query_request.validate({"question": "q", "filters": filters}, SETTINGS).filters == filters


def test_defaults_come_from_the_settings_and_the_question_is_trimmed():
    request = query_request.validate({"question": "  why?  "}, Settings.local(default_retriever="opensearch", default_top_k=4))
    assert request == query_request.QueryRequest(question="why?", mode="rag", retriever="opensearch", top_k=4, filters={}, generator=None)


# --- the handler: routes, request ids, every failure a JSON response ------------------------------


class Context:
    aws_request_id = "lambda-req-9"

    def __init__(self, remaining_ms: int = 20_000):
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def test_the_request_id_comes_from_api_gateway_else_from_lambda(local):
    local(FakeGenerator("llm"))
    evt = event({"question": "q"})
    evt["requestContext"] = {"requestId": "a" * 200}
    response = handler.main(evt, Context())
    assert response["headers"]["X-Request-Id"] == "a" * 128
    del evt["requestContext"]
    response = handler.main(evt, Context())
    assert response["headers"]["X-Request-Id"] == "lambda-req-9" and json.loads(response["body"])["answer"] == "llm says [1]."
    evt["requestContext"] = {"requestId": 7}
    assert handler.main(evt, None)["headers"]["X-Request-Id"] == "local"


@pytest.mark.parametrize("method, resource, status, message", [
    ("GET", "/query", 404, "no such route; use POST /query or GET /health"),
    ("POST", "/health", 404, "no such route; use POST /query or GET /health"),
    ("GET", "/health", 200, None),
])
def test_routes(local, method, resource, status, message):
    local(FakeGenerator("llm"))
    got, body, headers = call({"question": "q"}, method=method, resource=resource)
    assert got == status and headers["X-Request-Id"] == "req-123"
    assert body.get("message") == message and body.get("request_id", "req-123") == "req-123"


def test_a_proxy_event_without_a_resource_routes_by_its_path(local):
    local(FakeGenerator("llm"))
    evt = event({"question": "q"})
    evt["resource"] = None
    assert handler.main(evt, None)["statusCode"] == 200


def test_an_event_that_is_not_an_api_gateway_request_is_a_400(local):
    local(FakeGenerator("llm"))
    response = handler.main(["not", "an", "event"], Context())
    assert response["statusCode"] == 400 and json.loads(response["body"]) == {
        "message": "event: not an API Gateway request", "field": "event", "request_id": "lambda-req-9"}


def test_the_invocation_deadline_comes_from_the_lambda_context(local, monkeypatch):
    seen = []
    local(FakeGenerator("llm"))
    monkeypatch.setattr(handler.aws_clients, "set_deadline", seen.append)
    context = Context()
    handler.main(event({"question": "q"}), context)
    assert seen == [context]


def test_a_failure_while_reporting_a_failure_is_still_a_json_500(local, monkeypatch, capsys):
    local(FakeGenerator("llm"))

    def broken(*args, **kwargs):
        raise RuntimeError("logging is down")

    monkeypatch.setattr(handler.observability, "log_failure", broken)
    status, body, headers = call({"question": ""})
    assert (status, body) == (500, {"message": api.GENERIC_MESSAGE, "request_id": "req-123"}) and headers["X-Request-Id"] == "req-123"
    (line,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "failed while reporting" in line]
    assert line == {"level": "ERROR", "message": "failed while reporting a failure", "request_id": "req-123",
                    "error_type": "ApiError", "secondary_error_type": "RuntimeError"}


# --- Metrics: units and values of the metrics, the `query served` record ----------------------


class FakeClock:
    """time.perf_counter for the handler and the service: each call moves on by `step` seconds."""

    def __init__(self, step: float = 0.25):
        self.now, self.step = 1000.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def emf(capsys) -> dict:
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    return record


def test_metrics_carry_their_units_and_exact_values(local, monkeypatch, capsys):
    clock = FakeClock()
    monkeypatch.setattr(handler.time, "perf_counter", clock)
    local(FakeGenerator("llm"))
    capsys.readouterr()
    assert call({"question": "q"})[0] == 200
    record = emf(capsys)
    units = {m["Name"]: m["Unit"] for m in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert units == {"Queries": "Count", "QueryLatency": "Milliseconds", "RetrieveLatency": "Milliseconds",
                     "GenerateLatency": "Milliseconds", "OutputTokens": "Count"}
    # perf_counter: started, then retrieve (start, end), generate (start, end), total end, then the handler's end
    assert record["RetrieveLatency"] == [250.0] and record["GenerateLatency"] == [250.0]
    assert record["QueryLatency"] == [1750.0] and record["Queries"] == [1.0] and record["OutputTokens"] == [3.0]


@pytest.mark.parametrize("error, status, metric", [
    (RuntimeError("bug"), 500, "QueryServerErrors"),
    (api.ApiError(429, "slow down"), 429, "QueryClientErrors"),
    (api.ApiError(499, "client closed"), 499, "QueryClientErrors"),
    (api.ApiError(501, "not implemented"), 501, "QueryServerErrors"),
])
def test_errors_are_counted_once_as_client_or_server_errors_by_status(local, monkeypatch, capsys, error, status, metric):
    gens = local(FakeGenerator("llm"))

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(gens["llm"], "generate", fail)
    capsys.readouterr()
    assert call({"question": "q"})[0] == status
    record = emf(capsys)
    assert record[metric] == [1.0] and {"Name": metric, "Unit": "Count"} in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]
    other = "QueryClientErrors" if metric == "QueryServerErrors" else "QueryServerErrors"
    assert other not in record


def served(caplog) -> logging.LogRecord:
    (record,) = [r for r in caplog.records if r.getMessage() == "query served"]
    return record


def test_the_query_served_record_says_what_was_asked_and_answered(local, monkeypatch, caplog):
    monkeypatch.setattr(handler.time, "perf_counter", FakeClock())
    local(FakeGenerator("llm"), filterable_fields=("category", "year"))
    assert call({"question": "Why?", "top_k": 1, "retriever": "opensearch", "filters": {"year": 2020, "category": "a"}})[0] == 200
    record = served(caplog)
    assert (record.status, record.elapsed_ms, record.prompt_version) == (200, 1750.0, service.prompts.PROMPT_VERSION)
    assert (record.mode, record.retriever, record.top_k, record.question_chars, record.filters) == ("rag", "opensearch", 1, 4, ["category", "year"])
    assert (record.generator, record.model, record.model_version, record.cited) == ("llm", "local:llm", "1", [1])
    assert record.timings_ms == {"retrieve": 250.0, "generate": 250.0, "total": 1250.0}
    assert record.usage == {"input_tokens": None, "output_tokens": 3}
    caplog.clear()
    assert call({"question": "Why?", "mode": "prompt"})[0] == 200
    assert served(caplog).retriever is None and served(caplog).cited == []


def test_mode_kb_reports_the_managed_models_usage_and_no_retrieval(local, monkeypatch):
    monkeypatch.setattr(handler.time, "perf_counter", FakeClock())
    local(FakeGenerator("bedrock"), managed_rag=lambda **kw: ManagedAnswer(text="A [1].", citations=[{"n": 1}], model="m", input_tokens=5,
                                                                           output_tokens=2))
    status, body, _ = call({"question": "q", "mode": "kb"})
    assert status == 200 and body["usage"] == {"input_tokens": 5, "output_tokens": 2}
    assert body["timings_ms"] == {"retrieve": 0.0, "generate": 250.0, "total": 750.0} and body["citations"] == [{"n": 1}]
    assert (body["generator"], body["model"], body["model_version"]) == ("bedrock", "m", None)


def test_timings_are_rounded_to_a_tenth_of_a_millisecond(local, monkeypatch):
    monkeypatch.setattr(handler.time, "perf_counter", FakeClock(step=0.00012345))
    local(FakeGenerator("llm"))
    assert call({"question": "q"})[1]["timings_ms"] == {"retrieve": 0.1, "generate": 0.1, "total": 0.6}


def test_the_generator_gets_the_question_and_mode_prompt_cites_nothing(local):
    gens = local(FakeGenerator("llm"))
    status, body, _ = call({"question": "  What is [1]?  ", "mode": "prompt"})
    assert status == 200 and body["citations"] == [] and gens["llm"].calls[0]["question"] == "What is [1]?"
    assert gens["llm"].calls[0]["passages"] == []


# --- generator choice ------------------------------------------------------------------------------


def test_when_no_generator_is_available_the_503_lists_every_reason_and_the_soonest_retry(local):
    local(FakeGenerator("a", available=False, reason="a is off", retry=120), FakeGenerator("b", available=False, retry=45),
          FakeGenerator("c", available=False, reason="c is loading", retry=None))
    status, body, headers = call({"question": "q"})
    assert status == 503 and headers["Retry-After"] == "45" and body["field"] == "generator"
    assert body["message"] == "no generator is available: a: a is off; b: not available; c: c is loading"


def test_without_any_retry_hint_an_unavailable_generator_says_retry_in_30_s(local):
    local(FakeGenerator("a", available=False, reason="off"))
    assert call({"question": "q"})[2]["Retry-After"] == "30"
    assert call({"question": "q", "generator": "a"})[1]["message"] == "off"


def test_an_unavailable_generator_without_a_reason_is_named(local):
    local(FakeGenerator("a", available=False))
    assert call({"question": "q", "generator": "a"})[1]["message"] == "generator 'a' is not available"


def test_a_backend_without_generators_is_a_deployment_fault():
    with pytest.raises(SettingsError, match=r"^the backend has no generators$"):
        service.choose_generator(None, Settings.local(), Backend(retrievers={}, generators={}))


def test_a_retriever_the_target_lacks_is_a_400_naming_those_it_has():
    backend = Backend(retrievers={"kb": lambda **kw: []}, generators={"llm": FakeGenerator("llm")})
    request = query_request.validate({"question": "q", "retriever": "opensearch"}, Settings.local())
    with pytest.raises(api.ApiError) as error:
        service.answer(request, Settings.local(), backend)
    assert (error.value.status, error.value.field, error.value.message) == (400, "retriever", "retriever: must be one of: kb")
    backend = Backend(retrievers={"kb": lambda **kw: [], "local-files": lambda **kw: []}, generators={"llm": FakeGenerator("llm")})
    with pytest.raises(api.ApiError) as error:
        service.answer(request, Settings.local(), backend)
    assert error.value.message == "retriever: must be one of: kb, local-files"


def test_answer_works_without_an_observer():
    backend = Backend(retrievers={"kb": lambda **kw: [Passage(1, "t", "s", None)]}, generators={"llm": FakeGenerator("llm")})
    body = service.answer(query_request.validate({"question": "q"}, Settings.local()), Settings.local(), backend)
    assert body["answer"] == "llm says [1]." and body["citations"][0]["source"] == "s"


def test_a_generation_without_usage_is_reported_as_unknown(local):
    class Quiet(FakeGenerator):
        def generate(self, prompt, **kwargs) -> Generation:
            return Generation(text="A.", input_tokens=None, output_tokens=None)

    local(Quiet("llm"), managed_rag=None)
    assert call({"question": "q"})[1]["usage"] == {"input_tokens": None, "output_tokens": None}



# --- the deployed handler made from its environment; failures; health; mode kb's filters --------

from query import aws_backend  # noqa: E402
from tests.test_query_helpers import ENV, MODEL_ARN, wired  # noqa: E402,F401  (wired is a fixture)


def test_the_deployed_handler_builds_its_backend_from_the_environment(monkeypatch):
    for name, value in {**ENV, "ENDPOINT_NAME": "", "ENDPOINT_POWER_PARAMETER": "", "DEFAULT_GENERATOR": "bedrock"}.items():
        monkeypatch.setenv(name, value)
    handler.configure()
    try:
        status, body, _ = call(method="GET", resource="/health")  # no model call: statuses only
        assert status == 200 and body["default_generator"] == "bedrock" and body["retrievers"] == ["kb", "opensearch"]
        assert body["generators"]["finetuned"]["available"] is False and body["generators"]["bedrock"]["model"] == "amazon.nova-lite-v1:0"
        bedrock = handler._backend.generators["bedrock"].clients.bedrock  # made on first use, with the stage's region and timeout
        assert bedrock.meta.region_name == "us-east-1" and bedrock.meta.config.read_timeout == 20.0
    finally:
        handler.configure()


def test_routes_follow_the_resource_not_the_stage_prefixed_path(local):
    local(FakeGenerator("llm"))
    evt = event({"question": "q"})
    evt["path"] = "/prod/query"  # API Gateway's path carries the stage; the resource is the route
    assert handler.main(evt, None)["statusCode"] == 200


def test_a_long_lambda_request_id_is_cut_to_128(local):
    local(FakeGenerator("llm"))
    evt = event({"question": "q"})
    del evt["requestContext"]
    context = Context()
    context.aws_request_id = "z" * 300
    assert handler.main(evt, context)["headers"]["X-Request-Id"] == "z" * 128


def test_a_failure_is_logged_with_its_request_generator_and_fields_and_not_as_served(local, monkeypatch, caplog):
    gens = local(FakeGenerator("llm"))

    def fail(*args, **kwargs):
        raise api.UpstreamError("model", 503)

    monkeypatch.setattr(gens["llm"], "generate", fail)
    assert call({"question": "Why?", "mode": "prompt"})[0] == 503
    (failed,) = [r for r in caplog.records if r.getMessage() == "request failed"]
    assert (failed.request_id, failed.generator, failed.mode, failed.question_chars) == ("req-123", "llm", "prompt", 4)
    assert not [r for r in caplog.records if r.getMessage() == "query served"]


def test_health_under_auto_with_nothing_available_has_no_default(local):
    local(FakeGenerator("a", available=False), FakeGenerator("b", available=False), managed_rag=lambda **kw: None)
    status, body, _ = call(method="GET", resource="/health")
    assert status == 200 and body == {
        "status": "ok", "prompt_version": service.prompts.PROMPT_VERSION, "default_generator": None, "default_generator_setting": "auto",
        "default_retriever": "kb", "retrievers": ["kb", "opensearch"], "modes": ["rag", "kb", "prompt"],
        "generators": {"a": {"available": False, "model": "local:a", "version": None, "reason": None},
                       "b": {"available": False, "model": "local:b", "version": None, "reason": None}}}


def test_a_default_the_backend_does_not_know_names_the_ones_it_has():
    backend = Backend(retrievers={}, generators={"llm": FakeGenerator("llm"), "x": FakeGenerator("x")})
    with pytest.raises(SettingsError, match=r"^default generator 'finetuned' is not one of \('llm', 'x'\)$"):
        service.choose_generator(None, Settings.local(default_generator="finetuned"), backend)


def test_mode_kb_filters_the_managed_retrieval(wired):
    stubs = wired(DEFAULT_GENERATOR="bedrock")
    stubs.agent.add_response("retrieve_and_generate", {"output": {"text": "A."}, "sessionId": "s-1", "citations": []}, {
        "input": {"text": "q"},
        "retrieveAndGenerateConfiguration": {"type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": {
            "knowledgeBaseId": ENV["KNOWLEDGE_BASE_ID"], "modelArn": MODEL_ARN,
            "retrievalConfiguration": {"vectorSearchConfiguration": {"numberOfResults": 3, "overrideSearchType": "SEMANTIC",
                                                                     "filter": {"equals": {"key": "year", "value": 2020}}}},
            "generationConfiguration": {"inferenceConfig": {"textInferenceConfig": {"maxTokens": 256, "temperature": 0.2}}}}}})
    assert call({"question": "q", "mode": "kb", "filters": {"year": 2020}})[0] == 200
    stubs.verify()


def test_prompt_mode_reports_no_retrieval_time(local, monkeypatch):
    monkeypatch.setattr(handler.time, "perf_counter", FakeClock())
    local(FakeGenerator("llm"))
    assert call({"question": "q", "mode": "prompt"})[1]["timings_ms"] == {"retrieve": 0.0, "generate": 250.0, "total": 750.0}
