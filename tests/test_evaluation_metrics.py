"""Evaluation metrics against values computed by hand, edge cases included."""

from __future__ import annotations

import pytest

from evaluation import metrics, scoring
from evaluation.evalset import Question


def test_normalisation_follows_squad_after_nfkc_and_citation_markers():
    assert metrics.normalize("The Wren of Vey! [1][2]") == "wren of vey"
    assert metrics.normalize("An   apple, a pear.") == "apple pear"
    assert metrics.normalize("２８ノット", char_level=True) == "28ノット"  # full-width digits become ASCII
    assert metrics.normalize("3,400円、55分 [1, 2]", char_level=True) == "3400円55分"
    assert metrics.tokens("55分です", char_level=True) == ["5", "5", "分", "で", "す"]


def test_token_f1_by_hand():
    assert metrics.token_f1("26 knots [1]", ["26 knots"]) == 1.0
    # prediction {about, 26, knots} vs reference {26, knots}: precision 2/3, recall 1 -> F1 0.8
    assert metrics.token_f1("about 26 knots", ["26 knots"]) == pytest.approx(0.8)
    # the best reference counts
    assert metrics.token_f1("Hask", ["on Hask, aboard the Harrow Bell", "Hask"]) == 1.0
    # repeated tokens are counted once per occurrence: {knots x2, 26} vs {26, knots}: p 2/3, r 1
    assert metrics.token_f1("knots 26 knots", ["26 knots"]) == pytest.approx(0.8)
    assert metrics.token_f1("28 knots", ["26 knots"]) == pytest.approx(0.5)
    assert metrics.token_f1("Saltreach", ["26 knots"]) == 0.0


def test_token_f1_edge_cases():
    assert metrics.token_f1("", ["26 knots"]) == 0.0  # empty answer
    assert metrics.token_f1("anything", []) is None  # no gold: the question is unanswerable
    assert metrics.token_f1("the", ["a"]) == 1.0  # both normalise to nothing: SQuAD counts that as a match
    assert metrics.token_f1("26 knots", ["the"]) == 0.0


def test_japanese_is_compared_by_character():
    # 55分です vs 55分: 3 shared characters, precision 3/5, recall 1 -> F1 = 2*0.6/1.6 = 0.75
    assert metrics.token_f1("55分です", ["55分"], char_level=True) == pytest.approx(0.75)
    # word tokens would give 0 (one "word" each)
    assert metrics.token_f1("55分です", ["55分"], char_level=False) == 0.0
    assert metrics.exact_match("３週間。", ["3週間"], char_level=True) == 1.0
    assert metrics.char_level_for("ja", ["26 knots"]) is True
    assert metrics.char_level_for(None, ["1,850円"]) is True
    assert metrics.char_level_for("en", ["1,850 yen", "1,850円"]) is True  # an unspaced reference
    assert metrics.char_level_for("en", ["26 knots"]) is False
    assert metrics.char_level_for("th-TH", ["x"]) is True


def test_exact_match_and_recall():
    assert metrics.exact_match("The Long Night.", ["Long Night"]) == 1.0
    assert metrics.exact_match("It was the Long Night", ["Long Night"]) == 0.0
    assert metrics.exact_match("x", []) is None
    # recall ignores the extra words of a long answer: 2 of 2 reference tokens found
    assert metrics.token_recall("the limit is 28 knots, sustained", ["28 knots"]) == 1.0
    assert metrics.token_recall("28 metres", ["28 knots"]) == 0.5
    assert metrics.token_recall("", ["28 knots"]) == 0.0


@pytest.mark.parametrize("answer, expected", [
    ("I don't know based on the provided sources.", True),
    ("I don’t know based on the provided sources.", True),  # typographic apostrophe
    ("", True),
    ("   ", True),
    ("The sources do not mention a cabin.", True),
    ("I cannot answer that from these documents.", True),
    ("分かりません。", True),
    ("資料には記載がありません。", True),
    ("Dogs are not allowed on the Kittiwake [1].", False),
    ("The Wren of Vey does not carry cars [2].", False),
    ("30分以内に出港します。", False),
])
def test_abstention(answer, expected):
    assert metrics.abstained(answer) is expected


def test_ranked_documents_by_citation_number_each_once():
    citations = [
        {"n": 2, "source": "s3://bucket/documents/eval/c/a.md"},
        {"n": 1, "source": "s3://bucket/documents/eval/c/b.md#chunk-3"},
        {"n": 3, "source": "/home/me/corpus/a.md"},  # the same document again (another chunk)
        {"n": None, "source": "file:///tmp/c%20d.md"},  # no number: ranks last
    ]
    assert metrics.ranked_documents(citations, scoring.document_id) == ["b.md", "a.md", "c d.md"]
    # ties keep the response's order
    tied = [{"n": 1, "source": "x/b.md"}, {"n": 1, "source": "x/a.md"}]
    assert metrics.ranked_documents(tied, scoring.document_id) == ["b.md", "a.md"]
    assert metrics.ranked_documents([], scoring.document_id) == []


def test_retrieval_metrics_by_hand():
    ranked = ["b.md", "a.md", "c.md"]
    gold = {"a.md", "c.md"}
    assert metrics.recall_at_k(ranked, gold, 1) == 0.0
    assert metrics.recall_at_k(ranked, gold, 2) == 0.5
    assert metrics.recall_at_k(ranked, gold, 3) == 1.0
    assert metrics.reciprocal_rank(ranked, gold) == 0.5
    assert metrics.reciprocal_rank(["x.md"], gold) == 0.0
    assert metrics.recall_at_k(ranked, set(), 3) is None  # no gold sources
    assert metrics.reciprocal_rank(ranked, set()) is None
    assert metrics.citation_precision(["b.md", "a.md"], {"a.md"}) == 0.5
    assert metrics.citation_precision([], {"a.md"}) is None
    assert metrics.citation_precision(["b.md"], set()) == 0.0  # citing anything for an unanswerable question


def test_percentiles_interpolate_linearly():
    assert metrics.percentile([4, 1, 3, 2], 50) == 2.5
    assert metrics.percentile([1, 2, 3, 4], 95) == pytest.approx(3.85)  # position 2.85 between 3 and 4
    assert metrics.percentile([7], 95) == 7
    assert metrics.percentile([], 50) is None


def test_bootstrap_is_seeded_and_sensible():
    values = [0.0, 1.0, 1.0, 0.5, 0.25, 1.0, 0.0, 0.75]
    first = metrics.bootstrap_ci(values, resamples=500, rng=metrics.rng_for(13, "cfg", "f1"))
    again = metrics.bootstrap_ci(values, resamples=500, rng=metrics.rng_for(13, "cfg", "f1"))
    other = metrics.bootstrap_ci(values, resamples=500, rng=metrics.rng_for(14, "cfg", "f1"))
    assert first == again
    assert first != other
    low, high = first
    assert 0.0 <= low < metrics.mean(values) < high <= 1.0
    assert metrics.bootstrap_ci([0.4, 0.4, 0.4], resamples=50, rng=metrics.rng_for(1)) == pytest.approx((0.4, 0.4))
    assert metrics.bootstrap_ci([], resamples=50, rng=metrics.rng_for(1)) is None


def _row(mode: str, answer: str | None, citations=(), error: str | None = None, total: float = 100.0) -> dict:
    response = None if answer is None else {"answer": answer, "citations": list(citations), "timings_ms": {"total": total},
                                            "usage": {"input_tokens": 100, "output_tokens": 10}}
    return {"mode": mode, "response": response, "error": error, "elapsed_ms": total + 5}


def test_scores_of_one_answer():
    question = Question(id="q", question="?", answers=("26 knots",), sources=("k.md",), lang="en")
    row = _row("rag", "About 26 knots [2].", [{"n": 1, "source": "s3://b/p/x.md"}, {"n": 2, "source": "s3://b/p/k.md"}])
    values = scoring.score(question, row)
    assert values["f1"] == pytest.approx(0.8)
    assert values["em"] == 0.0
    assert values["recall@1"] == 0.0 and values["recall@3"] == 1.0 and values["mrr"] == 0.5
    assert values["citation_precision"] == 0.5
    assert values["abstention_accuracy"] is None and values["false_abstention"] == 0.0
    assert values["latency_ms"] == 100.0
    # mode prompt does not retrieve: no retrieval metrics
    assert scoring.score(question, _row("prompt", "26 knots"))["recall@1"] is None
    assert scoring.score(question, _row("rag", None, error="HTTP 502"))["error"] == 1.0


def test_summary_all_unanswerable_with_errors_and_ties():
    unanswerable = Question(id="u", question="?", answers=(), sources=())
    rows = []
    for answer in ("I don't know based on the provided sources.", "It costs 12 euros.", "分かりません", None):
        row = {**_row("rag", answer, error=None if answer is not None else "HTTP 503"), "config": "rag/kb/x",
               "question_id": "u", "cost_usd": None if answer is None else 0.001}
        row["scores"] = scoring.score(unanswerable, row)
        rows.append(row)
    table = scoring.metric_table()
    summary = scoring.summarize(rows, table, config_key="rag/kb/x", seed=1, resamples=200)
    assert summary["f1"]["value"] is None and summary["f1"]["ci"] is None  # no answerable question
    assert summary["recall@3"]["value"] is None
    assert summary["abstention_accuracy"]["value"] == pytest.approx(2 / 3)  # the failed answer counts nowhere
    assert summary["abstention_accuracy"]["n"] == 3
    assert summary["error_rate"]["value"] == pytest.approx(0.25)
    assert summary["latency_p50_ms"]["value"] == 100.0  # ties: every latency is the same
    assert summary["latency_p50_ms"]["ci"] == [100.0, 100.0]
    assert summary["cost_per_1k_usd"]["value"] == pytest.approx(1.0)
    again = scoring.summarize(rows, table, config_key="rag/kb/x", seed=1, resamples=200)
    assert again == summary  # reproducible
