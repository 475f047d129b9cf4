"""Compare two runs (their summary.json) and fail when a metric got worse by more than a threshold.

    scripts/evaluate.py compare BASELINE_RUN CANDIDATE_RUN --metric f1 --max-drop 0.02

For each configuration present in both runs, "worse" follows the metric's direction (F1 down,
latency or cost up). `--max-drop` is absolute (in the metric's unit) unless `--relative`, where it is
a fraction of the baseline (0.1 = 10%). Exit status: 0 within the threshold, 1 when any configuration
is worse by more, 2 when the runs cannot be compared (no shared configuration, unknown metric, a
metric neither run has). A configuration that lost the metric (a value before, none now) fails.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .scoring import metric_table


class CompareError(Exception):
    """The runs cannot be compared: one line for people."""


@dataclass(frozen=True)
class Change:
    key: str
    baseline: float | None
    candidate: float | None
    worse_by: float | None  # positive = worse, in the threshold's unit
    failed: bool


def load_summary(run: Path) -> dict[str, Any]:
    path = run / "summary.json" if run.is_dir() else run
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError:
        raise CompareError(f"{path}: no summary.json there (give a run folder written by `evaluate.py run`)") from None
    except ValueError as error:
        raise CompareError(f"{path}: not valid JSON ({error})") from None


def direction(metric: str) -> bool:
    """True when higher is better, for the metrics a summary can hold (recall@k: k of scoring.K_VALUES)."""
    for entry in metric_table(judge=True):
        if entry.name == metric:
            return entry.higher_is_better
    raise CompareError(f"unknown metric {metric!r}; e.g. f1, em, abstention_accuracy, recall@3, mrr, latency_p95_ms, cost_per_1k_usd")


def compare(baseline: dict[str, Any], candidate: dict[str, Any], *, metric: str, max_drop: float, relative: bool = False) -> list[Change]:
    higher = direction(metric)
    before = {c["key"]: c for c in baseline.get("configurations", [])}
    after = {c["key"]: c for c in candidate.get("configurations", [])}
    shared = [key for key in before if key in after]
    if not shared:
        raise CompareError("the runs share no configuration (compare runs of the same target kind and matrix)")
    changes = []
    for key in shared:
        old = (before[key]["metrics"].get(metric) or {}).get("value")
        new = (after[key]["metrics"].get(metric) or {}).get("value")
        if old is None or new is None:
            changes.append(Change(key, old, new, None, failed=old is not None and new is None))
            continue
        worse = (old - new) if higher else (new - old)
        if relative:
            worse = worse / abs(old) if old else (0.0 if worse <= 0 else float("inf"))
        changes.append(Change(key, old, new, worse, failed=worse > max_drop))
    if all(change.baseline is None and change.candidate is None for change in changes):
        raise CompareError(f"neither run has a value of {metric} in the configurations they share: nothing to compare "
                           "(a judge metric needs --judge, recall@k a --top-k of at least k)")
    return changes


def render(changes: list[Change], metric: str, max_drop: float, relative: bool) -> str:
    unit = "relative" if relative else "absolute"
    lines = [f"{metric}: baseline -> candidate (fails when worse by more than {max_drop:g}, {unit})"]
    for change in changes:
        old = "n/a" if change.baseline is None else f"{change.baseline:.4g}"
        new = "n/a" if change.candidate is None else f"{change.candidate:.4g}"
        verdict = "FAIL" if change.failed else "ok"
        delta = "" if change.worse_by is None else f" (worse by {change.worse_by:+.4g})"
        lines.append(f"  {verdict:4} {change.key}: {old} -> {new}{delta}")
    return "\n".join(lines)
