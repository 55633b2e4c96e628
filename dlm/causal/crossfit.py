"""Cross-fitted confounder adjustment: each unit's g_hat comes from a fit that never saw it.

K folds (by group when groups are given, so units randomised together stay in one fold);
the fit on the other K-1 folds gives the held-out fold's g_hat(C) and its interval. The
adjusted outcome is the empirical logit (half-count corrected, ObservationalLog's) minus
g_hat: the confounders' centred contribution is removed and the intercept kept, so the
adjusted rate stays on the data's scale. `partial_out` is the same machinery with no text
term: the outcome residualised on C alone (a DML-style outcome residual), the baseline
that also strips causal text signal correlated with C.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Mapping

import numpy as np
import scipy.special

from dlm.causal.design import build_design
from dlm.causal.fit import EstimatorConfig, Fit, fit
from dlm.data.log import Confounder, LogValidationError, ObservationalLog


@dataclasses.dataclass(frozen=True, eq=False)
class Adjusted:
    """Cross-fitted adjustment of every unit, plus the full-data fit for the effects table.

    Real outcome: logit_adjusted and rate_adjusted are both outcome - g_hat.
    """

    g_hat: np.ndarray            # [N] centred g(C_i) from the fit without unit i's fold
    g_lo: np.ndarray             # [N] its interval (cfg.interval)
    g_hi: np.ndarray
    logit_adjusted: np.ndarray   # [N] empirical logit - g_hat
    rate_adjusted: np.ndarray    # [N] sigmoid(logit_adjusted)
    fold: np.ndarray             # [N] fold index of each unit
    fit: Fit                     # fitted on all rows (effects(), text_effects())

    def effects(self):
        return self.fit.effects()


def fold_ids(n: int, folds: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Fold index [N] in 0..folds-1: a random balanced split of units, or of groups."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return rng.permutation(np.arange(n) % folds)
    _, g_codes = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = int(g_codes.max()) + 1 if n else 0
    if n_groups < folds:
        raise ValueError(f"{n_groups} groups cannot fill {folds} folds")
    return rng.permutation(np.arange(n_groups) % folds)[g_codes]


def _take(confounders: Mapping[str, Confounder], idx: np.ndarray) -> dict[str, Confounder]:
    return {k: c.take(idx) for k, c in confounders.items()}


def _warn_unseen_levels(design, train: Mapping[str, Confounder], fold: int) -> None:
    """A categorical level with no training rows gets only its prior (not the average level)."""
    for b in design.indexed:
        if b.kind != "categorical":
            continue
        seen = np.bincount(np.asarray(train[b.name].values, np.int64), minlength=b.n_levels) > 0
        if not seen.all():
            missing = [b.labels[i] for i in np.flatnonzero(~seen)][:5]
            warnings.warn(f"fold {fold}: confounder {b.name!r} levels {missing} have no training "
                          "rows; their g_hat rests on the prior", stacklevel=3)


def empirical_logit(successes=None, trials=None, outcome=None) -> np.ndarray:
    """ObservationalLog's empirical logit (or the real outcome), for bare arrays."""
    ref = outcome if outcome is not None else successes
    log = ObservationalLog(content=np.zeros(len(ref)), confounders={}, successes=successes,
                           trials=trials, outcome=outcome)
    return log.logit_outcome()


def cross_fit(successes=None, trials=None, text_NxF=None,
              confounders: Mapping[str, Confounder] | None = None,
              cfg: EstimatorConfig = EstimatorConfig(), *, outcome=None, groups=None,
              source: str = "<data>") -> Adjusted:
    """K-fold cross-fitted g_hat and adjusted outcomes (see module docstring)."""
    confounders = dict(confounders or {})
    ref = outcome if outcome is not None else successes
    if ref is None:
        raise ValueError("give either successes and trials, or outcome")
    n = len(ref)
    groups = None if groups is None else np.asarray(groups)
    if groups is not None and groups.shape != (n,):
        raise LogValidationError(f"has shape {groups.shape}, expected ({n},)", source=source,
                                 column="group")
    design = build_design(confounders, time_basis=cfg.time_basis, spline_df=cfg.spline_df,
                          source=source)
    text = None if text_NxF is None else np.asarray(text_NxF)
    pick = lambda a, idx: None if a is None else np.asarray(a)[idx]  # noqa: E731
    fold = fold_ids(n, cfg.folds, cfg.seed, groups)
    g_hat, g_lo, g_hi = np.empty(n), np.empty(n), np.empty(n)
    for k in range(cfg.folds):
        train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        conf_train = _take(confounders, train)
        _warn_unseen_levels(design, conf_train, k)
        f_k = fit(pick(successes, train), pick(trials, train), pick(text, train), conf_train,
                  cfg, outcome=pick(outcome, train), groups=pick(groups, train), design=design,
                  source=f"{source} (fold {k} training rows)")
        conf_test = _take(confounders, test)
        g_hat[test] = f_k.g(conf_test)
        g_lo[test], g_hi[test] = f_k.g_interval(conf_test)
    full = fit(successes, trials, text, confounders, cfg, outcome=outcome, groups=groups,
               design=design, source=source)
    adjusted = empirical_logit(successes, trials, outcome) - g_hat
    rate = adjusted if outcome is not None else scipy.special.expit(adjusted)
    return Adjusted(g_hat, g_lo, g_hi, adjusted, rate, fold, full)


def deconfound(log: ObservationalLog, text_NxF: np.ndarray | None,
               cfg: EstimatorConfig = EstimatorConfig()) -> Adjusted:
    """DeconfoundLM's adjustment of a log: g fitted jointly with the text term, cross-fitted."""
    return cross_fit(log.successes, log.trials, text_NxF, log.confounders, cfg,
                     outcome=log.outcome, groups=log.group, source=log.source)


def partial_out(log: ObservationalLog, cfg: EstimatorConfig = EstimatorConfig()) -> Adjusted:
    """The partial_out baseline: outcome residualised on the confounders alone (no text)."""
    return deconfound(log, None, cfg)
