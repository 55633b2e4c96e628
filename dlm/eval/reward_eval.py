"""Scoring one reward on held-out candidates of a simulated world: causal_corr, the
spurious marker gaps, pair accuracy on interventional pairs, the true objective of
best-of-n picks from a policy's pool (scripts.compare_rewards and the replications), and
val_loss: the fit to a small randomised A/B sample, the one score a user without ground
truth could also compute (DESIGN.md section 3's user-choosable strength)."""
from __future__ import annotations

import dataclasses

import numpy as np

from dlm.eval import causal_metrics as cm


@dataclasses.dataclass(frozen=True, eq=False)
class HeldOut:
    """What every reward is scored on: held-out candidates, their pairs, the policy's pool."""

    texts: list
    tau: np.ndarray
    pairs: np.ndarray
    pool: object            # dlm.policy.best_of_n.Pool (or None: no objective)
    tau_fn: object
    marker_effect: float
    val: object = None      # ObservationalLog of A/B postings (or None: no val_loss)


def validation_loss(reward_fn, log) -> float:
    """Binomial-weighted mean squared error of r(X) against the empirical logit of a
    randomised log, after the best constant offset (a reward's level is arbitrary: only
    its differences between texts rank anything; under do(C) the log's logit is
    intercept + g(c_ref) + tau(X) + noise, so the offset absorbs intercept + g(c_ref))."""
    from dlm.train.losses import binomial_logit_weights

    r = np.asarray(reward_fn(list(log.content)), np.float64)
    y = log.logit_outcome()
    w = binomial_logit_weights(log.successes, log.trials) if log.is_binomial \
        else np.ones(len(y))
    e = y - r
    e = e - np.average(e, weights=w)
    return float(np.average(e * e, weights=w))


def held_out(world_held, pool, tau_fn, marker_effect: float, seed: int, val=None) -> HeldOut:
    mask = world_held.mask_SxK
    texts = [str(t) for t in world_held.text_SxK[mask]]
    story = np.nonzero(mask)[0]
    tau = tau_fn(texts)
    pairs = cm.interventional_pairs(texts, tau, groups=story, rng=seed)
    return HeldOut(texts, tau, pairs, pool, tau_fn, marker_effect, val)


def reward_metrics(reward_fn, h: HeldOut) -> dict:
    """causal_corr, spurious_gap (signed Monday gap), per-marker gaps, pair_acc, objective,
    marker_rate of the best-of-n picks, val_loss (with h.val)."""
    from dlm.policy.best_of_n import pick_best
    from dlm.eval.policy_eval import generation_metrics

    gaps = cm.spurious_gaps(reward_fn, h.texts, h.marker_effect)
    out = {"causal_corr": cm.causal_corr(reward_fn, h.texts, h.tau),
           "spurious_gap": gaps["Happy Monday!"], "gap_monday": gaps["Happy Monday!"],
           "gap_friday": gaps["Happy Friday!"],
           "pair_acc": cm.pair_acc(reward_fn, h.texts, h.tau, h.pairs)}
    if h.pool is not None:
        g = generation_metrics(pick_best(h.pool, reward_fn), h.tau_fn)
        out.update(objective=g["objective"], marker_rate=g["marker_rate"])
    if h.val is not None:
        out["val_loss"] = validation_loss(reward_fn, h.val)
    return out


def sft_row(h: HeldOut) -> dict:
    """The policy itself (its first sample per lede): the objective's zero point."""
    from dlm.eval.policy_eval import generation_metrics

    g = generation_metrics([row[0] for row in h.pool.texts], h.tau_fn)
    return {"objective": g["objective"], "marker_rate": g["marker_rate"]}
