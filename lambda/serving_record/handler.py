"""Custom resource: the serving record's SSM parameters, created if missing and never overwritten.

CloudFormation cannot own these parameters as `AWS::SSM::Parameter`: it writes the resource's
Value on every update of the resource (tags included), which would reset what the model deployer
recorded. This resource only ever *creates* a parameter that does not exist (PutParameter without
Overwrite), on Create and on Update (so a deleted parameter comes back as `none`/`off`), and
leaves an existing value alone.

On Delete: a stage that retains data (`RetainOnDelete: "true"`) keeps the record, so a redeployed
stack serves the same models from the retained artifacts bucket; any other stage deletes the
parameters (its artifacts bucket goes with the stage too).

Properties: `Parameters` {name: initial value}, `RetainOnDelete` "true"|"false".
The response goes to CloudFormation's pre-signed `ResponseURL` (no provider framework needed).
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any, Callable, Mapping

from aws_lambda_powertools import Logger

from shared import aws_clients

logger = Logger()
DESCRIPTION = "Serving record: written by the model deployer, resolved by the Inference stack"
RESPONSE_TIMEOUT_S = 10


class RequestError(ValueError):
    """The custom resource's properties are not what this handler expects."""


def parameters_of(properties: Mapping[str, Any]) -> dict[str, str]:
    parameters = properties.get("Parameters")
    if not isinstance(parameters, dict) or not parameters:
        raise RequestError("Parameters must be a non-empty object {name: initial value}")
    for name, value in parameters.items():
        if not (isinstance(name, str) and name.startswith("/") and isinstance(value, str) and value):
            raise RequestError(f"parameter {name!r}: the name must start with '/' and the initial value be a non-empty string")
    return dict(parameters)


def create_missing(ssm, parameters: Mapping[str, str]) -> list[str]:
    """Creates each parameter that does not exist; returns the names it created."""
    created = []
    for name, value in sorted(parameters.items()):
        try:
            ssm.put_parameter(Name=name, Value=value, Type="String", Overwrite=False, Tier="Standard", Description=DESCRIPTION)
        except ssm.exceptions.ParameterAlreadyExists:
            continue
        created.append(name)
    return created


def delete_all(ssm, names: list[str]) -> None:
    for start in range(0, len(names), 10):  # DeleteParameters takes at most 10 names
        ssm.delete_parameters(Names=names[start : start + 10])


def handle(event: Mapping[str, Any], ssm) -> dict[str, Any]:
    """The work of one request; returns the response's Data. Raises on failure."""
    properties = event.get("ResourceProperties", {})
    parameters = parameters_of(properties)
    request = event["RequestType"]
    if request in ("Create", "Update"):
        created = create_missing(ssm, parameters)
        logger.info("serving record ensured", extra={"parameters_created": created, "parameters_kept": sorted(set(parameters) - set(created))})
        return {"Created": ",".join(created)}
    if request == "Delete":
        if str(properties.get("RetainOnDelete")).lower() == "true":  # absent: delete
            logger.info("serving record retained with the stage's data")
        else:
            delete_all(ssm, sorted(parameters))
        return {}
    raise RequestError(f"unknown RequestType {request!r}")


def physical_id(event: Mapping[str, Any]) -> str:
    """Stable across updates: the one CloudFormation has, else the path of the first parameter (so
    an update never looks like a replacement that would end in a spurious Delete); a request whose
    parameters are malformed still gets an id, for the Delete that follows its failure."""
    if event.get("PhysicalResourceId"):
        return event["PhysicalResourceId"]
    parameters = event.get("ResourceProperties", {}).get("Parameters")
    names = sorted(name for name in parameters if isinstance(name, str) and name.startswith("/")) if isinstance(parameters, dict) else []
    return names[0].rsplit("/", 1)[0] + "/" if names else "serving-record"


def respond(event: Mapping[str, Any], status: str, reason: str, data: Mapping[str, Any], *, send: Callable[[urllib.request.Request], Any]) -> None:
    body = json.dumps({
        "Status": status,
        "Reason": reason[:1000],
        "PhysicalResourceId": physical_id(event),
        "StackId": event["StackId"],
        "RequestId": event["RequestId"],
        "LogicalResourceId": event["LogicalResourceId"],
        "Data": dict(data),
    }).encode()
    # The pre-signed URL is signed without a content type: send an empty one (urllib would add a
    # form type); urllib sets Content-Length itself.
    request = urllib.request.Request(event["ResponseURL"], data=body, method="PUT", headers={"Content-Type": ""})
    send(request)


def _send(request: urllib.request.Request) -> None:
    with urllib.request.urlopen(request, timeout=RESPONSE_TIMEOUT_S) as response:  # noqa: S310 (CloudFormation's pre-signed https URL)
        response.read()


def run(event: Mapping[str, Any], ssm, *, send: Callable[[urllib.request.Request], Any] = _send) -> str:
    """Handles the request and always answers CloudFormation (a silent failure would hang the stack for an hour)."""
    try:
        data = handle(event, ssm)
    except Exception as error:  # noqa: BLE001 - every failure must reach CloudFormation as FAILED
        logger.exception("serving record request failed")
        respond(event, "FAILED", f"{type(error).__name__}: {error}", {}, send=send)
        return "FAILED"
    respond(event, "SUCCESS", "ok", data, send=send)
    return "SUCCESS"


@logger.inject_lambda_context
def main(event: Mapping[str, Any], context: Any) -> str:
    aws_clients.set_deadline(context)
    return run(event, aws_clients.client("ssm", read_timeout=5.0))
