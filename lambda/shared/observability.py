"""Structured JSON logs and CloudWatch metrics (EMF) for handlers, via Powertools (public layer).

One Logger and one Metrics object per container. Service name and namespace come from the
standard Powertools environment variables the stack sets (POWERTOOLS_SERVICE_NAME,
POWERTOOLS_METRICS_NAMESPACE); log level from POWERTOOLS_LOG_LEVEL or Lambda's log level.

Powertools' Tracer is deliberately not used: it imports the X-Ray SDK, which builds an X-Ray
client at import (measured ~250 ms, doubling the cold import time). The function's active
tracing still records each invocation; the response's `timings_ms` and the metrics below give
the per-stage latency.
"""

from __future__ import annotations

import os
import traceback

from aws_lambda_powertools import Logger, Metrics

_logger: Logger | None = None
_metrics: Metrics | None = None


def logger() -> Logger:
    global _logger
    if _logger is None:
        _logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "rag"), utc=True)
    return _logger


def metrics() -> Metrics:
    global _metrics
    if _metrics is None:
        _metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Rag"))
    return _metrics


def log_failure(error: BaseException, *, status: int, request_id: str | None, **fields) -> None:
    """Logs a failure with its full detail (never sent to the caller). 5xx at error level."""
    detail = {
        "status": status,
        "request_id": request_id,
        "error_type": type(error).__name__,
        "error": str(error)[:2000],
        **fields,
    }
    response = getattr(error, "response", None)  # a ClientError's parsed error (HTTPClientError: None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    if code:
        detail["aws_error_code"] = code
    if status >= 500:
        detail["stack"] = "".join(traceback.format_exception(error))[-4000:]
        logger().error("request failed", extra=detail)
    else:
        logger().info("request rejected", extra=detail)
