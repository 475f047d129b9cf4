"""One folder per run: results.jsonl (every answer), summary.json, report.md and report.html.

report.html is self-contained (inline CSS and SVG, no script, no network asset): a table of every
configuration's metrics with their 95% intervals, quality against cost, latency distributions,
and the break-down by language and tag.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any, Sequence

from . import metrics
from .scoring import Metric, metric_table

MAIN = ("f1", "em", "answer_recall", "abstention_accuracy", "recall@1", "recall@3", "mrr", "citation_precision",
        "latency_p50_ms", "latency_p95_ms", "input_tokens", "output_tokens", "cost_per_1k_usd", "error_rate")


def write_results(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def fmt(metric_name: str, entry: dict[str, Any] | None, *, with_ci: bool = True) -> str:
    if not entry or entry.get("value") is None:
        return "n/a"

    def one(value: float) -> str:
        if metric_name.endswith("_ms"):
            return f"{value:,.0f}"
        if metric_name == "cost_per_1k_usd":
            return f"{value:.4f}" if value < 1 else f"{value:,.2f}"
        if metric_name.endswith("tokens"):
            return f"{value:,.0f}"
        return f"{value:.2f}"

    text = one(entry["value"])
    if metric_name == "cost_per_1k_usd" and entry.get("estimated"):
        text += "*"
    if with_ci and entry.get("ci"):
        low, high = entry["ci"]
        text += f" [{one(low)}, {one(high)}]"
    return text


def _table_metrics(summary: dict[str, Any]) -> list[Metric]:
    names = set(MAIN) | ({"judge_faithfulness", "judge_correctness"} if summary["run"].get("judge") else set())
    ks = summary["run"].get("k_values") or [1, 3, 5]
    return [m for m in metric_table(ks, bool(summary["run"].get("judge"))) if m.name in names and
            (not m.name.startswith("recall@") or int(m.name[7:]) in ks)]


def markdown(summary: dict[str, Any]) -> str:
    run = summary["run"]
    table = _table_metrics(summary)
    lines = [
        f"# Evaluation: {run['eval_set_name']} ({run['split']}, {run['questions']} questions) against {run['target']}",
        "",
        f"Run {run['started']}; seed {run['seed']}, {run['resamples']} bootstrap resamples; values are means "
        "with their 95% interval [low, high]; latency is the server's total time (ms); cost is USD per 1,000 "
        f"queries from pricing/ (checked {run.get('prices_checked')}); `*` = estimated from text length.",
        "",
        "| configuration | model | " + " | ".join(m.label for m in table) + " |",
        "| --- | --- | " + " | ".join("---" for _ in table) + " |",
    ]
    for config in summary["configurations"]:
        cells = [fmt(m.name, config["metrics"].get(m.name)) for m in table]
        lines.append(f"| `{config['key']}` | {config.get('model') or ''} | " + " | ".join(cells) + " |")
    fixed = summary.get("fixed_cost_per_hour") or {}
    lines += ["", f"Fixed cost of the target: {fixed.get('total_usd', 0):.3f} USD per hour"
              + (" (" + "; ".join(f"{k}: {v:.3f}" for k, v in fixed.get("items", {}).items()) + ")" if fixed.get("items") else "")
              + "."]
    if summary.get("skipped"):
        lines += ["", "Skipped configurations:", ""]
        lines += [f"- `{s['key']}`: {s['reason']}" for s in summary["skipped"]]
    if run.get("judge"):
        lines += ["", f"LLM-as-judge scores (optional, model `{run['judge']}`) are a model's opinion, not a measurement."]
    overhead = run.get("overhead") or {}
    if overhead.get("ratio") is not None:
        lines += ["", f"Harness overhead: {overhead['harness_cpu_s']:.2f} s of CPU for {overhead['call_s']:.1f} s of calls "
                  f"({100 * overhead['ratio']:.1f}%)."]
    return "\n".join(lines) + "\n"


# --- HTML ---------------------------------------------------------------------------------------
CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1b1f24;max-width:1400px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}table{border-collapse:collapse;font-size:12.5px}
th,td{border:1px solid #d0d7de;padding:4px 7px;text-align:right;white-space:nowrap}th{background:#f6f8fa;white-space:normal;min-width:52px}
td.l,th.l{text-align:left}.ci{color:#57606a;font-size:11px}.note{color:#57606a}svg{background:#fff;border:1px solid #d0d7de}
.skip{color:#9a6700}code{background:#f6f8fa;padding:0 3px}
"""
PALETTE = ("#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#0a3069", "#e16f24", "#57606a", "#a40e26", "#116329")


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _cell(metric_name: str, entry: dict[str, Any] | None) -> str:
    main = fmt(metric_name, entry, with_ci=False)
    if entry and entry.get("ci"):
        low, high = (fmt(metric_name, {"value": v}, with_ci=False) for v in entry["ci"])
        return f"{_e(main)}<br><span class=ci>[{_e(low)}, {_e(high)}]</span>"
    return _e(main)


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def quality_cost_svg(summary: dict[str, Any], quality: str = "f1") -> str:
    points = []
    for i, config in enumerate(summary["configurations"]):
        q = config["metrics"].get(quality) or {}
        c = config["metrics"].get("cost_per_1k_usd") or {}
        if q.get("value") is not None and c.get("value") is not None:
            points.append((config["key"], c["value"], q["value"], q.get("ci"), PALETTE[i % len(PALETTE)]))
    width, height, left, bottom, top, right = 760, 360, 60, 44, 16, 230
    if not points:
        return f'<svg width="{width}" height="60" role="img"><text x="12" y="34">no configuration has both {quality} and a cost</text></svg>'
    x_max = _nice_max(max(p[1] for p in points) * 1.1)
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(v: float) -> float:
        return left + plot_w * v / x_max

    def y(v: float) -> float:
        return top + plot_h * (1 - v)

    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{_e(quality)} against cost">']
    for tick in range(0, 6):
        value = tick / 5
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#eaeef2"/>'
                     f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end" font-size="11">{value:.1f}</text>')
        xv = x_max * tick / 5
        parts.append(f'<text x="{x(xv):.1f}" y="{top + plot_h + 16}" text-anchor="middle" font-size="11">{xv:.3g}</text>')
    parts.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#57606a"/>'
                 f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#57606a"/>'
                 f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle" font-size="12">USD per 1,000 queries (variable cost)</text>'
                 f'<text x="14" y="{top + plot_h / 2}" font-size="12" transform="rotate(-90 14 {top + plot_h / 2})" text-anchor="middle">{_e(quality)}</text>')
    for n, (key, cost, value, ci, colour) in enumerate(points):
        if ci:
            parts.append(f'<line x1="{x(cost):.1f}" x2="{x(cost):.1f}" y1="{y(ci[0]):.1f}" y2="{y(ci[1]):.1f}" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<circle cx="{x(cost):.1f}" cy="{y(value):.1f}" r="5" fill="{colour}"><title>{_e(key)}: {value:.2f} at {cost:.4f} USD</title></circle>')
        legend_y = top + 14 + 18 * n
        parts.append(f'<circle cx="{width - right + 16}" cy="{legend_y - 4}" r="5" fill="{colour}"/>'
                     f'<text x="{width - right + 26}" y="{legend_y}" font-size="12">{_e(key)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def latency_svg(rows_by_config: dict[str, list[float]]) -> str:
    """Box plots (p5, p25, median, p75, p95) of the latencies of each configuration."""
    series = [(key, values) for key, values in rows_by_config.items() if values]
    width, left, right, row_h, top = 760, 170, 24, 26, 16
    if not series:
        return f'<svg width="{width}" height="40" role="img"><text x="12" y="26">no latencies</text></svg>'
    height = top + row_h * len(series) + 40
    x_max = _nice_max(max(metrics.percentile(values, 99) or 0 for _, values in series) * 1.05)
    plot_w = width - left - right

    def x(v: float) -> float:
        return left + plot_w * min(v, x_max) / x_max

    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="latency distributions">']
    for tick in range(0, 6):
        xv = x_max * tick / 5
        parts.append(f'<line x1="{x(xv):.1f}" x2="{x(xv):.1f}" y1="{top}" y2="{height - 34}" stroke="#eaeef2"/>'
                     f'<text x="{x(xv):.1f}" y="{height - 20}" text-anchor="middle" font-size="11">{xv:,.0f}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle" font-size="12">milliseconds (box: p25-p75, whiskers: p5-p95, line: median)</text>')
    for n, (key, values) in enumerate(series):
        colour = PALETTE[n % len(PALETTE)]
        mid = top + row_h * n + row_h / 2
        p5, p25, p50, p75, p95 = (metrics.percentile(values, q) for q in (5, 25, 50, 75, 95))
        parts.append(f'<text x="{left - 8}" y="{mid + 4:.1f}" text-anchor="end" font-size="12">{_e(key)}</text>'
                     f'<line x1="{x(p5):.1f}" x2="{x(p95):.1f}" y1="{mid:.1f}" y2="{mid:.1f}" stroke="{colour}"/>'
                     f'<rect x="{x(p25):.1f}" y="{mid - 8:.1f}" width="{max(1.0, x(p75) - x(p25)):.1f}" height="16" fill="{colour}" fill-opacity="0.25" stroke="{colour}"/>'
                     f'<line x1="{x(p50):.1f}" x2="{x(p50):.1f}" y1="{mid - 8:.1f}" y2="{mid + 8:.1f}" stroke="{colour}" stroke-width="2">'
                     f'<title>{_e(key)}: median {p50:,.0f} ms, p95 {p95:,.0f} ms, n={len(values)}</title></line>')
    parts.append("</svg>")
    return "".join(parts)


def html_report(summary: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    run = summary["run"]
    table = _table_metrics(summary)
    head = "".join(f"<th>{_e(m.label)}{' (' + m.unit + ')' if m.unit else ''}</th>" for m in table)
    body_rows = []
    for config in summary["configurations"]:
        cells = "".join(f"<td>{_cell(m.name, config['metrics'].get(m.name))}</td>" for m in table)
        body_rows.append(f"<tr><td class=l><code>{_e(config['key'])}</code></td><td class=l>{_e(config.get('model') or '')}</td>"
                         f"<td>{config['n']}</td>{cells}</tr>")
    latencies: dict[str, list[float]] = {}
    for row in rows:
        value = (row.get("scores") or {}).get("latency_ms")
        if isinstance(value, (int, float)):
            latencies.setdefault(row["config"], []).append(float(value))
    groups = sorted({g for c in summary["configurations"] for g in c.get("breakdown", {})})
    breakdown_rows = []
    for group in groups:
        cells = []
        for config in summary["configurations"]:
            entry = config.get("breakdown", {}).get(group) or {}
            value = entry.get("abstention_accuracy") if group == "tag:unanswerable" else entry.get("f1")
            cells.append(f"<td>{'n/a' if value is None else f'{value:.2f}'}</td>")
        count = next((c["breakdown"][group]["n"] for c in summary["configurations"] if group in c.get("breakdown", {})), 0)
        breakdown_rows.append(f"<tr><td class=l>{_e(group)}</td><td>{count}</td>{''.join(cells)}</tr>")
    fixed = summary.get("fixed_cost_per_hour") or {}
    fixed_items = "".join(f"<li>{_e(k)}: {v:.3f} USD/h</li>" for k, v in (fixed.get("items") or {}).items())
    skipped = "".join(f"<li class=skip><code>{_e(s['key'])}</code>: {_e(s['reason'])}</li>" for s in summary.get("skipped", []))
    overhead = run.get("overhead") or {}
    judge_note = (f"<p class=note>Judge scores (optional, off by default) come from <code>{_e(run['judge'])}</code>, a model of another "
                  "family than the generators: an opinion, not a measurement.</p>") if run.get("judge") else ""
    config_heads = "".join(f"<th>{_e(c['key'])}</th>" for c in summary["configurations"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Evaluation: {_e(run['eval_set_name'])}</title><style>{CSS}</style></head><body>
<h1>Evaluation: {_e(run['eval_set_name'])} ({_e(run['split'])}, {run['questions']} questions) against {_e(run['target'])}</h1>
<p class=note>Run {_e(run['started'])} - {_e(run.get('finished', ''))}. Seed {run['seed']}, {run['resamples']} bootstrap resamples: each value
is shown with its 95% interval. Latency is the server's total time. Cost is the variable cost per 1,000 queries from
<code>pricing/</code> (checked {_e(run.get('prices_checked'))}); * marks costs estimated from text length.
{_e(run.get('calls', 0))} calls made, {_e(run.get('cached', 0))} answers from the cache.</p>
<h2>Configurations</h2>
<table><tr><th class=l>configuration</th><th class=l>model</th><th>n</th>{head}</tr>{''.join(body_rows)}</table>
{judge_note}
<h2>Quality against cost</h2>
{quality_cost_svg(summary)}
<p class=note>Fixed cost of the target: {fixed.get('total_usd', 0):.3f} USD per hour, asked or not.</p><ul>{fixed_items}</ul>
<h2>Latency distributions</h2>
{latency_svg(latencies)}
<h2>Answer F1 by language and tag (abstention accuracy for unanswerable)</h2>
<table><tr><th class=l>group</th><th>questions</th>{config_heads}</tr>{''.join(breakdown_rows)}</table>
{'<h2>Skipped</h2><ul>' + skipped + '</ul>' if skipped else ''}
<p class=note>Harness overhead: {overhead.get('harness_cpu_s', 0):.2f} s CPU for {overhead.get('call_s', 0):.1f} s of calls
({100 * (overhead.get('ratio') or 0):.1f}%). Every answer is in results.jsonl.</p>
</body></html>
"""
