"""Custom resource: the k-NN vector index, its FGAC roles and the hybrid search pipeline.

Runs as the domain's fine-grained-access-control master role (CDK `custom_resources.Provider`
calls `main`), signs every call with SigV4 and needs no password. What it manages on the domain:

- the vector index Bedrock writes (faiss/hnsw/l2 `knn_vector`, text field, non-indexed metadata
  field, filterable fields as `keyword`);
- an FGAC role with the knowledge base's permissions, mapped to the knowledge base's IAM role;
- a read-only FGAC role (search/msearch/get on the index), mapped to the serving Lambda's role;
- a search pipeline with a `normalization-processor` for hybrid (BM25 + k-NN) queries.

Create and Update converge to the same state and are idempotent: an existing index with a
compatible mapping is success; filterable fields it lacks are added (an additive `PUT _mapping`
of `keyword` fields), as are changed replica counts and slow-log thresholds (dynamic settings);
an incompatible mapping fails with a message saying what to do. Every property is validated
before anything is sent (the index name against Bedrock's pattern before it is used in a URL).
A new index name gives a new physical id, so CloudFormation deletes the old resource afterwards.

Delete never fails (a failing Delete blocks stack deletion and every rollback). It reads only
`Endpoint`, `IndexName` and `RetainIndex`, tolerates anything in the other properties, and:

- retains by default: a missing or unreadable `RetainIndex` keeps everything. A retained index
  keeps its FGAC roles and mappings too, so the data stays usable by the same IAM roles when
  the stack is deployed again over the retained domain (prod: `retain_data`). Nothing is ever
  deleted that the operator did not ask to delete;
- deletes (RetainIndex false: dev) the index and its FGAC roles, but only when this resource owns
  them: the index records its owner (stack id + logical id) in its mapping's `_meta`, so a Delete
  of an old logical id that a new resource has adopted (a moved construct) leaves it alone, and
  an owner that cannot be read means "keep";
- keeps the (shared, stateless) pipeline; gives up after a short budget; swallows every error.

403 (IAM and FGAC propagate for a few minutes after the domain and roles are created), 429, 5xx
and transport failures (timeouts, resets, TLS errors) are retried with bounded exponential
backoff until a deadline inside the Lambda timeout.
"""

from __future__ import annotations

import math
import os
import random
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional
from urllib.parse import urlsplit

from aws_lambda_powertools import Logger

from shared import aws_clients
from shared.opensearch_http import OpenSearchResponse, OpenSearchTransportError, signed_request

logger = Logger()

RETRYABLE_STATUSES = frozenset({403, 429, 500, 502, 503, 504})
DELETE_BUDGET_S = 60.0  # a Delete must not hang a stack deletion on an unreachable domain

# Bedrock's VectorIndexName rule (CloudFormation OpenSearchManagedClusterConfiguration), and
# OpenSearch's length limit. Names are checked with fullmatch: a trailing newline is no name.
INDEX_NAME_PATTERN = re.compile(r"(?![\-_+.])[a-z0-9][a-z0-9\-_.]*")
MAX_INDEX_NAME_BYTES = 255
# Field and pipeline names: the same rule as stacks/config.py FIELD_NAME_PATTERN.
NAME_PATTERN = re.compile(r"[a-zA-Z][a-zA-Z0-9_\-]{0,63}")
ROLE_ARN_PATTERN = re.compile(r"arn:aws[a-z\-]*:iam::\d{12}:role/[A-Za-z0-9+=,.@_\-/]{1,512}")
MAX_DIMENSIONS = 16_000  # faiss knn_vector limit
MAX_REPLICAS = 80  # a domain has at most 80 data nodes
MAX_FILTERABLE_FIELDS = 100
LOOPBACK_HOSTS = ("localhost", "::1")
HOST_PATTERN = re.compile(r"(?=[a-z0-9.\-]{1,253}\Z)[a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?)*")

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
OWNER_KEY = "managed_by"  # in the index mapping's _meta


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
        ceiling = min(self.max_delay_s, self.base_delay_s * (2 ** min(attempt, 32)))
        return random.uniform(min(self.base_delay_s / 2, ceiling), ceiling)


# --- property parsing: every check happens before the first request ---


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def parse_endpoint(value: Any) -> str:
    """`https://host[:port]` with nothing else; plain http only to a loopback host (tests, local)."""
    if not isinstance(value, str) or not value.strip():
        raise ResourceError(f"property Endpoint must be the domain's https:// URL, got {_short(value)}")
    text = value
    if "://" not in text:
        text = f"https://{text}"
    try:
        parts = urlsplit(text)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in 0..65535
    except ValueError as error:
        raise ResourceError(f"property Endpoint is not a URL ({error}): {_short(value)}") from None
    if (parts.scheme not in ("https", "http") or not host or not (HOST_PATTERN.fullmatch(host) or host == "::1") or parts.username is not None or parts.password is not None
            or parts.path not in ("", "/") or parts.query or parts.fragment or any(c.isspace() for c in text)):
        raise ResourceError(f"property Endpoint must be https://<domain endpoint> with no path, got {_short(value)}")
    if parts.scheme == "http" and not (host in LOOPBACK_HOSTS or host.startswith("127.")):
        raise ResourceError(f"property Endpoint must use https (plain http only to a loopback host), got {_short(value)}")
    return f"{parts.scheme}://{parts.netloc}"


def parse_index_name(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ResourceError(f"property IndexName is required (a lowercase index name), got {_short(value)}")
    if not INDEX_NAME_PATTERN.fullmatch(value) or len(value.encode()) > MAX_INDEX_NAME_BYTES:
        raise ResourceError(
            f"property IndexName {_short(value)} is not a valid index name: lowercase letters, digits, '-', '_' "
            f"and '.', not starting with '-', '_', '+' or '.', at most {MAX_INDEX_NAME_BYTES} bytes (Bedrock's pattern)"
        )
    return value


def retain_flag(value: Any) -> bool:
    """Delete's reading of RetainIndex: only an explicit false deletes; missing or unreadable retains."""
    if value is False:
        return False
    return not (isinstance(value, str) and value.strip().lower() == "false")


@dataclass(frozen=True)
class IndexSpec:
    """The resource's properties, parsed. CloudFormation passes every scalar as a string."""

    endpoint: str
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
    owner: Optional[str] = None  # "<stack id>#<logical id>": who may delete the index

    @property
    def host(self) -> str:
        return urlsplit(self.endpoint).netloc

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
    def from_properties(cls, props: Any, owner: Optional[str] = None) -> "IndexSpec":
        """Create/Update: every property checked, each failure naming the property and what it must be."""
        if not isinstance(props, Mapping):
            raise ResourceError(f"ResourceProperties must be an object, got {_short(props)}")

        def name(key: str) -> str:
            value = props.get(key)
            if not isinstance(value, str) or not value.strip():
                raise ResourceError(f"property {key} is required, got {_short(value)}")
            if not NAME_PATTERN.fullmatch(value):
                raise ResourceError(f"property {key} {_short(value)} must be a name of letters, digits, '_' or '-' "
                                    "starting with a letter, at most 64 characters")
            return value

        def integer(key: str, low: int, high: int, default: Optional[int] = None) -> int:
            value = props.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise ResourceError(f"property {key} must be an integer, got {_short(value)}")
            try:
                number = int(value.strip()) if isinstance(value, str) else value
            except ValueError:
                raise ResourceError(f"property {key} must be an integer, got {_short(value)}") from None
            if not low <= number <= high:
                raise ResourceError(f"property {key} must be between {low} and {high}, got {number}")
            return number

        def boolean(key: str, default: bool) -> bool:
            value = props.get(key, default)
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in ("true", "false"):
                return value.strip().lower() == "true"
            raise ResourceError(f"property {key} must be true or false, got {_short(value)}")

        def role_arn(key: str) -> str:
            value = props.get(key)
            if not isinstance(value, str) or not ROLE_ARN_PATTERN.fullmatch(value):
                raise ResourceError(f"property {key} must be an IAM role ARN, got {_short(value)}")
            return value

        vector_field, text_field, metadata_field = name("VectorField"), name("TextField"), name("MetadataField")
        if len({vector_field, text_field, metadata_field}) != 3:
            raise ResourceError(f"properties VectorField, TextField and MetadataField must differ, got "
                                f"{vector_field!r}, {text_field!r}, {metadata_field!r}")
        return cls(
            endpoint=parse_endpoint(props.get("Endpoint")),
            index_name=parse_index_name(props.get("IndexName")),
            vector_field=vector_field,
            text_field=text_field,
            metadata_field=metadata_field,
            dimensions=integer("Dimensions", 1, MAX_DIMENSIONS),
            filterable_fields=parse_filterable_fields(props.get("FilterableFields"), (vector_field, text_field, metadata_field)),
            number_of_replicas=integer("NumberOfReplicas", 0, MAX_REPLICAS, default=0),
            pipeline_name=name("PipelineName"),
            hybrid_weights=parse_hybrid_weights(props.get("HybridWeights")),
            kb_role_arn=role_arn("KnowledgeBaseRoleArn"),
            query_role_arn=role_arn("QueryRoleArn"),
            retain_index=boolean("RetainIndex", True),
            audit_logging=boolean("AuditLogging", False),
            owner=owner,
        )


def parse_filterable_fields(value: Any, reserved: tuple[str, ...]) -> tuple[str, ...]:
    """A JSON array of distinct field names, none named like the vector, text or metadata field."""
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise ResourceError(f"property FilterableFields must be a list of field names, got {_short(value)} "
                            "(a string is not split into fields)")
    if len(value) > MAX_FILTERABLE_FIELDS:
        raise ResourceError(f"property FilterableFields has {len(value)} fields; at most {MAX_FILTERABLE_FIELDS}")
    fields: list[str] = []
    for item in value:
        if not isinstance(item, str) or not NAME_PATTERN.fullmatch(item):
            raise ResourceError(f"property FilterableFields: {_short(item)} is not a field name (letters, digits, "
                                "'_' or '-', starting with a letter)")
        if item in reserved:
            raise ResourceError(f"property FilterableFields: '{item}' is the vector, text or metadata field; "
                                "a filterable field must have a name of its own")
        if item in fields:
            raise ResourceError(f"property FilterableFields lists '{item}' twice")
        fields.append(item)
    return tuple(fields)


def parse_hybrid_weights(value: Any) -> tuple[float, float]:
    """[lexical, vector]: two finite weights in [0, 1] that sum to 1 (the normalization processor's rule)."""
    if value is None:
        return (0.3, 0.7)
    problem = f"property HybridWeights must be two numbers [lexical, vector] that sum to 1, got {_short(value)}"
    if not isinstance(value, (list, tuple)) or len(value) != 2 or any(isinstance(w, bool) for w in value):
        raise ResourceError(problem)
    try:
        lexical, vector = (float(w) for w in value)
    except (TypeError, ValueError):
        raise ResourceError(problem) from None
    if not all(math.isfinite(w) and 0.0 <= w <= 1.0 for w in (lexical, vector)) or not math.isclose(lexical + vector, 1.0, abs_tol=1e-3):
        raise ResourceError(problem)
    return lexical, vector


@dataclass(frozen=True)
class DeleteTarget:
    """What Delete needs, read leniently: endpoint and index name (to know what), and RetainIndex."""

    endpoint: str
    index_name: str
    retain_index: bool

    @property
    def physical_id(self) -> str:
        return f"{self.index_name}@{urlsplit(self.endpoint).netloc}"

    @classmethod
    def from_properties(cls, props: Mapping[str, Any]) -> "DeleteTarget":
        return cls(endpoint=parse_endpoint(props.get("Endpoint")), index_name=parse_index_name(props.get("IndexName")),
                   retain_index=retain_flag(props.get("RetainIndex")))


def owner_of(event: Mapping[str, Any]) -> Optional[str]:
    """This resource's identity: stack id + logical id (a moved construct or a new stack is another owner)."""
    stack, logical = event.get("StackId"), event.get("LogicalResourceId")
    if isinstance(stack, str) and stack and isinstance(logical, str) and logical:
        return f"{stack}#{logical}"
    return None


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
    mappings: dict[str, Any] = {"properties": properties}
    if spec.owner:
        mappings["_meta"] = {OWNER_KEY: spec.owner}
    return {
        "settings": {"index": {"knn": True, "number_of_replicas": spec.number_of_replicas, **SLOW_LOG_THRESHOLDS}},
        "mappings": mappings,
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


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _flat(settings: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """OpenSearch renders settings nested ({"search": {"slowlog": ...}}) or dotted: one dotted form."""
    flat: dict[str, str] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value).lower()  # JSON true renders as "True" in Python
    return flat


def mapping_problems(existing_index: dict[str, Any], spec: IndexSpec) -> tuple[list[str], list[str]]:
    """Returns (incompatibilities, filterable fields to add) for an index's GET response entry."""
    problems: list[str] = []
    settings = _flat(_dict(_dict(existing_index.get("settings")).get("index")))
    if settings.get("knn") != "true":
        problems.append("setting index.knn is not true")
    properties = _dict(_dict(existing_index.get("mappings")).get("properties"))

    vector = properties.get(spec.vector_field)
    if not isinstance(vector, dict):
        problems.append(f"vector field '{spec.vector_field}' is missing")
    else:
        method = _dict(vector.get("method"))
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
    if not isinstance(text, dict) or text.get("type") != "text" or text.get("index") is False:
        problems.append(f"text field '{spec.text_field}' is {_short(text)}, wanted an indexed 'text' field")
    metadata = properties.get(spec.metadata_field)
    if not isinstance(metadata, dict) or metadata.get("type") != "text":
        problems.append(f"metadata field '{spec.metadata_field}' is {_short(metadata)}, wanted type 'text'")

    to_add = []
    for name in spec.filterable_fields:
        current = properties.get(name)
        if current is None:
            to_add.append(name)
        elif not isinstance(current, dict) or current.get("type") != "keyword":
            kind = _dict(current).get("type")
            problems.append(
                f"filterable field '{name}' has type {kind!r}, wanted 'keyword' (documents with this attribute were "
                "indexed before it was declared filterable, so OpenSearch mapped it itself; a field's type cannot "
                "change in place: remove it from search.filterable_fields, or use a new search.index_name)"
            )
    return problems, to_add


def settings_changes(existing_index: dict[str, Any], spec: IndexSpec) -> dict[str, Any]:
    """The dynamic settings (replicas, slow-log thresholds) whose value differs from the spec's."""
    current = _flat(_dict(_dict(existing_index.get("settings")).get("index")))
    wanted: dict[str, Any] = {"number_of_replicas": spec.number_of_replicas, **SLOW_LOG_THRESHOLDS}
    return {key: value for key, value in wanted.items() if current.get(key) != str(value)}


# --- talking to the domain ---


@dataclass
class Domain:
    """Signed calls to one domain with retries. `deadline` is a `clock()` value after which we give up."""

    endpoint: str
    region: str
    credentials: Any
    backoff: Backoff
    deadline: float

    def call(self, method: str, path: str, body: Any = None) -> OpenSearchResponse:
        """Sends until a non-retryable answer (returned, whatever its status) or the deadline (raises).

        Retried: the statuses in RETRYABLE_STATUSES and every transport
        failure (timeout, refused, reset, TLS error, garbage), within max_attempts and the deadline.
        """
        attempt = 0
        while True:
            try:
                response = signed_request(
                    endpoint=self.endpoint,
                    method=method,
                    path=path,
                    region=self.region,
                    credentials=self.credentials,
                    body=body,
                    timeout_s=self.backoff.request_timeout_s,
                )
                if response.status not in RETRYABLE_STATUSES:
                    return response
                last = f"HTTP {response.status}: {_short(response.body)}"
            except OpenSearchTransportError as error:
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


def _already_exists(response: OpenSearchResponse) -> bool:
    error = response.body.get("error") if isinstance(response.body, dict) else None
    return isinstance(error, dict) and error.get("type") == "resource_already_exists_exception"


def _index_path(index_name: str) -> str:
    return f"/{index_name}"  # validated against INDEX_NAME_PATTERN: nothing in it needs escaping


def _index_entry(response: OpenSearchResponse) -> Optional[dict[str, Any]]:
    """The one index in a GET /<index> answer (keyed by the concrete name, also for an alias), or None."""
    if not response.ok or not isinstance(response.body, dict) or len(response.body) != 1:
        return None
    entry = next(iter(response.body.values()))
    return entry if isinstance(entry, dict) else None


def _owner_in(entry: dict[str, Any]) -> Optional[str]:
    meta = _dict(_dict(entry.get("mappings")).get("_meta"))
    owner = meta.get(OWNER_KEY)
    return owner if isinstance(owner, str) else None


def ensure_index(domain: Domain, spec: IndexSpec) -> str:
    """Creates the index or checks the existing one. Returns 'created', 'existing' or 'extended'."""
    path = _index_path(spec.index_name)
    current = domain.call("GET", path)
    if current.status == 404:
        created = domain.call("PUT", path, index_body(spec))
        if created.ok:
            logger.info("index created", extra={"index": spec.index_name})
            return "created"
        if not _already_exists(created):
            raise ResourceError(f"creating index {spec.index_name} failed: HTTP {created.status}: {_short(created.body)}")
        current = domain.call("GET", path)  # created concurrently: check it like any existing index
    existing = _index_entry(current)
    if existing is None:
        raise ResourceError(f"reading index {spec.index_name} failed: HTTP {current.status}: {_short(current.body)}")
    problems, to_add = mapping_problems(existing, spec)
    if problems:
        raise ResourceError(
            f"index {spec.index_name} exists with a mapping this stack cannot change in place: {'; '.join(problems)}. "
            "k-NN mappings and field types are immutable: set search.index_name to a new name (e.g. "
            f"{spec.index_name}-v2) and deploy to create a new index (the knowledge base is replaced; its "
            "documents are synced again), or delete the index yourself if its data is disposable."
        )
    outcome = "existing"
    mapping: dict[str, Any] = {}
    if to_add:
        mapping["properties"] = {name: {"type": "keyword"} for name in to_add}
    if spec.owner and _owner_in(existing) != spec.owner:
        mapping["_meta"] = {OWNER_KEY: spec.owner}  # adopted: this resource now decides its deletion
    if mapping:
        added = domain.call("PUT", f"{path}/_mapping", mapping)
        if not added.ok:
            raise ResourceError(
                f"updating the mapping of {spec.index_name} (adding filterable fields {list(to_add)}) failed: HTTP "
                f"{added.status}: {_short(added.body)}. If a field was mapped meanwhile with another type, set "
                "search.index_name to a new name and deploy, or remove the field from search.filterable_fields."
            )
        if to_add:
            logger.info("filterable fields added", extra={"index": spec.index_name, "fields": list(to_add)})
            outcome = "extended"
    changes = settings_changes(existing, spec)
    if changes:
        updated = domain.call("PUT", f"{path}/_settings", {"index": changes})
        if not updated.ok:
            raise ResourceError(f"updating settings {sorted(changes)} of {spec.index_name} failed: HTTP {updated.status}: "
                                f"{_short(updated.body)}")
        logger.info("settings updated", extra={"index": spec.index_name, "settings": changes})
        outcome = "extended"
    return outcome


def ensure_access(domain: Domain, spec: IndexSpec) -> None:
    """FGAC roles and their mappings to IAM roles (PUT creates or replaces: idempotent)."""
    grants = (
        (spec.kb_security_role, kb_role_body(spec), spec.kb_role_arn),
        (spec.reader_security_role, reader_role_body(spec), spec.query_role_arn),
    )
    for role, body, iam_role_arn in grants:
        for kind, payload in (("roles", body), ("rolesmapping", {"backend_roles": [iam_role_arn]})):
            response = domain.call("PUT", f"/_plugins/_security/api/{kind}/{role}", payload)
            if not response.ok:
                raise ResourceError(f"PUT {kind}/{role} failed: HTTP {response.status}: {_short(response.body)}")


def ensure_pipeline(domain: Domain, spec: IndexSpec) -> None:
    response = domain.call("PUT", f"/_search/pipeline/{spec.pipeline_name}", pipeline_body(spec))
    if not response.ok:
        raise ResourceError(f"PUT search pipeline {spec.pipeline_name} failed: HTTP {response.status}: {_short(response.body)}")


# Publishing audit logs to CloudWatch is half of it: the security plugin must also log. Skip the
# noisiest categories (every authenticated / authorized request), keep failures and changes.
AUDIT_PATCH = [
    {"op": "add", "path": "/config/enabled", "value": True},
    {"op": "add", "path": "/config/audit/disabled_rest_categories", "value": ["AUTHENTICATED", "GRANTED_PRIVILEGES"]},
    {"op": "add", "path": "/config/audit/disabled_transport_categories", "value": ["AUTHENTICATED", "GRANTED_PRIVILEGES"]},
]


def ensure_audit_logging(domain: Domain) -> None:
    """Turns on audit logging in the security plugin; a failure is logged, not fatal (search works without it)."""
    try:
        response = domain.call("PATCH", "/_plugins/_security/api/audit", AUDIT_PATCH)
    except DomainUnavailable as error:
        logger.warning("audit logging not enabled", extra={"error": str(error)})
        return
    if not response.ok:
        logger.warning("audit logging not enabled", extra={"status": response.status, "body": _short(response.body)})


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


def remove(domain: Domain, target: DeleteTarget, owner: Optional[str]) -> None:
    """Deletes the index and its FGAC roles if this resource owns them. Never raises."""
    path = _index_path(target.index_name)
    try:
        current = domain.call("GET", path)
    except ResourceError as error:
        logger.warning("index kept: its owner could not be read", extra={"index": target.index_name, "error": str(error)})
        return
    if current.status != 404:
        entry = _index_entry(current)
        if entry is None:
            logger.warning("index kept: its owner could not be read",
                           extra={"index": target.index_name, "status": current.status, "body": _short(current.body)})
            return
        recorded = _owner_in(entry)
        if recorded is not None and recorded != owner:
            logger.info("index kept: another resource owns it", extra={"index": target.index_name, "owner": recorded})
            return
    paths = [f"/_plugins/_security/api/{kind}/{role}"
             for role in (f"bedrock-kb-{target.index_name}", f"reader-{target.index_name}")
             for kind in ("rolesmapping", "roles")]
    if current.status != 404:
        paths.append(path)
    for each in paths:
        try:
            response = domain.call("DELETE", each)  # 404 (already gone) is an answer, not retried
        except ResourceError as error:
            logger.warning("delete skipped", extra={"path": each, "error": str(error)})
            continue
        logger.info("deleted", extra={"path": each, "status": response.status})


def delete(event: Mapping[str, Any], *, credentials: Any, region: str, backoff: Backoff, remaining_s: float) -> dict[str, Any]:
    """Delete: best effort, never raises, always answers with the event's physical id."""
    physical_id = event.get("PhysicalResourceId")
    result = {"PhysicalResourceId": physical_id} if isinstance(physical_id, str) and physical_id else {}
    try:
        target = DeleteTarget.from_properties(event.get("ResourceProperties"))
        if target.physical_id != physical_id:
            # CloudFormation deletes a resource whose Create failed under a framework-made id: we made nothing.
            logger.info("nothing to delete", extra={"physical_id": _short(physical_id)})
            return result
        if target.retain_index:
            logger.info("index retained with its FGAC roles", extra={"index": target.index_name})
            return result
        if credentials is None:
            logger.warning("index kept: no credentials to sign with", extra={"index": target.index_name})
            return result
        domain = Domain(endpoint=target.endpoint, region=region, credentials=credentials, backoff=backoff,
                        deadline=backoff.clock() + min(remaining_s, DELETE_BUDGET_S))
        remove(domain, target, owner_of(event))
    except ResourceError as error:
        logger.warning("nothing deleted: the properties do not name an index this resource could have made",
                       extra={"error": str(error)})
    except Exception:  # noqa: BLE001 - a failing Delete blocks stack deletion and rollbacks: log it, answer success
        logger.exception("delete failed; answering success so CloudFormation can go on")
    return result


# --- Lambda entry ---


def handle(event: Any, *, credentials: Any, region: str, backoff: Backoff, remaining_s: float) -> dict[str, Any]:
    if not isinstance(event, Mapping):
        raise ResourceError(f"the event must be an object, got {_short(event)}")
    request = event.get("RequestType")
    if request == "Delete":
        return delete(event, credentials=credentials, region=region, backoff=backoff, remaining_s=remaining_s)
    if request not in ("Create", "Update"):
        raise ResourceError(f"unsupported RequestType {_short(request)}")
    spec = IndexSpec.from_properties(event.get("ResourceProperties"), owner=owner_of(event))
    if credentials is None:
        raise ResourceError("no AWS credentials to sign the domain requests with (the function's role gave none)")
    domain = Domain(endpoint=spec.endpoint, region=region, credentials=credentials, backoff=backoff,
                    deadline=backoff.clock() + remaining_s)
    logger.info("request", extra={"request": request, "physical_id": _short(event.get("PhysicalResourceId")), "index": spec.index_name})
    return converge(domain, spec)


@logger.inject_lambda_context
def main(event: dict[str, Any], context: Any) -> dict[str, Any]:
    # Keep 30 s for the provider framework to report the result to CloudFormation.
    remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
    remaining_s = max(remaining_ms() / 1000.0 - 30.0, 10.0) if callable(remaining_ms) else 60.0
    try:
        credentials, region = aws_clients.credentials(), os.environ.get("AWS_REGION") or aws_clients.region() or ""
    except Exception as error:  # noqa: BLE001 - a broken credential chain must not fail a Delete
        logger.warning("no credentials", extra={"error": _short(str(error))})
        credentials, region = None, os.environ.get("AWS_REGION", "")
    return handle(event, credentials=credentials, region=region, backoff=Backoff(), remaining_s=remaining_s)
