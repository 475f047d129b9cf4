"""Ingest: S3 changes under the documents prefix -> one StartIngestionJob per SQS batch.

EventBridge sends `Object Created` / `Object Deleted` events for the documents prefix to an SQS
queue; this function (reserved concurrency 1) receives them in batches. An ingestion job syncs the
whole data source incrementally, so one job covers every change in the batch, and a deploy-time
message (`source: rag.deploy`) asks for the first sync of a new stage the same way.

Only one ingestion job may run per data source. When Bedrock answers ConflictException (a job is
running and may already have listed the bucket before our change), throttling, or any other
failure, every valid message of the batch is reported as failed (`batchItemFailures`), goes back to
the queue and is retried after the visibility timeout; after the queue's maxReceiveCount it lands
in the dead-letter queue, which has an alarm. Malformed or out-of-scope messages are logged and
dropped: retrying cannot fix them, and no document is lost because any later sync covers all files.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from typing import Any, Optional

from aws_lambda_powertools import Logger

from shared import aws_clients

logger = Logger()

S3_DETAIL_TYPES = ("Object Created", "Object Deleted")
DEPLOY_SOURCE = "rag.deploy"
RETRYABLE_HINTS = {
    "ConflictException": "an ingestion job is already running; the change is retried after the visibility timeout",
    "ThrottlingException": "Bedrock throttled StartIngestionJob; retried after the visibility timeout",
    "ServiceQuotaExceededException": "ingestion job quota reached; retried after the visibility timeout",
}


@dataclass(frozen=True)
class Settings:
    knowledge_base_id: str
    data_source_id: str
    bucket: str
    prefix: str

    @classmethod
    def from_env(cls, env: dict[str, str]) -> "Settings":
        return cls(
            knowledge_base_id=env["KNOWLEDGE_BASE_ID"],
            data_source_id=env["DATA_SOURCE_ID"],
            bucket=env["DOCUMENTS_BUCKET"],
            prefix=env["DOCUMENTS_PREFIX"],
        )


@dataclass(frozen=True)
class Change:
    message_id: str
    what: str  # "Object Created", "Object Deleted" or "deploy"
    key: str


def parse_record(record: dict[str, Any], settings: Settings) -> tuple[Optional[Change], str]:
    """Returns (change, "") or (None, why it was dropped)."""
    message_id = record.get("messageId")
    if not isinstance(message_id, str) or not message_id:
        return None, "record without messageId"
    try:
        body = json.loads(record.get("body") or "")
    except (TypeError, ValueError):
        return None, "body is not JSON"
    if not isinstance(body, dict):
        return None, "body is not a JSON object"
    if body.get("source") == DEPLOY_SOURCE:
        return Change(message_id, "deploy", ""), ""
    if body.get("source") != "aws.s3" or body.get("detail-type") not in S3_DETAIL_TYPES:
        return None, f"not an S3 object event: source={body.get('source')!r} detail-type={body.get('detail-type')!r}"
    detail = body.get("detail")
    try:
        bucket, key = detail["bucket"]["name"], detail["object"]["key"]
    except (TypeError, KeyError):
        return None, "S3 event without detail.bucket.name / detail.object.key"
    if not isinstance(bucket, str) or not isinstance(key, str):
        return None, "S3 event with non-string bucket or key"
    if bucket != settings.bucket or not key.startswith(settings.prefix):
        return None, f"object s3://{bucket}/{key} is outside s3://{settings.bucket}/{settings.prefix}"
    return Change(message_id, body["detail-type"], key), ""


def start_sync(client: Any, settings: Settings, changes: list[Change]) -> str:
    """Starts one ingestion job for the batch; returns its id. Raises botocore errors unchanged."""
    kinds = sorted({c.what for c in changes})
    description = f"{len(changes)} change(s): {', '.join(kinds)}"[:200]
    response = client.start_ingestion_job(
        knowledgeBaseId=settings.knowledge_base_id,
        dataSourceId=settings.data_source_id,
        description=description,
        # A fresh token per attempt: a redelivered batch must start a new job, not replay an old answer.
        clientToken=f"ingest-{uuid.uuid4()}",
    )
    return response["ingestionJob"]["ingestionJobId"]


def process(records: list[dict[str, Any]], client: Any, settings: Settings) -> dict[str, Any]:
    """The SQS batch -> the partial-batch response (failed message ids go back to the queue)."""
    from botocore.exceptions import BotoCoreError, ClientError

    changes = []
    for record in records if isinstance(records, list) else []:
        change, reason = parse_record(record if isinstance(record, dict) else {}, settings)
        if change is None:
            logger.warning("message dropped", extra={"reason": reason, "message_id": (record or {}).get("messageId") if isinstance(record, dict) else None})
        else:
            changes.append(change)
    if not changes:
        return {"batchItemFailures": []}
    try:
        job_id = start_sync(client, settings, changes)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "Unknown")
        log = logger.info if code in RETRYABLE_HINTS else logger.error
        log("ingestion not started", extra={"error_code": code, "hint": RETRYABLE_HINTS.get(code, str(error)), "messages": len(changes)})
        return {"batchItemFailures": [{"itemIdentifier": c.message_id} for c in changes]}
    except BotoCoreError as error:  # timeouts, connection errors after the client's own retries
        logger.error("ingestion not started", extra={"error": str(error), "messages": len(changes)})
        return {"batchItemFailures": [{"itemIdentifier": c.message_id} for c in changes]}
    logger.info("ingestion started", extra={"ingestion_job_id": job_id, "changes": [f"{c.what} {c.key}".strip() for c in changes]})
    return {"batchItemFailures": []}


@logger.inject_lambda_context
def main(event: dict[str, Any], context: Any) -> dict[str, Any]:
    records = event.get("Records") if isinstance(event, dict) else None
    return process(records or [], aws_clients.client("bedrock-agent", read_timeout=15.0), Settings.from_env(dict(os.environ)))
