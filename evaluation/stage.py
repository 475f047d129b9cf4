"""A deployed stage as a target: its API URL and signer, and loading an evaluation corpus into it.

`--load-corpus` uploads the corpus to the documents bucket under `<documents prefix>eval/<collection>/`
with `<id>.metadata.json` beside each document (its own attributes plus `collection`), deletes
what is under that prefix but not in the corpus, and waits until the knowledge base has ingested
the change (the stage's ingest function starts the sync on its own; this only watches the
ingestion jobs). Each object carries the SHA-256 of its content as user metadata (an SSE-KMS
object's ETag is not its MD5), so unchanged documents are not uploaded again: a second run with
the same corpus uploads nothing and does not wait.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from .client import TargetError, sigv4_signer
from .evalset import Document

RUNNING = ("STARTING", "IN_PROGRESS", "STOPPING")


def session(profile: str | None = None):
    try:
        import boto3
        import botocore.exceptions
    except ImportError:  # pragma: no cover - the venv has boto3
        raise TargetError("boto3 is needed for --stage: run `make test` once to create .venv, then use .venv/bin/python") from None
    try:  # boto3 reads AWS_DEFAULT_REGION and the profile, not AWS_REGION: the region the other scripts honour first
        aws = boto3.Session(profile_name=profile, region_name=os.environ.get("AWS_REGION") or None)
    except botocore.exceptions.ProfileNotFound as error:
        raise TargetError(f"{error}: check --profile or AWS_PROFILE") from None
    if aws.get_credentials() is None:
        raise TargetError("no AWS credentials found: set a profile (--profile, AWS_PROFILE), environment variables or SSO, "
                          "or evaluate a local server with --url")
    if not aws.region_name:
        raise TargetError("no AWS region configured: set AWS_REGION or the profile's region")
    return aws


def stack_name(stage: str, part: str) -> str:
    return f"Rag{stage.capitalize()}-{part}"


def outputs(aws, stage: str, part: str) -> dict[str, str]:
    import botocore.exceptions

    name = stack_name(stage, part)
    try:
        stacks = aws.client("cloudformation").describe_stacks(StackName=name)["Stacks"]
    except botocore.exceptions.ClientError as error:
        message = error.response.get("Error", {}).get("Message", str(error))
        if "does not exist" in message:
            raise TargetError(f"stack {name} does not exist in {aws.region_name}: deploy the stage (make deploy STAGE={stage}) "
                              "or pick the right region/profile") from None
        raise TargetError(f"cannot read stack {name}: {message}") from None
    except botocore.exceptions.BotoCoreError as error:
        raise TargetError(f"cannot read stack {name}: {error}") from None
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def api_target_args(aws, stage: str) -> tuple[str, Callable]:
    """(ApiUrl, SigV4 signer) of the stage's query API."""
    found = outputs(aws, stage, "Serving")
    if "ApiUrl" not in found:
        raise TargetError(f"stack {stack_name(stage, 'Serving')} has no ApiUrl output: deploy the Serving stack")
    return found["ApiUrl"], sigv4_signer(aws.get_credentials(), aws.region_name)


@dataclass(frozen=True)
class CorpusLoad:
    bucket: str
    prefix: str
    uploaded: int
    deleted: int
    unchanged: int


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def objects_for(corpus: dict[str, Document], collection: str) -> dict[str, bytes]:
    """The objects to upload, by name under the collection prefix: documents and their metadata files."""
    objects: dict[str, bytes] = {}
    for doc_id, document in sorted(corpus.items()):
        objects[doc_id] = document.path.read_bytes()
        attributes = {**document.metadata, "collection": collection}
        objects[f"{doc_id}.metadata.json"] = json.dumps({"metadataAttributes": attributes}, ensure_ascii=False).encode("utf-8")
    return objects


def upload_corpus(s3, *, bucket: str, documents_prefix: str, corpus: dict[str, Document], collection: str,
                  log: Callable[[str], None] = print) -> CorpusLoad:
    prefix = f"{documents_prefix}eval/{collection}/"
    wanted = objects_for(corpus, collection)
    existing: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        existing.update(item["Key"][len(prefix):] for item in page.get("Contents", []))
    uploaded = unchanged = 0
    for name, data in wanted.items():
        digest = _sha256(data)
        if name in existing and s3.head_object(Bucket=bucket, Key=prefix + name).get("Metadata", {}).get("sha256") == digest:
            unchanged += 1
            continue
        content_type = "application/json" if name.endswith(".json") else "text/plain; charset=utf-8"
        s3.put_object(Bucket=bucket, Key=prefix + name, Body=data, ContentType=content_type, Metadata={"sha256": digest})
        uploaded += 1
    stale = sorted(set(existing) - set(wanted))
    for start in range(0, len(stale), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": prefix + name} for name in stale[start:start + 1000]], "Quiet": True})
    log(f"corpus: {uploaded} objects uploaded, {len(stale)} deleted, {unchanged} unchanged under s3://{bucket}/{prefix}")
    return CorpusLoad(bucket, prefix, uploaded, len(stale), unchanged)


def wait_for_ingestion(agent, *, knowledge_base_id: str, data_source_id: str, since: datetime, timeout_s: float = 1800,
                       poll_s: float = 15, sleep: Callable[[float], None] = time.sleep,
                       clock: Callable[[], float] = time.monotonic, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Returns the ingestion job that started after `since` and completed, once no other job runs."""
    deadline = clock() + timeout_s
    while True:
        jobs = agent.list_ingestion_jobs(knowledgeBaseId=knowledge_base_id, dataSourceId=data_source_id,
                                         sortBy={"attribute": "STARTED_AT", "order": "DESCENDING"}, maxResults=10)["ingestionJobSummaries"]
        recent = [job for job in jobs if job["startedAt"] >= since]
        running = [job for job in jobs if job["status"] in RUNNING]
        failed = [job for job in recent if job["status"] == "FAILED"]
        done = [job for job in recent if job["status"] == "COMPLETE"]
        if failed and not running:
            raise TargetError(f"ingestion job {failed[0]['ingestionJobId']} failed: see `aws bedrock-agent get-ingestion-job "
                              f"--knowledge-base-id {knowledge_base_id} --data-source-id {data_source_id} "
                              f"--ingestion-job-id {failed[0]['ingestionJobId']}`")
        if done and not running:
            stats = done[0].get("statistics") or {}
            log(f"ingestion complete: job {done[0]['ingestionJobId']} ({stats.get('numberOfNewDocumentsIndexed', 0)} new, "
                f"{stats.get('numberOfModifiedDocumentsIndexed', 0)} modified, {stats.get('numberOfDocumentsDeleted', 0)} deleted)")
            return done[0]
        if clock() >= deadline:
            raise TargetError(f"no ingestion job completed within {timeout_s:.0f} s of the upload: check the ingest function's "
                              "logs and the dead-letter queue (README: Documents and ingestion), then run again")
        sleep(poll_s)


def load_corpus(aws, stage: str, corpus: dict[str, Document], collection: str, *, timeout_s: float = 1800,
                log: Callable[[str], None] = print) -> CorpusLoad:
    storage = outputs(aws, stage, "Storage")
    knowledge_base = outputs(aws, stage, "KnowledgeBase")
    missing = [k for k in ("DocumentsBucketName", "DocumentsPrefix") if k not in storage]
    missing += [k for k in ("KnowledgeBaseId", "DataSourceId") if k not in knowledge_base]
    if missing:
        raise TargetError(f"stage {stage} lacks the outputs {', '.join(missing)}: deploy its Storage and KnowledgeBase stacks")
    started = datetime.now(timezone.utc)
    result = upload_corpus(aws.client("s3"), bucket=storage["DocumentsBucketName"], documents_prefix=storage["DocumentsPrefix"],
                           corpus=corpus, collection=collection, log=log)
    if result.uploaded or result.deleted:
        log("waiting for the knowledge base to ingest the change (the ingest function batches uploads for about a minute)")
        wait_for_ingestion(aws.client("bedrock-agent"), knowledge_base_id=knowledge_base["KnowledgeBaseId"],
                           data_source_id=knowledge_base["DataSourceId"], since=started, timeout_s=timeout_s, log=log)
    return result
