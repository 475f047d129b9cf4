"""Ingest handler with botocore's Stubber: every request is checked against the bedrock-agent model."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.config import Config
from botocore.stub import ANY, Stubber

from ingest import handler as ingest

SETTINGS = ingest.Settings(knowledge_base_id="KB12345678", data_source_id="DS12345678", bucket="docs-bucket", prefix="documents/")
JOB = {
    "ingestionJob": {
        "knowledgeBaseId": "KB12345678", "dataSourceId": "DS12345678", "ingestionJobId": "JOB1234567",
        "status": "STARTING", "startedAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z",
    }
}


@pytest.fixture
def client():
    bedrock = boto3.client("bedrock-agent", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y",
                           config=Config(retries={"mode": "standard", "max_attempts": 1}))
    with Stubber(bedrock) as stub:
        bedrock.stub = stub
        yield bedrock
        stub.assert_no_pending_responses()


def s3_record(message_id: str, key: str, detail_type: str = "Object Created", bucket: str = "docs-bucket") -> dict:
    body = {"version": "0", "source": "aws.s3", "detail-type": detail_type,
            "detail": {"bucket": {"name": bucket}, "object": {"key": key, "size": 10}}}
    return {"messageId": message_id, "body": json.dumps(body)}


def expect_start(client, description: str) -> None:
    client.stub.add_response("start_ingestion_job", JOB, {
        "knowledgeBaseId": "KB12345678", "dataSourceId": "DS12345678", "description": description, "clientToken": ANY})


def test_one_job_for_a_batch_of_changes(client):
    expect_start(client, "2 change(s): Object Created, Object Deleted")
    records = [s3_record("m1", "documents/a.md"), s3_record("m2", "documents/b.md", "Object Deleted")]
    assert ingest.process(records, client, SETTINGS) == {"batchItemFailures": []}


@pytest.mark.parametrize("code, status", [("ConflictException", 409), ("ThrottlingException", 429), ("AccessDeniedException", 403)])
def test_failures_send_every_valid_message_back_to_the_queue(client, code, status):
    client.stub.add_client_error("start_ingestion_job", service_error_code=code, http_status_code=status)
    records = [s3_record("m1", "documents/a.md"), {"messageId": "bad", "body": "not json"}, s3_record("m3", "documents/c.md")]
    result = ingest.process(records, client, SETTINGS)
    assert result == {"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m3"}]}


def test_conflict_then_success_on_redelivery(client):
    client.stub.add_client_error("start_ingestion_job", service_error_code="ConflictException", http_status_code=409)
    expect_start(client, "1 change(s): Object Created")
    records = [s3_record("m1", "documents/a.md")]
    assert ingest.process(records, client, SETTINGS)["batchItemFailures"] == [{"itemIdentifier": "m1"}]
    assert ingest.process(records, client, SETTINGS)["batchItemFailures"] == []


@pytest.mark.parametrize("record", [
    {"messageId": "m1", "body": "{not json"},
    {"messageId": "m1", "body": json.dumps(["a", "list"])},
    {"messageId": "m1", "body": json.dumps({"source": "aws.s3", "detail-type": "Object Restore Completed",
                                             "detail": {"bucket": {"name": "docs-bucket"}, "object": {"key": "documents/a"}}})},
    {"messageId": "m1", "body": json.dumps({"source": "aws.s3", "detail-type": "Object Created", "detail": {"bucket": {}}})},
    {"messageId": "m1", "body": json.dumps({"source": "aws.s3", "detail-type": "Object Created", "detail": None})},
    s3_record("m1", "training/a.jsonl"),
    s3_record("m1", "documents/a.md", bucket="other-bucket"),
    {"body": json.dumps({"source": "rag.deploy"})},
    "not even a dict",
])
def test_malformed_or_out_of_scope_messages_are_dropped_without_a_job(client, record):
    # No stubbed response: any StartIngestionJob call would raise in the Stubber.
    assert ingest.process([record], client, SETTINGS) == {"batchItemFailures": []}


def test_deploy_message_starts_the_first_sync(client):
    expect_start(client, "1 change(s): deploy")
    record = {"messageId": "m9", "body": json.dumps({"source": "rag.deploy", "detail-type": "Initial sync"})}
    assert ingest.process([record], client, SETTINGS) == {"batchItemFailures": []}


def test_timeouts_after_client_retries_are_retried_through_the_queue(client, monkeypatch):
    from botocore.exceptions import ReadTimeoutError

    def timeout(**_):
        raise ReadTimeoutError(endpoint_url="https://bedrock-agent.eu-west-1.amazonaws.com")

    monkeypatch.setattr(client, "start_ingestion_job", timeout)
    assert ingest.process([s3_record("m1", "documents/a.md")], client, SETTINGS)["batchItemFailures"] == [{"itemIdentifier": "m1"}]


def test_empty_or_missing_records():
    assert ingest.process([], None, SETTINGS) == {"batchItemFailures": []}
    assert ingest.process(None, None, SETTINGS) == {"batchItemFailures": []}


def test_settings_come_from_the_environment():
    env = {"KNOWLEDGE_BASE_ID": "KB12345678", "DATA_SOURCE_ID": "DS12345678", "DOCUMENTS_BUCKET": "docs-bucket", "DOCUMENTS_PREFIX": "documents/"}
    assert ingest.Settings.from_env(env) == SETTINGS


class LambdaContext:
    function_name, memory_limit_in_mb, aws_request_id = "ingest", 256, "req-1"
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:ingest"


def test_entry_uses_the_shared_client_and_the_stage_environment(monkeypatch):
    """main() reads its settings from the environment and calls StartIngestionJob through
    shared.aws_clients (explicit timeouts, standard retries), the one client factory."""
    from shared import aws_clients

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    for name, value in {"KNOWLEDGE_BASE_ID": "KB12345678", "DATA_SOURCE_ID": "DS12345678",
                        "DOCUMENTS_BUCKET": "docs-bucket", "DOCUMENTS_PREFIX": "documents/"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(aws_clients, "_clients", {})
    monkeypatch.setattr(aws_clients, "_session", None)
    shared_client = aws_clients.client("bedrock-agent", read_timeout=15.0)
    assert shared_client.meta.config.read_timeout == 15.0
    with Stubber(shared_client) as stub:
        shared_client.stub = stub
        expect_start(shared_client, "1 change(s): Object Created")
        result = ingest.main({"Records": [s3_record("m1", "documents/a.md")]}, LambdaContext())
        stub.assert_no_pending_responses()
    assert result == {"batchItemFailures": []}
