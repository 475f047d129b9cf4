"""How answers are compared: which languages and scripts are compared by character, what counts
as a citation marker, punctuation or an article, and every phrasing the abstention rule accepts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation import metrics


@pytest.mark.parametrize("lang", ["ja", "zh", "th", "lo", "km", "my", "bo", "yue", "wuu", "JA", "zh-Hant", "ja-JP"])
def test_languages_written_without_spaces_are_compared_by_character(lang):
    assert metrics.char_level_for(lang, ["plain words"]) is True


@pytest.mark.parametrize("lang", ["en", "de", "ko", "vi", "", None, "jav"])
def test_other_languages_are_compared_by_word(lang):
    assert metrics.char_level_for(lang, ["plain words"]) is False


@pytest.mark.parametrize("text", ["ひらがな", "カタカナ", "漢字", "\u3400", "\uf900", "ｶﾀｶﾅ", "ภาษาไทย", "ພາສາລາວ", "မြန်မာ", "ខ្មែរ", "བོད་ཡིག"])
def test_scripts_without_spaces(text):
    assert metrics.is_unspaced(f"abc {text} def") is True
    assert metrics.char_level_for(None, ["x", text]) is True


@pytest.mark.parametrize("text", ["plain ascii", "Ünïcödé café", "한국어 문장", "Ελληνικά", "русский", "\u303f"])
def test_spaced_scripts(text):
    assert metrics.is_unspaced(text) is False


@pytest.mark.parametrize("text, normalized", [
    ("Keys rotate yearly [1].", "keys rotate yearly"),
    ("Yearly [ 1 , 12 ,123 ] and [4]", "yearly and"),
    ("Yearly [1234] times", "yearly 1234 times"),  # four digits: not a marker, the brackets go as punctuation
    ("Cost: $40 + tax = 42€", "cost 40 tax 42"),  # symbols go like punctuation
    ("A cat, an owl, the dog; THE END", "cat owl dog end"),
    ("Anna's theatre", "anna s theatre"),  # only whole-word articles go
    ("２８　ＫＮＯＴＳ", "28 knots"),
])
def test_normalisation(text, normalized):
    assert metrics.normalize(text) == normalized


def test_character_level_normalisation_drops_every_space_and_mark():
    assert metrics.normalize("２８ ノット、です。[1]", char_level=True) == "28ノットです"
    assert metrics.tokens("A b", char_level=True) == ["a", "b"]
    assert metrics.tokens("The A b") == ["b"]


@pytest.mark.parametrize("answer", [
    "I do not know.", "I dont know", "Honestly, I don't know based on these.",
    "The sources do not contain that.", "The context does not include the price.", "These documents did not mention it.",
    "The passage does not say.", "The passages do not provide a date.", "The source does not state it.",
    "The documents do not specify the day.", "The provided sources do not answer that.",
    "I cannot answer that.", "I can't find it.", "I can not determine that.", "I am unable to tell.",
    "There is no information about cabins.", "No mention of it.", "There are no details on that.", "No detail regarding fares.",
    "No information is given.", "No information was found.", "The fare is not stated in the sources.",
    "That is not specified in the text.", "It is not mentioned in the documents.", "It is not covered in the guide.",
    "It is not provided in the context.", "It is not available in the sources.",
    "わかりません", "不明です", "記載はありません", "記載がない", "記載されていません", "情報がありません", "情報はない",
    "見つかりません", "答えられません", "お答えできません", "含まれていません", "判断できません",
    "I DON\u2019T KNOW", "ｉ ｄｏｎ'ｔ ｋｎｏｗ",
])
def test_every_abstention_phrasing(answer):
    assert metrics.abstained(answer) is True


@pytest.mark.parametrize("answer", [
    "The sources say it departs at 9.", "The ship does not carry cars.", "No cars are allowed.", "I know: 26 knots.",
    "It is not in the harbour.", "The documents state 40 euros.", "The documents. They do not mention a thing.",
])
def test_answers_that_are_not_abstentions(answer):
    assert metrics.abstained(answer) is False


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=6), st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=6))
def test_f1_is_symmetric_bounded_and_one_only_for_the_same_bag(prediction, reference):
    f1 = metrics._f1(prediction, reference)
    assert f1 == metrics._f1(reference, prediction) and 0.0 <= f1 <= 1.0
    assert (f1 == 1.0) == (sorted(prediction) == sorted(reference))


def test_recall_takes_the_best_reference_and_skips_empty_ones():
    assert metrics.token_recall("26 knots", ["the", "about 26 knots per hour", "26 knots"]) == 1.0
    assert metrics.token_recall("26", ["26 knots", "knots 26 fast"]) == 0.5
    assert metrics.token_recall("x", ["the"]) == 0.0
    assert metrics.token_recall("x", []) is None
    assert metrics.token_recall("5分", ["5分です"], char_level=True) == 0.5


def test_exact_match_against_any_reference():
    assert metrics.exact_match("26 Knots!", ["twenty-six knots", "26 knots"]) == 1.0
    assert metrics.exact_match("3 週間", ["3週間"], char_level=True) == 1.0
    assert metrics.exact_match("3 週間", ["3週間"]) == 0.0


def test_percentiles_and_the_bootstrap_level():
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [metrics.percentile(values, q) for q in (0, 25, 50, 100)] == [1.0, 2.0, 3.0, 5.0]
    assert metrics.percentile([10.0, 20.0], 75) == 17.5
    assert metrics.mean([1.0, 2.0]) == 1.5 and metrics.mean([]) is None
    wide = metrics.bootstrap_ci(values, resamples=400, rng=metrics.rng_for(1, "a"), level=0.99)
    narrow = metrics.bootstrap_ci(values, resamples=400, rng=metrics.rng_for(1, "a"), level=0.5)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]
    median = metrics.bootstrap_ci(values, lambda v: metrics.percentile(v, 50), resamples=200, rng=metrics.rng_for(1))
    assert all(low in values for low in median)  # the median of five values is one of them
    assert metrics.rng_for(1, "a", "b").random() != metrics.rng_for(1, "ab").random()
    assert metrics.rng_for(1, "a").random() == metrics.rng_for(1, "a").random()


def test_citations_rank_by_their_number_numbers_first():
    ranked = metrics.ranked_documents([{"n": True, "source": "t.md"}, {"n": "1", "source": "s.md"}, {"n": 2.0, "source": "b.md"},
                                       {"n": 1, "source": "a.md"}, {"source": ""}, {"n": 0, "source": 7}], str)
    assert ranked == ["a.md", "b.md", "t.md", "s.md"]
