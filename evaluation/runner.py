"""The configuration matrix, the answer cache and the concurrent run with a progress bar.

Matrix: mode `prompt` x generator, mode `rag` x retriever (`kb`, `opensearch`) x generator, mode `kb`
(Bedrock's RetrieveAndGenerate: generator `bedrock`). Generators come from the target's
`GET /v1/health` (its `generators` field): unavailable ones are skipped with the target's reason.
Modes and retrievers the health's optional `modes` / `retrievers` lists leave out are skipped; a
configuration the target turns down with a 400 naming `mode`, `retriever` or `generator` (e.g.
mode `kb` on a target that does not say) is skipped as a whole after its first answer.

Cache: one JSON Lines file per target and configuration; an entry's key is a hash of the request
and of what answers it (the target's URL, its prompt version, the generator's model and version),
so a re-run pays only for what is missing, and a new model or prompt asks again.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TextIO

from .client import Reply, Target, TargetError
from .evalset import Question

MODES = ("prompt", "rag", "kb")
RETRIEVERS = ("kb", "opensearch")
REQUEST_FIELDS_THAT_SKIP = ("mode", "retriever", "generator")


@dataclass(frozen=True)
class Configuration:
    mode: str
    retriever: str | None
    generator: str | None  # None: the target's default (a target whose health lists no generators)

    @property
    def key(self) -> str:
        return f"{self.mode}/{self.retriever or '-'}/{self.generator or 'default'}"

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", self.key.replace("/", "-")).strip("-")

    def body(self, question: Question, *, top_k: int, collection: str | None, send_generator: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"question": question.question, "mode": self.mode}
        if self.mode == "rag":
            body["retriever"] = self.retriever
        if self.mode != "prompt":
            body["top_k"] = top_k
            filters = dict(question.filters)
            if collection:
                filters["collection"] = collection
            if filters:
                body["filters"] = filters
        if send_generator and self.generator:
            body["generator"] = self.generator
        return body


@dataclass(frozen=True)
class Skipped:
    key: str
    reason: str


def plan(health: dict[str, Any], *, modes: Sequence[str] = MODES, retrievers: Sequence[str] = RETRIEVERS,
         generators: Sequence[str] | None = None) -> tuple[list[Configuration], list[Skipped]]:
    listed = health.get("generators")
    skipped: list[Skipped] = []
    if isinstance(listed, dict) and listed:
        names = list(listed)
        for wanted in generators or ():
            if wanted not in listed:
                skipped.append(Skipped(f"*/*/{wanted}", f"the target has no generator {wanted!r} (it has: {', '.join(names)})"))
        usable = []
        for name in names:
            if generators and name not in generators:
                continue
            status = listed[name] if isinstance(listed[name], dict) else {}
            if status.get("available"):
                usable.append(name)
            else:
                skipped.append(Skipped(f"*/*/{name}", status.get("reason") or f"generator {name!r} is not available"))
    else:
        usable = [None]  # a target that does not list its generators: use its default
    offered_modes, offered_retrievers = health.get("modes"), health.get("retrievers")  # optional extra keys
    if isinstance(offered_modes, list):
        skipped += [Skipped(f"{m}/*/*", f"the target does not offer mode {m!r} (it offers: {', '.join(map(str, offered_modes))})")
                    for m in modes if m not in offered_modes]
        modes = [m for m in modes if m in offered_modes]
    if isinstance(offered_retrievers, list):
        skipped += [Skipped(f"rag/{r}/*", f"the target does not offer retriever {r!r}") for r in retrievers if r not in offered_retrievers]
        retrievers = [r for r in retrievers if r in offered_retrievers]
    configs: list[Configuration] = []
    for mode in modes:
        if mode == "prompt":
            configs += [Configuration("prompt", None, g) for g in usable]
        elif mode == "rag":
            configs += [Configuration("rag", r, g) for r in retrievers for g in usable]
        elif mode == "kb":
            if None in usable:
                configs.append(Configuration("kb", "kb", None))
            elif "bedrock" in usable:
                configs.append(Configuration("kb", "kb", "bedrock"))
            elif not any(s.key == "*/*/bedrock" for s in skipped):
                skipped.append(Skipped("kb/kb/bedrock", "mode kb needs the generator 'bedrock', which the target does not list"))
    return configs, skipped


def identity(health: dict[str, Any], base: str, config: Configuration) -> dict[str, Any]:
    """What answers a configuration: a change in any of it makes cached answers stale."""
    generators = health.get("generators") if isinstance(health.get("generators"), dict) else {}
    generator = generators.get(config.generator or "", {}) if config.generator else {}
    return {
        "target": base,
        "prompt_version": health.get("prompt_version"),
        "model": generator.get("model") if isinstance(generator, dict) else None,
        "version": generator.get("version") if isinstance(generator, dict) else None,
        "default": None if config.generator else {k: health.get(k) for k in ("default_generator", "generator", "model")},
    }


class AnswerCache:
    """Appends every answer as soon as it arrives (a crash loses nothing already paid for)."""

    def __init__(self, folder: Path | None):
        self.folder = folder
        self._lock = threading.Lock()
        self._loaded: dict[str, dict[str, dict[str, Any]]] = {}

    @staticmethod
    def key(body: dict[str, Any], ident: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps({"body": body, "identity": ident}, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def _path(self, target_key: str, config: Configuration) -> Path:
        assert self.folder is not None
        return self.folder / target_key / f"{config.slug}.jsonl"

    def _entries(self, target_key: str, config: Configuration) -> dict[str, dict[str, Any]]:
        name = f"{target_key}/{config.slug}"
        if name not in self._loaded:
            entries: dict[str, dict[str, Any]] = {}
            path = self._path(target_key, config)
            if path.is_file():
                for line in path.read_text(encoding="utf-8").splitlines():
                    try:
                        entry = json.loads(line)
                        entries[entry["key"]] = entry
                    except (ValueError, KeyError, TypeError):
                        continue  # a line cut by a crash: ask that question again
            self._loaded[name] = entries
        return self._loaded[name]

    def get(self, target_key: str, config: Configuration, key: str) -> dict[str, Any] | None:
        if self.folder is None:
            return None
        with self._lock:
            return self._entries(target_key, config).get(key)

    def put(self, target_key: str, config: Configuration, key: str, entry: dict[str, Any]) -> None:
        if self.folder is None:
            return
        entry = {"key": key, **entry}
        with self._lock:
            path = self._path(target_key, config)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._entries(target_key, config)[key] = entry
            with path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(entry, ensure_ascii=False) + "\n")


class Progress:
    """A one-line progress bar on a terminal; a line every 10% otherwise (CI logs)."""

    def __init__(self, total: int, *, stream: TextIO = sys.stderr, label: str = "questions", enabled: bool = True):
        self.total, self.stream, self.label, self.enabled = total, stream, label, enabled
        self.done = self.cached = self.failed = 0
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._last_draw = 0.0
        self._last_decile = -1
        self._tty = enabled and hasattr(stream, "isatty") and stream.isatty()

    def advance(self, *, cached: bool = False, failed: bool = False) -> None:
        with self._lock:
            self.done += 1
            self.cached += cached
            self.failed += failed
            if not self.enabled:
                return
            now = time.monotonic()
            if self._tty and (now - self._last_draw >= 0.1 or self.done == self.total):
                self._last_draw = now
                self.stream.write("\r" + self.line(now) + " ")
                self.stream.flush()
            elif not self._tty and self.done * 10 // max(1, self.total) > self._last_decile:
                self._last_decile = self.done * 10 // max(1, self.total)
                self.stream.write(self.line(now) + "\n")
                self.stream.flush()

    def line(self, now: float) -> str:
        width = 30
        filled = width * self.done // max(1, self.total)
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        return (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {self.label}"
                f" ({self.cached} cached, {self.failed} failed) eta {int(eta) // 60}m{int(eta) % 60:02d}s")

    def close(self) -> None:
        if self._tty and self.enabled:
            self.stream.write("\n")
            self.stream.flush()


@dataclass
class RunStats:
    calls: int = 0
    cached: int = 0
    call_seconds: float = 0.0  # sum of the round trips of the calls made (not cached)


def execute(questions: Sequence[Question], configs: Sequence[Configuration], *, target: Target, health: dict[str, Any],
            cache: AnswerCache, top_k: int, collection: str | None, concurrency: int,
            progress: Progress | None = None, target_key: str | None = None) -> tuple[list[dict[str, Any]], list[Skipped], RunStats]:
    """Asks every question in every configuration (interleaved, so a refused configuration shows at once)."""
    send_generator = isinstance(health.get("generators"), dict) and bool(health.get("generators"))
    target_key = target_key or hashlib.sha256(target.base.encode()).hexdigest()[:12]
    identities = {config.key: identity(health, target.base, config) for config in configs}
    refused: dict[str, str] = {}
    fatal: dict[str, str] = {}
    stats = RunStats()
    lock = threading.Lock()
    tasks = [(config, q) for q in questions for config in configs]

    def work(config: Configuration, q: Question) -> dict[str, Any] | None:
        if config.key in refused or fatal:
            if progress:
                progress.advance()
            return None
        body = config.body(q, top_k=top_k, collection=collection, send_generator=send_generator)
        key = AnswerCache.key(body, identities[config.key])
        hit = cache.get(target_key, config, key)
        if hit is not None:
            row = _row(config, q, body, hit, cached=True)
            with lock:
                stats.cached += 1
        else:
            reply = target.query(body)
            with lock:
                stats.calls += 1
                stats.call_seconds += reply.elapsed_ms / 1000.0
            field = reply.body.get("field") if reply.status == 400 and isinstance(reply.body, dict) else None
            if field in REQUEST_FIELDS_THAT_SKIP:
                refused.setdefault(config.key, reply.message())
                if progress:
                    progress.advance(failed=True)
                return None
            if field == "filters.collection":
                fatal.setdefault("collection", f"the target cannot filter on 'collection' ({reply.message()}): add it to "
                                 "search.filterable_fields of the stage, or run without --collection")
            entry = _entry(reply)
            if reply.ok:
                cache.put(target_key, config, key, entry)
            row = _row(config, q, body, entry, cached=False)
        if progress:
            progress.advance(cached=row["cached"], failed=bool(row["error"]))
        return row

    pool = ThreadPoolExecutor(max_workers=max(1, concurrency))
    try:
        futures = [pool.submit(work, config, q) for config, q in tasks]
        rows = [row for row in (future.result() for future in futures) if row is not None]
    except BaseException:  # Ctrl-C or a run-level error: drop what has not started (answers so far are cached)
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    if fatal:
        raise TargetError(next(iter(fatal.values())))
    rows = [row for row in rows if row["config"] not in refused]
    skipped = [Skipped(key, f"the target refused it: {message}") for key, message in refused.items()]
    return rows, skipped, stats


def _entry(reply: Reply) -> dict[str, Any]:
    return {
        "status": reply.status,
        "response": reply.body if reply.ok else None,
        "error": None if reply.ok else reply.message(),
        "elapsed_ms": round(reply.elapsed_ms, 1),
        "attempts": reply.attempts,
        "waited_ms": round(reply.waited_ms, 1),
        "request_id": (reply.body or {}).get("request_id") or reply.headers.get("x-request-id"),
        "asked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _row(config: Configuration, q: Question, body: dict[str, Any], entry: dict[str, Any], *, cached: bool) -> dict[str, Any]:
    return {
        "config": config.key,
        "mode": config.mode,
        "retriever": config.retriever,
        "generator": config.generator,
        "question_id": q.id,
        "question": q.question,
        "lang": q.lang,
        "tags": list(q.tags),
        "references": list(q.answers),
        "gold_sources": list(q.sources),
        "request": body,
        **{k: entry.get(k) for k in ("status", "response", "error", "elapsed_ms", "attempts", "waited_ms", "request_id", "asked_at")},
        "cached": cached,
    }

