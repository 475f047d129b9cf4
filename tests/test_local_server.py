"""Local mode end to end: the HTTP server on a free port, the query handler's own code behind it.

One server per module, over the shipped sample corpus (the index is built once per run, see
tests/local_support.py). Questions are real; the checks hold for any corpus that still contains
the documents they name (model_artifacts/eval/README.md), and one check derives its question from the corpus itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from local import app, extractive, generators
from local import text as textlib
from local.server import LocalServer, to_event
from tests.local_support import ROOT, SAMPLE_DOCUMENTS, real_embedder, sample_cache_dir

NO_AWS = {
    "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None, "AWS_PROFILE": None,
    "AWS_DEFAULT_PROFILE": None, "AWS_REGION": None, "AWS_DEFAULT_REGION": None,
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials", "AWS_CONFIG_FILE": "/nonexistent/config",
    "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": None, "AWS_CONTAINER_CREDENTIALS_FULL_URI": None,
}


@pytest.fixture(scope="module")
def no_aws():
    with pytest.MonkeyPatch.context() as patch:
        for name, value in NO_AWS.items():
            if value is None:
                patch.delenv(name, raising=False)
            else:
                patch.setenv(name, value)
        from shared import aws_clients

        patch.setattr(aws_clients, "_session", None)  # a session made with other settings must not leak in
        yield


@pytest.fixture(scope="module")
def mode(no_aws):
    local_mode = app.LocalMode(app.LocalConfig(documents=SAMPLE_DOCUMENTS, cache_dir=sample_cache_dir()), embedder=real_embedder())
    local_mode.sync()
    return local_mode


@pytest.fixture(scope="module")
def server(mode):
    with LocalServer(mode, 0, log=None) as running:
        yield running


def call(server, method: str, path: str, body=None, raw: bytes | None = None, headers=None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(server.url + path, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def ask(server, question: str, **fields):
    status, _, body = call(server, "POST", "/v1/query", {"question": question, **fields})
    assert status == 200, body
    return body


def _require(mode, doc_id: str) -> None:
    if doc_id not in mode.index().doc_ids:
        pytest.skip(f"{doc_id} is no longer in the sample corpus")


# --- questions about the shipped documents ---


@pytest.mark.parametrize("retriever", ["kb", "opensearch"])
@pytest.mark.parametrize(
    "question,document,words",
    [
        ("How long are deleted documents kept?", "document-lifecycle.md", ["30 days"]),
        ("How do I roll back a model?", "model-serving.md", ["previous version"]),
        ("What happens when two syncs overlap?", "ingestion-runbook.md", ["conflict"]),
    ],
)
def test_a_question_about_a_shipped_document_retrieves_and_cites_it(server, mode, retriever, question, document, words):
    _require(mode, document)
    body = ask(server, question, retriever=retriever)
    assert body["generator"] == "extractive" and body["model"] == "local:extractive" and body["mode"] == "rag"
    assert body["citations"] and body["citations"][0]["source"] == document
    for word in words:
        assert word in body["answer"]
    cited = textlib.terms(body["answer"])
    assert "[1]" in body["answer"] and cited  # the answer carries the [n] marker of what it cites
    assert set(body["timings_ms"]) == {"retrieve", "generate", "total"} and body["usage"] == {"input_tokens": None, "output_tokens": None}


def test_every_answer_sentence_is_from_a_cited_passage(server, mode):
    _require(mode, "ingestion-runbook.md")
    body = ask(server, "What happens when two syncs overlap?", top_k=3)
    excerpts = {c["n"]: c for c in body["citations"]}
    for sentence, n in _cited_sentences(body["answer"]):
        assert n in excerpts
        source = (SAMPLE_DOCUMENTS / excerpts[n]["source"]).read_text()
        assert " ".join(sentence.split()) in " ".join(textlib.display(source).split())


def _cited_sentences(answer: str):
    import re

    return [(m.group(1).strip(), int(m.group(2))) for m in re.finditer(r"(.+?)\s\[(\d+)\]", answer)]


def test_a_question_taken_from_any_document_finds_that_document(server, mode):
    """Corpus-independent: each document's first sentence, asked as a question, retrieves it."""
    index = mode.index()
    checked = 0
    for doc_id in index.doc_ids[:8]:
        text = (SAMPLE_DOCUMENTS / doc_id).read_text(encoding="utf-8")
        first = next((s for s in textlib.sentences(text) if not s.heading and len(textlib.terms(text[s.start : s.end])) >= 6), None)
        if first is None:
            continue
        body = ask(server, textlib.display(text[first.start : first.end]), retriever="opensearch")
        assert body["citations"][0]["source"] == doc_id
        checked += 1
    assert checked


def test_filters_restrict_the_cited_documents(server, mode):
    index = mode.index()
    categories = {m.get("category") for m in index.doc_metadata} - {None}
    if len(categories) < 2:
        pytest.skip("the sample corpus needs two categories")
    category = sorted(categories)[0]
    allowed = {d for d, m in zip(index.doc_ids, index.doc_metadata) if m.get("category") == category}
    for retriever in ("kb", "opensearch"):
        body = ask(server, "How long are deleted documents kept?", retriever=retriever, filters={"category": category})
        assert {c["source"] for c in body["citations"]} <= allowed


def test_an_unanswerable_question_gets_i_dont_know_and_no_citations(server):
    for retriever in ("kb", "opensearch"):
        body = ask(server, "What is the capital of France?", retriever=retriever)
        assert body["answer"] == extractive.IDK and body["citations"] == []


def test_mode_prompt_with_the_extractive_generator_says_it_has_no_sources(server):
    body = ask(server, "How long are deleted documents kept?", mode="prompt")
    assert body["answer"] == generators.NO_SOURCES and body["citations"] == [] and body["timings_ms"]["retrieve"] == 0.0


def test_answers_are_deterministic(server):
    first = ask(server, "How do I roll back a model?")
    second = ask(server, "How do I roll back a model?")
    assert (first["answer"], first["citations"]) == (second["answer"], second["citations"])


# --- the deployed API's contract, served locally ---


def test_health_reports_the_local_generators(server):
    status, headers, body = call(server, "GET", "/v1/health")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert body["status"] == "ok" and body["default_generator"] == "extractive"
    assert list(body["generators"]) == ["extractive", "llm", "bedrock"]
    assert body["generators"]["extractive"] == {"available": True, "model": "local:extractive", "version": None, "reason": None}
    bedrock = body["generators"]["bedrock"]
    assert bedrock["available"] is False and "AWS credentials" in bedrock["reason"]
    llm = body["generators"]["llm"]
    assert llm["available"] or "make local-llm" in llm["reason"]
    assert "kb" not in body["modes"]


def test_mode_kb_answers_400_saying_it_needs_a_deployed_stage(server):
    status, headers, body = call(server, "POST", "/v1/query", {"question": "How long are deleted documents kept?", "mode": "kb"})
    assert status == 400 and body["field"] == "mode" and "needs a deployed stage" in body["message"]
    assert body["request_id"] == headers["X-Request-Id"]


def test_validation_and_errors_are_the_handlers(server):
    status, _, body = call(server, "POST", "/v1/query", {"question": "x", "generator": "finetuned"})
    assert status == 400 and body["field"] == "generator" and "extractive, llm, bedrock" in body["message"]
    status, _, body = call(server, "POST", "/v1/query", {"question": "x", "filters": {"owner": "me"}})
    assert status == 400 and body["field"] == "filters.owner"
    status, _, body = call(server, "POST", "/v1/query", raw=b"{not json")
    assert status == 400 and body["field"] == "body"
    status, _, body = call(server, "POST", "/v1/query", raw=b"\xff\xfe")
    assert status == 400 and body["field"] == "body"  # not UTF-8: passed on base64-encoded, refused by the handler
    status, _, body = call(server, "GET", "/v1/nowhere")
    assert status == 404 and "POST /query" in body["message"]


def test_an_unavailable_generator_is_a_503_with_retry_after_and_the_reason(server):
    status, headers, body = call(server, "POST", "/v1/query", {"question": "How long are deleted documents kept?", "generator": "bedrock"})
    assert status == 503 and "AWS credentials" in body["message"] and int(headers["Retry-After"]) > 0


def test_oversized_bodies_are_refused_before_reading(server):
    import http.client
    from urllib.parse import urlsplit

    address = urlsplit(server.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    connection.putrequest("POST", "/v1/query")
    connection.putheader("Content-Length", str(2 * 1024 * 1024))  # announced, never sent
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and "larger than" in json.loads(response.read())["message"]
    connection.close()


def test_the_unprefixed_paths_serve_too(server):
    assert call(server, "GET", "/health")[0] == 200
    assert call(server, "POST", "/query", {"question": "How do I roll back a model?"})[0] == 200


def test_events_look_like_api_gateway_proxy_events():
    event = to_event("POST", "/v1/query?x=1", {"Content-Type": "application/json"}, b'{"question": "q"}', "rid", "127.0.0.1")
    assert (event["httpMethod"], event["resource"], event["path"], event["body"], event["isBase64Encoded"]) == (
        "POST", "/query", "/v1/query", '{"question": "q"}', False
    )
    assert event["requestContext"]["requestId"] == "rid" and event["queryStringParameters"] == {"x": "1"}


def test_ask_script_works_against_the_local_server_without_signing(server, mode):
    _require(mode, "document-lifecycle.md")
    env = {key: value for key, value in __import__("os").environ.items() if not key.startswith("AWS_")}
    # ask.py may still sign every request (older versions did): give it throwaway keys,
    # which the local server ignores; after that change it sends local URLs unsigned.
    env.update(AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local", AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "ask.py"), "--url", server.url, "How long are deleted documents kept?"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "30 days" in result.stdout and "document-lifecycle.md" in result.stdout


# --- generators on their own ---


def test_llm_status_says_how_to_get_it_when_missing(monkeypatch):
    monkeypatch.setattr(generators.LlamaGenerator, "model_path", staticmethod(lambda: None))
    status = generators.LlamaGenerator().status()
    assert not status.available and "make local-llm" in status.reason


def test_bedrock_generator_reuses_the_query_lambdas(monkeypatch, no_aws):
    from query import aws_backend, prompts
    from shared.endpoint_codec import Generation

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    from shared import aws_clients

    monkeypatch.setattr(aws_clients, "_session", None)
    seen = {}

    def fake_generate(self, prompt, *, question, passages, max_tokens, temperature):
        seen.update(model=self.settings.bedrock_model_arn, region=self.settings.region, max_tokens=max_tokens)
        return Generation("answer [1]", 10, 2)

    monkeypatch.setattr(aws_backend.BedrockGenerator, "generate", fake_generate)
    generator = generators.BedrockGenerator("amazon.nova-lite-v1:0")
    status = generator.status()
    assert status.available and status.model == "amazon.nova-lite-v1:0" and status.context_tokens == 300_000
    result = generator.generate(prompts.baseline_prompt("q"), question="q", passages=[], max_tokens=64, temperature=0.2)
    assert result.text == "answer [1]" and seen == {"model": "amazon.nova-lite-v1:0", "region": "us-west-2", "max_tokens": 64}


def test_llm_generator_reads_the_rag_prompt_when_installed():
    from query import prompts

    generator = generators.LlamaGenerator()
    status = generator.status()
    if not status.available:
        pytest.skip(status.reason)  # `make local-llm` installs it; the default suite does not
    passages = [prompts.Passage(1, "The bucket keeps noncurrent versions for 30 days.", "lifecycle.md", 1.0)]
    question = "How long are deleted documents kept?"
    result = generator.generate(prompts.rag_prompt(question, passages), question=question, passages=passages, max_tokens=8, temperature=0.0)
    assert result.text and result.input_tokens > 50 and 0 < result.output_tokens <= 8
    assert status.model == "local:SmolLM2-135M-Instruct.Q4_1" and status.context_tokens == generators.LLM_CONTEXT_TOKENS


def test_extractive_abstains_when_nothing_is_retrieved():
    from query import prompts

    generator = generators.ExtractiveGenerator(lambda: None, real_embedder())
    result = generator.generate(prompts.rag_prompt("q", []), question="q", passages=[], max_tokens=64, temperature=0.0)
    assert result.text == extractive.IDK


def test_compose_picks_follower_and_runner_up_sentences():
    def scored(n, order, text, score, lexical=0.5):
        return extractive.Scored(extractive.Candidate(n, order, text, f"k{order}", frozenset()), score, lexical, score)

    ranked = [scored(1, 0, "Best.", 0.8), scored(2, 5, "Close second.", 0.7), scored(1, 1, "Follows best.", 0.5), scored(3, 9, "Far.", 0.4)]
    assert extractive.compose(ranked, max_tokens=100) == "Best. [1] Follows best. [1] Close second. [2]"
    assert extractive.compose([scored(1, 0, "Weak.", extractive.MIN_SCORE - 0.01)], max_tokens=100) == extractive.IDK
    assert extractive.compose([], max_tokens=100) == extractive.IDK
    no_overlap = [scored(1, 0, "Best.", 0.8), scored(2, 3, "Similar but shares no term.", 0.79, lexical=0.0)]
    assert extractive.compose(no_overlap, max_tokens=100) == "Best. [1]"


def test_a_stage_config_shapes_local_mode():
    import json as _json

    from stacks.config import load_config

    stages = load_config(_json.loads((ROOT / "cdk.json").read_text())["context"]).stages
    name = sorted(stages)[0]
    config = app.LocalConfig.for_stage(name, documents=SAMPLE_DOCUMENTS)
    stage = stages[name]
    assert config.chunks == app.ChunkSettings(stage.knowledge_base.chunk_max_tokens, stage.knowledge_base.chunk_overlap_percentage)
    assert config.vector_weight == stage.search.hybrid_vector_weight and config.bedrock_model_id == stage.serving.bedrock_model_id
    settings = config.settings()
    assert settings.filterable_fields == tuple(stage.search.filterable_fields) and settings.max_top_k == stage.serving.max_top_k
    with pytest.raises(app.LocalConfigError, match="not a stage in cdk.json"):
        app.LocalConfig.for_stage("no-such-stage")
    with pytest.raises(app.LocalConfigError, match="not a folder of documents"):
        app.env_config(documents=str(ROOT / "no-such-folder"))
