"""Which model version each endpoint variant serves: the record, written down once.

One owner: the record lives in SSM parameters that the Inference stack resolves at deploy time
(CloudFormation parameters of type `AWS::SSM::Parameter::Value<String>`). The model pipeline
writes a record and then has CloudFormation apply it (a stack update that re-reads the
parameters); nothing calls UpdateEndpoint behind CloudFormation's back, and a `cdk deploy` from
an unchanged checkout resolves the same values, so it changes nothing about what serves.

Who uses it:
- the Inference stack (parameter names; CloudFormation splits the value with Fn::Split on `|`);
- the pipeline's deploy step (writes `format_record(...)`, reverts it if the update rolls back);
- the query Lambda (reads the endpoint; parses versions from the endpoint config's name);
- the operator scripts (switch the endpoint off and on, roll back).

Parameters per stage (String, in the stage's region):

    /rag/<stage>/serving/base        "none" | "<version>|<model prefix>"
    /rag/<stage>/serving/finetuned   "none" | "<version>|<model prefix>"
    /rag/<stage>/serving/endpoint    "on" | "off"   (idle cost: "off" removes the endpoint)

`<version>` is the model package version number in the stage's model registry, `<model prefix>`
the compiled model's S3 key prefix in the artifacts bucket (under `models/`, ending in `/`).

The endpoint config's name carries the versions it serves, so the query Lambda learns from one
DescribeEndpoint which version answered (the name changes whenever a version does):

    <endpoint name>-b<base version|0>-f<finetuned version|0>-<8 hex>
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROLES = ("base", "finetuned")
NOT_DEPLOYED = "none"
POWER_ON, POWER_OFF = "on", "off"
SEPARATOR = "|"
NO_VERSION = "0"  # a role without a model, in an endpoint config name
# The production variant of each role on the stage's endpoint (also the InvokeEndpoint TargetVariant).
VARIANT_NAMES = {"base": "base", "finetuned": "finetuned"}

_PREFIX = re.compile(r"^models/([A-Za-z0-9][A-Za-z0-9\-_.]*/)+$")
_VERSION = re.compile(r"^[1-9][0-9]{0,8}$")
_CONFIG_NAME = re.compile(r"-b(0|[1-9][0-9]{0,8})-f(0|[1-9][0-9]{0,8})-[0-9a-f]{8}$")


class RecordError(ValueError):
    """A record value that is not `none` or `<version>|<models/... prefix>`."""


@dataclass(frozen=True)
class Record:
    version: str  # model package version number, as text (e.g. "7")
    model_prefix: str  # models/<...>/ in the artifacts bucket


def parameter_path(stage: str) -> str:
    return f"/rag/{stage}/serving/"


def record_parameter(stage: str, role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    return parameter_path(stage) + role


def power_parameter(stage: str) -> str:
    return parameter_path(stage) + "endpoint"


def format_record(version: int | str, model_prefix: str) -> str:
    version = str(version)
    if not _VERSION.match(version):
        raise RecordError(f"version must be a positive integer, got {version!r}")
    if not _PREFIX.match(model_prefix):
        raise RecordError(f"model prefix must be under models/ and end in '/', got {model_prefix!r}")
    return f"{version}{SEPARATOR}{model_prefix}"


def parse_record(value: str) -> Record | None:
    """None for `none`; a Record otherwise; RecordError for anything else."""
    if value == NOT_DEPLOYED:
        return None
    parts = value.split(SEPARATOR)
    if len(parts) != 2:
        raise RecordError(f"record must be {NOT_DEPLOYED!r} or '<version>|<model prefix>', got {value!r}")
    version, prefix = parts
    format_record(version, prefix)  # validates both halves
    return Record(version=version, model_prefix=prefix)


def parse_power(value: str) -> bool:
    if value not in (POWER_ON, POWER_OFF):
        raise RecordError(f"endpoint power must be {POWER_ON!r} or {POWER_OFF!r}, got {value!r}")
    return value == POWER_ON


def versions_from_config_name(config_name: str) -> dict[str, str | None]:
    """{"base": "3" | None, "finetuned": "7" | None} from an endpoint config name; RecordError if it has none."""
    match = _CONFIG_NAME.search(config_name)
    if match is None:
        raise RecordError(f"endpoint config name {config_name!r} does not carry model versions")
    base, finetuned = match.groups()
    return {"base": None if base == NO_VERSION else base, "finetuned": None if finetuned == NO_VERSION else finetuned}
