"""The query function's settings: the request limits, and (deployed only) its AWS names.

This is the one list of environment variable names the handler reads. The Serving stack sets
them from the stage's typed config; `tests/test_query_env_agreement.py` synthesizes the stack and
runs the handler with exactly the environment of the template, so a rename on either side fails
a test rather than a deployed request.

Local mode builds its settings with `Settings.local(**overrides)`: the same request limits and
defaults as the config (`ServingConfig`; a test keeps the two equal), no AWS names.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Mapping, Optional

RETRIEVERS = ("kb", "opensearch")
MODES = ("rag", "kb", "prompt")
AUTO = "auto"
# A deployed stage's generators, in `auto`'s preference order.
DEPLOYED_GENERATORS = ("finetuned", "base", "bedrock")
ENDPOINT_GENERATORS = ("finetuned", "base")  # the roles of the stage's Inferentia2 endpoint


class SettingsError(ValueError):
    """The settings are incomplete or wrong (a deployment fault: 500, detail in the logs)."""


@dataclass(frozen=True)
class Settings:
    # --- request limits and defaults: every target (the defaults equal ServingConfig's) ---
    max_question_chars: int = 2000
    default_top_k: int = 5
    max_top_k: int = 20
    filterable_fields: tuple[str, ...] = ("category", "collection")
    default_retriever: str = "kb"
    default_generator: str = AUTO  # "auto" = the first available generator of the target's order
    max_new_tokens: int = 512
    temperature: float = 0.2
    # --- deployed stage only (None in local mode) ---
    region: Optional[str] = None
    stage: Optional[str] = None  # the stage's name, for messages (e.g. "--stage dev")
    bedrock_model_arn: Optional[str] = None  # Converse (generator "bedrock") and RetrieveAndGenerate (mode "kb")
    endpoint_name: Optional[str] = None  # the stage's SageMaker endpoint; None = inference disabled
    serve_base: bool = True  # false: the stage never has a base variant (inference.serve_base)
    power_parameter: Optional[str] = None  # SSM parameter: the endpoint's power, "on" | "off"
    endpoint_model: str = ""  # served model name (serving contract); "" leaves it out of the body
    endpoint_sequence_length: Optional[int] = None  # the endpoint model's context (prompt + answer), tokens
    knowledge_base_id: Optional[str] = None
    embedding_model_id: Optional[str] = None
    embedding_dimensions: Optional[int] = None
    opensearch_endpoint: Optional[str] = None  # https://host
    opensearch_index: Optional[str] = None
    vector_field: Optional[str] = None
    text_field: Optional[str] = None
    metadata_field: Optional[str] = None
    search_pipeline: Optional[str] = None
    retrieval_timeout_s: float = 5.0
    generation_timeout_s: float = 20.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_top_k:
            raise SettingsError(f"max_top_k={self.max_top_k} must be at least 1")
        if not 1 <= self.default_top_k <= self.max_top_k:
            raise SettingsError(f"default_top_k={self.default_top_k} must be within 1..max_top_k={self.max_top_k}")
        if self.max_question_chars < 1:
            raise SettingsError(f"max_question_chars={self.max_question_chars} must be at least 1")
        if self.default_retriever not in RETRIEVERS:
            raise SettingsError(f"default_retriever={self.default_retriever!r}: allowed {RETRIEVERS}")
        if not isinstance(self.default_generator, str) or not self.default_generator:
            raise SettingsError("default_generator must be a generator name or 'auto'")
        if self.max_new_tokens < 1:
            raise SettingsError(f"max_new_tokens={self.max_new_tokens} must be at least 1")
        if not (math.isfinite(self.temperature) and 0.0 <= self.temperature <= 2.0):
            raise SettingsError(f"temperature={self.temperature} must be within 0.0..2.0")
        if isinstance(self.filterable_fields, str):  # a string would be split into one-letter fields
            raise SettingsError("filterable_fields must be a tuple of field names, not a string")

    @classmethod
    def local(cls, **overrides) -> "Settings":
        """Settings for local mode: the config's request defaults, no AWS names, `overrides` applied."""
        if "filterable_fields" in overrides:
            overrides["filterable_fields"] = _fields(overrides["filterable_fields"])
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise SettingsError(f"unknown setting {unknown[0]!r}")
        return cls(**overrides)

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None) -> "Settings":
        """A deployed stage's settings from the function's environment (the Serving stack's names)."""
        env = os.environ if env is None else env

        def text(name: str, default: str | None = None) -> str:
            value = env.get(name, default)
            if value is None or value == "":
                raise SettingsError(f"environment variable {name} is missing")
            return value

        def number(name: str, kind, default=None):
            raw = text(name, None if default is None else str(default))
            try:
                value = kind(raw)
            except ValueError:
                raise SettingsError(f"environment variable {name}={raw!r} is not {'an integer' if kind is int else 'a number'}") from None
            if kind is float and not math.isfinite(value):
                raise SettingsError(f"environment variable {name}={raw!r} is not a finite number")
            return value

        default_generator = text("DEFAULT_GENERATOR", AUTO)
        if default_generator not in (AUTO, *DEPLOYED_GENERATORS):
            raise SettingsError(f"DEFAULT_GENERATOR={default_generator!r}: allowed {(AUTO, *DEPLOYED_GENERATORS)}")
        endpoint_name = env.get("ENDPOINT_NAME") or None
        if default_generator in ENDPOINT_GENERATORS and endpoint_name is None:
            raise SettingsError(f"DEFAULT_GENERATOR={default_generator!r} needs ENDPOINT_NAME (the stage's endpoint)")
        serve_base = text("SERVE_BASE", "true")
        if serve_base not in ("true", "false"):
            raise SettingsError(f"SERVE_BASE={serve_base!r}: allowed 'true', 'false'")
        try:
            settings = Settings(
                region=text("AWS_REGION"),
                stage=text("STAGE_NAME"),
                default_generator=default_generator,
                bedrock_model_arn=text("BEDROCK_MODEL_ARN"),
                endpoint_name=endpoint_name,
                serve_base=serve_base == "true",
                power_parameter=text("ENDPOINT_POWER_PARAMETER") if endpoint_name else None,
                endpoint_model=env.get("ENDPOINT_MODEL_NAME", ""),
                endpoint_sequence_length=number("ENDPOINT_SEQUENCE_LENGTH", int) if env.get("ENDPOINT_SEQUENCE_LENGTH") else None,
                knowledge_base_id=text("KNOWLEDGE_BASE_ID"),
                embedding_model_id=text("EMBEDDING_MODEL_ID"),
                embedding_dimensions=number("EMBEDDING_DIMENSIONS", int),
                opensearch_endpoint=text("OPENSEARCH_ENDPOINT"),
                opensearch_index=text("OPENSEARCH_INDEX"),
                vector_field=text("OPENSEARCH_VECTOR_FIELD"),
                text_field=text("OPENSEARCH_TEXT_FIELD"),
                metadata_field=text("OPENSEARCH_METADATA_FIELD"),
                search_pipeline=text("OPENSEARCH_SEARCH_PIPELINE"),
                filterable_fields=_fields(env.get("FILTERABLE_FIELDS", "")),
                default_retriever=text("DEFAULT_RETRIEVER", "kb"),
                default_top_k=number("DEFAULT_TOP_K", int),
                max_top_k=number("MAX_TOP_K", int),
                max_question_chars=number("MAX_QUESTION_CHARS", int),
                max_new_tokens=number("MAX_NEW_TOKENS", int),
                temperature=number("TEMPERATURE", float),
                retrieval_timeout_s=number("RETRIEVAL_TIMEOUT_S", float, 5),
                generation_timeout_s=number("GENERATION_TIMEOUT_S", float),
            )
        except SettingsError as error:
            raise SettingsError(f"environment: {error}") from None
        if not settings.opensearch_endpoint.startswith("https://"):
            raise SettingsError("OPENSEARCH_ENDPOINT must start with https://")
        return settings

    @property
    def bedrock_model_id(self) -> str | None:
        """The Bedrock model's id (the last part of its ARN), as responses and /health report it."""
        return None if self.bedrock_model_arn is None else self.bedrock_model_arn.rsplit("/", 1)[-1]


def _fields(value) -> tuple[str, ...]:
    """Filterable fields from a comma-separated string or a sequence of names."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(item.strip() for item in items if isinstance(item, str) and item.strip())
