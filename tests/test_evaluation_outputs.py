"""What the harness hands on: the CI gate between two runs (`evaluate.py compare`) and the Bedrock
evaluation export, with exact values and file contents on small hand-made runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation import bedrock_export, cli
from evaluation.compare import Change, CompareError, compare, direction, load_summary, render


def _summary(**configs: dict) -> dict:
    """{"configurations": [...]} with each configuration's metric values."""
    return {"configurations": [{"key": key.replace("__", "/"), "metrics": {name: {"value": value, "ci": None, "n": 3}
                                                                       for name, value in metrics.items()}}
                               for key, metrics in configs.items()]}


@pytest.mark.parametrize("metric, higher", [
    ("f1", True), ("recall@1", True), ("recall@5", True), ("mrr", True), ("judge_correctness", True), ("judge_faithfulness", True),
    ("latency_p95_ms", False), ("cost_per_1k_usd", False), ("error_rate", False), ("false_abstention", False),
])
def test_the_direction_of_every_metric(metric, higher):
    assert direction(metric) is higher


@pytest.mark.parametrize("metric", ["nope", "recall@10", "recall@0", "F1"])
def test_a_metric_no_summary_holds_is_refused(metric):
    with pytest.raises(CompareError) as caught:
        direction(metric)
    assert str(caught.value) == (f"unknown metric {metric!r}; e.g. f1, em, abstention_accuracy, recall@3, mrr, latency_p95_ms, "
                                 "cost_per_1k_usd")


def test_worse_follows_the_metric_direction_and_the_threshold_is_exclusive():
    base = _summary(a=dict(f1=0.5, latency_p95_ms=100.0), b=dict(f1=0.75, latency_p95_ms=200.0), only_base=dict(f1=0.1))
    new = _summary(b=dict(f1=0.5, latency_p95_ms=150.0), a=dict(f1=0.25, latency_p95_ms=125.0), only_new=dict(f1=0.9))
    assert compare(base, new, metric="f1", max_drop=0.25) == [
        Change("a", 0.5, 0.25, 0.25, failed=False),  # worse by exactly the threshold: within it
        Change("b", 0.75, 0.5, 0.25, failed=False)]
    assert [c.failed for c in compare(base, new, metric="f1", max_drop=0.2)] == [True, True]
    assert compare(base, new, metric="latency_p95_ms", max_drop=10) == [
        Change("a", 100.0, 125.0, 25.0, failed=True), Change("b", 200.0, 150.0, -50.0, failed=False)]
    assert compare(base, new, metric="latency_p95_ms", max_drop=0.25, relative=True) == [
        Change("a", 100.0, 125.0, 0.25, failed=False), Change("b", 200.0, 150.0, -0.25, failed=False)]


def test_relative_to_a_zero_baseline_and_lost_or_new_values():
    base = _summary(zero=dict(latency_p50_ms=0.0, f1=0.0), same=dict(latency_p50_ms=0.0, f1=None), lost=dict(latency_p50_ms=10.0, f1=0.5),
                    new=dict(latency_p50_ms=None, f1=None))
    cand = _summary(zero=dict(latency_p50_ms=0.5, f1=0.5), same=dict(latency_p50_ms=0.0, f1=0.5), lost=dict(latency_p50_ms=None),
                    new=dict(latency_p50_ms=7.0))
    assert compare(base, cand, metric="latency_p50_ms", max_drop=0.1, relative=True) == [
        Change("zero", 0.0, 0.5, float("inf"), failed=True),  # anything worse than nothing is infinitely worse
        Change("same", 0.0, 0.0, 0.0, failed=False),
        Change("lost", 10.0, None, None, failed=True),  # the candidate lost the metric
        Change("new", None, 7.0, None, failed=False)]
    assert compare(base, cand, metric="f1", max_drop=0.0, relative=True)[:2] == [
        Change("zero", 0.0, 0.5, 0.0, failed=False), Change("same", None, 0.5, None, failed=False)]


def test_runs_that_cannot_be_compared_are_an_error():
    with pytest.raises(CompareError) as caught:
        compare(_summary(a=dict(f1=1.0)), _summary(b=dict(f1=1.0)), metric="f1", max_drop=0.1)
    assert str(caught.value) == "the runs share no configuration (compare runs of the same target kind and matrix)"
    with pytest.raises(CompareError) as caught:
        compare({}, {}, metric="f1", max_drop=0.1)
    assert "share no configuration" in str(caught.value)
    # a gate on a metric neither run measured would always pass: it is refused instead
    with pytest.raises(CompareError) as caught:
        compare(_summary(a=dict(f1=1.0)), _summary(a=dict(f1=0.0)), metric="judge_correctness", max_drop=0.1)
    assert str(caught.value) == ("neither run has a value of judge_correctness in the configurations they share: nothing to compare "
                                 "(a judge metric needs --judge, recall@k a --top-k of at least k)")


def test_the_gate_prints_one_line_per_configuration():
    changes = [Change("rag/kb/base", 0.81234, 0.7, 0.11234, True), Change("rag/kb/bedrock", 0.5, 0.6, -0.1, False),
               Change("prompt/-/base", None, 0.5, None, False), Change("kb/kb/bedrock", 0.5, None, None, True)]
    assert render(changes, "f1", 0.02, False) == (
        "f1: baseline -> candidate (fails when worse by more than 0.02, absolute)\n"
        "  FAIL rag/kb/base: 0.8123 -> 0.7 (worse by +0.1123)\n"
        "  ok   rag/kb/bedrock: 0.5 -> 0.6 (worse by -0.1)\n"
        "  ok   prompt/-/base: n/a -> 0.5\n"
        "  FAIL kb/kb/bedrock: 0.5 -> n/a")
    assert render([], "latency_p95_ms", 0.1, True) == "latency_p95_ms: baseline -> candidate (fails when worse by more than 0.1, relative)"


def test_a_summary_is_read_from_a_run_folder_or_a_file(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(_summary(a=dict(f1=0.5))), encoding="utf-8")
    assert load_summary(run) == load_summary(run / "summary.json") == _summary(a=dict(f1=0.5))
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    with pytest.raises(CompareError) as caught:
        load_summary(tmp_path / "bad.json")
    assert str(caught.value).startswith(f"{tmp_path / 'bad.json'}: not valid JSON (Expecting property name")
    with pytest.raises(CompareError) as caught:
        load_summary(tmp_path / "none")
    assert str(caught.value) == f"{tmp_path / 'none'}: no summary.json there (give a run folder written by `evaluate.py run`)"
    # the command: exit 1 on a failed gate, 2 when nothing can be compared
    worse = tmp_path / "worse.json"
    worse.write_text(json.dumps(_summary(a=dict(f1=0.4))), encoding="utf-8")
    assert cli.main(["compare", str(run), str(worse), "--max-drop", "0.05"]) == 1
    assert cli.main(["compare", str(run), str(worse), "--max-drop", "0.25", "--relative"]) == 0
    assert cli.main(["compare", str(run), str(worse), "--metric", "mrr"]) == 2
    out, err = capsys.readouterr()
    assert out.splitlines()[1] == "  FAIL a: 0.5 -> 0.4 (worse by +0.1)" and out.splitlines()[3] == "  ok   a: 0.5 -> 0.4 (worse by +0.2)"
    assert err == "error: neither run has a value of mrr in the configurations they share: nothing to compare " \
                  "(a judge metric needs --judge, recall@k a --top-k of at least k)\n"


# --- the Bedrock export ---------------------------------------------------------------------------

def _row(config: str, question: str, *, answer="It does [1].", references=("26 knots",), model="amazon.nova-lite-v1:0", error=None,
         citations=None) -> dict:
    mode = config.split("/")[0]
    response = None if error else {"answer": answer, "model": model, "citations": [
        {"n": 1, "source": "s3://docs/documents/eval/x/fast.md#chunk-2", "excerpt": "26 knots"}] if citations is None else citations}
    return {"config": config, "mode": mode, "question": question, "references": list(references), "response": response, "error": error}


def test_export_writes_one_dataset_and_job_per_retrieving_configuration(tmp_path):
    rows = [
        _row("rag/kb/fine_tuned", "How fast?"),
        _row("rag/kb/fine_tuned", "Cabin price?", answer="", references=(), model="",
             citations=[{"n": 1, "source": "/srv/corpus/fare.md"}, {"n": 2, "source": None}]),
        _row("rag/kb/fine_tuned", "Failed?", error="HTTP 502"),
        _row("prompt/-/fine_tuned", "How fast?"),  # no retrieval: nothing a RAG evaluation can use
        _row("kb/kb/bedrock", "How fast?", model=None),
    ]
    written = bedrock_export.export(rows, tmp_path / "new" / "out", run_name="20261130T1200Z_OSFC run")
    out = tmp_path / "new" / "out"
    assert written == [out / "kb-kb-bedrock.jsonl", out / "job-kb-kb-bedrock.json", out / "rag-kb-fine-tuned.jsonl",
                       out / "job-rag-kb-fine-tuned.json"]
    lines = (out / "rag-kb-fine-tuned.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        {"conversationTurns": [{"prompt": {"content": [{"text": "How fast?"}]},
                                "referenceResponses": [{"content": [{"text": "26 knots"}]}],
                                "output": {"text": "It does [1].", "knowledgeBaseIdentifier": "rag-kb-fine-tuned",
                                           "retrievedPassages": {"retrievalResults": [
                                               {"name": "fast.md", "content": {"text": "26 knots"},
                                                "metadata": {"source": "s3://docs/documents/eval/x/fast.md#chunk-2"}}]},
                                           "modelIdentifier": "amazon.nova-lite-v1:0"}}]},
        {"conversationTurns": [{"prompt": {"content": [{"text": "Cabin price?"}]},
                                "referenceResponses": [{"content": [{"text": "The sources do not contain the answer."}]}],
                                "output": {"text": "", "knowledgeBaseIdentifier": "rag-kb-fine-tuned",
                                           "retrievedPassages": {"retrievalResults": [
                                               {"name": "fare.md", "content": {"text": ""}, "metadata": {"source": "/srv/corpus/fare.md"}}]}}}]},
    ]
    assert "modelIdentifier" not in json.loads((out / "kb-kb-bedrock.jsonl").read_text())["conversationTurns"][0]["output"]
    job = (out / "job-rag-kb-fine-tuned.json").read_text(encoding="utf-8")
    assert job.endswith("}\n") and json.loads(job) == {
        "jobName": "20261130t1200z-osfc-run-rag-kb-fine-tuned",
        "roleArn": "arn:aws:iam::<ACCOUNT>:role/<BEDROCK_EVALUATION_ROLE>",
        "applicationType": "RagEvaluation",
        "evaluationConfig": {"automated": {
            "datasetMetricConfigs": [{"taskType": "QuestionAndAnswer", "dataset": {
                "name": "rag-kb-fine-tuned", "datasetLocation": {"s3Uri": "s3://<BUCKET>/bedrock-evaluation/input/rag-kb-fine-tuned.jsonl"}},
                "metricNames": ["Builtin.Correctness", "Builtin.Completeness", "Builtin.Helpfulness", "Builtin.LogicalCoherence",
                                "Builtin.Faithfulness"]}],
            "evaluatorModelConfig": {"bedrockEvaluatorModels": [{"modelIdentifier": "<EVALUATOR_MODEL_ID>"}]}}},
        "inferenceConfig": {"ragConfigs": [{"precomputedRagSourceConfig": {"retrieveAndGenerateSourceConfig": {
            "ragSourceIdentifier": "rag-kb-fine-tuned"}}}]},
        "outputDataConfig": {"s3Uri": "s3://<BUCKET>/bedrock-evaluation/output/"},
    }


def test_large_runs_are_split_into_numbered_datasets_within_the_job_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(bedrock_export, "MAX_PROMPTS", 2)
    rows = [_row("rag/opensearch/base", f"q{i}?") for i in range(5)] + [_row("kb/kb/bedrock", "q?")]
    run = "r-" + "x" * 70
    written = bedrock_export.export(rows, tmp_path, run_name=run, dataset_prefix="s3://bucket/in/")
    assert [p.name for p in written] == ["kb-kb-bedrock.jsonl", "job-kb-kb-bedrock.json"] + [
        name for part in (1, 2, 3) for name in (f"rag-opensearch-base-{part}.jsonl", f"job-rag-opensearch-base-{part}.json")]
    assert [len((tmp_path / f"rag-opensearch-base-{part}.jsonl").read_text().splitlines()) for part in (1, 2, 3)] == [2, 2, 1]
    assert [json.loads(line)["conversationTurns"][0]["prompt"]["content"][0]["text"]
            for line in (tmp_path / "rag-opensearch-base-3.jsonl").read_text().splitlines()] == ["q4?"]
    third = json.loads((tmp_path / "job-rag-opensearch-base-3.json").read_text())
    assert third["evaluationConfig"]["automated"]["datasetMetricConfigs"][0]["dataset"]["datasetLocation"] == {
        "s3Uri": "s3://bucket/in/rag-opensearch-base-3.jsonl"}
    assert third["jobName"] == ("r-" + "x" * 70)[:63]  # the API's 63 characters, no dash at the end
    assert json.loads((tmp_path / "job-kb-kb-bedrock.json").read_text())["jobName"] == ("r-" + "x" * 70)[:63]
    assert json.loads((tmp_path / "job-rag-opensearch-base-1.json").read_text())["jobName"] == "r-" + "x" * 61
    dashes = bedrock_export.export([_row("kb/kb/bedrock", "q?")], tmp_path / "d", run_name="run" + "-" * 60 + "x")
    assert json.loads(dashes[1].read_text())["jobName"] == "run"


def test_export_bedrock_command(tmp_path, capsys):
    run = tmp_path / "20261130-run"
    run.mkdir()
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [_row("rag/kb/base", "q?"), _row("prompt/-/base", "q?")]))
    assert cli.main(["export-bedrock", str(run), "--dataset-prefix", "s3://b/in/"]) == 0
    assert capsys.readouterr().out == f"1 datasets and job requests in {run / 'bedrock'}\n"
    request = json.loads((run / "bedrock" / "job-rag-kb-base.json").read_text())
    assert request["jobName"] == "20261130-run-rag-kb-base"
    assert request["evaluationConfig"]["automated"]["datasetMetricConfigs"][0]["dataset"]["datasetLocation"]["s3Uri"] == "s3://b/in/rag-kb-base.jsonl"
    (run / "results.jsonl").write_text(json.dumps(_row("prompt/-/base", "q?")) + "\n")
    assert cli.main(["export-bedrock", str(run), "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == f"error: {run}: no answered rag or kb question to export\n"
    assert cli.main(["export-bedrock", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'results.jsonl'}: missing (give a run folder written by `evaluate.py run`)\n"
