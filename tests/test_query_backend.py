"""The query API's Python interface: the handler on any Backend (as local mode uses it), generator
choice, 400/503 for unknown/unavailable generators, mode kb without managed RAG, /health."""

from __future__ import annotations

import dataclasses
import json

import pytest

from query import handler, service
from query.prompts import Passage
from query.service import Backend, GeneratorStatus, ManagedAnswer
from query.settings import Settings, SettingsError
from shared.endpoint_codec import Generation
from stacks.config import ServingConfig
from tests.test_query_helpers import call


class FakeGenerator:
    def __init__(self, name: str, available: bool = True, reason: str | None = None, context_tokens: int | None = None, retry: int | None = None):
        self._status = GeneratorStatus(name, available, f"local:{name}", "1" if available else None, reason, context_tokens, retry)
        self.calls: list[dict] = []

    def status(self) -> GeneratorStatus:
        return self._status

    def generate(self, prompt, *, question, passages, max_tokens, temperature) -> Generation:
        self.calls.append({"prompt": prompt, "question": question, "passages": list(passages), "max_tokens": max_tokens})
        return Generation(text=f"{self._status.name} says [1].", input_tokens=None, output_tokens=3)


def retriever(*, question, top_k, filters):
    return [Passage(1, f"About {question}.", "doc.md", 0.5)][:top_k]


@pytest.fixture
def local():
    """Configures the handler with a local-style backend; yields the generators."""
    made = {}

    def setup(*generators: FakeGenerator, managed_rag=None, **settings):
        gens = {g.status().name: g for g in generators}
        handler.configure(settings=Settings.local(**settings), backend=Backend(retrievers={"kb": retriever, "opensearch": retriever}, generators=gens, managed_rag=managed_rag))
        made.update(gens)
        return gens

    yield setup
    handler.configure()


def test_auto_picks_the_first_available_generator_in_the_backend_order(local):
    gens = local(FakeGenerator("extractive", available=False, reason="not installed"), FakeGenerator("llm"), FakeGenerator("bedrock"))
    status, body, _ = call({"question": "q?"})
    assert status == 200, body
    assert (body["generator"], body["model"], body["model_version"]) == ("llm", "local:llm", "1")
    assert gens["llm"].calls and not gens["bedrock"].calls
    assert body["citations"] == [{"n": 1, "source": "doc.md", "score": 0.5, "excerpt": "About q?."}]


def test_a_named_generator_is_used_even_when_another_comes_first(local):
    gens = local(FakeGenerator("extractive"), FakeGenerator("bedrock"))
    status, body, _ = call({"question": "q?", "generator": "bedrock", "mode": "prompt"})
    assert status == 200 and body["generator"] == "bedrock" and not gens["extractive"].calls
    assert body["timings_ms"]["retrieve"] == 0 and gens["bedrock"].calls[0]["passages"] == []


def test_the_configured_default_is_used_when_the_request_names_none(local):
    local(FakeGenerator("extractive"), FakeGenerator("bedrock"), default_generator="bedrock")
    assert call({"question": "q?"})[1]["generator"] == "bedrock"


def test_an_unknown_generator_is_400_naming_the_allowed_ones_in_order(local):
    local(FakeGenerator("extractive"), FakeGenerator("llm"), FakeGenerator("bedrock"))
    status, body, _ = call({"question": "q?", "generator": "finetuned"})
    assert status == 400 and body["field"] == "generator"
    assert body["message"] == "generator: must be one of: extractive, llm, bedrock"
    assert call({"question": "q?", "generator": 3})[0] == 400


def test_a_known_generator_that_is_not_available_is_503_with_its_reason_and_retry_after(local):
    local(FakeGenerator("extractive"), FakeGenerator("llm", available=False, reason="install it with: make local-llm", retry=7))
    status, body, headers = call({"question": "q?", "generator": "llm"})
    assert status == 503 and body["message"] == "install it with: make local-llm" and body["field"] == "generator"
    assert headers["Retry-After"] == "7"


def test_without_a_retry_hint_a_503_still_carries_the_default_retry_after(local):
    local(FakeGenerator("llm", available=False, reason="missing"))
    status, _, headers = call({"question": "q?", "generator": "llm"})
    assert status == 503 and headers["Retry-After"] == str(service.UNAVAILABLE_RETRY_AFTER_S)


def test_auto_with_nothing_available_is_503_listing_every_reason(local):
    local(FakeGenerator("extractive", available=False, reason="no index"), FakeGenerator("bedrock", available=False, reason="no credentials", retry=9))
    status, body, headers = call({"question": "q?"})
    assert status == 503 and "extractive: no index" in body["message"] and "bedrock: no credentials" in body["message"]
    assert headers["Retry-After"] == "9"


def test_mode_kb_without_managed_rag_is_400(local):
    local(FakeGenerator("extractive"))
    status, body, _ = call({"question": "q?", "mode": "kb"})
    assert status == 400 and body["field"] == "mode" and "needs a deployed stage (Bedrock knowledge base)" in body["message"]


def test_mode_kb_accepts_only_bedrock(local):
    seen = {}

    def managed(**kwargs):
        seen.update(kwargs)
        return ManagedAnswer(text="A.[1]", citations=[{"n": 1, "source": "s", "score": None, "excerpt": "e"}], model="amazon.nova-lite-v1:0")

    local(FakeGenerator("extractive"), FakeGenerator("bedrock"), managed_rag=managed)
    status, body, _ = call({"question": "q?", "mode": "kb", "generator": "extractive"})
    assert status == 400 and body["field"] == "generator" and "mode 'kb'" in body["message"]
    status, body, _ = call({"question": "q?", "mode": "kb", "generator": "bedrock"})
    assert status == 200 and (body["generator"], body["model"], body["model_version"]) == ("bedrock", "amazon.nova-lite-v1:0", None)
    assert seen == {"question": "q?", "top_k": 5, "filters": {}, "max_tokens": 512, "temperature": 0.2}
    assert call({"question": "q?", "mode": "kb"})[1]["generator"] == "bedrock"  # the default does not apply to kb


def test_health_lists_every_generator_and_the_resolved_default(local):
    local(FakeGenerator("extractive", available=False, reason="no index"), FakeGenerator("llm"), FakeGenerator("bedrock"))
    status, body, _ = call(method="GET", resource="/health")
    assert status == 200 and body["status"] == "ok" and body["default_generator"] == "llm"
    assert body["generators"]["extractive"] == {"available": False, "model": "local:extractive", "version": None, "reason": "no index"}
    assert body["generators"]["llm"] == {"available": True, "model": "local:llm", "version": "1", "reason": None}
    assert list(body["generators"]) == ["extractive", "llm", "bedrock"]
    assert body["modes"] == ["rag", "prompt"] and body["default_retriever"] == "kb"


def test_health_reports_no_default_when_the_configured_one_is_unavailable(local):
    local(FakeGenerator("extractive"), FakeGenerator("bedrock", available=False, reason="no credentials"), default_generator="bedrock")
    assert call(method="GET", resource="/health")[1]["default_generator"] is None


def test_a_default_the_backend_does_not_know_is_a_500_not_a_400(local):
    local(FakeGenerator("extractive"), default_generator="finetuned")
    status, body, _ = call({"question": "q?"})
    assert status == 500 and "finetuned" not in body["message"]


def test_local_settings_have_the_configs_defaults():
    """Settings.local() and ServingConfig must agree on every request default they share."""
    local_settings, config = Settings.local(), ServingConfig()
    shared = ("max_question_chars", "default_top_k", "max_top_k", "default_retriever", "max_new_tokens", "temperature")
    assert {name: getattr(local_settings, name) for name in shared} == {name: getattr(config, name) for name in shared}
    assert local_settings.filterable_fields == ("category", "collection")  # the eval set's default filter fields
    assert local_settings.region is None and local_settings.knowledge_base_id is None


def test_local_settings_take_overrides_and_reject_unknown_or_inconsistent_ones():
    s = Settings.local(filterable_fields="category, lang", max_top_k=3, default_top_k=3)
    assert s.filterable_fields == ("category", "lang") and s.max_top_k == 3
    with pytest.raises(SettingsError, match="unknown setting 'top_k'"):
        Settings.local(top_k=3)
    with pytest.raises(SettingsError, match="default_top_k"):
        Settings.local(max_top_k=4)  # default_top_k 5 > max_top_k 4
    with pytest.raises(SettingsError, match="default_retriever"):
        Settings.local(default_retriever="bm25")
    assert dataclasses.is_dataclass(s) and dataclasses.fields(GeneratorStatus)[5].name == "context_tokens"


def test_the_handler_passes_the_request_to_the_retriever_as_keywords(local):
    seen = {}

    def recording(**kwargs):
        seen.update(kwargs)
        return []

    handler.configure(settings=Settings.local(), backend=Backend(retrievers={"kb": recording}, generators={"x": FakeGenerator("x")}))
    status, body, _ = call({"question": "q?", "top_k": 2, "filters": {"category": ["a", "b"]}})
    assert status == 200 and seen == {"question": "q?", "top_k": 2, "filters": {"category": ["a", "b"]}}
    assert json.dumps(body["citations"]) == "[]"


# --- request limits at their boundaries (each pair: the limit is accepted, one more is a 400) ---


@pytest.mark.parametrize(
    "accepted, rejected, field",
    [
        ({"question": "q" * 200}, {"question": "q" * 201}, "question"),
        ({"question": "  " + "q" * 200 + "  "}, {"question": "q" * 201}, "question"),  # the limit counts the stripped question
        ({"question": "q", "top_k": 10}, {"question": "q", "top_k": 11}, "top_k"),
        ({"question": "q", "top_k": 1}, {"question": "q", "top_k": 0}, "top_k"),
        ({"question": "q", "filters": {"category": ["v"] * 20}}, {"question": "q", "filters": {"category": ["v"] * 21}}, "filters.category"),
        ({"question": "q", "filters": {"category": "v" * 256}}, {"question": "q", "filters": {"category": "v" * 257}}, "filters.category"),
        ({"question": "q", "filters": {"category": 2**53}}, {"question": "q", "filters": {"category": 2**53 + 1}}, "filters.category"),
        ({"question": "q", "filters": {"category": -(2**53)}}, {"question": "q", "filters": {"category": -(2**53) - 1}}, "filters.category"),
    ],
)
def test_request_limits_accept_the_limit_and_reject_one_more(local, accepted, rejected, field):
    local(FakeGenerator("x"), max_question_chars=200, max_top_k=10, default_top_k=3, filterable_fields=("category",))
    assert call(accepted)[0] == 200
    status, body, _ = call(rejected)
    assert status == 400 and body["field"] == field


def test_mode_kb_accepts_1000_characters_and_rejects_1001(local):
    local(FakeGenerator("bedrock"), managed_rag=lambda **kw: ManagedAnswer(text="A.", citations=[], model="m"), max_question_chars=5000)
    assert call({"question": "q" * 1000, "mode": "kb"})[0] == 200
    status, body, _ = call({"question": "q" * 1001, "mode": "kb"})
    assert status == 400 and body["field"] == "question"


def test_the_body_may_be_64_kib_and_not_one_byte_more(local):
    local(FakeGenerator("x"), max_question_chars=70_000)
    from query.request import MAX_BODY_BYTES

    assert MAX_BODY_BYTES == 64 * 1024
    frame = json.dumps({"question": ""})
    fits = json.dumps({"question": "q" * (MAX_BODY_BYTES - len(frame))})
    assert len(fits) == MAX_BODY_BYTES and call(raw=fits)[0] == 200
    status, body, _ = call(raw=fits[:-2] + "q\"}")
    assert status == 400 and body["field"] == "body"
