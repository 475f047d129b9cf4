"""SigV4-signed HTTP calls to an Amazon OpenSearch Service domain, with no third-party packages.

botocore (in every Lambda Python runtime) signs the request; urllib3 (vendored by botocore's
dependencies, also in the runtime) sends it. Callers get the status and the decoded JSON body
and decide what a status means: the vector-index custom resource retries 403s while IAM and
fine-grained access control propagate, the query handler maps them to HTTP errors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

_POOL = urllib3.PoolManager(retries=False)


@dataclass(frozen=True)
class OpenSearchResponse:
    status: int
    body: Any  # decoded JSON, or the raw text when the body is not JSON

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class OpenSearchTimeout(Exception):
    """The domain did not answer within the caller's timeout."""


def signed_request(
    *,
    endpoint: str,
    method: str,
    path: str,
    region: str,
    credentials,
    body: Any = None,
    timeout_s: float = 10.0,
) -> OpenSearchResponse:
    """Sends one signed request. `endpoint` is `https://host` (a bare host gets https://)."""
    base = endpoint if endpoint.startswith(("https://", "http://")) else f"https://{endpoint}"
    url = base.rstrip("/") + "/" + path.lstrip("/")
    data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
    request = AWSRequest(method=method, url=url, data=data, headers={"Content-Type": "application/json"})
    SigV4Auth(credentials, "es", region).add_auth(request)
    try:
        raw = _POOL.request(
            method,
            url,
            body=data,
            headers=dict(request.headers.items()),
            timeout=urllib3.Timeout(connect=min(timeout_s, 5.0), read=timeout_s),
        )
    except (urllib3.exceptions.TimeoutError, urllib3.exceptions.MaxRetryError) as error:
        raise OpenSearchTimeout(f"{method} {path}: no answer within {timeout_s}s") from error
    except urllib3.exceptions.ProtocolError as error:
        # The connection dropped before a response (reset, closed mid-answer): no answer either.
        raise OpenSearchTimeout(f"{method} {path}: connection lost before an answer ({error})") from error
    text = raw.data.decode("utf-8", errors="replace")
    try:
        decoded = json.loads(text) if text else None
    except ValueError:
        decoded = text
    return OpenSearchResponse(status=raw.status, body=decoded)
