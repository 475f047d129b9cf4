"""Text primitives shared by chunking, BM25 and the extractive answerer: pieces, tokens, sentences.

Scripts written without spaces (Han, Hiragana, Katakana, Hangul, Thai, Lao, Khmer, Myanmar) are
handled per character: one piece and one token each for chunking, character bigrams for BM25.

Token count. Bedrock does not publish the tokenizer its FIXED_SIZE chunking counts with, so
`count_tokens` approximates a subword (BPE-style) tokenizer from the text alone:
- a run of letters costs ceil(len / LETTERS_PER_TOKEN) tokens (short words are one token, long
  ones split into pieces);
- a run of digits costs ceil(len / DIGITS_PER_TOKEN);
- each character of an unspaced script costs one token;
- each other non-space character (punctuation, symbols) costs one token; spaces cost nothing.
The constants are calibrated against a real BPE tokenizer (SmolLM2's): this count is 1.04x its
count on XQuAD-en passages and 1.01x on the sample documents, so chunks err on the small side.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass

LETTERS_PER_TOKEN = 7
DIGITS_PER_TOKEN = 3
MAX_PIECE_CHARS = 40  # longer runs (hashes, base64) are cut so one piece never dwarfs a chunk

# Unspaced scripts (and Hangul, which BM25 also reads better as bigrams).
_UNSPACED = (
    "\u0e00-\u0eff"  # Thai, Lao
    "\u1000-\u109f"  # Myanmar
    "\u1780-\u17ff"  # Khmer
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs
    "\u31f0-\u31ff\uff66-\uff9f"  # Katakana extensions, half-width Katakana
    "\u1100-\u11ff\uac00-\ud7af"  # Hangul
    "\U00020000-\U0002fa1f"  # CJK ideographs, supplementary planes
)
_PIECE = re.compile(
    rf"[{_UNSPACED}]"  # one unspaced-script character
    rf"|[^\W\d_{_UNSPACED}]+"  # a run of letters (any spaced script)
    r"|\d+"  # a run of digits
    r"|[^\w\s]|_",  # one punctuation or symbol character
)
_TERM = re.compile(rf"[{_UNSPACED}]+|[^\W_{_UNSPACED}]+")
_UNSPACED_CHAR = re.compile(rf"[{_UNSPACED}]")


@dataclass(frozen=True)
class Piece:
    """One unit of text the chunker never splits: [start, end) in the text, and its token cost."""

    start: int
    end: int
    tokens: int


def _piece_tokens(piece: str) -> int:
    """A digit run ceil(n / 3), a letter run ceil(n / 7); every other piece is one character: 1."""
    return math.ceil(len(piece) / (DIGITS_PER_TOKEN if piece[0].isdigit() else LETTERS_PER_TOKEN))


def pieces(text: str) -> list[Piece]:
    """The text's pieces in order (whitespace belongs to no piece)."""
    out: list[Piece] = []
    for match in _PIECE.finditer(text):
        start, end = match.span()
        while end - start > MAX_PIECE_CHARS:
            cut = start + MAX_PIECE_CHARS
            out.append(Piece(start, cut, _piece_tokens(text[start:cut])))
            start = cut
        out.append(Piece(start, end, _piece_tokens(text[start:end])))
    return out


def count_tokens(text: str) -> int:
    return sum(p.tokens for p in pieces(text))


def normalize(text: str) -> str:
    """NFKC (full-width Latin and digits become ASCII) and case folding."""
    return unicodedata.normalize("NFKC", text).casefold()


def terms(text: str) -> list[str]:
    """BM25 terms: lower-cased words; unspaced-script runs as overlapping character bigrams."""
    out: list[str] = []
    for match in _TERM.finditer(normalize(text)):
        run = match.group()
        if _UNSPACED_CHAR.match(run):
            if len(run) == 1:
                out.append(run)
            else:
                out.extend(run[i : i + 2] for i in range(len(run) - 1))
        else:
            out.append(run)
    return out


# --- sentences ---

_BLOCK_START = re.compile(r"^\s*(?:#{1,6}\s|[-*+]\s|\d{1,3}[.)]\s|>\s?|```|\|)")
_HEADING = re.compile(r"^\s*#{1,6}\s")
_ENDERS = re.compile(r"[.!?](?:[\"'”’)\]]*)(?=\s)|[。！？](?:[」』）”’]*)")
_ABBREVIATIONS = frozenset(
    "e.g i.e etc vs cf al fig no nr mr mrs ms dr prof sr jr st inc ltd co corp approx dept est min max".split()
)
_MARKUP = re.compile(r"^\s*(?:#{1,6}\s+|[-*+]\s+|\d{1,3}[.)]\s+|>\s?)")
_LEADING_MARKUP = re.compile(_MARKUP.pattern + "?")  # the same or nothing: always matches
_EMPHASIS = re.compile(r"\*\*|__|`")


@dataclass(frozen=True)
class Sentence:
    start: int
    end: int
    heading: bool  # a Markdown heading line: context, not an answer


def sentences(text: str) -> list[Sentence]:
    """Sentence spans: Markdown blocks (headings, list items, paragraphs) cut at sentence ends."""
    out: list[Sentence] = []
    for start, end, heading in _blocks(text):
        if heading:
            _add(out, text, start, end, heading=True)
            continue
        block = text[start:end]
        cursor = 0
        # after the block's leading markup ("1. " opens a list item: its dot ends no sentence)
        for match in _ENDERS.finditer(block, _LEADING_MARKUP.match(block).end()):
            stop = match.end()
            if block[match.start()] == "." and _abbreviation_before(block, match.start()):
                continue
            _add(out, text, start + cursor, start + stop)
            cursor = stop
        _add(out, text, start + cursor, end)
    return out


def _abbreviation_before(block: str, dot: int) -> bool:
    word = re.search(r"([\w.]+)$", block[:dot])
    if not word:
        return False
    token = word.group(1).lower()
    return token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha())


def _add(out: list[Sentence], text: str, start: int, end: int, heading: bool = False) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start:
        out.append(Sentence(start, end, heading))


def _blocks(text: str):
    """(start, end, is_heading) of each Markdown block: a blank line or a block marker starts one."""
    position = 0
    block_start: int | None = None  # block_end is set with it
    for line in text.splitlines(keepends=True):
        line_start, position = position, position + len(line)
        content = line.strip()
        if not content:
            if block_start is not None:
                yield block_start, block_end, False
                block_start = None
            continue
        line_end = line_start + len(line.rstrip("\r\n"))
        if _HEADING.match(line):
            if block_start is not None:
                yield block_start, block_end, False
                block_start = None
            yield line_start, line_end, True
            continue
        if _BLOCK_START.match(line) and block_start is not None:
            yield block_start, block_end, False
            block_start = None
        if block_start is None:
            block_start = line_start
        block_end = line_end
    if block_start is not None:
        yield block_start, block_end, False


# Chinese and Japanese (kana, ideographs, their punctuation and full-width forms) put no space
# between words: a line wrapped inside such text joins without one. Hangul and Thai are left out on
# purpose: Korean separates words with spaces, and a Thai line break is not known to sit mid-word.
_CJ = "\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef\U00020000-\U0002fa1f"
_WRAP = re.compile(r"[^\S\n]*\n\s*")
_CJ_CHAR = re.compile(rf"[{_CJ}]")


def _unwrap(text: str) -> str:
    def join(match: re.Match) -> str:
        before = text[match.start() - 1] if match.start() > 0 else ""
        after = text[match.end()] if match.end() < len(text) else ""
        return "" if _CJ_CHAR.fullmatch(before) or _CJ_CHAR.fullmatch(after) else " "

    return _WRAP.sub(join, text)


def display(sentence: str) -> str:
    """A sentence as an answer shows it: no Markdown markers, one line (a wrap in Chinese or Japanese
    text joins without a space)."""
    return " ".join(_EMPHASIS.sub("", _MARKUP.sub("", _unwrap(sentence))).split())


# English inflections the extractive answerer folds together ("delete" ~ "deleted" ~ "deletion" ~
# "deletes" ~ "deleting": "delet"). Deliberately small: BM25 itself does not stem, like the index's
# standard analyzer.
_SUFFIXES = ("ings", "ing", "ions", "ion", "ied", "ies", "ed", "es", "s")
_NOT_PLURAL = ("ss", "us", "is")  # class, status, analysis


def stem(term: str) -> str:
    if not term.isascii() or not term.isalpha():
        return term
    if len(term) > 4 and not term.endswith(_NOT_PLURAL):
        for suffix in _SUFFIXES:
            if term.endswith(suffix) and len(term) - len(suffix) >= 3:
                base = term[: -len(suffix)]
                if suffix in ("ied", "ies"):
                    return base + "y"
                term = base  # boxes -> box, deletes -> delet (its final e goes below)
                break
    return term[:-1] if len(term) >= 4 and term.endswith("e") else term  # "delete", "deletes" -> "delet"
