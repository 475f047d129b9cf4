"""Chunk boundaries at the edges of the documented rules (local/chunking.py): the overlap limit,
the half-full rule, the smallest chunk size, sentence and heading ends. Words of 7 letters or
fewer cost one token, so each sentence below costs its word count plus one for the period."""

from __future__ import annotations

import pytest

from local import chunking

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
SIX = " ".join(f"{w} {w} {w}." for w in WORDS[:6])  # six sentences of 4 tokens


def _texts(text, max_tokens, overlap):
    return [c.text for c in chunking.chunk(text, max_tokens=max_tokens, overlap_percentage=overlap)]


@pytest.mark.parametrize(
    "text,max_tokens,overlap,chunks",
    [
        # 12 * 34 // 100 = 4 tokens of overlap: exactly one sentence is carried over
        (SIX, 12, 34, ["alpha alpha alpha. bravo bravo bravo. charlie charlie charlie.",
                       "charlie charlie charlie. delta delta delta. echo echo echo.", "echo echo echo. foxtrot foxtrot foxtrot."]),
        # 3 tokens of overlap: no sentence fits, and no half sentence is carried
        (SIX, 12, 33, ["alpha alpha alpha. bravo bravo bravo. charlie charlie charlie.",
                       "delta delta delta. echo echo echo. foxtrot foxtrot foxtrot."]),
        # 8 tokens of overlap: two sentences, the earliest sentence start inside the overlap
        (SIX, 16, 50, ["alpha alpha alpha. bravo bravo bravo. charlie charlie charlie. delta delta delta.",
                       "charlie charlie charlie. delta delta delta. echo echo echo. foxtrot foxtrot foxtrot."]),
        # a 5-token first sentence fills 10 tokens half: the chunk ends there ...
        ("aa bb cc dd. pp qq rr ss tt uu vv ww xx.", 10, 0, ["aa bb cc dd.", "pp qq rr ss tt uu vv ww xx."]),
        # ... a 4-token one does not: the chunk is filled and cut between words
        ("aa bb cc. pp qq rr ss tt uu vv ww xx.", 10, 0, ["aa bb cc. pp qq rr ss tt uu", "vv ww xx."]),
        # cut inside a sentence, the next chunk carries the full overlap (2 tokens) on
        ("aa bb cc dd ee ff gg hh ii jj kk.", 5, 40, ["aa bb cc dd ee", "dd ee ff gg hh", "gg hh ii jj kk", "jj kk."]),
        # a one-piece sentence (a paragraph) can end the first chunk
        ("Title\n\nBody text here", 2, 0, ["Title", "Body text", "here"]),
        # the overlap may cover all but the first piece of a chunk cut inside a sentence (99 % of 5: 4 tokens)
        ("aa bb cc dd ee ff gg", 5, 99, ["aa bb cc dd ee", "bb cc dd ee ff", "cc dd ee ff gg"]),
        # the next chunk starts late enough to take the (2-token) piece after this one
        ("aa bb cc dd ee abcdefghij", 5, 80, ["aa bb cc dd ee", "cc dd ee abcdefghij"]),
        # a word costlier than a whole chunk is a chunk of its own, never dropped
        ("aa internationalization bb", 2, 50, ["aa", "internationalization", "bb"]),
        # the smallest chunk: one token
        ("aa bb", 1, 0, ["aa", "bb"]),
        ("aa bb", 1, 99, ["aa", "bb"]),
        # a heading line ends where its text ends, trailing spaces or not
        ("## Title  \nMore words here.", 5, 0, ["## Title", "More words here."]),
    ],
)
def test_chunk_boundaries(text, max_tokens, overlap, chunks):
    assert _texts(text, max_tokens, overlap) == chunks


def test_a_hundred_token_chunk_shares_exactly_its_twenty_token_overlap():
    text = " ".join(f"{w}{w} {w} {w}." for w in (a + b for a in "bdfgk" for b in "aeiou" for _ in [0])) * 2
    chunks = chunking.chunk(text, max_tokens=100, overlap_percentage=20)
    for a, b in zip(chunks, chunks[1:]):
        assert chunking.chunk(text[b.start : a.end], max_tokens=1000, overlap_percentage=0)[0].tokens == 20  # 5 sentences of 4


@pytest.mark.parametrize(
    "max_tokens,overlap,message",
    [(0, 20, "^max_tokens must be at least 1$"), (-3, 20, "^max_tokens must be at least 1$"),
     (10, 100, r"^overlap_percentage must be within 0\.\.99$"), (10, -1, r"^overlap_percentage must be within 0\.\.99$")],
)
def test_settings_out_of_range_are_refused(max_tokens, overlap, message):
    with pytest.raises(ValueError, match=message):
        chunking.chunk("text", max_tokens=max_tokens, overlap_percentage=overlap)
