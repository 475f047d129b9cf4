"""The embedded store: one SQLite file on disk, numpy arrays in memory.

Persistence (`Store`): SQLite from the standard library holds the documents (id, content hash,
metadata), their chunks with float32 vectors, and the vectors of the chunks' sentences (for the
extractive answerer). Each document is replaced in one transaction, so an interrupted indexing
run leaves the previous state of that document, never half of it. A fingerprint of everything
that shapes the index (embedding model, chunk size and overlap, analyzer version) is stored too:
when it differs, the index is rebuilt from scratch.

Search (`Index`): a snapshot loaded into memory. Vector search is exact brute force (one matrix
product over all chunk vectors); BM25 runs on an inverted index of term postings built at load.
local/README.md has the measurements behind this choice (brute force against HNSW libraries,
SQLite FTS5 against the in-memory postings).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from . import documents, scoring
from . import text as textlib
from .chunking import Chunk
from .embedding import DIMENSIONS

SCHEMA_VERSION = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY, sha256 TEXT NOT NULL, metadata TEXT NOT NULL, chunks INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    doc_id TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE, seq INTEGER NOT NULL,
    start INTEGER NOT NULL, "end" INTEGER NOT NULL, text TEXT NOT NULL, vector BLOB NOT NULL,
    PRIMARY KEY (doc_id, seq));
CREATE TABLE IF NOT EXISTS sentences (
    doc_id TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE, hash TEXT NOT NULL,
    vector BLOB NOT NULL, PRIMARY KEY (doc_id, hash));
"""


def sentence_key(sentence: str) -> str:
    """The key of a sentence's vector: the same sentence text in any chunk shares one vector."""
    return hashlib.blake2b(textlib.display(sentence).encode("utf-8"), digest_size=12).hexdigest()


class Store:
    def __init__(self, path: Path, fingerprint: str):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.executescript(_SCHEMA)
        stored = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        self.rebuilt = stored.get("fingerprint") not in (None, fingerprint)
        if self.rebuilt:  # a different model, chunking or analyzer: nothing stored is reusable
            with self._db:
                self._db.execute("DELETE FROM documents")
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('fingerprint', ?)", (fingerprint,))

    def close(self) -> None:
        self._db.close()

    def hashes(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT doc_id, sha256 FROM documents").fetchall())

    def replace(
        self,
        doc_id: str,
        sha256: str,
        metadata: Mapping[str, Any],
        chunks: list[Chunk],
        chunk_vectors: np.ndarray,
        sentence_vectors: Mapping[str, np.ndarray],
    ) -> None:
        with self._db:
            self._db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))
            self._db.execute(
                "INSERT INTO documents VALUES (?, ?, ?, ?)", (doc_id, sha256, json.dumps(metadata, sort_keys=True), len(chunks))
            )
            self._db.executemany(
                "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?)",
                [(doc_id, c.seq, c.start, c.end, c.text, _blob(v)) for c, v in zip(chunks, chunk_vectors, strict=True)],
            )
            self._db.executemany(
                "INSERT INTO sentences VALUES (?, ?, ?)", [(doc_id, key, _blob(v)) for key, v in sentence_vectors.items()]
            )

    def remove(self, doc_id: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))

    def load(self) -> Index:
        docs = self._db.execute("SELECT doc_id, metadata FROM documents ORDER BY doc_id").fetchall()
        rows = self._db.execute("SELECT doc_id, text, vector FROM chunks ORDER BY doc_id, seq").fetchall()
        sentences = {key: np.frombuffer(blob, dtype=np.float32) for key, blob in self._db.execute("SELECT hash, vector FROM sentences")}
        return Index(
            doc_ids=[d for d, _ in docs],
            doc_metadata=[json.loads(m) for _, m in docs],
            chunk_docs=[r[0] for r in rows],
            chunk_texts=[r[1] for r in rows],
            vectors=np.stack([np.frombuffer(r[2], dtype=np.float32) for r in rows]) if rows else np.zeros((0, DIMENSIONS), np.float32),
            sentence_vectors=sentences,
        )


def _blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()


@dataclass(frozen=True)
class Hit:
    row: int  # chunk row in the index
    score: float


class Index:
    """An immutable in-memory snapshot of the store, searched by the retrievers."""

    def __init__(
        self,
        *,
        doc_ids: list[str],
        doc_metadata: list[dict[str, Any]],
        chunk_docs: list[str],
        chunk_texts: list[str],
        vectors: np.ndarray,
        sentence_vectors: dict[str, np.ndarray],
    ):
        self.doc_ids = doc_ids
        self.doc_metadata = doc_metadata
        position = {doc_id: i for i, doc_id in enumerate(doc_ids)}
        self.chunk_doc_ids = chunk_docs
        self.chunk_texts = chunk_texts
        self.chunk_doc = np.array([position[d] for d in chunk_docs], dtype=np.int64)
        self.vectors = vectors
        self.sentence_vectors = sentence_vectors
        self._keywords = [{field: documents.keywords(value) for field, value in m.items()} for m in doc_metadata]
        self._build_postings()

    def __len__(self) -> int:
        return len(self.chunk_texts)

    def _build_postings(self) -> None:
        rows: dict[str, list[int]] = defaultdict(list)
        freqs: dict[str, list[int]] = defaultdict(list)
        lengths = np.zeros(len(self.chunk_texts))
        for row, chunk_text in enumerate(self.chunk_texts):
            counts = Counter(textlib.terms(chunk_text))
            lengths[row] = sum(counts.values())
            for term, count in counts.items():
                rows[term].append(row)
                freqs[term].append(count)
        self.postings = {t: (np.array(rows[t]), np.array(freqs[t])) for t in rows}
        self.doc_len = lengths
        self.avg_len = float(lengths.mean()) if len(lengths) else 1.0  # all-empty chunks: 0, but no posting to divide

    # --- filters ---

    def mask(self, filters: Mapping[str, Any]) -> np.ndarray | None:
        """Chunks whose document matches every filter (a list value matches any of its items);
        None when there are no filters. Values compare as keyword text, like the index's
        `keyword` fields: 2024 matches "2024", a list attribute matches if any item does."""
        if not filters:
            return None
        wanted = {field: documents.keywords(value) for field, value in filters.items()}
        allowed_docs = [all(keywords.get(field, frozenset()) & words for field, words in wanted.items()) for keywords in self._keywords]
        return np.array(allowed_docs, dtype=bool)[self.chunk_doc]

    # --- the two sub-queries ---

    def vector_hits(self, query_vector: np.ndarray, top_k: int, mask: np.ndarray | None = None) -> list[Hit]:
        """Exact k-NN: the top_k chunks by the l2 space's score (ties: index order)."""
        return _top(scoring.knn_score(self.vectors @ query_vector), top_k, mask)

    def bm25_scores(self, query_terms: Iterable[str]) -> np.ndarray:
        scores = np.zeros(len(self))
        for term in set(query_terms):
            posting = self.postings.get(term)
            if posting is None:
                continue
            rows, tf = posting
            idf = scoring.bm25_idf(len(self), len(rows))
            scores[rows] += scoring.bm25_term_scores(tf, self.doc_len[rows], self.avg_len, idf)
        return scores

    def bm25_hits(self, query_terms: Iterable[str], top_k: int, mask: np.ndarray | None = None) -> list[Hit]:
        """BM25 over the chunk texts: the top_k chunks with at least one query term."""
        return _top(self.bm25_scores(query_terms), top_k, mask)

    def idf(self, term: str) -> float:
        posting = self.postings.get(term)
        return float(scoring.bm25_idf(max(len(self), 1), 0 if posting is None else len(posting[0])))

    # --- what the retrievers call ---

    def semantic(self, query_vector: np.ndarray, top_k: int, filters: Mapping[str, Any]) -> list[Hit]:
        return self.vector_hits(query_vector, top_k, self.mask(filters))

    def hybrid(self, query_vector: np.ndarray, query_terms: list[str], top_k: int, filters: Mapping[str, Any], *, vector_weight: float) -> list[Hit]:
        """The hybrid query: each sub-query's top_k hits, normalised and combined like the pipeline."""
        mask = self.mask(filters)
        lexical = {h.row: h.score for h in self.bm25_hits(query_terms, top_k, mask)}
        vector = {h.row: h.score for h in self.vector_hits(query_vector, top_k, mask)}
        combined = scoring.combine(lexical, vector, vector_weight=vector_weight)
        ranked = sorted(combined.items(), key=lambda item: (-item[1], item[0]))
        return [Hit(row, score) for row, score in ranked[:top_k]]


def _top(scores: np.ndarray, top_k: int, mask: np.ndarray | None) -> list[Hit]:
    """The top_k rows by (score desc, row) among those in `mask` with a positive score: every
    k-NN score is (0.2 at least), a BM25 score is when a query term occurs."""
    candidates = np.flatnonzero(scores > 0 if mask is None else mask & (scores > 0))
    if len(candidates) > top_k:
        # a speed-up only: keep the rows scoring at least the top_k-th score, so that the sort
        # below handles top_k rows and their ties, not the whole index
        kth = -np.partition(-scores[candidates], top_k - 1)[top_k - 1]
        candidates = candidates[scores[candidates] >= kth]
    order = sorted(candidates.tolist(), key=lambda row: (-scores[row], row))[:top_k]
    return [Hit(row, float(scores[row])) for row in order]
