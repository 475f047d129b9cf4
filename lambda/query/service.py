"""The three modes: rag (retrieve -> prompt -> generate), kb (managed RAG), prompt (baseline).

`answer()` works on a `Backend`: named retrievers, named generators (in preference order) and an
optional managed RAG call. The deployed Lambda builds one from AWS clients
(`query.aws_backend.build`), local mode from local parts; tests give it stubbed clients. Nothing
here imports boto3 or knows which target it serves.

A generator reports its `GeneratorStatus` (is it available, which model and version, why not,
its context window); a request names a generator or gets the configured default (`auto` = the
first available one, in the backend's order). A known generator that is not available is a 503
whose message is the status's `reason` (what is missing and how to get it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Optional, Protocol, Sequence

from shared.api import ApiError
from shared.endpoint_codec import Generation

from . import budget, citations, prompts
from .request import QueryRequest
from .settings import AUTO, Settings, SettingsError

# Retry-After of a 503 for a generator that is not available, unless its status says otherwise.
UNAVAILABLE_RETRY_AFTER_S = 30
KB_MODE_NEEDS_DEPLOYED_STAGE = "mode 'kb' needs a deployed stage (Bedrock knowledge base)"

Retriever = Callable[..., "list[prompts.Passage]"]  # retriever(question=str, top_k=int, filters=dict)


@dataclass(frozen=True)
class GeneratorStatus:
    """What a generator can do right now. `reason` (when not available) says what is missing and how to get it."""

    name: str
    available: bool
    model: Optional[str]  # e.g. "sagemaker:ragdev-generator/finetuned", "amazon.nova-lite-v1:0", "local:extractive"
    version: Optional[str]  # e.g. "7" (model registry version), or None
    reason: Optional[str]
    context_tokens: Optional[int]  # the model's context window (prompt + answer), tokens; None = unbounded
    retry_after_s: Optional[int] = None  # for a 503 while unavailable (e.g. the endpoint is being created)


class Generator(Protocol):
    def status(self) -> GeneratorStatus: ...

    def generate(
        self, prompt: prompts.Prompt, *, question: str, passages: Sequence[prompts.Passage], max_tokens: int, temperature: float
    ) -> Generation: ...


@dataclass(frozen=True)
class ManagedAnswer:
    """Mode kb's result: the answer with [n] markers, its citations, and the model that wrote it."""

    text: str
    citations: list[dict[str, Any]]
    model: str
    input_tokens: Optional[int] = None
    output_tokens: Optional[int] = None


@dataclass
class Backend:
    """What answers requests on one target.

    `managed_rag(question=, top_k=, filters=, max_tokens=, temperature=) -> ManagedAnswer` serves
    mode kb with generator `bedrock`; None = mode kb answers 400.
    """

    retrievers: Mapping[str, Retriever]
    generators: Mapping[str, Generator]  # preference order of `auto`
    managed_rag: Optional[Callable[..., ManagedAnswer]] = None


class GeneratorUnavailable(ApiError):
    """A known generator that cannot answer now: 503 with its reason and a Retry-After."""

    def __init__(self, reason: str, retry_after_s: Optional[int] = None):
        retry = retry_after_s or UNAVAILABLE_RETRY_AFTER_S
        super().__init__(503, reason, field="generator", headers={"Retry-After": str(retry)})

    @classmethod
    def of(cls, status: GeneratorStatus) -> "GeneratorUnavailable":
        return cls(status.reason or f"generator {status.name!r} is not available", status.retry_after_s)


class Chosen(NamedTuple):
    name: str
    generator: Generator
    status: GeneratorStatus


def choose_generator(requested: Optional[str], settings: Settings, backend: Backend) -> Chosen:
    """The generator a request gets: the named one, else the configured default (`auto`: first available)."""
    name = requested or settings.default_generator
    if name == AUTO:
        statuses = []
        for candidate, generator in backend.generators.items():
            status = generator.status()
            if status.available:
                return Chosen(candidate, generator, status)
            statuses.append(status)
        if not statuses:
            raise SettingsError("the backend has no generators")
        reasons = "; ".join(f"{s.name}: {s.reason or 'not available'}" for s in statuses)
        retry = min((s.retry_after_s for s in statuses if s.retry_after_s), default=None)
        raise GeneratorUnavailable(f"no generator is available: {reasons}", retry)
    generator = backend.generators.get(name)
    if generator is None:  # request names are checked against the backend first: this is the default's fault
        raise SettingsError(f"default generator {name!r} is not one of {tuple(backend.generators)}")
    status = generator.status()
    if not status.available:
        raise GeneratorUnavailable.of(status)
    return Chosen(name, generator, status)


def health(settings: Settings, backend: Backend) -> dict[str, Any]:
    """GET /health: what this target serves (no model is called; statuses may be cached)."""
    statuses = {name: generator.status() for name, generator in backend.generators.items()}
    default = settings.default_generator
    if default == AUTO:
        default = next((name for name, status in statuses.items() if status.available), None)
    elif default in statuses and not statuses[default].available:
        default = None
    return {
        "status": "ok",
        "prompt_version": prompts.PROMPT_VERSION,
        "default_generator": default,
        "default_generator_setting": settings.default_generator,
        "default_retriever": settings.default_retriever,
        "retrievers": list(backend.retrievers),
        "modes": [mode for mode in ("rag", "kb", "prompt") if mode != "kb" or backend.managed_rag is not None],
        "generators": {
            name: {"available": s.available, "model": s.model, "version": s.version, "reason": s.reason}
            for name, s in statuses.items()
        },
    }


def answer(request: QueryRequest, settings: Settings, backend: Backend, *, observe: Optional[dict] = None) -> dict[str, Any]:
    """The response body for a valid request (raises on failures; the handler maps them).

    `observe`, if given, receives `generator` as soon as it is known, and `retrieve_ms` /
    `generate_ms` as each stage completes (for metrics, also when a later stage fails).
    """
    observe = {} if observe is None else observe
    started = time.perf_counter()
    retrieve_ms = 0.0  # no retrieval in modes kb and prompt
    if request.mode == "kb":
        if backend.managed_rag is None:
            raise ApiError(400, f"mode: {KB_MODE_NEEDS_DEPLOYED_STAGE}", field="mode")
        observe["generator"] = "bedrock"
        generate_started = time.perf_counter()
        managed = backend.managed_rag(
            question=request.question, top_k=request.top_k, filters=request.filters,
            max_tokens=settings.max_new_tokens, temperature=settings.temperature,
        )
        generate_ms = observe["generate_ms"] = _ms(generate_started)
        text, cited, generator_name, model, version = managed.text, managed.citations, "bedrock", managed.model, None
        usage = {"input_tokens": managed.input_tokens, "output_tokens": managed.output_tokens}
    else:
        if request.generator:
            observe["generator"] = request.generator
        chosen = choose_generator(request.generator, settings, backend)
        observe["generator"] = chosen.name
        passages: list[prompts.Passage] = []
        if request.mode == "rag":
            retriever = backend.retrievers.get(request.retriever)
            if retriever is None:
                raise ApiError(400, f"retriever: must be one of: {', '.join(backend.retrievers)}", field="retriever")
            retrieve_started = time.perf_counter()
            retrieved = retriever(question=request.question, top_k=request.top_k, filters=request.filters)
            retrieve_ms = observe["retrieve_ms"] = _ms(retrieve_started)
            passages = budget.fit(retrieved, request.question, chosen.status, settings.max_new_tokens)
            prompt = prompts.rag_prompt(request.question, passages)
        else:
            prompt = prompts.baseline_prompt(request.question)
        generate_started = time.perf_counter()
        generation = chosen.generator.generate(
            prompt, question=request.question, passages=passages, max_tokens=settings.max_new_tokens, temperature=settings.temperature
        )
        generate_ms = observe["generate_ms"] = _ms(generate_started)
        text = generation.text
        cited = citations.rag_citations(text, passages)  # mode prompt has no passages: nothing to cite
        usage = {"input_tokens": generation.input_tokens, "output_tokens": generation.output_tokens}
        generator_name, model, version = chosen.name, chosen.status.model, chosen.status.version
    return {
        "answer": text,
        "citations": cited,
        "mode": request.mode,
        "generator": generator_name,
        "model": model,
        "model_version": version,
        "timings_ms": {
            "retrieve": round(retrieve_ms, 1),
            "generate": round(generate_ms, 1),
            "total": round(_ms(started), 1),
        },
        "usage": usage,
    }


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0
