"""Grouped randomised logs (one group per A/B test): the training data of the
experimental reward methods.

Within one group the arms were randomised, so "text a beat text b in the same group" is
a causal comparison, and an arm's logit outcome minus its group's mean is a randomised
within-group difference. dlm.realdata.pairs builds on these (significance tests, AUCs).
"""
from __future__ import annotations

import numpy as np

from dlm.data.log import ObservationalLog
from dlm.train.losses import binomial_logit_weights


def require_groups(log: ObservationalLog) -> np.ndarray:
    """[N] int64 group codes; a log without groups or binomial outcomes is an error."""
    if log.group is None:
        raise ValueError(f"{log.source}: the log has no group (A/B test) column")
    if not log.is_binomial:
        raise ValueError(f"{log.source}: within-test pairs need clicks and impressions")
    return np.asarray(log.group, np.int64)


def norm_text(texts) -> np.ndarray:
    """Whitespace-normalised strings: "a  b " and "a b" are the same headline."""
    return np.array([" ".join(str(t).split()) for t in texts], dtype=object)


def within_group_pairs(log: ObservationalLog) -> tuple[np.ndarray, np.ndarray]:
    """(win, lose) row indices [P]: every pair of rows in the same group with different
    texts and different rates, oriented so that `win` had the higher rate."""
    group = require_groups(log)
    text = norm_text(log.content)
    order = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.diff(group[order])) + 1
    a_idx, b_idx = [], []
    for members in np.split(order, bounds):
        if members.size < 2:
            continue
        i, j = np.triu_indices(members.size, k=1)
        a_idx.append(members[i])
        b_idx.append(members[j])
    if not a_idx:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    a, b = np.concatenate(a_idx), np.concatenate(b_idx)
    rate = np.asarray(log.successes, np.float64) / np.asarray(log.trials, np.float64)
    keep = (text[a] != text[b]) & (rate[a] != rate[b])
    a, b = a[keep], b[keep]
    swap = rate[b] > rate[a]
    return np.where(swap, b, a), np.where(swap, a, b)


def centred_logit_ctr(arms: ObservationalLog) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, target, weight) of the experimental CTR regression: every arm of a group with
    two or more arms, its empirical logit CTR minus the group's inverse-variance weighted
    mean. Removing the group's level (a fixed effect) leaves only the randomised
    within-group differences; weights are binomial_logit_weights of those rows."""
    group = require_groups(arms)
    rows = np.flatnonzero(np.bincount(group)[group] >= 2)
    if rows.size == 0:
        return rows, np.zeros(0), np.zeros(0)
    y = arms.logit_outcome()[rows]
    w = binomial_logit_weights(np.asarray(arms.successes)[rows], np.asarray(arms.trials)[rows])
    g = group[rows]
    mean_g = np.bincount(g, weights=w * y) / np.maximum(np.bincount(g, weights=w), 1e-300)
    return rows, y - mean_g[g], w
