"""Keeps the store in step with the documents folder, re-indexing only files whose content changed.

A document is re-chunked and re-embedded when the SHA-256 of its bytes and its metadata file
differs from the stored one; documents that disappeared are removed; the rest is not touched.
A document that cannot be read is reported and skipped (like a failed document in a knowledge
base sync), and the others are indexed.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import chunking, documents
from . import text as textlib
from .embedding import Embedder
from .store import Index, Store, sentence_key

ANALYZER_VERSION = "terms-bigram-1;sentences-2;tokens-7;chunker-2;display-2"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ChunkSettings:
    max_tokens: int
    overlap_percentage: int


def fingerprint(embedder: Embedder, settings: ChunkSettings) -> str:
    parts = (embedder.version, str(settings.max_tokens), str(settings.overlap_percentage), ANALYZER_VERSION)
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    chunks_embedded: int = 0
    sentences_embedded: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        parts = [f"{len(self.added)} added", f"{len(self.updated)} updated", f"{len(self.removed)} removed", f"{self.unchanged} unchanged"]
        line = f"index: {', '.join(parts)}; {self.chunks_embedded} chunks and {self.sentences_embedded} sentences embedded in {self.seconds:.1f} s"
        for _, message in self.failed:
            line += f"\nskipped {message}"
        if self.unsupported:
            line += f"\nnot indexed (unsupported type): {', '.join(self.unsupported[:10])}" + (" ..." if len(self.unsupported) > 10 else "")
        return line


@dataclass
class _Pending:
    source: documents.SourceFile
    sha256: str
    document: documents.Document
    chunks: list[chunking.Chunk]
    sentence_texts: dict[str, str]  # key -> display text


def sync(folder: Path, store: Store, embedder: Embedder, settings: ChunkSettings, progress: Progress | None = None) -> SyncReport:
    started = time.perf_counter()
    report = SyncReport()
    sources, report.unsupported = documents.discover(folder)
    stored = store.hashes()
    pending: list[_Pending] = []
    for source in sources:
        sha256 = source.fingerprint()
        if stored.get(source.doc_id) == sha256:
            report.unchanged += 1
            continue
        try:
            document = documents.read(source)
        except documents.DocumentError as error:
            report.failed.append((source.doc_id, str(error)))
            continue
        chunks = chunking.chunk(document.text, max_tokens=settings.max_tokens, overlap_percentage=settings.overlap_percentage)
        pending.append(_Pending(source, sha256, document, chunks, _sentence_texts(chunks)))
        (report.updated if source.doc_id in stored else report.added).append(source.doc_id)
    present = {s.doc_id for s in sources}
    for doc_id in sorted(set(stored) - present):
        store.remove(doc_id)
        report.removed.append(doc_id)

    texts = [c.text for p in pending for c in p.chunks] + [t for p in pending for t in p.sentence_texts.values()]
    if texts and progress:
        progress(f"embedding {sum(len(p.chunks) for p in pending)} chunks of {len(pending)} documents (and their sentences)")
    last_report = [time.perf_counter()]

    def on_batch(done: int, total: int) -> None:
        if progress and (done == total or time.perf_counter() - last_report[0] > 2.0):
            last_report[0] = time.perf_counter()
            progress(f"  {done}/{total} texts embedded")

    vectors = embedder.embed(texts, progress=on_batch) if texts else ()  # nothing to embed: the model is not even loaded
    chunk_offset, sentence_offset = 0, sum(len(p.chunks) for p in pending)
    for p in pending:
        chunk_vectors = vectors[chunk_offset : chunk_offset + len(p.chunks)]
        keys = list(p.sentence_texts)
        sentence_vectors = dict(zip(keys, vectors[sentence_offset : sentence_offset + len(keys)]))
        store.replace(p.source.doc_id, p.sha256, p.document.metadata, p.chunks, chunk_vectors, sentence_vectors)
        chunk_offset += len(p.chunks)
        sentence_offset += len(keys)
        report.chunks_embedded += len(p.chunks)
        report.sentences_embedded += len(keys)
    report.seconds = time.perf_counter() - started
    return report


def _sentence_texts(chunks: list[chunking.Chunk]) -> dict[str, str]:
    """The answer candidates of a document's chunks (headings excluded), one per distinct text."""
    out: dict[str, str] = {}
    for chunk in chunks:
        for sentence in textlib.sentences(chunk.text):
            if sentence.heading:
                continue
            raw = chunk.text[sentence.start : sentence.end]
            out.setdefault(sentence_key(raw), textlib.display(raw))
    return out


def open_index(folder: Path, cache_dir: Path, embedder: Embedder, settings: ChunkSettings, progress: Progress | None = None) -> tuple[Index, SyncReport]:
    """Syncs the folder's index under `cache_dir` and loads it (one index file per folder)."""
    folder = folder.resolve()
    name = hashlib.sha256(str(folder).encode()).hexdigest()[:12]
    store = Store(cache_dir / f"index-{name}.sqlite", fingerprint(embedder, settings))
    try:
        report = sync(folder, store, embedder, settings, progress)
        return store.load(), report
    finally:
        store.close()
