"""Local mode's retrieval: text primitives, chunking, documents, score arithmetic, store, indexing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from local import chunking, documents, indexer, scoring, store
from local import text as textlib
from tests.local_support import DEFAULT_CHUNKS, FakeEmbedder, real_embedder, sample_index

# --- text ---


def test_token_count_follows_the_documented_rules():
    assert textlib.count_tokens("the") == 1  # a short word: one token
    assert textlib.count_tokens("encryption") == 2  # ceil(10 / 7)
    assert textlib.count_tokens("internationalization") == 3  # ceil(20 / 7)
    assert textlib.count_tokens("2026") == 2  # ceil(4 / 3)
    assert textlib.count_tokens("a, b.") == 4  # words and punctuation
    assert textlib.count_tokens("東京は日本") == 5  # one token per character of an unspaced script
    assert textlib.count_tokens("  \n\t ") == 0


def test_terms_lowercase_words_and_bigrams_for_unspaced_scripts():
    assert textlib.terms("KMS Keys rotate") == ["kms", "keys", "rotate"]
    assert textlib.terms("東京は日本") == ["東京", "京は", "は日", "日本"]
    assert textlib.terms("犬") == ["犬"]  # a lone character is its own term
    assert textlib.terms("ＡＢＣ１２３") == ["abc123"]  # NFKC: full-width becomes ASCII
    assert textlib.terms("データ(2024年)") == ["デー", "ータ", "2024", "年"]


def test_sentences_respect_markdown_blocks_and_abbreviations():
    doc = "# Title\n\nFirst one, e.g. this. Second one!\n- item one\n- item two\n\n本日は晴れ。明日は雨。"
    spans = textlib.sentences(doc)
    shown = [(textlib.display(doc[s.start : s.end]), s.heading) for s in spans]
    assert shown == [
        ("Title", True),
        ("First one, e.g. this.", False),
        ("Second one!", False),
        ("item one", False),
        ("item two", False),
        ("本日は晴れ。", False),
        ("明日は雨。", False),
    ]


def test_display_strips_markdown_markup():
    assert textlib.display("- **Bold** `code`\n  continued") == "Bold code continued"


# --- chunking ---


def _long_document(sentences: int = 60) -> str:
    return " ".join(f"Sentence number {i} talks about topic {i % 7} with a few extra words." for i in range(sentences))


@pytest.mark.parametrize("max_tokens,overlap", [(300, 20), (50, 10), (40, 50), (20, 99), (25, 0)])
def test_chunks_stay_within_max_tokens_overlap_and_cover_the_text(max_tokens, overlap):
    doc = _long_document()
    chunks = chunking.chunk(doc, max_tokens=max_tokens, overlap_percentage=overlap)
    assert len(chunks) > 1
    overlap_tokens = max_tokens * overlap // 100
    for c in chunks:
        assert c.text == doc[c.start : c.end]
        assert textlib.count_tokens(c.text) == c.tokens <= max_tokens
    for a, b in zip(chunks, chunks[1:]):
        assert a.start < b.start and a.end < b.end  # progress
        assert doc[a.end : b.start].strip() == ""  # no gap: every piece is in some chunk
        shared = textlib.count_tokens(doc[b.start : a.end]) if b.start < a.end else 0
        assert shared <= overlap_tokens
    assert chunks[0].start == 0 and chunks[-1].end == len(doc)


def test_chunks_end_at_sentence_ends_and_start_at_sentence_starts_when_they_can():
    doc = _long_document()
    chunks = chunking.chunk(doc, max_tokens=60, overlap_percentage=20)
    for c in chunks[:-1]:
        assert c.text.endswith("words."), c.text[-30:]
    for c in chunks[1:]:
        assert c.text.startswith("Sentence number"), c.text[:30]
    # 20 % of 60 = 12 tokens of overlap at most: one 13-token sentence does not fit, so none is shared
    assert all(b.start >= a.end for a, b in zip(chunks, chunks[1:]))


def test_overlap_is_used_when_a_sentence_fits_in_it():
    doc = _long_document()
    chunks = chunking.chunk(doc, max_tokens=60, overlap_percentage=30)  # 18 tokens: one sentence
    for a, b in zip(chunks, chunks[1:]):
        shared = doc[b.start : a.end]
        assert shared.startswith("Sentence number") and shared.endswith("words.")


def test_a_sentence_longer_than_a_chunk_is_cut_between_words():
    doc = "word " * 100
    chunks = chunking.chunk(doc.strip(), max_tokens=30, overlap_percentage=10)
    assert [c.tokens for c in chunks[:-1]] == [30] * (len(chunks) - 1)
    assert all(c.text.split() == ["word"] * len(c.text.split()) for c in chunks)  # never half a word


def test_japanese_chunks_count_characters():
    doc = "これは日本語の文です。" * 40  # 11 characters, 11 tokens per sentence
    chunks = chunking.chunk(doc, max_tokens=50, overlap_percentage=20)
    assert all(c.tokens <= 50 for c in chunks)
    assert all(c.text.endswith("。") for c in chunks)
    assert chunks[1].text.startswith("これは")


def test_short_and_empty_texts():
    assert [c.text for c in chunking.chunk("  One sentence.  ", max_tokens=300, overlap_percentage=20)] == ["One sentence."]
    assert chunking.chunk(" \n ", max_tokens=300, overlap_percentage=20) == []
    with pytest.raises(ValueError):
        chunking.chunk("x", max_tokens=0, overlap_percentage=20)


# --- documents ---


def _write(folder: Path, name: str, content: str, metadata: dict | None = None) -> None:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    if metadata is not None:
        (folder / f"{name}.metadata.json").write_text(json.dumps(metadata), encoding="utf-8")


def test_discover_reads_the_folder_like_the_documents_prefix(tmp_path):
    _write(tmp_path, "a.md", "# A", {"metadataAttributes": {"category": "ops"}})
    _write(tmp_path, "sub/b.txt", "B")
    _write(tmp_path, "README.md", "about the folder")
    _write(tmp_path, ".hidden.md", "hidden")
    _write(tmp_path, "slides.pptx", "binary")
    sources, unsupported = documents.discover(tmp_path)
    assert [s.doc_id for s in sources] == ["a.md", "sub/b.txt"]
    assert unsupported == ["slides.pptx"]
    assert documents.read(sources[0]).metadata == {"category": "ops"}
    assert documents.read(sources[1]).metadata == {}


def test_metadata_accepts_the_plain_and_the_typed_form(tmp_path):
    typed = {
        "metadataAttributes": {
            "category": {"value": {"type": "STRING", "stringValue": "security"}, "includeForEmbedding": True},
            "year": {"value": {"type": "NUMBER", "numberValue": 2024}},
            "tags": {"value": {"type": "STRING_LIST", "stringListValue": ["a", "b"]}},
            "public": {"value": {"type": "BOOLEAN", "booleanValue": False}},
        }
    }
    _write(tmp_path, "doc.md", "text", typed)
    sources, _ = documents.discover(tmp_path)
    assert documents.read(sources[0]).metadata == {"category": "security", "year": 2024, "tags": ["a", "b"], "public": False}


@pytest.mark.parametrize("body", ["{not json", '{"category": "x"}', '{"metadataAttributes": {"x": {"nested": 1}}}'])
def test_bad_metadata_names_the_file(tmp_path, body):
    _write(tmp_path, "doc.md", "text")
    (tmp_path / "doc.md.metadata.json").write_text(body)
    sources, _ = documents.discover(tmp_path)
    with pytest.raises(documents.DocumentError, match=r"^doc\.md\.metadata\.json"):
        documents.read(sources[0])


def test_html_and_csv_become_readable_text():
    html = "<html><head><title>t</title><style>p{}</style></head><body><h1>Keys</h1><p>Rotated <b>yearly</b>.</p><script>x()</script><p>Second.</p></body></html>"
    assert documents.html_text(html) == "# Keys\n\nRotated yearly.\n\nSecond."
    assert documents.csv_text("name,days\nlogs,30\nbackups,\n") == "name: logs; days: 30.\nname: backups."


# --- score arithmetic (against hand-computed values) ---


def test_knn_score_is_the_l2_space_score_of_unit_vectors():
    assert scoring.knn_score(1.0) == pytest.approx(1.0)  # d^2 = 0
    assert scoring.knn_score(0.0) == pytest.approx(1 / 3)  # d^2 = 2
    assert scoring.knn_score(-1.0) == pytest.approx(0.2)  # d^2 = 4


def test_min_max_normalisation_matches_the_normalization_processor():
    assert scoring.min_max({"a": 2.0, "b": 4.0, "c": 6.0}) == {"a": 0.001, "b": 0.5, "c": 1.0}
    assert scoring.min_max({"only": 3.7}) == {"only": 1.0}
    assert scoring.min_max({"x": 5.0, "y": 5.0}) == {"x": 1.0, "y": 1.0}
    assert scoring.min_max({}) == {}


def test_combination_is_the_weighted_mean_with_missing_scores_as_zero():
    lexical = {"a": 10.0, "b": 6.0, "c": 2.0}  # normalised: a 1.0, b 0.5, c 0.001
    vector = {"b": 0.9, "d": 0.5}  # normalised: b 1.0, d 0.001
    combined = scoring.combine(lexical, vector, vector_weight=0.7)
    assert combined == pytest.approx({"a": 0.3, "b": 0.3 * 0.5 + 0.7, "c": 0.3 * 0.001, "d": 0.7 * 0.001})


def test_bm25_matches_lucenes_formula_on_a_tiny_corpus():
    index = store.Index(
        doc_ids=["d"], doc_metadata=[{}], chunk_docs=["d", "d", "d"],
        chunk_texts=["apple apple banana", "banana cherry", "cherry cherry cherry date"],
        vectors=np.eye(3, 512, dtype=np.float32), sentence_vectors={},
    )
    avg = (3 + 2 + 4) / 3
    idf_apple = math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))
    idf_banana = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))
    expected0 = idf_apple * 2 / (2 + 1.2 * (0.25 + 0.75 * 3 / avg)) + idf_banana * 1 / (1 + 1.2 * (0.25 + 0.75 * 3 / avg))
    expected1 = idf_banana * 1 / (1 + 1.2 * (0.25 + 0.75 * 2 / avg))
    scores = index.bm25_scores(["apple", "banana"])
    assert scores == pytest.approx([expected0, expected1, 0.0])
    assert [h.row for h in index.bm25_hits(["apple", "banana"], 5)] == [0, 1]  # chunk 2 matches no term


# --- store, filters, hybrid search (fake embedder: fast and deterministic) ---


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "docs"
    _write(folder, "keys.md", "KMS rotates the key material every year.", {"metadataAttributes": {"category": "security", "year": 2024}})
    _write(folder, "logs.md", "Audit logs go to CloudWatch Logs and are kept for a year.", {"metadataAttributes": {"category": "operations", "tags": ["logs", "audit"]}})
    _write(folder, "sync.md", "Two overlapping syncs conflict; the second one waits and retries.", {"metadataAttributes": {"category": "operations"}})
    _write(folder, "plain.md", "A document without metadata about rotation of passwords.")
    return folder


def _open(folder: Path, cache: Path, embedder, settings=DEFAULT_CHUNKS):
    return indexer.open_index(folder, cache, embedder, settings)


def test_filters_have_the_deployed_equality_and_any_of_semantics(corpus, tmp_path):
    index, _ = _open(corpus, tmp_path / "cache", FakeEmbedder())

    def docs(filters):
        return sorted({index.chunk_doc_ids[h.row] for h in index.semantic(np.ones(512, np.float32) / math.sqrt(512), 10, filters)})

    assert docs({}) == ["keys.md", "logs.md", "plain.md", "sync.md"]
    assert docs({"category": "operations"}) == ["logs.md", "sync.md"]
    assert docs({"category": ["security", "operations"]}) == ["keys.md", "logs.md", "sync.md"]  # any of
    assert docs({"category": "operations", "tags": "audit"}) == ["logs.md"]  # every filter must match
    assert docs({"tags": ["x", "logs"]}) == ["logs.md"]  # a list attribute matches if any item does
    assert docs({"year": 2024}) == ["keys.md"] and docs({"year": "2024"}) == ["keys.md"]  # keyword text
    assert docs({"category": "Security"}) == []  # keywords are exact
    assert docs({"missing": "x"}) == []  # documents without the attribute never match


def test_hybrid_search_combines_the_two_sub_queries_like_the_pipeline(corpus, tmp_path):
    embedder = FakeEmbedder()
    index, _ = _open(corpus, tmp_path / "cache", embedder)
    question = "how often is the key material rotated"
    vector, terms = embedder.embed_one(question), textlib.terms(question)
    lexical = {h.row: h.score for h in index.bm25_hits(terms, 3)}
    semantic = {h.row: h.score for h in index.vector_hits(vector, 3)}
    expected = scoring.combine(lexical, semantic, vector_weight=0.7)
    hits = index.hybrid(vector, terms, 3, {}, vector_weight=0.7)
    assert [(h.row, h.score) for h in hits] == sorted(expected.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    assert index.chunk_doc_ids[hits[0].row] == "keys.md"
    filtered = index.hybrid(vector, terms, 3, {"category": "operations"}, vector_weight=0.7)
    assert {index.chunk_doc_ids[h.row] for h in filtered} <= {"logs.md", "sync.md"}


def test_only_changed_files_are_re_embedded(corpus, tmp_path):
    cache = tmp_path / "cache"
    first = FakeEmbedder()
    _, report = _open(corpus, cache, first)
    assert sorted(report.added) == ["keys.md", "logs.md", "plain.md", "sync.md"] and report.unchanged == 0

    again = FakeEmbedder()
    _, report = _open(corpus, cache, again)
    assert again.embedded == [] and report.unchanged == 4

    (corpus / "keys.md").write_text("KMS rotates the key material every 365 days.")
    (corpus / "logs.md.metadata.json").write_text(json.dumps({"metadataAttributes": {"category": "security"}}))
    (corpus / "sync.md").unlink()
    _write(corpus, "new.md", "A new document.")
    changed = FakeEmbedder()
    index, report = _open(corpus, cache, changed)
    assert (sorted(report.updated), report.added, report.removed, report.unchanged) == (["keys.md", "logs.md"], ["new.md"], ["sync.md"], 1)
    assert "KMS rotates the key material every 365 days." in changed.embedded
    assert not any("passwords" in t for t in changed.embedded)  # plain.md was not touched
    assert sorted(set(index.chunk_doc_ids)) == ["keys.md", "logs.md", "new.md", "plain.md"]
    assert index.doc_metadata[index.doc_ids.index("logs.md")] == {"category": "security"}


def test_a_new_chunking_configuration_rebuilds_the_index(corpus, tmp_path):
    cache = tmp_path / "cache"
    _open(corpus, cache, FakeEmbedder())
    rebuilt = FakeEmbedder()
    _, report = _open(corpus, cache, rebuilt, indexer.ChunkSettings(max_tokens=100, overlap_percentage=10))
    assert len(report.added) == 4 and rebuilt.embedded


def test_an_unreadable_document_is_reported_and_the_rest_indexed(corpus, tmp_path):
    (corpus / "bad.md").write_bytes(b"\xff\xfe not utf-8")
    index, report = _open(corpus, tmp_path / "cache", FakeEmbedder())
    assert [doc_id for doc_id, _ in report.failed] == ["bad.md"] and "not UTF-8" in report.failed[0][1]
    assert "bad.md" not in index.chunk_doc_ids and len(set(index.chunk_doc_ids)) == 4


# --- the real encoder (loaded once per run) ---


def test_sample_corpus_questions_retrieve_their_document():
    index, embedder = sample_index(), real_embedder()
    # Any corpus must work; these documents ship with the repository today.
    for question, expected in [
        ("How long are deleted documents kept?", "document-lifecycle.md"),
        ("How do I roll back a model?", "model-serving.md"),
        ("What happens when two syncs overlap?", "ingestion-runbook.md"),
    ]:
        if expected not in index.doc_ids:
            pytest.skip(f"{expected} is no longer in the sample corpus")
        vector = embedder.embed_one(question)
        assert index.chunk_doc_ids[index.hybrid(vector, textlib.terms(question), 5, {}, vector_weight=0.7)[0].row] == expected
        assert index.chunk_doc_ids[index.semantic(vector, 5, {})[0].row] == expected


def test_japanese_documents_are_found_by_bm25_bigrams_and_by_vectors(tmp_path):
    folder = tmp_path / "ja"
    _write(folder, "fuji.md", "富士山は日本で最も高い山で、標高は3776メートルです。")
    _write(folder, "sushi.md", "寿司は酢飯と魚介類を組み合わせた日本料理です。")
    _write(folder, "tokyo.md", "東京は日本の首都であり、人口が最も多い都市です。")
    index, _ = _open(folder, tmp_path / "cache", real_embedder())
    for question, expected in [("日本で一番高い山は何ですか？", "fuji.md"), ("日本の首都はどこですか？", "tokyo.md"), ("寿司とは何ですか", "sushi.md")]:
        terms = textlib.terms(question)
        assert index.chunk_doc_ids[index.bm25_hits(terms, 1)[0].row] == expected
        vector = real_embedder().embed_one(question)
        assert index.chunk_doc_ids[index.hybrid(vector, terms, 3, {}, vector_weight=0.7)[0].row] == expected


def test_knn_scores_stay_within_the_l2_range_for_rounded_cosines():
    # a dot product of float32 unit vectors can leave [-1, 1] by rounding; the score never leaves [0.2, 1]
    assert scoring.knn_score(np.array([1.5, 1.0000001, -1.0000001, -1.5])).tolist() == pytest.approx([1.0, 1.0, 0.2, 0.2])
