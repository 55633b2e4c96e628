"""Hashed word n-gram representations: "ngram:D" (the hashed columns) and "ngram-svd:D"
(their top singular directions on the training texts), plus readable column names."""
from __future__ import annotations

import dataclasses
import functools
import re
from collections import Counter
from typing import Sequence

import numpy as np
import scipy.sparse.linalg

from dlm.data.ngrams import hashed_ngrams
from dlm.representations.registry import (positive_int, register_representation, standardiser,
                                          texts_list)

_TOKEN_RE = re.compile(r"\w+(?:['\u2019]\w+)*|[?!]")   # dlm.data.ngrams' word tokens


def word_grams(text: str) -> set[str]:
    """A text's distinct word 1-2 grams, lower-cased (dlm.data.ngrams' tokens)."""
    toks = _TOKEN_RE.findall(text.lower())
    return set(toks) | {f"{a} {b}" for a, b in zip(toks, toks[1:])}


def gram_counts(texts: Sequence[str]):
    """(distinct texts, inverse [N], grams per distinct text, rows containing each gram)."""
    uniq, inverse, counts = np.unique(np.asarray(texts, dtype=object).astype(str),
                                      return_inverse=True, return_counts=True)
    grams = [word_grams(t) for t in uniq]
    freq: Counter = Counter()
    for g, c in zip(grams, counts):
        for gram in g:
            freq[gram] += int(c)
    return uniq, inverse.reshape(-1), grams, freq


def ngram_names(texts: Sequence[str], n_features: int, top: int = 3) -> list[str]:
    """A name per hashed n-gram column: "ngram[j]: a, b, c", its most frequent n-grams here.

    Each distinct word 1-2 gram is hashed through dlm.data.ngrams itself, so the names
    follow its hashing exactly; columns no n-gram of these texts reaches stay "ngram[j]".
    """
    freq = gram_counts(texts)[3]
    by_bucket: dict[int, list[tuple[int, str]]] = {}
    for k in (1, 2):
        grams = [g for g in freq if g.count(" ") == k - 1]
        if not grams:
            continue
        X = hashed_ngrams(grams, n_features=n_features, ngram_range=(k, k), signed=False,
                          normalize=False)
        for row, g in enumerate(grams):
            cols = X.indices[X.indptr[row]:X.indptr[row + 1]]
            if len(cols) == 1:                   # tokenised as one n-gram, as in the features
                by_bucket.setdefault(int(cols[0]), []).append((freq[g], g))
    names = []
    for j in range(n_features):
        best = [g for _, g in sorted(by_bucket.get(j, []), key=lambda t: (-t[0], t[1]))[:top]]
        names.append(f"ngram[{j}]: " + ", ".join(best) if best else f"ngram[{j}]")
    return names


class HashedNgrams:
    """Hashed word 1-2 grams, `dim` columns, l2-normalised rows (dense float32, or scipy CSR
    with sparse=True). Nothing is fitted; the training texts only name the columns."""

    def __init__(self, dim: int, spec: str, train_texts: Sequence[str] = (), sparse: bool = False):
        self.dim, self.spec, self.sparse = dim, spec, sparse
        self._train = list(train_texts)

    @functools.cached_property
    def feature_names(self) -> tuple[str, ...]:
        """Each column's most frequent training n-grams (computed on first use)."""
        return tuple(ngram_names(self._train, self.dim))

    def transform(self, texts: Sequence[str]):
        X = hashed_ngrams(texts_list(texts), n_features=self.dim, dense=not self.sparse)
        return X if self.sparse else np.asarray(X, np.float32)

    __call__ = transform


@dataclasses.dataclass(frozen=True, eq=False)
class NgramSVD:
    """Hashed n-grams times a fitted projection [n_features, dim], then standardised."""

    projection_FxD: np.ndarray
    mean_D: np.ndarray
    sd_D: np.ndarray
    n_features: int
    ngram_range: tuple[int, int]
    spec: str = "ngram-svd"
    feature_names = None

    @property
    def dim(self) -> int:
        return int(self.projection_FxD.shape[1])

    @classmethod
    def fit(cls, texts: Sequence[str], dim: int = 128, n_features: int = 4096,
            ngram_range: tuple[int, int] = (1, 2), seed: int = 0, spec: str | None = None
            ) -> "NgramSVD":
        """Top-`dim` right singular vectors of the distinct texts' hashed n-gram matrix
        (uncentred: the head has a bias, and the leading direction is then the mean)."""
        uniq = list(dict.fromkeys(texts_list(texts)))
        X = hashed_ngrams(uniq, n_features=n_features, ngram_range=tuple(ngram_range))
        k = min(dim, min(X.shape) - 1)
        if k < 1:
            raise ValueError(f"ngram-svd:{dim}: {len(uniq)} distinct texts are too few")
        _, s, vt = scipy.sparse.linalg.svds(X.astype(np.float64), k=k, random_state=seed)
        order = np.argsort(-s)                       # svds returns ascending singular values
        proj = vt[order].T.astype(np.float32)
        # sign convention: largest-magnitude entry of each direction positive (deterministic)
        proj *= np.sign(proj[np.abs(proj).argmax(axis=0), np.arange(k)])[None, :]
        H = np.asarray(X @ proj, np.float32)
        mean, sd = standardiser(H)
        return cls(proj, mean, sd, n_features, tuple(ngram_range), spec or f"ngram-svd:{dim}")

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        X = hashed_ngrams(texts_list(texts), n_features=self.n_features,
                          ngram_range=self.ngram_range)
        return (np.asarray(X @ self.projection_FxD, np.float32) - self.mean_D) / self.sd_D

    __call__ = transform


def _ngram(option, train_texts, *, seed=0, **_):
    width, _, flag = (option or "").partition(":")
    if flag not in ("", "sparse"):
        raise ValueError(f"text representation 'ngram:{option}': after the width only "
                         "':sparse' is allowed")
    spec = f"ngram:{option}" if option else "ngram"
    return HashedNgrams(positive_int(spec, width or None, 256), spec, train_texts, flag == "sparse")


def _ngram_svd(option, train_texts, *, seed=0, **_):
    spec = f"ngram-svd:{option}" if option else "ngram-svd"
    return NgramSVD.fit(train_texts, dim=positive_int(spec, option, 128), seed=seed, spec=spec)


register_representation("ngram", _ngram, "ngram:D")
register_representation("ngram-svd", _ngram_svd, "ngram-svd:D")
