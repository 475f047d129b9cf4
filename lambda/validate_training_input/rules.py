"""The rules a fine-tuning request must pass before a Trainium job is paid for.

One module for two callers: the state machine's first state (this Lambda) and
`scripts/start_training.py`, which imports it so an operator sees the same verdict before
StartExecution. Standard library + a botocore S3 client passed in: nothing else.

Request (the execution input):
    {"training_data_prefix": "datasets/support-v3/",       # in the training bucket, *.jsonl under it
     "base_model_prefix": "base-models/qwen3-1.7b/",       # optional; default from config
     "hyperparameters": {"learning_rate": 0.0001, ...},    # optional; names from hyperparameters.json
     "description": "why this run"}                          # optional, into the model registry

A compile-only run (the base model itself, compiled for Inferentia2 and registered as the base):
    {"compile_only": true, "base_model_prefix": "base-models/qwen3-1.7b/", "description": "..."}
    (no training data, no hyperparameters)

The hyperparameter spec is model_artifacts/training/hyperparameters.json (the stack hands the
Lambda its user-settable part as an environment variable; the script reads the file).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

S3_PREFIX_PATTERN = re.compile(r"^([a-z0-9][a-z0-9\-_.]*/)+$")
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # SageMaker job/model names (the pattern lets hyphens run past 63)
MAX_NAME_LENGTH = 63
ALLOWED_KEYS = ("training_data_prefix", "base_model_prefix", "hyperparameters", "description", "compile_only")
COMPILE_ONLY_KEYS = ("compile_only", "base_model_prefix", "description")
NO_DATA = "none"  # training_data_uri of a compile-only run (registry metadata values cannot be empty)
MAX_DESCRIPTION = 1000
SUPPORTED_MODEL_TYPES = ("llama", "qwen3")
MAX_LISTED_KEYS = 10000


class InputError(ValueError):
    """The request is invalid; `problems` lists every reason (not only the first)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class Settings:
    """What the rules need from the stage: bucket names, prefixes, the spec, the job's cores."""

    training_bucket: str
    artifacts_bucket: str
    base_models_root: str
    default_base_model_prefix: str
    job_prefix: str
    neuron_cores: int
    spec: Mapping[str, Mapping[str, Any]]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Settings":
        return cls(
            training_bucket=env["TRAINING_BUCKET"],
            artifacts_bucket=env["ARTIFACTS_BUCKET"],
            base_models_root=env["BASE_MODELS_ROOT"],
            default_base_model_prefix=env["DEFAULT_BASE_MODEL_PREFIX"],
            job_prefix=env["JOB_PREFIX"],
            neuron_cores=int(env["NEURON_CORES"]),
            spec=json.loads(env["HYPERPARAMETER_SPEC"]),
        )


def user_spec(full_spec: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The user-settable entries of hyperparameters.json, without help text (fits a Lambda env)."""
    keep = ("type", "min", "max", "choices", "pattern")
    return {
        name: {key: entry[key] for key in keep if key in entry}
        for name, entry in full_spec.items()
        if not name.startswith("_") and not entry.get("pipeline")
    }


def hyperparameter_value(name: str, value: Any, entry: Mapping[str, Any]) -> str:
    """Checks one value against its spec entry; returns it as the string CreateTrainingJob takes."""
    kind = entry["type"]
    if kind == "bool":
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower()
        raise InputError([f"hyperparameters.{name}: expected true or false, got {value!r}"])
    if kind in ("int", "float"):
        if isinstance(value, bool):
            raise InputError([f"hyperparameters.{name}: expected a number, got {value!r}"])
        try:
            number = int(value) if kind == "int" else float(value)
            if kind == "int" and isinstance(value, float) and not value.is_integer():
                raise ValueError
        except (TypeError, ValueError):
            raise InputError([f"hyperparameters.{name}: expected {'an integer' if kind == 'int' else 'a number'}, got {value!r}"]) from None
        if not entry["min"] <= number <= entry["max"]:
            raise InputError([f"hyperparameters.{name}: {number} is outside {entry['min']}..{entry['max']}"])
        return str(number)
    if not isinstance(value, str):
        raise InputError([f"hyperparameters.{name}: expected a string, got {value!r}"])
    if "choices" in entry and value not in entry["choices"]:
        raise InputError([f"hyperparameters.{name}: {value!r} is not one of {', '.join(entry['choices'])}"])
    if "pattern" in entry and not re.match(entry["pattern"], value):
        raise InputError([f"hyperparameters.{name}: {value!r} does not match {entry['pattern']}"])
    return value


def validate_request(request: Any, settings: Settings) -> dict[str, Any]:
    """Checks the request's shape and values (no AWS call); returns it normalized. Raises InputError."""
    if not isinstance(request, dict):
        raise InputError(["the input must be a JSON object"])
    problems: list[str] = [f"unknown key {key!r} (allowed: {', '.join(ALLOWED_KEYS)})" for key in sorted(set(request) - set(ALLOWED_KEYS))]
    compile_only = request.get("compile_only", False)
    if not isinstance(compile_only, bool):  # then checked as a training run
        problems.append(f"compile_only: expected true or false, got {compile_only!r}")
    data = request.get("training_data_prefix")
    if compile_only is True:
        problems.extend(f"{key}: not used by a compile-only run (it compiles the base model as it is)" for key in sorted(set(request) - set(COMPILE_ONLY_KEYS)) if key in ALLOWED_KEYS)
    elif not isinstance(data, str) or not S3_PREFIX_PATTERN.match(data):
        problems.append(f"training_data_prefix: {data!r} must be a key prefix in the training bucket ending in '/' (lowercase, no s3://)")
    base = request.get("base_model_prefix", settings.default_base_model_prefix)
    if not isinstance(base, str) or not S3_PREFIX_PATTERN.match(base) or not base.startswith(settings.base_models_root) or base == settings.base_models_root:
        problems.append(f"base_model_prefix: {base!r} must be a folder under {settings.base_models_root} in the artifacts bucket, ending in '/'")
    description = request.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        problems.append(f"description must be a string of at most {MAX_DESCRIPTION} characters")
    hyper = request.get("hyperparameters", {})
    values: dict[str, str] = {}
    if not isinstance(hyper, dict):
        problems.append("hyperparameters must be an object")
    else:
        for name, value in sorted(hyper.items()):
            if name not in settings.spec:
                problems.append(f"hyperparameters.{name}: unknown or set by the pipeline (settable: {', '.join(sorted(settings.spec))})")
                continue
            try:
                values[name] = hyperparameter_value(name, value, settings.spec[name])
            except InputError as error:
                problems.extend(error.problems)
        if "tensor_parallel_size" in values and settings.neuron_cores % int(values["tensor_parallel_size"]):
            problems.append(f"hyperparameters.tensor_parallel_size: {values['tensor_parallel_size']} must divide the job's {settings.neuron_cores} NeuronCores")
    if problems:
        raise InputError(problems)
    if compile_only:
        return {"compile_only": True, "training_data_prefix": None, "base_model_prefix": base, "hyperparameters": {}, "description": description or f"Base model {base} compiled for Inferentia2"}
    return {
        "compile_only": False,
        "training_data_prefix": data,
        "base_model_prefix": base,
        "hyperparameters": values,
        "description": description or f"Fine-tuned from {base} on {data}",
    }


def job_names(job_prefix: str, *, now: datetime | None = None, token: str | None = None) -> dict[str, str]:
    """Unique names for this run's jobs and deploy resources; all start with `job_prefix`-."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    base = f"{job_prefix}-{stamp}-{token or secrets.token_hex(3)}"
    names = {"job_name": base, "compile_job_name": f"{base}-inf2", "model_name": base, "endpoint_config_name": base}
    bad = [name for name in names.values() if not NAME_PATTERN.match(name) or len(name) > MAX_NAME_LENGTH]
    if bad:
        raise ValueError(f"job prefix {job_prefix!r} gives invalid SageMaker names: {bad}")
    return names


def _list_keys(s3, bucket: str, prefix: str) -> list[dict[str, Any]]:
    keys: list[dict[str, Any]] = []
    request = {"Bucket": bucket, "Prefix": prefix}
    while len(keys) < MAX_LISTED_KEYS:
        page = s3.list_objects_v2(**request)
        keys.extend(page.get("Contents", []))  # an empty prefix has no Contents
        if not page.get("IsTruncated") or not page.get("NextContinuationToken"):
            break
        request["ContinuationToken"] = page["NextContinuationToken"]
    return keys


def check_s3(s3, request: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """Checks that the data and the base model exist (list + read config.json). Raises InputError."""
    problems = []
    data_keys = []
    if not request.get("compile_only"):
        data_keys = [item for item in _list_keys(s3, settings.training_bucket, request["training_data_prefix"]) if item["Key"].endswith(".jsonl")]
        if not data_keys:
            problems.append(f"training_data_prefix: no *.jsonl object under s3://{settings.training_bucket}/{request['training_data_prefix']}")
    base = request["base_model_prefix"]
    model_keys = {item["Key"][len(base):] for item in _list_keys(s3, settings.artifacts_bucket, base)}
    if "config.json" not in model_keys:
        problems.append(f"base_model_prefix: no config.json under s3://{settings.artifacts_bucket}/{base}")
    else:
        body = s3.get_object(Bucket=settings.artifacts_bucket, Key=f"{base}config.json")["Body"].read()
        try:
            model_type = json.loads(body).get("model_type")
        except (ValueError, AttributeError):
            problems.append(f"base_model_prefix: {base}config.json is not a JSON object")
        else:
            if model_type not in SUPPORTED_MODEL_TYPES:
                problems.append(f"base_model_prefix: model_type {model_type!r} is not one of {', '.join(SUPPORTED_MODEL_TYPES)}")
        if not any(key.endswith(".safetensors") for key in model_keys):
            problems.append(f"base_model_prefix: no *.safetensors weights under {base}")
        if not ({"tokenizer.json", "tokenizer.model"} & model_keys):
            problems.append(f"base_model_prefix: no tokenizer.json or tokenizer.model under {base}")
    if problems:
        raise InputError(problems)
    # No problem: config.json was read, so model_type is set. ListObjectsV2 always gives a Size.
    return {"data_files": len(data_keys), "data_bytes": sum(item["Size"] for item in data_keys), "model_type": model_type}


def prepare(request: Any, settings: Settings, s3, *, now: datetime | None = None, token: str | None = None) -> dict[str, Any]:
    """validate_request + check_s3 + names: the state machine's working input."""
    normalized = validate_request(request, settings)
    found = check_s3(s3, normalized, settings)
    return {
        **normalized,
        **job_names(settings.job_prefix, now=now, token=token),
        "training_data_uri": NO_DATA if normalized["compile_only"] else f"s3://{settings.training_bucket}/{normalized['training_data_prefix']}",
        "base_model_uri": f"s3://{settings.artifacts_bucket}/{normalized['base_model_prefix']}",
        "checks": found,
    }
