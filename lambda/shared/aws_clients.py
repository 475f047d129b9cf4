"""AWS clients made once per container, with explicit timeouts, standard retries and a deadline.

Clients are built with plain botocore (boto3 adds s3transfer and ~30 ms of imports that no
handler here needs) from one shared session, cached per (service, timeouts, attempts), so a
warm container reuses their connection pools. A client is made on first use: a stage that
never calls SageMaker never loads its service model.

The deadline: a handler calls `set_deadline(context)` at the start of each invocation. Every
client gets a `before-send` hook that refuses to start an attempt (first try or retry) that
could not finish before the function's own timeout, raising `DeadlineExceeded`, which handlers
map to 504. Without it, a retried read timeout can outlive the function and the caller gets
API Gateway's opaque error instead of a clean 504.
"""

from __future__ import annotations

import time
from typing import Any

import botocore.session
from botocore.config import Config

CONNECT_TIMEOUT_S = 2.0
# Kept back from the function's timeout for formatting the response and flushing logs.
DEADLINE_MARGIN_S = 0.5

_session = None
_clients: dict[tuple, Any] = {}
_deadline: float | None = None  # time.monotonic() value; None = no deadline (tests, scripts)


class DeadlineExceeded(TimeoutError):
    """Too little time left in this invocation to start (or retry) a call."""


def session():
    global _session
    if _session is None:
        _session = botocore.session.get_session()
    return _session


def client(service: str, *, read_timeout: float, max_attempts: int = 3, region: str | None = None):
    """A cached botocore client for `service` with these timeouts (standard retry mode)."""
    key = (service, read_timeout, max_attempts, region)
    cached = _clients.get(key)
    if cached is None:
        config = Config(
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=read_timeout,
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            tcp_keepalive=True,
        )
        cached = session().create_client(service, region_name=region, config=config)
        guard_deadline(cached, read_timeout)
        _clients[key] = cached
    return cached


def credentials():
    """The function's current credentials, frozen (for SigV4-signing non-SDK calls)."""
    creds = session().get_credentials()
    return creds.get_frozen_credentials() if creds is not None else None


def region() -> str | None:
    return session().get_config_variable("region")


def set_deadline(context: Any) -> None:
    """Sets this invocation's deadline from a Lambda context (None clears it)."""
    global _deadline
    remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
    _deadline = None if remaining_ms is None else time.monotonic() + remaining_ms() / 1000.0 - DEADLINE_MARGIN_S


def remaining_s() -> float | None:
    """Seconds left before this invocation's deadline, or None when there is none."""
    return None if _deadline is None else _deadline - time.monotonic()


def check_time(needed_s: float, what: str) -> None:
    """Raises DeadlineExceeded unless `needed_s` seconds are left before the deadline."""
    left = remaining_s()
    if left is not None and left < needed_s:
        raise DeadlineExceeded(f"{what}: {left:.2f}s left, an attempt may take {needed_s:.2f}s")


def guard_deadline(aws_client: Any, read_timeout: float) -> None:
    """Registers the deadline check on every attempt `aws_client` sends."""

    def before_send(request=None, **kwargs):
        check_time(read_timeout, getattr(request, "url", "AWS call"))
        return None  # None lets botocore send the request itself

    aws_client.meta.events.register("before-send", before_send)
