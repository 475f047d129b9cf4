"""Per-answer scores and per-configuration metrics: which answers count for which metric, the
document id of every source form, and the break-down by language and tag, by hand."""

from __future__ import annotations

import pytest

from evaluation import scoring
from evaluation.evalset import Question

ANSWERABLE = Question(id="a", question="How fast?", answers=("26 knots",), sources=("fast.md", "speed.md"), lang="en", tags=("paraphrase",))
UNANSWERABLE = Question(id="u", question="Cabin price?", answers=(), sources=(), tags=("unanswerable",))


@pytest.mark.parametrize("source, doc_id", [
    ("s3://bucket/documents/eval/x/fast.md", "fast.md"),
    ("  s3://bucket/documents/fast.md  ", "fast.md"),
    ("file:///srv/corpus/my%20notes.md#chunk-3", "my notes.md"),
    ("https://host/docs/fast.md?version=2", "fast.md"),
    ("C:\\corpus\\fast.md", "fast.md"),
    ("/srv/corpus/folder/", "folder"),
    ("fast.md", "fast.md"),
])
def test_document_id_of_every_source_form(source, doc_id):
    assert scoring.document_id(source) == doc_id


def _row(mode="rag", answer="About 26 knots [1].", citations=(("fast.md", 1),), timings=None, usage=(120, 8), elapsed=50.0, error=None):
    response = {"answer": answer, "citations": [{"n": n, "source": f"s3://b/p/{doc}"} for doc, n in citations],
                "usage": {"input_tokens": usage[0], "output_tokens": usage[1]}}
    if timings is not None:
        response["timings_ms"] = timings
    return {"mode": mode, "response": None if error else response, "error": error, "elapsed_ms": elapsed}


def test_the_scores_of_one_answer_by_hand():
    values = scoring.score(ANSWERABLE, _row(citations=(("other.md", 1), ("fast.md", 2), ("speed.md", 3)), timings={"total": 812.5}))
    assert values == {
        "error": 0.0, "f1": pytest.approx(0.8), "em": 0.0, "answer_recall": 1.0, "abstained": False, "abstention_accuracy": None,
        "false_abstention": 0.0, "mrr": 0.5, "citation_precision": pytest.approx(2 / 3), "latency_ms": 812.5, "input_tokens": 120,
        "output_tokens": 8, "documents": ["other.md", "fast.md", "speed.md"], "recall@1": 0.0, "recall@3": 1.0, "recall@5": 1.0}
    kb = scoring.score(ANSWERABLE, _row(mode="kb", timings={"total": "n/a"}), k_values=(2,))
    assert (kb["recall@2"], kb["mrr"], kb["latency_ms"], "recall@1" in kb) == (0.5, 1.0, 50.0, False)  # the round trip without a server time
    prompt = scoring.score(ANSWERABLE, _row(mode="prompt", answer="I don't know."))
    assert (prompt["mrr"], prompt["recall@1"], prompt["false_abstention"], prompt["abstained"], prompt["citation_precision"]) == (
        None, None, 1.0, True, 1.0)
    refused = scoring.score(UNANSWERABLE, _row(answer="I don't know.", citations=()))
    assert (refused["f1"], refused["abstention_accuracy"], refused["false_abstention"], refused["citation_precision"], refused["mrr"]) == (
        None, 1.0, None, None, None)
    assert scoring.score(UNANSWERABLE, _row(answer="It costs 40 euros."))["abstention_accuracy"] == 0.0
    assert scoring.score(ANSWERABLE, _row(error="HTTP 502")) == {"error": 1.0}
    assert scoring.score(ANSWERABLE, {**_row(), "response": {}}) == {"error": 1.0}
    assert scoring.score(ANSWERABLE, {"mode": "rag", "response": {"citations": None}, "elapsed_ms": 3.0})["f1"] == 0.0  # no answer text


def _scored(question, row, **extra):
    return {**row, **extra, "scores": scoring.score(question, row)}


def test_each_metric_counts_only_the_answers_it_applies_to():
    rows = [
        _scored(ANSWERABLE, _row(timings={"total": 100.0}), cost_usd=0.002, judge={"faithfulness": 1.0, "correctness": True}),
        _scored(ANSWERABLE, _row(answer="Slow.", citations=(), timings={"total": 300.0}, usage=(None, None)), cost_usd=None,
                judge={"error": "ThrottlingException: slow down"}),
        _scored(UNANSWERABLE, _row(answer="I don't know.", citations=(), timings={"total": 200.0}), cost_usd=0.0, cost_estimated=True),
        _scored(ANSWERABLE, _row(error="HTTP 503"), cost_usd=None),
    ]
    table = scoring.metric_table(judge=True)
    summary = scoring.summarize(rows, table, config_key="rag/kb/x", seed=3, resamples=0)
    values = {name: (entry["value"], entry["n"]) for name, entry in summary.items()}
    assert values["f1"] == (pytest.approx(0.4), 2) and values["answer_recall"] == (0.5, 2)
    assert values["abstention_accuracy"] == (1.0, 1) and values["false_abstention"] == (0.0, 2)
    assert values["recall@1"] == (0.25, 2) and values["mrr"] == (0.5, 2) and values["citation_precision"] == (1.0, 1)
    assert values["latency_p50_ms"] == (200.0, 3) and values["latency_p95_ms"] == (pytest.approx(290.0), 3)
    assert values["input_tokens"] == (120.0, 2) and values["output_tokens"] == (8.0, 2)
    assert values["cost_per_1k_usd"] == (pytest.approx(1.0), 2) and summary["cost_per_1k_usd"]["estimated"] is True
    assert values["judge_faithfulness"] == (1.0, 1) and values["judge_correctness"] == (1.0, 1)
    assert values["error_rate"] == (0.25, 4)
    assert all(entry["ci"] is None for entry in summary.values())  # no resamples: no intervals
    with_ci = scoring.summarize(rows, table, config_key="rag/kb/x", seed=3, resamples=50)
    assert with_ci["latency_p50_ms"]["ci"][0] <= 200.0 <= with_ci["latency_p50_ms"]["ci"][1]
    assert "estimated" not in scoring.summarize(rows[:1], table, config_key="k", seed=3, resamples=0)["cost_per_1k_usd"]


def test_the_metric_table():
    table = scoring.metric_table((1, 10))
    assert [m.name for m in table] == ["f1", "em", "answer_recall", "abstention_accuracy", "false_abstention", "recall@1", "recall@10", "mrr",
                                       "citation_precision", "latency_p50_ms", "latency_p95_ms", "input_tokens", "output_tokens",
                                       "cost_per_1k_usd", "error_rate"]
    lower = {m.name for m in table if not m.higher_is_better}
    assert lower == {"false_abstention", "latency_p50_ms", "latency_p95_ms", "input_tokens", "output_tokens", "cost_per_1k_usd", "error_rate"}
    assert {(m.name, m.statistic, m.unit) for m in table if m.statistic != "mean" or m.unit} == {
        ("latency_p50_ms", "p50", "ms"), ("latency_p95_ms", "p95", "ms"), ("cost_per_1k_usd", "mean", "USD")}
    judged = scoring.metric_table(judge=True)[-2:]
    assert [(m.name, m.label, m.higher_is_better) for m in judged] == [
        ("judge_faithfulness", "judge faithfulness (LLM, optional)", True), ("judge_correctness", "judge correctness (LLM, optional)", True)]


def test_break_down_by_language_and_tag():
    other = Question(id="b", question="Wie schnell?", answers=("26 Knoten",), sources=("fast.md",), lang="de", tags=("paraphrase", "x-lingual"))
    questions = {"a": ANSWERABLE, "u": UNANSWERABLE, "b": other}
    rows = [_scored(ANSWERABLE, _row(citations=(("speed.md", 1), ("other.md", 2)))), _scored(UNANSWERABLE, _row(answer="No idea, sorry.")),
            _scored(other, _row(answer="26 Knoten")), _scored(other, _row(error="HTTP 500"))]
    for row, qid in zip(rows, ("a", "u", "b", "b")):
        row["question_id"] = qid
    assert scoring.breakdown(rows, questions) == {
        "lang:de": {"n": 2, "f1": 1.0, "em": 1.0, "abstention_accuracy": None, "recall@3": 1.0},
        "lang:en": {"n": 1, "f1": pytest.approx(0.8), "em": 0.0, "abstention_accuracy": None, "recall@3": 0.5},
        "lang:unspecified": {"n": 1, "f1": None, "em": None, "abstention_accuracy": 0.0, "recall@3": None},
        "tag:paraphrase": {"n": 3, "f1": pytest.approx(0.9), "em": 0.5, "abstention_accuracy": None, "recall@3": 0.75},
        "tag:unanswerable": {"n": 1, "f1": None, "em": None, "abstention_accuracy": 0.0, "recall@3": None},
        "tag:x-lingual": {"n": 2, "f1": 1.0, "em": 1.0, "abstention_accuracy": None, "recall@3": 1.0},
    }
