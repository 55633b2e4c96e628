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
    if m.parts is not None:
        return fit_hybrid(m, targets, backend, name, condition_on=condition_on)
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
    groups = None
    if m.group_effects:
        if targets.groups is None:
            raise ValueError(f"method {name!r} ({targets.source}): group effects need Targets.groups")
        groups = np.unique(np.asarray(targets.groups).astype(str), return_inverse=True)[1]
    return backend.regress(name, text, weeks, n_levels, ref, targets.target, targets.weight, val,
                           groups=groups)


def fit_scorers(targets: Mapping[str, Targets], backend, condition_on: str = "week"
                ) -> dict[str, Scorer]:
    """fit_scorer for every method name -> Targets (in order), on one backend."""
    return {m: fit_scorer(m, t, backend, condition_on=condition_on) for m, t in targets.items()}


class HybridScorer:
    """texts -> w r_U + (1 - w) r_B: the two parts' scorers fitted on all their rows, mixed
    with the cross-fitted weight (`.weight`, a dlm.causal.hybrid.HybridWeight)."""

    def __init__(self, observational: Scorer, experimental: Scorer, weight):
        self.observational, self.experimental, self.weight = observational, experimental, weight

    def __call__(self, texts) -> np.ndarray:
        from dlm.causal.hybrid import combine

        return combine(self.observational(texts), self.experimental(texts), self.weight.w)


def fit_hybrid(method: RewardMethod, targets: Targets, backend, name: str = "hybrid", *,
               folds: int = 5, seed: int = 0, condition_on: str = "week") -> HybridScorer:
    """A hybrid method's reward (RewardMethod.parts: an observational and an experimental
    method; targets.parts: their Targets).

    Folds are formed over the experiment's groups. For each fold k both parts are refitted
    without fold k's groups (the observational part also without its rows of those groups,
    matched by group label, when both logs come from one archive: an arm it trained on
    would look unbiased) and score fold k's arms; dlm.causal.hybrid.model_weight turns the
    held-out discrepancies with the arms' outcomes into w*. Then both parts are fitted on
    all their rows. Only the reward regressions are refitted: the observational targets
    are fixed (deconfoundlm's g(C) was cross-fitted once on the whole log, held-out rows
    included: a second-order leak, O(1 / rows per confounder level)). Without shared
    labels (a separate experiment, or a log without groups) the observational part is
    fitted once and nothing is held out of it; a warning says so when a log without groups
    holds some of the experiment's texts."""
    from dlm.causal.crossfit import fold_ids
    from dlm.causal.hybrid import model_weight

    obs_method, exp_method = method.parts
    if targets.parts is None:
        raise ValueError(f"method {name!r} ({targets.source}): a hybrid needs the Targets of "
                         "both parts (its target_fn's)")
    obs, exp = targets.parts["observational"], targets.parts["experimental"]
    if exp.groups is None:
        raise ValueError(f"method {name!r}: the experimental sample ({exp.source}) needs groups "
                         "(the arms randomised together)")
    n_groups = np.unique(exp.groups).size
    if n_groups < folds:
        raise ValueError(f"method {name!r}: the experimental sample ({exp.source}) has "
                         f"{n_groups} groups with 2+ arms; cross-fitting needs at least {folds}")
    fold = fold_ids(len(exp.content), folds, seed, exp.groups)
    fold_of_group = dict(zip(exp.groups, fold))
    obs_fold = (np.full(len(obs.content), -1) if obs.groups is None else
                np.array([fold_of_group.get(g, -1) for g in obs.groups]))
    fit = lambda m, t: fit_scorer(m, t, backend, condition_on=condition_on)  # noqa: E731
    texts = list(np.asarray(exp.content))
    shared = None if (obs_fold >= 0).any() else fit(obs_method, obs)   # nothing to hold out
    if obs.groups is None and set(map(str, texts)) & set(map(str, np.asarray(obs.content))):
        import warnings
        warnings.warn(f"method {name!r}: the observational log ({obs.source}) has no groups, and "
                      f"some texts of the experiment ({exp.source}) are in it: if those rows are "
                      "the same arms, the observational reward has seen them and w* leans to it; "
                      "give both logs the same group labels", stacklevel=2)
    r_B, r_U = [], []
    for k in range(folds):
        r_B.append((shared or fit(obs_method, obs.take(obs_fold != k)))(texts))
        r_U.append(fit(exp_method, exp.take(fold != k))(texts))
    weight = model_weight(np.stack(r_B), np.stack(r_U), exp.target, exp.groups, fold)
    return HybridScorer(shared or fit(obs_method, obs), fit(exp_method, exp), weight)
