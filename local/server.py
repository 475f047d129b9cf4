"""The HTTP front of local mode: each request becomes an API Gateway proxy event for the query
Lambda's own handler (`query.handler.main`), configured with local settings and the local backend.

Validation, error mapping, status codes, headers and bodies are therefore the deployed ones.
Routes: `POST /v1/query` and `GET /v1/health` (the deployed stage's paths), and the same without
the `/v1` prefix (what `scripts/ask.py --url http://127.0.0.1:PORT` calls). No request signing:
the server listens on the loopback interface only.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, TextIO
from urllib.parse import parse_qsl, urlsplit

from query import handler
from shared import observability

from .app import LocalMode

HOST = "127.0.0.1"
STAGE = "v1"
STAGE_PREFIX = f"/{STAGE}"
MAX_REQUEST_BYTES = 1024 * 1024  # larger bodies are refused before reading (the handler's own limit is 64 KiB)


def to_event(method: str, target: str, headers: dict[str, str], body: bytes, request_id: str, source_ip: str) -> dict[str, Any]:
    """An API Gateway REST proxy event for one HTTP request."""
    url = urlsplit(target)
    path = url.path.rstrip("/") or "/"
    route = path[len(STAGE_PREFIX) :] if path.startswith(STAGE_PREFIX + "/") else path
    try:
        text, encoded = body.decode("utf-8"), False
    except UnicodeDecodeError:  # API Gateway passes a non-text body base64-encoded
        text, encoded = base64.b64encode(body).decode("ascii"), True
    return {
        "httpMethod": method,
        "resource": route,  # the API's resources are its paths: /query, /health
        "path": path,
        "headers": headers,
        "queryStringParameters": dict(parse_qsl(url.query)) or None,
        "body": text if body else None,
        "isBase64Encoded": encoded,
        "requestContext": {"requestId": request_id, "stage": STAGE, "identity": {"sourceIp": source_ip}},
    }


def _error(status: int, message: str, request_id: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json", "X-Request-Id": request_id},
        "body": json.dumps({"message": message, "request_id": request_id}),
    }


class _Server(ThreadingHTTPServer):
    """The listening socket, with what its requests share: the access log and the clock that times them."""

    def __init__(self, port: int, log: TextIO | None, clock: Callable[[], float]):
        super().__init__((HOST, port), RequestHandler)
        self.access_log, self.clock = log, clock


class RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "rag-local"
    protocol_version = "HTTP/1.1"
    # Keep-alive clients (the evaluation harness) would otherwise wait ~40 ms per answer:
    # headers and body leave in separate writes, and Nagle holds the second until the ACK.
    disable_nagle_algorithm = True

    def _serve(self) -> None:
        started = self.server.clock()
        request_id = str(uuid.uuid4())
        length = self.headers.get("Content-Length")
        if "Transfer-Encoding" in self.headers:  # a body that is not delimited by Content-Length, "gzip, chunked" too
            response = _error(411, "send the body with a Content-Length", request_id)
            self.close_connection = True
        elif length is not None and (not length.isdigit() or int(length) > MAX_REQUEST_BYTES):
            response = _error(413, f"body: larger than {MAX_REQUEST_BYTES} bytes", request_id)
            self.close_connection = True
        else:
            body = self.rfile.read(int(length)) if length else b""
            event = to_event(self.command, self.path, dict(self.headers.items()), body, request_id, self.client_address[0])
            response = handler.main(event, None)
        self._send(response)
        if self.server.access_log is not None:
            elapsed = (self.server.clock() - started) * 1000.0
            print(f'{self.client_address[0]} "{self.command} {self.path}" {response["statusCode"]} {elapsed:.1f} ms',
                  file=self.server.access_log, flush=True)

    def _send(self, response: dict[str, Any]) -> None:
        payload = (response.get("body") or "").encode("utf-8")  # the query handler answers JSON text only
        self.send_response(response["statusCode"])
        for name, value in (response.get("headers") or {}).items():
            self.send_header(name, str(value))
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args) -> None:  # the access line above replaces http.server's
        pass


class DiscardedMetrics:
    """Stands in for the handler's Powertools Metrics: CloudWatch EMF lines mean nothing on a laptop.
    (Powertools' own POWERTOOLS_METRICS_DISABLED stops the printing but keeps every value in memory
    until 100 accumulate, then prints them anyway.)"""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


class LocalServer:
    """The HTTP server on 127.0.0.1:`port` (0 = any free port), serving one LocalMode."""

    def __init__(self, mode: LocalMode, port: int, log: TextIO | None = sys.stderr, clock: Callable[[], float] = time.perf_counter):
        self.mode = mode
        handler.configure(settings=mode.config.settings(), backend=mode.backend)
        observability._metrics = DiscardedMetrics()  # the accessor's cached instance (see DiscardedMetrics)
        self.httpd = _Server(port, log, clock)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.05)  # how soon close() (or Ctrl-C) stops it

    def start(self) -> LocalServer:
        """Serves on a background thread (tests, benchmarks)."""
        self._thread = threading.Thread(target=self.serve_forever, name="local-server", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:  # shutdown() waits for serve_forever, so only when it runs
            self.httpd.shutdown()
            self._thread.join()  # at once: shutdown() returned after serve_forever did
        self.httpd.server_close()
        handler.configure()  # back to the deployed defaults
        observability._metrics = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

