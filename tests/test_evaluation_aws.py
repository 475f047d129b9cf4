"""The harness's AWS calls, checked request by request against the real API models (botocore's
Stubber): a stage's outputs, loading a corpus into it and waiting for ingestion, and the optional
LLM judge (which family it may be, the exact Converse request, how its reply is read)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from botocore.stub import Stubber

from evaluation import judge, stage
from evaluation.client import TargetError
from evaluation.evalset import load_corpus

SINCE = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


class Aws:
    """A boto3-like session whose clients are stubbed; `region_name` and credentials as a stage's. The clients come
    from boto3's default session, whose loader the harness tests have filled (a new session loads every model again)."""

    region_name = "eu-west-1"

    def __init__(self, *services: str) -> None:
        self.clients = {name: boto3.client(name, region_name=self.region_name, aws_access_key_id="AKIDEXAMPLE",
                                                  aws_secret_access_key="secret") for name in services}
        self.stubs = {name: Stubber(client) for name, client in self.clients.items()}
        for stub in self.stubs.values():
            stub.activate()

    def client(self, name):
        return self.clients[name]

    def get_credentials(self):
        from botocore.credentials import Credentials

        return Credentials("AKIDEXAMPLE", "secret")

    def outputs(self, stack: str, **values: str) -> None:
        self.stubs["cloudformation"].add_response("describe_stacks", {"Stacks": [{
            "StackName": stack, "CreationTime": SINCE, "StackStatus": "UPDATE_COMPLETE",
            "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in values.items()]}]}, {"StackName": stack})

    def done(self) -> None:
        for stub in self.stubs.values():
            stub.assert_no_pending_responses()


def test_a_stage_target_is_its_api_url_signed_for_execute_api_in_its_region():
    aws = Aws("cloudformation")
    aws.outputs("RagDev-Serving", ApiUrl="https://abc.execute-api.eu-west-1.amazonaws.com/v1/", Other="x")
    url, signer = stage.api_target_args(aws, "dev")
    aws.done()
    assert url == "https://abc.execute-api.eu-west-1.amazonaws.com/v1/"
    headers = signer("GET", url + "health", None, {"Accept": "application/json"})
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/execute-api/aws4_request" in headers["Authorization"]


def test_stack_problems_are_one_line_saying_what_to_do():
    aws = Aws("cloudformation")
    aws.outputs("RagQa-Serving", QueryFunctionName="f")
    with pytest.raises(TargetError) as caught:
        stage.api_target_args(aws, "qa")
    assert str(caught.value) == "stack RagQa-Serving has no ApiUrl output: deploy the Serving stack"
    aws.stubs["cloudformation"].add_client_error("describe_stacks", "ValidationError", "Stack with id RagDev-Serving does not exist",
                                                 expected_params={"StackName": "RagDev-Serving"})
    with pytest.raises(TargetError) as caught:
        stage.outputs(aws, "dev", "Serving")
    assert str(caught.value) == ("stack RagDev-Serving does not exist in eu-west-1: deploy the stage (make deploy STAGE=dev) "
                                 "or pick the right region/profile")
    aws.stubs["cloudformation"].add_client_error("describe_stacks", "AccessDenied", "not allowed to DescribeStacks")
    with pytest.raises(TargetError) as caught:
        stage.outputs(aws, "dev", "Storage")
    assert str(caught.value) == "cannot read stack RagDev-Storage: not allowed to DescribeStacks"
    aws.done()

    class Offline:
        region_name = "eu-west-1"

        def client(self, name):
            class Client:
                def describe_stacks(self, StackName):
                    raise EndpointConnectionError(endpoint_url="https://cloudformation.eu-west-1.amazonaws.com")
            return Client()

    with pytest.raises(TargetError) as caught:
        stage.outputs(Offline(), "dev", "Storage")
    assert str(caught.value) == ('cannot read stack RagDev-Storage: Could not connect to the endpoint URL: '
                                 '"https://cloudformation.eu-west-1.amazonaws.com"')


def test_a_profile_that_does_not_exist_and_a_missing_region_are_one_line(monkeypatch, tmp_path):
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(TargetError) as caught:
        stage.session("nobody")
    assert str(caught.value) == "The config profile (nobody) could not be found: check --profile or AWS_PROFILE"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    with pytest.raises(TargetError) as caught:
        stage.session(None)
    assert str(caught.value) == "no AWS region configured: set AWS_REGION or the profile's region"
    monkeypatch.setenv("AWS_REGION", "eu-west-1")  # what the message says to set, and what the other scripts read first
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    assert stage.session(None).region_name == "eu-west-1"
    monkeypatch.delenv("AWS_REGION")
    assert stage.session(None).region_name == "us-west-2"


def _corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.md").write_text("alpha")
    (folder / "梅雨.md").write_text("雨季", encoding="utf-8")
    (folder / "梅雨.md.metadata.json").write_text(json.dumps({"metadataAttributes": {"category": "天気"}}, ensure_ascii=False),
                                                 encoding="utf-8")
    return load_corpus(folder)


def _job(job_id: str, status: str, minutes: int, **statistics) -> dict:
    at = SINCE + timedelta(minutes=minutes)
    job = {"knowledgeBaseId": "KB1234567A", "dataSourceId": "DS1234567A", "ingestionJobId": job_id, "status": status,
           "startedAt": at, "updatedAt": at}
    if statistics:
        job["statistics"] = statistics
    return job


LIST_JOBS = {"knowledgeBaseId": "KB1234567A", "dataSourceId": "DS1234567A", "sortBy": {"attribute": "STARTED_AT", "order": "DESCENDING"},
             "maxResults": 10}


def test_loading_a_corpus_uploads_it_under_its_collection_and_waits_for_the_ingestion(tmp_path, monkeypatch):
    corpus = _corpus(tmp_path)
    objects = stage.objects_for(corpus, "eval-t")
    assert objects == {
        "a.md": b"alpha", "a.md.metadata.json": b'{"metadataAttributes": {"collection": "eval-t"}}',
        "梅雨.md": "雨季".encode("utf-8"),
        "梅雨.md.metadata.json": '{"metadataAttributes": {"category": "天気", "collection": "eval-t"}}'.encode("utf-8"),
    }
    aws = Aws("cloudformation", "s3", "bedrock-agent")
    aws.outputs("RagDev-Storage", DocumentsBucketName="docs", DocumentsPrefix="documents/")
    aws.outputs("RagDev-KnowledgeBase", KnowledgeBaseId="KB1234567A", DataSourceId="DS1234567A")
    prefix = "documents/eval/eval-t/"
    s3 = aws.stubs["s3"]
    s3.add_response("list_objects_v2", {"Contents": [{"Key": prefix + "梅雨.md"}], "KeyCount": 1, "IsTruncated": False},
                    {"Bucket": "docs", "Prefix": prefix})
    for name in ("a.md", "a.md.metadata.json"):
        s3.add_response("put_object", {}, {"Bucket": "docs", "Key": prefix + name, "Body": objects[name],
                                           "ContentType": "application/json" if name.endswith(".json") else "text/plain; charset=utf-8",
                                           "Metadata": {"sha256": stage._sha256(objects[name])}})
    s3.add_response("head_object", {"Metadata": {"sha256": stage._sha256(objects["梅雨.md"])}}, {"Bucket": "docs", "Key": prefix + "梅雨.md"})
    s3.add_response("put_object", {}, {"Bucket": "docs", "Key": prefix + "梅雨.md.metadata.json", "Body": objects["梅雨.md.metadata.json"],
                                       "ContentType": "application/json", "Metadata": {"sha256": stage._sha256(objects["梅雨.md.metadata.json"])}})
    agent = aws.stubs["bedrock-agent"]
    agent.add_response("list_ingestion_jobs", {"ingestionJobSummaries": [
        _job("NEW1234567", "COMPLETE", 1, numberOfNewDocumentsIndexed=2, numberOfModifiedDocumentsIndexed=1, numberOfDocumentsDeleted=0)]}, LIST_JOBS)

    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):
            return SINCE

    monkeypatch.setattr(stage, "datetime", Clock)
    lines: list[str] = []
    result = stage.load_corpus(aws, "dev", corpus, "eval-t", timeout_s=60, log=lines.append)
    aws.done()
    assert result == stage.CorpusLoad("docs", prefix, uploaded=3, deleted=0, unchanged=1)
    assert lines == [
        "corpus: 3 objects uploaded, 0 deleted, 1 unchanged under s3://docs/documents/eval/eval-t/",
        "waiting for the knowledge base to ingest the change (the ingest function batches uploads for about a minute)",
        "ingestion complete: job NEW1234567 (2 new, 1 modified, 0 deleted)",
    ]


def test_an_unchanged_corpus_is_not_uploaded_and_not_waited_for(tmp_path):
    corpus = _corpus(tmp_path)
    objects = stage.objects_for(corpus, "eval-t")
    aws = Aws("cloudformation", "s3")
    aws.outputs("RagDev-Storage", DocumentsBucketName="docs", DocumentsPrefix="docs/")
    aws.outputs("RagDev-KnowledgeBase", KnowledgeBaseId="KB1234567A", DataSourceId="DS1234567A")
    prefix = "docs/eval/eval-t/"
    s3 = aws.stubs["s3"]
    s3.add_response("list_objects_v2", {"Contents": [{"Key": prefix + name} for name in objects], "KeyCount": 4, "IsTruncated": False})
    for name, data in objects.items():
        s3.add_response("head_object", {"Metadata": {"sha256": stage._sha256(data)}}, {"Bucket": "docs", "Key": prefix + name})
    lines: list[str] = []
    assert stage.load_corpus(aws, "dev", corpus, "eval-t", log=lines.append) == stage.CorpusLoad("docs", prefix, 0, 0, 4)
    aws.done()
    assert lines == ["corpus: 0 objects uploaded, 0 deleted, 4 unchanged under s3://docs/docs/eval/eval-t/"]


def test_stale_objects_are_deleted_a_thousand_at_a_time(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.md").write_text("alpha")
    corpus = load_corpus(tmp_path / "c")
    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    prefix = "p/eval/c/"
    stale = [f"old-{i:04d}.md" for i in range(1001)]
    with Stubber(s3) as stub:
        stub.add_response("list_objects_v2", {"Contents": [{"Key": prefix + name} for name in stale], "IsTruncated": False})
        stub.add_response("put_object", {})
        stub.add_response("put_object", {})
        stub.add_response("delete_objects", {}, {"Bucket": "b", "Delete": {"Objects": [{"Key": prefix + n} for n in stale[:1000]], "Quiet": True}})
        stub.add_response("delete_objects", {}, {"Bucket": "b", "Delete": {"Objects": [{"Key": prefix + stale[1000]}], "Quiet": True}})
        result = stage.upload_corpus(s3, bucket="b", documents_prefix="p/", corpus=corpus, collection="c", log=lambda _: None)
        stub.assert_no_pending_responses()
    assert (result.uploaded, result.deleted, result.unchanged) == (2, 1001, 0)


def test_a_stage_without_the_corpus_outputs_says_which(tmp_path):
    aws = Aws("cloudformation")
    aws.outputs("RagDev-Storage", DocumentsBucketName="docs")
    aws.outputs("RagDev-KnowledgeBase", DataSourceId="DS1234567A")
    with pytest.raises(TargetError) as caught:
        stage.load_corpus(aws, "dev", _corpus(tmp_path), "eval-t")
    assert str(caught.value) == ("stage dev lacks the outputs DocumentsPrefix, KnowledgeBaseId: deploy its Storage and "
                                 "KnowledgeBase stacks")


def test_ingestion_waits_for_every_running_job_and_reports_a_failure_with_the_command_to_see_it():
    agent = boto3.client("bedrock-agent", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    ticks = iter([0.0, 10.0, 20.0, 30.0])
    sleeps: list[float] = []
    with Stubber(agent) as stub:
        # a job of ours failed while another (older) still runs: wait for it; then report the failure
        stub.add_response("list_ingestion_jobs", {"ingestionJobSummaries": [_job("BAD1234567", "FAILED", 2), _job("RUN1234567", "STOPPING", -5)]})
        stub.add_response("list_ingestion_jobs", {"ingestionJobSummaries": [_job("BAD1234567", "FAILED", 2), _job("RUN1234567", "STOPPED", -5)]})
        with pytest.raises(TargetError) as caught:
            stage.wait_for_ingestion(agent, knowledge_base_id="KB1234567A", data_source_id="DS1234567A", since=SINCE, poll_s=7,
                                     sleep=sleeps.append, clock=lambda: next(ticks), log=lambda _: None)
    assert str(caught.value) == ("ingestion job BAD1234567 failed: see `aws bedrock-agent get-ingestion-job --knowledge-base-id KB1234567A "
                                 "--data-source-id DS1234567A --ingestion-job-id BAD1234567`")
    assert sleeps == [7]
    lines: list[str] = []
    with Stubber(agent) as stub:  # a job that completed exactly at the upload counts; no statistics: zeros
        stub.add_response("list_ingestion_jobs", {"ingestionJobSummaries": [_job("NOW1234567", "COMPLETE", 0)]})
        done = stage.wait_for_ingestion(agent, knowledge_base_id="KB1234567A", data_source_id="DS1234567A", since=SINCE,
                                        sleep=sleeps.append, log=lines.append)
    assert done["ingestionJobId"] == "NOW1234567" and lines == ["ingestion complete: job NOW1234567 (0 new, 0 modified, 0 deleted)"]
    ticks = iter([0.0, 1799.0, 1800.0])
    with Stubber(agent) as stub:
        stub.add_response("list_ingestion_jobs", {"ingestionJobSummaries": [_job("OLD1234567", "COMPLETE", -1)]})
        stub.add_response("list_ingestion_jobs", {"ingestionJobSummaries": [_job("OLD1234567", "COMPLETE", -1)]})
        with pytest.raises(TargetError) as caught:
            stage.wait_for_ingestion(agent, knowledge_base_id="KB1234567A", data_source_id="DS1234567A", since=SINCE,
                                     sleep=sleeps.append, clock=lambda: next(ticks), log=lambda _: None)
        stub.assert_no_pending_responses()
    assert str(caught.value) == ("no ingestion job completed within 1800 s of the upload: check the ingest function's logs and the "
                                 "dead-letter queue (README: Documents and ingestion), then run again")
    assert sleeps == [7, 15]


# --- the judge ------------------------------------------------------------------------------------

@pytest.mark.parametrize("model, expected", [
    ("anthropic.claude-3-haiku-20240307-v1:0", "anthropic"),
    ("us.anthropic.claude-3-5-haiku-20241022-v1:0", "anthropic"),
    ("us-gov.anthropic.claude-3-haiku-20240307-v1:0", "anthropic"),
    ("APAC.Amazon.Nova-Lite-v1:0", "amazon"),
    ("meta.llama3-8b-instruct-v1:0", "llama"),
    ("eu.meta.llama3-2-1b-instruct-v1:0", "llama"),
    ("arn:aws:bedrock:us-east-1:111122223333:inference-profile/us.mistral.pixtral-large-2502-v1:0", "mistral"),
    ("arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-pro-v1:0", "amazon"),
    ("sagemaker:ragdev-generator/finetuned", None),
    ("sagemaker:qwen3-1.7b/base", "qwen"),
    ("sagemaker:Llama-3-8b", "llama"),
    ("local:extractive", None),
    ("", None),
])
def test_the_family_of_a_model(model, expected):
    assert judge.family(model) == expected


def test_a_judge_of_a_generators_family_is_refused_in_one_line():
    with pytest.raises(judge.JudgeError) as caught:
        judge.check_family("us.meta.llama3-2-90b-instruct-v1:0", ["amazon.nova-lite-v1:0", "sagemaker:llama-3-8b/base"])
    assert str(caught.value) == ("--judge 'us.meta.llama3-2-90b-instruct-v1:0' is of the llama family, like the generator "
                                 "'sagemaker:llama-3-8b/base': pick a judge from another family")
    with pytest.raises(judge.JudgeError) as caught:
        judge.check_family("local:extractive", [])
    assert str(caught.value) == "--judge 'local:extractive': give a Bedrock model id such as anthropic.claude-3-haiku-20240307-v1:0"
    judge.check_family("anthropic.claude-3-haiku-20240307-v1:0", ["amazon.nova-lite-v1:0", "sagemaker:ragdev-generator/base", "local:llm"])


def _converse_reply(text: str, **usage) -> dict:
    return {"output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": "end_turn",
            "usage": {"inputTokens": 0, "outputTokens": 0, "totalTokens": 0, **usage}, "metrics": {"latencyMs": 1}}


def test_the_judge_asks_with_the_question_references_excerpts_and_answer():
    runtime = boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    grader = judge.Judge(runtime, "anthropic.claude-3-haiku-20240307-v1:0", max_tokens=64)
    row = {"question": "How fast?", "references": ["26 knots", "about 26 knots"],
           "response": {"answer": "26 knots [1]", "citations": [{"excerpt": "It does 26 knots."}, {"n": 2}]}}
    user = ("Question: How fast?\n\nReference answers:\n- 26 knots\n- about 26 knots\n\nExcerpts the answer cites:\n"
            "[1] It does 26 knots.\n[2] \n\nAnswer to grade:\n26 knots [1]")
    unanswerable = ("Question: Cabin price?\n\nReference answers:\n(none: the question is unanswerable)\n\n"
                    "Excerpts the answer cites:\n(no excerpts)\n\nAnswer to grade:\n")
    with Stubber(runtime) as stub:
        for text in (user, unanswerable):
            stub.add_response("converse", _converse_reply('{"faithfulness": 0.75, "correctness": 1}', inputTokens=120, outputTokens=12), {
                "modelId": "anthropic.claude-3-haiku-20240307-v1:0", "system": [{"text": judge.SYSTEM}],
                "messages": [{"role": "user", "content": [{"text": text}]}], "inferenceConfig": {"maxTokens": 64, "temperature": 0.0}})
        assert grader.grade(row) == {"faithfulness": 0.75, "correctness": 1.0, "model": "anthropic.claude-3-haiku-20240307-v1:0",
                                     "input_tokens": 120, "output_tokens": 12}
        assert grader.grade({"question": "Cabin price?", "response": None})["faithfulness"] == 0.75
        stub.assert_no_pending_responses()
    assert '{"faithfulness": <0..1>, "correctness": <0..1>}' in judge.SYSTEM


def test_the_judge_reads_the_grades_split_over_blocks():
    runtime = boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    reply = _converse_reply("")
    reply["output"]["message"]["content"] = [{"text": 'Grades: {"faithfulness": 1, '}, {"text": '"correctness": 0}'}]
    with Stubber(runtime) as stub:
        stub.add_response("converse", reply)
        assert judge.Judge(runtime, "m.x").grade({"question": "q", "response": {"answer": "a"}})["correctness"] == 0.0


@pytest.mark.parametrize("text, expected", [
    ('{"faithfulness": 0.5, "correctness": 0.25}', {"faithfulness": 0.5, "correctness": 0.25}),
    ('{"faithfulness": 3, "correctness": -1}', {"faithfulness": 1.0, "correctness": 0.0}),  # clamped to 0..1
    ('{"faithfulness": 1.5, "correctness": 0.5}', {"faithfulness": 1.0, "correctness": 0.5}),
    ('{not json} then {"faithfulness": 1, "correctness": 1}', {"faithfulness": 1.0, "correctness": 1.0}),
    ('{"faithfulness": 1} {"faithfulness": 0, "correctness": 0.5}', {"faithfulness": 0.0, "correctness": 0.5}),
    ('{"faithfulness": true, "correctness": 1} {"faithfulness": 0.5, "correctness": 1}', {"faithfulness": 0.5, "correctness": 1.0}),
    ('{"faithfulness": "high", "correctness": 1}', None),
    ("no json here", None),
    ("", None),
    (None, None),
])
def test_grades_are_the_first_json_object_with_both_numbers(text, expected):
    if expected is None:
        with pytest.raises(ValueError) as caught:
            judge.parse(text)
        assert str(caught.value) == "the judge's reply has no JSON object with faithfulness and correctness"
    else:
        assert judge.parse(text) == expected
