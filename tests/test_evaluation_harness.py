"""The evaluation harness end to end against stub HTTP targets on 127.0.0.1, plus its AWS parts
(corpus upload, ingestion wait, judge) against botocore's Stubber. Offline, about a second."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import botocore.session
import pytest
from botocore.stub import ANY, Stubber

from evaluation import bedrock_export, cli, client, cost, judge, runner, stage
from evaluation.evalset import load_corpus
from evaluation.stub_target import StubConfig, StubTarget

ROOT = Path(__file__).resolve().parents[1]

QUESTIONS = [
    {"id": "q1", "question": "How fast is the catamaran?", "answers": ["26 knots"], "sources": ["fast.md"], "lang": "en", "tags": ["paraphrase"]},
    {"id": "q2", "question": "双胴船の速さは？", "answers": ["26ノット"], "sources": ["fast.md"], "lang": "ja"},
    {"id": "q3", "question": "What does a cabin cost?", "answers": [], "sources": [], "tags": ["unanswerable"]},
    {"id": "q4", "question": "Which ships carry cars?", "answers": ["Gannet Rose and Harrow Bell"], "sources": ["gannet.md", "harrow.md"], "tags": ["multi-doc"]},
]
PREFIX = "s3://docs/documents/eval/eval-mini/"
SCRIPT = {
    # exact answer, gold cited first
    "How fast is the catamaran?": {"answer": "26 knots [1].", "citations": [{"n": 1, "source": PREFIX + "fast.md", "score": 0.9, "excerpt": "26 knots"}]},
    # character-level: 26ノットです vs 26ノット -> precision 5/7, recall 1 -> F1 = 2*(5/7)/(12/7) = 10/12
    "双胴船の速さは？": {"answer": "26ノットです[2]", "citations": [{"n": 1, "source": PREFIX + "other.md", "score": 0.5, "excerpt": "x"},
                                                              {"n": 2, "source": PREFIX + "fast.md", "score": 0.4, "excerpt": "y"}]},
    "What does a cabin cost?": {"answer": "I don't know based on the provided sources.", "citations": []},
    # half the gold found, at rank 2; F1: {gannet, rose} of 5 reference tokens, 2 predicted -> p 1, r 0.4 -> 0.571
    "Which ships carry cars?": {"answer": "Gannet Rose [2]", "citations": [{"n": 2, "source": PREFIX + "gannet.md", "score": 0.3, "excerpt": "z"},
                                                                       {"n": 1, "source": PREFIX + "other.md", "score": 0.8, "excerpt": "w"}]},
}


@pytest.fixture()
def eval_files(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("fast.md", "gannet.md", "harrow.md", "other.md"):
        (corpus / name).write_text(f"{name} text\n")
        (corpus / f"{name}.metadata.json").write_text(json.dumps({"metadataAttributes": {"category": "fleet"}}))
    eval_set = tmp_path / "mini.jsonl"
    eval_set.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in QUESTIONS), encoding="utf-8")
    return eval_set, corpus


def _run(eval_files, url, out, *extra) -> int:
    eval_set, corpus = eval_files
    return cli.main(["run", "--url", url, "--eval-set", str(eval_set), "--corpus", str(corpus), "--out", str(out),
                     "--cache", str(out.parent / "cache"), "--resamples", "100", "--quiet", *extra])


def test_run_scores_match_hand_computed_values_and_resume_from_the_cache(eval_files, tmp_path):
    with StubTarget(StubConfig(scripted=SCRIPT, delay_ms=2, throttle_first=2)) as stub:
        assert _run(eval_files, stub.url, tmp_path / "run1", "--collection", "eval-mini") == 0
        asked = stub.state.queries
        summary = json.loads((tmp_path / "run1" / "summary.json").read_text())
        keys = [c["key"] for c in summary["configurations"]]
        assert keys == ["prompt/-/extractive", "rag/kb/extractive", "rag/opensearch/extractive"]
        skipped = {s["key"]: s["reason"] for s in summary["skipped"]}
        assert "optional package not installed" in skipped["*/*/llm"]  # unavailable generator, with the target's reason
        assert "kb/kb/bedrock" in skipped
        rag = next(c for c in summary["configurations"] if c["key"] == "rag/kb/extractive")["metrics"]
        assert rag["f1"]["value"] == pytest.approx((1.0 + 10 / 12 + 4 / 7) / 3)
        assert rag["em"]["value"] == pytest.approx(1 / 3)
        assert rag["abstention_accuracy"]["value"] == 1.0
        assert rag["recall@1"]["value"] == pytest.approx((1 + 0 + 0) / 3)
        assert rag["recall@3"]["value"] == pytest.approx((1 + 1 + 0.5) / 3)
        assert rag["mrr"]["value"] == pytest.approx((1 + 0.5 + 0.5) / 3)
        assert rag["citation_precision"]["value"] == pytest.approx((1 + 0.5 + 0.5) / 3)
        assert rag["error_rate"]["value"] == 0.0
        low, high = rag["f1"]["ci"]
        assert low <= rag["f1"]["value"] <= high
        # the collection filter went with every retrieving request, never with mode prompt
        queried = [b for b in stub.state.bodies if b.get("mode") == "rag"]
        assert queried and all(b["filters"] == {"collection": "eval-mini"} and b["top_k"] == 5 and b["generator"] == "extractive" for b in queried)
        assert all("filters" not in b for b in stub.state.bodies if b.get("mode") == "prompt")
        # 429s were retried after Retry-After: every question still has its answer
        rows = [json.loads(line) for line in (tmp_path / "run1" / "results.jsonl").read_text().splitlines()]
        assert len(rows) == 12 and not any(row["error"] for row in rows)
        assert sum(row["attempts"] - 1 for row in rows) == 2  # exactly the two throttled requests were asked again

        # a re-run pays only for what is missing: nothing
        assert _run(eval_files, stub.url, tmp_path / "run2", "--collection", "eval-mini") == 0
        assert stub.state.queries == asked
        again = json.loads((tmp_path / "run2" / "summary.json").read_text())
        assert [c["metrics"] for c in again["configurations"]] == [c["metrics"] for c in summary["configurations"]]
        assert again["run"]["cached"] == 12 and again["run"]["calls"] == 0


def test_reports_are_self_contained_and_the_gate_compares_runs(eval_files, tmp_path, capsys):
    with StubTarget(StubConfig(scripted=SCRIPT)) as stub:
        assert _run(eval_files, stub.url, tmp_path / "base") == 0
    worse = {**SCRIPT, "How fast is the catamaran?": {"answer": "Quite fast.", "citations": []}}
    with StubTarget(StubConfig(scripted=worse)) as stub:
        assert _run(eval_files, stub.url, tmp_path / "new", "--no-cache") == 0
    page = (tmp_path / "base" / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "<svg" in page and "rag/opensearch/extractive" in page
    for remote in ("<script", 'src="http', "href=\"http", "@import", "url("):
        assert remote not in page
    markdown = (tmp_path / "base" / "report.md").read_text()
    assert "| `rag/kb/extractive` |" in markdown and "Skipped configurations" in markdown
    capsys.readouterr()
    assert cli.main(["compare", str(tmp_path / "base"), str(tmp_path / "new"), "--metric", "f1", "--max-drop", "0.05"]) == 1
    assert "FAIL rag/kb/extractive" in capsys.readouterr().out
    assert cli.main(["compare", str(tmp_path / "base"), str(tmp_path / "new"), "--metric", "f1", "--max-drop", "0.5"]) == 0
    assert cli.main(["compare", str(tmp_path / "base"), str(tmp_path / "base"), "--metric", "latency_p95_ms", "--max-drop", "0.1", "--relative"]) == 0
    assert cli.main(["compare", str(tmp_path / "base"), str(tmp_path / "new"), "--metric", "nope"]) == 2
    # re-rendering from results.jsonl gives the same numbers
    before = json.loads((tmp_path / "base" / "summary.json").read_text())
    assert cli.main(["report", str(tmp_path / "base")]) == 0
    after = json.loads((tmp_path / "base" / "summary.json").read_text())
    assert [c["metrics"] for c in after["configurations"]] == [c["metrics"] for c in before["configurations"]]


def test_bedrock_export_follows_the_byoi_schema_and_the_job_request_fits_the_api(eval_files, tmp_path):
    with StubTarget(StubConfig(scripted=SCRIPT)) as stub:
        assert _run(eval_files, stub.url, tmp_path / "run") == 0
    assert cli.main(["export-bedrock", str(tmp_path / "run")]) == 0
    out = tmp_path / "run" / "bedrock"
    assert sorted(p.name for p in out.iterdir()) == ["job-rag-kb-extractive.json", "job-rag-opensearch-extractive.json",
                                                      "rag-kb-extractive.jsonl", "rag-opensearch-extractive.jsonl"]
    lines = [json.loads(line) for line in (out / "rag-kb-extractive.jsonl").read_text().splitlines()]
    assert len(lines) == 4
    first = lines[0]["conversationTurns"][0]
    assert set(first) == {"prompt", "referenceResponses", "output"}
    assert first["prompt"] == {"content": [{"text": "How fast is the catamaran?"}]}
    assert first["referenceResponses"] == [{"content": [{"text": "26 knots"}]}]
    assert first["output"]["knowledgeBaseIdentifier"] == "rag-kb-extractive"
    assert first["output"]["retrievedPassages"]["retrievalResults"][0]["name"] == "fast.md"
    unanswerable = lines[2]["conversationTurns"][0]
    assert unanswerable["referenceResponses"][0]["content"][0]["text"] == bedrock_export.UNANSWERABLE_REFERENCE
    request = json.loads((out / "job-rag-kb-extractive.json").read_text())
    model = botocore.session.get_session().get_service_model("bedrock")
    from botocore.validate import ParamValidator

    report = ParamValidator().validate(request, model.operation_model("CreateEvaluationJob").input_shape)
    assert not report.has_errors(), report.generate_report()
    assert request["inferenceConfig"]["ragConfigs"][0]["precomputedRagSourceConfig"]["retrieveAndGenerateSourceConfig"][
        "ragSourceIdentifier"] == first["output"]["knowledgeBaseIdentifier"]


@pytest.mark.parametrize("argv, expected", [
    (["run", "--url", "http://127.0.0.1:9", "--timeout", "1"], "cannot reach http://127.0.0.1:9/v1/health"),
    (["run", "--url", "ftp://x"], "--url 'ftp://x': expected http(s)://"),
    (["run", "--url", "http://127.0.0.1:9", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["run", "--url", "http://127.0.0.1:9", "--modes", "rag,chat"], "--modes: chat not allowed"),
    (["run", "--url", "http://127.0.0.1:9", "--load-corpus"], "--load-corpus needs --stage"),
    (["compare", "/nonexistent", "/nonexistent"], "no summary.json there"),
    ([], "name a command"),
])
def test_expected_mistakes_are_one_line(argv, expected, capsys, monkeypatch):
    monkeypatch.setattr(client.time, "sleep", lambda s: None)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_bad_eval_set_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "question": "q", "answers": ["a"]}\n')
    assert cli.main(["validate", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {bad}:1: missing 'sources'"


def test_no_credentials_is_one_line(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    with pytest.raises(client.TargetError, match="no AWS credentials found"):
        stage.session(None)


def test_retry_after_and_base_urls():
    assert client.retry_after_seconds("3") == 3.0
    assert client.retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert client.retry_after_seconds("soon") is None and client.retry_after_seconds(None) is None
    assert client.api_base("http://127.0.0.1:8765") == "http://127.0.0.1:8765/v1/"
    assert client.api_base("https://abc.execute-api.us-east-1.amazonaws.com/v1/") == "https://abc.execute-api.us-east-1.amazonaws.com/v1/"


def test_plan_follows_the_health_generators():
    health = {"status": "ok", "generators": {
        "finetuned": {"available": False, "reason": "no model on this stage yet: start a fine-tuning run"},
        "base": {"available": True, "model": "sagemaker:ragdev-generator/base"},
        "bedrock": {"available": True, "model": "amazon.nova-lite-v1:0"}}}
    configs, skipped = runner.plan(health)
    assert [c.key for c in configs] == ["prompt/-/base", "prompt/-/bedrock", "rag/kb/base", "rag/kb/bedrock",
                                        "rag/opensearch/base", "rag/opensearch/bedrock", "kb/kb/bedrock"]
    assert skipped[0].reason.startswith("no model on this stage yet")
    configs, skipped = runner.plan(health, modes=["rag"], retrievers=["opensearch"], generators=["finetuned", "gpt"])
    assert configs == [] and {s.key for s in skipped} == {"*/*/gpt", "*/*/finetuned"}
    # health's optional modes/retrievers lists (local mode: no kb mode)
    configs, skipped = runner.plan({**health, "modes": ["rag", "prompt"], "retrievers": ["kb", "opensearch"]}, generators=["bedrock"])
    assert [c.key for c in configs] == ["prompt/-/bedrock", "rag/kb/bedrock", "rag/opensearch/bedrock"]
    assert any(s.key == "kb/*/*" and "does not offer mode 'kb'" in s.reason for s in skipped)
    # a target that lists no generators: its default
    configs, _ = runner.plan({"status": "ok"}, modes=["rag", "kb"], retrievers=["kb"])
    assert [c.key for c in configs] == ["rag/kb/default", "kb/kb/default"]


def test_cost_per_query_from_the_price_table():
    import pricing

    model = cost.CostModel(deployed=True, lambda_memory_mb=1024)
    row = {"mode": "rag", "generator": "bedrock", "question": "x" * 40, "elapsed_ms": 1000,
           "response": {"model": "amazon.nova-lite-v1:0", "generator": "bedrock", "answer": "a",
                        "timings_ms": {"total": 2000.0}, "usage": {"input_tokens": 1000, "output_tokens": 100}}}
    prices = pricing.prices()
    expected = (prices["api_gateway_rest_per_million_requests"] / 1e6 + prices["lambda_per_million_requests"] / 1e6
                + prices["lambda_arm_per_gb_second"] * 1.0 * 2.0                      # 1 GB for 2 s
                + 10 * prices["bedrock_per_1k_tokens"]["amazon.titan-embed-text-v2:0"]["input"] / 1000  # 40 chars = 10 tokens
                + (1000 * 0.00006 + 100 * 0.00024) / 1000)
    assert model.query_cost(row) == (pytest.approx(expected), False)
    endpoint_row = {**row, "generator": "finetuned", "response": {**row["response"], "model": "sagemaker:ragdev-generator/finetuned", "generator": "finetuned"}}
    assert model.query_cost(endpoint_row)[0] < expected  # no tokens bill: the endpoint is paid by the hour
    kb_row = {**row, "mode": "kb", "request": {"top_k": 5}, "response": {**row["response"], "usage": {"input_tokens": None, "output_tokens": None}}}
    assert model.query_cost(kb_row)[1] is True  # RetrieveAndGenerate reports no tokens: estimated
    assert cost.CostModel(deployed=False).query_cost({**row, "response": {**row["response"], "model": "local:extractive", "generator": "extractive"}, "generator": "extractive"}) == (0.0, False)
    stage_cfg = cost.stage_config("dev")
    fixed = cost.fixed_cost_per_hour(stage_cfg, {"generators": {"base": {"available": True}}})
    assert fixed["total_usd"] > pricing.sagemaker_hosting_per_hour(stage_cfg.inference.instance_type)
    assert not any("SageMaker" in item for item in cost.fixed_cost_per_hour(stage_cfg, {"generators": {"bedrock": {"available": True}}})["items"])


# --- AWS parts --------------------------------------------------------------------------------------
def test_corpus_upload_skips_unchanged_objects_and_removes_stale_ones(tmp_path):
    corpus_dir = tmp_path / "c"
    corpus_dir.mkdir()
    (corpus_dir / "a.md").write_text("alpha")
    (corpus_dir / "a.md.metadata.json").write_text(json.dumps({"metadataAttributes": {"category": "x"}}))
    (corpus_dir / "b.md").write_text("beta")
    corpus = load_corpus(corpus_dir)
    objects = stage.objects_for(corpus, "eval-t")
    assert json.loads(objects["a.md.metadata.json"]) == {"metadataAttributes": {"category": "x", "collection": "eval-t"}}
    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    prefix = "documents/eval/eval-t/"
    with Stubber(s3) as stub:
        stub.add_response("list_objects_v2", {"Contents": [{"Key": prefix + "a.md"}, {"Key": prefix + "old.md"}], "KeyCount": 2, "IsTruncated": False},
                          {"Bucket": "docs", "Prefix": prefix})
        stub.add_response("head_object", {"Metadata": {"sha256": stage._sha256(b"alpha")}}, {"Bucket": "docs", "Key": prefix + "a.md"})
        for name in ("a.md.metadata.json", "b.md", "b.md.metadata.json"):
            stub.add_response("put_object", {}, {"Bucket": "docs", "Key": prefix + name, "Body": ANY, "ContentType": ANY, "Metadata": ANY})
        stub.add_response("delete_objects", {}, {"Bucket": "docs", "Delete": {"Objects": [{"Key": prefix + "old.md"}], "Quiet": True}})
        result = stage.upload_corpus(s3, bucket="docs", documents_prefix="documents/", corpus=corpus, collection="eval-t", log=lambda _: None)
        stub.assert_no_pending_responses()
    assert (result.uploaded, result.deleted, result.unchanged) == (3, 1, 1)


def test_ingestion_wait_needs_a_job_after_the_upload_and_none_running():
    agent = boto3.client("bedrock-agent", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    since = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)

    def job(job_id: str, status: str, minutes: int) -> dict:
        at = since + timedelta(minutes=minutes)
        return {"knowledgeBaseId": "KB1234567A", "dataSourceId": "DS1234567A", "ingestionJobId": job_id, "status": status,
                "startedAt": at, "updatedAt": at}

    params = {"knowledgeBaseId": "KB1234567A", "dataSourceId": "DS1234567A", "sortBy": {"attribute": "STARTED_AT", "order": "DESCENDING"}, "maxResults": 10}
    sleeps: list[float] = []
    with Stubber(agent) as stub:
        stub.add_response("list_ingestion_jobs", {"ingestionJobSummaries": [job("OLD1234567", "COMPLETE", -30)]}, params)
        stub.add_response("list_ingestion_jobs", {"ingestionJobSummaries": [job("NEW1234567", "IN_PROGRESS", 1), job("OLD1234567", "COMPLETE", -30)]}, params)
        stub.add_response("list_ingestion_jobs", {"ingestionJobSummaries": [job("NEW1234567", "COMPLETE", 1), job("OLD1234567", "COMPLETE", -30)]}, params)
        done = stage.wait_for_ingestion(agent, knowledge_base_id="KB1234567A", data_source_id="DS1234567A", since=since,
                                        sleep=sleeps.append, log=lambda _: None)
    assert done["ingestionJobId"] == "NEW1234567" and sleeps == [15, 15]
    with Stubber(agent) as stub:
        stub.add_response("list_ingestion_jobs", {"ingestionJobSummaries": [job("BAD1234567", "FAILED", 2)]}, params)
        with pytest.raises(client.TargetError, match="ingestion job BAD1234567 failed"):
            stage.wait_for_ingestion(agent, knowledge_base_id="KB1234567A", data_source_id="DS1234567A", since=since, sleep=sleeps.append, log=lambda _: None)
    ticks = iter([0.0, 100.0])
    with Stubber(agent) as stub:
        stub.add_response("list_ingestion_jobs", {"ingestionJobSummaries": []}, params)
        with pytest.raises(client.TargetError, match="no ingestion job completed within 60 s"):
            stage.wait_for_ingestion(agent, knowledge_base_id="KB1234567A", data_source_id="DS1234567A", since=since, timeout_s=60,
                                     sleep=sleeps.append, clock=lambda: next(ticks), log=lambda _: None)


def test_judge_is_from_another_family_and_parses_its_grades():
    assert judge.family("us.anthropic.claude-3-5-haiku-20241022-v1:0") == "anthropic"
    assert judge.family("amazon.nova-lite-v1:0") == "amazon"
    assert judge.family("sagemaker:ragdev-generator/finetuned") is None
    with pytest.raises(judge.JudgeError, match="amazon family"):
        judge.check_family("us.amazon.nova-pro-v1:0", ["amazon.nova-lite-v1:0", "sagemaker:ragdev-generator/base"])
    judge.check_family("anthropic.claude-3-haiku-20240307-v1:0", ["amazon.nova-lite-v1:0"])
    runtime = boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    grader = judge.Judge(runtime, "anthropic.claude-3-haiku-20240307-v1:0")
    row = {"question": "How fast?", "references": ["26 knots"], "response": {"answer": "26 knots [1]", "citations": [{"excerpt": "26 knots"}]}}
    with Stubber(runtime) as stub:
        stub.add_response("converse", {
            "output": {"message": {"role": "assistant", "content": [{"text": 'Grades: {"faithfulness": 1, "correctness": 0.5}'}]}},
            "stopReason": "end_turn", "usage": {"inputTokens": 120, "outputTokens": 12, "totalTokens": 132}, "metrics": {"latencyMs": 300}},
            {"modelId": "anthropic.claude-3-haiku-20240307-v1:0", "system": ANY, "messages": ANY, "inferenceConfig": {"maxTokens": 200, "temperature": 0.0}})
        graded = grader.grade(row)
    assert graded["faithfulness"] == 1.0 and graded["correctness"] == 0.5 and graded["input_tokens"] == 120
    with pytest.raises(ValueError):
        judge.parse("no json here")


def test_a_squad_format_file_runs_as_it_is(tmp_path):
    squad_file = tmp_path / "mini-squad.json"
    squad_file.write_text(json.dumps({"version": "1.1", "data": [{"title": "Gannets", "paragraphs": [
        {"context": "The gannet dives at 86 km/h to catch fish.", "qas": [
            {"id": "g1", "question": "How fast does the gannet dive?", "answers": [{"text": "86 km/h", "answer_start": 20}]}]},
        {"context": "Puffins nest in burrows on cliffs.", "qas": [
            {"id": "p1", "question": "Where do puffins nest?", "answers": [{"text": "in burrows on cliffs", "answer_start": 15}]}]}]}]}))
    from evaluation import squad

    corpus = squad.convert(squad_file, tmp_path / "converted").corpus
    with StubTarget(StubConfig(corpus=corpus, source_prefix="/srv/corpus/")) as stub:
        assert cli.main(["run", "--url", stub.url, "--eval-set", str(squad_file), "--out", str(tmp_path / "run"), "--no-cache",
                         "--resamples", "50", "--quiet", "--modes", "rag", "--retrievers", "opensearch"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["run"]["split"] == "all" and summary["run"]["questions"] == 2
    metrics = summary["configurations"][0]["metrics"]
    assert metrics["recall@1"]["value"] == 1.0  # the stub's term retrieval finds each paragraph
    assert (tmp_path / "run" / "converted" / "ATTRIBUTION.md").is_file() and (tmp_path / "run" / "report.html").is_file()


def test_stage_requests_are_sigv4_signed_for_execute_api():
    from botocore.credentials import Credentials

    signer = client.sigv4_signer(Credentials("AKIDEXAMPLE", "secret", "token"), "eu-west-1")
    with StubTarget(StubConfig(scripted=SCRIPT)) as stub:
        target = client.Target(stub.url, signer=signer)
        reply = target.query({"question": "How fast is the catamaran?", "mode": "rag"})
        assert reply.ok and reply.body["answer"] == "26 knots [1]."
        headers = {k.lower(): v for k, v in stub.state.headers[-1].items()}
    assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/execute-api/aws4_request" in headers["authorization"]
    assert headers["x-amz-security-token"] == "token" and "x-amz-date" in headers


def test_a_configuration_the_target_refuses_is_skipped_whole(eval_files, tmp_path):
    generators = {"bedrock": {"available": True, "model": "amazon.nova-lite-v1:0", "version": None, "reason": None}}
    with StubTarget(StubConfig(scripted=SCRIPT, generators=generators)) as stub:
        assert _run(eval_files, stub.url, tmp_path / "run", "--modes", "kb,rag", "--retrievers", "kb", "--concurrency", "1") == 0
        kb_asked = sum(1 for body in stub.state.bodies if body["mode"] == "kb")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [c["key"] for c in summary["configurations"]] == ["rag/kb/bedrock"]
    assert {s["key"]: s["reason"] for s in summary["skipped"]}["kb/kb/bedrock"] == (
        "the target refused it: HTTP 400: mode 'kb' needs a deployed stage (Bedrock knowledge base)")
    assert kb_asked == 1  # refused once, not asked again for every question
    rag = summary["configurations"][0]["metrics"]
    assert rag["cost_per_1k_usd"]["value"] > 0  # Bedrock tokens priced from pricing/ even on a local target


def test_a_target_that_cannot_filter_on_collection_stops_the_run_with_one_line(eval_files, tmp_path, capsys):
    with StubTarget(StubConfig(scripted=SCRIPT, filterable=("category",))) as stub:
        assert _run(eval_files, stub.url, tmp_path / "run", "--collection", "eval-mini", "--modes", "rag") == 2
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]  # after the line announcing the run
    assert last.startswith("error: the target cannot filter on 'collection'") and "search.filterable_fields" in last
    assert "Traceback" not in err and sum(line.startswith("error:") for line in err.splitlines()) == 1
