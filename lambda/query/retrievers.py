"""Retrievers: the knowledge base's Retrieve, or a direct hybrid (k-NN + BM25) OpenSearch query.

Both return `Passage`s numbered 1..n in rank order, so the prompt and the citations agree.
Retrieved text is data from documents: a lone surrogate in it (JSON allows `\ud800`, UTF-8 does
not) becomes U+FFFD here, so it can reach neither the model call nor the response.
Clients are arguments (botocore clients, or a `search(path, body)` callable for OpenSearch),
which keeps these functions testable with botocore's Stubber and a fake transport.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable
from urllib.parse import quote

from shared.api import UpstreamError, scrub_surrogates

from .prompts import Passage

SOURCE_URI_FIELD = "x-amz-bedrock-kb-source-uri"  # written by the knowledge base's ingestion


def kb_filter(filters: dict[str, Any]) -> dict | None:
    """Request filters -> a knowledge base RetrievalFilter (equals / in, combined with andAll)."""
    clauses = [
        {"in": {"key": key, "value": value}} if isinstance(value, list) else {"equals": {"key": key, "value": value}}
        for key, value in filters.items()
    ]
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"andAll": clauses}


def retrieve_kb(client, *, knowledge_base_id: str, question: str, top_k: int, filters: dict[str, Any]) -> list[Passage]:
    """Semantic search through the knowledge base's Retrieve API."""
    vector_search: dict[str, Any] = {"numberOfResults": top_k, "overrideSearchType": "SEMANTIC"}
    condition = kb_filter(filters)
    if condition:
        vector_search["filter"] = condition
    response = client.retrieve(
        knowledgeBaseId=knowledge_base_id,
        retrievalQuery={"text": question},
        retrievalConfiguration={"vectorSearchConfiguration": vector_search},
    )
    passages = []
    for result in response["retrievalResults"]:  # required in Retrieve's answer
        text = (result.get("content") or {}).get("text") or ""
        if not text.strip():
            continue
        passages.append(
            Passage(n=len(passages) + 1, text=scrub_surrogates(text), source=location_uri(result.get("location")), score=_score(result.get("score")))
        )
    return passages[:top_k]


def location_uri(location: dict | None) -> str:
    """The document address of a knowledge base result (S3 URI for an S3 data source)."""
    if not isinstance(location, dict):
        return "unknown"
    for key, field in (("s3Location", "uri"), ("webLocation", "url"), ("customDocumentLocation", "id")):
        value = (location.get(key) or {}).get(field)
        if isinstance(value, str) and value:
            return scrub_surrogates(value)
    kind = location.get("type")
    return scrub_surrogates(kind) if isinstance(kind, str) and kind else "unknown"


def _score(value: Any) -> float | None:
    """A finite numeric score, or None (the response must stay valid JSON)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def embed(client, *, model_id: str, dimensions: int, text: str) -> list[float]:
    """The question's embedding from the knowledge base's own embedding model (Titan v2)."""
    response = client.invoke_model(
        modelId=model_id,
        contentType="application/json",
        accept="application/json",
        body=json.dumps({"inputText": text, "dimensions": dimensions, "normalize": True}),
    )
    payload = json.loads(response["body"].read())
    vector = payload.get("embedding")
    if not isinstance(vector, list) or len(vector) != dimensions:
        raise UpstreamError("embedding model", 502, f"expected {dimensions} dimensions")
    return vector


def hybrid_query(*, question: str, vector: list[float], top_k: int, filters: dict[str, Any], vector_field: str, text_field: str) -> dict:
    """A hybrid query: BM25 on the text field and k-NN on the vector field, same filters on both.

    The domain's search pipeline (normalization processor) normalises and combines the two
    scores; without `?search_pipeline=` OpenSearch rejects a hybrid query.
    """
    terms = [{"terms": {key: value}} if isinstance(value, list) else {"term": {key: value}} for key, value in filters.items()]
    lexical: dict[str, Any] = {"match": {text_field: {"query": question}}}
    knn: dict[str, Any] = {"vector": vector, "k": top_k}
    if terms:
        lexical = {"bool": {"must": [lexical], "filter": terms}}
        knn["filter"] = {"bool": {"filter": terms}}
    return {
        "size": top_k,
        "_source": {"excludes": [vector_field]},
        "query": {"hybrid": {"queries": [lexical, {"knn": {vector_field: knn}}]}},
    }


def retrieve_opensearch(
    search: Callable[[str, dict], Any],
    embed_client,
    *,
    index: str,
    pipeline: str,
    embedding_model_id: str,
    dimensions: int,
    vector_field: str,
    text_field: str,
    metadata_field: str,
    question: str,
    top_k: int,
    filters: dict[str, Any],
) -> list[Passage]:
    """Embeds the question, runs the hybrid query, returns the hits as passages."""
    vector = embed(embed_client, model_id=embedding_model_id, dimensions=dimensions, text=question)
    body = hybrid_query(question=question, vector=vector, top_k=top_k, filters=filters, vector_field=vector_field, text_field=text_field)
    path = f"/{quote(index)}/_search?search_pipeline={quote(pipeline)}"  # names as config allows: nothing else to escape
    response = search(path, body)
    if not response.ok:
        raise UpstreamError("OpenSearch search", response.status, json.dumps(response.body))  # UpstreamError keeps 500 characters
    body = response.body if isinstance(response.body, dict) else {}
    hits = (body.get("hits") or {}).get("hits") or []
    passages = []
    for hit in hits if isinstance(hits, list) else []:
        if not isinstance(hit, dict):
            continue
        source = hit.get("_source") if isinstance(hit.get("_source"), dict) else {}
        text = source.get(text_field)
        if not isinstance(text, str) or not text.strip():
            continue
        passages.append(
            Passage(n=len(passages) + 1, text=scrub_surrogates(text), source=scrub_surrogates(_hit_source(hit, source, metadata_field)), score=_score(hit.get("_score")))
        )
    return passages[:top_k]


def _hit_source(hit: dict, source: dict, metadata_field: str) -> str:
    if isinstance(source.get(SOURCE_URI_FIELD), str):
        return source[SOURCE_URI_FIELD]
    metadata = source.get(metadata_field)
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            pass  # still a string: no source in it
    if isinstance(metadata, dict):
        for key in (SOURCE_URI_FIELD, "source"):
            if isinstance(metadata.get(key), str):
                return metadata[key]
    return f"opensearch:{hit.get('_id', 'unknown')}"
