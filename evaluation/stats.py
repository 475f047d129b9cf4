"""What an eval set is made of: counts by tag and language, and lexical overlap with the gold passages.

Overlap = the share of a question's terms that also occur in its gold documents (words without
English stop words; character bigrams for unspaced scripts such as Japanese). SQuAD-style sets
score high (their questions reuse the passage's words, which favours BM25); paraphrased questions
score low, which is what measures semantic retrieval.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

from .evalset import Document, Question
from .metrics import is_unspaced, mean, normalize, percentile

STOP_WORDS = frozenset(
    "a an the of to in on at for by with from and or is are was were be been do does did what which who whom whose when "
    "where why how much many i you it its this that these those can may must should will would my your our their there "
    "after before into about as than then so if not no any all each per one".split()
)


def terms(text: str) -> set[str]:
    if is_unspaced(text):
        chars = normalize(text, char_level=True)
        return {chars[i : i + 2] for i in range(len(chars) - 1)}
    return {word for word in normalize(text).split() if word not in STOP_WORDS}


def overlap(question: Question, corpus: dict[str, Document], cache: dict[str, set[str]] | None = None) -> float | None:
    if not question.sources:
        return None
    cache = {} if cache is None else cache
    wanted = terms(question.question)
    if not wanted:
        return None
    found: set[str] = set()
    for source in question.sources:
        if source not in cache:
            cache[source] = terms(corpus[source].text())
        found |= cache[source]
    return len(wanted & found) / len(wanted)


def describe(questions: Iterable[Question], corpus: dict[str, Document]) -> dict[str, Any]:
    questions = list(questions)
    cache: dict[str, set[str]] = {}
    overlaps = [value for value in (overlap(q, corpus, cache) for q in questions) if value is not None]
    tags = Counter(tag for q in questions for tag in q.tags)
    langs = Counter(q.lang or "unspecified" for q in questions)
    unanswerable = sum(not q.answerable for q in questions)
    return {
        "questions": len(questions),
        "documents": len(corpus),
        "unanswerable": unanswerable,
        "unanswerable_share": round(unanswerable / len(questions), 3) if questions else None,
        "multi_document": sum(len(q.sources) > 1 for q in questions),
        "languages": dict(sorted(langs.items())),
        "tags": dict(sorted(tags.items())),
        "overlap_mean": round(mean(overlaps), 3) if overlaps else None,
        "overlap_median": round(percentile(overlaps, 50), 3) if overlaps else None,
    }
