"""CIDEr-D (Vedantam et al. 2015) with document frequencies fixed on a reference corpus.

pycocoevalcap's scorer recomputes document frequencies from whatever references it is
given, which suits whole-split evaluation; self-critical training scores small batches,
so the frequencies are computed once from all training references, as in Rennie et al.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

__all__ = ["CiderD"]

Ngrams = Counter[tuple[str, ...]]


def _ngrams(words: Sequence[str], n_max: int) -> Ngrams:
    return Counter(tuple(words[i : i + n]) for n in range(1, n_max + 1) for i in range(len(words) - n + 1))


class CiderD:
    """CIDEr-D of token lists against per-image reference token lists (scale: x10, like COCO)."""

    def __init__(self, corpus_references: Sequence[Sequence[Sequence[str]]], *, n: int = 4, sigma: float = 6.0):
        self.n, self.sigma = n, sigma
        df: Counter[tuple[str, ...]] = Counter()
        for references in corpus_references:
            df.update({gram for ref in references for gram in _ngrams(ref, n)})
        self.df = df
        self.log_images = math.log(float(len(corpus_references)))
        self._cache: dict[int, list[tuple[list[dict], list[float], int]]] = {}

    def _vector(self, counts: Ngrams) -> tuple[list[dict], list[float]]:
        vectors: list[dict] = [{} for _ in range(self.n)]
        norms = [0.0] * self.n
        for gram, tf in counts.items():
            k = len(gram) - 1
            weight = tf * (self.log_images - math.log(max(1.0, self.df.get(gram, 0.0))))
            vectors[k][gram] = weight
            norms[k] += weight * weight
        return vectors, [math.sqrt(x) for x in norms]

    def _references(self, key: int, references: Sequence[Sequence[str]]):
        if key not in self._cache:
            self._cache[key] = [(*self._vector(_ngrams(ref, self.n)), len(ref)) for ref in references]
        return self._cache[key]

    def score(self, candidate: Sequence[str], references: Sequence[Sequence[str]], *, key: int | None = None) -> float:
        """CIDEr-D of one candidate; ``key`` caches the references' vectors (e.g. an image index)."""
        refs = (
            self._references(key, references)
            if key is not None
            else [(*self._vector(_ngrams(ref, self.n)), len(ref)) for ref in references]
        )
        vec, norm = self._vector(_ngrams(candidate, self.n))
        total = 0.0
        for ref_vec, ref_norm, ref_len in refs:
            delta = len(candidate) - ref_len
            penalty = math.exp(-(delta**2) / (2 * self.sigma**2))
            for k in range(self.n):
                dot = sum(min(w, ref_vec[k].get(g, 0.0)) * ref_vec[k].get(g, 0.0) for g, w in vec[k].items())
                if norm[k] and ref_norm[k]:
                    total += penalty * dot / (norm[k] * ref_norm[k]) / self.n
        return 10.0 * total / len(refs)
