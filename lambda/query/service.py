"""The three modes: rag (retrieve -> prompt -> generate), kb (RetrieveAndGenerate), prompt (baseline).

`answer()` takes its clients as an argument (`Clients`), so tests give it botocore clients
wrapped in Stubbers and a fake OpenSearch transport; in Lambda, `Clients` makes the real ones
lazily, once per container, through `shared.aws_clients`.
"""

from __future__ import annotations

import time
from functools import cached_property
from typing import Any

from shared import aws_clients, opensearch_http
from shared.endpoint_codec import Generation

from . import citations, generators, prompts, retrievers
from .request import QueryRequest
from .settings import Settings

# The Inferentia2 model's context is bounded; keep prompt + answer inside it (rough 3 chars/token).
CHARS_PER_TOKEN = 3


class Clients:
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


def answer(request: QueryRequest, settings: Settings, clients: Clients) -> dict[str, Any]:
    """The response body for a valid request (raises on AWS failures; the handler maps them)."""
    started = time.perf_counter()
    retrieve_ms = 0.0
    if request.mode == "kb":
        generate_started = time.perf_counter()
        text, cited, usage = _managed_rag(request, settings, clients)
        generate_ms = _ms(generate_started)
        model = settings.kb_model
    else:
        passages: list[prompts.Passage] = []
        if request.mode == "rag":
            retrieve_started = time.perf_counter()
            passages = _retrieve(request, settings, clients)
            retrieve_ms = _ms(retrieve_started)
            prompt = prompts.rag_prompt(request.question, fit(passages, request.question, settings))
        else:
            prompt = prompts.baseline_prompt(request.question)
        generate_started = time.perf_counter()
        generation = _generate(prompt, settings, clients)
        generate_ms = _ms(generate_started)
        text = generation.text
        cited = citations.rag_citations(text, passages) if request.mode == "rag" else []
        usage = {"input_tokens": generation.input_tokens, "output_tokens": generation.output_tokens}
        model = settings.generation_model
    return {
        "answer": text,
        "citations": cited,
        "mode": request.mode,
        "model": model,
        "timings_ms": {"retrieve": round(retrieve_ms, 1), "generate": round(generate_ms, 1), "total": round(_ms(started), 1)},
        "usage": usage,
    }


def _retrieve(request: QueryRequest, settings: Settings, clients: Clients) -> list[prompts.Passage]:
    if request.retriever == "kb":
        return retrievers.retrieve_kb(
            clients.retrieval,
            knowledge_base_id=settings.knowledge_base_id,
            question=request.question,
            top_k=request.top_k,
            filters=request.filters,
        )
    return retrievers.retrieve_opensearch(
        clients.search,
        clients.embedding,
        index=settings.opensearch_index,
        pipeline=settings.search_pipeline,
        embedding_model_id=settings.embedding_model_id,
        dimensions=settings.embedding_dimensions,
        vector_field=settings.vector_field,
        text_field=settings.text_field,
        metadata_field=settings.metadata_field,
        question=request.question,
        top_k=request.top_k,
        filters=request.filters,
    )


def fit(passages: list[prompts.Passage], question: str, settings: Settings) -> list[prompts.Passage]:
    """Drops the lowest-ranked passages until the prompt plus the answer fit the endpoint's context."""
    if settings.generator != "endpoint" or not settings.endpoint_sequence_length:
        return passages
    budget = (settings.endpoint_sequence_length - settings.max_new_tokens) * CHARS_PER_TOKEN
    fixed = len(prompts.RAG_SYSTEM) + len(prompts.RAG_USER) + len(question)
    kept: list[prompts.Passage] = []
    used = fixed
    for passage in passages:
        cost = len(passage.text) + len(passage.source) + 40
        if kept and used + cost > budget:
            break
        kept.append(passage)
        used += cost
    return kept


def _generate(prompt: prompts.Prompt, settings: Settings, clients: Clients) -> Generation:
    if settings.generator == "endpoint":
        return generators.generate_endpoint(
            clients.endpoint,
            endpoint_name=settings.endpoint_name,
            served_model=settings.endpoint_model,
            prompt=prompt,
            max_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
        )
    return generators.generate_bedrock(
        clients.bedrock, model_id=settings.bedrock_model_arn, prompt=prompt, max_tokens=settings.max_new_tokens, temperature=settings.temperature
    )


def _managed_rag(request: QueryRequest, settings: Settings, clients: Clients):
    vector_search: dict[str, Any] = {"numberOfResults": request.top_k, "overrideSearchType": "SEMANTIC"}
    condition = retrievers.kb_filter(request.filters)
    if condition:
        vector_search["filter"] = condition
    response = clients.managed_rag.retrieve_and_generate(
        input={"text": request.question},
        retrieveAndGenerateConfiguration={
            "type": "KNOWLEDGE_BASE",
            "knowledgeBaseConfiguration": {
                "knowledgeBaseId": settings.knowledge_base_id,
                "modelArn": settings.bedrock_model_arn,
                "retrievalConfiguration": {"vectorSearchConfiguration": vector_search},
                "generationConfiguration": {
                    "inferenceConfig": {"textInferenceConfig": {"maxTokens": settings.max_new_tokens, "temperature": settings.temperature}}
                },
            },
        },
    )
    text, cited = citations.kb_answer_and_citations(response)
    return text, cited, {"input_tokens": None, "output_tokens": None}


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0
