"""Shared pieces of the local-mode tests: one real embedder and one sample-corpus index per run.

Loading the encoder (~1 s) and indexing the sample corpus happen once, on first use, whichever
local test module asks first; `FakeEmbedder` stands in where the model's quality does not matter.
"""

from __future__ import annotations

import functools
import hashlib
import tempfile
from pathlib import Path

import numpy as np

from local import embedding, indexer

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DOCUMENTS = ROOT / "model_artifacts" / "sample_documents"
DEFAULT_CHUNKS = indexer.ChunkSettings(max_tokens=300, overlap_percentage=20)


@functools.cache
def real_embedder() -> embedding.Embedder:
    return embedding.Embedder()


@functools.cache
def sample_cache_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="local-test-cache-"))


@functools.cache
def sample_index():
    index, _ = indexer.open_index(SAMPLE_DOCUMENTS, sample_cache_dir(), real_embedder(), DEFAULT_CHUNKS)
    return index


class FakeEmbedder:
    """Deterministic bag-of-terms vectors (hashed into 512 dims): texts sharing words are close.
    Counts what it embeds, so tests can tell what an indexing run re-embedded."""

    version = "fake:1"

    def __init__(self) -> None:
        self.embedded: list[str] = []
        self.embed_calls = 0
        self.loaded = False

    def load(self) -> None:
        self.loaded = True

    def _vector(self, text: str) -> np.ndarray:
        from local import text as textlib

        vector = np.zeros(embedding.DIMENSIONS, dtype=np.float32)
        for term in textlib.terms(text) or ["<empty>"]:
            vector[int(hashlib.md5(term.encode()).hexdigest(), 16) % embedding.DIMENSIONS] += 1.0
        return vector / np.linalg.norm(vector)

    def embed(self, texts, progress=None) -> np.ndarray:
        self.embed_calls += 1
        self.embedded.extend(texts)
        if progress:
            progress(len(texts), len(texts))
        return np.stack([self._vector(t) for t in texts]) if texts else np.zeros((0, embedding.DIMENSIONS), np.float32)

    def embed_one(self, text: str) -> np.ndarray:
        return self._vector(text)

    embed_query = embed_one
