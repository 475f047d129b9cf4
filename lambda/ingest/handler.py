"""Ingest: S3 changes under the documents prefix -> one StartIngestionJob per SQS batch, every job checked.

EventBridge sends `Object Created` / `Object Deleted` events for the documents prefix to an SQS
queue; this function receives them in batches (the event source mapping runs at most two at a
time). An ingestion job syncs the whole data source incrementally, so one job covers every change
in the batch; a deploy-time message (`source: rag.deploy`) asks for the first sync the same way.

The queue carries two messages of this function's own (`source: rag.ingest`), each sent with a
delay of RETRY_AFTER_S seconds:

- `Sync wanted`: only one ingestion job may run per data source. When Bedrock answers
  ConflictException (a job is running and may have listed the bucket before our change),
  throttling or a quota, the batch's changes are acknowledged and one `Sync wanted` message takes
  their place. A new message starts with no receives, so a long-running job never pushes healthy
  changes to the dead-letter queue; after MAX_WAIT_S of deferrals the message is reported as
  failed and the queue's redrive policy takes over.
- `Check ingestion job`: Bedrock publishes no event when an ingestion job ends, so every job this
  function starts is followed by a check (GetIngestionJob). A running job is checked again later;
  a FAILED one is started again up to MAX_JOB_RETRIES times, then counted as failed (metric
  `IngestionJobsFailed`, which has an alarm); a COMPLETE one reports its document statistics.

Idempotency: StartIngestionJob's client token is derived from the batch's message ids (a batch
redelivered as it was returns the job it already started instead of starting a second one) or,
for a retry, from the failed job's id and the attempt number.

Every other failure (access denied, a missing knowledge base, timeouts after the client's own
retries) reports the affected messages in `batchItemFailures`: they come back after the queue's
visibility timeout and reach the dead-letter queue (which has an alarm) after maxReceiveCount.
Malformed or out-of-scope messages (not JSON, nested too deep, wrong types, another bucket) are
logged and dropped one by one, never failing the rest of their batch: retrying cannot fix them,
and no document is lost because any later sync covers every file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Optional

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from shared import aws_clients

logger = Logger()
_metrics: Optional[Metrics] = None  # made on first use: the namespace comes from the environment

S3_DETAIL_TYPES = ("Object Created", "Object Deleted")
DEPLOY_SOURCE = "rag.deploy"
OWN_SOURCE = "rag.ingest"
SYNC_WANTED = "Sync wanted"
CHECK_JOB = "Check ingestion job"
DEFERRABLE = {
    "ConflictException": "an ingestion job is already running",
    "ThrottlingException": "Bedrock throttled the call",
    "ServiceQuotaExceededException": "the ingestion job quota is reached",
}
RUNNING = ("STARTING", "IN_PROGRESS", "STOPPING")
JOB_ID = re.compile(r"^[0-9a-zA-Z]{10}$")
MAX_COUNTER = 100_000  # deferrals, checks and attempts carried in messages are small integers

# Metric names (namespace RagIngestion; dimensions service=ingest, stage=<stage>). The stack's
# alarms and dashboard use the same names (tests/test_ingest_handler.py checks they agree).
JOBS_STARTED = "IngestionJobsStarted"
JOBS_COMPLETED = "IngestionJobsCompleted"
JOBS_FAILED = "IngestionJobsFailed"
JOBS_STOPPED = "IngestionJobsStopped"
JOB_RETRIES = "IngestionJobRetries"
SYNCS_DEFERRED = "IngestionSyncsDeferred"
MESSAGES_DROPPED = "IngestionMessagesDropped"
DOCUMENTS_INDEXED = "IngestionDocumentsIndexed"
DOCUMENTS_DELETED = "IngestionDocumentsDeleted"
DOCUMENTS_FAILED = "IngestionDocumentsFailed"


@dataclass(frozen=True)
class Settings:
    knowledge_base_id: str
    data_source_id: str
    bucket: str
    prefix: str
    queue_url: str
    retry_after_s: int = 300
    max_job_retries: int = 2
    max_wait_s: int = 86400

    @property
    def max_waits(self) -> int:
        """How many delayed messages (deferrals, or checks of one job) before giving up."""
        return max(1, self.max_wait_s // self.retry_after_s)

    @classmethod
    def from_env(cls, env: dict[str, str]) -> "Settings":
        return cls(
            knowledge_base_id=env["KNOWLEDGE_BASE_ID"],
            data_source_id=env["DATA_SOURCE_ID"],
            bucket=env["DOCUMENTS_BUCKET"],
            prefix=env["DOCUMENTS_PREFIX"],
            queue_url=env["INGESTION_QUEUE_URL"],
            retry_after_s=int(env["RETRY_AFTER_S"]),
            max_job_retries=int(env["MAX_JOB_RETRIES"]),
            max_wait_s=int(env["MAX_WAIT_S"]),
        )


@dataclass(frozen=True)
class Change:
    """A reason to sync: an S3 change, the deploy's first sync, or a deferred sync."""

    message_id: str
    what: str  # "Object Created", "Object Deleted", "deploy" or "deferred"
    key: str = ""
    deferrals: int = 0  # how often this sync was already put off


@dataclass(frozen=True)
class Check:
    """Look at ingestion job `job_id` (started on attempt `attempt`, `checks` looks so far)."""

    message_id: str
    job_id: str
    attempt: int
    checks: int


# --- parsing: one record at a time, never raising --------------------------------------------


def parse_record(record: Any, settings: Settings) -> tuple[Change | Check | None, str]:
    """Returns (message, "") or (None, why it was dropped). Never raises."""
    try:
        return _parse(record, settings)
    except Exception as error:  # a record must not fail its batch, whatever is in it
        return None, f"unreadable record ({type(error).__name__})"


def _parse(record: Any, settings: Settings) -> tuple[Change | Check | None, str]:
    if not isinstance(record, dict):
        return None, "record is not an object"
    message_id = record.get("messageId")
    if not isinstance(message_id, str) or not message_id:
        return None, "record without messageId"
    try:
        body = json.loads(record.get("body"))  # None or a non-string: TypeError
    except (TypeError, ValueError, RecursionError):
        return None, "body is not JSON (or nested too deep)"
    if not isinstance(body, dict):
        return None, "body is not a JSON object"
    source, detail_type, detail = body.get("source"), body.get("detail-type"), body.get("detail")
    if source == DEPLOY_SOURCE:
        return Change(message_id, "deploy"), ""
    if source == OWN_SOURCE:
        return _own_message(message_id, detail_type, detail)
    if source != "aws.s3" or detail_type not in S3_DETAIL_TYPES:
        return None, f"not an S3 object event: source={_short(source)} detail-type={_short(detail_type)}"
    try:
        bucket, key = detail["bucket"]["name"], detail["object"]["key"]
    except (TypeError, KeyError):
        return None, "S3 event without detail.bucket.name / detail.object.key"
    if not isinstance(bucket, str) or not isinstance(key, str):
        return None, "S3 event with non-string bucket or key"
    if bucket != settings.bucket or not key.startswith(settings.prefix):
        return None, f"object s3://{_short(bucket)}/{_short(key)} is outside s3://{settings.bucket}/{settings.prefix}"
    return Change(message_id, detail_type, key), ""


def _own_message(message_id: str, detail_type: Any, detail: Any) -> tuple[Change | Check | None, str]:
    if not isinstance(detail, dict):
        return None, f"{OWN_SOURCE} message without a detail object"
    if detail_type == SYNC_WANTED:
        deferrals = _counter(detail.get("deferrals"))
        return (Change(message_id, "deferred", deferrals=deferrals), "") if deferrals is not None else (None, "bad deferrals")
    if detail_type == CHECK_JOB:
        job_id, attempt, checks = detail.get("ingestionJobId"), _counter(detail.get("attempt")), _counter(detail.get("checks"))
        if not isinstance(job_id, str) or not JOB_ID.match(job_id) or attempt is None or checks is None:
            return None, "check message without a valid ingestionJobId, attempt and checks"
        return Check(message_id, job_id, attempt, checks), ""
    return None, f"unknown {OWN_SOURCE} message {_short(detail_type)}"


def _counter(value: Any) -> Optional[int]:
    valid = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNTER
    return value if valid else None


def _short(value: Any, limit: int = 120) -> str:
    return repr(value)[:limit]


# --- talking to Bedrock and SQS ----------------------------------------------------------------


def client_token(*parts: str) -> str:
    """A StartIngestionJob client token (33-256 letters, digits and dashes) from `parts`."""
    return "ingest-" + hashlib.sha256("\n".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class Answer:
    """What an AWS call gave: its result, or the error code (`Transport` when no service answered)."""

    result: Any = None
    code: Optional[str] = None
    detail: str = ""


def call(operation: Callable[..., Any], **parameters: Any) -> Answer:
    """Runs one botocore call; failures become values (the callers decide what each one means)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return Answer(result=operation(**parameters))
    except ClientError as error:
        return Answer(code=str(error.response.get("Error", {}).get("Code", "Unknown")), detail=str(error)[:500])
    except BotoCoreError as error:  # timeouts, connection errors after the client's own retries
        return Answer(code="Transport", detail=str(error)[:500])


def start_job(bedrock: Any, settings: Settings, *, description: str, token: str) -> Answer:
    """Starts an ingestion job; the answer's result is the job id."""
    answer = call(bedrock.start_ingestion_job, knowledgeBaseId=settings.knowledge_base_id, dataSourceId=settings.data_source_id,
                  description=description, clientToken=token)  # descriptions here stay far below the API's 200
    return Answer(result=answer.result["ingestionJob"]["ingestionJobId"]) if answer.code is None else answer


def send_later(sqs: Any, settings: Settings, detail_type: str, detail: dict[str, Any]) -> Answer:
    """Puts one of this function's own messages on the queue, visible after RETRY_AFTER_S."""
    body = json.dumps({"source": OWN_SOURCE, "detail-type": detail_type, "detail": detail})
    return call(sqs.send_message, QueueUrl=settings.queue_url, MessageBody=body, DelaySeconds=min(settings.retry_after_s, 900))


# --- the batch ---------------------------------------------------------------------------------


def process(records: Any, *, bedrock: Any, sqs: Any, settings: Settings, tally: Counter) -> dict[str, Any]:
    """The SQS batch -> the partial-batch response (failed message ids come back later).

    `tally` counts what happened (metric name -> value, added to); the entry point publishes it.
    """
    changes: list[Change] = []
    checks: dict[str, Check] = {}
    for record in records if isinstance(records, list) else []:
        message, reason = parse_record(record, settings)
        if isinstance(message, Change):
            changes.append(message)
        elif isinstance(message, Check):
            checks.setdefault(message.job_id, message)  # a duplicate check of the same job adds nothing
        else:
            tally[MESSAGES_DROPPED] += 1
            message_id = record.get("messageId") if isinstance(record, dict) else None
            logger.warning("message dropped", extra={"reason": reason, "message_id": message_id if isinstance(message_id, str) else None})
    failed = sync(changes, bedrock=bedrock, sqs=sqs, settings=settings, tally=tally) if changes else []
    for check in checks.values():
        failed += check_job(check, bedrock=bedrock, sqs=sqs, settings=settings, tally=tally)
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in dict.fromkeys(failed)]}


def sync(changes: list[Change], *, bedrock: Any, sqs: Any, settings: Settings, tally: Counter) -> list[str]:
    """One ingestion job for all `changes`; returns the message ids to retry."""
    ids = sorted({c.message_id for c in changes})
    kinds = sorted({c.what for c in changes})
    started = start_job(bedrock, settings, description=f"{len(ids)} change(s): {', '.join(kinds)}", token=client_token("sync", *ids))
    if started.code in DEFERRABLE:
        return defer(changes, reason=DEFERRABLE[started.code], sqs=sqs, settings=settings, tally=tally)
    if started.code is not None:
        logger.error("ingestion not started", extra={"error_code": started.code, "error": started.detail, "messages": len(ids)})
        return ids
    tally[JOBS_STARTED] += 1
    logger.info("ingestion started", extra={"ingestion_job_id": started.result, "changes": [f"{c.what} {c.key}".strip() for c in changes][:50]})
    return follow(started.result, attempt=0, sqs=sqs, settings=settings, retry=ids)


def defer(changes: list[Change], *, reason: str, sqs: Any, settings: Settings, tally: Counter) -> list[str]:
    """Replaces `changes` with one delayed `Sync wanted` message; returns the message ids to retry."""
    ids = sorted({c.message_id for c in changes})
    deferrals = max(c.deferrals for c in changes) + 1
    if deferrals > settings.max_waits:
        logger.error("sync deferred too long", extra={"reason": reason, "deferrals": deferrals - 1, "max_wait_s": settings.max_wait_s})
        return ids  # the redrive policy decides: dead-letter queue and its alarm
    sent = send_later(sqs, settings, SYNC_WANTED, {"deferrals": deferrals, "changes": len(ids)})
    if sent.code is not None:
        logger.error("sync not deferred", extra={"reason": reason, "error_code": sent.code, "error": sent.detail})
        return ids
    tally[SYNCS_DEFERRED] += 1
    logger.info("sync deferred", extra={"reason": reason, "deferrals": deferrals, "retry_after_s": settings.retry_after_s, "changes": len(ids)})
    return []


def follow(job_id: str, *, attempt: int, sqs: Any, settings: Settings, retry: list[str], checks: int = 0) -> list[str]:
    """Schedules the next check of `job_id`; if that fails, `retry` comes back to try again."""
    sent = send_later(sqs, settings, CHECK_JOB, {"ingestionJobId": job_id, "attempt": attempt, "checks": checks})
    if sent.code is not None:
        logger.error("job check not scheduled", extra={"ingestion_job_id": job_id, "error_code": sent.code, "error": sent.detail})
        return retry
    return []


def check_job(check: Check, *, bedrock: Any, sqs: Any, settings: Settings, tally: Counter) -> list[str]:
    """Looks at one job and acts on its status; returns the message ids to retry."""
    read = call(bedrock.get_ingestion_job, knowledgeBaseId=settings.knowledge_base_id, dataSourceId=settings.data_source_id,
                ingestionJobId=check.job_id)
    if read.code in ("ResourceNotFoundException", "ValidationException"):
        # The job (or its knowledge base, after a replacement) is gone: nothing left to check.
        logger.warning("ingestion job not found", extra={"ingestion_job_id": check.job_id, "error_code": read.code})
        return []
    if read.code is not None:
        logger.warning("ingestion job not read", extra={"ingestion_job_id": check.job_id, "error_code": read.code, "error": read.detail})
        return [check.message_id]

    job = read.result["ingestionJob"]
    status = job.get("status")
    facts = {"ingestion_job_id": check.job_id, "status": status, "attempt": check.attempt}
    if status in RUNNING:
        if check.checks + 1 >= settings.max_waits:
            tally[JOBS_FAILED] += 1
            logger.error("ingestion job still running: no longer checked", extra={**facts, "max_wait_s": settings.max_wait_s})
            return []
        return follow(check.job_id, attempt=check.attempt, sqs=sqs, settings=settings, retry=[check.message_id], checks=check.checks + 1)
    if status == "COMPLETE":
        _count_documents(job.get("statistics") or {}, tally)
        tally[JOBS_COMPLETED] += 1
        logger.info("ingestion job complete", extra={**facts, "statistics": job.get("statistics")})
        return []
    if status == "STOPPED":
        tally[JOBS_STOPPED] += 1
        logger.warning("ingestion job stopped by someone: not retried", extra=facts)
        return []
    if status != "FAILED":
        logger.warning("ingestion job in an unknown state", extra=facts)
        return []
    reasons = [str(reason)[:500] for reason in (job.get("failureReasons") or [])][:5]
    if check.attempt >= settings.max_job_retries:
        tally[JOBS_FAILED] += 1
        logger.error("ingestion job failed: retries exhausted", extra={**facts, "failure_reasons": reasons})
        return []
    return retry_job(check, reasons=reasons, bedrock=bedrock, sqs=sqs, settings=settings, tally=tally)


def retry_job(check: Check, *, reasons: list[str], bedrock: Any, sqs: Any, settings: Settings, tally: Counter) -> list[str]:
    """Starts a failed job's sync again (one token per failed job and attempt)."""
    attempt = check.attempt + 1
    started = start_job(bedrock, settings, description=f"retry {attempt} of ingestion job {check.job_id}",
                        token=client_token("retry", check.job_id, str(attempt)))
    if started.code == "ConflictException":
        # Jobs of a data source run one at a time: the one running now started after ours
        # failed, so it syncs every change ours was meant to.
        logger.info("ingestion job failed; a newer job covers it", extra={"ingestion_job_id": check.job_id, "failure_reasons": reasons})
        return []
    if started.code is not None:
        logger.warning("ingestion retry not started", extra={"ingestion_job_id": check.job_id, "error_code": started.code, "error": started.detail})
        return [check.message_id]
    tally[JOB_RETRIES] += 1
    logger.warning("ingestion job failed: started again", extra={
        "ingestion_job_id": check.job_id, "new_ingestion_job_id": started.result, "attempt": attempt, "failure_reasons": reasons})
    return follow(started.result, attempt=attempt, sqs=sqs, settings=settings, retry=[check.message_id])


def _count_documents(statistics: dict[str, Any], tally: Counter) -> None:
    def number(name: str) -> int:
        value = statistics.get(name)
        return max(value, 0) if isinstance(value, int) and not isinstance(value, bool) else 0

    tally[DOCUMENTS_INDEXED] += number("numberOfNewDocumentsIndexed") + number("numberOfModifiedDocumentsIndexed")
    tally[DOCUMENTS_DELETED] += number("numberOfDocumentsDeleted")
    tally[DOCUMENTS_FAILED] += number("numberOfDocumentsFailed")


# --- entry ---------------------------------------------------------------------------------------


def metrics() -> Metrics:
    global _metrics
    if _metrics is None:
        _metrics = Metrics()
    return _metrics


def publish(tally: Counter) -> None:
    """Writes the invocation's counts as one EMF record (namespace RagIngestion, service and stage)."""
    if not tally:
        return
    emitter = metrics()
    # Powertools shares default dimensions between every Metrics object of the process: a
    # per-record dimension keeps this function's `stage` off other handlers' metrics.
    emitter.add_dimension(name="stage", value=os.environ.get("STAGE", "unknown"))
    for name, value in sorted(tally.items()):
        emitter.add_metric(name=name, unit=MetricUnit.Count, value=value)
    emitter.flush_metrics()


@logger.inject_lambda_context
def main(event: dict[str, Any], context: Any) -> dict[str, Any]:
    settings = Settings.from_env(dict(os.environ))
    records = event.get("Records") if isinstance(event, dict) else None
    tally: Counter = Counter()
    try:
        return process(
            records or [],
            bedrock=aws_clients.client("bedrock-agent", read_timeout=15.0),
            sqs=aws_clients.client("sqs", read_timeout=5.0),
            settings=settings,
            tally=tally,
        )
    finally:
        publish(tally)
