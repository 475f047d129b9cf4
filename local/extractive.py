"""The extractive answerer: the best-supported sentences of the retrieved passages, cited [n].

Deterministic and honest: it never writes a word the sources do not contain, and when no
sentence is close enough to the question it answers exactly what the RAG prompt tells a model to
answer ("I don't know based on the provided sources.").

Each sentence of each passage (Markdown headings excluded) is scored against the question:
- semantic: the cosine of the sentence's and the question's embeddings (sentence vectors are
  computed at indexing time; a sentence the index does not know is embedded on the fly);
- lexical: the share of the question's BM25 weight (idf over the indexed chunks) that the
  sentence's terms cover, English inflections folded (`text.stem`).
score = SEMANTIC_WEIGHT * semantic + (1 - SEMANTIC_WEIGHT) * lexical. The answer is the best
sentence, then the sentence right after it in the same passage if it shares a question term and
scores at least FOLLOWER_RATIO of it, then others within RUNNER_UP_RATIO of it that share a
question term, MAX_SENTENCES at most, each followed by its passage's [n] marker.
It abstains when the best score is below MIN_SCORE, calibrated on questions with and without
an answer in the corpus (local/README.md gives the figures).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from . import text as textlib
from .store import sentence_key

IDK = "I don't know based on the provided sources."
SEMANTIC_WEIGHT = 0.5
MAX_SENTENCES = 3
RUNNER_UP_RATIO = 0.85
FOLLOWER_RATIO = 0.6
MIN_SCORE = 0.25  # abstain below this (see the module docstring)
MIN_TERMS = 3  # shorter fragments ("See below.") are not answers


@dataclass(frozen=True)
class Candidate:
    n: int  # the passage's number (its [n] marker)
    order: int  # position among all candidates (ties keep reading order)
    text: str  # as displayed
    key: str
    terms: frozenset[str]


@dataclass(frozen=True)
class Scored:
    candidate: Candidate
    semantic: float
    lexical: float
    score: float


def candidates(passages: Sequence) -> list[Candidate]:
    """Sentences of the passages, first occurrence only (overlapping chunks repeat sentences)."""
    seen: set[str] = set()
    out: list[Candidate] = []
    for passage in passages:
        for sentence in textlib.sentences(passage.text):
            if sentence.heading:
                continue
            raw = passage.text[sentence.start : sentence.end]
            key = sentence_key(raw)
            shown = textlib.display(raw)
            words = textlib.terms(shown)
            if key in seen or len(words) < MIN_TERMS:
                continue
            seen.add(key)
            out.append(Candidate(n=passage.n, order=len(out), text=shown, key=key, terms=frozenset(map(textlib.stem, words))))
    return out


def score(
    question: str,
    question_vector: np.ndarray,
    pool: list[Candidate],
    *,
    idf: Callable[[str], float],
    vectors: Callable[[list[Candidate]], np.ndarray],
) -> list[Scored]:
    """Candidates by descending score (ties: reading order)."""
    if not pool:
        return []
    question_terms = set(textlib.terms(question))
    weights = {t: idf(t) for t in question_terms}
    total = sum(weights.values())  # 0 only for a question without terms
    semantic = vectors(pool) @ question_vector
    scored = []
    for candidate, cosine in zip(pool, semantic):
        lexical = sum(w for t, w in weights.items() if textlib.stem(t) in candidate.terms) / total if total else 0.0
        value = SEMANTIC_WEIGHT * float(cosine) + (1.0 - SEMANTIC_WEIGHT) * lexical
        scored.append(Scored(candidate, float(cosine), lexical, value))
    scored.sort(key=lambda s: (-s.score, s.candidate.order))
    return scored


def relevant(best: Scored) -> bool:
    return best.score >= MIN_SCORE


def compose(ranked: list[Scored], *, max_tokens: int) -> str:
    """The answer text: the chosen sentences, each with its [n] marker; IDK when nothing fits."""
    if not ranked or not relevant(ranked[0]):
        return IDK
    best = ranked[0]
    chosen = [best]
    follower = next((s for s in ranked if s.candidate.order == best.candidate.order + 1), None)
    if follower and follower.candidate.n == best.candidate.n and follower.lexical > 0 and follower.score >= FOLLOWER_RATIO * best.score:
        chosen.append(follower)  # the sentence that continues the best one ("To roll back, ...")
    for other in ranked[1:]:
        if len(chosen) >= MAX_SENTENCES:
            break
        if other not in chosen and other.score >= RUNNER_UP_RATIO * best.score and other.lexical > 0:
            chosen.append(other)
    parts: list[str] = []
    used = 0
    for item in chosen:
        piece = f"{item.candidate.text} [{item.candidate.n}]"
        cost = textlib.count_tokens(piece)
        if parts and used + cost > max_tokens:
            break
        parts.append(piece)
        used += cost
    return " ".join(parts)
