"""Reward backends on a fixed text representation: ridge regression and linear
Bradley-Terry, solved exactly (dlm.data.ngrams), with the l2 strength picked on the
validation rows by the method's own loss.

A backend turns one method's Targets into a scorer texts -> rewards
(dlm.rewards.fit.fit_scorer): regress(...) for the regression methods, compare(...) for
the pairwise one. TrunkBackend (dlm.rewards.trunk) trains the byte-level trunk instead.
The representation is any texts -> [N, D] callable, e.g. a dlm.representations spec
fitted on the training texts ("ngram:16384:sparse", "llm:smollm2-135m").
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import scipy.sparse

Scorer = Callable[[Sequence[str]], np.ndarray]


def weighted_mse(pred, y, w) -> float:
    """The regression methods' validation loss: sum w (pred - y)^2 / sum w."""
    return float(np.sum(w * (pred - y) ** 2) / np.sum(w))


def bt_loss(s_win, s_lose) -> float:
    """The pairwise (Bradley-Terry) loss: mean over pairs of log(1 + exp(-(s_win - s_lose)))."""
    return float(np.mean(np.logaddexp(0.0, -(np.asarray(s_win) - np.asarray(s_lose)))))


def _week_onehot(weeks, n_weeks: int) -> scipy.sparse.csr_matrix:
    weeks = np.asarray(weeks, np.int64)
    ones = np.ones(weeks.size, np.float32)
    return scipy.sparse.csr_matrix((ones, (np.arange(weeks.size), weeks)),
                                   shape=(weeks.size, n_weeks))


def within_group_demeaned(X, groups, weight) -> np.ndarray:
    """Dense X [N, D] minus each row's group's weighted mean row (sparse X is densified:
    a demeaned sparse matrix is dense)."""
    codes = np.asarray(groups, np.int64)
    w = np.asarray(weight, np.float64)
    n_groups = int(codes.max()) + 1
    avg = scipy.sparse.csr_matrix((w, (codes, np.arange(codes.size))), shape=(n_groups, codes.size))
    avg = scipy.sparse.diags(1.0 / np.maximum(np.asarray(avg.sum(1)).ravel(), 1e-300)) @ avg
    dense = X.toarray() if scipy.sparse.issparse(X) else np.asarray(X)
    return (dense - np.asarray(avg @ dense)[codes]).astype(np.float32)


class LinearBackend:
    """Ridge (regressions) and linear Bradley-Terry (pairs) on `featurise(texts) -> [N, D]`
    (dense or scipy.sparse). The l2 strength is chosen on the validation rows by the
    method's own loss, then the model is refitted on training + validation rows."""

    def __init__(self, featurise: Callable[[Sequence[str]], object],
                 l2_grid: Sequence[float] = (1e-4, 1e-3, 1e-2), history: list | None = None,
                 name: str = "linear"):
        self.featurise, self.l2_grid, self.name = featurise, tuple(l2_grid), name
        self.history = [] if history is None else history

    def _design(self, texts, weeks, n_weeks: int):
        X = self.featurise(list(texts))
        if weeks is None:
            return X
        week_cols = _week_onehot(weeks, n_weeks)
        return scipy.sparse.hstack([scipy.sparse.csr_matrix(X), week_cols]).tocsr()

    def _select(self, method: str, fit_on: Callable[[np.ndarray, float], Callable],
                val_loss: Callable[[Callable], float], val: np.ndarray):
        """Best l2 by validation loss (the first if there are no validation rows)."""
        best, best_loss = self.l2_grid[0], np.inf
        if val.any() and len(self.l2_grid) > 1:
            for l2 in self.l2_grid:
                loss = val_loss(fit_on(~val, l2))
                self.history.append({"representation": self.name, "method": method, "l2": l2,
                                     "val_loss": loss})
                if loss < best_loss:
                    best, best_loss = l2, loss
        return fit_on(np.ones_like(val), best)

    def regress(self, method, texts, weeks, n_weeks, ref_week, target, weight, val,
                groups=None) -> Scorer:
        """groups: [N] codes of randomised groups, each with its own fixed effect: the
        design is demeaned within group (weighted, Frisch-Waugh), so only within-group
        differences identify the text's coefficients, unpenalised and unattenuated."""
        from dlm.data.ngrams import fit_linear

        X = self._design(texts, weeks, n_weeks)
        if groups is not None:
            X = within_group_demeaned(X, groups, weight)
        val = np.asarray(val, bool)

        def fit_on(rows, l2):
            return fit_linear(X[rows], target[rows], weight[rows], l2=l2)

        model = self._select(method, fit_on, lambda m: weighted_mse(
            m(X[val]), target[val], weight[val]), val)

        def score(new_texts):
            ref = None if weeks is None else np.full(len(new_texts), ref_week)
            return model(self._design(new_texts, ref, n_weeks))
        return score

    def compare(self, method, win, lose, val) -> Scorer:
        from dlm.data.ngrams import fit_bradley_terry_linear

        texts = np.concatenate([np.asarray(win), np.asarray(lose)])
        uniq, inv = np.unique(texts.astype(str), return_inverse=True)
        X = self.featurise(list(uniq))
        a, b = inv[:len(win)], inv[len(win):]
        val = np.asarray(val, bool)

        def fit_on(rows, l2):
            return fit_bradley_terry_linear(X, a[rows], b[rows], l2=l2)

        model = self._select(method, fit_on, lambda m: bt_loss(
            m(X[a[val]]), m(X[b[val]])), val)
        return lambda new_texts: model(self.featurise(list(new_texts)))
