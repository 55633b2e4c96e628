"""Hybrid reward: a biased observational reward and an unbiased, noisy experimental one.

On an experimental sample (rows = arms, grouped into randomised groups, e.g. the arms of
one A/B test), compare within-group contrasts (each group's mean removed: a reward only
has to rank texts shown under the same conditions, and group-level shifts cancel):

    r_U = s + e_U            experimental estimate, E e_U = 0, Var e_U = Var_U (known per arm,
                             e.g. the binomial variance of an arm's empirical logit)
    r_B = s + b + e_B        observational reward: systematic bias b (confounding, a wrong
                             form of g) and estimation noise e_B (Var_B)

With independent noises E (r_B - r_U)^2 = Bias_B^2 + Var_B + Var_U, and the mix
w r_U + (1 - w) r_B has error w^2 Var_U + (1 - w)^2 (Bias_B^2 + Var_B), smallest at

    w* = (Bias_B^2 + Var_B) / (Bias_B^2 + Var_B + Var_U)    (the weight on the experimental side)
    1 - w* = Var_U / (Bias_B^2 + Var_B + Var_U)             (the weight on the observational side)

(Issue 15 writes the second fraction as the experimental side's weight; that is the
observational side's: a noisier experiment must get less weight, a more biased
observational reward more.)

Cross-fitting. Folds are formed over experimental groups. The observational side is
scored on fold k with the fit that never saw fold k's groups (`crossfit_rewards` makes
the K fits from a `fit_predict(train_mask)` callable); the spread of the K fits on the same
rows gives Var_B (delete-a-group jackknife), and Bias_B^2 is what remains of the held-out
mean squared discrepancy after both variances. Given one observational prediction
(r_B of shape [N], a reward trained on a separate log), Var_B cannot be told from the bias:
it is reported as 0 and Bias_B^2 carries both, which leaves w* unchanged.

Two estimators of w*: `estimate_weight` compares a reward with arm-level experimental
estimates of known variance (r_U = the arms' empirical logits); `model_weight` compares two
reward MODELS (r_U = an experimental reward fitted on the arms, cross-fitted like r_B) on
held-out arms, without a model of the arms' noise. The hybrid reward methods of
dlm.rewards (METHODS "hybrid", "hybrid_naive"; dlm.rewards.fit.fit_hybrid) use the latter:
only a model scores texts no arm showed.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from dlm.causal.crossfit import fold_ids


@dataclasses.dataclass(frozen=True)
class HybridWeight:
    """The estimated pieces of w* (all on the contrasts' scale, means over arms)."""

    w: float                 # w*: weight on the experimental reward, in [0, 1]
    bias2: float             # Bias_B^2
    var_B: float             # Var_B (0 when r_B is a single prediction: bias2 then holds it)
    var_U: float             # Var_U
    mse_B: float             # Bias_B^2 + Var_B: the observational reward's error
    fold_w: np.ndarray       # [K] w* estimated on each held-out fold alone (its stability)
    n_groups: int
    n_rows: int


def _array(name: str, values, n: int | None = None, ndim: int = 1) -> np.ndarray:
    a = np.asarray(values, np.float64)
    if a.ndim != ndim or a.shape[-1] == 0 or (n is not None and a.shape[-1] != n):
        raise ValueError(f"{name} has shape {a.shape}; expected {ndim}-d with "
                         f"{'N' if n is None else n} rows")
    bad = ~np.isfinite(a)
    if bad.any():
        raise ValueError(f"{name} is not finite at row {int(np.argwhere(bad)[0][-1]) + 1}")
    return a


def group_codes(groups, n: int) -> tuple[np.ndarray, int]:
    """Integer codes 0..G-1 of the groups [N] and G; ValueError if missing or G < 2."""
    if groups is None:
        raise ValueError("the experimental sample has no group column: groups are needed "
                         "(arms randomised together) to form contrasts and folds")
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups has shape {groups.shape}, expected ({n},)")
    if groups.dtype.kind == "f" and np.isnan(groups).any():
        raise ValueError(f"groups is missing at row {int(np.flatnonzero(np.isnan(groups))[0]) + 1}")
    _, codes = np.unique(groups, return_inverse=True)
    n_groups = int(codes.max()) + 1
    if n_groups < 2:
        raise ValueError(f"need at least 2 experimental groups, got {n_groups}")
    return codes, n_groups


def contrasts(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """values [..., N] minus their group's mean (the within-group contrast)."""
    counts = np.bincount(codes, minlength=n_groups)
    flat = values.reshape(-1, values.shape[-1])
    means = np.stack([np.bincount(codes, weights=row, minlength=n_groups) for row in flat]) / counts
    return (flat - means[:, codes]).reshape(values.shape)


def contrast_variance(var_N: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Var of each arm's contrast given independent arm variances: for an arm in a group of
    m arms, v_i (1 - 2/m) + sum_j v_j / m^2."""
    m = np.bincount(codes, minlength=n_groups).astype(np.float64)
    total = np.bincount(codes, weights=var_N, minlength=n_groups)
    return var_N * (1.0 - 2.0 / m[codes]) + total[codes] / m[codes] ** 2


def crossfit_rewards(groups, fit_predict: Callable[[np.ndarray], np.ndarray], *, folds: int = 5,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The observational reward fitted K times, each time without one fold of experimental
    groups: fit_predict(train_mask [N] bool) -> predictions on all N rows. Returns
    (r_B [K, N], fold [N]); pass both to `estimate_weight`."""
    groups = np.asarray(groups)
    group_codes(groups, len(groups))
    fold = fold_ids(len(groups), folds, seed, groups)
    preds = np.stack([np.asarray(fit_predict(fold != k), np.float64) for k in range(folds)])
    return _array("r_B", preds, len(groups), ndim=2), fold


def estimate_weight(r_B, r_U, groups, var_U, *, fold=None, folds: int = 5,
                    seed: int = 0) -> HybridWeight:
    """w* and its pieces from the experimental sample.

    r_B: [N] observational predictions of the arms, or [K, N] cross-fitted (row i scored
         by fit fold[i], which never saw it; `crossfit_rewards`);
    r_U: [N] experimental estimates; var_U: [N] (or a scalar) their sampling variances;
    groups: [N] randomised-group labels; fold: [N] fold ids (with a [K, N] r_B; otherwise
         made from groups, `folds` and `seed`).
    """
    r_U = _array("r_U", r_U)
    n = len(r_U)
    codes, n_groups = group_codes(groups, n)
    var_U = _array("var_U", np.broadcast_to(np.asarray(var_U, np.float64), (n,)), n)
    if np.any(var_U < 0):
        raise ValueError(f"var_U is negative at row {int(np.flatnonzero(var_U < 0)[0]) + 1}")
    r_B = np.asarray(r_B, np.float64)
    r_B = _array("r_B", r_B, n, ndim=r_B.ndim if r_B.ndim in (1, 2) else 1)
    for name, v in (("r_U", r_U), ("r_B", r_B)):
        if np.all(np.ptp(v.reshape(-1, n), axis=-1) == 0):
            raise ValueError(f"{name} is constant: it ranks nothing")
    c_U = contrasts(r_U, codes, n_groups)
    v_U = contrast_variance(var_U, codes, n_groups)
    if r_B.ndim == 2:
        K = r_B.shape[0]
        if fold is None:
            raise ValueError("a cross-fitted r_B [K, N] needs the fold [N] it was fitted with")
        fold = np.asarray(fold)
        if fold.shape != (n,) or fold.min() < 0 or fold.max() >= K:
            raise ValueError(f"fold must be [{n}] ids in 0..{K - 1}")
        c_all = contrasts(r_B, codes, n_groups)
        c_B = c_all[fold, np.arange(n)]
        # delete-a-group jackknife: (K-1)/K * sum_k (c_k - mean_k c)^2, per arm
        v_B = (K - 1) / K * ((c_all - c_all.mean(0)) ** 2).sum(0)
    else:
        fold = fold_ids(n, folds, seed, codes) if fold is None else np.asarray(fold)
        c_B, v_B = contrasts(r_B, codes, n_groups), np.zeros(n)
    d2 = (c_B - c_U) ** 2

    def weight(rows) -> tuple[float, float, float, float]:
        vu, vb = float(v_U[rows].mean()), float(v_B[rows].mean())
        bias2 = max(float(d2[rows].mean()) - vu - vb, 0.0)
        total = bias2 + vb + vu
        return ((bias2 + vb) / total if total > 0 else 0.5), bias2, vb, vu

    w, bias2, vb, vu = weight(np.ones(n, bool))
    fold_w = np.array([weight(fold == k)[0] for k in np.unique(fold)])
    return HybridWeight(w=w, bias2=bias2, var_B=vb, var_U=vu, mse_B=bias2 + vb, fold_w=fold_w,
                        n_groups=n_groups, n_rows=n)


def model_weight(r_B, r_U, y, groups, fold) -> HybridWeight:
    """w* between two reward MODELS, from held-out arms of an experiment.

    r_B, r_U: [K, N] the observational and the experimental reward, each fitted K times
    without one fold of groups (row i scored by the fit that never saw fold[i]); y: [N]
    the arms' outcomes (empirical logits). On within-group contrasts, with the models'
    errors e_B = B - s, e_U = U - s and y's sampling noise independent of the held-out fits
    (cross-fitting makes it so):

        mean (U - B)^2          -> E e_B^2 + E e_U^2 - 2 E e_B e_U     (no y in it)
        mean (y - B) (U - B)    -> E e_B^2 - E e_B e_U                 (y's noise averages out)

    and their ratio is the weight w that minimises E (w U + (1 - w) B - s)^2: the held-out
    least-squares optimum, whatever the correlation of e_B and e_U and whether U is
    biased, clipped to [0, 1], with no model of y's noise (whose delta-method variance is
    poor at a few clicks per arm). The pieces are reported as mse_B = the second line and
    Var_U = the first minus it: the issue's Bias_B^2 + Var_B and Var_U when the two errors
    are independent, otherwise net of the error the rewards share (both miss the same part
    of s through one representation; ridge shrinks both), so w* = mse_B / (mse_B + Var_U)
    holds either way. Var_B: the jackknife spread of the K fits, which covers only the
    variance due to the rows the folds hold out of r_B (all of it when the folds partition
    r_B's data; a small part when the observational log is much larger than the
    experiment); bias2 = mse_B - Var_B carries the rest.
    """
    y = _array("y", y)
    n = len(y)
    codes, n_groups = group_codes(groups, n)
    r_B, r_U = _array("r_B", r_B, n, ndim=2), _array("r_U", r_U, n, ndim=2)
    fold = np.asarray(fold)
    if r_B.shape != r_U.shape or fold.shape != (n,) or fold.min() < 0 or fold.max() >= len(r_B):
        raise ValueError(f"r_B {r_B.shape} and r_U {r_U.shape} must be [K, {n}] with fold "
                         f"[{n}] ids in 0..K-1")
    c_y = contrasts(y, codes, n_groups)
    cB_all, cU_all = contrasts(r_B, codes, n_groups), contrasts(r_U, codes, n_groups)
    c_B, c_U = cB_all[fold, np.arange(n)], cU_all[fold, np.arange(n)]
    K = len(r_B)
    v_B = (K - 1) / K * ((cB_all - cB_all.mean(0)) ** 2).sum(0)
    gap, lift = (c_U - c_B) ** 2, (c_y - c_B) * (c_U - c_B)

    def pieces(rows) -> tuple[float, float]:
        total = float(gap[rows].mean())
        mse_B = min(max(float(lift[rows].mean()), 0.0), total)
        return mse_B, total - mse_B

    def weight(mse_B: float, var_U: float) -> float:
        return mse_B / (mse_B + var_U) if mse_B + var_U > 0 else 0.5

    mse_B, var_U = pieces(np.ones(n, bool))
    var_B = min(float(v_B.mean()), mse_B)
    fold_w = np.array([weight(*pieces(fold == k)) for k in np.unique(fold)])
    return HybridWeight(w=weight(mse_B, var_U), bias2=mse_B - var_B, var_B=var_B, var_U=var_U,
                        mse_B=mse_B, fold_w=fold_w, n_groups=n_groups, n_rows=n)


def combine(r_B, r_U, w: float) -> np.ndarray:
    """The hybrid reward w r_U + (1 - w) r_B."""
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"the weight must be in [0, 1], got {w}")
    return w * np.asarray(r_U, np.float64) + (1.0 - w) * np.asarray(r_B, np.float64)


def experimental_arms(log) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(r_U, var_U, groups) [N] of an experimental ObservationalLog (binomial, one row per
    arm, `group` = the randomised test): the arms' empirical logits and their variances."""
    if log.group is None:
        raise ValueError(f"experimental log {log.source!r} has no group column: the randomised "
                         "groups (tests) are needed")
    if not log.is_binomial:
        raise ValueError(f"experimental log {log.source!r} needs binomial counts (successes, "
                         "trials) to know each arm's sampling variance")
    group_codes(log.group, len(log))
    return (log.logit_outcome(), binomial_logit_variance(log.successes, log.trials),
            np.asarray(log.group))


def weight_from_log(experiment, r_B, *, fold=None, folds: int = 5, seed: int = 0) -> HybridWeight:
    """`estimate_weight` on an experimental log: r_B [N] (or cross-fitted [K, N] with its
    fold) scores its rows; r_U and Var_U are the arms' empirical logits and their
    binomial variances."""
    r_U, var_U, groups = experimental_arms(experiment)
    return estimate_weight(r_B, r_U, groups, var_U, fold=fold, folds=folds, seed=seed)


def binomial_logit_variance(successes, trials) -> np.ndarray:
    """Sampling variance of the half-count-corrected empirical logit (ObservationalLog's
    logit_outcome): 1/(s + 1/2) + 1/(n - s + 1/2), the delta method."""
    s, n = np.asarray(successes, np.float64), np.asarray(trials, np.float64)
    return 1.0 / (s + 0.5) + 1.0 / (n - s + 0.5)
