"""Text primitives against their documented rules: pieces and token costs, terms, sentences,
display, stemming. Tables of inputs and the outputs the rules give (the rules are in local/text.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from local import text as textlib


@pytest.mark.parametrize(
    "text,spans",
    [
        ("a" * 100, [(0, 40, 6), (40, 80, 6), (80, 100, 3)]),  # a long run is cut every 40 characters
        ("1" * 50, [(0, 40, 14), (40, 50, 4)]),  # digits: ceil(n / 3)
        ("a" * 40, [(0, 40, 6)]),  # exactly the limit: one piece
        ("snake_case x", [(0, 5, 1), (5, 6, 1), (6, 10, 1), (11, 12, 1)]),  # "_" is a symbol of its own
        ("v2 éléphant", [(0, 1, 1), (1, 2, 1), (3, 11, 2)]),  # letters and digits are separate runs
        ("東京!", [(0, 1, 1), (1, 2, 1), (2, 3, 1)]),
        ("ｶﾀｶﾅ", [(0, 1, 1), (1, 2, 1), (2, 3, 1), (3, 4, 1)]),  # half-width Katakana: unspaced
        ("한국어 ภาษา", [(0, 1, 1), (1, 2, 1), (2, 3, 1), (4, 5, 1), (5, 6, 1), (6, 7, 1), (7, 8, 1)]),
    ],
)
def test_pieces_and_their_token_costs(text, spans):
    assert [(p.start, p.end, p.tokens) for p in textlib.pieces(text)] == spans
    assert textlib.count_tokens(text) == sum(t for _, _, t in spans)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab1 _.,東京\n\té"), max_size=120))
def test_pieces_cover_every_non_space_character_once(text):
    pieces = textlib.pieces(text)
    covered = "".join(text[p.start : p.end] for p in pieces)
    assert covered == "".join(text.split())
    assert all(0 < p.end - p.start <= textlib.MAX_PIECE_CHARS and p.tokens >= 1 for p in pieces)
    assert all(a.end <= b.start for a, b in zip(pieces, pieces[1:]))


@pytest.mark.parametrize(
    "text,terms",
    [
        ("snake_case e-mail", ["snake", "case", "e", "mail"]),
        ("ÜBER Straße", ["über", "strasse"]),  # case folding, not just lower-casing
        ("ｶﾀｶﾅ", ["カタ", "タカ", "カナ"]),  # NFKC first, then bigrams
        ("abc東京def", ["abc", "東京", "def"]),
        ("", []),
    ],
)
def test_terms(text, terms):
    assert textlib.terms(text) == terms


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Dr. Smith arrived. He left.", ["Dr. Smith arrived.", "He left."]),  # a listed abbreviation
        ("J. R. Tolkien wrote it. Yes.", ["J. R. Tolkien wrote it.", "Yes."]),  # initials
        ("It costs approx. 30 euros, e.g. 2 fares. Then.", ["It costs approx. 30 euros, e.g. 2 fares.", "Then."]),
        ('He said "stop." Then left.', ['He said "stop."', "Then left."]),  # closing quotes stay with their sentence
        ("Is it? Yes! No.", ["Is it?", "Yes!", "No."]),
        ("Say it (twice). Then go.", ["Say it (twice).", "Then go."]),  # no word right before the dot
        ("Wait for plan B... Then go.", ["Wait for plan B...", "Then go."]),  # an ellipsis is no initial
        ("It was i.e. fine. Done.", ["It was i.e. fine.", "Done."]),
        ("Version 2.5 is out. Next", ["Version 2.5 is out.", "Next"]),
        ("「はい。」と言った。次", ["「はい。」", "と言った。", "次"]),
        ("Line one\ncontinues here.\n\nNew paragraph", ["Line one\ncontinues here.", "New paragraph"]),
        ("Trailing.\r\nNext line\r\n", ["Trailing.", "Next line"]),
        ("Last words \n\n   New words   \n", ["Last words", "New words"]),  # spaces around a block
        ("- item one\n- item two\n  continued.", ["- item one", "- item two\n  continued."]),
        ("> quoted\n```\ncode\n```\n| a | b |", ["> quoted", "```\ncode", "```", "| a | b |"]),
        ("   \n\n  ", []),
    ],
)
def test_sentences_split_blocks_at_sentence_ends(text, expected):
    spans = textlib.sentences(text)
    assert [text[s.start : s.end] for s in spans] == expected
    assert not any(s.heading for s in spans)


def test_headings_are_sentences_of_their_own_and_close_a_block():
    text = "Intro text\n### Keys\nRotated yearly\n####### not a heading"
    spans = textlib.sentences(text)
    assert [(text[s.start : s.end], s.heading) for s in spans] == [
        ("Intro text", False), ("### Keys", True), ("Rotated yearly\n####### not a heading", False)
    ]


def test_a_heading_is_its_text_without_surrounding_spaces():
    text = "  ## Title  \nBody."
    assert [(text[s.start : s.end], s.heading) for s in textlib.sentences(text)] == [("## Title", True), ("Body.", False)]


def test_a_numbered_list_marker_is_not_a_sentence():
    text = "Steps:\n1. Open the log group.\n2. Fix the cause; then sync.\n10) Purge the queue."
    assert [text[s.start : s.end] for s in textlib.sentences(text)] == [
        "Steps:", "1. Open the log group.", "2. Fix the cause; then sync.", "10) Purge the queue."
    ]


@pytest.mark.parametrize(
    "raw,shown",
    [
        ("- **Bold** `code`\n  continued", "Bold code continued"),
        ("12. __Step__ one", "Step one"),
        ("3) Third", "Third"),
        ("> Quoted   text", "Quoted text"),
        ("## Title", "Title"),
        ("Plain * star", "Plain * star"),  # only a leading marker is markup
        ("Ends 2024. Next", "Ends 2024. Next"),
        # A wrap inside Chinese or Japanese text joins without a space; spaces within a line stay.
        ("1961年に島の漁業組合が\n出資して設立され、", "1961年に島の漁業組合が出資して設立され、"),
        ("協定を結び、  \n  職員の交流", "協定を結び、職員の交流"),
        ("OSFC\n職員", "OSFC職員"),
        ("（OSFC）\nand", "（OSFC）and"),
        ("風花 OSFC と\t協定", "風花 OSFC と 協定"),
        ("한국어 문장이\n이어집니다", "한국어 문장이 이어집니다"),  # Korean separates words with spaces
        ("two\nlines", "two lines"),
        ("\n  ## 見出し\n", "見出し"),
    ],
)
def test_display(raw, shown):
    assert textlib.display(raw) == shown


@pytest.mark.parametrize(
    "family",
    [
        ["deleted", "deletion", "deletes", "deleting", "delete"],  # the folding local/extractive.py relies on
        ["stored", "stores", "storing", "store"],
        ["rotated", "rotation", "rotations", "rotates"],
        ["copies", "copied", "copy"],
        ["retries", "retried", "retry"],
        ["boxes", "box"],
        ["classes", "class"],
        ["matches", "match"],
        ["wishes", "wish"],
        ["buzzes", "buzz"],
        ["indexes", "indexed", "indexing", "index"],
        ["keeps", "keep"],
        ["make", "makes", "making"],  # four letters and a final e
        ["file", "files", "filed"],
    ],
)
def test_stem_folds_english_inflections(family):
    assert len({textlib.stem(word) for word in family}) == 1, {word: textlib.stem(word) for word in family}


@pytest.mark.parametrize("word", ["kept", "news", "runs", "bus", "ions", "going", "the", "use", "東京です", "naïve", "x2yz5", "s3"])
def test_stem_leaves_short_non_ascii_and_mixed_words(word):
    assert textlib.stem(word) == word  # four letters at most, a stem under three letters, not plain ASCII letters
