"""A local JSON API for client tests (ask.py, the evaluation harness): it records every request and
answers each with the next (status, body, headers) of its script, the last one repeating."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = tuple[int, Any, dict]  # body: bytes as they are, anything else as JSON


class JsonApiStub:
    def __init__(self, *script: Answer) -> None:
        self.script: list[Answer] = list(script) or [(200, {}, {})]
        self.requests: list[dict] = []  # method, path, headers (names lower-cased), body (bytes or None)
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()  # headers and body leave in two writes: no Nagle + delayed ACK wait (40 ms) between them
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args):
                pass

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                stub.requests.append({"method": self.command, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                      "body": self.rfile.read(length) if length else None})
                status, body, headers = stub.script.pop(0) if len(stub.script) > 1 else stub.script[0]
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True  # a kept-alive connection must not hold up server_close()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()

    @property
    def answer(self) -> Answer:
        return self.script[0]

    @answer.setter
    def answer(self, value: Answer) -> None:
        self.script = [value]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "JsonApiStub":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
