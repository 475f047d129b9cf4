"""API Gateway proxy responses and the one mapping from failures to HTTP statuses.

Callers see a status and a short message; the detail (exception, AWS error code, stack) goes
only to the logs, under the request id that the response also carries. The mapping, in order
(the README's error table says the same):

    400  the request is wrong (ApiError raised by validation; the message names the field)
    429  throttled by an AWS service or the OpenSearch domain; a model answering 429 (Retry-After)
    502  the model or a dependency answered with an error: SageMaker ModelError (424; its
         OriginalStatusCode 429/503/408/504 map like the statuses below), Bedrock
         ModelErrorException, knowledge base DependencyFailed/BadGateway, a model refusing our
         request (ValidationException/ValidationError from Converse, InvokeModel, InvokeEndpoint,
         RetrieveAndGenerate), 413 from a dependency, an OpenSearch 5xx, a transport failure
         (no connection, TLS), an endpoint payload that does not decode
    503  the service or the model is not ready or unavailable (ModelNotReadyException,
         ServiceUnavailable, 503; with Retry-After); a generator that is not deployed (its reason)
    504  a timeout: connect/read timeouts, Bedrock ModelTimeoutException, 408/504 from a
         dependency, OpenSearch timeout, or too little time left in the invocation for a call
    500  a deployment fault or a bug: access denied, a resource not found, a request the
         service rejects that is not a model's (e.g. Retrieve's ValidationException), anything
         else; access denied and not found get their own message (the logs have the detail)
"""

from __future__ import annotations

import json
import re
from typing import Any

from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

RETRY_AFTER_S = 2
GENERIC_MESSAGE = "internal error; quote the request id when reporting it"
ACCESS_DENIED_MESSAGE = "a dependency denied access (a deployment or model-access problem); quote the request id when reporting it"
NOT_FOUND_MESSAGE = "a resource this stage depends on was not found (a deployment problem); quote the request id when reporting it"

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
    "DependencyFailedException",
    "BadGatewayException",
    "InternalDependencyException",
}
_NOT_READY = {"ModelNotReadyException"}  # an HTTP 429 that is not a throttle: the model is loading
_TIMEOUTS = {"ModelTimeoutException", "RequestTimeout", "RequestTimeoutException"}
_UNAVAILABLE = {"ServiceUnavailable", "ServiceUnavailableException"}
_ACCESS_DENIED = {"AccessDeniedException", "AccessDenied", "UnrecognizedClientException", "ExpiredTokenException"}
_NOT_FOUND = {"ResourceNotFoundException", "ResourceNotFound", "NotFoundException"}
_REJECTED = {"ValidationException", "ValidationError"}
# Operations whose ValidationException is the model refusing our prompt (too long, bad input), not a bug.
_MODEL_OPERATIONS = {"Converse", "InvokeModel", "InvokeEndpoint", "RetrieveAndGenerate"}
_SURROGATE = re.compile("[\ud800-\udfff]")


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
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return {
        "statusCode": status,
        "headers": all_headers,
        # A lone surrogate cannot be encoded as UTF-8: Lambda would fail the whole response.
        "body": scrub_surrogates(text),
    }


def scrub_surrogates(text: str) -> str:
    """`text` with every lone surrogate (not encodable as UTF-8) replaced by U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


def error_response(status: int, message: str, *, request_id: str | None, field: str | None = None, headers: dict[str, str] | None = None) -> dict:
    body: dict[str, Any] = {"message": message}
    if field:
        body["field"] = field
    if request_id:
        body["request_id"] = request_id
    return json_response(status, body, request_id=request_id, headers=headers)


def classify(error: BaseException) -> tuple[int, str, dict[str, str]]:
    """(status, public message, extra headers) for any exception. Never leaks its detail."""
    if isinstance(error, ApiError):
        return error.status, error.message, dict(error.headers)
    if isinstance(error, ClientError):
        return _classify_client_error(error)
    if isinstance(error, (ReadTimeoutError, ConnectTimeoutError, TimeoutError)):  # OpenSearchTimeout is a TimeoutError
        return 504, "a dependency did not answer in time", {}
    if isinstance(error, EndpointConnectionError) or _is_named(error, "OpenSearchTransportError"):
        return 502, "could not reach a dependency", {}
    if isinstance(error, UpstreamError):
        return _by_status(error.status, "a dependency")
    if _is_named(error, "EndpointPayloadError"):
        return 502, "the model returned a response that could not be read", {}
    return 500, GENERIC_MESSAGE, {}


def _classify_client_error(error: ClientError) -> tuple[int, str, dict[str, str]]:
    response = error.response  # botocore parses every error answer into a dict
    code = (response.get("Error") or {}).get("Code")
    http_status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    if code == "ModelError":
        # SageMaker: the container answered non-2xx; its own status says what kind of failure it was.
        original = response.get("OriginalStatusCode")
        if isinstance(original, int) and original in (429, 503, 408, 504):
            return _by_status(original, "the model")
        return 502, "the model returned an error", {}
    if code in _MODEL_ERRORS:
        return 502, "the model or a dependency returned an error", {}
    if code in _NOT_READY:
        return 503, "the model is not ready yet; retry later", _retry()
    if code in _THROTTLING or http_status == 429:
        return 429, "too many requests; retry later", _retry()
    if code in _TIMEOUTS or http_status in (408, 504):
        return 504, "the model or a dependency did not answer in time", {}
    if code in _UNAVAILABLE or http_status == 503:
        return 503, "a dependency is unavailable; retry later", _retry()
    if code in _ACCESS_DENIED or http_status == 403:
        return 500, ACCESS_DENIED_MESSAGE, {}
    if code in _NOT_FOUND or http_status == 404:
        return 500, NOT_FOUND_MESSAGE, {}
    if code in _REJECTED and error.operation_name in _MODEL_OPERATIONS:
        return 502, "the model rejected the request", {}
    if isinstance(http_status, int) and (http_status == 413 or http_status == 424 or http_status >= 500):
        return 502, "a dependency returned an error", {}
    return 500, GENERIC_MESSAGE, {}


def _by_status(status: int, what: str) -> tuple[int, str, dict[str, str]]:
    """The mapping of a dependency's HTTP status (the model's original status, or OpenSearch's)."""
    if status == 429:
        return 429, "too many requests; retry later", _retry()
    if status in (408, 504):
        return 504, f"{what} did not answer in time", {}
    if status == 503:
        return 503, f"{what} is unavailable; retry later", _retry()
    if status == 413 or status == 424 or status >= 500:
        return 502, f"{what} returned an error", {}
    if status in (401, 403):
        return 500, ACCESS_DENIED_MESSAGE, {}
    if status == 404:
        return 500, NOT_FOUND_MESSAGE, {}
    return 500, GENERIC_MESSAGE, {}


def _retry() -> dict[str, str]:
    return {"Retry-After": str(RETRY_AFTER_S)}


def _is_named(error: BaseException, name: str) -> bool:
    """True if `name` is one of the error's classes (avoids importing optional modules here)."""
    return any(cls.__name__ == name for cls in type(error).__mro__)
