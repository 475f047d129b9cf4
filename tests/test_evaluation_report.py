"""The run reports: how each metric is printed, where the charts put a configuration, and the whole
report.md / report.html of a hand-made run as reviewed snapshots (a pull request shows every change
of what people read; `pytest --snapshot-update` rewrites them)."""

from __future__ import annotations

import re

import pytest
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from evaluation import report


class Text(SingleFileSnapshotExtension):
    _write_mode = WriteMode.TEXT


class Markdown(Text):
    file_extension = "md"


class Html(Text):
    file_extension = "html"


@pytest.mark.parametrize("metric, entry, text", [
    ("f1", {"value": 0.8125, "ci": [0.5, 0.9375]}, "0.81 [0.50, 0.94]"),
    ("f1", {"value": 0.8125, "ci": None}, "0.81"),
    ("f1", {"value": None, "ci": [0.1, 0.2]}, "n/a"),
    ("f1", None, "n/a"),
    ("latency_p95_ms", {"value": 1234.5, "ci": [999.4, 20000.0]}, "1,234 [999, 20,000]"),
    ("input_tokens", {"value": 12345.6}, "12,346"),
    ("output_tokens", {"value": 9.4}, "9"),
    ("cost_per_1k_usd", {"value": 0.123456, "ci": [0.1, 1.5]}, "0.1235 [0.1000, 1.50]"),
    ("cost_per_1k_usd", {"value": 1234.567, "estimated": True}, "1,234.57*"),
    ("cost_per_1k_usd", {"value": 0.5, "estimated": False}, "0.5000"),
    ("recall@3", {"value": 1.0, "ci": [1.0, 1.0]}, "1.00 [1.00, 1.00]"),
])
def test_each_metric_is_printed_in_its_unit(metric, entry, text):
    assert report.fmt(metric, entry) == text


def test_without_interval_on_request():
    assert report.fmt("f1", {"value": 0.5, "ci": [0.25, 0.75]}, with_ci=False) == "0.50"


@pytest.mark.parametrize("value, nice", [(0.0, 1.0), (-3.0, 1.0), (0.011, 0.02), (0.02, 0.02), (0.021, 0.025), (0.03, 0.05), (0.07, 0.1),
                                         (1.0, 1.0), (1.5, 2.0), (2.4, 2.5), (4.9, 5.0), (7.0, 10.0), (12.0, 20.0), (2600.0, 5000.0)])
def test_chart_axes_end_on_a_round_number(value, nice):
    assert report._nice_max(value) == pytest.approx(nice)


def _config(key: str, f1, cost, *, ci=None, estimated=False, n=4, breakdown=None) -> dict:
    metrics = {"f1": {"value": f1, "ci": ci, "n": n}, "em": {"value": 0.25, "ci": [0.0, 0.5], "n": n},
               "answer_recall": {"value": 0.9, "ci": None, "n": n}, "abstention_accuracy": {"value": 1.0, "ci": [1.0, 1.0], "n": 1},
               "false_abstention": {"value": 0.0, "ci": None, "n": 3},
               "recall@1": {"value": 0.5, "ci": None, "n": 3}, "recall@3": {"value": 0.75, "ci": None, "n": 3},
               "recall@5": {"value": 1.0, "ci": None, "n": 3}, "mrr": {"value": 0.625, "ci": [0.5, 0.75], "n": 3},
               "citation_precision": {"value": 0.5, "ci": None, "n": 3},
               "latency_p50_ms": {"value": 950.0, "ci": [900.0, 1000.0], "n": n}, "latency_p95_ms": {"value": 1999.0, "ci": None, "n": n},
               "input_tokens": {"value": 1200.0, "ci": None, "n": n}, "output_tokens": {"value": 40.0, "ci": None, "n": n},
               "cost_per_1k_usd": {"value": cost, "ci": None, "n": n, **({"estimated": True} if estimated else {})},
               "error_rate": {"value": 0.0, "ci": [0.0, 0.0], "n": n},
               "judge_faithfulness": {"value": 0.875, "ci": None, "n": 2}, "judge_correctness": {"value": None, "ci": None, "n": 0}}
    mode, retriever, generator = key.split("/")
    return {"key": key, "mode": mode, "retriever": retriever, "generator": generator, "model": "amazon.nova-lite-v1:0" if generator == "bedrock" else None,
            "n": n, "errors": 0, "metrics": metrics, "breakdown": breakdown or {}}


def _run(**extra) -> dict:
    run = {"eval_set_name": "osfc <test>", "split": "test", "questions": 4, "target": "stage dev", "started": "2026-11-30 12:00:00Z",
           "finished": "2026-11-30 12:03:00Z", "seed": 13, "resamples": 1000, "prices_checked": "2026-11-01", "calls": 7, "cached": 1,
           "k_values": [1, 3], "judge": None, "overhead": {"harness_cpu_s": 1.234, "call_s": 56.78, "ratio": 0.0217}}
    return {**run, **extra}


def _summary(**run) -> dict:
    return {
        "run": _run(**run),
        "configurations": [
            _config("rag/kb/bedrock", 0.75, 0.02, ci=[0.5, 1.0], breakdown={
                "lang:en": {"n": 3, "f1": 0.75, "abstention_accuracy": None}, "tag:unanswerable": {"n": 1, "f1": None, "abstention_accuracy": 1.0}}),
            _config("kb/kb/bedrock", 0.5, 0.1, estimated=True, breakdown={"lang:en": {"n": 3, "f1": 0.5}}),
            _config("prompt/-/base", None, 0.0),
        ],
        "skipped": [{"key": "*/*/finetuned", "reason": "no model on this stage yet: start a fine-tuning run"}],
        "fixed_cost_per_hour": {"total_usd": 1.5, "items": {"OpenSearch 1 x t3.small.search": 1.25, "SageMaker endpoint 1 x ml.inf2.xlarge": 0.25}},
    }


ROWS = [{"config": "rag/kb/bedrock", "scores": {"latency_ms": v}} for v in (800.0, 900.0, 1000.0, 1100.0, 3000.0)] + [
    {"config": "kb/kb/bedrock", "scores": {"latency_ms": 2000}}, {"config": "kb/kb/bedrock", "scores": {"latency_ms": None}},
    {"config": "prompt/-/base", "scores": {"error": 1.0}}]


def test_the_markdown_report(snapshot):
    text = report.markdown(_summary())
    header = text.splitlines()[4]
    # recall@k only for the run's k values; no judge column without a judge
    assert header == ("| configuration | model | answer F1 | exact match | answer recall | abstention accuracy | recall@1 | recall@3 | MRR | "
                      "citation precision | latency p50 | latency p95 | tokens in | tokens out | cost / 1k queries | error rate |")
    assert "| `kb/kb/bedrock` | amazon.nova-lite-v1:0 | 0.50 |" in text and "| 0.1000* |" in text
    assert "Fixed cost of the target: 1.500 USD per hour (OpenSearch 1 x t3.small.search: 1.250; SageMaker endpoint 1 x ml.inf2.xlarge: 0.250)." in text
    assert "Harness overhead: 1.23 s of CPU for 56.8 s of calls (2.2%)." in text
    assert text == snapshot(extension_class=Markdown)
    judged = report.markdown(_summary(judge="anthropic.claude-3-haiku-20240307-v1:0", k_values=None, overhead={}))
    assert "| recall@3 |" in judged and "recall@5" not in judged and "judge faithfulness (LLM, optional) | judge correctness (LLM, optional) |" in judged
    assert "| 0.88 | n/a |" in judged  # the judge's values, and n/a where it gave none
    assert judged.endswith("LLM-as-judge scores (optional, model `anthropic.claude-3-haiku-20240307-v1:0`) are a model's opinion, "
                           "not a measurement.\n")
    bare = report.markdown({**_summary(), "skipped": [], "fixed_cost_per_hour": {}})
    assert "Skipped" not in bare and "Fixed cost of the target: 0.000 USD per hour." in bare


def test_the_html_report(snapshot):
    page = report.html_report(_summary(), ROWS)
    assert page.startswith("<!doctype html>") and page.endswith("</body></html>\n")
    assert "<title>Evaluation: osfc &lt;test&gt;</title>" in page  # escaped
    for remote in ("<script", "src=", "href=", "@import", "url("):
        assert remote not in page
    # the break-down: F1 per group, abstention accuracy for the unanswerable ones, n/a where a configuration has no value
    assert ("<tr><td class=l>lang:en</td><td>3</td><td>0.75</td><td>0.50</td><td>n/a</td></tr>"
            "<tr><td class=l>tag:unanswerable</td><td>1</td><td>1.00</td><td>n/a</td><td>n/a</td></tr>") in page
    assert "<li class=skip><code>*/*/finetuned</code>: no model on this stage yet: start a fine-tuning run</li>" in page
    assert "<td>0.75<br><span class=ci>[0.50, 1.00]</span></td>" in page
    assert page == snapshot(extension_class=Html)
    judged = report.html_report(_summary(judge="anthropic.claude-3-haiku-20240307-v1:0"), [])
    assert "come from <code>anthropic.claude-3-haiku-20240307-v1:0</code>, a model of another family" in judged
    assert "<h2>Skipped</h2>" not in report.html_report({**_summary(), "skipped": []}, [])


def test_quality_against_cost_places_each_configuration():
    svg = report.quality_cost_svg(_summary())
    # x axis 0 .. nice(0.1 * 1.1) = 0.2 over 470 px from x=60; y axis 1 .. 0 over 300 px from y=16
    assert '<circle cx="107.0" cy="91.0" r="5" fill="#0969da"><title>rag/kb/bedrock: 0.75 at 0.0200 USD</title></circle>' in svg
    assert '<line x1="107.0" x2="107.0" y1="166.0" y2="16.0" stroke="#0969da" stroke-width="2"/>' in svg  # its 95% interval
    assert '<circle cx="295.0" cy="166.0" r="5" fill="#cf222e"><title>kb/kb/bedrock: 0.50 at 0.1000 USD</title></circle>' in svg
    assert "prompt/-/base" not in svg  # no F1: not on the chart
    assert [float(t) for t in re.findall(r'text-anchor="middle" font-size="11">([0-9.e-]+)</text>', svg)] == [0, 0.04, 0.08, 0.12, 0.16, 0.2]
    assert '<circle cx="295.0" cy="241.0"' in report.quality_cost_svg(_summary(), quality="em")  # another quality: em 0.25
    assert report.quality_cost_svg({"configurations": [_config("x/-/y", None, 0.1)]}) == (
        '<svg width="760" height="60" role="img"><text x="12" y="34">no configuration has both f1 and a cost</text></svg>')


def test_latency_box_plots_by_hand():
    svg = report.latency_svg({"rag/kb/bedrock": [800.0, 900.0, 1000.0, 1100.0, 3000.0], "empty": []})
    # p99 3000 * 1.05 -> axis 0 .. 5000 ms over 566 px from x=170; p5 820, p25 900, p50 1000, p75 1100, p95 2620
    assert '<line x1="262.8" x2="466.6" y1="29.0" y2="29.0" stroke="#0969da"/>' in svg  # whiskers p5 .. p95
    assert '<rect x="271.9" y="21.0" width="22.6" height="16" fill="#0969da"' in svg  # box p25 .. p75
    assert "<title>rag/kb/bedrock: median 1,000 ms, p95 2,620 ms, n=5</title>" in svg
    assert 'height="82"' in svg and "empty" not in svg
    assert report.latency_svg({}) == '<svg width="760" height="40" role="img"><text x="12" y="26">no latencies</text></svg>'
