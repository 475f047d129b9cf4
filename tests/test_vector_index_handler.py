"""The vector-index custom resource against a local HTTP server (127.0.0.1) playing the domain.

Requests are really signed and sent; the fake domain checks each SigV4 signature, records the
request and answers from a script. Backoff delays are injected (a fake clock), so no test sleeps
for more than a fraction of a second.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.fake_clock import FakeTime
from vector_index import handler as vi

CREDS = Credentials("AKIDTEST", "secret-test-key", "session-token-test")
REGION = "eu-west-1"
KB_ROLE = "arn:aws:iam::111122223333:role/RagDev-Search-KnowledgeBaseRole"
QUERY_ROLE = "arn:aws:iam::111122223333:role/RagDev-Search-QueryRole"


class FakeDomain:
    """Answers `(method, path)` from a script: a list of responses per route, the last one repeats."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.routes: dict[tuple[str, str], list[Any]] = {}
        self.bad_signatures = 0
        self.lock = threading.Lock()

    def on(self, method: str, path: str, *responses: Any) -> None:
        self.routes[(method, path)] = list(responses)

    def answer(self, method: str, path: str) -> Any:
        with self.lock:
            script = self.routes.get((method, path))
            if not script:
                return (200, {"acknowledged": True}) if method in ("PUT", "DELETE", "PATCH") else (404, {"error": {"type": "not_found"}})
            return script.pop(0) if len(script) > 1 else script[0]

    def bodies(self, method: str, path: str) -> list[Any]:
        return [r["body"] for r in self.requests if r["method"] == method and r["path"] == path]

    def paths(self) -> list[str]:
        return [f"{r['method']} {r['path']}" for r in self.requests]


def _check_signature(method: str, host: str, path: str, headers: dict[str, str], body: bytes) -> bool:
    """Recomputes the SigV4 signature of the received request with the shared test credentials."""
    request = AWSRequest(method=method, url=f"http://{host}{path}", data=body or None,
                         headers={"Content-Type": headers.get("Content-Type", "")})
    request.context["timestamp"] = headers["X-Amz-Date"]
    signer = SigV4Auth(CREDS, "es", REGION)
    request.headers["X-Amz-Date"] = headers["X-Amz-Date"]
    request.headers["X-Amz-Security-Token"] = CREDS.token
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    return headers.get("Authorization", "").endswith(f"Signature={expected}")


@pytest.fixture(scope="module")
def server():
    state: dict[str, FakeDomain] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output quiet
            pass

        def _serve(self):
            domain = state["domain"]
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k: v for k, v in self.headers.items()}
            signed = _check_signature(self.command, self.headers["Host"], self.path, headers, raw)
            if not signed:
                domain.bad_signatures += 1
            domain.requests.append({
                "method": self.command, "path": self.path, "headers": headers,
                "body": json.loads(raw) if raw else None,
            })
            # As the service: a signature that does not match the request is a 403 (retried, then fatal).
            answer = domain.answer(self.command, self.path) if signed else (403, {"message": "The request signature we calculated does not match"})
            if callable(answer):
                answer = answer()
            if answer is None:  # drop the connection without answering
                self.close_connection = True
                return
            status, body = answer
            data = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

        do_GET = do_PUT = do_DELETE = do_POST = do_PATCH = _serve

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()

    def fresh() -> FakeDomain:
        state["domain"] = FakeDomain()
        return state["domain"]

    fresh.endpoint = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield fresh
    httpd.shutdown()
    httpd.server_close()


def backoff(fake: FakeTime, **overrides) -> vi.Backoff:
    settings = dict(base_delay_s=1.0, max_delay_s=8.0, max_attempts=10, request_timeout_s=2.0, sleep=fake.sleep, clock=fake.clock)
    settings.update(overrides)
    return vi.Backoff(**settings)


def props(endpoint: str, **overrides) -> dict[str, Any]:
    # As CloudFormation delivers them: every scalar is a string.
    values = {
        "ServiceToken": "arn:aws:lambda:eu-west-1:111122223333:function:provider",
        "Endpoint": endpoint,
        "IndexName": "rag-documents",
        "VectorField": "embedding",
        "TextField": "text",
        "MetadataField": "metadata",
        "Dimensions": "1024",
        "FilterableFields": ["category"],
        "NumberOfReplicas": "0",
        "PipelineName": "rag-hybrid",
        "HybridWeights": ["0.3", "0.7"],
        "KnowledgeBaseRoleArn": KB_ROLE,
        "QueryRoleArn": QUERY_ROLE,
        "RetainIndex": "false",
        "AuditLogging": "true",
    }
    values.update(overrides)
    return values


def run(event: dict[str, Any], fake: Optional[FakeTime] = None, remaining_s: float = 600.0, **backoff_overrides) -> dict[str, Any]:
    fake = fake or FakeTime()
    return vi.handle(event, credentials=CREDS, region=REGION, backoff=backoff(fake, **backoff_overrides), remaining_s=remaining_s)


def existing_index(spec_props: dict[str, Any], **vector_overrides) -> dict[str, Any]:
    """A GET /<index> answer the way OpenSearch renders a mapping (knn as a string, extra fields)."""
    vector = {"type": "knn_vector", "dimension": 1024,
              "method": {"engine": "faiss", "space_type": "l2", "name": "hnsw", "parameters": {"ef_construction": 512, "m": 16}}}
    vector.update(vector_overrides)
    return {spec_props["IndexName"]: {
        "aliases": {},
        "mappings": {"properties": {
            "embedding": vector,
            "text": {"type": "text"},
            "metadata": {"type": "text", "index": False},
            "category": {"type": "keyword"},
            "x-amz-bedrock-kb-source-uri": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}},
        }},
        # Nested, as GET /<index> renders settings without ?flat_settings.
        "settings": {"index": {"knn": "true", "number_of_shards": "1", "number_of_replicas": "0",
                               "search": {"slowlog": {"threshold": {"query": {"warn": "2s", "info": "500ms"}}}},
                               "indexing": {"slowlog": {"threshold": {"index": {"warn": "10s", "info": "2s"}}}}}},
    }}


def test_create_builds_index_roles_and_pipeline_with_signed_requests(server):
    domain = server()
    result = run({"RequestType": "Create", "ResourceProperties": props(server.endpoint)})

    assert result["PhysicalResourceId"] == f"rag-documents@{server.endpoint.split('://')[1]}"
    assert result["Data"] == {"IndexName": "rag-documents", "PipelineName": "rag-hybrid", "Index": "created"}
    assert domain.paths() == [
        "PUT /_plugins/_security/api/roles/bedrock-kb-rag-documents",
        "PUT /_plugins/_security/api/rolesmapping/bedrock-kb-rag-documents",
        "PUT /_plugins/_security/api/roles/reader-rag-documents",
        "PUT /_plugins/_security/api/rolesmapping/reader-rag-documents",
        "GET /rag-documents",
        "PUT /rag-documents",
        "PUT /_search/pipeline/rag-hybrid",
        "PATCH /_plugins/_security/api/audit",
    ]
    assert domain.bad_signatures == 0
    first = domain.requests[0]["headers"]
    assert first["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDTEST/")
    assert f"/{REGION}/es/aws4_request" in first["Authorization"]
    assert first["X-Amz-Security-Token"] == "session-token-test"

    [index] = domain.bodies("PUT", "/rag-documents")
    assert index["settings"]["index"] == {"knn": True, "number_of_replicas": 0, **vi.SLOW_LOG_THRESHOLDS}
    assert index["settings"]["index"]["search.slowlog.threshold.query.warn"] == "2s"
    fields = index["mappings"]["properties"]
    assert fields["embedding"] == {"type": "knn_vector", "dimension": 1024, "method": {
        "name": "hnsw", "engine": "faiss", "space_type": "l2", "parameters": {"m": 16, "ef_construction": 512}}}
    assert fields["text"] == {"type": "text", "index": True}
    assert fields["metadata"] == {"type": "text", "index": False}
    assert fields["category"] == {"type": "keyword"}

    [kb_role] = domain.bodies("PUT", "/_plugins/_security/api/roles/bedrock-kb-rag-documents")
    assert set(kb_role["cluster_permissions"]) == {"indices:data/read/msearch", "indices:data/write/bulk*", "indices:data/read/mget*"}
    assert kb_role["index_permissions"][0]["index_patterns"] == ["rag-documents"]
    assert {"indices:admin/get", "indices:data/write/index", "indices:data/write/delete/byquery",
            "indices:admin/mapping/put"} <= set(kb_role["index_permissions"][0]["allowed_actions"])
    assert domain.bodies("PUT", "/_plugins/_security/api/rolesmapping/bedrock-kb-rag-documents") == [{"backend_roles": [KB_ROLE]}]

    [reader] = domain.bodies("PUT", "/_plugins/_security/api/roles/reader-rag-documents")
    actions = reader["index_permissions"][0]["allowed_actions"]
    assert not [a for a in actions if "write" in a or "admin" in a], actions
    assert domain.bodies("PUT", "/_plugins/_security/api/rolesmapping/reader-rag-documents") == [{"backend_roles": [QUERY_ROLE]}]

    [pipeline] = domain.bodies("PUT", "/_search/pipeline/rag-hybrid")
    processor = pipeline["phase_results_processors"][0]["normalization-processor"]
    assert processor["normalization"] == {"technique": "min_max"}
    assert processor["combination"] == {"technique": "arithmetic_mean", "parameters": {"weights": [0.3, 0.7]}}


def test_the_fake_domain_rejects_a_wrong_signature(server):
    # Guards the signature check itself: a request signed with another secret must not pass.
    from shared.opensearch_http import signed_request

    domain = server()
    signed_request(endpoint=server.endpoint, method="GET", path="/rag-documents", region=REGION,
                   credentials=Credentials("AKIDTEST", "another-secret", "session-token-test"), timeout_s=5.0)
    assert domain.bad_signatures == 1


def test_audit_logging_patch_and_its_failure_is_not_fatal(server):
    domain = server()
    domain.on("PATCH", "/_plugins/_security/api/audit", (400, {"status": "BAD_REQUEST"}))
    assert run({"RequestType": "Create", "ResourceProperties": props(server.endpoint)})["Data"]["Index"] == "created"
    [patch] = domain.bodies("PATCH", "/_plugins/_security/api/audit")
    assert {"op": "add", "path": "/config/enabled", "value": True} in patch

    domain = server()
    run({"RequestType": "Create", "ResourceProperties": props(server.endpoint, AuditLogging="false")})
    assert not domain.bodies("PATCH", "/_plugins/_security/api/audit")


def test_existing_identical_index_is_success_without_recreating(server):
    domain = server()
    p = props(server.endpoint)
    domain.on("GET", "/rag-documents", (200, existing_index(p)))
    result = run({"RequestType": "Create", "ResourceProperties": p})
    assert result["Data"]["Index"] == "existing"
    assert "PUT /rag-documents" not in domain.paths()
    assert domain.bodies("PUT", "/_search/pipeline/rag-hybrid")  # the pipeline is still put (idempotent)


def test_403_while_fgac_propagates_is_retried_with_backoff(server):
    domain = server()
    forbidden = (403, {"Message": "User: arn:aws:sts::111122223333:assumed-role/x is not authorized"})
    domain.on("PUT", "/_plugins/_security/api/roles/bedrock-kb-rag-documents", forbidden, forbidden, forbidden, (200, {"status": "OK"}))
    fake = FakeTime()
    result = run({"RequestType": "Create", "ResourceProperties": props(server.endpoint)}, fake)
    assert result["Data"]["Index"] == "created"
    assert domain.paths().count("PUT /_plugins/_security/api/roles/bedrock-kb-rag-documents") == 4
    assert len(fake.sleeps) == 3
    assert all(0.5 <= pause <= 8.0 for pause in fake.sleeps)


def test_lasting_403_fails_within_bounds_and_says_why(server):
    domain = server()
    domain.on("PUT", "/_plugins/_security/api/roles/bedrock-kb-rag-documents", (403, {"Message": "no"}))
    fake = FakeTime()
    with pytest.raises(vi.DomainUnavailable) as error:
        run({"RequestType": "Create", "ResourceProperties": props(server.endpoint)}, fake, max_attempts=5)
    assert "after 5 attempts" in str(error.value)
    assert "master user" in str(error.value)
    assert len(domain.requests) == 5


def test_deadline_bounds_the_retries_before_max_attempts(server):
    domain = server()
    domain.on("PUT", "/_plugins/_security/api/roles/bedrock-kb-rag-documents", (503, {"error": "busy"}))
    fake = FakeTime()
    with pytest.raises(vi.DomainUnavailable):
        run({"RequestType": "Create", "ResourceProperties": props(server.endpoint)}, fake, remaining_s=20.0, max_attempts=100)
    assert fake.now <= 20.0
    assert 2 <= len(domain.requests) < 100


def test_incompatible_mapping_fails_with_what_to_do(server):
    domain = server()
    p = props(server.endpoint, Dimensions="512")
    domain.on("GET", "/rag-documents", (200, existing_index(p)))
    with pytest.raises(vi.ResourceError) as error:
        run({"RequestType": "Update", "ResourceProperties": p, "PhysicalResourceId": "x"})
    message = str(error.value)
    assert "dimension='1024', wanted '512'" in message
    assert "search.index_name" in message and "rag-documents-v2" in message
    assert "PUT /rag-documents" not in domain.paths()


def test_nmslib_index_is_reported_as_incompatible(server):
    domain = server()
    p = props(server.endpoint)
    domain.on("GET", "/rag-documents", (200, existing_index(p, method={"engine": "nmslib", "space_type": "l2", "name": "hnsw"})))
    with pytest.raises(vi.ResourceError, match="engine='nmslib', wanted 'faiss'"):
        run({"RequestType": "Create", "ResourceProperties": p})


def test_400_from_index_creation_is_not_retried_and_is_reported(server):
    domain = server()
    domain.on("PUT", "/rag-documents", (400, {"error": {"type": "mapper_parsing_exception", "reason": "unknown parameter [engine]"}}))
    with pytest.raises(vi.ResourceError, match="mapper_parsing_exception"):
        run({"RequestType": "Create", "ResourceProperties": props(server.endpoint)})
    assert domain.paths().count("PUT /rag-documents") == 1


def test_index_created_concurrently_is_checked_like_an_existing_one(server):
    domain = server()
    p = props(server.endpoint)
    domain.on("GET", "/rag-documents", (404, {"error": {"type": "index_not_found_exception"}}), (200, existing_index(p)))
    domain.on("PUT", "/rag-documents", (400, {"error": {"type": "resource_already_exists_exception"}}))
    assert run({"RequestType": "Create", "ResourceProperties": p})["Data"]["Index"] == "existing"


def test_update_to_a_new_index_name_creates_it_under_a_new_physical_id(server):
    domain = server()
    old = props(server.endpoint)
    new = props(server.endpoint, IndexName="rag-documents-v2")
    result = run({"RequestType": "Update", "ResourceProperties": new, "OldResourceProperties": old,
                  "PhysicalResourceId": f"rag-documents@{server.endpoint.split('://')[1]}"})
    assert result["PhysicalResourceId"].startswith("rag-documents-v2@")
    assert "PUT /rag-documents-v2" in domain.paths()
    assert "PUT /_plugins/_security/api/rolesmapping/bedrock-kb-rag-documents-v2" in domain.paths()
    assert not [p for p in domain.paths() if p.startswith("DELETE")]  # the old one goes with CloudFormation's Delete


def test_update_adds_missing_filterable_fields(server):
    domain = server()
    p = props(server.endpoint, FilterableFields=["category", "team"])
    domain.on("GET", "/rag-documents", (200, existing_index(p)))
    result = run({"RequestType": "Update", "ResourceProperties": p, "PhysicalResourceId": "x"})
    assert result["Data"]["Index"] == "extended"
    assert domain.bodies("PUT", "/rag-documents/_mapping") == [{"properties": {"team": {"type": "keyword"}}}]


def test_request_timeouts_are_retried(server):
    domain = server()
    def slow():
        time.sleep(0.3)
        return (200, {"acknowledged": True})
    domain.on("PUT", "/_search/pipeline/rag-hybrid", slow, (200, {"acknowledged": True}))
    fake = FakeTime()
    result = run({"RequestType": "Create", "ResourceProperties": props(server.endpoint)}, fake, request_timeout_s=0.05)
    assert result["Data"]["Index"] == "created"
    assert domain.paths().count("PUT /_search/pipeline/rag-hybrid") == 2
    assert len(fake.sleeps) == 1


def test_dropped_connections_are_retried(server):
    domain = server()
    domain.on("GET", "/rag-documents", lambda: None, (404, {"error": {"type": "index_not_found_exception"}}))
    fake = FakeTime()
    assert run({"RequestType": "Create", "ResourceProperties": props(server.endpoint)}, fake)["Data"]["Index"] == "created"
    assert domain.paths().count("GET /rag-documents") == 2


@pytest.mark.parametrize("retain", ["true", "True", True, None, "", "yes", 0, ["false"]])
def test_delete_retains_everything_unless_told_false(server, retain):
    """Retained (prod) keeps the index AND its FGAC roles: a redeploy over the retained domain can use it.
    Missing or unreadable RetainIndex retains: data is never deleted by default."""
    domain = server()
    p = props(server.endpoint, RetainIndex=retain)
    if retain is None:
        del p["RetainIndex"]
    physical = f"rag-documents@{server.endpoint.split('://')[1]}"
    result = run({"RequestType": "Delete", "ResourceProperties": p, "PhysicalResourceId": physical})
    assert result == {"PhysicalResourceId": physical}
    assert domain.requests == []


def test_delete_removes_the_index_when_not_retained_and_tolerates_404(server):
    domain = server()
    domain.on("DELETE", "/_plugins/_security/api/roles/reader-rag-documents", (404, {"status": "NOT_FOUND"}))
    domain.on("GET", "/rag-documents", (200, existing_index(props(server.endpoint))))
    physical = f"rag-documents@{server.endpoint.split('://')[1]}"
    run({"RequestType": "Delete", "ResourceProperties": props(server.endpoint), "PhysicalResourceId": physical})
    assert domain.paths() == [
        "GET /rag-documents",
        "DELETE /_plugins/_security/api/rolesmapping/bedrock-kb-rag-documents",
        "DELETE /_plugins/_security/api/roles/bedrock-kb-rag-documents",
        "DELETE /_plugins/_security/api/rolesmapping/reader-rag-documents",
        "DELETE /_plugins/_security/api/roles/reader-rag-documents",
        "DELETE /rag-documents",
    ]


def test_delete_after_a_failed_create_touches_nothing(server):
    domain = server()
    run({"RequestType": "Delete", "ResourceProperties": props(server.endpoint), "PhysicalResourceId": "a-framework-request-id"})
    assert domain.requests == []


def test_delete_never_fails_when_the_domain_is_gone():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    fake = FakeTime()
    result = run({"RequestType": "Delete", "ResourceProperties": props(endpoint), "PhysicalResourceId": f"rag-documents@127.0.0.1:{port}"},
                 fake, max_attempts=2)
    assert result["PhysicalResourceId"] == f"rag-documents@127.0.0.1:{port}"


@pytest.mark.parametrize("bad, message", [
    ({"Dimensions": "many"}, "Dimensions must be an integer"),
    ({"IndexName": ""}, "IndexName is required"),
    ({"RetainIndex": "maybe"}, "RetainIndex must be true or false"),
    ({"HybridWeights": ["x"]}, "HybridWeights"),
])
def test_bad_properties_fail_with_the_property_name(bad, message):
    with pytest.raises(vi.ResourceError, match=message):
        run({"RequestType": "Create", "ResourceProperties": props("https://example.invalid", **bad)})


def test_bare_host_endpoint_gets_https_scheme():
    spec = vi.IndexSpec.from_properties(props("search-x.eu-west-1.es.amazonaws.com"))
    assert spec.endpoint == "https://search-x.eu-west-1.es.amazonaws.com"
    assert spec.dimensions == 1024 and spec.retain_index is False and spec.hybrid_weights == (0.3, 0.7)


def test_entry_signs_with_the_function_credentials_and_keeps_time_for_the_provider(monkeypatch):
    """main() takes credentials from shared.aws_clients and leaves 30 s for the provider framework."""
    from shared import aws_clients

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setattr(aws_clients, "_session", None)
    seen = {}
    monkeypatch.setattr(vi, "handle", lambda event, **kwargs: seen.update(kwargs) or {"PhysicalResourceId": "x"})

    class Context:
        function_name, memory_limit_in_mb, aws_request_id = "vector-index", 256, "req-1"
        invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:vector-index"

        def get_remaining_time_in_millis(self):
            return 600_000

    vi.main({"RequestType": "Create"}, Context())
    assert seen["credentials"].access_key == "AKIDEXAMPLE"
    assert seen["region"] == "eu-west-1"
    assert seen["remaining_s"] == 570.0
