"""`evaluate.py` commands not run end to end elsewhere: a run with the optional judge (Bedrock
stubbed), convert, training-data, a bad --stage, and the progress lines a CI log shows."""

from __future__ import annotations

import io
import json

import boto3
import pytest
from botocore.stub import ANY, Stubber

from evaluation import cli, runner, shipped, stage
from evaluation.stub_target import StubConfig, StubTarget

JUDGE = "anthropic.claude-3-haiku-20240307-v1:0"
SCRIPT = {"How fast is the catamaran?": {"answer": "26 knots [1].", "citations": [{"n": 1, "source": "/c/fast.md", "excerpt": "26 knots"}]},
          "What does a cabin cost?": {"answer": "I don't know based on the provided sources.", "citations": []}}


@pytest.fixture()
def eval_files(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "fast.md").write_text("The catamaran does 26 knots.\n")
    eval_set = tmp_path / "mini.jsonl"
    eval_set.write_text(json.dumps({"id": "q1", "question": "How fast is the catamaran?", "answers": ["26 knots"], "sources": ["fast.md"]})
                        + "\n" + json.dumps({"id": "q2", "question": "What does a cabin cost?", "answers": [], "sources": []}) + "\n")
    return eval_set, corpus


def _grades(text: str) -> dict:
    return {"output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": "end_turn",
            "usage": {"inputTokens": 100, "outputTokens": 10, "totalTokens": 110}, "metrics": {"latencyMs": 1}}


class Aws:
    def __init__(self, runtime):
        self.runtime = runtime

    def client(self, name):
        assert name == "bedrock-runtime"
        return self.runtime


def test_a_run_with_the_judge_grades_each_answer_once_and_reports_its_scores(eval_files, tmp_path, monkeypatch, capsys):
    eval_set, corpus = eval_files
    runtime = boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    profiles: list = []
    monkeypatch.setattr(stage, "session", lambda profile: (profiles.append(profile), Aws(runtime))[1])
    argv = ["run", "--eval-set", str(eval_set), "--corpus", str(corpus), "--modes", "rag", "--retrievers", "kb", "--concurrency", "1",
            "--resamples", "0", "--quiet", "--judge", JUDGE, "--profile", "eval", "--cache", str(tmp_path / "cache")]
    with StubTarget(StubConfig(scripted=SCRIPT)) as target, Stubber(runtime) as bedrock:
        bedrock.add_response("converse", _grades('{"faithfulness": 1, "correctness": 0.5}'), {
            "modelId": JUDGE, "system": ANY, "messages": ANY, "inferenceConfig": {"maxTokens": 200, "temperature": 0.0}})
        bedrock.add_client_error("converse", "ThrottlingException", "slow down", http_status_code=429)
        assert cli.main([*argv, "--url", target.url, "--out", str(tmp_path / "run1")]) == 0
        bedrock.assert_no_pending_responses()
        summary = json.loads((tmp_path / "run1" / "summary.json").read_text())
        rows = [json.loads(line) for line in (tmp_path / "run1" / "results.jsonl").read_text().splitlines()]
        assert profiles == ["eval"]
        assert rows[0]["judge"] == {"faithfulness": 1.0, "correctness": 0.5, "model": JUDGE, "input_tokens": 100, "output_tokens": 10}
        assert rows[1]["judge"] == {"error": "ThrottlingException: An error occurred (ThrottlingException) when calling the Converse operation: "
                                             "slow down"}  # a failed grade is recorded per answer, the run goes on
        metrics = summary["configurations"][0]["metrics"]
        assert (metrics["judge_faithfulness"]["value"], metrics["judge_faithfulness"]["n"]) == (1.0, 1)
        assert (metrics["judge_correctness"]["value"], metrics["judge_correctness"]["n"]) == (0.5, 1)
        assert summary["run"]["judge"] == JUDGE
        assert f"model `{JUDGE}`) are a model's opinion" in (tmp_path / "run1" / "report.md").read_text()
        # again: the graded answer comes from the cache, only the failed one is asked again
        bedrock.add_response("converse", _grades('{"faithfulness": 0, "correctness": 1}'))
        assert cli.main([*argv, "--url", target.url, "--out", str(tmp_path / "run2")]) == 0
        bedrock.assert_no_pending_responses()
    rows = [json.loads(line) for line in (tmp_path / "run2" / "results.jsonl").read_text().splitlines()]
    assert [row["judge"]["faithfulness"] for row in rows] == [1.0, 0.0]


def test_a_judge_of_the_generators_family_stops_the_run_before_any_question(eval_files, tmp_path, capsys):
    eval_set, corpus = eval_files
    generators = {"bedrock": {"available": True, "model": "amazon.nova-lite-v1:0", "version": None, "reason": None}}
    with StubTarget(StubConfig(scripted=SCRIPT, generators=generators)) as target:
        assert cli.main(["run", "--url", target.url, "--eval-set", str(eval_set), "--corpus", str(corpus), "--out", str(tmp_path / "r"),
                         "--no-cache", "--quiet", "--judge", "us.amazon.nova-pro-v1:0"]) == 2
        assert target.state.queries == 0
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: --judge 'us.amazon.nova-pro-v1:0' is of the amazon family, like the generator 'amazon.nova-lite-v1:0': "
        "pick a judge from another family")


@pytest.mark.parametrize("stage_name, message", [
    ("all", "error: --stage all: evaluate one stage at a time (e.g. --stage dev)"),
    ("nope", "error: --stage nope: "),
])
def test_a_stage_that_cannot_be_evaluated_is_one_line(stage_name, message, eval_files, tmp_path, capsys):
    eval_set, corpus = eval_files
    assert cli.main(["run", "--stage", stage_name, "--eval-set", str(eval_set), "--corpus", str(corpus), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_convert_prints_what_it_wrote(tmp_path, capsys):
    source = tmp_path / "xquad.json"
    source.write_text(json.dumps({"data": [
        {"title": "A", "paragraphs": [{"context": "One.", "qas": [{"id": "1", "question": "q?", "answers": [{"text": "One"}]},
                                                                  {"id": "2", "question": "r?", "answers": []}]}]},
        {"title": "B", "paragraphs": [{"context": "Two.", "qas": [{"id": "3", "question": "s?", "answers": [{"text": "Two"}]}]}]}]}))
    out = tmp_path / "out"
    assert cli.main(["convert", str(source), "--out", str(out), "--name", "mini", "--lang", "de", "--articles", "1"]) == 0
    assert capsys.readouterr().out == (f"1 documents in {out / 'corpus'}, 2 questions (1 unanswerable) in {out / 'eval.jsonl'}; "
                                       f"attribution in {out / 'ATTRIBUTION.md'}\n")
    first = json.loads((out / "eval.jsonl").read_text().splitlines()[0])
    assert (first["lang"], first["sources"], first["tags"]) == ("de", ["mini-a000-p00.txt"], ["mini"])


def test_training_data_is_written_and_checked(tmp_path, capsys):
    out = tmp_path / "finetune" / "train.jsonl"
    assert cli.main(["training-data", "--check", "--out", str(out)]) == 1
    assert capsys.readouterr().err == f"{out} is stale: run `scripts/evaluate.py training-data` and commit it\n"
    assert cli.main(["training-data", "--out", str(out)]) == 0
    records = out.read_text(encoding="utf-8").splitlines()
    train = shipped.select(cli.load_eval_set(shipped.EVAL_SET), "train")
    assert capsys.readouterr().out == f"{len(records)} records from {len(train)} training questions and the corpus -> {out}\n"
    assert out.read_text(encoding="utf-8") == shipped.TRAINING_DATA.read_text(encoding="utf-8")  # the committed file
    assert "\\u" not in out.read_text(encoding="utf-8")  # Japanese stays readable
    assert cli.main(["training-data", "--check", "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"{out}: up to date ({len(records)} records)\n"


def test_validate_describes_the_set_with_its_corpus(eval_files, capsys):
    eval_set, corpus = eval_files
    assert cli.main(["validate", str(eval_set)]) == 0
    assert capsys.readouterr().out == f"{eval_set}: 2 valid questions (give --corpus to check their sources)\n"
    assert cli.main(["validate", str(eval_set), "--corpus", str(corpus)]) == 0
    described = json.loads(capsys.readouterr().out)
    assert (described["questions"], described["documents"], described["unanswerable"], described["overlap_mean"]) == (2, 1, 1, 0.5)
    assert "split" not in described
    assert cli.main(["validate", str(shipped.EVAL_SET)]) == 0
    split = json.loads(capsys.readouterr().out)["split"]
    questions = cli.load_eval_set(shipped.EVAL_SET)
    assert split == {"train": len(shipped.select(questions, "train")), "test": len(shipped.select(questions, "test"))}


def test_many_problems_show_the_first_twenty_and_a_count(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("[]\n" * 23)
    assert cli.main(["validate", str(bad)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[:2] == [f"error: {bad}:1: a line must be a JSON object", f"error: {bad}:2: a line must be a JSON object"]
    assert len(lines) == 21 and lines[19] == f"error: {bad}:20: a line must be a JSON object" and lines[20] == "error: ... and 3 more"


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_progress_in_a_log_is_a_line_every_tenth(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(runner.time, "monotonic", clock)
    log = io.StringIO()
    progress = runner.Progress(20, stream=log)
    for n in range(1, 21):
        clock.now += 3.0
        progress.advance(cached=n <= 4, failed=n == 20)
    progress.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 11  # the first answer, then every second one starts a new tenth
    assert lines[0] == "[#.............................] 1/20 questions (1 cached, 0 failed) eta 0m57s"
    assert lines[1] == "[###...........................] 2/20 questions (2 cached, 0 failed) eta 0m54s"
    assert lines[5] == "[###############...............] 10/20 questions (4 cached, 0 failed) eta 0m30s"
    assert lines[-1] == "[##############################] 20/20 questions (4 cached, 1 failed) eta 0m00s"


def test_progress_on_a_terminal_redraws_one_line_and_ends_it(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(runner.time, "monotonic", clock)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    progress = runner.Progress(3, stream=screen, label="judged")
    clock.now += 1.0
    progress.advance()
    clock.now += 0.05
    progress.advance()  # within 0.1 s of the last drawing: not drawn again
    clock.now += 0.01
    progress.advance(failed=True)  # the last one is always drawn
    progress.close()
    assert screen.getvalue() == ("\r[##########....................] 1/3 judged (0 cached, 0 failed) eta 0m02s "
                                 "\r[##############################] 3/3 judged (0 cached, 1 failed) eta 0m00s \n")
    quiet = Terminal()
    off = runner.Progress(3, stream=quiet, enabled=False)
    off.advance(cached=True)
    off.close()
    assert quiet.getvalue() == "" and (off.done, off.cached) == (1, 1)
    assert runner.Progress(0, stream=io.StringIO()).line(clock.now) == "[..............................] 0/0 questions (0 cached, 0 failed) eta 0m00s"
    slow = runner.Progress(100, stream=io.StringIO())
    slow.done, slow.started = 1, 0.0
    assert slow.line(64.0).endswith("1/100 questions (0 cached, 0 failed) eta 105m36s")  # 99 more at 64 s each


def test_report_re_renders_a_run_with_new_resamples_seed_and_the_stages_prices(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "fast.md").write_text("The catamaran does 26 knots.\n")
    eval_set = tmp_path / "set.jsonl"
    eval_set.write_text("".join(json.dumps(q) + "\n" for q in [
        {"id": "q1", "question": "How fast is the catamaran?", "answers": ["26 knots"], "sources": ["fast.md"], "lang": "en", "tags": ["speed"]},
        {"id": "q2", "question": "What does a cabin cost?", "answers": [], "sources": [], "lang": "ja"}]))
    run = tmp_path / "run"
    with StubTarget(StubConfig(scripted=SCRIPT)) as target:
        assert cli.main(["run", "--url", target.url, "--eval-set", str(eval_set), "--corpus", str(corpus), "--out", str(run), "--no-cache",
                         "--quiet", "--modes", "rag", "--retrievers", "kb", "--top-k", "3", "--resamples", "20", "--seed", "1"]) == 0
    before = json.loads((run / "summary.json").read_text())
    config = before["configurations"][0]
    assert "recall@3" in config["metrics"] and "recall@5" not in config["metrics"]  # k values up to --top-k
    assert sorted(config["breakdown"]) == ["lang:en", "lang:ja", "tag:speed"]
    assert before["fixed_cost_per_hour"]["total_usd"] == 0.0 and config["metrics"]["cost_per_1k_usd"]["value"] == 0.0
    capsys.readouterr()

    assert cli.main(["report", str(run), "--resamples", "30", "--seed", "2"]) == 0
    assert capsys.readouterr().err == f"{run}/report.html\n"
    after = json.loads((run / "summary.json").read_text())
    assert (after["run"]["resamples"], after["run"]["seed"]) == (30, 2)
    assert after["skipped"] == before["skipped"] and after["configurations"][0]["breakdown"] == config["breakdown"]
    assert cli.main(["report", str(run)]) == 0
    assert (json.loads((run / "summary.json").read_text())["run"]["resamples"], json.loads((run / "summary.json").read_text())["run"]["seed"]) == (30, 2)

    # a stage's run is priced with the stage's config: API Gateway and Lambda per query, the search domain per hour
    staged = {**before, "run": {**before["run"], "target": "stage dev"}}
    (run / "summary.json").write_text(json.dumps(staged))
    assert cli.main(["report", str(run)]) == 0
    priced = json.loads((run / "summary.json").read_text())
    assert priced["configurations"][0]["metrics"]["cost_per_1k_usd"]["value"] > 0
    items = priced["fixed_cost_per_hour"]["items"]
    assert any(name.startswith("OpenSearch ") for name in items)
    assert not any(name.startswith("SageMaker") for name in items)  # the run's health lists no SageMaker generator
    (run / "summary.json").write_text(json.dumps({**before, "run": {**before["run"], "target": "stage nope"}}))
    capsys.readouterr()
    assert cli.main(["report", str(run)]) == 2
    assert capsys.readouterr().err.startswith("error: --stage nope: ")
    (run / "results.jsonl").unlink()
    assert cli.main(["report", str(run)]) == 2
    assert capsys.readouterr().err == f"error: {run / 'results.jsonl'}: missing (give a run folder written by `evaluate.py run`)\n"


def test_the_documented_defaults():
    parser = cli.build_parser()
    run = parser.parse_args(["run", "--url", "http://127.0.0.1:8787"])
    assert (run.eval_set, run.corpus, run.split, run.limit, run.modes, run.retrievers, run.generators) == (
        shipped.EVAL_SET, None, None, None, ["prompt", "rag", "kb"], ["kb", "opensearch"], None)
    assert (run.top_k, run.collection, run.load_corpus, run.ingestion_timeout, run.concurrency, run.timeout, run.out, run.cache,
            run.no_cache, run.resamples, run.seed, run.judge, run.profile, run.quiet) == (
        5, None, False, 1800.0, 4, 60.0, None, cli.DEFAULT_CACHE, False, 1000, 13, None, None, False)
    assert parser.parse_args(["run", "--url", "u", "--modes", " rag, prompt,,", "--generators", "base"]).modes == ["rag", "prompt"]
    compare = parser.parse_args(["compare", "a", "b"])
    assert (compare.metric, compare.max_drop, compare.relative) == ("f1", 0.02, False)
    assert parser.parse_args(["training-data"]).out == shipped.TRAINING_DATA
    assert parser.parse_args(["export-bedrock", "r"]).dataset_prefix == "s3://<BUCKET>/bedrock-evaluation/input/"
    assert (parser.parse_args(["report", "r"]).resamples, parser.parse_args(["report", "r"]).seed) == (None, None)
    assert cli.DEFAULT_CACHE == shipped.ROOT / "build" / "eval-cache" and cli.DEFAULT_OUT == shipped.ROOT / "build" / "eval"


@pytest.mark.parametrize("extra, message", [
    (["--concurrency", "0"], "--concurrency, --top-k and --limit must be at least 1, --resamples at least 0"),
    (["--top-k", "0"], "--concurrency, --top-k and --limit must be at least 1, --resamples at least 0"),
    (["--limit", "0"], "--concurrency, --top-k and --limit must be at least 1, --resamples at least 0"),
    (["--resamples", "-1"], "--concurrency, --top-k and --limit must be at least 1, --resamples at least 0"),
    (["--retrievers", ","], "--retrievers: empty not allowed; choose from kb,opensearch"),
    (["--modes", "rag,chat,talk"], "--modes: chat, talk not allowed; choose from prompt,rag,kb"),
    (["--split", "train"], "no questions in the train part of {eval_set}"),
    (["--corpus", None], "--corpus is required with {eval_set} (the folder of the documents its sources name)"),
    (["--split", "dev"], "argument --split: invalid choice: 'dev' (choose from 'test', 'train', 'all') (see evaluate.py run --help)"),
])
def test_run_mistakes_are_one_line_before_any_question(eval_files, tmp_path, capsys, extra, message):
    eval_set, corpus = eval_files
    argv = ["run", "--url", "http://127.0.0.1:9", "--eval-set", str(eval_set), "--corpus", str(corpus), "--out", str(tmp_path / "r")]
    if extra == ["--corpus", None]:
        argv = argv[:5] + argv[7:]
        extra = []
    if extra[:2] == ["--split", "train"]:  # both questions are in the test part
        assert {shipped.split_of("q1"), shipped.split_of("q2")} == {"test"}
    assert cli.main([*argv, *extra]) == 2
    assert capsys.readouterr().err == "error: " + message.format(eval_set=eval_set) + "\n"


def test_a_stage_run_signs_loads_the_corpus_under_its_collection_and_prices_the_stage(eval_files, tmp_path, monkeypatch, capsys):
    eval_set, corpus = eval_files
    loads: list = []
    monkeypatch.setattr(stage, "session", lambda profile: ("aws", profile))
    with StubTarget(StubConfig(scripted=SCRIPT)) as target:
        monkeypatch.setattr(stage, "api_target_args", lambda aws, name: (target.url, None) if (aws, name) == (("aws", "p"), "dev") else None)
        monkeypatch.setattr(stage, "load_corpus", lambda aws, name, documents, collection, timeout_s, log: loads.append(
            (aws, name, sorted(documents), collection, timeout_s)))
        assert cli.main(["run", "--stage", "dev", "--profile", "p", "--load-corpus", "--ingestion-timeout", "90", "--eval-set", str(eval_set),
                         "--corpus", str(corpus), "--out", str(tmp_path / "run"), "--no-cache", "--quiet", "--modes", "rag",
                         "--retrievers", "kb", "--limit", "1", "--timeout", "5"]) == 0
        bodies = target.state.bodies
    assert loads == [(("aws", "p"), "dev", ["fast.md"], "eval-mini", 90.0)]
    assert [b["filters"] for b in bodies] == [{"collection": "eval-mini"}]  # the set's own collection: only its documents
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["run"]["target"], summary["run"]["collection"], summary["run"]["questions"]) == ("stage dev", "eval-mini", 1)
    assert summary["configurations"][0]["metrics"]["cost_per_1k_usd"]["value"] > 0  # API Gateway, Lambda and the embedding
    assert any(name.startswith("OpenSearch") for name in summary["fixed_cost_per_hour"]["items"])
    assert capsys.readouterr().err.splitlines()[0] == "1 questions x 1 configurations against stage dev: rag/kb/extractive"
