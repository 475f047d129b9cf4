"""Parses and validates a query request; every rejection is a 400 whose message names the field.

Body: {"question": str, "mode": "rag"|"kb"|"prompt", "retriever": "kb"|"opensearch",
       "top_k": int, "filters": {field: scalar | [scalars]}, "generator": str}; only `question`
is required. `generator` must be a name the target knows (deployed: bedrock, base, finetuned);
mode kb accepts only `bedrock`.
The API's request model (Serving stack) checks the same shape first; this is the authority,
because the function can also be invoked directly.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from shared.api import ApiError

from .settings import DEPLOYED_GENERATORS, MODES, RETRIEVERS, Settings

FIELDS = ("question", "mode", "retriever", "top_k", "filters", "generator")
# The one generator of mode kb (Bedrock's RetrieveAndGenerate).
KB_MODE_GENERATOR = "bedrock"
MAX_BODY_BYTES = 64 * 1024
MAX_FILTER_VALUES = 20
MAX_FILTER_TEXT = 256
# RetrieveAndGenerate's input.text limit (bedrock-agent-runtime API model).
KB_MODE_MAX_QUESTION_CHARS = 1000


@dataclass(frozen=True)
class QueryRequest:
    question: str
    mode: str
    retriever: str
    top_k: int
    filters: dict[str, Any]
    generator: Optional[str] = None  # None = the configured default


def bad(field: str, message: str) -> ApiError:
    return ApiError(400, f"{field}: {message}", field=field)


def parse_body(event: dict) -> Any:
    """The decoded JSON body of an API Gateway proxy event."""
    raw = event.get("body")
    if raw is None or raw == "":
        raise bad("body", "a JSON object is required")
    if not isinstance(raw, str):
        raise bad("body", "must be a JSON text")
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(raw, validate=True).decode()  # UTF-8
        except (binascii.Error, ValueError):
            raise bad("body", "is not valid base64-encoded UTF-8") from None
    if len(raw.encode("utf-8", errors="replace")) > MAX_BODY_BYTES:
        raise bad("body", f"larger than {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise bad("body", "is not valid JSON") from None


def _reject_constant(name: str):
    raise ValueError  # NaN, Infinity, -Infinity: the caller answers "is not valid JSON"


def validate(body: Any, settings: Settings, generators: Sequence[str] = DEPLOYED_GENERATORS) -> QueryRequest:
    """A QueryRequest, or ApiError(400) naming the field. `generators`: the names the target knows."""
    if not isinstance(body, dict):
        raise bad("body", "must be a JSON object")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise bad(_name(unknown[0]), f"unknown field; allowed: {', '.join(FIELDS)}")

    question = body.get("question")
    if question is None:
        raise bad("question", "is required")
    if not isinstance(question, str):
        raise bad("question", "must be a string")
    if not _is_text(question):
        raise bad("question", "must be valid Unicode text (it holds a lone surrogate such as \\ud800)")
    question = question.strip()
    if not question:
        raise bad("question", "must not be empty")
    if len(question) > settings.max_question_chars:
        raise bad("question", f"longer than {settings.max_question_chars} characters")

    mode = _choice(body.get("mode", "rag"), "mode", MODES)
    retriever = _choice(body.get("retriever", settings.default_retriever), "retriever", RETRIEVERS)
    if mode == "kb" and len(question) > KB_MODE_MAX_QUESTION_CHARS:
        raise bad("question", f"mode 'kb' accepts at most {KB_MODE_MAX_QUESTION_CHARS} characters")
    if mode == "kb" and body.get("retriever", "kb") != "kb":
        raise bad("retriever", "mode 'kb' always uses the knowledge base; omit it or use 'kb'")

    top_k = body.get("top_k", settings.default_top_k)
    if not isinstance(top_k, int) or isinstance(top_k, bool):
        raise bad("top_k", "must be an integer")
    if not 1 <= top_k <= settings.max_top_k:
        raise bad("top_k", f"must be between 1 and {settings.max_top_k}")

    filters = _filters(body.get("filters", {}), settings)
    if filters and mode == "prompt":
        raise bad("filters", "mode 'prompt' does not retrieve; filters do not apply")
    generator = body.get("generator")
    if generator is not None:
        generator = _choice(generator, "generator", tuple(generators))
        if mode == "kb" and generator != KB_MODE_GENERATOR:
            raise bad("generator", f"mode 'kb' always uses {KB_MODE_GENERATOR!r} (Bedrock's managed RAG); omit it or use {KB_MODE_GENERATOR!r}")
    return QueryRequest(question=question, mode=mode, retriever=retriever, top_k=top_k, filters=filters, generator=generator)


def _is_text(value: str) -> bool:
    """False for text that UTF-8 cannot encode (a lone surrogate, e.g. from a JSON \\ud800 escape)."""
    try:
        value.encode()  # UTF-8: fails on a lone surrogate
    except UnicodeEncodeError:
        return False
    return True


def _name(key: str) -> str:
    """A field name fit for a message: as is when plain, else JSON-quoted (and shortened)."""
    return key if re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", key) else json.dumps(key[:64])


def _choice(value: Any, field: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise bad(field, f"must be a string, one of: {', '.join(allowed)}")
    if value not in allowed:
        raise bad(field, f"must be one of: {', '.join(allowed)}")
    return value


def _filters(raw: Any, settings: Settings) -> dict[str, Any]:
    """Equality filters on the stage's filterable metadata fields: a scalar or a list (any of)."""
    if not isinstance(raw, dict):
        raise bad("filters", "must be an object of field: value")
    for key, value in raw.items():
        field = f"filters.{_name(key)}"
        if key not in settings.filterable_fields:
            allowed = ", ".join(settings.filterable_fields) or "none on this stage"
            raise bad(field, f"not a filterable field; filterable: {allowed}")
        values = value if isinstance(value, list) else [value]
        if not values or len(values) > MAX_FILTER_VALUES:
            raise bad(field, f"a list needs 1 to {MAX_FILTER_VALUES} values")
        for item in values:
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                raise bad(field, "values must be strings or numbers")
            if isinstance(item, str) and not 0 < len(item) <= MAX_FILTER_TEXT:
                raise bad(field, f"strings must have 1 to {MAX_FILTER_TEXT} characters")
            if isinstance(item, str) and not _is_text(item):
                raise bad(field, "strings must be valid Unicode text (one holds a lone surrogate such as \\ud800)")
            if isinstance(item, (int, float)) and not (math.isfinite(item) and abs(item) <= 2**53):
                raise bad(field, "numbers must be finite and at most 2^53 in magnitude")
    return dict(raw)
