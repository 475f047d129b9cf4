"""The prompt budget: retrieved passages cut to fit the chosen generator's context window.

The budget is per generator (`GeneratorStatus.context_tokens`; None = unbounded): the context
minus the answer's `max_new_tokens`, minus the fixed part of the prompt. Passages are kept in
rank order while they fit.
"""

from __future__ import annotations

from typing import Sequence

from . import prompts

# A rough and deliberately low estimate of characters per token, so the prompt stays inside the context.
CHARS_PER_TOKEN = 3


def fit(passages: Sequence[prompts.Passage], question: str, status, max_new_tokens: int) -> list[prompts.Passage]:
    """Drops the lowest-ranked passages until the prompt plus the answer fit the generator's context."""
    context = getattr(status, "context_tokens", None)
    if not context:
        return list(passages)
    budget = (context - max_new_tokens) * CHARS_PER_TOKEN
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
