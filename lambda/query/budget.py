"""The prompt budget: retrieved passages cut to fit the chosen generator's context window.

The budget is per generator (`GeneratorStatus.context_tokens`; None = unbounded): the context
minus the answer's `max_new_tokens`, minus the fixed part of the prompt (system text, template,
question, chat-template overhead). Passages are kept in rank order while they fit; the first one
that does not fit is cut to the room left (a single passage larger than the whole budget is cut,
not sent whole), and the rest are dropped.

Tokens are estimated without a tokenizer, deliberately high: one token per 3 bytes of UTF-8.
That is 3 characters per token for English (real tokenizers average about 4) and 1 token per
character for Japanese or Chinese (3 bytes each; real tokenizers use about 0.7 to 1.3).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional, Sequence

from shared.api import ApiError

from . import prompts

BYTES_PER_TOKEN = 3
# The chat template's own tokens (role markers, special tokens) around system + user messages.
TEMPLATE_OVERHEAD_TOKENS = 64
# A cut passage shorter than this is not worth sending: stop instead.
MIN_PASSAGE_TOKENS = 32
CUT_MARK = " …"


def estimate_tokens(text: str) -> int:
    """A high estimate of `text`'s token count (UTF-8 bytes / 3, rounded up)."""
    size = len(text.encode("utf-8", "surrogatepass"))
    return -(-size // BYTES_PER_TOKEN)


_FIXED_TOKENS = estimate_tokens(prompts.RAG_SYSTEM) + estimate_tokens(prompts.RAG_USER) + TEMPLATE_OVERHEAD_TOKENS


def fit(passages: Sequence[prompts.Passage], question: str, status, max_new_tokens: int) -> list[prompts.Passage]:
    """The passages (in rank order, numbered as given) that fit the generator's prompt budget."""
    context: Optional[int] = status.context_tokens
    if not context:
        return list(passages)
    room = context - max_new_tokens - _FIXED_TOKENS - estimate_tokens(question)
    if room < 0:
        raise ApiError(
            400,
            f"question: too long for generator {status.name!r} (its context holds {context} tokens, "
            f"{max_new_tokens} of them for the answer)",
            field="question",
        )
    kept: list[prompts.Passage] = []
    for passage in passages:
        frame = estimate_tokens(prompts.SOURCE.format(n=passage.n, origin=passage.source, text="")) + 1
        cost = frame + estimate_tokens(passage.text)
        if cost <= room:
            kept.append(passage)
            room -= cost
            continue
        allowed = room - frame - estimate_tokens(CUT_MARK)
        if allowed >= MIN_PASSAGE_TOKENS:
            kept.append(replace(passage, text=cut(passage.text, allowed)))
        break
    return kept


def cut(text: str, tokens: int) -> str:
    """The longest prefix of `text` within `tokens` (by the estimate), at a word end if one is near, marked as cut."""
    limit = tokens * BYTES_PER_TOKEN
    size = 0
    for end, char in enumerate(text):
        size += len(char.encode("utf-8", "surrogatepass"))
        if size > limit:
            break
    else:
        return text
    prefix = text[:end]
    space = prefix.rfind(" ")
    if space >= len(prefix) * 0.8:  # cut at a word end when that loses little
        prefix = prefix[:space]
    return prefix.rstrip() + CUT_MARK
