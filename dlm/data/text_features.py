"""Named text representations for the estimator's text term f(h(X)).

A spec string ("ngram:256", "phi", "none") names one deterministic featuriser, so every
entry point that adjusts a log (scripts.upworthy, scripts.deconfound, the replications)
computes the *same* h(X) for the same spec and therefore the same adjusted outcomes.
Adding a representation is one function and one registry line.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def _ngram(texts: Sequence[str], arg: str | None) -> np.ndarray:
    from dlm.data.ngrams import hashed_ngrams

    dim = int(arg) if arg else 256
    return hashed_ngrams(texts, n_features=dim, dense=True)


def _phi(texts: Sequence[str], arg: str | None) -> np.ndarray:
    from sims.featurise import phi

    return phi(texts)


REPRESENTATIONS: dict[str, Callable[[Sequence[str], str | None], np.ndarray]] = {
    "ngram": _ngram,   # hashed word 1-2 grams, "ngram:D" columns (default 256), l2 rows
    "phi": _phi,       # the simulation world's hand features (sims.featurise)
}
DEFAULT_SPEC = "ngram:256"


def text_representation(texts: Sequence[str], spec: str = DEFAULT_SPEC) -> np.ndarray | None:
    """[N, F] float array for `texts` under `spec`; None for "none" (no text term)."""
    name, _, arg = spec.partition(":")
    if name == "none":
        return None
    if name not in REPRESENTATIONS:
        raise ValueError(f"unknown text representation {spec!r}; known: "
                         f"{', '.join(sorted(REPRESENTATIONS) + ['none'])} (e.g. 'ngram:256')")
    if name == "ngram" and arg and (not arg.isdigit() or int(arg) < 1):
        raise ValueError(f"text representation {spec!r}: the width after ':' must be a positive int")
    return np.asarray(REPRESENTATIONS[name](list(texts), arg or None))
