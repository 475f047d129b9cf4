"""API Gateway proxy responses and the one mapping from failures to HTTP statuses.

Callers see a status and a short message; the detail (exception, AWS error code, stack) goes
only to the logs, under the request id that the response also carries.

    400  the request is wrong (ApiError raised by validation; the message names the field)
    429  throttled by an AWS service or the OpenSearch domain (with Retry-After)
    502  the model or a dependency answered with an error (SageMaker ModelError, Bedrock
         ModelErrorException / ModelNotReadyException, knowledge base DependencyFailed/BadGateway,
         an endpoint payload that does not decode, an OpenSearch 5xx)
    503  the service says it is unavailable (with Retry-After)
    504  a timeout: connect/read timeouts, Bedrock ModelTimeoutException, OpenSearch timeout, or
         too little time left in the invocation to start a call
    500  anything else, with a generic message
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

RETRY_AFTER_S = 2
GENERIC_MESSAGE = "internal error; quote the request id when reporting it"

_THROTTLING = {
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ServiceQuotaExceededException",
    "ProvisionedThroughputExceededException",
}
_MODEL_ERRORS = {
    "ModelError",
    "ModelErrorException",
    "ModelNotReadyException",
    "DependencyFailedException",
    "BadGatewayException",
    "InternalDependencyException",
}
_TIMEOUTS = {"ModelTimeoutException", "RequestTimeout", "RequestTimeoutException"}
_UNAVAILABLE = {"ServiceUnavailable", "ServiceUnavailableException"}


class ApiError(Exception):
    """An error whose message is safe to show the caller (bad input, mostly)."""

    def __init__(self, status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, headers or {}


class UpstreamError(Exception):
    """A dependency called without an SDK answered badly; `status` is its HTTP status."""

    def __init__(self, what: str, status: int, detail: str = ""):
        super().__init__(f"{what} returned HTTP {status}: {detail[:500]}")
        self.status = status


def json_response(status: int, body: Any, *, request_id: str | None = None, headers: dict[str, str] | None = None) -> dict:
    """A Lambda proxy integration response with a JSON body."""
    all_headers = {"Content-Type": "application/json", "Cache-Control": "no-store"}
    if request_id:
        all_headers["X-Request-Id"] = request_id
    all_headers.update(headers or {})
    return {
        "statusCode": status,
        "headers": all_headers,
        "body": json.dumps(body, ensure_ascii=False, separators=(",", ":")),
    }


def error_response(status: int, message: str, *, request_id: str | None, field: str | None = None, headers: dict[str, str] | None = None) -> dict:
    body: dict[str, Any] = {"message": message}
    if field:
        body["field"] = field
    if request_id:
        body["request_id"] = request_id
    return json_response(status, body, request_id=request_id, headers=headers)


def classify(error: BaseException) -> tuple[int, str, dict[str, str]]:
    """(status, public message, extra headers) for any exception. Never leaks its detail."""
    retry = {"Retry-After": str(RETRY_AFTER_S)}
    if isinstance(error, ApiError):
        return error.status, error.message, dict(error.headers)
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        http_status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _MODEL_ERRORS:  # before the status check: ModelNotReadyException is an HTTP 429
            return 502, "the model or a dependency returned an error", {}
        if code in _THROTTLING or http_status == 429:
            return 429, "too many requests; retry later", retry
        if code in _TIMEOUTS:
            return 504, "the model did not answer in time", {}
        if code in _UNAVAILABLE or http_status == 503:
            return 503, "a dependency is unavailable; retry later", retry
        return 500, GENERIC_MESSAGE, {}
    if isinstance(error, (ReadTimeoutError, ConnectTimeoutError, TimeoutError)) or _is_named(error, "OpenSearchTimeout"):
        return 504, "a dependency did not answer in time", {}
    if isinstance(error, EndpointConnectionError):
        return 502, "could not reach a dependency", {}
    if isinstance(error, UpstreamError):
        if error.status == 429:
            return 429, "too many requests; retry later", retry
        if error.status >= 500:
            return 502, "a dependency returned an error", {}
        return 500, GENERIC_MESSAGE, {}
    if _is_named(error, "EndpointPayloadError"):
        return 502, "the model returned a response that could not be read", {}
    return 500, GENERIC_MESSAGE, {}


def _is_named(error: BaseException, name: str) -> bool:
    """True if `name` is one of the error's classes (avoids importing optional modules here)."""
    return any(cls.__name__ == name for cls in type(error).__mro__)
