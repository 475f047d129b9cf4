"""Query function entry: API Gateway proxy event -> validate -> answer -> JSON response.

Routes: POST /query (the serving path) and GET /health (what is deployed, no model call).
Every outcome is a JSON response; failures are mapped by `shared.api.classify` and their detail
is logged, never returned. Settings and the backend are made once per container, on first use
(from the environment and AWS clients); `configure` replaces them (tests, local mode).
"""

from __future__ import annotations

import json
import time
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from shared import api, aws_clients, observability

from . import prompts, request as query_request, service
from .settings import Settings

# Metrics: the `service` dimension of every metric, and the value of an unknown dimension.
METRICS_SERVICE = "query"
NONE = "none"

_settings: Settings | None = None
_backend: service.Backend | None = None


def configure(*, settings: Settings | None = None, backend: service.Backend | None = None) -> None:
    """Sets this container's settings and backend (tests, local mode); None resets to the deployed defaults."""
    global _settings, _backend
    _settings, _backend = settings, backend


def _runtime() -> tuple[Settings, service.Backend]:
    global _settings, _backend
    if _settings is None:
        _settings = Settings.from_env()
    if _backend is None:
        from . import aws_backend  # the deployed backend; local mode configures its own

        _backend = aws_backend.build(_settings)
    return _settings, _backend


def main(event: Any, context: Any) -> dict:
    started = time.perf_counter()
    request_id = _request_id(event, context)
    fields: dict[str, Any] = {}  # logged with the outcome
    observed: dict[str, Any] = {}  # filled by service.answer as stages run: generator, retrieve_ms, generate_ms
    try:
        aws_clients.set_deadline(context)
        if not isinstance(event, dict):
            raise api.ApiError(400, "event: not an API Gateway request", field="event")
        route = (event.get("httpMethod"), event.get("resource") or event.get("path"))
        settings, backend = _runtime()
        if route == ("GET", "/health"):
            return api.json_response(200, service.health(settings, backend), request_id=request_id)
        if route != ("POST", "/query"):
            raise api.ApiError(404, "no such route; use POST /query or GET /health")
        req = query_request.validate(query_request.parse_body(event), settings, tuple(backend.generators))
        fields.update(mode=req.mode, retriever=req.retriever if req.mode == "rag" else None, top_k=req.top_k,
                      question_chars=len(req.question), filters=sorted(req.filters))
        body = service.answer(req, settings, backend, observe=observed)
        fields.update(generator=body["generator"], model=body["model"], model_version=body["model_version"],
                      cited=[c["n"] for c in body["citations"]], timings_ms=body["timings_ms"], usage=body["usage"])
        elapsed_ms = _record(started, fields, observed, usage=body["usage"])
        observability.logger().info(
            "query served", extra={"status": 200, "elapsed_ms": round(elapsed_ms, 1), "prompt_version": prompts.PROMPT_VERSION, **fields}
        )
        return api.json_response(200, body, request_id=request_id)
    except Exception as error:  # every failure becomes a mapped response; detail only in logs
        return _failure(error, request_id, started, fields, observed)


def _failure(error: Exception, request_id: str, started: float, fields: dict, observed: dict) -> dict:
    try:
        status, message, headers = api.classify(error)
        if "generator" in observed:
            fields["generator"] = observed["generator"]
        observability.log_failure(error, status=status, request_id=request_id, **fields)
        _record(started, fields, observed, error_status=status)  # log_failure has logged it
        return api.error_response(status, message, request_id=request_id, field=getattr(error, "field", None), headers=headers)
    except Exception as secondary:  # the last resort must not raise either
        print(json.dumps({"level": "ERROR", "message": "failed while reporting a failure", "request_id": request_id,
                          "error_type": type(error).__name__, "secondary_error_type": type(secondary).__name__}))
        return api.error_response(500, api.GENERIC_MESSAGE, request_id=request_id)


def _record(started: float, fields: dict, observed: dict, *, usage: dict | None = None, error_status: int | None = None) -> float:
    """One EMF record per request, dimensions service / mode / generator on every metric.
    Returns the request's time so far, in ms."""
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    metrics = observability.metrics()
    metrics.add_dimension(name="service", value=METRICS_SERVICE)
    metrics.add_dimension(name="mode", value=str(fields.get("mode") or NONE))
    metrics.add_dimension(name="generator", value=str(observed.get("generator") or NONE))
    metrics.add_metric(name="Queries", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="QueryLatency", unit=MetricUnit.Milliseconds, value=elapsed_ms)
    if observed.get("retrieve_ms") is not None:
        metrics.add_metric(name="RetrieveLatency", unit=MetricUnit.Milliseconds, value=observed["retrieve_ms"])
    if observed.get("generate_ms") is not None:
        metrics.add_metric(name="GenerateLatency", unit=MetricUnit.Milliseconds, value=observed["generate_ms"])
    for key, name in (("input_tokens", "InputTokens"), ("output_tokens", "OutputTokens")):
        count = (usage or {}).get(key)
        if isinstance(count, int) and not isinstance(count, bool):
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=count)
    if error_status is not None:  # a failure (4xx or 5xx)
        metrics.add_metric(name="QueryClientErrors" if error_status < 500 else "QueryServerErrors", unit=MetricUnit.Count, value=1)
    metrics.flush_metrics()
    return elapsed_ms


def _request_id(event: Any, context: Any) -> str:
    if isinstance(event, dict):
        request_context = event.get("requestContext")
        if isinstance(request_context, dict) and isinstance(request_context.get("requestId"), str):
            return request_context["requestId"][:128]
    return str(getattr(context, "aws_request_id", "local"))[:128]
