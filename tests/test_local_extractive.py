"""The extractive answerer's rules, on hand-made passages and vectors (no encoder): which
sentences are candidates, how each is scored, which are chosen, and when it abstains."""

from __future__ import annotations

import numpy as np
import pytest

from local import extractive, generators, store
from query import prompts
from tests.local_support import FakeEmbedder


def _passage(n, text):
    return prompts.Passage(n=n, text=text, source=f"doc{n}.md", score=1.0)


def test_candidates_are_the_distinct_non_heading_sentences_of_three_terms_or_more():
    passages = [
        _passage(1, "# Keys and rotation\n\nKMS rotates keys yearly. See below.\n- **Rotation** is automatic."),
        _passage(2, "Rotation is automatic. KMS rotates keys yearly. Deleted keys are kept for thirty days."),
    ]
    found = extractive.candidates(passages)
    assert [(c.n, c.order, c.text) for c in found] == [
        (1, 0, "KMS rotates keys yearly."),
        (1, 1, "Rotation is automatic."),  # shown without its markup; passage 2 repeats it: not again
        (2, 2, "Deleted keys are kept for thirty days."),
    ]
    assert found[0].key == store.sentence_key("KMS rotates keys yearly.")
    assert found[2].terms == frozenset({"delet", "keys", "are", "kept", "for", "thirty", "days"})  # stemmed past four letters


def _scored(question, sentences, cosines, idf):
    pool = extractive.candidates([_passage(1, " ".join(sentences))])
    question_vector = np.array([1.0, 0.0])
    vectors = np.array([[c, float(np.sqrt(1 - c * c))] for c in cosines])
    return extractive.score(question, question_vector, pool, idf=idf.get, vectors=lambda p: vectors[: len(p)])


def test_a_sentence_scores_half_its_cosine_and_half_the_idf_share_of_question_terms_it_covers():
    idf = {"when": 0.5, "are": 0.5, "keys": 2.0, "deleted": 3.0}
    ranked = _scored(
        "When are keys deleted?",
        ["Old keys are deleted nightly.", "Deletion of logs happens weekly.", "Nothing relevant here at all."],
        [0.2, 0.6, 0.9],
        idf,
    )
    total = 0.5 + 0.5 + 2.0 + 3.0
    expected = {
        "Old keys are deleted nightly.": (0.2, (0.5 + 2.0 + 3.0) / total),  # are, keys, deleted
        "Deletion of logs happens weekly.": (0.6, 3.0 / total),  # "deletion" ~ "deleted"
        "Nothing relevant here at all.": (0.9, 0.0),
    }
    for s in ranked:
        semantic, lexical = expected[s.candidate.text]
        assert s.semantic == pytest.approx(semantic) and s.lexical == pytest.approx(lexical)
        assert s.score == pytest.approx(0.5 * semantic + 0.5 * lexical)
    assert [s.score for s in ranked] == sorted((s.score for s in ranked), reverse=True)
    assert ranked[0].candidate.text == "Old keys are deleted nightly."


def test_ties_keep_reading_order_and_a_question_without_terms_is_semantic_only():
    ranked = _scored("???", ["First equal sentence here.", "Second equal sentence here.", "Third better sentence here."], [0.5, 0.5, 0.7], {})
    assert [s.candidate.order for s in ranked] == [2, 0, 1]
    assert all(s.lexical == 0.0 for s in ranked)  # no weight at all: no division by zero
    assert extractive.score("q", np.ones(2), [], idf={}.get, vectors=lambda p: 1 / 0) == []  # nothing to score, nothing embedded


def _s(n, order, text, score, lexical=0.5):
    return extractive.Scored(extractive.Candidate(n, order, text, f"k{order}", frozenset()), score, lexical, score)


@pytest.mark.parametrize(
    "ranked,answer",
    [
        # the best, its follower in the same passage, then a runner-up: in that order
        ([_s(1, 0, "Best.", 0.8), _s(2, 5, "Close.", 0.7), _s(1, 1, "Follows.", 0.5)], "Best. [1] Follows. [1] Close. [2]"),
        # a follower needs 0.6 of the best score (0.48 here) ...
        ([_s(1, 0, "Best.", 0.8), _s(1, 1, "Follows.", 0.48)], "Best. [1] Follows. [1]"),
        ([_s(1, 0, "Best.", 0.8), _s(1, 1, "Follows.", 0.47)], "Best. [1]"),
        # ... a question term, and the same passage
        ([_s(1, 0, "Best.", 0.8), _s(1, 1, "Follows.", 0.7, lexical=0.0)], "Best. [1]"),
        ([_s(1, 0, "Best.", 0.8), _s(2, 1, "Next passage.", 0.5)], "Best. [1]"),
        # the sentence before the best is no follower
        ([_s(1, 1, "Best.", 0.8), _s(1, 0, "Before.", 0.5)], "Best. [1]"),
        # a runner-up needs 0.85 of the best score (0.68 here) and a question term
        ([_s(1, 0, "Best.", 0.8), _s(2, 7, "Runner.", 0.68)], "Best. [1] Runner. [2]"),
        ([_s(1, 0, "Best.", 0.8), _s(2, 7, "Runner.", 0.67)], "Best. [1]"),
        ([_s(1, 0, "Best.", 0.8), _s(2, 7, "Runner.", 0.79, lexical=0.0)], "Best. [1]"),
        # three sentences at most
        ([_s(1, 0, "A.", 0.8), _s(2, 3, "B.", 0.79), _s(3, 5, "C.", 0.78), _s(4, 7, "D.", 0.77)], "A. [1] B. [2] C. [3]"),
        ([_s(1, 0, "A.", 0.8), _s(1, 1, "B.", 0.79), _s(3, 5, "C.", 0.78), _s(4, 7, "D.", 0.77)], "A. [1] B. [1] C. [3]"),
        # abstention below MIN_SCORE (0.25), an answer at it
        ([_s(1, 0, "Weak.", 0.2499)], extractive.IDK),
        ([_s(1, 0, "Enough.", 0.25)], "Enough. [1]"),
        ([], extractive.IDK),
    ],
)
def test_compose_chooses_the_best_its_follower_and_close_runners_up(ranked, answer):
    assert extractive.compose(ranked, max_tokens=100) == answer


def test_compose_stops_before_the_token_budget_but_always_answers_with_the_best():
    ranked = [_s(1, 0, "One two three four.", 0.8), _s(2, 4, "Five six.", 0.79), _s(3, 6, "Seven.", 0.78)]
    # "One two three four. [1]" costs 8 tokens, "Five six. [2]" 6, "Seven. [3]" 5
    assert extractive.compose(ranked, max_tokens=14) == "One two three four. [1] Five six. [2]"
    assert extractive.compose(ranked, max_tokens=13) == "One two three four. [1]"
    assert extractive.compose(ranked, max_tokens=1) == "One two three four. [1]"  # never an empty answer


class _Index:
    """What the extractive generator reads from an index: idf and the stored sentence vectors."""

    def __init__(self, embedder, stored):
        self.sentence_vectors = {store.sentence_key(t): embedder.embed_one(t) for t in stored}

    def idf(self, term):
        return 1.0


def test_the_generator_uses_stored_sentence_vectors_and_embeds_only_the_others():
    embedder = FakeEmbedder()
    index = _Index(embedder, ["Deleted documents are kept for thirty days."])
    generator = generators.ExtractiveGenerator(lambda: index, embedder)
    passages = [_passage(1, "Deleted documents are kept for thirty days. Backups are copied to another region.")]
    question = "How long are deleted documents kept?"
    result = generator.generate(prompts.rag_prompt(question, passages), question=question, passages=passages, max_tokens=64, temperature=0.0)
    assert result.text == "Deleted documents are kept for thirty days. [1]" and result.input_tokens is None
    assert embedder.embedded == ["Backups are copied to another region."]


@pytest.mark.parametrize("prompt,answer", [(prompts.rag_prompt("q", []), extractive.IDK), (prompts.baseline_prompt("q"), generators.NO_SOURCES)])
def test_the_generator_without_passages_says_why_it_cannot_answer(prompt, answer):
    generator = generators.ExtractiveGenerator(lambda: 1 / 0, FakeEmbedder())  # never reads the index
    assert generator.generate(prompt, question="q", passages=[], max_tokens=64, temperature=0.0).text == answer
    status = generator.status()
    assert (status.name, status.available, status.model, status.reason) == ("extractive", True, "local:extractive", None)
