"""Local mode's configuration and the `query.service.Backend` it serves.

Everything that shapes answers comes from the project's typed config (`stacks/config.py`): the
defaults, or one stage's values from cdk.json with `--stage`: chunk size and overlap
(`knowledge_base`), the hybrid weight and filterable fields (`search`), the request limits and
the Bedrock model (`serving`, through `Settings.local`).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from query import prompts
from query.service import Backend
from query.settings import Settings
from stacks import config as stack_config

from . import ROOT, generators
from . import text as textlib
from .embedding import Embedder
from .indexer import ChunkSettings, Progress, SyncReport, open_index
from .store import Hit, Index

DEFAULT_DOCUMENTS = ROOT / "model_artifacts" / "sample_documents"
DEFAULT_CACHE = ROOT / ".local-cache"
DEFAULT_PORT = 8787
LOCAL_GENERATORS = ("extractive", "llm", "bedrock")  # auto's preference order


class LocalConfigError(ValueError):
    """A wrong option or environment value: one line for the user, no traceback."""


@dataclass(frozen=True)
class LocalConfig:
    documents: Path = DEFAULT_DOCUMENTS
    cache_dir: Path = DEFAULT_CACHE
    chunks: ChunkSettings = ChunkSettings(
        stack_config.KnowledgeBaseConfig.chunk_max_tokens, stack_config.KnowledgeBaseConfig.chunk_overlap_percentage
    )
    vector_weight: float = stack_config.SearchConfig.hybrid_vector_weight
    bedrock_model_id: str = stack_config.ServingConfig.bedrock_model_id
    settings_overrides: dict[str, Any] = field(default_factory=dict)

    def settings(self) -> Settings:
        return Settings.local(**self.settings_overrides)

    @staticmethod
    def for_stage(stage: str | None, **values: Any) -> LocalConfig:
        """The defaults, or the given stage's config from cdk.json (validated as a synth would)."""
        if stage is None:
            return LocalConfig(**values)
        try:
            context = json.loads((ROOT / "cdk.json").read_text())["context"]
            app = stack_config.load_config(context)
        except stack_config.ConfigError as error:
            raise LocalConfigError(f"cdk.json: {error}") from None
        if stage not in app.stages:
            raise LocalConfigError(f"--stage {stage}: not a stage in cdk.json (stages: {', '.join(sorted(app.stages))})")
        chosen = app.stages[stage]
        serving, search, kb = chosen.serving, chosen.search, chosen.knowledge_base
        overrides = {
            "max_question_chars": serving.max_question_chars,
            "default_top_k": serving.default_top_k,
            "max_top_k": serving.max_top_k,
            "max_new_tokens": serving.max_new_tokens,
            "temperature": serving.temperature,
            "default_retriever": serving.default_retriever,
            "filterable_fields": tuple(search.filterable_fields),
        }
        if serving.default_generator in LOCAL_GENERATORS:  # a deployed-only default (finetuned, base) means auto here
            overrides["default_generator"] = serving.default_generator
        return LocalConfig(
            chunks=ChunkSettings(kb.chunk_max_tokens, kb.chunk_overlap_percentage),
            vector_weight=search.hybrid_vector_weight,
            bedrock_model_id=serving.bedrock_model_id,
            settings_overrides=overrides,
            **values,
        )


class LocalRetrievers:
    """`kb`: vector-only semantic search (the knowledge base's Retrieve); `opensearch`: hybrid."""

    def __init__(self, index: Callable[[], Index], embedder: Embedder, vector_weight: float):
        self._index, self._embedder, self.vector_weight = index, embedder, vector_weight

    def kb(self, *, question: str, top_k: int, filters: dict[str, Any]) -> list[prompts.Passage]:
        index = self._index()
        return _passages(index, index.semantic(self._embedder.embed_query(question), top_k, filters))

    def opensearch(self, *, question: str, top_k: int, filters: dict[str, Any]) -> list[prompts.Passage]:
        index = self._index()
        hits = index.hybrid(self._embedder.embed_query(question), textlib.terms(question), top_k, filters, vector_weight=self.vector_weight)
        return _passages(index, hits)


def _passages(index: Index, hits: list[Hit]) -> list[prompts.Passage]:
    return [
        prompts.Passage(n=i + 1, text=index.chunk_texts[h.row], source=index.chunk_doc_ids[h.row], score=round(h.score, 4))
        for i, h in enumerate(hits)
    ]


class LocalMode:
    """The index (synced from the folder), the embedder and the backend built on them."""

    def __init__(self, config: LocalConfig, embedder: Embedder | None = None):
        self.config = config
        self.embedder = embedder or Embedder()
        self._index: Index | None = None
        self._lock = threading.Lock()
        self.retrievers = LocalRetrievers(self.index, self.embedder, config.vector_weight)
        self.backend = Backend(  # no managed_rag: mode kb needs a deployed stage, the service answers 400
            retrievers={"kb": self.retrievers.kb, "opensearch": self.retrievers.opensearch},
            generators={
                "extractive": generators.ExtractiveGenerator(self.index, self.embedder),
                "llm": generators.LlamaGenerator(),
                "bedrock": generators.BedrockGenerator(config.bedrock_model_id),
            },
        )

    def index(self) -> Index:
        if self._index is None:
            self.sync()
        return self._index

    def sync(self, progress: Progress | None = None) -> SyncReport:
        """Brings the index up to date with the folder and swaps it in (requests keep the old one meanwhile)."""
        with self._lock:
            index, report = open_index(self.config.documents, self.config.cache_dir, self.embedder, self.config.chunks, progress)
            self._index = index
        return report


def env_config(stage: str | None = None, documents: str | None = None) -> LocalConfig:
    """The config from options and the environment (LOCAL_DOCUMENTS, LOCAL_CACHE_DIR)."""
    folder = Path(documents or os.environ.get("LOCAL_DOCUMENTS") or DEFAULT_DOCUMENTS).expanduser()
    if not folder.is_dir():
        raise LocalConfigError(f"{folder}: not a folder of documents (set LOCAL_DOCUMENTS or --documents)")
    cache = Path(os.environ.get("LOCAL_CACHE_DIR") or DEFAULT_CACHE).expanduser()
    return LocalConfig.for_stage(stage, documents=folder, cache_dir=cache)
