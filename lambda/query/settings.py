"""The query function's settings: its environment, as the Serving stack writes it.

This is the one list of environment variable names the handler reads. The Serving stack sets
them from the stage's typed config; `tests/test_query_env_agreement.py` synthesizes the stack and
runs the handler with exactly the environment of the template, so a rename on either side fails
a test rather than a deployed request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

GENERATORS = ("endpoint", "bedrock")
RETRIEVERS = ("kb", "opensearch")
MODES = ("rag", "kb", "prompt")


class SettingsError(ValueError):
    """The environment is incomplete or wrong (a deployment fault: 500, detail in the logs)."""


@dataclass(frozen=True)
class Settings:
    region: str
    generator: str  # "endpoint" | "bedrock": who generates for modes rag and prompt
    bedrock_model_arn: str  # Converse (generator "bedrock") and RetrieveAndGenerate (mode "kb")
    endpoint_name: str | None  # SageMaker endpoint (generator "endpoint")
    endpoint_model: str  # served model name (serving contract); "" leaves it out of the body
    endpoint_sequence_length: int | None  # the endpoint model's context (prompt + answer), tokens
    knowledge_base_id: str
    embedding_model_id: str
    embedding_dimensions: int
    opensearch_endpoint: str  # https://host
    opensearch_index: str
    vector_field: str
    text_field: str
    metadata_field: str
    search_pipeline: str
    filterable_fields: tuple[str, ...]
    default_retriever: str
    default_top_k: int
    max_top_k: int
    max_question_chars: int
    max_new_tokens: int
    temperature: float
    retrieval_timeout_s: float
    generation_timeout_s: float

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env

        def text(name: str, default: str | None = None) -> str:
            value = env.get(name, default)
            if value is None or value == "":
                raise SettingsError(f"environment variable {name} is missing")
            return value

        def number(name: str, kind, default=None):
            raw = text(name, None if default is None else str(default))
            try:
                return kind(raw)
            except ValueError:
                raise SettingsError(f"environment variable {name}={raw!r} is not a {kind.__name__}") from None

        generator = text("GENERATOR")
        if generator not in GENERATORS:
            raise SettingsError(f"GENERATOR={generator!r}: allowed {GENERATORS}")
        default_retriever = text("DEFAULT_RETRIEVER", "kb")
        if default_retriever not in RETRIEVERS:
            raise SettingsError(f"DEFAULT_RETRIEVER={default_retriever!r}: allowed {RETRIEVERS}")
        endpoint_name = env.get("ENDPOINT_NAME") or None
        if generator == "endpoint" and endpoint_name is None:
            raise SettingsError("GENERATOR=endpoint needs ENDPOINT_NAME")
        settings = Settings(
            region=text("AWS_REGION"),
            generator=generator,
            bedrock_model_arn=text("BEDROCK_MODEL_ARN"),
            endpoint_name=endpoint_name,
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
            filterable_fields=tuple(f for f in env.get("FILTERABLE_FIELDS", "").split(",") if f),
            default_retriever=default_retriever,
            default_top_k=number("DEFAULT_TOP_K", int),
            max_top_k=number("MAX_TOP_K", int),
            max_question_chars=number("MAX_QUESTION_CHARS", int),
            max_new_tokens=number("MAX_NEW_TOKENS", int),
            temperature=number("TEMPERATURE", float),
            retrieval_timeout_s=number("RETRIEVAL_TIMEOUT_S", float, 5),
            generation_timeout_s=number("GENERATION_TIMEOUT_S", float),
        )
        if not 1 <= settings.default_top_k <= settings.max_top_k:
            raise SettingsError(f"DEFAULT_TOP_K={settings.default_top_k} must be within 1..MAX_TOP_K={settings.max_top_k}")
        if not settings.opensearch_endpoint.startswith("https://"):
            raise SettingsError("OPENSEARCH_ENDPOINT must start with https://")
        return settings

    @property
    def generation_model(self) -> str:
        """What the response reports as `model` for modes rag and prompt."""
        if self.generator == "endpoint":
            return f"sagemaker:{self.endpoint_name}"
        return self.bedrock_model_arn.rsplit("/", 1)[-1]

    @property
    def kb_model(self) -> str:
        return self.bedrock_model_arn.rsplit("/", 1)[-1]
