"""Ingest handler: botocore's Stubber checks every Bedrock request against the bedrock-agent model;
SQS sends are recorded (and once checked against the sqs model). Adversarial records (malformed,
huge, deeply nested, wrong types, duplicates, redeliveries) must never fail the valid ones."""

from __future__ import annotations

import io
import json
from collections import Counter
from contextlib import redirect_stdout

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.stub import ANY, Stubber
from hypothesis import given, settings as hypothesis_settings, strategies as st

from ingest import handler as ingest

QUEUE_URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/changes"
SETTINGS = ingest.Settings(knowledge_base_id="KB12345678", data_source_id="DS12345678", bucket="docs-bucket", prefix="documents/",
                           queue_url=QUEUE_URL, retry_after_s=300, max_job_retries=2, max_wait_s=3600)
ENV = {"KNOWLEDGE_BASE_ID": "KB12345678", "DATA_SOURCE_ID": "DS12345678", "DOCUMENTS_BUCKET": "docs-bucket",
       "DOCUMENTS_PREFIX": "documents/", "INGESTION_QUEUE_URL": QUEUE_URL, "RETRY_AFTER_S": "300", "MAX_JOB_RETRIES": "2",
       "MAX_WAIT_S": "3600", "STAGE": "qa"}
IDS = {"knowledgeBaseId": "KB12345678", "dataSourceId": "DS12345678"}


def job(job_id: str = "JOB1234567", status: str = "STARTING", **extra) -> dict:
    return {"ingestionJob": {**IDS, "ingestionJobId": job_id, "status": status,
                             "startedAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z", **extra}}


class FakeSqs:
    """Records send_message calls; `fail` makes the next sends raise."""

    def __init__(self, fail: bool = False):
        self.sent: list[dict] = []
        self.fail = fail

    def send_message(self, **kwargs):
        if self.fail:
            raise ClientError({"Error": {"Code": "AWS.SimpleQueueService.NonExistentQueue", "Message": "gone"}}, "SendMessage")
        self.sent.append({**kwargs, "body": json.loads(kwargs["MessageBody"])})
        return {"MessageId": f"sent-{len(self.sent)}", "MD5OfMessageBody": "x"}


@pytest.fixture
def bedrock():
    client = boto3.client("bedrock-agent", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y",
                          config=Config(retries={"mode": "standard", "max_attempts": 1}))
    with Stubber(client) as stub:
        client.stub = stub
        yield client
        stub.assert_no_pending_responses()


def s3_record(message_id: str, key: str, detail_type: str = "Object Created", bucket: str = "docs-bucket") -> dict:
    body = {"version": "0", "source": "aws.s3", "detail-type": detail_type,
            "detail": {"bucket": {"name": bucket}, "object": {"key": key, "size": 10}}}
    return {"messageId": message_id, "body": json.dumps(body)}


def own_record(message_id: str, detail_type: str, detail) -> dict:
    return {"messageId": message_id, "body": json.dumps({"source": ingest.OWN_SOURCE, "detail-type": detail_type, "detail": detail})}


def check_record(message_id: str, job_id: str = "JOB1234567", attempt: int = 0, checks: int = 0) -> dict:
    return own_record(message_id, ingest.CHECK_JOB, {"ingestionJobId": job_id, "attempt": attempt, "checks": checks})


def expect_start(client, description: str, token=ANY, job_id: str = "JOB1234567") -> None:
    client.stub.add_response("start_ingestion_job", job(job_id), {**IDS, "description": description, "clientToken": token})


def expect_get(client, status: str, job_id: str = "JOB1234567", **extra) -> None:
    client.stub.add_response("get_ingestion_job", job(job_id, status, **extra), {**IDS, "ingestionJobId": job_id})


def run(records, bedrock, sqs=None, settings=SETTINGS):
    tally = Counter()
    result = ingest.process(records, bedrock=bedrock, sqs=sqs or FakeSqs(), settings=settings, tally=tally)
    return result, tally


# --- syncing document changes ---------------------------------------------------------------------


def test_one_job_per_batch_and_its_outcome_is_checked_later(bedrock):
    expect_start(bedrock, "2 change(s): Object Created, Object Deleted")
    sqs = FakeSqs()
    records = [s3_record("m1", "documents/a.md"), s3_record("m2", "documents/b.md", "Object Deleted")]
    result, tally = run(records, bedrock, sqs)
    assert result == {"batchItemFailures": []}
    assert tally[ingest.JOBS_STARTED] == 1
    (sent,) = sqs.sent
    assert sent["DelaySeconds"] == SETTINGS.retry_after_s and sent["QueueUrl"] == QUEUE_URL
    assert sent["body"] == {"source": "rag.ingest", "detail-type": ingest.CHECK_JOB,
                            "detail": {"ingestionJobId": "JOB1234567", "attempt": 0, "checks": 0}}


@pytest.mark.parametrize("code, status", [("ConflictException", 409), ("ThrottlingException", 429), ("ServiceQuotaExceededException", 402)])
def test_a_running_job_defers_the_batch_without_spending_a_receive(bedrock, code, status):
    bedrock.stub.add_client_error("start_ingestion_job", service_error_code=code, http_status_code=status)
    sqs = FakeSqs()
    records = [s3_record("m1", "documents/a.md"), {"messageId": "bad", "body": "not json"}, s3_record("m3", "documents/c.md")]
    result, tally = run(records, bedrock, sqs)
    assert result == {"batchItemFailures": []}  # acknowledged: one delayed message takes their place
    (sent,) = sqs.sent
    assert sent["body"]["detail-type"] == ingest.SYNC_WANTED and sent["body"]["detail"] == {"deferrals": 1, "changes": 2}
    assert sent["DelaySeconds"] == 300
    assert tally[ingest.SYNCS_DEFERRED] == 1 and tally[ingest.MESSAGES_DROPPED] == 1


def test_a_deferred_sync_runs_when_the_job_is_done(bedrock):
    expect_start(bedrock, "1 change(s): deferred")
    result, tally = run([own_record("d1", ingest.SYNC_WANTED, {"deferrals": 3, "changes": 7})], bedrock)
    assert result == {"batchItemFailures": []} and tally[ingest.JOBS_STARTED] == 1


def test_deferrals_stop_after_the_maximum_wait_and_go_to_the_redrive_policy(bedrock):
    bedrock.stub.add_client_error("start_ingestion_job", service_error_code="ConflictException", http_status_code=409)
    sqs = FakeSqs()
    limit = SETTINGS.max_waits  # 3600 / 300 = 12
    result, _ = run([own_record("d1", ingest.SYNC_WANTED, {"deferrals": limit, "changes": 1})], bedrock, sqs)
    assert result == {"batchItemFailures": [{"itemIdentifier": "d1"}]} and not sqs.sent


def test_a_deferral_that_cannot_be_sent_keeps_the_original_messages(bedrock):
    bedrock.stub.add_client_error("start_ingestion_job", service_error_code="ConflictException", http_status_code=409)
    result, tally = run([s3_record("m1", "documents/a.md")], bedrock, FakeSqs(fail=True))
    assert result == {"batchItemFailures": [{"itemIdentifier": "m1"}]} and not tally[ingest.SYNCS_DEFERRED]


@pytest.mark.parametrize("code, status", [("AccessDeniedException", 403), ("ResourceNotFoundException", 404), ("ValidationException", 400)])
def test_real_failures_send_every_valid_message_back(bedrock, code, status):
    bedrock.stub.add_client_error("start_ingestion_job", service_error_code=code, http_status_code=status)
    records = [s3_record("m1", "documents/a.md"), {"messageId": "bad", "body": "{"}, s3_record("m3", "documents/c.md")]
    result, _ = run(records, bedrock)
    assert result == {"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m3"}]}


def test_a_started_job_whose_check_cannot_be_scheduled_comes_back_and_is_not_started_twice(bedrock):
    records = [s3_record("m1", "documents/a.md"), s3_record("m2", "documents/b.md")]
    token = ingest.client_token("sync", "m1", "m2")
    expect_start(bedrock, "2 change(s): Object Created", token=token)
    expect_start(bedrock, "2 change(s): Object Created", token=token)  # the redelivery asks with the same token
    assert run(records, bedrock, FakeSqs(fail=True))[0]["batchItemFailures"] == [{"itemIdentifier": "m1"}, {"itemIdentifier": "m2"}]
    assert run(list(reversed(records)), bedrock)[0] == {"batchItemFailures": []}


def test_client_tokens_follow_the_messages_and_fit_the_api():
    same = ingest.client_token("sync", "a", "b")
    assert same == ingest.client_token("sync", "a", "b") != ingest.client_token("sync", "a", "c")
    assert ingest.client_token("retry", "JOB1234567", "1") != ingest.client_token("retry", "JOB1234567", "2")
    assert 33 <= len(same) <= 256 and same.replace("-", "").isalnum()


def test_timeouts_after_client_retries_come_back_through_the_queue(bedrock, monkeypatch):
    def unreachable(**_):
        raise EndpointConnectionError(endpoint_url="https://bedrock-agent.eu-west-1.amazonaws.com")

    monkeypatch.setattr(bedrock, "start_ingestion_job", unreachable)
    assert run([s3_record("m1", "documents/a.md")], bedrock)[0]["batchItemFailures"] == [{"itemIdentifier": "m1"}]


def test_deploy_message_starts_the_first_sync(bedrock):
    expect_start(bedrock, "1 change(s): deploy")
    record = {"messageId": "m9", "body": json.dumps({"source": "rag.deploy", "detail-type": "Initial sync"})}
    assert run([record], bedrock)[0] == {"batchItemFailures": []}


# --- checking jobs -------------------------------------------------------------------------------


def test_a_running_job_is_checked_again_later(bedrock):
    expect_get(bedrock, "IN_PROGRESS")
    sqs = FakeSqs()
    assert run([check_record("c1", attempt=1, checks=4)], bedrock, sqs)[0] == {"batchItemFailures": []}
    assert sqs.sent[0]["body"]["detail"] == {"ingestionJobId": "JOB1234567", "attempt": 1, "checks": 5}


def test_a_job_running_past_the_maximum_wait_counts_as_failed(bedrock):
    expect_get(bedrock, "IN_PROGRESS")
    sqs = FakeSqs()
    result, tally = run([check_record("c1", checks=SETTINGS.max_waits - 1)], bedrock, sqs)
    assert result == {"batchItemFailures": []} and not sqs.sent and tally[ingest.JOBS_FAILED] == 1


def test_a_complete_job_reports_its_documents(bedrock):
    statistics = {"numberOfDocumentsScanned": 9, "numberOfNewDocumentsIndexed": 3, "numberOfModifiedDocumentsIndexed": 2,
                  "numberOfDocumentsDeleted": 1, "numberOfDocumentsFailed": 2}
    expect_get(bedrock, "COMPLETE", statistics=statistics)
    result, tally = run([check_record("c1")], bedrock)
    assert result == {"batchItemFailures": []}
    assert tally == Counter({ingest.JOBS_COMPLETED: 1, ingest.DOCUMENTS_INDEXED: 5, ingest.DOCUMENTS_DELETED: 1, ingest.DOCUMENTS_FAILED: 2})


def test_a_failed_job_is_started_again_with_a_token_of_its_own(bedrock):
    expect_get(bedrock, "FAILED", failureReasons=["embedding model throttled"])
    expect_start(bedrock, "retry 1 of ingestion job JOB1234567", token=ingest.client_token("retry", "JOB1234567", "1"), job_id="JOB7654321")
    sqs = FakeSqs()
    result, tally = run([check_record("c1", attempt=0)], bedrock, sqs)
    assert result == {"batchItemFailures": []} and tally[ingest.JOB_RETRIES] == 1
    assert sqs.sent[0]["body"]["detail"] == {"ingestionJobId": "JOB7654321", "attempt": 1, "checks": 0}


def test_a_job_failing_after_its_retries_raises_the_failed_jobs_metric(bedrock):
    expect_get(bedrock, "FAILED", failureReasons=["access denied to the index"])
    sqs = FakeSqs()
    result, tally = run([check_record("c1", attempt=SETTINGS.max_job_retries)], bedrock, sqs)
    assert result == {"batchItemFailures": []} and tally[ingest.JOBS_FAILED] == 1 and not sqs.sent


def test_a_failed_job_covered_by_a_newer_running_job_needs_no_retry(bedrock):
    expect_get(bedrock, "FAILED")
    bedrock.stub.add_client_error("start_ingestion_job", service_error_code="ConflictException", http_status_code=409)
    result, tally = run([check_record("c1")], bedrock)
    assert result == {"batchItemFailures": []} and not tally[ingest.JOBS_FAILED]


def test_a_stopped_job_is_an_operator_decision(bedrock):
    expect_get(bedrock, "STOPPED")
    result, tally = run([check_record("c1")], bedrock)
    assert result == {"batchItemFailures": []} and tally == Counter({ingest.JOBS_STOPPED: 1})


@pytest.mark.parametrize("gone", ["ResourceNotFoundException", "ValidationException"])  # the job, or its replaced knowledge base
def test_a_vanished_job_is_not_checked_again_and_a_throttled_check_is_retried(bedrock, gone):
    bedrock.stub.add_client_error("get_ingestion_job", service_error_code=gone, http_status_code=404 if "NotFound" in gone else 400)
    bedrock.stub.add_client_error("get_ingestion_job", service_error_code="ThrottlingException", http_status_code=429)
    records = [check_record("c1", job_id="JOBAAAAAAA"), check_record("c2", job_id="JOBBBBBBBB")]
    assert run(records, bedrock)[0] == {"batchItemFailures": [{"itemIdentifier": "c2"}]}


def test_duplicate_checks_of_one_job_in_a_batch_read_it_once(bedrock):
    expect_get(bedrock, "COMPLETE", statistics={})
    assert run([check_record("c1"), check_record("c2"), check_record("c1")], bedrock)[0] == {"batchItemFailures": []}


def test_changes_and_checks_in_one_batch(bedrock):
    expect_start(bedrock, "1 change(s): Object Created", job_id="JOBNEW0001")
    expect_get(bedrock, "COMPLETE", job_id="JOBOLD0001", statistics={"numberOfNewDocumentsIndexed": 1})
    sqs = FakeSqs()
    result, tally = run([check_record("c1", job_id="JOBOLD0001"), s3_record("m1", "documents/a.md")], bedrock, sqs)
    assert result == {"batchItemFailures": []}
    assert tally[ingest.JOBS_STARTED] == 1 and tally[ingest.JOBS_COMPLETED] == 1
    assert [s["body"]["detail"]["ingestionJobId"] for s in sqs.sent] == ["JOBNEW0001"]


# --- limits, counts and what failed ---------------------------------------------------------------


def test_a_sync_is_deferred_up_to_the_last_allowed_deferral(bedrock):
    bedrock.stub.add_client_error("start_ingestion_job", service_error_code="ConflictException", http_status_code=409)
    sqs = FakeSqs()
    result, _ = run([own_record("d1", ingest.SYNC_WANTED, {"deferrals": SETTINGS.max_waits - 1, "changes": 1})], bedrock, sqs)
    assert result == {"batchItemFailures": []}
    assert sqs.sent[0]["body"]["detail"] == {"deferrals": SETTINGS.max_waits, "changes": 1}


def test_a_running_job_is_checked_up_to_the_last_allowed_check(bedrock):
    expect_get(bedrock, "STOPPING")
    sqs = FakeSqs()
    result, tally = run([check_record("c1", checks=SETTINGS.max_waits - 2)], bedrock, sqs)
    assert result == {"batchItemFailures": []} and not tally[ingest.JOBS_FAILED]
    assert sqs.sent[0]["body"]["detail"]["checks"] == SETTINGS.max_waits - 1


def test_a_failed_job_is_retried_on_its_last_allowed_attempt(bedrock):
    last = SETTINGS.max_job_retries
    expect_get(bedrock, "FAILED")
    expect_start(bedrock, f"retry {last} of ingestion job JOB1234567", job_id="JOB7654321")
    sqs = FakeSqs()
    result, tally = run([check_record("c1", attempt=last - 1)], bedrock, sqs)
    assert result == {"batchItemFailures": []} and tally == Counter({ingest.JOB_RETRIES: 1})
    assert sqs.sent[0]["body"]["detail"] == {"ingestionJobId": "JOB7654321", "attempt": last, "checks": 0}


def test_counts_add_up_over_the_jobs_of_a_batch(bedrock):
    statistics = {"numberOfNewDocumentsIndexed": 1, "numberOfModifiedDocumentsIndexed": 2, "numberOfDocumentsDeleted": 3,
                  "numberOfDocumentsFailed": 4}
    expect_get(bedrock, "COMPLETE", job_id="JOBAAAAAAA", statistics=statistics)
    expect_get(bedrock, "COMPLETE", job_id="JOBBBBBBBB", statistics=statistics)
    expect_get(bedrock, "STOPPED", job_id="JOBCCCCCCC")
    expect_get(bedrock, "STOPPED", job_id="JOBDDDDDDD")
    expect_get(bedrock, "FAILED", job_id="JOBEEEEEEE")
    expect_get(bedrock, "FAILED", job_id="JOBFFFFFFF")
    expect_get(bedrock, "IN_PROGRESS", job_id="JOBGGGGGGG")
    for job_id in ("JOBHHHHHHH", "JOBIIIIIII"):
        expect_get(bedrock, "FAILED", job_id=job_id)
        expect_start(bedrock, f"retry 1 of ingestion job {job_id}", job_id=job_id[::-1])
    records = [check_record(f"c{i}", job_id=job_id) for i, job_id in enumerate(["JOBAAAAAAA", "JOBBBBBBBB", "JOBCCCCCCC", "JOBDDDDDDD"])]
    records += [check_record("c4", job_id="JOBEEEEEEE", attempt=2), check_record("c5", job_id="JOBFFFFFFF", attempt=2),
                check_record("c6", job_id="JOBGGGGGGG", checks=SETTINGS.max_waits - 1),
                check_record("c7", job_id="JOBHHHHHHH"), check_record("c8", job_id="JOBIIIIIII"), "bad", None]
    result, tally = run(records, bedrock)
    assert result == {"batchItemFailures": []}
    assert tally == Counter({ingest.JOBS_COMPLETED: 2, ingest.DOCUMENTS_INDEXED: 6, ingest.DOCUMENTS_DELETED: 6, ingest.DOCUMENTS_FAILED: 8,
                             ingest.JOBS_STOPPED: 2, ingest.JOBS_FAILED: 3, ingest.JOB_RETRIES: 2, ingest.MESSAGES_DROPPED: 2})


def test_counts_add_to_the_tally_they_are_given(bedrock):
    tally = Counter({ingest.JOBS_STARTED: 5, ingest.SYNCS_DEFERRED: 5})
    expect_start(bedrock, "1 change(s): Object Created")
    bedrock.stub.add_client_error("start_ingestion_job", service_error_code="ThrottlingException", http_status_code=429)
    for _ in range(2):
        ingest.process([s3_record("m1", "documents/a.md")], bedrock=bedrock, sqs=FakeSqs(), settings=SETTINGS, tally=tally)
    assert tally == Counter({ingest.JOBS_STARTED: 6, ingest.SYNCS_DEFERRED: 6})


@pytest.mark.parametrize("statistics, indexed", [
    ({"numberOfNewDocumentsIndexed": 0, "numberOfModifiedDocumentsIndexed": 0}, 0),
    ({"numberOfNewDocumentsIndexed": -3, "numberOfModifiedDocumentsIndexed": 2}, 2),
    ({"numberOfNewDocumentsIndexed": True, "numberOfModifiedDocumentsIndexed": "4"}, 0),
    ({"numberOfNewDocumentsIndexed": 1.5}, 0),
])
def test_document_counts_that_are_not_counts_add_nothing(statistics, indexed):
    tally = Counter()
    ingest._count_documents(statistics, tally)
    assert tally == Counter({ingest.DOCUMENTS_INDEXED: indexed, ingest.DOCUMENTS_DELETED: 0, ingest.DOCUMENTS_FAILED: 0})


def test_a_failed_message_stays_failed_whatever_follows_it_in_the_batch(bedrock):
    bedrock.stub.add_client_error("start_ingestion_job", service_error_code="AccessDeniedException", http_status_code=403)
    bedrock.stub.add_client_error("get_ingestion_job", service_error_code="ThrottlingException", http_status_code=429)
    expect_get(bedrock, "COMPLETE", job_id="JOBBBBBBBB")
    records = [s3_record("m1", "documents/a.md"), check_record("c1", job_id="JOBAAAAAAA"), check_record("c2", job_id="JOBBBBBBBB")]
    assert run(records, bedrock)[0] == {"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "c1"}]}


@pytest.mark.parametrize("status", ["IN_PROGRESS", "FAILED"])
def test_a_check_that_cannot_be_scheduled_brings_its_message_back(bedrock, status):
    expect_get(bedrock, status)
    if status == "FAILED":
        expect_start(bedrock, "retry 1 of ingestion job JOB1234567", job_id="JOB7654321")
    assert run([check_record("c1")], bedrock, FakeSqs(fail=True))[0] == {"batchItemFailures": [{"itemIdentifier": "c1"}]}


@pytest.mark.parametrize("retry_after_s, delay", [(899, 899), (900, 900), (1000, 900)])
def test_own_messages_wait_at_most_the_15_minutes_sqs_allows(bedrock, retry_after_s, delay):
    expect_start(bedrock, "1 change(s): Object Created")
    sqs = FakeSqs()
    settings = ingest.Settings(**{**vars(SETTINGS), "retry_after_s": retry_after_s})
    run([s3_record("m1", "documents/a.md")], bedrock, sqs, settings=settings)
    assert sqs.sent[0]["DelaySeconds"] == delay


def test_the_client_token_of_a_batch_does_not_change_between_versions():
    """A batch redelivered after a deploy must present the token its first delivery used, or it
    starts a second job: the derivation is pinned (sha256 of the parts, one per line)."""
    assert ingest.client_token("sync", "m1", "m2") == "ingest-917ff08a663f4e50bab151f7a3d33085dd5f6722bd881a8a1be892cef84ee511"
    assert ingest.client_token("sync", "m1\nm2") == ingest.client_token("sync", "m1", "m2")  # ids have no newline (SQS uuids)


def test_failed_calls_become_answers_with_their_code_and_a_bounded_detail():
    def refused(**_):
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "x" * 2000}}, "StartIngestionJob")

    def nameless(**_):
        raise ClientError({}, "StartIngestionJob")

    def unreachable(**_):
        raise EndpointConnectionError(endpoint_url="https://bedrock-agent.eu-west-1.amazonaws.com/" + "y" * 1000)

    answer = ingest.call(refused)
    assert answer.code == "AccessDeniedException" and len(answer.detail) == 500 and "StartIngestionJob" in answer.detail
    assert ingest.call(nameless).code == "Unknown"
    answer = ingest.call(unreachable)
    assert answer.code == "Transport" and len(answer.detail) == 500 and answer.detail.startswith("Could not connect")
    assert ingest.call(lambda **kw: kw, a=1) == ingest.Answer(result={"a": 1})


def test_what_operators_read_in_the_logs(bedrock, caplog):
    """The failure logs carry what is needed to act: the error, the job, its reasons (bounded)."""
    bedrock.stub.add_client_error("start_ingestion_job", service_error_code="AccessDeniedException", http_status_code=403,
                                  service_message="no access to the bucket")
    run([s3_record("m1", "documents/a.md")], bedrock)
    (failed,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert failed.error_code == "AccessDeniedException" and "no access to the bucket" in failed.error and failed.messages == 1
    caplog.clear()

    bedrock.stub.add_client_error("start_ingestion_job", service_error_code="ServiceQuotaExceededException", http_status_code=402)
    run([s3_record("m1", "documents/a.md")], bedrock)
    (deferred,) = [r for r in caplog.records if r.getMessage() == "sync deferred"]
    assert deferred.reason == "the ingestion job quota is reached" and deferred.deferrals == 1
    caplog.clear()

    expect_get(bedrock, "FAILED", failureReasons=["r" * 800] + [f"reason {i}" for i in range(9)])
    run([check_record("c1", attempt=SETTINGS.max_job_retries)], bedrock)
    (exhausted,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert exhausted.failure_reasons == ["r" * 500, "reason 0", "reason 1", "reason 2", "reason 3"]
    assert (exhausted.ingestion_job_id, exhausted.status, exhausted.attempt) == ("JOB1234567", "FAILED", SETTINGS.max_job_retries)
    caplog.clear()

    expect_get(bedrock, "FAILED", failureReasons=["embedding model throttled"])
    expect_start(bedrock, "retry 1 of ingestion job JOB1234567", job_id="JOB7654321")
    run([check_record("c1")], bedrock)
    (retried,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert retried.failure_reasons == ["embedding model throttled"] and retried.new_ingestion_job_id == "JOB7654321"


# --- adversarial records -------------------------------------------------------------------------


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


NOT_JSON = "body is not JSON (or nested too deep)"
NO_FIELDS = "S3 event without detail.bucket.name / detail.object.key"
BAD_CHECK = "check message without a valid ingestionJobId, attempt and checks"
NO_ID = "record without messageId"
S3_BODY = s3_record("x", "documents/a.md")["body"]


@pytest.mark.parametrize("record, reason", [
    ({"messageId": "x1", "body": "{not json"}, NOT_JSON),
    ({"messageId": "x1", "body": nested(100_000)}, NOT_JSON),  # RecursionError in json.loads
    ({"messageId": "x1", "body": json.dumps({"source": "aws.s3", "detail-type": "Object Created", "detail": json.loads(nested(500))})}, NO_FIELDS),
    ({"messageId": "x1", "body": "x" * 1_000_000}, NOT_JSON),
    ({"messageId": "x1", "body": json.dumps(["a", "list"])}, "body is not a JSON object"),
    ({"messageId": "x1", "body": {"already": "a dict"}}, NOT_JSON),
    ({"messageId": "x1", "body": None}, NOT_JSON),
    ({"messageId": "x1"}, NOT_JSON),
    ({"messageId": 7, "body": "{}"}, NO_ID),
    ({"messageId": 7, "body": S3_BODY}, NO_ID),  # a valid change under an id SQS cannot have sent
    ({"messageId": "", "body": S3_BODY}, NO_ID),
    ({"body": json.dumps({"source": "rag.deploy"})}, NO_ID),
    ({"messageId": "x1", "body": json.dumps({"source": "aws.s3", "detail-type": "Object Restore Completed",
                                              "detail": {"bucket": {"name": "docs-bucket"}, "object": {"key": "documents/a"}}})},
     "not an S3 object event: source='aws.s3' detail-type='Object Restore Completed'"),
    ({"messageId": "x1", "body": json.dumps({"source": "aws.s4", "detail-type": "Object Created", "detail": {}})},
     "not an S3 object event: source='aws.s4' detail-type='Object Created'"),
    ({"messageId": "x1", "body": json.dumps({"source": "aws.s3", "detail-type": ["Object Created"], "detail": {}})},
     "not an S3 object event: source='aws.s3' detail-type=['Object Created']"),
    ({"messageId": "x1", "body": json.dumps({"source": "aws.s3", "detail-type": "Object Created", "detail": {"bucket": {}}})}, NO_FIELDS),
    ({"messageId": "x1", "body": json.dumps({"source": "aws.s3", "detail-type": "Object Created", "detail": "a string"})}, NO_FIELDS),
    ({"messageId": "x1", "body": json.dumps({"source": "aws.s3", "detail-type": "Object Created",
                                              "detail": {"bucket": {"name": 5}, "object": {"key": None}}})}, "S3 event with non-string bucket or key"),
    ({"messageId": "x1", "body": json.dumps({"source": "aws.s3", "detail-type": "Object Created",
                                              "detail": {"bucket": {"name": "docs-bucket"}, "object": {"key": 5}}})}, "S3 event with non-string bucket or key"),
    (s3_record("x1", "training/a.jsonl"), "object s3://'docs-bucket'/'training/a.jsonl' is outside s3://docs-bucket/documents/"),
    (s3_record("x1", "documents/a.md", bucket="other-bucket"), "object s3://'other-bucket'/'documents/a.md' is outside s3://docs-bucket/documents/"),
    (own_record("x1", ingest.CHECK_JOB, {"ingestionJobId": "short", "attempt": 0, "checks": 0}), BAD_CHECK),
    (own_record("x1", ingest.CHECK_JOB, {"ingestionJobId": 1234567890, "attempt": 0, "checks": 0}), BAD_CHECK),
    (own_record("x1", ingest.CHECK_JOB, {"ingestionJobId": "JOB1234567", "attempt": -1, "checks": 0}), BAD_CHECK),
    (own_record("x1", ingest.CHECK_JOB, {"ingestionJobId": "JOB1234567", "attempt": True, "checks": 0}), BAD_CHECK),
    (own_record("x1", ingest.CHECK_JOB, {"ingestionJobId": "JOB1234567", "attempt": 10**9, "checks": 0}), BAD_CHECK),
    (own_record("x1", ingest.CHECK_JOB, {"ingestionJobId": "JOB1234567", "attempt": 0, "checks": -1}), BAD_CHECK),
    (own_record("x1", ingest.SYNC_WANTED, {"deferrals": "3"}), "bad deferrals"),
    (own_record("x1", ingest.SYNC_WANTED, ["not", "an", "object"]), "rag.ingest message without a detail object"),
    (own_record("x1", "Something else", {}), "unknown rag.ingest message 'Something else'"),
    ("not even a dict", "record is not an object"),
    (None, "record is not an object"),
])
def test_a_bad_record_is_dropped_with_its_reason_and_the_valid_one_beside_it_goes_through(bedrock, caplog, record, reason):
    expect_start(bedrock, "1 change(s): Object Created")
    result, tally = run([record, s3_record("good", "documents/a.md")], bedrock)
    assert result == {"batchItemFailures": []}
    assert tally[ingest.MESSAGES_DROPPED] == 1 and tally[ingest.JOBS_STARTED] == 1
    (dropped,) = [r for r in caplog.records if r.getMessage() == "message dropped"]
    assert dropped.reason == reason  # what an operator reads to know why a message was ignored
    message_id = record.get("messageId") if isinstance(record, dict) else None
    assert dropped.message_id == (message_id if isinstance(message_id, str) else None)


def test_a_long_value_in_a_drop_reason_is_cut_to_120_characters():
    message, reason = ingest.parse_record({"messageId": "x1", "body": json.dumps({"source": "aws.s3", "detail-type": "y" * 500})}, SETTINGS)
    assert message is None and reason.endswith("detail-type='" + "y" * 119)


def test_a_parsing_bug_drops_its_record_instead_of_failing_the_batch(monkeypatch):
    def broken(record, settings):
        raise ZeroDivisionError

    monkeypatch.setattr(ingest, "_parse", broken)
    assert ingest.parse_record(s3_record("m1", "documents/a.md"), SETTINGS) == (None, "unreadable record (ZeroDivisionError)")


@pytest.mark.parametrize("value, valid", [(0, True), (ingest.MAX_COUNTER, True), (ingest.MAX_COUNTER + 1, False), (-1, False), (False, False), (1.0, False)])
def test_counters_in_own_messages_are_small_non_negative_integers(value, valid):
    check, _ = ingest.parse_record(check_record("c1", attempt=value, checks=value), SETTINGS)
    deferred, _ = ingest.parse_record(own_record("d1", ingest.SYNC_WANTED, {"deferrals": value}), SETTINGS)
    if valid:
        assert check == ingest.Check("c1", "JOB1234567", value, value)
        assert deferred == ingest.Change("d1", "deferred", deferrals=value)
    else:
        assert check is None and deferred is None


def test_records_that_are_not_a_list_are_no_batch(bedrock):
    for records in ({"messageId": "m1", "body": S3_BODY}, "m1", None):
        assert run(records, bedrock) == ({"batchItemFailures": []}, Counter())


class CountingBedrock:
    """Answers every call; for property tests where the Stubber's fixed script does not fit."""

    def __init__(self):
        self.starts = 0

    def start_ingestion_job(self, **request):
        self.starts += 1
        return job()

    def get_ingestion_job(self, **request):
        return job(request["ingestionJobId"], "COMPLETE")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
bodies = st.one_of(
    st.text(max_size=50),
    json_values.map(json.dumps),
    st.fixed_dictionaries({"source": st.sampled_from(["aws.s3", "rag.deploy", "rag.ingest", "other"]),
                           "detail-type": st.sampled_from([*ingest.S3_DETAIL_TYPES, ingest.SYNC_WANTED, ingest.CHECK_JOB, "x"]),
                           "detail": json_values}).map(json.dumps),
)
records = st.lists(st.one_of(json_values, st.fixed_dictionaries({"messageId": st.text(min_size=1, max_size=8), "body": bodies})), max_size=8)


@hypothesis_settings(max_examples=150, deadline=None)
@given(batch=records)
def test_any_batch_is_answered_and_only_its_own_messages_are_retried(batch):
    bedrock = CountingBedrock()
    result, _ = run(batch, bedrock)
    ids = {r["messageId"] for r in batch if isinstance(r, dict) and isinstance(r.get("messageId"), str)}
    failed = [item["itemIdentifier"] for item in result["batchItemFailures"]]
    assert set(failed) <= ids and len(failed) == len(set(failed))
    assert bedrock.starts <= 1  # one job per batch, however many changes it holds


# --- the entry point, settings and the stack's names -----------------------------------------------


def test_settings_come_from_the_environment():
    assert ingest.Settings.from_env(ENV) == SETTINGS
    assert SETTINGS.max_waits == 12
    other = {**ENV, "RETRY_AFTER_S": "120", "MAX_JOB_RETRIES": "5", "MAX_WAIT_S": "7200"}  # none of them the defaults
    settings = ingest.Settings.from_env(other)
    assert (settings.retry_after_s, settings.max_job_retries, settings.max_wait_s, settings.max_waits) == (120, 5, 7200, 60)
    assert ingest.Settings(**{**vars(SETTINGS), "retry_after_s": 600, "max_wait_s": 300}).max_waits == 1  # at least one wait


def test_metric_and_message_names_agree_with_the_stack():
    from stacks import knowledge_base_stack as stack

    assert stack.DEPLOY_SYNC_SOURCE == ingest.DEPLOY_SOURCE
    assert stack.JOBS_FAILED_METRIC == ingest.JOBS_FAILED and stack.DOCUMENTS_FAILED_METRIC == ingest.DOCUMENTS_FAILED
    from stacks.monitoring_stack import INGESTION_DOCUMENT_METRICS, INGESTION_JOB_METRICS

    published = {value for name, value in vars(ingest).items() if name.isupper() and isinstance(value, str) and value.startswith("Ingestion")}
    assert set(INGESTION_JOB_METRICS) | set(INGESTION_DOCUMENT_METRICS) <= published


class LambdaContext:
    function_name, memory_limit_in_mb, aws_request_id = "ingest", 256, "req-1"
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:ingest"


def test_entry_uses_the_shared_clients_and_publishes_the_metrics(monkeypatch):
    """main() reads its settings from the environment, calls Bedrock and SQS through
    shared.aws_clients (explicit timeouts, standard retries; SendMessage checked against the sqs
    model) and publishes what happened as EMF metrics with the stage's dimensions."""
    from shared import aws_clients

    for name, value in {**ENV, "AWS_DEFAULT_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
                        "POWERTOOLS_METRICS_NAMESPACE": "RagIngestion", "POWERTOOLS_SERVICE_NAME": "ingest"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(aws_clients, "_clients", {})
    monkeypatch.setattr(aws_clients, "_session", None)
    monkeypatch.setattr(ingest, "_metrics", None)  # as in a new container: made with the environment set
    bedrock = aws_clients.client("bedrock-agent", read_timeout=15.0)
    sqs = aws_clients.client("sqs", read_timeout=5.0)
    output = io.StringIO()
    with Stubber(bedrock) as bedrock_stub, Stubber(sqs) as sqs_stub, redirect_stdout(output):
        bedrock.stub = bedrock_stub
        expect_start(bedrock, "1 change(s): Object Created")
        sqs_stub.add_response("send_message", {"MessageId": "m", "MD5OfMessageBody": "x"},
                              {"QueueUrl": QUEUE_URL, "MessageBody": ANY, "DelaySeconds": 300})
        result = ingest.main({"Records": [s3_record("m1", "documents/a.md")]}, LambdaContext())
        bedrock_stub.assert_no_pending_responses()
        sqs_stub.assert_no_pending_responses()
    assert result == {"batchItemFailures": []}
    emf = [json.loads(line) for line in output.getvalue().splitlines() if '"_aws"' in line]
    (metrics,) = emf
    directive = metrics["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "RagIngestion" and sorted(directive["Dimensions"][0]) == ["service", "stage"]
    assert metrics["service"] == "ingest" and metrics["stage"] == "qa" and metrics[ingest.JOBS_STARTED] == [1.0]
    assert {"Name": ingest.JOBS_STARTED, "Unit": "Count"} in directive["Metrics"]


def test_metrics_name_an_unknown_stage_and_nothing_is_written_for_a_quiet_batch(monkeypatch):
    monkeypatch.delenv("STAGE", raising=False)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "RagIngestion")
    monkeypatch.setattr(ingest, "_metrics", None)
    output = io.StringIO()
    with redirect_stdout(output):
        ingest.publish(Counter())
        assert output.getvalue() == ""
        ingest.publish(Counter({ingest.MESSAGES_DROPPED: 3}))
    (metrics,) = [json.loads(line) for line in output.getvalue().splitlines()]
    assert metrics["stage"] == "unknown" and metrics[ingest.MESSAGES_DROPPED] == [3.0]


def test_a_readable_message_has_no_drop_reason_and_keeps_its_key():
    assert ingest.parse_record(s3_record("m1", "documents/a.md"), SETTINGS) == (ingest.Change("m1", "Object Created", "documents/a.md"), "")
    assert ingest.parse_record(check_record("c1"), SETTINGS) == (ingest.Check("c1", "JOB1234567", 0, 0), "")
    assert ingest.parse_record(own_record("d1", ingest.SYNC_WANTED, {"deferrals": 2}), SETTINGS) == (ingest.Change("d1", "deferred", deferrals=2), "")
    deploy = {"messageId": "m9", "body": json.dumps({"source": "rag.deploy"})}
    assert ingest.parse_record(deploy, SETTINGS) == (ingest.Change("m9", "deploy"), "")


def test_the_started_log_lists_the_changes(bedrock, caplog):
    expect_start(bedrock, "2 change(s): Object Created, Object Deleted")
    run([s3_record("m1", "documents/a.md"), s3_record("m2", "documents/b.md", "Object Deleted")], bedrock)
    (started,) = [r for r in caplog.records if r.getMessage() == "ingestion started"]
    assert started.changes == ["Object Created documents/a.md", "Object Deleted documents/b.md"] and started.ingestion_job_id == "JOB1234567"
