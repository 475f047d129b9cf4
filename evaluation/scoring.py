"""Scores per answer, and per configuration the metrics with their bootstrap 95% intervals.

Which answers count for what:
- answer F1, exact match, answer recall and false abstention: answerable questions;
- abstention accuracy: unanswerable questions (did the target say it does not know?);
- recall@k, MRR: answerable questions with gold sources, in the modes that retrieve (rag, kb);
  ranked by the citation's number `n` (its rank in the prompt): the API returns the cited sources
  only, so these measure what reached the answer, a lower bound of what the retriever found;
- citation precision: answers with at least one citation (share of cited documents that are gold);
- latency p50/p95: the server's `timings_ms.total` (client round trip when absent); cached
  answers keep the latency measured when they were asked;
- failed questions (no answer after retries) count in `error_rate` and in no other metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence
from urllib.parse import unquote

from . import metrics
from .evalset import Question

K_VALUES = (1, 3, 5)


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    higher_is_better: bool
    statistic: str = "mean"  # or p50 / p95
    unit: str = ""


def metric_table(k_values: Sequence[int] = K_VALUES, judge: bool = False) -> list[Metric]:
    table = [
        Metric("f1", "answer F1", True),
        Metric("em", "exact match", True),
        Metric("answer_recall", "answer recall", True),
        Metric("abstention_accuracy", "abstention accuracy", True),
        Metric("false_abstention", "false abstention", False),
        *(Metric(f"recall@{k}", f"recall@{k}", True) for k in k_values),
        Metric("mrr", "MRR", True),
        Metric("citation_precision", "citation precision", True),
        Metric("latency_p50_ms", "latency p50", False, "p50", "ms"),
        Metric("latency_p95_ms", "latency p95", False, "p95", "ms"),
        Metric("input_tokens", "tokens in", False, "mean"),
        Metric("output_tokens", "tokens out", False, "mean"),
        Metric("cost_per_1k_usd", "cost / 1k queries", False, "mean", "USD"),
        Metric("error_rate", "error rate", False),
    ]
    if judge:
        table += [Metric("judge_faithfulness", "judge faithfulness (LLM, optional)", True),
                  Metric("judge_correctness", "judge correctness (LLM, optional)", True)]
    return table


def document_id(source: str) -> str:
    """`s3://bucket/prefix/eval/x/<id>`, `/path/to/<id>`, `file:///...<id>#chunk-3` -> `<id>`."""
    text = source.strip()
    if text.startswith("file://"):
        text = text[len("file://"):]
    text = unquote(text.split("#", 1)[0].split("?", 1)[0]).replace("\\", "/").rstrip("/")
    return text.rsplit("/", 1)[-1]


def score(question: Question, row: dict[str, Any], k_values: Sequence[int] = K_VALUES) -> dict[str, Any]:
    """The per-answer values (None = does not apply) from which the metrics are computed."""
    response = row.get("response") or {}
    if row.get("error") or not response:
        return {"error": 1.0}
    answer = response.get("answer") or ""
    char_level = metrics.char_level_for(question.lang, question.answers)
    ranked = metrics.ranked_documents(response.get("citations") or [], document_id)
    abstained = metrics.abstained(answer)
    retrieves = row["mode"] in ("rag", "kb")
    gold = set(question.sources)
    timings = response.get("timings_ms") or {}
    usage = response.get("usage") or {}
    values: dict[str, Any] = {
        "error": 0.0,
        "f1": metrics.token_f1(answer, question.answers, char_level=char_level),
        "em": metrics.exact_match(answer, question.answers, char_level=char_level),
        "answer_recall": metrics.token_recall(answer, question.answers, char_level=char_level),
        "abstained": abstained,
        "abstention_accuracy": None if question.answerable else float(abstained),
        "false_abstention": float(abstained) if question.answerable else None,
        "mrr": metrics.reciprocal_rank(ranked, gold) if retrieves else None,
        "citation_precision": metrics.citation_precision(ranked, gold),
        "latency_ms": timings.get("total") if isinstance(timings.get("total"), (int, float)) else row.get("elapsed_ms"),
        "input_tokens": usage.get("input_tokens"),
        "output_tokens": usage.get("output_tokens"),
        "documents": ranked,
    }
    for k in k_values:
        values[f"recall@{k}"] = metrics.recall_at_k(ranked, gold, k) if retrieves else None
    return values


_STATISTICS: dict[str, Callable[[Sequence[float]], float | None]] = {
    "mean": metrics.mean,
    "p50": lambda values: metrics.percentile(values, 50),
    "p95": lambda values: metrics.percentile(values, 95),
}


def _values(rows: Sequence[dict[str, Any]], metric: Metric) -> list[float]:
    if metric.name == "error_rate":
        return [row["scores"]["error"] for row in rows]
    answered = [row for row in rows if not row["scores"].get("error")]
    if metric.name in ("latency_p50_ms", "latency_p95_ms"):
        key = "latency_ms"
    elif metric.name == "cost_per_1k_usd":
        return [row["cost_usd"] * 1000.0 for row in answered if row.get("cost_usd") is not None]
    elif metric.name.startswith("judge_"):
        key = metric.name[len("judge_"):]
        return [float(row["judge"][key]) for row in answered if isinstance((row.get("judge") or {}).get(key), (int, float))]
    else:
        key = metric.name
    return [float(row["scores"][key]) for row in answered if isinstance(row["scores"].get(key), (int, float))
            and not isinstance(row["scores"].get(key), bool)]


def summarize(rows: Sequence[dict[str, Any]], table: Sequence[Metric], *, config_key: str, seed: int,
              resamples: int) -> dict[str, Any]:
    """{metric: {"value", "ci": [low, high] | None, "n"}} for one configuration's rows."""
    result: dict[str, Any] = {}
    for metric in table:
        values = _values(rows, metric)
        statistic = _STATISTICS[metric.statistic]
        value = statistic(values) if values else None
        ci = None
        if values and resamples > 0:
            ci = metrics.bootstrap_ci(values, statistic, resamples=resamples, rng=metrics.rng_for(seed, config_key, metric.name))
        result[metric.name] = {"value": value, "ci": list(ci) if ci else None, "n": len(values)}
    estimated = [row for row in rows if row.get("cost_estimated")]
    if estimated:
        result["cost_per_1k_usd"]["estimated"] = True
    return result


def breakdown(rows: Sequence[dict[str, Any]], questions: dict[str, Question]) -> dict[str, dict[str, Any]]:
    """Answer F1 and abstention accuracy by tag and by language (point values, no intervals)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        q = questions[row["question_id"]]
        for group in [f"lang:{q.lang or 'unspecified'}", *(f"tag:{tag}" for tag in q.tags)]:
            groups.setdefault(group, []).append(row)
    table = [Metric("f1", "", True), Metric("em", "", True), Metric("abstention_accuracy", "", True), Metric("recall@3", "", True)]
    out: dict[str, dict[str, Any]] = {}
    for group, members in sorted(groups.items()):
        out[group] = {"n": len(members)}
        for metric in table:
            values = _values(members, metric)
            out[group][metric.name] = metrics.mean(values) if values else None
    return out
