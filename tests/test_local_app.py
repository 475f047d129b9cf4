"""Local mode's configuration: a stage's values from cdk.json, the environment, and the passages
the two retrievers hand the generators (fast: a tiny folder and the FakeEmbedder)."""

from __future__ import annotations

import json

import pytest

from local import app
from stacks import config as stack_config
from tests.local_support import ROOT, FakeEmbedder


@pytest.fixture
def cdk_json(tmp_path, monkeypatch):
    """A copy of the project's cdk.json whose stages a test rewrites; local mode reads it."""
    context = json.loads((ROOT / "cdk.json").read_text())

    def write(stages):
        (tmp_path / "cdk.json").write_text(json.dumps({**context, "context": {**context["context"], "stages": stages}}))

    monkeypatch.setattr(app, "ROOT", tmp_path)
    return write


def test_a_stage_shapes_chunks_search_and_every_request_setting(cdk_json):
    cdk_json({"custom": {
        "knowledge_base": {"chunk_max_tokens": 200, "chunk_overlap_percentage": 10},
        "search": {"hybrid_vector_weight": 0.6, "filterable_fields": ["category", "team"]},
        "serving": {"bedrock_model_id": "amazon.nova-pro-v1:0", "default_top_k": 3, "max_top_k": 7, "max_question_chars": 500,
                    "max_new_tokens": 100, "temperature": 0.5, "default_retriever": "opensearch", "default_generator": "bedrock"},
    }})
    config = app.LocalConfig.for_stage("custom", documents=ROOT / "docs")
    assert (config.documents, config.cache_dir) == (ROOT / "docs", app.DEFAULT_CACHE)
    assert config.chunks == app.ChunkSettings(200, 10) and config.vector_weight == 0.6
    assert config.bedrock_model_id == "amazon.nova-pro-v1:0"
    settings = config.settings()
    assert (settings.default_top_k, settings.max_top_k, settings.max_question_chars, settings.max_new_tokens, settings.temperature,
            settings.default_retriever, settings.default_generator, settings.filterable_fields) == (
        3, 7, 500, 100, 0.5, "opensearch", "bedrock", ("category", "team"))


@pytest.mark.parametrize("deployed", ["auto", "finetuned", "base"])
def test_a_deployed_only_default_generator_means_auto_locally(cdk_json, deployed):
    cdk_json({"custom": {"serving": {"default_generator": deployed}}})
    assert app.LocalConfig.for_stage("custom").settings().default_generator == "auto"


def test_a_bad_cdk_json_is_one_line(cdk_json):
    cdk_json({"custom": {"search": {"hybrid_vector_weight": 7}}})
    with pytest.raises(app.LocalConfigError, match=r"^cdk\.json: .*hybrid_vector_weight"):
        app.LocalConfig.for_stage("custom")
    cdk_json({"bstage": {}, "astage": {}})
    with pytest.raises(app.LocalConfigError, match=r"^--stage c: not a stage in cdk\.json \(stages: astage, bstage\)$"):
        app.LocalConfig.for_stage("c")


def test_without_a_stage_the_project_defaults_apply():
    config = app.LocalConfig.for_stage(None, cache_dir=ROOT / "c")
    defaults = stack_config.KnowledgeBaseConfig()
    assert config.chunks == app.ChunkSettings(defaults.chunk_max_tokens, defaults.chunk_overlap_percentage)
    assert config.vector_weight == stack_config.SearchConfig().hybrid_vector_weight and config.cache_dir == ROOT / "c"
    assert config.documents == app.DEFAULT_DOCUMENTS and config.settings().default_generator == "auto"


def test_the_environment_names_the_folder_and_the_cache(tmp_path, monkeypatch):
    (tmp_path / "docs").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("LOCAL_DOCUMENTS", "~/docs")
    monkeypatch.setenv("LOCAL_CACHE_DIR", "~/cache")
    config = app.env_config()
    assert (config.documents, config.cache_dir) == (tmp_path / "docs", tmp_path / "cache")
    assert app.env_config(documents=str(ROOT)).documents == ROOT  # the option wins
    monkeypatch.delenv("LOCAL_DOCUMENTS")
    monkeypatch.delenv("LOCAL_CACHE_DIR")
    config = app.env_config(stage="dev")
    assert (config.documents, config.cache_dir) == (app.DEFAULT_DOCUMENTS, app.DEFAULT_CACHE)
    assert config.settings_overrides  # the stage was read


def test_retrievers_number_passages_and_round_their_scores(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "keys.md").write_text("KMS rotates the key material every year.")
    (folder / "logs.md").write_text("Audit logs are kept for a year.")
    embedder = FakeEmbedder()
    mode = app.LocalMode(app.LocalConfig(documents=folder, cache_dir=tmp_path / "cache", vector_weight=0.25), embedder=embedder)
    assert embedder.embedded == []  # nothing is indexed before the first question
    question = "how often is the key material rotated"
    for retriever in (mode.retrievers.kb, mode.retrievers.opensearch):
        passages = retriever(question=question, top_k=2, filters={})
        assert [(p.n, p.source) for p in passages] == [(1, "keys.md"), (2, "logs.md")]
        assert passages[0].text == "KMS rotates the key material every year."
        assert all(p.score == round(p.score, 4) for p in passages) and any(p.score != round(p.score, 3) for p in passages)
    index = mode.index()
    vector = embedder.embed_query(question)
    hybrid = index.hybrid(vector, question.split(), 2, {}, vector_weight=0.25)
    assert [p.score for p in mode.retrievers.opensearch(question=question, top_k=2, filters={})] == [round(h.score, 4) for h in hybrid]
    assert mode.index() is index  # indexed once


def test_sync_reports_progress_and_swaps_the_index(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("First document text.")
    mode = app.LocalMode(app.LocalConfig(documents=folder, cache_dir=tmp_path / "cache"), embedder=FakeEmbedder())
    first = mode.index()
    (folder / "b.md").write_text("Second document text.")
    messages = []
    report = mode.sync(messages.append)
    assert report.added == ["b.md"] and messages and messages[0].startswith("embedding 1 chunks of 1 documents")
    assert mode.index() is not first and sorted(mode.index().doc_ids) == ["a.md", "b.md"]
