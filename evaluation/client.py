"""HTTP client for a query API (README, "Asking questions"): `GET <base>health`, `POST <base>query`.

- One keep-alive connection per worker thread (no new TCP/TLS handshake per question).
- 429 and 503 are retried after the response's `Retry-After` (seconds or an HTTP date), or an
  exponential backoff without it; the wait is shared by every worker, so a throttled target sees
  the whole evaluation slow down, not just one thread. Connection failures are retried too.
- A deployed stage's API needs SigV4 (service `execute-api`): pass a `signer`; local mode needs none.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

RETRY_STATUSES = (429, 503)
Signer = Callable[[str, str, bytes | None, dict[str, str]], dict[str, str]]


class TargetError(Exception):
    """An expected problem with the target (unreachable, refused, not a query API): one line for people."""


@dataclass
class Reply:
    status: int  # 0 when no HTTP answer came (connection failure)
    body: dict[str, Any] | None
    elapsed_ms: float  # the last attempt's round trip
    attempts: int = 1
    waited_ms: float = 0.0  # time spent waiting before retries
    error: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == 200 and isinstance(self.body, dict)

    def message(self) -> str:
        if self.error:
            return self.error
        if isinstance(self.body, dict) and isinstance(self.body.get("message"), str):
            return f"HTTP {self.status}: {self.body['message']}"
        return f"HTTP {self.status}"


def api_base(url: str) -> str:
    """The API's base URL ending in `/v1/`: a stage's ApiUrl already does; `http://host:port` gets it."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise TargetError(f"--url {url!r}: expected http(s)://host[:port][/path], e.g. http://127.0.0.1:8787")
    path = parts.path.rstrip("/")
    if not path.endswith("/v1"):
        path += "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path + "/", "", ""))


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Target:
    def __init__(self, base_url: str, *, signer: Signer | None = None, timeout_s: float = 60.0, max_attempts: int = 6,
                 max_wait_s: float = 120.0, sleep: Callable[[float], None] | None = None):
        self.base = api_base(base_url)
        self.signer = signer
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.max_wait_s = max_wait_s
        self._sleep = sleep or time.sleep
        parts = urlsplit(self.base)
        self._scheme, self._host, self._port = parts.scheme, parts.hostname or "", parts.port
        self._path = parts.path
        self._local = threading.local()
        self._pause_lock = threading.Lock()
        self._pause_until = 0.0

    # --- transport -----------------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            connection = cls(self._host, self._port, timeout=self.timeout_s)
            self._local.connection = connection
        return connection

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def _send_once(self, method: str, route: str, data: bytes | None) -> tuple[int, dict[str, str], bytes]:
        url = self.base + route
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.signer is not None:
            try:
                headers = self.signer(method, url, data, headers)
            except Exception as error:  # expired SSO token, refresh failure, ...: stop with one line
                raise TargetError(f"cannot sign the request with your AWS credentials ({error}): refresh them "
                                  "(e.g. aws sso login) and run again; answers so far are cached") from None
        # A kept-alive connection the server closed meanwhile fails on first use: reconnect once.
        for reuse in (True, False):
            connection = self._connection()
            try:
                connection.request(method, self._path + route, body=data, headers=headers)
                response = connection.getresponse()
                raw = response.read()
                return response.status, {k.lower(): v for k, v in response.getheaders()}, raw
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._drop_connection()
                if not reuse:
                    raise
            except Exception:
                self._drop_connection()
                raise
        raise AssertionError("unreachable")

    def _wait_for_pause(self) -> float:
        with self._pause_lock:
            wait = self._pause_until - time.monotonic()
        if wait > 0:
            self._sleep(wait)
            return wait
        return 0.0

    def _pause(self, seconds: float) -> None:
        with self._pause_lock:
            self._pause_until = max(self._pause_until, time.monotonic() + seconds)

    def request(self, method: str, route: str, body: dict | None = None, *, attempts: int | None = None) -> Reply:
        max_attempts = attempts or self.max_attempts
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            waited += self._wait_for_pause()
            started = time.perf_counter()
            try:
                status, headers, raw = self._send_once(method, route, data)
            except (socket.timeout, TimeoutError):
                return Reply(0, None, _ms(started), attempt, waited * 1000, f"no answer within {self.timeout_s:g} s")
            except (OSError, http.client.HTTPException) as error:
                if attempt >= max_attempts:
                    return Reply(0, None, _ms(started), attempt, waited * 1000, f"connection failed: {error}")
                delay = min(2.0 ** (attempt - 1), self.max_wait_s)
                self._sleep(delay)
                waited += delay
                continue
            elapsed = _ms(started)
            if status in RETRY_STATUSES and attempt < max_attempts:
                delay = retry_after_seconds(headers.get("retry-after"))
                delay = min(delay if delay is not None else 2.0 ** (attempt - 1), self.max_wait_s)
                self._pause(delay)
                continue
            try:
                parsed = json.loads(raw.decode("utf-8")) if raw else None
            except (UnicodeDecodeError, ValueError):
                return Reply(status, None, elapsed, attempt, waited * 1000, f"HTTP {status}: the answer is not JSON", headers)
            return Reply(status, parsed if isinstance(parsed, dict) else None, elapsed, attempt, waited * 1000, None, headers)

    # --- API -----------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        reply = self.request("GET", "health", attempts=2)
        if reply.status == 0:
            raise TargetError(f"cannot reach {self.base}health ({reply.error}): is the server running and the URL right?")
        if reply.status == 403:
            raise TargetError(f"{self.base}health refused the request (403): the API needs SigV4-signed calls from a "
                              "principal allowed execute-api:Invoke (use --stage, or credentials with that permission)")
        if not reply.ok:
            raise TargetError(f"{self.base}health answered {reply.message()}: is this the query API (GET /v1/health)?")
        if reply.body.get("status") != "ok":
            raise TargetError(f"{self.base}health says status={reply.body.get('status')!r}, not 'ok'")
        return reply.body

    def query(self, body: dict[str, Any]) -> Reply:
        return self.request("POST", "query", body)


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0


def sigv4_signer(credentials, region: str) -> Signer:
    """Signs each request for API Gateway (`execute-api`) with refreshed credentials."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    def sign(method: str, url: str, data: bytes | None, headers: dict[str, str]) -> dict[str, str]:
        request = AWSRequest(method=method, url=url, data=data, headers=dict(headers))
        SigV4Auth(credentials.get_frozen_credentials(), "execute-api", region).add_auth(request)
        return dict(request.headers.items())

    return sign
