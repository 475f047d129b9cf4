"""Citations: only the sources an answer actually cites, in the order it first cites them.

Mode rag: the model writes [n] markers (also [1, 2] and [1][3]); markers that name no source
are ignored. Mode kb: RetrieveAndGenerate returns citations as response spans with their
references; references are numbered in order of first appearance and [n] markers are inserted
at the end of each cited span, so every mode's answer reads the same way.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from shared.api import scrub_surrogates

from .prompts import Passage
from .retrievers import location_uri

EXCERPT_CHARS = 300
_MARKER = re.compile(r"\[(\s*\d{1,3}(?:\s*,\s*\d{1,3})*\s*)\]")


def cited_numbers(answer: str, available: int) -> list[int]:
    """Source numbers cited in `answer`, first-appearance order, each once, within 1..available."""
    seen: list[int] = []
    for match in _MARKER.finditer(answer):
        for part in match.group(1).split(","):
            n = int(part)
            if 1 <= n <= available and n not in seen:
                seen.append(n)
    return seen


def excerpt(text: str) -> str:
    text = " ".join(scrub_surrogates(text).split())
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1].rstrip() + "…"


def rag_citations(answer: str, passages: Sequence[Passage]) -> list[dict[str, Any]]:
    by_number = {p.n: p for p in passages}
    return [
        {"n": n, "source": by_number[n].source, "score": by_number[n].score, "excerpt": excerpt(by_number[n].text)}
        for n in cited_numbers(answer, len(passages))
        if n in by_number
    ]


def kb_answer_and_citations(response: dict) -> tuple[str, list[dict[str, Any]]]:
    """(answer with [n] markers, citations) from a RetrieveAndGenerate response."""
    text = ((response.get("output") or {}).get("text") or "").strip()
    numbers: dict[tuple[str, str], int] = {}
    citations: list[dict[str, Any]] = []
    inserts: dict[int, str] = {}
    for citation in response.get("citations") or []:
        marks = ""
        for reference in citation.get("retrievedReferences") or []:
            source = location_uri(reference.get("location"))
            content = (reference.get("content") or {}).get("text") or ""
            key = (source, content)
            if key not in numbers:
                numbers[key] = len(numbers) + 1
                citations.append({"n": numbers[key], "source": source, "score": None, "excerpt": excerpt(content)})
            if f"[{numbers[key]}]" not in marks:
                marks += f"[{numbers[key]}]"
        if marks:
            position = _part_end(text, citation)
            inserts[position] = inserts.get(position, "") + marks
    for position in sorted(inserts, reverse=True):
        text = text[:position] + inserts[position] + text[position:]
    return text, citations


def _part_end(text: str, citation: dict) -> int:
    """Where a cited part of the answer ends: found by its text, else by its span, else the end."""
    part = (citation.get("generatedResponsePart") or {}).get("textResponsePart") or {}
    fragment = part.get("text")
    if isinstance(fragment, str) and fragment.strip():
        fragment = fragment.strip()
        found = text.find(fragment)
        if found >= 0:
            return found + len(fragment)
    end = (part.get("span") or {}).get("end")
    if isinstance(end, int) and not isinstance(end, bool) and end >= 0:
        return min(end + 1, len(text))  # span.end is the index of the part's last character
    return len(text)
