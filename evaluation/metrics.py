"""Metric functions: answer F1 / exact match (SQuAD-style), abstention, retrieval recall@k / MRR,
citation precision, percentiles and seeded bootstrap confidence intervals. Pure functions, no I/O.

Answer normalisation follows the SQuAD evaluation script's idea (lower case, no punctuation, no
English articles, single spaces), after Unicode NFKC (full-width digits and letters become ASCII)
and after removing the `[n]` citation markers the targets write. Texts in unspaced scripts
(Japanese, Chinese, Thai, ...) are compared character by character: their words are not
separated by spaces, so whitespace tokens would make one "word" of a whole sentence.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import unicodedata
from collections import Counter
from typing import Callable, Iterable, Sequence

import numpy as np

UNSPACED_LANGS = frozenset({"ja", "zh", "th", "lo", "km", "my", "bo", "yue", "wuu"})
# Hiragana, Katakana, CJK ideographs (+ extension A, compatibility), half-width Katakana, Thai,
# Lao, Myanmar, Khmer, Tibetan.
_UNSPACED = re.compile(
    "[\u3040-\u309f\u30a0-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
    "\u0e00-\u0e7f\u0e80-\u0eff\u1000-\u109f\u1780-\u17ff\u0f00-\u0fff]"
)
_MARKERS = re.compile(r"\[\s*\d{1,3}(?:\s*,\s*\d{1,3})*\s*\]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")

# What an abstention looks like (the RAG prompt's own sentence, then common variants), matched on
# the NFKC-normalised, lower-cased answer. An empty answer is an abstention too.
ABSTENTION_PATTERNS = (
    r"\bi (?:do not|don't|dont) know\b",
    r"\b(?:sources?|context|documents?|passages?)\b[^.]{0,60}\b(?:do|does|did) not (?:contain|include|mention|say|provide|state|specify|answer)",
    r"\b(?:cannot|can't|can not|unable to) (?:answer|find|determine|tell)\b",
    r"\bno (?:information|mention|details?) (?:about|on|of|regarding|is|was)\b",
    r"\bnot (?:stated|specified|mentioned|covered|provided|available) in the\b",
    r"(?:分かりません|わかりません|不明です|記載(?:が|は)?(?:ありません|ない|されていません)|情報(?:が|は)?(?:ありません|ない)|"
    r"見つかりません|答えられません|お答えできません|含まれていません|判断できません)",
)
_ABSTAIN = re.compile("|".join(f"(?:{p})" for p in ABSTENTION_PATTERNS))


def is_unspaced(text: str) -> bool:
    """True when the text is written (at least partly) in a script without spaces between words."""
    return bool(_UNSPACED.search(text))


def char_level_for(lang: str | None, references: Sequence[str]) -> bool:
    """Compare characters (not words) when the question's language or any reference is unspaced."""
    if lang and lang.split("-")[0].lower() in UNSPACED_LANGS:
        return True
    return any(is_unspaced(reference) for reference in references)


def strip_citations(text: str) -> str:
    return _MARKERS.sub(" ", text)


def normalize(text: str, *, char_level: bool = False) -> str:
    text = unicodedata.normalize("NFKC", strip_citations(text)).lower()
    text = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text)
    if char_level:
        return "".join(text.split())
    return " ".join(_ARTICLES.sub(" ", text).split())


def tokens(text: str, *, char_level: bool = False) -> list[str]:
    normalized = normalize(text, char_level=char_level)
    return list(normalized) if char_level else normalized.split()


def _f1(prediction: list[str], reference: list[str]) -> float:
    if not prediction or not reference:
        return float(prediction == reference)
    same = sum((Counter(prediction) & Counter(reference)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(prediction), same / len(reference)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, references: Sequence[str], *, char_level: bool = False) -> float | None:
    """Best token F1 against any reference; None without references (unanswerable questions)."""
    if not references:
        return None
    predicted = tokens(prediction, char_level=char_level)
    return max(_f1(predicted, tokens(reference, char_level=char_level)) for reference in references)


def token_recall(prediction: str, references: Sequence[str], *, char_level: bool = False) -> float | None:
    """Best share of a reference's tokens found in the prediction (long answers are not penalised)."""
    if not references:
        return None
    predicted = Counter(tokens(prediction, char_level=char_level))
    best = 0.0
    for reference in references:
        wanted = tokens(reference, char_level=char_level)
        if not wanted:
            continue
        best = max(best, sum((predicted & Counter(wanted)).values()) / len(wanted))
    return best


def exact_match(prediction: str, references: Sequence[str], *, char_level: bool = False) -> float | None:
    if not references:
        return None
    predicted = normalize(prediction, char_level=char_level)
    return float(any(predicted == normalize(reference, char_level=char_level) for reference in references))


def abstained(answer: str) -> bool:
    normalized = unicodedata.normalize("NFKC", answer).lower().replace("\u2019", "'")
    return not normalized.strip() or bool(_ABSTAIN.search(normalized))


def ranked_documents(citations: Iterable[dict], to_id: Callable[[str], str]) -> list[str]:
    """Document ids of the citations in rank order (`n`, the source's number in the prompt), each once."""
    ordered = sorted(enumerate(citations), key=lambda pair: (_rank(pair[1].get("n")), pair[0]))
    ids: list[str] = []
    for _, citation in ordered:
        source = citation.get("source")
        if isinstance(source, str) and source:
            doc_id = to_id(source)
            if doc_id not in ids:
                ids.append(doc_id)
    return ids


def _rank(n) -> float:
    return float(n) if isinstance(n, (int, float)) and not isinstance(n, bool) else math.inf


def recall_at_k(ranked: Sequence[str], gold: Iterable[str], k: int) -> float | None:
    gold = set(gold)
    if not gold:
        return None
    return len(gold.intersection(ranked[:k])) / len(gold)


def reciprocal_rank(ranked: Sequence[str], gold: Iterable[str]) -> float | None:
    gold = set(gold)
    if not gold:
        return None
    for position, doc_id in enumerate(ranked, start=1):
        if doc_id in gold:
            return 1.0 / position
    return 0.0


def citation_precision(ranked: Sequence[str], gold: Iterable[str]) -> float | None:
    """Share of the cited documents that are gold; None when nothing is cited."""
    cited = set(ranked)
    if not cited:
        return None
    return len(cited.intersection(gold)) / len(cited)


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between order statistics."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def rng_for(seed: int, *labels: str) -> random.Random:
    """A generator seeded by the run's seed and labels: the same interval whatever the order of work."""
    digest = hashlib.sha256(":".join((str(seed), *labels)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def bootstrap_ci(values: Sequence[float], statistic: Callable[[Sequence[float]], float | None] = mean, *,
                 resamples: int = 1000, rng: random.Random, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of `statistic` over `values` (None with no values)."""
    if not values:
        return None
    n = len(values)
    picks = _resample_indices(rng, resamples, n)
    if statistic is mean:
        # Summed left to right, as sum() does; the last column of a cumulative sum is that order.
        estimates = sorted((np.cumsum(np.asarray(values, dtype=float)[picks], axis=1)[:, -1] / n).tolist())
    else:
        estimates = sorted(statistic([values[i] for i in row]) for row in picks.tolist())
    tail = (1.0 - level) / 2.0 * 100.0
    return percentile(estimates, tail), percentile(estimates, 100.0 - tail)


def _resample_indices(rng: random.Random, resamples: int, n: int) -> np.ndarray:
    """The indices `rng.choices(range(n), k=n)` would draw `resamples` times, drawn at numpy speed.

    Both generators are MT19937 with the same 53-bit doubles: numpy continues from `rng`'s exact
    state, `choices` takes floor(random() * n), and `rng` is left where `choices` would leave it.
    The bootstrap is the harness's largest fixed cost (about 0.8 s a run in pure Python).
    """
    version, internal, gauss = rng.getstate()
    generator = np.random.RandomState()
    generator.set_state(("MT19937", np.array(internal[:-1], dtype=np.uint32), internal[-1], 0, 0.0))
    picks = np.floor(generator.random_sample((resamples, n)) * n).astype(np.intp)
    _, keys, position, _, _ = generator.get_state()
    rng.setstate((version, (*(int(k) for k in keys), int(position)), gauss))
    return picks
