"""A method's Targets -> a scorer texts -> rewards, on one reward backend.

    ctx = MethodContext(obs_log, val=obs_val, experiment=arms, experiment_val=arms_val)
    targets = {m: METHODS[m].target_fn(ctx) for m in ("experimental", "naive", ...)}
    scorers = fit_scorers(targets, LinearBackend(fit_representation("ngram:16384:sparse", texts)))

The backend (dlm.rewards.linear.LinearBackend: exact ridge / linear Bradley-Terry on a
frozen representation; dlm.rewards.trunk.TrunkBackend: the byte-level trunk trained by
dlm.train) picks its regularisation on the Targets' validation rows with the method's own
loss. dlm.rewards.trainer.train_reward is the gradient-trained head of the simulation's
comparison (stacked knob values, several seeds, penalties).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from dlm.rewards.linear import Scorer, bt_loss, weighted_mse
from dlm.rewards.methods import RewardMethod, Targets, get_method


def pairwise_loss(scores: np.ndarray, targets: Targets) -> float:
    """The pairwise method's loss of per-row scores [N] on the Targets' (win, lose) pairs:
    mean over pairs of log(1 + exp(-(s_win - s_lose)))."""
    if targets.pairs is None:
        raise ValueError(f"{targets.source}: these targets have no pairs (a pairwise method's)")
    s = np.asarray(scores, np.float64)
    win, lose = targets.pairs
    return bt_loss(s[np.asarray(win)], s[np.asarray(lose)])


def regression_loss(scores: np.ndarray, targets: Targets) -> float:
    """The regression methods' loss: weighted mean squared error on the targets."""
    return weighted_mse(np.asarray(scores, np.float64), targets.target, targets.weight)


def _condition(targets: Targets, name: str):
    if name not in targets.confounders:
        raise ValueError(f"{targets.source}: no {name!r} confounder to condition on; found: "
                         f"{', '.join(targets.confounders) or 'none'}")
    conf = targets.confounders[name]
    codes = np.asarray(conf.values, np.int64)
    return codes, conf.n_levels, int(np.median(codes))    # the median level at use


def fit_scorer(method: str | RewardMethod, targets: Targets, backend, name: str | None = None,
               condition_on: str = "week") -> Scorer:
    """Train `method`'s reward on `targets` with `backend` -> texts -> rewards.

    pairwise methods: backend.compare on the pairs' texts; regression methods:
    backend.regress, with the one-hot `condition_on` confounder as an input for methods
    that use confounders (evaluated at its median level)."""
    m = get_method(method)
    name = name or (method if isinstance(method, str) else "custom")
    n = len(targets.content)
    val = np.zeros(n, bool) if targets.val is None else np.asarray(targets.val, bool)
    text = np.asarray(targets.content)
    if m.loss == "pairwise":
        if targets.pairs is None:
            raise ValueError(f"method {name!r} ({targets.source}): pairwise, but the targets "
                             "have no pairs")
        win, lose = (np.asarray(r) for r in targets.pairs)
        return backend.compare(name, text[win], text[lose], val[win])
    if m.loss != "regression":
        raise ValueError(f"method {name!r}: unknown loss {m.loss!r} (regression, pairwise)")
    weeks, n_levels, ref = (None, 0, 0)
    if m.uses_confounders:
        weeks, n_levels, ref = _condition(targets, condition_on)
    return backend.regress(name, text, weeks, n_levels, ref, targets.target, targets.weight, val)


def fit_scorers(targets: Mapping[str, Targets], backend, condition_on: str = "week"
                ) -> dict[str, Scorer]:
    """fit_scorer for every method name -> Targets (in order), on one backend."""
    return {m: fit_scorer(m, t, backend, condition_on=condition_on) for m, t in targets.items()}
