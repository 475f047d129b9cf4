"""Fixed-size chunking with overlap, like the knowledge base's FIXED_SIZE strategy.

`knowledge_base.chunk_max_tokens` is a hard ceiling on each chunk (counted with
`text.count_tokens`, an approximation of Bedrock's undisclosed tokenizer), and consecutive chunks
share at most `chunk_overlap_percentage` percent of that size. Within those two rules a chunk
prefers to end where a sentence ends (if that keeps it at least half full), and the next one
starts where a sentence starts inside the overlap; when no sentence start fits in the overlap,
the next chunk starts at the following sentence (no half sentences) unless the chunk had to be
cut inside a sentence, where the full overlap carries the sentence on. Words and characters of
unspaced scripts are never cut. A chunk's text is the original text between its first and last piece, so
excerpts and sentence offsets read exactly as the document does.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import text as textlib


@dataclass(frozen=True)
class Chunk:
    seq: int
    start: int  # [start, end) in the document text
    end: int
    text: str
    tokens: int


def chunk(text: str, *, max_tokens: int, overlap_percentage: int) -> list[Chunk]:
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    if not 0 <= overlap_percentage <= 99:
        raise ValueError("overlap_percentage must be within 0..99")
    pieces = textlib.pieces(text)
    if not pieces:
        return []
    overlap_tokens = max_tokens * overlap_percentage // 100
    sentence_starts, sentence_ends = set(), set()
    for sentence in textlib.sentences(text):
        sentence_starts.add(sentence.start)
        sentence_ends.add(sentence.end)
    ends_sentence = [p.end in sentence_ends for p in pieces]
    starts_sentence = [p.start in sentence_starts for p in pieces]
    cumulative = [0]
    for p in pieces:
        cumulative.append(cumulative[-1] + p.tokens)

    def cost(i: int, j: int) -> int:  # tokens of pieces[i:j]
        return cumulative[j] - cumulative[i]

    chunks: list[Chunk] = []
    i, previous_end = 0, 0
    while True:
        j = i + 1  # at least one piece (pieces are at most MAX_PIECE_CHARS long, far below any chunk size)
        while j < len(pieces) and cost(i, j + 1) <= max_tokens:
            j += 1
        # the last sentence end that keeps the chunk at least half full and still moves forward (the
        # text's last piece ends a sentence, so the last chunk keeps its end)
        for k in range(j, max(i, previous_end), -1):
            if cost(i, k) * 2 < max_tokens:
                break
            if ends_sentence[k - 1]:
                j = k
                break
        start, end = pieces[i].start, pieces[j - 1].end
        chunks.append(Chunk(seq=len(chunks), start=start, end=end, text=text[start:end], tokens=cost(i, j)))
        if j >= len(pieces):
            return chunks
        i, previous_end = _next_start(i, j, cost, overlap_tokens, max_tokens, ends_sentence, starts_sentence), j


def _next_start(i, j, cost, overlap_tokens, max_tokens, ends_sentence, starts_sentence) -> int:
    """Where the chunk after pieces[i:j] starts: inside the overlap, at a sentence start if one is
    there; after a chunk that ended on a sentence end with no sentence start inside the overlap,
    right after it (no half sentence); after a chunk cut inside a sentence, the full overlap."""
    following = j
    while following > i + 1 and cost(following - 1, j) <= overlap_tokens:
        following -= 1
    while following < j and cost(following, j + 1) > max_tokens:
        following += 1  # the next chunk must reach past this one
    for k in range(following, j):
        if starts_sentence[k]:
            return k
    return j if ends_sentence[j - 1] else following  # following > i: the first loop stops at i + 1
