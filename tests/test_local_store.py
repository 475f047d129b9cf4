"""The embedded store's search and persistence, against brute-force oracles (fast: no encoder).

- top-k selection: any scores (ties included), any mask, any k, compared with a plain sort;
- filters: keyword semantics of the deployed index, compared with a direct reading of the rule;
- the SQLite file: what survives a reopen, a fingerprint change, a removal.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from local import chunking, embedding, store


def _oracle(scores, top_k, mask):
    rows = [r for r in range(len(scores)) if (mask is None or mask[r]) and scores[r] > 0]
    return sorted(rows, key=lambda r: (-scores[r], r))[:top_k]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0, 2.0]), min_size=0, max_size=14),  # few values: many ties
    st.integers(min_value=1, max_value=16),
    st.one_of(st.none(), st.integers(min_value=0, max_value=2**14 - 1)),
)
def test_top_k_is_the_stable_sort_by_score_then_row(values, top_k, mask_bits):
    scores = np.array(values, dtype=np.float64)
    mask = None if mask_bits is None else np.array([bool(mask_bits >> i & 1) for i in range(len(values))], dtype=bool)
    before = None if mask is None else mask.copy()
    hits = store._top(scores, top_k, mask)
    assert [h.row for h in hits] == _oracle(values, top_k, mask)
    assert [h.score for h in hits] == [values[h.row] for h in hits]
    if mask is not None:
        assert (mask == before).all()  # the caller's mask is not consumed


def _index(texts, metadata_by_doc, chunk_docs=None, vectors=None):
    doc_ids = sorted(metadata_by_doc)
    chunk_docs = chunk_docs or doc_ids
    if vectors is None:
        vectors = np.eye(len(texts), embedding.DIMENSIONS, dtype=np.float32)
    return store.Index(
        doc_ids=doc_ids, doc_metadata=[metadata_by_doc[d] for d in doc_ids], chunk_docs=chunk_docs,
        chunk_texts=texts, vectors=vectors, sentence_vectors={},
    )


KEYWORD = st.one_of(st.sampled_from(["a", "b", "c"]), st.sampled_from([1, 2]), st.booleans())
VALUE = st.one_of(KEYWORD, st.lists(st.sampled_from(["a", "b", "c"]), max_size=3))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.dictionaries(st.sampled_from(["category", "year", "tags"]), VALUE, max_size=3), min_size=1, max_size=5),
    st.dictionaries(st.sampled_from(["category", "year", "tags"]), VALUE, max_size=2),
)
def test_filters_keep_documents_whose_every_field_shares_a_keyword(metadata, filters):
    def words(value):
        items = value if isinstance(value, list) else [value]
        return {("true" if v else "false") if isinstance(v, bool) else str(v) for v in items}

    docs = {f"d{i}": m for i, m in enumerate(metadata)}
    index = _index([f"text {i}" for i in range(len(docs))], docs)
    expected = [all(field in m and words(m[field]) & words(wanted) for field, wanted in filters.items()) for m in metadata]
    mask = index.mask(filters)
    if not filters:
        assert mask is None
    else:
        assert mask.tolist() == expected
        found = {index.chunk_doc_ids[h.row] for h in index.semantic(np.ones(embedding.DIMENSIONS, np.float32), 10, filters)}
        assert found == {f"d{i}" for i, keep in enumerate(expected) if keep}


def test_filters_apply_to_every_chunk_of_a_document():
    index = _index(["one", "two", "three"], {"a": {"category": "x"}, "b": {"category": "y"}}, chunk_docs=["a", "b", "a"])
    assert index.mask({"category": "x"}).tolist() == [True, False, True]
    assert index.mask({"category": ["x", "y"]}).tolist() == [True, True, True]


def test_an_empty_index_finds_nothing():
    index = _index([], {}, vectors=np.zeros((0, embedding.DIMENSIONS), np.float32))
    query = np.ones(embedding.DIMENSIONS, np.float32)
    assert len(index) == 0 and index.avg_len == 1.0
    assert index.semantic(query, 5, {}) == [] and index.bm25_hits(["x"], 5) == []
    assert index.hybrid(query, ["x"], 5, {"category": "x"}, vector_weight=0.7) == []
    assert index.mask({"category": "x"}).tolist() == []
    assert index.idf("x") == pytest.approx(np.log(1 + 1.5 / 0.5))  # counted as one chunk: finite, never log(1 + 0)


def test_vector_hits_rank_by_the_l2_space_score():
    vectors = np.zeros((3, embedding.DIMENSIONS), np.float32)
    vectors[0, 0], vectors[1, 1], vectors[2, 0] = 1.0, 1.0, -1.0
    index = _index(["x", "y", "z"], {"d": {}}, chunk_docs=["d"] * 3, vectors=vectors)
    query = np.zeros(embedding.DIMENSIONS, np.float32)
    query[0] = 1.0
    hits = index.vector_hits(query, 2)
    assert [(h.row, round(h.score, 6)) for h in hits] == [(0, 1.0), (1, round(1 / 3, 6))]
    assert [h.row for h in index.vector_hits(query, 5)] == [0, 1, 2]


def test_bm25_averages_lengths_over_every_chunk_empty_ones_included():
    index = _index(["apple", ""], {"d": {}}, chunk_docs=["d", "d"])
    assert index.avg_len == 0.5
    idf = np.log(1 + (2 - 1 + 0.5) / (1 + 0.5))
    assert index.bm25_scores(["apple"]).tolist() == pytest.approx([idf * 1 / (1 + 1.2 * (0.25 + 0.75 * 1 / 0.5)), 0.0])


def test_bm25_lengths_idf_and_query_terms_counted_once():
    index = _index(["apple apple banana", "banana cherry", "", "cherry"], {"d": {}}, chunk_docs=["d"] * 4)
    assert index.doc_len.tolist() == [3.0, 2.0, 0.0, 1.0] and index.avg_len == 1.5
    assert index.idf("banana") == pytest.approx(np.log(1 + (4 - 2 + 0.5) / (2 + 0.5)))
    assert index.idf("durian") == pytest.approx(np.log(1 + (4 + 0.5) / 0.5))  # a term no chunk has
    assert index.bm25_scores(["apple", "apple"]).tolist() == index.bm25_scores(["apple"]).tolist()
    assert index.bm25_scores(["durian"]).tolist() == [0.0] * 4


def test_hybrid_takes_each_sub_querys_top_k_within_the_filter():
    # chunk 0 is the best lexical hit, chunk 1 the best vector hit, both outside the filter
    texts = ["rotation rotation keys", "nothing", "rotation", "other words"]
    vectors = np.zeros((4, embedding.DIMENSIONS), np.float32)
    vectors[1, 0], vectors[3, 0], vectors[0, 1], vectors[2, 2] = 1.0, 0.5, 1.0, 1.0
    index = _index(texts, {"a": {"category": "x"}, "b": {"category": "y"}}, chunk_docs=["a", "a", "b", "b"], vectors=vectors)
    query = np.zeros(embedding.DIMENSIONS, np.float32)
    query[0] = 1.0
    hits = index.hybrid(query, ["rotation"], 2, {"category": "y"}, vector_weight=0.7)
    assert [h.row for h in hits] == [3, 2]  # vector 1.0 * 0.7 beats lexical 1.0 * 0.3
    assert [round(h.score, 6) for h in hits] == [0.7, round(0.3 + 0.7 * 0.001, 6)]
    only_top_1 = index.hybrid(query, ["rotation"], 1, {}, vector_weight=0.7)
    assert [h.row for h in only_top_1] == [1]


def _chunks(*texts):
    return [chunking.Chunk(seq=i, start=0, end=len(t), text=t, tokens=1) for i, t in enumerate(texts)]


def _vec(i):
    v = np.zeros(embedding.DIMENSIONS, np.float32)
    v[i] = 1.0
    return v


def test_the_store_keeps_documents_across_reopens_and_rebuilds_on_a_new_fingerprint(tmp_path):
    path = tmp_path / "cache" / "nested" / "index.sqlite"  # folders made as needed
    first = store.Store(path, "fp-1")
    assert not first.rebuilt and first.hashes() == {}
    first.replace("b.md", "sha-b", {"year": 2024}, _chunks("b one", "b two"), np.stack([_vec(0), _vec(1)]), {"k1": _vec(2)})
    first.replace("a.md", "sha-a", {}, _chunks("a one"), np.stack([_vec(3)]), {})
    first.replace("c.md", "sha-c", {}, _chunks("c one"), np.stack([_vec(7)]), {})
    first.replace("b.md", "sha-b2", {"year": 2025}, _chunks("b new"), np.stack([_vec(4)]), {"k2": _vec(5)})  # replaced whole
    first.close()

    again = store.Store(path, "fp-1")
    assert not again.rebuilt and again.hashes() == {"a.md": "sha-a", "b.md": "sha-b2", "c.md": "sha-c"}
    again.remove("c.md")
    index = again.load()
    assert index.doc_ids == ["a.md", "b.md"] and index.doc_metadata == [{}, {"year": 2025}]
    assert index.chunk_doc_ids == ["a.md", "b.md"] and index.chunk_texts == ["a one", "b new"]
    assert index.vectors.dtype == np.float32 and (index.vectors == np.stack([_vec(3), _vec(4)])).all()
    assert set(index.sentence_vectors) == {"k2"} and (index.sentence_vectors["k2"] == _vec(5)).all()  # b.md's old sentences went with it
    again.remove("b.md")
    assert again.hashes() == {"a.md": "sha-a"} and again.load().chunk_texts == ["a one"]
    again.close()

    changed = store.Store(path, "fp-2")
    assert changed.rebuilt and changed.hashes() == {} and len(changed.load()) == 0
    assert changed.load().semantic(_vec(0), 5, {}) == []  # an emptied index finds nothing
    changed.close()
    assert not store.Store(path, "fp-2").rebuilt  # the new fingerprint was stored


def test_float64_vectors_are_stored_as_float32(tmp_path):
    db = store.Store(tmp_path / "index.sqlite", "fp")
    db.replace("a.md", "sha", {}, _chunks("one"), np.full((1, embedding.DIMENSIONS), 0.5), {"k": np.full(embedding.DIMENSIONS, 0.25)})
    index = db.load()
    assert index.vectors.dtype == np.float32 and index.vectors.shape == (1, embedding.DIMENSIONS) and (index.vectors == 0.5).all()
    assert index.sentence_vectors["k"].shape == (embedding.DIMENSIONS,) and (index.sentence_vectors["k"] == 0.25).all()
    db.close()


def test_a_documents_chunks_load_in_reading_order(tmp_path):
    db = store.Store(tmp_path / "index.sqlite", "fp")
    one, two, three = _chunks("one", "two", "three")
    db.replace("a.md", "sha", {}, [three, one, two], np.stack([_vec(2), _vec(0), _vec(1)]), {})  # handed over in any order
    index = db.load()
    assert index.chunk_texts == ["one", "two", "three"] and (index.vectors == np.stack([_vec(0), _vec(1), _vec(2)])).all()
    db.close()


def test_a_failed_replace_leaves_the_previous_document(tmp_path):
    db = store.Store(tmp_path / "index.sqlite", "fp")
    db.replace("a.md", "sha-1", {}, _chunks("old"), np.stack([_vec(0)]), {})
    with pytest.raises(ValueError):  # two chunks, one vector: refused inside the transaction
        db.replace("a.md", "sha-2", {}, _chunks("new", "newer"), np.stack([_vec(1)]), {})
    assert db.hashes() == {"a.md": "sha-1"} and db.load().chunk_texts == ["old"]
    db.close()


def test_a_sentence_key_ignores_markup_and_line_breaks():
    assert store.sentence_key("- **Keys** rotate\n  yearly.") == store.sentence_key("Keys rotate yearly.")
    assert store.sentence_key("Keys rotate yearly.") != store.sentence_key("Keys rotate monthly.")
    assert len(store.sentence_key("x")) == 24


WORDS = ["keys", "rotate", "logs", "kept", "year"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.lists(st.sampled_from(WORDS), max_size=4), st.integers(0, 3)), min_size=1, max_size=12),
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=3),
    st.integers(0, 3),
    st.integers(1, 6),
    st.sampled_from([0.0, 0.3, 0.7, 1.0]),
)
def test_hybrid_search_is_the_documented_pipeline(chunks, query, query_axis, top_k, weight):
    """Brute force from the documented formulas: BM25 and the l2 score on every chunk, each
    sub-query's top_k by (score desc, row), min-max per sub-query, the weighted sum, ties by row.
    Few words and four possible vectors: many ties."""
    texts = [" ".join(words) for words, _ in chunks]
    vectors = np.zeros((len(chunks), embedding.DIMENSIONS), np.float32)
    for row, (_, axis) in enumerate(chunks):
        vectors[row, axis] = 1.0
    index = _index(texts, {"d": {}}, chunk_docs=["d"] * len(texts), vectors=vectors)
    query_vector = np.zeros(embedding.DIMENSIONS, np.float32)
    query_vector[query_axis] = 1.0

    lengths = [len(words) for words, _ in chunks]
    avg = sum(lengths) / len(lengths) or 1.0

    def bm25(row):
        total = 0.0
        for term in set(query):
            n = sum(term in words for words, _ in chunks)
            tf = chunks[row][0].count(term)
            if tf:
                idf = np.log(1 + (len(chunks) - n + 0.5) / (n + 0.5))
                total += idf * tf / (tf + 1.2 * (0.25 + 0.75 * lengths[row] / avg))
        return total

    def top(scores, positive):
        rows = [r for r in range(len(chunks)) if scores[r] > 0 or not positive]
        return {r: scores[r] for r in sorted(rows, key=lambda r: (-scores[r], r))[:top_k]}

    def normalised(hits):
        if not hits:
            return {}
        low, high = min(hits.values()), max(hits.values())
        return {r: 1.0 if high == low else max((s - low) / (high - low), 0.001) for r, s in hits.items()}

    lexical = normalised(top([bm25(r) for r in range(len(chunks))], True))
    vector = normalised(top([1 / (3 - 2 * float(vectors[r] @ query_vector)) for r in range(len(chunks))], False))
    combined = {r: (1 - weight) * lexical.get(r, 0.0) + weight * vector.get(r, 0.0) for r in lexical.keys() | vector.keys()}
    expected = sorted(combined.items(), key=lambda item: (-round(item[1], 9), item[0]))[:top_k]
    hits = index.hybrid(query_vector, query, top_k, {}, vector_weight=weight)
    assert [h.row for h in hits] == [row for row, _ in expected]
    assert [h.score for h in hits] == pytest.approx([score for _, score in expected])
