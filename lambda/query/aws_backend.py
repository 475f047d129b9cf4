"""The deployed stage's Backend: retrievers, generators and managed RAG on AWS clients.

Clients are made on first use, once per container, through `shared.aws_clients` (explicit
timeouts, standard retries, the invocation deadline); `AwsClients` is a set of cached properties,
so tests preset them with botocore clients wrapped in Stubbers and a fake OpenSearch transport.

Generators, in `auto`'s preference order: `finetuned` and `base` (the stage's Inferentia2
endpoint, one production variant each) and `bedrock` (Converse on the configured model).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Mapping, Optional, Sequence

from botocore.exceptions import BotoCoreError, ClientError

from shared import aws_clients, model_record, opensearch_http
from shared.endpoint_codec import Generation

from . import citations, generators, prompts, retrievers
from .service import Backend, GeneratorStatus, GeneratorUnavailable, ManagedAnswer
from .settings import Settings

# Geography prefixes of cross-region inference profile ids (us.amazon.nova-lite-v1:0).
GEO_PREFIXES = frozenset({"us", "eu", "apac", "jp", "au", "ca", "global", "us-gov"})
# Context windows (prompt + answer, tokens) of Bedrock models this project is tested with; any
# other model id is treated as unbounded (Bedrock then rejects an over-long prompt itself).
BEDROCK_CONTEXT_TOKENS = {
    "amazon.nova-micro-v1:0": 128_000,
    "amazon.nova-lite-v1:0": 300_000,
    "amazon.nova-pro-v1:0": 300_000,
}


class AwsClients:
    """The clients a request may need, each made on first use (cached_property: tests preset them)."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def _client(self, service: str, read_timeout: float, max_attempts: int):
        return aws_clients.client(service, read_timeout=read_timeout, max_attempts=max_attempts, region=self.settings.region)

    @cached_property
    def retrieval(self):  # bedrock-agent-runtime Retrieve
        return self._client("bedrock-agent-runtime", self.settings.retrieval_timeout_s, 3)

    @cached_property
    def managed_rag(self):  # bedrock-agent-runtime RetrieveAndGenerate (retrieval + generation)
        return self._client("bedrock-agent-runtime", self.settings.generation_timeout_s, 2)

    @cached_property
    def embedding(self):  # bedrock-runtime InvokeModel on the embedding model
        return self._client("bedrock-runtime", self.settings.retrieval_timeout_s, 3)

    @cached_property
    def bedrock(self):  # bedrock-runtime Converse
        return self._client("bedrock-runtime", self.settings.generation_timeout_s, 2)

    @cached_property
    def endpoint(self):  # sagemaker-runtime InvokeEndpoint
        return self._client("sagemaker-runtime", self.settings.generation_timeout_s, 2)

    @cached_property
    def control(self):  # sagemaker DescribeEndpoint (cached by EndpointState)
        return self._client("sagemaker", self.settings.retrieval_timeout_s, 2)

    @cached_property
    def control_ssm(self):  # ssm GetParameter on the endpoint's power parameter
        return self._client("ssm", self.settings.retrieval_timeout_s, 2)

    @cached_property
    def search(self):
        """`search(path, body) -> OpenSearchResponse`: a SigV4-signed POST to the domain."""
        settings = self.settings

        def search(path: str, body: dict):
            timeout = settings.retrieval_timeout_s
            left = aws_clients.remaining_s()
            if left is not None:
                aws_clients.check_time(1.0, "OpenSearch search")
                timeout = min(timeout, left)
            return opensearch_http.signed_request(
                endpoint=settings.opensearch_endpoint,
                method="POST",
                path=path,
                region=settings.region,
                credentials=aws_clients.credentials(),
                body=body,
                timeout_s=timeout,
            )

        return search


class KnowledgeBaseRetriever:
    def __init__(self, settings: Settings, clients: AwsClients):
        self.settings, self.clients = settings, clients

    def __call__(self, *, question: str, top_k: int, filters: dict[str, Any]) -> list[prompts.Passage]:
        return retrievers.retrieve_kb(
            self.clients.retrieval, knowledge_base_id=self.settings.knowledge_base_id, question=question, top_k=top_k, filters=filters
        )


class OpenSearchRetriever:
    def __init__(self, settings: Settings, clients: AwsClients):
        self.settings, self.clients = settings, clients

    def __call__(self, *, question: str, top_k: int, filters: dict[str, Any]) -> list[prompts.Passage]:
        s = self.settings
        return retrievers.retrieve_opensearch(
            self.clients.search,
            self.clients.embedding,
            index=s.opensearch_index,
            pipeline=s.search_pipeline,
            embedding_model_id=s.embedding_model_id,
            dimensions=s.embedding_dimensions,
            vector_field=s.vector_field,
            text_field=s.text_field,
            metadata_field=s.metadata_field,
            question=question,
            top_k=top_k,
            filters=filters,
        )


class BedrockGenerator:
    """Converse on the configured Bedrock model: available whenever the stage is deployed."""

    name = "bedrock"

    def __init__(self, settings: Settings, clients: AwsClients):
        self.settings, self.clients = settings, clients
        model = settings.bedrock_model_id
        prefix, _, rest = str(model).partition(".")
        base_model = rest if prefix in GEO_PREFIXES else model  # a cross-region profile names its base model
        self._status = GeneratorStatus(self.name, True, model, None, None, BEDROCK_CONTEXT_TOKENS.get(base_model))

    def status(self) -> GeneratorStatus:
        return self._status

    def generate(self, prompt: prompts.Prompt, *, question: str, passages: Sequence[prompts.Passage], max_tokens: int, temperature: float) -> Generation:
        return generators.generate_bedrock(
            self.clients.bedrock, model_id=self.settings.bedrock_model_arn, prompt=prompt, max_tokens=max_tokens, temperature=temperature
        )


# Endpoint statuses in which the current production variants answer (SageMaker keeps serving
# the old fleet during an update or a rollback; UpdateRollbackFailed still serves a mix).
SERVING_STATUSES = frozenset({"InService", "Updating", "SystemUpdating", "RollingBack", "UpdateRollbackFailed"})
STATE_TTL_S = 30.0  # how long one DescribeEndpoint (and power reading) answers for
STATE_ERROR_TTL_S = 5.0  # a failed reading is retried sooner
RETRY_CREATING_S = 60  # Retry-After while the endpoint or a variant is being created
RETRY_ABSENT_S = 600  # Retry-After while a model is missing or the endpoint is off (an operator must act)
RETRY_UNKNOWN_S = 5  # Retry-After when the endpoint's state could not be read


@dataclass(frozen=True)
class EndpointSnapshot:
    """What one DescribeEndpoint (plus the power parameter, when the endpoint is absent) said."""

    exists: bool = False
    status: Optional[str] = None
    variants: frozenset = frozenset()  # production variants serving now
    pending: frozenset = frozenset()  # variants of a deployment in progress
    versions: Mapping[str, Optional[str]] = field(default_factory=dict)  # role -> model version
    power: Optional[bool] = None  # the power parameter: None = not read (the endpoint exists) or not set
    power_missing: bool = False  # the power parameter does not exist (the stage was never fully deployed)
    error: Optional[str] = None  # the AWS error code when the state could not be read


class EndpointState:
    """The stage's endpoint, read at most once per STATE_TTL_S per container (shared by both roles)."""

    def __init__(self, settings: Settings, clients: "AwsClients", clock: Callable[[], float] = time.monotonic):
        self.settings, self.clients, self.clock = settings, clients, clock
        self._snapshot: EndpointSnapshot  # read on first use
        self._expires = -math.inf

    def snapshot(self) -> EndpointSnapshot:
        now = self.clock()
        if now >= self._expires:
            self._snapshot = self._read()
            self._expires = now + (STATE_ERROR_TTL_S if self._snapshot.error else STATE_TTL_S)
        return self._snapshot

    def invalidate(self) -> None:
        self._expires = -math.inf

    def _read(self) -> EndpointSnapshot:
        try:
            described = self.clients.control.describe_endpoint(EndpointName=self.settings.endpoint_name)
        except ClientError as error:
            code = _error_code(error)
            if code == "ValidationException" and "not find" in str(error).lower():
                return EndpointSnapshot(**self._power())  # absent: the power parameter says why
            return EndpointSnapshot(error=code)
        except (BotoCoreError, aws_clients.DeadlineExceeded) as error:
            return EndpointSnapshot(error=type(error).__name__)
        status = described.get("EndpointStatus")
        variants = frozenset(v.get("VariantName") for v in described.get("ProductionVariants") or [])
        pending = frozenset(v.get("VariantName") for v in (described.get("PendingDeploymentSummary") or {}).get("ProductionVariants") or [])
        try:
            versions = model_record.versions_from_config_name(described["EndpointConfigName"])  # required in the answer
        except model_record.RecordError:
            versions = {}
        power = self._power().get("power") if status == "Deleting" else None
        return EndpointSnapshot(exists=True, status=status, variants=variants, pending=pending, versions=versions, power=power)

    def _power(self) -> dict:
        """The power parameter as snapshot fields: {"power": bool}, {"power_missing": True} or {"error": code}."""
        try:
            value = self.clients.control_ssm.get_parameter(Name=self.settings.power_parameter)["Parameter"]["Value"]
        except ClientError as error:
            code = _error_code(error)
            return {"power_missing": True} if code == "ParameterNotFound" else {"error": code}
        except (BotoCoreError, aws_clients.DeadlineExceeded) as error:
            return {"error": type(error).__name__}
        try:
            return {"power": model_record.parse_power(value)}
        except model_record.RecordError:
            return {"error": "InvalidPowerValue"}


class EndpointGenerator:
    """One role (`base` or `finetuned`) on the stage's Inferentia2 endpoint: a production variant."""

    def __init__(self, role: str, settings: Settings, clients: "AwsClients", state: EndpointState):
        self.name, self.settings, self.clients, self.state = role, settings, clients, state

    def status(self) -> GeneratorStatus:
        s, role = self.settings, self.name
        if s.endpoint_name is None:
            return self._unavailable(
                f"generator {role!r} needs an Inferentia2 endpoint and stage {s.stage!r} has none "
                "(inference.enabled is false in its config): set it to true and deploy the stage",
                None, RETRY_ABSENT_S,
            )
        model = f"sagemaker:{s.endpoint_name}/{role}"
        if role == "base" and not s.serve_base:
            return self._unavailable(
                f"generator 'base' is switched off on stage {s.stage!r} (inference.serve_base is false in its config): "
                "set it to true and deploy the stage",
                model, RETRY_ABSENT_S,
            )
        snap = self.state.snapshot()
        if snap.error:
            return self._unavailable(
                f"the state of endpoint {s.endpoint_name!r} could not be read ({snap.error}); retry shortly", model, RETRY_UNKNOWN_S
            )
        variant = model_record.VARIANT_NAMES[role]
        if snap.exists and snap.status in SERVING_STATUSES and variant in snap.variants:
            return GeneratorStatus(role, True, model, snap.versions.get(role), None, s.endpoint_sequence_length)
        if snap.exists and (snap.status == "Creating" or variant in snap.pending):
            return self._unavailable(
                f"generator {role!r} is being deployed on endpoint {s.endpoint_name!r} (status {snap.status}): retry in a few minutes",
                model, RETRY_CREATING_S,
            )
        if snap.exists and snap.status == "Deleting" and snap.power is True:
            return self._unavailable(
                f"endpoint {s.endpoint_name!r} is being replaced: retry in a few minutes", model, RETRY_CREATING_S
            )
        if not snap.exists and snap.power_missing:
            return self._unavailable(
                f"stage {s.stage!r} has no serving record yet (SSM parameter {s.power_parameter} is missing): "
                f"deploy the stage (make deploy STAGE={s.stage})",
                model, RETRY_ABSENT_S,
            )
        if snap.exists and snap.status == "Deleting" or not snap.exists and snap.power is False:
            return self._unavailable(
                f"generator {role!r} is switched off on stage {s.stage!r} (its endpoint is off to save cost): "
                f"switch it on with {POWER_ON_COMMAND.format(stage=s.stage)} and retry in about 15 minutes",
                model, RETRY_ABSENT_S,
            )
        if snap.exists and snap.status not in SERVING_STATUSES:
            return self._unavailable(
                f"endpoint {s.endpoint_name!r} is {snap.status}: see its FailureReason "
                f"(aws sagemaker describe-endpoint --endpoint-name {s.endpoint_name}) and the Inference stack's events",
                model, RETRY_CREATING_S,
            )
        return self._unavailable(
            f"generator {role!r} has no model on stage {s.stage!r} yet: {HOW_TO_DEPLOY[role].format(stage=s.stage)}",
            model, RETRY_ABSENT_S,
        )

    def _unavailable(self, reason: str, model: Optional[str], retry: int) -> GeneratorStatus:
        return GeneratorStatus(self.name, False, model, None, reason, self.settings.endpoint_sequence_length, retry)

    def generate(self, prompt: prompts.Prompt, *, question: str, passages: Sequence[prompts.Passage], max_tokens: int, temperature: float) -> Generation:
        try:
            return generators.generate_endpoint(
                self.clients.endpoint,
                endpoint_name=self.settings.endpoint_name,
                variant=model_record.VARIANT_NAMES[self.name],
                served_model=self.settings.endpoint_model,
                prompt=prompt,
                max_tokens=max_tokens,
                temperature=temperature,
            )
        except ClientError as error:
            if _error_code(error) == "ValidationError":
                # The endpoint or the variant may have gone since the cached reading (switched off,
                # a deploy removed the variant): read it again and say so if it is not available.
                self.state.invalidate()
                now = self.status()
                if not now.available:
                    raise GeneratorUnavailable.of(now) from error
            raise


# What the 503 of an endpoint generator without a model tells the caller to run (scripts of the
# model lifecycle, see the README's model lifecycle section).
HOW_TO_DEPLOY = {
    "finetuned": "start a fine-tuning run with scripts/start_training.py --stage {stage} --data <training data prefix>/ "
                 "(the pipeline deploys the new version when training.auto_deploy is on, or once you approve it)",
    "base": "compile the base model for Inferentia2 with scripts/start_training.py --stage {stage} --compile-only "
            "(it registers and deploys it as the base version)",
}
POWER_ON_COMMAND = "scripts/endpoint_power.py --stage {stage} on"


def _error_code(error: ClientError) -> str:
    """The AWS error code (botocore always parses a response dict; a code can be missing)."""
    return str((error.response.get("Error") or {}).get("Code") or "ClientError")


class ManagedRag:
    """Mode kb: Bedrock's RetrieveAndGenerate on the knowledge base with the Bedrock model."""

    def __init__(self, settings: Settings, clients: AwsClients):
        self.settings, self.clients = settings, clients

    def __call__(self, *, question: str, top_k: int, filters: dict[str, Any], max_tokens: int, temperature: float) -> ManagedAnswer:
        vector_search: dict[str, Any] = {"numberOfResults": top_k, "overrideSearchType": "SEMANTIC"}
        condition = retrievers.kb_filter(filters)
        if condition:
            vector_search["filter"] = condition
        response = self.clients.managed_rag.retrieve_and_generate(
            input={"text": question},
            retrieveAndGenerateConfiguration={
                "type": "KNOWLEDGE_BASE",
                "knowledgeBaseConfiguration": {
                    "knowledgeBaseId": self.settings.knowledge_base_id,
                    "modelArn": self.settings.bedrock_model_arn,
                    "retrievalConfiguration": {"vectorSearchConfiguration": vector_search},
                    "generationConfiguration": {"inferenceConfig": {"textInferenceConfig": {"maxTokens": max_tokens, "temperature": temperature}}},
                },
            },
        )
        text, cited = citations.kb_answer_and_citations(response)
        return ManagedAnswer(text=text, citations=cited, model=self.settings.bedrock_model_id)


def build(settings: Settings, clients: Optional[AwsClients] = None) -> Backend:
    """The deployed stage's backend (clients are made on first use unless given)."""
    clients = clients or AwsClients(settings)
    state = EndpointState(settings, clients)  # read only when the stage has an endpoint
    return Backend(
        retrievers={"kb": KnowledgeBaseRetriever(settings, clients), "opensearch": OpenSearchRetriever(settings, clients)},
        generators={
            "finetuned": EndpointGenerator("finetuned", settings, clients, state),
            "base": EndpointGenerator("base", settings, clients, state),
            "bedrock": BedrockGenerator(settings, clients),
        },
        managed_rag=ManagedRag(settings, clients),
    )
