"""The vector-index custom resource against adversarial input: one test per input class.

The domain is faked at the urllib3 level (`shared.opensearch_http._POOL`): requests are really
built and SigV4-signed, and the fake answers with any status, any body or any urllib3 exception.
What must hold for every input:

- Create/Update either converge or raise `ResourceError` whose message names the property
  (never a TypeError, KeyError, RecursionError ...), and send nothing before the input is valid;
- Delete never raises, always answers with the event's physical id, deletes only with an
  explicit RetainIndex false, and only what this resource owns.
"""

from __future__ import annotations

import json
import math
import socket
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import urllib3
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import opensearch_http
from tests.fake_clock import FakeTime
from vector_index import handler as vi

CREDS = Credentials("AKIDTEST", "secret-test-key", "token")
REGION = "eu-west-1"
HOST = "search-rag-dev.eu-west-1.es.amazonaws.com"
ENDPOINT = f"https://{HOST}"
PHYSICAL = f"rag-documents@{HOST}"
STACK = "arn:aws:cloudformation:eu-west-1:111122223333:stack/RagDev-Search/guid-1"
OWNER = f"{STACK}#VectorIndexResource"
KB_ROLE = "arn:aws:iam::111122223333:role/RagDev-Search-KnowledgeBaseRole"
QUERY_ROLE = "arn:aws:iam::111122223333:role/RagDev-Search-QueryRole"

ROLE_PATHS = [
    "/_plugins/_security/api/rolesmapping/bedrock-kb-rag-documents",
    "/_plugins/_security/api/roles/bedrock-kb-rag-documents",
    "/_plugins/_security/api/rolesmapping/reader-rag-documents",
    "/_plugins/_security/api/roles/reader-rag-documents",
]


class FakePool:
    """Stands in for urllib3's PoolManager: answers (method, path) from a script, last answer repeats.

    An answer is `(status, body)` (body: JSON-able or raw bytes) or an exception to raise.
    """

    def __init__(self) -> None:
        self.script: dict[tuple[str, str], list[Any]] = {}
        self.sent: list[tuple[str, str, Any]] = []

    def on(self, method: str, path: str, *answers: Any) -> "FakePool":
        self.script[(method, path)] = list(answers)
        return self

    def request(self, method, url, body=None, headers=None, timeout=None):
        assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDTEST/")
        method, path = method.upper(), unquote(urlsplit(url).path)  # urllib3's request() upper-cases the method
        self.sent.append((method, path, json.loads(body) if body else None))
        answers = self.script.get((method, path))
        if not answers:
            answer = (404, {"error": {"type": "index_not_found_exception"}}) if method == "GET" else (200, {"acknowledged": True})
        else:
            answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, BaseException):
            raise answer
        status, payload = answer
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return SimpleNamespace(status=status, data=data)

    def calls(self) -> list[str]:
        return [f"{method} {path}" for method, path, _ in self.sent]

    def bodies(self, method: str, path: str) -> list[Any]:
        return [body for m, p, body in self.sent if (m, p) == (method, path)]


@pytest.fixture
def pool(monkeypatch) -> FakePool:
    fake = FakePool()
    monkeypatch.setattr(opensearch_http, "_POOL", fake)
    return fake


def props(**overrides) -> dict[str, Any]:
    values = {
        "ServiceToken": "arn:aws:lambda:eu-west-1:111122223333:function:provider",
        "Endpoint": ENDPOINT, "IndexName": "rag-documents", "VectorField": "embedding", "TextField": "text",
        "MetadataField": "metadata", "Dimensions": "1024", "FilterableFields": ["category", "collection"],
        "NumberOfReplicas": "0", "PipelineName": "rag-hybrid", "HybridWeights": ["0.3", "0.7"],
        "KnowledgeBaseRoleArn": KB_ROLE, "QueryRoleArn": QUERY_ROLE, "RetainIndex": "false", "AuditLogging": "true",
    }
    values.update(overrides)
    return values


def event(request: str = "Create", properties: Any = None, **extra) -> dict[str, Any]:
    return {"RequestType": request, "StackId": STACK, "LogicalResourceId": "VectorIndexResource",
            "ResourceProperties": props() if properties is None else properties, **extra}


def run(evt: Any, *, fake: FakeTime | None = None, remaining_s: float = 600.0, credentials=CREDS, **overrides) -> dict:
    fake = fake or FakeTime()
    policy = dict(base_delay_s=1.0, max_delay_s=8.0, max_attempts=6, request_timeout_s=2.0, sleep=fake.sleep, clock=fake.clock)
    policy.update(overrides)
    return vi.handle(evt, credentials=credentials, region=REGION, backoff=vi.Backoff(**policy), remaining_s=remaining_s)


def delete(properties: Any = None, physical: Any = PHYSICAL, **kwargs) -> dict:
    return run(event("Delete", properties, PhysicalResourceId=physical), **kwargs)


def existing(*, owner: str | None = OWNER, fields: dict | None = None, replicas: str = "0") -> dict:
    mappings: dict[str, Any] = {"properties": {
        "embedding": {"type": "knn_vector", "dimension": 1024,
                      "method": {"engine": "faiss", "space_type": "l2", "name": "hnsw", "parameters": {"m": 16, "ef_construction": 512}}},
        "text": {"type": "text"}, "metadata": {"type": "text", "index": False},
        "category": {"type": "keyword"}, "collection": {"type": "keyword"},
        **(fields or {}),
    }}
    if owner:
        mappings["_meta"] = {"managed_by": owner}
    return {"rag-documents": {"mappings": mappings, "settings": {"index": {
        "knn": "true", "number_of_replicas": replicas, **vi.SLOW_LOG_THRESHOLDS}}}}


# --- malformed events ---


@pytest.mark.parametrize("evt", [None, [], "Create", 42, {"RequestType": None}, {"RequestType": "create"},
                                 {"RequestType": "Delete "}, {"RequestType": ["Delete"]}, {}])
def test_a_malformed_event_is_refused_with_a_resource_error(pool, evt):
    with pytest.raises(vi.ResourceError, match="event must be an object|unsupported RequestType"):
        run(evt)
    assert pool.sent == []


@pytest.mark.parametrize("request_type", ["Create", "Update"])
@pytest.mark.parametrize("properties", [None, [], "Endpoint=x", 7, {"IndexName": "rag-documents"}])
def test_create_and_update_refuse_unusable_properties_before_any_request(pool, request_type, properties):
    evt = event(request_type, properties={} if properties is None else properties)
    if properties is None:
        evt["ResourceProperties"] = None
    with pytest.raises(vi.ResourceError, match="ResourceProperties must be an object|property "):
        run(evt)
    assert pool.sent == []


@pytest.mark.parametrize("properties", [None, [], "garbage", 7, {}, {"IndexName": "rag-documents"}, {"Endpoint": ENDPOINT}])
def test_delete_with_unusable_properties_answers_success_and_sends_nothing(pool, properties):
    evt = event("Delete", PhysicalResourceId=PHYSICAL)
    evt["ResourceProperties"] = properties
    assert run(evt) == {"PhysicalResourceId": PHYSICAL}
    assert pool.sent == []


@pytest.mark.parametrize("physical", [None, "", 5, ["x"], "AWSCDK::CustomResourceProviderFramework::CREATE_FAILED",
                                      "rag-documents@another-host", "RAG-DOCUMENTS@" + HOST])
def test_delete_of_a_physical_id_we_did_not_make_touches_nothing(pool, physical):
    result = delete(physical=physical)
    assert result == ({"PhysicalResourceId": physical} if isinstance(physical, str) and physical else {})
    assert pool.sent == []


# --- missing keys and wrong types, property by property ---

REQUIRED = ["Endpoint", "IndexName", "VectorField", "TextField", "MetadataField", "Dimensions", "PipelineName",
            "KnowledgeBaseRoleArn", "QueryRoleArn"]


@pytest.mark.parametrize("key", REQUIRED)
def test_create_names_each_missing_required_property(pool, key):
    values = props()
    del values[key]
    with pytest.raises(vi.ResourceError, match=f"property {key}"):
        run(event("Create", values))
    assert pool.sent == []


@pytest.mark.parametrize("key, default", [("FilterableFields", ()), ("NumberOfReplicas", 0), ("HybridWeights", (0.3, 0.7)),
                                          ("RetainIndex", True), ("AuditLogging", False)])
def test_optional_properties_have_safe_defaults(key, default):
    values = props()
    del values[key]
    spec = vi.IndexSpec.from_properties(values)
    attribute = {"FilterableFields": "filterable_fields", "NumberOfReplicas": "number_of_replicas", "HybridWeights": "hybrid_weights",
                 "RetainIndex": "retain_index", "AuditLogging": "audit_logging"}[key]
    assert getattr(spec, attribute) == default


GARBAGE = [None, True, 1.5, -1, [], {}, ["x"], {"a": 1}, "", " ", "\n", "x" * 100_000, "\ud800", "ｒａｇ", "rag\n",
           "rag documents", "../_security", "a/b", "%2e%2e", "\x00", "🙂"]


@pytest.mark.parametrize("key", REQUIRED + ["FilterableFields", "NumberOfReplicas", "HybridWeights", "RetainIndex", "AuditLogging"])
def test_garbage_in_any_property_is_a_resource_error_naming_it(pool, key):
    valid_here = {"FilterableFields": [None, [], ["x"]], "HybridWeights": [None], "RetainIndex": [True], "AuditLogging": [True]}
    for value in [v for v in GARBAGE if not any(v is ok or v == ok for ok in valid_here.get(key, []))]:
        try:
            vi.IndexSpec.from_properties(props(**{key: value}))
        except vi.ResourceError as error:
            assert key in str(error), (key, value, str(error))
            assert len(str(error)) < 1200, "huge values are cut in messages"
        else:
            pytest.fail(f"{key}={value!r:.60} was accepted")
    assert pool.sent == []


@pytest.mark.parametrize("key", ["VectorField", "TextField", "MetadataField", "Dimensions", "PipelineName", "HybridWeights",
                                 "KnowledgeBaseRoleArn", "QueryRoleArn", "FilterableFields", "NumberOfReplicas", "AuditLogging"])
def test_delete_ignores_garbage_in_the_properties_it_does_not_need(pool, key):
    pool.on("GET", "/rag-documents", (200, existing()))
    for value in (None, "\ud800", {"a": [1]}, "x" * 10_000):
        pool.sent.clear()
        assert delete(props(**{key: value})) == {"PhysicalResourceId": PHYSICAL}
        assert pool.calls()[-1] == "DELETE /rag-documents"


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(overrides=st.dictionaries(st.sampled_from(REQUIRED + ["FilterableFields", "NumberOfReplicas", "HybridWeights",
                                                             "RetainIndex", "AuditLogging"]), JSON, max_size=5))
def test_any_json_in_the_properties_parses_or_is_a_resource_error(overrides):
    try:
        spec = vi.IndexSpec.from_properties(props(**overrides))
    except vi.ResourceError:
        return
    # Whatever passed is safe to put in a URL and a mapping.
    assert vi.INDEX_NAME_PATTERN.fullmatch(spec.index_name)
    assert 1 <= spec.dimensions <= vi.MAX_DIMENSIONS
    assert all(vi.NAME_PATTERN.fullmatch(f) for f in spec.filterable_fields)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(properties=JSON, physical=JSON)
def test_delete_never_raises_whatever_the_event_holds(properties, physical):
    evt = {"RequestType": "Delete", "ResourceProperties": properties, "PhysicalResourceId": physical}
    result = run(evt, credentials=None)
    assert result.get("PhysicalResourceId") == (physical if isinstance(physical, str) and physical else None)


# --- the index name, before it is used in a URL ---


@pytest.mark.parametrize("name", ["RAG", "-rag", "_rag", "+rag", ".rag", "..", ".", "rag/../x", "rag?x=1", "rag#x", "rag x",
                                  "rag,other", "rag*", "rag\n", "rag\t", "índice", "ｒａｇ", "rag%2f", "rag:1", "a" * 256,
                                  "_security", "rag\\x", '"rag"', "<rag>", "rag|x", ""])
def test_invalid_index_names_are_refused_before_any_request(pool, name):
    with pytest.raises(vi.ResourceError, match="IndexName"):
        run(event("Create", props(IndexName=name)))
    assert delete(props(IndexName=name), physical=f"{name}@{HOST}") == {"PhysicalResourceId": f"{name}@{HOST}"}
    assert pool.sent == []


@pytest.mark.parametrize("name", ["rag", "rag-documents", "r", "0rag", "rag_v2.1", "a" * 255])
def test_valid_index_names_pass(name):
    assert vi.IndexSpec.from_properties(props(IndexName=name)).index_name == name


# --- filterable fields ---


def test_filterable_fields_as_a_string_are_refused_not_split_into_letters(pool):
    with pytest.raises(vi.ResourceError, match="FilterableFields must be a list .*not split"):
        run(event("Create", props(FilterableFields="category")))
    assert pool.sent == []


@pytest.mark.parametrize("field", ["embedding", "text", "metadata"])
def test_a_filterable_field_named_like_the_vector_text_or_metadata_field_is_refused(pool, field):
    with pytest.raises(vi.ResourceError, match=f"'{field}' is the vector, text or metadata field"):
        run(event("Create", props(FilterableFields=["category", field])))
    assert pool.sent == []


@pytest.mark.parametrize("fields, words", [
    (["category", "category"], "twice"),
    ([1], "not a field name"),
    ([None], "not a field name"),
    ([["category"]], "not a field name"),
    (["_id"], "not a field name"),
    (["a.b"], "not a field name"),
    (["x" * 65], "not a field name"),
    ([f"f{i}" for i in range(101)], "at most 100"),
    ({"category": 1}, "must be a list"),
])
def test_malformed_filterable_fields_are_refused(fields, words):
    with pytest.raises(vi.ResourceError, match=words):
        vi.IndexSpec.from_properties(props(FilterableFields=fields))


def test_vector_text_and_metadata_fields_must_differ():
    with pytest.raises(vi.ResourceError, match="must differ"):
        vi.IndexSpec.from_properties(props(TextField="metadata"))


# --- numbers, weights, endpoints, ARNs, booleans ---


@pytest.mark.parametrize("value, ok", [("1", True), ("16000", True), (" 1024 ", True), (1024, True), ("0", False), ("-1", False),
                                       ("16001", False), ("1e3", False), ("1024.0", False), (True, False), (1024.0, False),
                                       ("9" * 5000, False)])
def test_dimensions_bounds(value, ok):
    if ok:
        assert vi.IndexSpec.from_properties(props(Dimensions=value)).dimensions == int(value)
    else:
        with pytest.raises(vi.ResourceError, match="Dimensions"):
            vi.IndexSpec.from_properties(props(Dimensions=value))


@pytest.mark.parametrize("value, ok", [("0", True), ("80", True), ("81", False), ("-1", False)])
def test_replica_bounds(value, ok):
    if ok:
        assert vi.IndexSpec.from_properties(props(NumberOfReplicas=value)).number_of_replicas == int(value)
    else:
        with pytest.raises(vi.ResourceError, match="NumberOfReplicas must be between 0 and 80"):
            vi.IndexSpec.from_properties(props(NumberOfReplicas=value))


@pytest.mark.parametrize("weights, ok", [
    (["0.3", "0.7"], True), ([0.5, 0.5], True), (["0", "1"], True), (["0.2999", "0.7"], True), (("1", "0"), True),
    (["0.3", "0.8"], False), (["nan", "0.5"], False), (["inf", "-inf"], False), ([-0.5, 1.5], False), ([True, False], False),
    (["0.3"], False), (["0.1", "0.2", "0.7"], False), ("0.3,0.7", False), ([None, None], False), ([[0.3], [0.7]], False),
])
def test_hybrid_weights(weights, ok):
    if ok:
        lexical, vector = vi.IndexSpec.from_properties(props(HybridWeights=weights)).hybrid_weights
        assert math.isclose(lexical + vector, 1.0, abs_tol=1e-3)
    else:
        with pytest.raises(vi.ResourceError, match="HybridWeights"):
            vi.IndexSpec.from_properties(props(HybridWeights=weights))


@pytest.mark.parametrize("endpoint, expected", [
    (HOST, ENDPOINT), (ENDPOINT + "/", ENDPOINT), ("http://127.0.0.1:9200", "http://127.0.0.1:9200"),
    ("http://localhost:9200/", "http://localhost:9200"), (f"https://{HOST}:443", f"https://{HOST}:443"),
])
def test_endpoints_that_are_accepted(endpoint, expected):
    assert vi.IndexSpec.from_properties(props(Endpoint=endpoint)).endpoint == expected


@pytest.mark.parametrize("endpoint", [f"http://{HOST}", f"{ENDPOINT}/rag-documents", f"{ENDPOINT}?x=1", f"{ENDPOINT}#f",
                                      f"https://user:pw@{HOST}", "ftp://host", "https://", "https://[::1", f"https://{HOST}:99999",
                                      "https://a b", "http://10.0.0.1", f" {ENDPOINT}", f"{ENDPOINT}\n"])
def test_endpoints_that_are_refused(endpoint):
    with pytest.raises(vi.ResourceError, match="Endpoint"):
        vi.IndexSpec.from_properties(props(Endpoint=endpoint))


@pytest.mark.parametrize("arn", ["*", "arn:aws:iam::1234:role/x", "arn:aws:iam::111122223333:user/x", "arn:aws:s3:::bucket",
                                 f"{KB_ROLE}\n", f"{KB_ROLE} "])
def test_role_arns_are_checked(arn):
    with pytest.raises(vi.ResourceError, match="KnowledgeBaseRoleArn must be an IAM role ARN"):
        vi.IndexSpec.from_properties(props(KnowledgeBaseRoleArn=arn))


@pytest.mark.parametrize("value, expected", [("true", True), ("TRUE", True), (" false ", False), (True, True), (False, False)])
def test_booleans_as_cloudformation_sends_them(value, expected):
    assert vi.IndexSpec.from_properties(props(AuditLogging=value)).audit_logging is expected


def test_retain_index_reading_for_delete():
    assert vi.retain_flag(False) is False
    assert vi.retain_flag("false") is False and vi.retain_flag(" FALSE ") is False
    for value in (None, True, "true", "", "no", 0, "0", [], {}, "False!"):
        assert vi.retain_flag(value) is True, value


# --- every HTTP status at every step of Create ---

STEPS = [
    ("PUT", "/_plugins/_security/api/roles/bedrock-kb-rag-documents"),
    ("PUT", "/_plugins/_security/api/rolesmapping/reader-rag-documents"),
    ("GET", "/rag-documents"),
    ("PUT", "/rag-documents"),
    ("PUT", "/_search/pipeline/rag-hybrid"),
]


@pytest.mark.parametrize("method, path", STEPS)
@pytest.mark.parametrize("status", [400, 401, 405, 409, 413, 422, 501, 505])
def test_a_non_retryable_status_fails_at_once_naming_status_and_call(pool, method, path, status):
    pool.on(method, path, (status, {"error": {"type": "some_exception", "reason": "no"}}))
    with pytest.raises(vi.ResourceError, match=f"HTTP {status}") as error:
        run(event("Create"))
    assert not isinstance(error.value, vi.DomainUnavailable)
    assert pool.calls().count(f"{method} {path}") == 1


@pytest.mark.parametrize("method, path", STEPS)
@pytest.mark.parametrize("status", sorted(vi.RETRYABLE_STATUSES))
def test_a_retryable_status_is_retried_up_to_the_cap(pool, method, path, status):
    pool.on(method, path, (status, {"message": "busy"}))
    fake = FakeTime()
    with pytest.raises(vi.DomainUnavailable, match=f"after 6 attempts; last: HTTP {status}"):
        run(event("Create"), fake=fake)
    assert pool.calls().count(f"{method} {path}") == 6
    assert len(fake.sleeps) == 5


@pytest.mark.parametrize("status", sorted(vi.RETRYABLE_STATUSES))
def test_a_retryable_status_then_success_converges(pool, status):
    pool.on("GET", "/rag-documents", (status, {}), (status, {}), (404, {}))
    assert run(event("Create"))["Data"]["Index"] == "created"
    assert pool.calls().count("GET /rag-documents") == 3


TRANSPORT_FAILURES = [
    urllib3.exceptions.SSLError("[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation of protocol"),
    urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "Connection reset by peer")),
    urllib3.exceptions.ReadTimeoutError(None, "/", "Read timed out."),
    urllib3.exceptions.ConnectTimeoutError("connect timed out"),
    urllib3.exceptions.NewConnectionError(None, "Connection refused"),
    urllib3.exceptions.NameResolutionError(HOST, None, socket.gaierror("Name or service not known")),
    ConnectionResetError(104, "Connection reset by peer"),
]


@pytest.mark.parametrize("failure", TRANSPORT_FAILURES, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("method, path", STEPS)
def test_transport_failures_are_retried_on_create(pool, failure, method, path):
    pool.on(method, path, failure, failure, (404, {}) if method == "GET" else (200, {"acknowledged": True}))
    assert run(event("Create"))["Data"]["Index"] == "created"
    assert pool.calls().count(f"{method} {path}") == 3


@pytest.mark.parametrize("failure", TRANSPORT_FAILURES, ids=lambda e: type(e).__name__)
def test_lasting_transport_failures_fail_within_the_cap_and_say_what_happened(pool, failure):
    pool.on("GET", "/rag-documents", failure)
    with pytest.raises(vi.DomainUnavailable, match="GET /rag-documents failed after 6 attempts; last: GET /rag-documents: "):
        run(event("Update", PhysicalResourceId=PHYSICAL))


@pytest.mark.parametrize("jitter, attempts", [
    # Pauses drawn at their floor (0.5 s) fit 20 times in 10 s: 21 attempts; at their ceiling
    # (1 s, then 2 s) the pause after the attempt at t=9 would end past the deadline: 6 attempts.
    ("floor", 21), ("ceiling", 6),
])
def test_the_deadline_stops_retries_before_the_attempt_cap(pool, monkeypatch, jitter, attempts):
    pool.on("GET", "/rag-documents", (503, {}))
    monkeypatch.setattr(vi.random, "uniform", (lambda low, high: low) if jitter == "floor" else (lambda low, high: high))
    fake = FakeTime()
    with pytest.raises(vi.DomainUnavailable):
        run(event("Create"), fake=fake, remaining_s=10.0, max_attempts=1000, base_delay_s=1.0, max_delay_s=2.0)
    assert fake.now <= 10.0
    assert pool.calls().count("GET /rag-documents") == attempts


def test_backoff_delays_grow_and_stay_within_their_bounds():
    policy = vi.Backoff(base_delay_s=2.0, max_delay_s=30.0)
    for attempt, ceiling in [(0, 2.0), (1, 4.0), (2, 8.0), (3, 16.0), (4, 30.0), (5, 30.0), (500, 30.0), (10**6, 30.0)]:
        delays = [policy.delay(attempt) for _ in range(200)]
        assert all(1.0 <= d <= ceiling for d in delays), (attempt, min(delays), max(delays))
        assert max(delays) > ceiling * 0.75 and min(delays) < 1.0 + (ceiling - 1.0) * 0.25  # spread over the range
    tiny = vi.Backoff(base_delay_s=4.0, max_delay_s=1.0)
    assert all(0.5 <= tiny.delay(0) <= 1.0 for _ in range(50))


def test_a_non_json_answer_is_reported_not_crashed_on(pool):
    pool.on("GET", "/rag-documents", (200, b"<html>not json</html>"))
    with pytest.raises(vi.ResourceError, match="reading index rag-documents failed: HTTP 200: <html>not json</html>"):
        run(event("Create"))


@pytest.mark.parametrize("body", [{}, [], "x", {"a": 1, "b": 2}, {"rag-documents": []}, {"rag-documents": {"mappings": []}},
                                  {"rag-documents": {"mappings": {"properties": {"embedding": "x"}}, "settings": 5}}])
def test_a_malformed_index_description_is_a_resource_error(pool, body):
    pool.on("GET", "/rag-documents", (200, body))
    with pytest.raises(vi.ResourceError, match="reading index|cannot change in place"):
        run(event("Create"))


def test_huge_error_bodies_are_cut_in_the_message(pool):
    pool.on("PUT", "/rag-documents", (400, {"error": {"type": "x", "reason": "r" * 100_000}}))
    with pytest.raises(vi.ResourceError) as error:
        run(event("Create"))
    assert len(str(error.value)) < 500


# --- Update: additive mapping changes and conflicts ---


def test_update_adds_a_new_filterable_field_as_keyword_only(pool):
    index = existing()
    del index["rag-documents"]["mappings"]["properties"]["collection"]
    pool.on("GET", "/rag-documents", (200, index))
    result = run(event("Update", PhysicalResourceId=PHYSICAL))
    assert result["Data"]["Index"] == "extended"
    assert pool.bodies("PUT", "/rag-documents/_mapping") == [{"properties": {"collection": {"type": "keyword"}}}]
    assert "PUT /rag-documents" not in pool.calls() and "PUT /rag-documents/_settings" not in pool.calls()


def test_a_field_already_mapped_as_text_is_a_conflict_that_says_what_to_do(pool):
    index = existing(fields={"collection": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}})
    pool.on("GET", "/rag-documents", (200, index))
    with pytest.raises(vi.ResourceError) as error:
        run(event("Update", PhysicalResourceId=PHYSICAL))
    message = str(error.value)
    assert "filterable field 'collection' has type 'text', wanted 'keyword'" in message
    assert "remove it from search.filterable_fields" in message and "search.index_name" in message
    assert not [call for call in pool.calls() if "_mapping" in call]


def test_a_refused_mapping_update_says_what_to_do(pool):
    index = existing()
    del index["rag-documents"]["mappings"]["properties"]["collection"]
    pool.on("GET", "/rag-documents", (200, index))
    pool.on("PUT", "/rag-documents/_mapping", (400, {"error": {"type": "illegal_argument_exception",
                                                               "reason": "mapper [collection] cannot be changed from type [text] to [keyword]"}}))
    with pytest.raises(vi.ResourceError, match="filterable fields \\['collection'\\].*HTTP 400.*search.index_name"):
        run(event("Update", PhysicalResourceId=PHYSICAL))


def test_update_of_an_identical_owned_index_changes_nothing(pool):
    pool.on("GET", "/rag-documents", (200, existing()))
    assert run(event("Update", PhysicalResourceId=PHYSICAL))["Data"]["Index"] == "existing"
    assert not [c for c in pool.calls() if c.startswith("PUT /rag-documents")]


def test_update_converges_replicas_and_slow_logs(pool):
    index = existing(replicas="0")
    del index["rag-documents"]["settings"]["index"]["search.slowlog.threshold.query.warn"]
    pool.on("GET", "/rag-documents", (200, index))
    assert run(event("Update", props(NumberOfReplicas="1"), PhysicalResourceId=PHYSICAL))["Data"]["Index"] == "extended"
    assert pool.bodies("PUT", "/rag-documents/_settings") == [
        {"index": {"number_of_replicas": 1, "search.slowlog.threshold.query.warn": "2s"}}]


def test_an_index_made_by_another_resource_is_adopted_on_create(pool):
    pool.on("GET", "/rag-documents", (200, existing(owner="arn:...:stack/Old/guid#OldLogicalId")))
    assert run(event("Create"))["Data"]["Index"] == "existing"
    assert pool.bodies("PUT", "/rag-documents/_mapping") == [{"_meta": {"managed_by": OWNER}}]


def test_a_new_index_records_its_owner(pool):
    run(event("Create"))
    [body] = pool.bodies("PUT", "/rag-documents")
    assert body["mappings"]["_meta"] == {"managed_by": OWNER}
    assert body["mappings"]["properties"]["collection"] == {"type": "keyword"}


# --- Delete: every transport failure and status, ownership ---


@pytest.mark.parametrize("failure", TRANSPORT_FAILURES + [(500, {}), (403, {}), (400, {}), (200, b"garbage")],
                         ids=lambda e: type(e).__name__ if isinstance(e, BaseException) else f"HTTP {e[0]}")
@pytest.mark.parametrize("step", ["GET /rag-documents", *[f"DELETE {p}" for p in ROLE_PATHS], "DELETE /rag-documents"])
def test_delete_survives_any_failure_at_any_step(pool, failure, step):
    method, path = step.split(" ")
    pool.on("GET", "/rag-documents", (200, existing()))
    pool.on(method, path, failure)
    fake = FakeTime()
    assert delete(fake=fake) == {"PhysicalResourceId": PHYSICAL}
    assert fake.now <= vi.DELETE_BUDGET_S


def test_delete_gives_up_within_its_budget_even_with_a_long_remaining_time(pool):
    pool.on("GET", "/rag-documents", urllib3.exceptions.ReadTimeoutError(None, "/", "Read timed out."))
    fake = FakeTime()
    assert delete(fake=fake, remaining_s=900.0, max_attempts=1000) == {"PhysicalResourceId": PHYSICAL}
    assert fake.now <= vi.DELETE_BUDGET_S


def test_delete_of_an_index_another_resource_adopted_deletes_nothing(pool):
    pool.on("GET", "/rag-documents", (200, existing(owner=f"{STACK}#MovedVectorIndexResource")))
    delete()
    assert pool.calls() == ["GET /rag-documents"]


def test_delete_of_an_index_without_an_owner_record_deletes_it(pool):
    pool.on("GET", "/rag-documents", (200, existing(owner=None)))
    delete()
    assert pool.calls() == ["GET /rag-documents", *[f"DELETE {p}" for p in ROLE_PATHS], "DELETE /rag-documents"]


def test_delete_of_a_missing_index_still_removes_its_roles(pool):
    delete()
    assert pool.calls() == ["GET /rag-documents", *[f"DELETE {p}" for p in ROLE_PATHS]]


def test_delete_that_cannot_read_the_owner_keeps_everything(pool):
    pool.on("GET", "/rag-documents", (500, {"error": "boom"}))
    delete(max_attempts=2)
    assert set(pool.calls()) == {"GET /rag-documents"}


def test_delete_without_credentials_keeps_everything(pool):
    assert delete(credentials=None) == {"PhysicalResourceId": PHYSICAL}
    assert pool.sent == []


def test_delete_survives_an_unexpected_error(pool, monkeypatch):
    def explode(*args, **kwargs):
        raise KeyError("bug")

    monkeypatch.setattr(vi, "remove", explode)
    assert delete() == {"PhysicalResourceId": PHYSICAL}


def test_create_without_credentials_says_so(pool):
    with pytest.raises(vi.ResourceError, match="no AWS credentials"):
        run(event("Create"), credentials=None)


def test_audit_logging_that_never_succeeds_is_not_fatal(pool):
    pool.on("PATCH", "/_plugins/_security/api/audit", (503, {}))
    assert run(event("Create"))["Data"]["Index"] == "created"
    assert pool.calls().count("PATCH /_plugins/_security/api/audit") == 6


def test_main_on_delete_survives_a_broken_credential_chain(monkeypatch, pool):
    from shared import aws_clients

    def broken():
        raise RuntimeError("credential_process exited 1")

    monkeypatch.setattr(aws_clients, "credentials", broken)
    monkeypatch.delenv("AWS_REGION", raising=False)

    class Context:
        function_name, memory_limit_in_mb, aws_request_id = "vector-index", 256, "req-1"
        invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:vector-index"

        def get_remaining_time_in_millis(self):
            return 100_000

    assert vi.main(event("Delete", PhysicalResourceId=PHYSICAL), Context()) == {"PhysicalResourceId": PHYSICAL}
    with pytest.raises(vi.ResourceError, match="no AWS credentials"):
        vi.main(event("Create"), Context())


# --- what a failure tells the operator (CloudFormation shows the message as the resource's reason) ---

LONG = "x" * 400


@pytest.mark.parametrize("overrides, message", [
    ({"VectorField": None}, "property VectorField is required, got None"),
    ({"TextField": "1text"}, "property TextField 1text must be a name of letters, digits, '_' or '-' starting with a letter, at most 64 characters"),
    ({"TextField": "embedding"}, "properties VectorField, TextField and MetadataField must differ, got 'embedding', 'embedding', 'metadata'"),
    ({"Dimensions": [1024]}, "property Dimensions must be an integer, got [1024]"),
    ({"Dimensions": "ten"}, "property Dimensions must be an integer, got ten"),
    ({"Dimensions": "16001"}, "property Dimensions must be between 1 and 16000, got 16001"),
    ({"RetainIndex": "maybe"}, "property RetainIndex must be true or false, got maybe"),
    ({"QueryRoleArn": "arn:aws:iam::1:role/x"}, "property QueryRoleArn must be an IAM role ARN, got arn:aws:iam::1:role/x"),
    ({"Endpoint": None}, "property Endpoint must be the domain's https:// URL, got None"),
    ({"Endpoint": f"https://{HOST}:99999"}, f"property Endpoint is not a URL (Port out of range 0-65535): https://{HOST}:99999"),
    ({"Endpoint": f"{ENDPOINT}/x"}, f"property Endpoint must be https://<domain endpoint> with no path, got {ENDPOINT}/x"),
    ({"Endpoint": f"http://{HOST}"}, f"property Endpoint must use https (plain http only to a loopback host), got http://{HOST}"),
    ({"IndexName": None}, "property IndexName is required (a lowercase index name), got None"),
    ({"IndexName": "Docs"}, "property IndexName Docs is not a valid index name: lowercase letters, digits, '-', '_' and '.', not "
                            "starting with '-', '_', '+' or '.', at most 255 bytes (Bedrock's pattern)"),
    ({"FilterableFields": "category"}, "property FilterableFields must be a list of field names, got category (a string is not split into fields)"),
    ({"FilterableFields": ["1x"]}, "property FilterableFields: 1x is not a field name (letters, digits, '_' or '-', starting with a letter)"),
    ({"FilterableFields": ["metadata"]}, "property FilterableFields: 'metadata' is the vector, text or metadata field; a filterable field must "
                                         "have a name of its own"),
    ({"FilterableFields": ["a", "a"]}, "property FilterableFields lists 'a' twice"),
    ({"HybridWeights": [0.5]}, "property HybridWeights must be two numbers [lexical, vector] that sum to 1, got [0.5]"),
    ({"IndexName": LONG}, f"property IndexName {'x' * 300}... is not a valid index name"),
])
def test_each_property_failure_names_the_property_the_value_and_the_rule(overrides, message):
    with pytest.raises(vi.ResourceError) as error:
        vi.IndexSpec.from_properties(props(**overrides))
    assert str(error.value).startswith(message)


def test_filterable_fields_stop_at_100():
    fields = [f"f{i}" for i in range(100)]
    assert len(vi.IndexSpec.from_properties(props(FilterableFields=fields)).filterable_fields) == 100
    with pytest.raises(vi.ResourceError, match=r"^property FilterableFields has 101 fields; at most 100$"):
        vi.IndexSpec.from_properties(props(FilterableFields=[*fields, "f100"]))


@pytest.mark.parametrize("weights, ok", [([1.0005, 0.0], False), ([0.0, 1.0005], False), ([0.3, 0.7009], True), ([0.3, 0.711], False)])
def test_each_hybrid_weight_is_at_most_1_and_their_sum_1_within_a_thousandth(weights, ok):
    if ok:
        assert vi.IndexSpec.from_properties(props(HybridWeights=weights)).hybrid_weights == tuple(weights)
    else:
        with pytest.raises(vi.ResourceError, match="HybridWeights"):
            vi.IndexSpec.from_properties(props(HybridWeights=weights))


@pytest.mark.parametrize("endpoint, expected", [
    ("http://[::1]:9200", "http://[::1]:9200"), ("http://127.0.0.2:9200", "http://127.0.0.2:9200"), (f"https://user@{HOST}", None),
    (f"https://:pw@{HOST}", None), ("http://[::2]:9200", None),
])
def test_loopback_and_credentials_in_endpoints(endpoint, expected):
    if expected:
        assert vi.parse_endpoint(endpoint) == expected
    else:
        with pytest.raises(vi.ResourceError, match="Endpoint"):
            vi.parse_endpoint(endpoint)


@pytest.mark.parametrize("evt, owner", [
    ({"StackId": STACK, "LogicalResourceId": "Index"}, f"{STACK}#Index"),
    ({"StackId": STACK}, None), ({"LogicalResourceId": "Index"}, None), ({"StackId": "", "LogicalResourceId": "Index"}, None),
    ({"StackId": STACK, "LogicalResourceId": ""}, None), ({"StackId": 7, "LogicalResourceId": "Index"}, None),
])
def test_an_owner_needs_both_the_stack_and_the_logical_id(evt, owner):
    assert vi.owner_of(evt) == owner


def test_unreadable_events_say_what_they_got(pool):
    with pytest.raises(vi.ResourceError, match=r"^the event must be an object, got \['Create'\]$"):
        run(["Create"])
    with pytest.raises(vi.ResourceError, match=r"^unsupported RequestType Rename$"):
        run(event("Rename"))
    with pytest.raises(vi.ResourceError, match=r"^ResourceProperties must be an object, got \[1\]$"):
        run(event("Create", [1]))
    with pytest.raises(vi.ResourceError, match=r"^no AWS credentials to sign the domain requests with \(the function's role gave none\)$"):
        run(event("Create"), credentials=None)
    assert pool.sent == []


def vector(**fields) -> dict:
    return {"type": "knn_vector", "dimension": 1024, **fields}


SPEC = vi.IndexSpec.from_properties(props())


@pytest.mark.parametrize("settings, fields, problems", [
    ({"knn": "true"}, {}, []),
    ({"knn": True}, {}, []),  # rendered as JSON types
    ({}, {}, ["setting index.knn is not true"]),
    ({"knn": "false"}, {}, ["setting index.knn is not true"]),
    ({"knn": "true"}, {"embedding": None}, ["vector field 'embedding' is missing"]),
    ({"knn": "true"}, {"embedding": vector(method={"engine": "faiss", "name": "hnsw"})}, []),  # space type l2 by default
    ({"knn": "true"}, {"embedding": vector(space_type="cosinesimil", method={"engine": "faiss", "name": "hnsw"})},
     ["vector field 'embedding' has space_type='cosinesimil', wanted 'l2'"]),
    ({"knn": "true"}, {"embedding": vector(space_type="cosinesimil", method={"engine": "faiss", "name": "hnsw", "space_type": "l2"})}, []),
    ({"knn": "true"}, {"embedding": vector(dimension=512, method={"engine": "faiss", "name": "hnsw"})},
     ["vector field 'embedding' has dimension='512', wanted '1024'"]),
    ({"knn": "true"}, {"text": {"type": "text", "index": False}},
     ["text field 'text' is {'type': 'text', 'index': False}, wanted an indexed 'text' field"]),
    ({"knn": "true"}, {"text": {"type": "text", "index": True}}, []),
    ({"knn": "true"}, {"text": {"type": "keyword"}}, ["text field 'text' is {'type': 'keyword'}, wanted an indexed 'text' field"]),
    ({"knn": "true"}, {"metadata": None}, ["metadata field 'metadata' is None, wanted type 'text'"]),
    ({"knn": "true"}, {"category": {"type": "text"}},
     ["filterable field 'category' has type 'text', wanted 'keyword' (documents with this attribute were indexed before it was declared "
      "filterable, so OpenSearch mapped it itself; a field's type cannot change in place: remove it from search.filterable_fields, or "
      "use a new search.index_name)"]),
])
def test_mapping_problems_name_the_field_and_what_it_has(settings, fields, problems):
    properties = {"embedding": vector(method={"engine": "faiss", "name": "hnsw", "space_type": "l2"}), "text": {"type": "text"},
                  "metadata": {"type": "text", "index": False}, "category": {"type": "keyword"}, "collection": {"type": "keyword"}}
    properties.update(fields)
    found, to_add = vi.mapping_problems({"settings": {"index": settings}, "mappings": {"properties": {
        name: value for name, value in properties.items() if value is not None}}}, SPEC)
    assert (found, to_add) == (problems, [])


def test_settings_rendered_as_json_types_need_no_change():
    index = {"settings": {"index": {"number_of_replicas": 0, **vi.SLOW_LOG_THRESHOLDS}}}
    assert vi.settings_changes(index, SPEC) == {}
    assert vi.settings_changes({"settings": {"index": {"number_of_replicas": "1"}}}, SPEC) == {"number_of_replicas": 0, **vi.SLOW_LOG_THRESHOLDS}


def test_a_mapping_that_cannot_change_says_what_to_do(pool):
    pool.on("GET", "/rag-documents", (200, existing(fields={"text": {"type": "keyword"}, "embedding": vector()})))
    with pytest.raises(vi.ResourceError) as error:
        run(event("Create"))
    assert str(error.value) == (
        "index rag-documents exists with a mapping this stack cannot change in place: vector field 'embedding' has engine=None, "
        "wanted 'faiss'; vector field 'embedding' has method=None, wanted 'hnsw'; text field 'text' is {'type': 'keyword'}, wanted "
        "an indexed 'text' field. k-NN mappings and field types are immutable: set search.index_name to a new name (e.g. "
        "rag-documents-v2) and deploy to create a new index (the knowledge base is replaced; its documents are synced again), or "
        "delete the index yourself if its data is disposable.")


@pytest.mark.parametrize("step, answer, message", [
    (("PUT", "/rag-documents/_mapping"), (400, {"error": "illegal_argument"}),
     "updating the mapping of rag-documents (adding filterable fields ['year']) failed: HTTP 400: {'error': 'illegal_argument'}. If a "
     "field was mapped meanwhile with another type, set search.index_name to a new name and deploy, or remove the field from "
     "search.filterable_fields."),
    (("PUT", "/rag-documents/_settings"), (400, {"error": "no"}),
     "updating settings ['number_of_replicas'] of rag-documents failed: HTTP 400: {'error': 'no'}"),
    (("PUT", "/_search/pipeline/rag-hybrid"), (400, {"error": "no"}), "PUT search pipeline rag-hybrid failed: HTTP 400: {'error': 'no'}"),
    (("PUT", "/_plugins/_security/api/rolesmapping/reader-rag-documents"), (400, "bad"),
     "PUT rolesmapping/reader-rag-documents failed: HTTP 400: bad"),
])
def test_a_refused_change_names_the_call_and_the_answer(pool, step, answer, message):
    pool.on("GET", "/rag-documents", (200, existing(replicas="1")))
    pool.on(*step, answer)
    with pytest.raises(vi.ResourceError) as error:
        run(event("Create", props(FilterableFields=["category", "collection", "year"])))
    assert str(error.value) == message


@pytest.mark.parametrize("body", [{"message": "no"}, {"error": "resource_already_exists_exception"}, "resource_already_exists_exception"])
def test_only_a_structured_already_exists_error_means_a_concurrent_create(pool, body):
    pool.on("PUT", "/rag-documents", (400, body))
    with pytest.raises(vi.ResourceError, match=r"^creating index rag-documents failed: HTTP 400: "):
        run(event("Create"))
    assert pool.calls().count("GET /rag-documents") == 1


def test_the_bodies_sent_are_exactly_the_documented_ones(pool):
    run(event("Create"))
    assert pool.bodies("PUT", "/_plugins/_security/api/roles/reader-rag-documents") == [{
        "cluster_permissions": ["indices:data/read/msearch"],
        "index_permissions": [{"index_patterns": ["rag-documents"],
                               "allowed_actions": ["indices:data/read/search", "indices:data/read/msearch", "indices:data/read/get"]}]}]
    assert pool.bodies("PUT", "/_plugins/_security/api/roles/bedrock-kb-rag-documents") == [{
        "cluster_permissions": ["indices:data/read/msearch", "indices:data/write/bulk*", "indices:data/read/mget*"],
        "index_permissions": [{"index_patterns": ["rag-documents"], "allowed_actions": [
            "indices:admin/get", "indices:data/read/msearch", "indices:data/read/search", "indices:data/write/index",
            "indices:data/write/update", "indices:data/write/delete", "indices:data/write/delete/byquery", "indices:data/write/bulk*",
            "indices:admin/mapping/put", "indices:data/read/mget*"]}]}]
    assert pool.bodies("PUT", "/_search/pipeline/rag-hybrid") == [{
        "description": "Hybrid BM25 + k-NN scoring for rag-documents: min-max normalization, weighted mean [lexical, vector]",
        "phase_results_processors": [{"normalization-processor": {
            "normalization": {"technique": "min_max"},
            "combination": {"technique": "arithmetic_mean", "parameters": {"weights": [0.3, 0.7]}}}}]}]


@pytest.fixture
def upper_bound_delays(monkeypatch):
    """random.uniform at its upper bound: each pause is the backoff's ceiling."""
    monkeypatch.setattr(vi.random, "uniform", lambda low, high: high)


def test_pauses_double_from_the_base_delay_up_to_the_cap(pool, upper_bound_delays):
    pool.on("GET", "/rag-documents", *[(503, {})] * 5, (404, {}))
    fake = FakeTime()
    run(event("Create"), fake=fake, max_attempts=10)
    assert fake.sleeps == [1.0, 2.0, 4.0, 8.0, 8.0]


def test_a_retry_is_made_when_its_pause_ends_exactly_at_the_deadline(pool, upper_bound_delays):
    pool.on("GET", "/rag-documents", (503, {"message": "busy"}))
    fake = FakeTime()
    with pytest.raises(vi.DomainUnavailable) as error:
        run(event("Create"), fake=fake, remaining_s=3.0)  # pauses 1 and 2 fit exactly, 4 does not
    assert fake.sleeps == [1.0, 2.0] and pool.calls().count("GET /rag-documents") == 3
    assert str(error.value) == "GET /rag-documents failed after 3 attempts; last: HTTP 503: {'message': 'busy'}."


def test_a_lasting_403_says_how_to_authorize_the_function(pool):
    pool.on("PUT", "/_plugins/_security/api/roles/bedrock-kb-rag-documents", (403, {"message": "no permissions"}))
    with pytest.raises(vi.DomainUnavailable) as error:
        run(event("Create"))
    assert str(error.value) == (
        "PUT /_plugins/_security/api/roles/bedrock-kb-rag-documents failed after 6 attempts; last: HTTP 403: {'message': 'no permissions'}. "
        "A lasting 403 means the domain does not authorize this function's role: it must be the fine-grained access control master user "
        "and be named in the domain access policy.")


def test_a_delete_that_fails_on_one_path_still_deletes_the_others(pool):
    pool.on("GET", "/rag-documents", (200, existing()))
    pool.on("DELETE", ROLE_PATHS[0], (503, {}))
    delete(max_attempts=2)
    assert pool.calls() == ["GET /rag-documents", *[f"DELETE {ROLE_PATHS[0]}"] * 2, *[f"DELETE {p}" for p in ROLE_PATHS[1:]],
                            "DELETE /rag-documents"]


def test_a_delete_waits_out_a_busy_domain_within_its_budget(pool):
    pool.on("GET", "/rag-documents", (503, {}), (503, {}), (200, existing()))
    fake = FakeTime()
    delete(fake=fake, remaining_s=900.0)
    assert pool.calls()[-1] == "DELETE /rag-documents" and 0 < fake.now <= vi.DELETE_BUDGET_S


def test_an_audit_logging_failure_is_logged_for_the_operator(pool, caplog):
    pool.on("PATCH", "/_plugins/_security/api/audit", (400, {"status": "BAD_REQUEST"}))
    run(event("Create"))
    (warning,) = [r for r in caplog.records if r.getMessage() == "audit logging not enabled"]
    assert warning.status == 400 and warning.body == "{'status': 'BAD_REQUEST'}"
    caplog.clear()
    pool.script.clear()
    run(event("Create"))
    assert not [r for r in caplog.records if r.getMessage() == "audit logging not enabled"]


def test_a_long_value_in_a_message_is_cut_to_300_characters():
    assert vi._short("y" * 300) == "y" * 300 and vi._short("y" * 301) == "y" * 300 + "..."
    assert vi._short(["z"]) == "['z']"


@pytest.mark.parametrize("overrides, message", [
    ({"VectorField": "  "}, "property VectorField is required, got   "),
    ({"IndexName": ""}, "property IndexName is required (a lowercase index name), got "),
    ({"Endpoint": 5}, "property Endpoint must be the domain's https:// URL, got 5"),
])
def test_a_missing_property_shows_what_it_was(overrides, message):
    with pytest.raises(vi.ResourceError) as error:
        vi.IndexSpec.from_properties(props(**overrides))
    assert str(error.value) == message


def test_a_metadata_field_of_another_type_is_shown():
    found, _ = vi.mapping_problems({"settings": {"index": {"knn": "true"}}, "mappings": {"properties": {
        "embedding": vector(method={"engine": "faiss", "name": "hnsw"}), "text": {"type": "text"}, "metadata": {"type": "keyword"},
        "category": {"type": "keyword"}, "collection": {"type": "keyword"}}}}, SPEC)
    assert found == ["metadata field 'metadata' is {'type': 'keyword'}, wanted type 'text'"]


def test_an_owner_record_that_is_not_text_is_no_owner(pool):
    index = existing(owner=None)
    index["rag-documents"]["mappings"]["_meta"] = {"managed_by": 5}
    pool.on("GET", "/rag-documents", (200, index))
    delete()
    assert pool.calls()[-1] == "DELETE /rag-documents"
