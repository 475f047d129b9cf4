"""Indexing runs: what is embedded (chunks and their distinct non-heading sentences, once), what
a run reports and when, and which index file a folder gets (fast: the FakeEmbedder)."""

from __future__ import annotations

import numpy as np

from local import indexer, store
from tests.fake_clock import FakeTime
from tests.local_support import DEFAULT_CHUNKS, FakeEmbedder


class BatchEmbedder(FakeEmbedder):
    """Embeds in batches of two, advancing a fake clock by `step` seconds a batch."""

    def __init__(self, clock: FakeTime, step: float):
        super().__init__()
        self.clock, self.step = clock, step

    def embed(self, texts, progress=None):
        for done in range(2, len(texts) + 2, 2):
            self.clock.now += self.step
            if progress:
                progress(min(done, len(texts)), len(texts))
        return super().embed(texts)


def _folder(tmp_path, **files):
    folder = tmp_path / "docs"
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_chunks_and_their_sentences_are_embedded_once_and_stored(tmp_path):
    text = "# Keys\n\nKMS rotates keys yearly. KMS rotates keys yearly.\n\n- **Audit** logs are kept."
    folder = _folder(tmp_path, **{"a.md": text, "b.md": "Short one. Audit logs are kept."})
    embedder = FakeEmbedder()
    index, report = indexer.open_index(folder, tmp_path / "cache", embedder, DEFAULT_CHUNKS)
    sentences = ["KMS rotates keys yearly.", "Audit logs are kept.", "Short one."]
    # every chunk first, then each document's distinct sentences (display text, headings left out)
    assert embedder.embedded == [text, "Short one. Audit logs are kept.", sentences[0], sentences[1], sentences[2], sentences[1]]
    assert (report.chunks_embedded, report.sentences_embedded) == (2, 4)
    for sentence in sentences:
        assert np.allclose(index.sentence_vectors[store.sentence_key(sentence)], embedder.embed_one(sentence))
    assert np.allclose(index.vectors, np.stack([embedder.embed_one(text), embedder.embed_one("Short one. Audit logs are kept.")]))
    assert report.seconds >= 0.0 and report.failed == [] and report.removed == []


def test_progress_reports_the_start_then_batches_at_most_every_two_seconds_and_the_end(tmp_path, monkeypatch):
    clock = FakeTime()
    clock.now = 100.0  # a perf_counter starts anywhere
    monkeypatch.setattr(indexer.time, "perf_counter", clock.clock)
    folder = _folder(tmp_path, **{f"d{i}.md": f"Document number {i} says something." for i in range(6)})  # 12 texts
    messages: list[str] = []
    _, report = indexer.open_index(folder, tmp_path / "cache", BatchEmbedder(clock, 1.0), DEFAULT_CHUNKS, messages.append)
    # batches end 1 to 6 s in: reported when more than 2 s passed since the last report, and at the end
    assert messages == ["embedding 6 chunks of 6 documents (and their sentences)", "  6/12 texts embedded", "  12/12 texts embedded"]
    assert report.seconds == 6.0
    messages.clear()
    indexer.open_index(folder, tmp_path / "cache", BatchEmbedder(clock, 1.0), DEFAULT_CHUNKS, messages.append)
    assert messages == []  # nothing to embed, nothing said


def test_a_later_empty_metadata_file_is_reported_and_the_indexed_document_kept(tmp_path):
    folder = _folder(tmp_path, **{"a.md": "Alpha text here."})
    indexer.open_index(folder, tmp_path / "cache", FakeEmbedder(), DEFAULT_CHUNKS)
    (folder / "a.md.metadata.json").write_text("")
    index, report = indexer.open_index(folder, tmp_path / "cache", FakeEmbedder(), DEFAULT_CHUNKS)
    assert [doc for doc, _ in report.failed] == ["a.md"] and "not valid JSON" in report.failed[0][1]
    assert report.unchanged == 0 and index.doc_ids == ["a.md"]


def test_each_folder_has_its_own_index_file_however_its_path_is_written(tmp_path, monkeypatch):
    one = _folder(tmp_path, **{"a.md": "Alpha text here."})
    other = tmp_path / "other"
    other.mkdir()
    (other / "b.md").write_text("Beta text here.")
    cache = tmp_path / "cache"
    indexer.open_index(one, cache, FakeEmbedder(), DEFAULT_CHUNKS)
    index, _ = indexer.open_index(other, cache, FakeEmbedder(), DEFAULT_CHUNKS)
    assert index.doc_ids == ["b.md"] and len(list(cache.glob("index-*.sqlite"))) == 2
    monkeypatch.chdir(tmp_path)
    again = FakeEmbedder()
    index, report = indexer.open_index(tmp_path / "docs" / ".." / "docs", cache, again, DEFAULT_CHUNKS)
    assert index.doc_ids == ["a.md"] and report.unchanged == 1 and again.embed_calls == 0  # nothing embedded: no model load


def test_an_empty_document_is_indexed_without_embedding_anything(tmp_path):
    folder = _folder(tmp_path, **{"empty.md": "  \n", "a.md": "Alpha text here."})
    indexer.open_index(folder, tmp_path / "cache", FakeEmbedder(), DEFAULT_CHUNKS)
    (folder / "a.md").unlink()
    (folder / "empty.md").write_text("\n\n")
    embedder = FakeEmbedder()
    index, report = indexer.open_index(folder, tmp_path / "cache", embedder, DEFAULT_CHUNKS)
    assert (report.updated, report.removed, embedder.embed_calls) == (["empty.md"], ["a.md"], 0)
    assert index.doc_ids == ["empty.md"] and len(index) == 0


def test_the_fingerprint_covers_the_model_the_chunking_and_the_analyzer(monkeypatch):
    base = indexer.fingerprint(FakeEmbedder(), indexer.ChunkSettings(300, 20))
    assert len(base) == 16 and base == indexer.fingerprint(FakeEmbedder(), indexer.ChunkSettings(300, 20))
    other_model = FakeEmbedder()
    other_model.version = "fake:2"
    variants = [indexer.fingerprint(FakeEmbedder(), indexer.ChunkSettings(301, 20)), indexer.fingerprint(FakeEmbedder(), indexer.ChunkSettings(300, 21)),
                indexer.fingerprint(other_model, indexer.ChunkSettings(300, 20))]
    monkeypatch.setattr(indexer, "ANALYZER_VERSION", indexer.ANALYZER_VERSION + "+")
    variants.append(indexer.fingerprint(FakeEmbedder(), indexer.ChunkSettings(300, 20)))
    assert len({base, *variants}) == 5
