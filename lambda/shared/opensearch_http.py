"""SigV4-signed HTTP calls to an Amazon OpenSearch Service domain, with no third-party packages.

botocore (in every Lambda Python runtime) signs the request; urllib3 (vendored by botocore's
dependencies, also in the runtime) sends it. Callers get the status and the decoded JSON body
and decide what a status means: the vector-index custom resource retries 403s while IAM and
fine-grained access control propagate, the query handler maps them to HTTP errors.

Transport failures (no HTTP answer at all) raise one of two classes, both `OpenSearchTransportError`:

- `OpenSearchTimeout`: the domain did not answer in time (connect or read timeout); callers map
  it to 504.
- `OpenSearchConnectionError`: every other way of getting no answer: connection refused or reset,
  DNS failure, a TLS error (`urllib3.exceptions.SSLError`), a peer that speaks something other
  than HTTP or closes mid-answer; callers map it to 502.

Callers match them by class name (`query`'s error mapping does), so nothing else imports this module's
exceptions. The messages name the method and path, never the signature or credentials.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

_POOL = urllib3.PoolManager(retries=False)
# A connection that cannot be made in this long will not be made: the rest of the budget is for reading.
MAX_CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class OpenSearchResponse:
    status: int
    body: Any  # decoded JSON, or the raw text when the body is not JSON

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class OpenSearchTransportError(Exception):
    """No HTTP answer from the domain; the message names the call (method and path)."""


class OpenSearchTimeout(OpenSearchTransportError, TimeoutError):
    """The domain did not answer within the caller's timeout (connect or read)."""


class OpenSearchConnectionError(OpenSearchTransportError):
    """Any other transport failure: refused, reset, DNS, TLS, a non-HTTP peer, a cut-off answer."""


def transport_error(error: BaseException, *, method: str, path: str, timeout_s: float) -> OpenSearchTransportError:
    """The OpenSearchTransportError for a urllib3 (or socket) failure of `method path`."""
    where = f"{method} {path}"
    # Checked first: urllib3 1.26 made NewConnectionError (refused, DNS) a ConnectTimeoutError.
    if isinstance(error, urllib3.exceptions.NewConnectionError):
        return OpenSearchConnectionError(f"{where}: could not connect ({_reason(error)})")
    if isinstance(error, (urllib3.exceptions.TimeoutError, TimeoutError)):
        return OpenSearchTimeout(f"{where}: no answer within {timeout_s:g}s")
    if isinstance(error, urllib3.exceptions.SSLError):
        return OpenSearchConnectionError(f"{where}: TLS error ({_reason(error)})")
    if isinstance(error, urllib3.exceptions.ProtocolError):
        return OpenSearchConnectionError(f"{where}: connection lost before an answer ({_reason(error)})")
    return OpenSearchConnectionError(f"{where}: transport error ({_reason(error)})")


def _reason(error: BaseException, limit: int = 200) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def signed_request(
    *,
    endpoint: str,
    method: str,
    path: str,
    region: str,
    credentials,
    timeout_s: float,
    body: Any = None,
) -> OpenSearchResponse:
    """Sends one signed request. `endpoint` is `https://host` (a bare host gets https://).

    Returns whatever HTTP answer arrives (any status); raises `OpenSearchTimeout` or
    `OpenSearchConnectionError` when none does.
    """
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
            timeout=urllib3.Timeout(connect=min(timeout_s, MAX_CONNECT_TIMEOUT_S), read=timeout_s),
        )
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise transport_error(error, method=method, path=path, timeout_s=timeout_s) from error
    text = raw.data.decode(errors="replace")
    try:
        decoded = json.loads(text) if text else None
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        decoded = text
    return OpenSearchResponse(status=raw.status, body=decoded)
