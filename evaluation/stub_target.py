"""A stand-in query API (README, "Asking questions") on 127.0.0.1, for the harness's tests and its overhead benchmark.

Not a model: it retrieves by shared terms over a corpus folder and answers with the best
sentence of the best document, or with a scripted answer per question (tests that compute the
metrics by hand). It can delay every answer, throttle the first requests with 429 + Retry-After,
refuse mode `kb` (like local mode), and count what it was asked.

    python -m evaluation.stub_target --corpus model_artifacts/sample_documents --delay-ms 200
    # prints "port NNNNN", serves until stopped
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .evalset import load_corpus
from .stats import terms

ABSTAIN = "I don't know based on the provided sources."


@dataclass
class StubConfig:
    corpus: Path | None = None
    delay_ms: float = 0.0
    throttle_first: int = 0  # this many first queries get 429 Retry-After: 0
    refuse_kb: bool = True
    filterable: tuple[str, ...] | None = None  # None: accept any filter field
    scripted: dict[str, dict[str, Any]] = field(default_factory=dict)  # question -> {"answer", "citations"}
    generators: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "extractive": {"available": True, "model": "local:extractive", "version": None, "reason": None},
        "llm": {"available": False, "model": None, "version": None, "reason": "optional package not installed: pip install ..."},
    })
    source_prefix: str = "s3://stub-documents/documents/eval/eval-shipped/"


class StubState:
    def __init__(self, config: StubConfig):
        self.config = config
        self.lock = threading.Lock()
        self.queries = 0
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.documents: dict[str, tuple[str, set[str]]] = {}
        if config.corpus:
            for doc_id, document in load_corpus(config.corpus).items():
                text = document.text()
                self.documents[doc_id] = (text, terms(text))

    def retrieve(self, question: str, top_k: int) -> list[tuple[str, float]]:
        wanted = terms(question)
        scored = [(len(wanted & doc_terms) / (len(wanted) or 1), doc_id) for doc_id, (_, doc_terms) in self.documents.items()]
        scored.sort(key=lambda pair: (-pair[0], pair[1]))
        return [(doc_id, round(score, 4)) for score, doc_id in scored[:top_k] if score > 0]

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        question, mode = body.get("question", ""), body.get("mode", "rag")
        if mode == "kb" and self.config.refuse_kb:
            return 400, {"message": "mode 'kb' needs a deployed stage (Bedrock knowledge base)", "field": "mode", "request_id": "stub"}
        for key in body.get("filters") or {}:
            if self.config.filterable is not None and key not in self.config.filterable:
                return 400, {"message": f"filters.{key}: not a filterable field; filterable: {', '.join(self.config.filterable)}",
                             "field": f"filters.{key}", "request_id": "stub"}
        generator = body.get("generator") or "extractive"
        if generator not in self.config.generators:
            return 400, {"message": f"generator: must be one of {', '.join(self.config.generators)}", "field": "generator", "request_id": "stub"}
        if not self.config.generators[generator]["available"]:
            return 503, {"message": self.config.generators[generator]["reason"], "request_id": "stub"}
        scripted = self.config.scripted.get(question)
        if scripted is not None:
            return 200, self._body(mode, generator, scripted["answer"], scripted.get("citations", []))
        if mode == "prompt":
            return 200, self._body(mode, generator, ABSTAIN, [])
        hits = self.retrieve(question, int(body.get("top_k") or 5))
        if not hits:
            return 200, self._body(mode, generator, ABSTAIN, [])
        doc_id, score = hits[0]
        text = self.documents[doc_id][0]
        wanted = terms(question)
        sentences = [s.strip() for s in re.split(r"(?<=[.!?。])\s*|\n+", text) if s.strip()]
        best = max(sentences, key=lambda s: len(terms(s) & wanted))
        citations = [{"n": n, "source": self.config.source_prefix + d, "score": s, "excerpt": self.documents[d][0][:300]}
                     for n, (d, s) in enumerate(hits, start=1)]
        return 200, self._body(mode, generator, f"{best} [1]", citations[:1])

    def _body(self, mode: str, generator: str, answer: str, citations: list[dict[str, Any]]) -> dict[str, Any]:
        delay = self.config.delay_ms
        return {"answer": answer, "citations": citations, "mode": mode, "generator": generator,
                "model": self.config.generators[generator]["model"], "model_version": None,
                "timings_ms": {"retrieve": 0.0 if mode == "prompt" else round(delay / 4, 1), "generate": round(delay * 3 / 4, 1),
                               "total": round(delay, 1)},
                "usage": {"input_tokens": 10 * len(answer.split()) + 100, "output_tokens": len(answer.split())}}


def make_handler(state: StubState):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Headers and body leave in two writes: without TCP_NODELAY, Nagle + delayed ACK add 40 ms.
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, *args) -> None:  # quiet
            pass

        def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/") != "/v1/health":
                return self._send(404, {"message": "no such route", "request_id": "stub"})
            self._send(200, {"status": "ok", "prompt_version": "stub-1", "default_generator": "extractive",
                             "default_retriever": "opensearch", "generators": state.config.generators})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path.rstrip("/") != "/v1/query":
                return self._send(404, {"message": "no such route", "request_id": "stub"})
            try:
                body = json.loads(raw)
            except ValueError:
                return self._send(400, {"message": "body: is not valid JSON", "field": "body", "request_id": "stub"})
            with state.lock:
                state.queries += 1
                number = state.queries
                state.bodies.append(body)
                state.headers.append(dict(self.headers.items()))
            if number <= state.config.throttle_first:
                return self._send(429, {"message": "throttled", "request_id": "stub"}, {"Retry-After": "0"})
            if state.config.delay_ms:
                time.sleep(state.config.delay_ms / 1000.0)
            status, answer = state.answer(body)
            self._send(status, answer)

    return Handler


class StubTarget:
    """`with StubTarget(config) as stub: stub.url` serves on a free port of 127.0.0.1 in a thread."""

    def __init__(self, config: StubConfig):
        self.state = StubState(config)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(self.state))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "StubTarget":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description="a stand-in query API on 127.0.0.1 (tests, benchmarks)")
    parser.add_argument("--corpus", type=Path)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    state = StubState(StubConfig(corpus=args.corpus, delay_ms=args.delay_ms))
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(state))
    print(f"port {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
