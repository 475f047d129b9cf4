"""Score arithmetic of the deployed search path, reproduced for the embedded store.

- k-NN score: the vector index uses faiss HNSW with `space_type: l2`, whose score is
  1 / (1 + d^2) for the squared L2 distance d^2; for unit vectors d^2 = 2 - 2 cos, so
  `knn_score(cos) = 1 / (3 - 2 cos)` (0.2 for opposite vectors, 1.0 for identical ones).
- BM25: Lucene's formula (OpenSearch's default similarity, k1 = 1.2, b = 0.75):
  idf = ln(1 + (N - n + 0.5) / (n + 0.5)), score = sum idf * tf / (tf + k1 (1 - b + b dl / avgdl)).
- Hybrid: the search pipeline's normalization processor (`min_max`, then `arithmetic_mean` with
  weights [lexical, vector] = [1 - hybrid_vector_weight, hybrid_vector_weight]). Each sub-query
  contributes its own top hits; scores are min-max normalised per sub-query over those hits
  (a score equal to the minimum becomes 0.001, not 0; a sub-query whose hits all score the same
  gives each 1.0); a document missing from a sub-query counts 0 there, and the weighted mean
  divides by the sum of all weights, 1 here (OpenSearch 2.x/3.x neural-search semantics).
"""

from __future__ import annotations

from typing import Hashable, Mapping

import numpy as np

BM25_K1 = 1.2
BM25_B = 0.75
MIN_NORMALIZED = 0.001  # what min_max gives the lowest score (so it still counts as a hit)
SINGLE_RESULT = 1.0  # what min_max gives when every hit of a sub-query scores the same


def knn_score(cosine: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (3.0 - 2.0 * np.clip(cosine, -1.0, 1.0))


def bm25_idf(doc_count: int, doc_freq: np.ndarray | int) -> np.ndarray | float:
    return np.log(1.0 + (doc_count - doc_freq + 0.5) / (doc_freq + 0.5))


def bm25_term_scores(tf: np.ndarray, doc_len: np.ndarray, avg_len: float, idf: float) -> np.ndarray:
    return idf * tf / (tf + BM25_K1 * (1.0 - BM25_B + BM25_B * doc_len / avg_len))


def min_max(scores: Mapping[Hashable, float]) -> dict[Hashable, float]:
    """Min-max normalisation of one sub-query's hits, as the normalization processor does it."""
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    out = {}
    for key, score in scores.items():
        if high == low:
            out[key] = SINGLE_RESULT
        else:
            normalised = (score - low) / (high - low)
            out[key] = MIN_NORMALIZED if normalised == 0.0 else normalised
    return out


def combine(lexical: Mapping[Hashable, float], vector: Mapping[Hashable, float], *, vector_weight: float) -> dict[Hashable, float]:
    """Weighted arithmetic mean of the normalised sub-query scores (missing = 0)."""
    weights = (1.0 - vector_weight, vector_weight)  # they sum to 1: the mean needs no division
    lexical_n, vector_n = min_max(lexical), min_max(vector)
    combined = {}
    for key in lexical_n.keys() | vector_n.keys():
        combined[key] = weights[0] * lexical_n.get(key, 0.0) + weights[1] * vector_n.get(key, 0.0)
    return combined
