"""The deployed stage's Backend: retrievers, generators and managed RAG on AWS clients.

Clients are made on first use, once per container, through `shared.aws_clients` (explicit
timeouts, standard retries, the invocation deadline); `AwsClients` is a set of cached properties,
so tests preset them with botocore clients wrapped in Stubbers and a fake OpenSearch transport.

Generators, in `auto`'s preference order: `finetuned` and `base` (the stage's Inferentia2
endpoint, one production variant each) and `bedrock` (Converse on the configured model).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Optional, Sequence

from shared import aws_clients, opensearch_http
from shared.endpoint_codec import Generation

from . import generators, prompts, retrievers
from .service import Backend, GeneratorStatus, ManagedAnswer
from . import citations
from .settings import Settings

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
        self._status = GeneratorStatus(self.name, True, model, None, None, BEDROCK_CONTEXT_TOKENS.get(model))

    def status(self) -> GeneratorStatus:
        return self._status

    def generate(self, prompt: prompts.Prompt, *, question: str, passages: Sequence[prompts.Passage], max_tokens: int, temperature: float) -> Generation:
        return generators.generate_bedrock(
            self.clients.bedrock, model_id=self.settings.bedrock_model_arn, prompt=prompt, max_tokens=max_tokens, temperature=temperature
        )


class EndpointGenerator:
    """One role (`base` or `finetuned`) on the stage's Inferentia2 endpoint."""

    def __init__(self, role: str, settings: Settings, clients: AwsClients):
        self.name, self.settings, self.clients = role, settings, clients

    def status(self) -> GeneratorStatus:
        s = self.settings
        if s.endpoint_name is None:
            return GeneratorStatus(
                self.name, False, None, None,
                f"generator {self.name!r} needs the stage's Inferentia2 endpoint, and this stage has none "
                "(inference.enabled is false in its config): enable it and deploy",
                None,
            )
        model = f"sagemaker:{s.endpoint_name}/{self.name}"
        if self.name != "finetuned":  # a single-model endpoint serves the fine-tuned model only
            return GeneratorStatus(self.name, False, model, None, f"generator {self.name!r} has no model on this stage yet", s.endpoint_sequence_length)
        return GeneratorStatus(self.name, True, model, None, None, s.endpoint_sequence_length)

    def generate(self, prompt: prompts.Prompt, *, question: str, passages: Sequence[prompts.Passage], max_tokens: int, temperature: float) -> Generation:
        return generators.generate_endpoint(
            self.clients.endpoint,
            endpoint_name=self.settings.endpoint_name,
            served_model=self.settings.endpoint_model,
            prompt=prompt,
            max_tokens=max_tokens,
            temperature=temperature,
        )


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
    return Backend(
        retrievers={"kb": KnowledgeBaseRetriever(settings, clients), "opensearch": OpenSearchRetriever(settings, clients)},
        generators={
            "finetuned": EndpointGenerator("finetuned", settings, clients),
            "base": EndpointGenerator("base", settings, clients),
            "bedrock": BedrockGenerator(settings, clients),
        },
        managed_rag=ManagedRag(settings, clients),
    )
