"""Custom resource: the k-NN vector index, its FGAC roles and the hybrid search pipeline.

Runs as the domain's fine-grained-access-control master role (CDK `custom_resources.Provider`
calls `main`), signs every call with SigV4 and needs no password. What it manages on the domain:

- the vector index Bedrock writes (faiss/hnsw/l2 `knn_vector`, text field, non-indexed metadata
  field, filterable fields as `keyword`);
- an FGAC role with the knowledge base's permissions, mapped to the knowledge base's IAM role;
- a read-only FGAC role (search/msearch/get on the index), mapped to the serving Lambda's role;
- a search pipeline with a `normalization-processor` for hybrid (BM25 + k-NN) queries.

Create and Update converge to the same state and are idempotent: an existing index with a
compatible mapping is success, missing filterable fields are added, an incompatible mapping fails
with a message saying what to do. A new index name gives a new physical id, so CloudFormation
deletes the old resource afterwards. Delete keeps the index when `RetainIndex` is true, always
removes this index's FGAC roles, keeps the (shared, stateless) pipeline, and never fails the stack
because the domain is gone or unreachable.

403 (IAM and FGAC propagate for a few minutes after the domain and roles are created), 429, 5xx
and timeouts are retried with bounded exponential backoff until a deadline inside the Lambda timeout.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import quote, urlparse

from aws_lambda_powertools import Logger

from shared import aws_clients
from shared.opensearch_http import OpenSearchResponse, OpenSearchTimeout, signed_request

logger = Logger()

RETRYABLE_STATUSES = frozenset({403, 429, 500, 502, 503, 504})

# Permissions the knowledge base needs on a domain with FGAC (Bedrock user guide, OpenSearch
# managed clusters: "Configuring OpenSearch permissions with fine-grained access control").
KB_CLUSTER_PERMISSIONS = ("indices:data/read/msearch", "indices:data/write/bulk*", "indices:data/read/mget*")
KB_INDEX_PERMISSIONS = (
    "indices:admin/get",
    "indices:data/read/msearch",
    "indices:data/read/search",
    "indices:data/write/index",
    "indices:data/write/update",
    "indices:data/write/delete",
    "indices:data/write/delete/byquery",
    "indices:data/write/bulk*",
    "indices:admin/mapping/put",
    "indices:data/read/mget*",
)
READER_CLUSTER_PERMISSIONS = ("indices:data/read/msearch",)
READER_INDEX_PERMISSIONS = ("indices:data/read/search", "indices:data/read/msearch", "indices:data/read/get")

HNSW_PARAMETERS = {"m": 16, "ef_construction": 512}
# The domain publishes slow logs to CloudWatch, but an index logs nothing until it has thresholds.
SLOW_LOG_THRESHOLDS = {
    "search.slowlog.threshold.query.warn": "2s",
    "search.slowlog.threshold.query.info": "500ms",
    "indexing.slowlog.threshold.index.warn": "10s",
    "indexing.slowlog.threshold.index.info": "2s",
}


class ResourceError(Exception):
    """The resource cannot reach the requested state; the message tells the operator why and what to do."""


class DomainUnavailable(ResourceError):
    """The domain kept answering with a retryable status (or not at all) until the deadline."""


@dataclass(frozen=True)
class Backoff:
    """Retry policy for calls to the domain. Tests inject tiny delays and a fake clock/sleep."""

    base_delay_s: float = 2.0
    max_delay_s: float = 30.0
    max_attempts: int = 40
    request_timeout_s: float = 15.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def delay(self, attempt: int) -> float:
        """Full-jitter exponential backoff: uniform in [base/2, min(max, base * 2**attempt)]."""
        ceiling = min(self.max_delay_s, self.base_delay_s * (2**attempt))
        return random.uniform(min(self.base_delay_s / 2, ceiling), ceiling)


@dataclass(frozen=True)
class IndexSpec:
    """The resource's properties, parsed. CloudFormation passes every scalar as a string."""

    endpoint: str
    region: str
    index_name: str
    vector_field: str
    text_field: str
    metadata_field: str
    dimensions: int
    filterable_fields: tuple[str, ...]
    number_of_replicas: int
    pipeline_name: str
    hybrid_weights: tuple[float, float]
    kb_role_arn: str
    query_role_arn: str
    retain_index: bool
    audit_logging: bool = False

    @property
    def host(self) -> str:
        return urlparse(self.endpoint).netloc

    @property
    def physical_id(self) -> str:
        """Changes exactly when the index (name or domain) changes: CloudFormation then deletes the old one."""
        return f"{self.index_name}@{self.host}"

    @property
    def kb_security_role(self) -> str:
        return f"bedrock-kb-{self.index_name}"

    @property
    def reader_security_role(self) -> str:
        return f"reader-{self.index_name}"

    @classmethod
    def from_properties(cls, props: dict[str, Any], region: str) -> "IndexSpec":
        def required(name: str) -> str:
            value = props.get(name)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise ResourceError(f"property {name} is required")
            return str(value)

        def as_bool(name: str) -> bool:
            value = str(props.get(name, "false")).lower()
            if value not in ("true", "false"):
                raise ResourceError(f"property {name} must be true or false, got {props.get(name)!r}")
            return value == "true"

        def as_int(name: str) -> int:
            try:
                return int(required(name))
            except ValueError:
                raise ResourceError(f"property {name} must be an integer, got {props.get(name)!r}") from None

        endpoint = required("Endpoint")
        if not endpoint.startswith(("https://", "http://")):
            endpoint = f"https://{endpoint}"
        weights = props.get("HybridWeights") or ["0.3", "0.7"]
        try:
            lexical, vector = (float(w) for w in weights)
        except (TypeError, ValueError):
            raise ResourceError(f"property HybridWeights must be two numbers [lexical, vector], got {weights!r}") from None
        return cls(
            endpoint=endpoint.rstrip("/"),
            region=region,
            index_name=required("IndexName"),
            vector_field=required("VectorField"),
            text_field=required("TextField"),
            metadata_field=required("MetadataField"),
            dimensions=as_int("Dimensions"),
            filterable_fields=tuple(str(f) for f in props.get("FilterableFields") or ()),
            number_of_replicas=as_int("NumberOfReplicas") if "NumberOfReplicas" in props else 0,
            pipeline_name=required("PipelineName"),
            hybrid_weights=(lexical, vector),
            kb_role_arn=required("KnowledgeBaseRoleArn"),
            query_role_arn=required("QueryRoleArn"),
            retain_index=as_bool("RetainIndex"),
            audit_logging=as_bool("AuditLogging"),
        )


# --- request bodies (pure functions: tests compare them with what the fake domain received) ---


def index_body(spec: IndexSpec) -> dict[str, Any]:
    properties: dict[str, Any] = {
        spec.vector_field: {
            "type": "knn_vector",
            "dimension": spec.dimensions,
            "method": {"name": "hnsw", "engine": "faiss", "space_type": "l2", "parameters": dict(HNSW_PARAMETERS)},
        },
        spec.text_field: {"type": "text", "index": True},
        spec.metadata_field: {"type": "text", "index": False},
    }
    properties.update({name: {"type": "keyword"} for name in spec.filterable_fields})
    return {
        "settings": {"index": {"knn": True, "number_of_replicas": spec.number_of_replicas, **SLOW_LOG_THRESHOLDS}},
        "mappings": {"properties": properties},
    }


def kb_role_body(spec: IndexSpec) -> dict[str, Any]:
    return {
        "cluster_permissions": list(KB_CLUSTER_PERMISSIONS),
        "index_permissions": [{"index_patterns": [spec.index_name], "allowed_actions": list(KB_INDEX_PERMISSIONS)}],
    }


def reader_role_body(spec: IndexSpec) -> dict[str, Any]:
    return {
        "cluster_permissions": list(READER_CLUSTER_PERMISSIONS),
        "index_permissions": [{"index_patterns": [spec.index_name], "allowed_actions": list(READER_INDEX_PERMISSIONS)}],
    }


def pipeline_body(spec: IndexSpec) -> dict[str, Any]:
    """Hybrid queries list the BM25 sub-query first and the k-NN sub-query second (weights in that order)."""
    return {
        "description": f"Hybrid BM25 + k-NN scoring for {spec.index_name}: min-max normalization, weighted mean [lexical, vector]",
        "phase_results_processors": [
            {
                "normalization-processor": {
                    "normalization": {"technique": "min_max"},
                    "combination": {"technique": "arithmetic_mean", "parameters": {"weights": list(spec.hybrid_weights)}},
                }
            }
        ],
    }


# --- mapping comparison ---


def mapping_problems(existing_index: dict[str, Any], spec: IndexSpec) -> tuple[list[str], list[str]]:
    """Returns (incompatibilities, filterable fields to add) for an index's GET response entry."""
    problems: list[str] = []
    settings = existing_index.get("settings", {}).get("index", {})
    if str(settings.get("knn", "false")).lower() != "true":
        problems.append("setting index.knn is not true")
    properties = existing_index.get("mappings", {}).get("properties", {})

    vector = properties.get(spec.vector_field)
    if vector is None:
        problems.append(f"vector field '{spec.vector_field}' is missing")
    else:
        method = vector.get("method", {})
        space = method.get("space_type", vector.get("space_type", "l2"))
        expected = {"type": "knn_vector", "dimension": str(spec.dimensions), "engine": "faiss", "method": "hnsw", "space_type": "l2"}
        actual = {
            "type": vector.get("type"),
            "dimension": str(vector.get("dimension")),
            "engine": method.get("engine"),
            "method": method.get("name"),
            "space_type": space,
        }
        for key, value in expected.items():
            if actual[key] != value:
                problems.append(f"vector field '{spec.vector_field}' has {key}={actual[key]!r}, wanted {value!r}")

    text = properties.get(spec.text_field)
    if text is None or text.get("type") != "text" or text.get("index") is False:
        problems.append(f"text field '{spec.text_field}' is {text!r}, wanted an indexed 'text' field")
    metadata = properties.get(spec.metadata_field)
    if metadata is None or metadata.get("type") != "text":
        problems.append(f"metadata field '{spec.metadata_field}' is {metadata!r}, wanted type 'text'")

    to_add = []
    for name in spec.filterable_fields:
        current = properties.get(name)
        if current is None:
            to_add.append(name)
        elif current.get("type") != "keyword":
            problems.append(f"filterable field '{name}' has type {current.get('type')!r}, wanted 'keyword'")
    return problems, to_add


# --- talking to the domain ---


@dataclass
class Domain:
    """Signed calls to one domain with retries. `deadline` is a `clock()` value after which we give up."""

    spec: IndexSpec
    credentials: Any
    backoff: Backoff
    deadline: float
    calls: list[str] = field(default_factory=list)

    def call(self, method: str, path: str, body: Any = None, *, ok_statuses: tuple[int, ...] = ()) -> OpenSearchResponse:
        """Sends until a non-retryable answer (returned, whatever its status) or the deadline (raises)."""
        attempt = 0
        last = "no answer"
        while True:
            self.calls.append(f"{method} {path}")
            try:
                response = signed_request(
                    endpoint=self.spec.endpoint,
                    method=method,
                    path=path,
                    region=self.spec.region,
                    credentials=self.credentials,
                    body=body,
                    timeout_s=self.backoff.request_timeout_s,
                )
                if response.status in ok_statuses or response.status not in RETRYABLE_STATUSES:
                    return response
                last = f"HTTP {response.status}: {_short(response.body)}"
            except OpenSearchTimeout as error:
                last = str(error)
            attempt += 1
            pause = self.backoff.delay(attempt - 1)
            if attempt >= self.backoff.max_attempts or self.backoff.clock() + pause > self.deadline:
                hint = (
                    " A lasting 403 means the domain does not authorize this function's role: it must be the"
                    " fine-grained access control master user and be named in the domain access policy."
                    if last.startswith("HTTP 403")
                    else ""
                )
                raise DomainUnavailable(f"{method} {path} failed after {attempt} attempts; last: {last}.{hint}")
            logger.info("retrying", extra={"request": f"{method} {path}", "attempt": attempt, "last": last, "pause_s": round(pause, 3)})
            self.backoff.sleep(pause)


def _short(body: Any, limit: int = 300) -> str:
    text = body if isinstance(body, str) else repr(body)
    return text[:limit]


def _error_type(response: OpenSearchResponse) -> str:
    if isinstance(response.body, dict) and isinstance(response.body.get("error"), dict):
        return str(response.body["error"].get("type", ""))
    return ""


def _index_path(spec: IndexSpec) -> str:
    return "/" + quote(spec.index_name, safe="")


def ensure_index(domain: Domain, spec: IndexSpec) -> str:
    """Creates the index or checks the existing one. Returns 'created', 'existing' or 'extended'."""
    path = _index_path(spec)
    current = domain.call("GET", path)
    if current.status == 404:
        created = domain.call("PUT", path, index_body(spec))
        if created.ok:
            logger.info("index created", extra={"index": spec.index_name})
            return "created"
        if _error_type(created) != "resource_already_exists_exception":
            raise ResourceError(f"creating index {spec.index_name} failed: HTTP {created.status}: {_short(created.body)}")
        current = domain.call("GET", path)  # created concurrently: check it like any existing index
    if not current.ok or not isinstance(current.body, dict) or not current.body:
        raise ResourceError(f"reading index {spec.index_name} failed: HTTP {current.status}: {_short(current.body)}")
    existing = next(iter(current.body.values()))  # keyed by the concrete index name (also when an alias)
    problems, to_add = mapping_problems(existing, spec)
    if problems:
        raise ResourceError(
            f"index {spec.index_name} exists with a mapping this stack cannot change in place: {'; '.join(problems)}. "
            "k-NN mappings are immutable: set search.index_name to a new name (e.g. "
            f"{spec.index_name}-v2) and deploy to create a new index (the knowledge base is replaced; its "
            "documents are synced again), or delete the index yourself if its data is disposable."
        )
    if not to_add:
        return "existing"
    added = domain.call(
        "PUT", f"{path}/_mapping", {"properties": {name: {"type": "keyword"} for name in to_add}}
    )
    if not added.ok:
        raise ResourceError(f"adding filterable fields {to_add} to {spec.index_name} failed: HTTP {added.status}: {_short(added.body)}")
    logger.info("filterable fields added", extra={"index": spec.index_name, "fields": to_add})
    return "extended"


def ensure_access(domain: Domain, spec: IndexSpec) -> None:
    """FGAC roles and their mappings to IAM roles (PUT creates or replaces: idempotent)."""
    grants = (
        (spec.kb_security_role, kb_role_body(spec), spec.kb_role_arn),
        (spec.reader_security_role, reader_role_body(spec), spec.query_role_arn),
    )
    for role, body, iam_role_arn in grants:
        for kind, payload in (("roles", body), ("rolesmapping", {"backend_roles": [iam_role_arn]})):
            response = domain.call("PUT", f"/_plugins/_security/api/{kind}/{quote(role, safe='')}", payload)
            if not response.ok:
                raise ResourceError(f"PUT {kind}/{role} failed: HTTP {response.status}: {_short(response.body)}")


def ensure_pipeline(domain: Domain, spec: IndexSpec) -> None:
    response = domain.call("PUT", f"/_search/pipeline/{quote(spec.pipeline_name, safe='')}", pipeline_body(spec))
    if not response.ok:
        raise ResourceError(f"PUT search pipeline {spec.pipeline_name} failed: HTTP {response.status}: {_short(response.body)}")


# Publishing audit logs to CloudWatch is half of it: the security plugin must also log. Skip the
# noisiest categories (every authenticated / authorized request), keep failures and changes.
AUDIT_PATCH = [
    {"op": "add", "path": "/config/enabled", "value": True},
    {"op": "add", "path": "/config/audit/disabled_rest_categories", "value": ["AUTHENTICATED", "GRANTED_PRIVILEGES"]},
    {"op": "add", "path": "/config/audit/disabled_transport_categories", "value": ["AUTHENTICATED", "GRANTED_PRIVILEGES"]},
]


def ensure_audit_logging(domain: Domain) -> bool:
    """Turns on audit logging in the security plugin; a failure is logged, not fatal (search works without it)."""
    response = domain.call("PATCH", "/_plugins/_security/api/audit", AUDIT_PATCH)
    if not response.ok:
        logger.warning("audit logging not enabled", extra={"status": response.status, "body": _short(response.body)})
    return response.ok


def converge(domain: Domain, spec: IndexSpec) -> dict[str, Any]:
    """Create and Update: bring the domain to the spec. Access before the index, so the KB can use it at once."""
    ensure_access(domain, spec)
    outcome = ensure_index(domain, spec)
    ensure_pipeline(domain, spec)
    if spec.audit_logging:
        ensure_audit_logging(domain)
    return {
        "PhysicalResourceId": spec.physical_id,
        "Data": {"IndexName": spec.index_name, "PipelineName": spec.pipeline_name, "Index": outcome},
    }


def remove(domain: Domain, spec: IndexSpec, physical_id: str) -> dict[str, Any]:
    """Delete: best effort, never raises (a failing Delete blocks stack deletion and rollbacks)."""
    result = {"PhysicalResourceId": physical_id}
    if physical_id != spec.physical_id:
        # CloudFormation deletes a resource whose Create failed under a framework-made id: we made nothing.
        logger.info("nothing to delete", extra={"physical_id": physical_id})
        return result
    paths = [f"/_plugins/_security/api/{kind}/{quote(role, safe='')}"
             for role in (spec.kb_security_role, spec.reader_security_role)
             for kind in ("rolesmapping", "roles")]
    if not spec.retain_index:
        paths.append(_index_path(spec))
    for path in paths:
        try:
            response = domain.call("DELETE", path, ok_statuses=(404,))
            logger.info("deleted", extra={"path": path, "status": response.status})
        except ResourceError as error:
            logger.warning("delete skipped", extra={"path": path, "error": str(error)})
    if spec.retain_index:
        logger.info("index retained", extra={"index": spec.index_name})
    return result


# --- Lambda entry ---

def handle(event: dict[str, Any], *, credentials: Any, region: str, backoff: Backoff, remaining_s: float) -> dict[str, Any]:
    request = event.get("RequestType")
    if request not in ("Create", "Update", "Delete"):
        raise ResourceError(f"unsupported RequestType {request!r}")
    spec = IndexSpec.from_properties(event.get("ResourceProperties") or {}, region)
    # Delete gets a short budget: it must not hang a stack deletion on an unreachable domain.
    budget = min(remaining_s, 60.0) if request == "Delete" else remaining_s
    domain = Domain(spec=spec, credentials=credentials, backoff=backoff, deadline=backoff.clock() + budget)
    logger.info("request", extra={"request": request, "physical_id": event.get("PhysicalResourceId"), "index": spec.index_name})
    if request == "Delete":
        return remove(domain, spec, event.get("PhysicalResourceId", ""))
    return converge(domain, spec)


@logger.inject_lambda_context
def main(event: dict[str, Any], context: Any) -> dict[str, Any]:
    # Keep 30 s for the provider framework to report the result to CloudFormation.
    remaining_s = max(context.get_remaining_time_in_millis() / 1000.0 - 30.0, 10.0)
    return handle(event, credentials=aws_clients.credentials(), region=os.environ["AWS_REGION"], backoff=Backoff(), remaining_s=remaining_s)
