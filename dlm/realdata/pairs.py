"""Real A/B logs: story-level splits, within-test headline pairs and their AUC.

Within one A/B test the arms were randomised, so "headline a beat headline b in the same
test" is an experimental (causal) comparison; across tests CTR is observational. These
functions turn an ObservationalLog with groups (one group per test, e.g. Upworthy's
clickability_test_id) into
  - a split of the tests into train / validation / test in which no story straddles two
    splits (tests that share a lede or a headline are one story),
  - one arm per (test, distinct headline), clicks and impressions summed over the arms
    that differ only by image,
  - all within-test pairs of different headlines, oriented winner/loser by CTR, with the
    two-proportion z-test of their difference,
  - one random arm per test (the observational log the paper's observational rewards
    are trained on),
  - the tests of the archive's likely non-randomised window (left out of experimental use),
  - within-test centred logit CTRs (the experimental CTR regression's targets),
  - ROC-AUC of rewards on the pairs with bootstrap CIs that resample whole tests, and
    paired AUC differences.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse
import scipy.sparse.csgraph

from dlm.data.log import ObservationalLog
from dlm.eval.stats import bootstrap_ci, roc_auc, two_proportion_z
from dlm.rewards.grouped import (centred_logit_ctr, norm_text, require_groups,  # noqa: F401
                                 within_group_pairs)

SPLITS: tuple[str, ...] = ("train", "val", "test")


def story_of_test(log: ObservationalLog) -> np.ndarray:
    """[G] story index of every test code: tests sharing a non-empty lede (context) or a
    headline are linked, and a story is a connected component of that graph."""
    group = require_groups(log)
    n_tests = int(group.max()) + 1
    rows, cols, offset = [], [], n_tests
    keys = [norm_text(log.content)]
    if log.context is not None:
        keys.append(norm_text(log.context))
    for key in keys:            # bipartite edges test -- key node (one node per distinct key)
        uniq, inv = np.unique(key.astype(str), return_inverse=True)
        ok = (uniq != "")[inv]
        rows.append(group[ok])
        cols.append(inv[ok] + offset)
        offset += len(uniq)
    r, c = np.concatenate(rows), np.concatenate(cols)
    adj = scipy.sparse.coo_matrix((np.ones(r.size), (r, c)), shape=(offset, offset))
    _, label = scipy.sparse.csgraph.connected_components(adj, directed=False)
    return np.unique(label[:n_tests], return_inverse=True)[1]


def split_tests(log: ObservationalLog, fractions: tuple[float, ...] = (0.7, 0.1, 0.2),
                seed: int = 0) -> np.ndarray:
    """[G] split index of every test code (0 train, 1 val, 2 test, ... one per fraction).

    Stories (story_of_test) are shuffled (seeded) and dealt out in order until each split
    holds its fraction of the tests, so every test of a story lands in the same split.
    """
    fr = np.asarray(fractions, np.float64)
    if fr.ndim != 1 or fr.size < 1 or np.any(fr < 0) or not np.isclose(fr.sum(), 1.0):
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    story = story_of_test(log)
    sizes = np.bincount(story)
    order = np.random.default_rng(seed).permutation(sizes.size)
    # a story goes to the split its midpoint (in cumulative tests) falls in
    mid = (np.cumsum(sizes[order]) - sizes[order] / 2.0) / sizes.sum()
    split_of_story = np.empty(sizes.size, np.int64)
    split_of_story[order] = np.searchsorted(np.cumsum(fr)[:-1], mid, side="right")
    return split_of_story[story]


def rows_of_tests(log: ObservationalLog, tests_mask_G: np.ndarray) -> np.ndarray:
    """Row indices of the log whose test code is selected by the [G] boolean mask."""
    return np.flatnonzero(np.asarray(tests_mask_G, bool)[require_groups(log)])


def headline_arms(log: ObservationalLog) -> ObservationalLog:
    """One row per (test, distinct headline): clicks and impressions summed over the arms
    (e.g. different images); every other column from the first such arm."""
    group = require_groups(log)
    frame = pd.DataFrame({"g": group, "h": norm_text(log.content)})
    key = frame.groupby(["g", "h"], sort=False).ngroup().to_numpy()
    _, first = np.unique(key, return_index=True)
    clicks = np.bincount(key, weights=np.asarray(log.successes, np.float64))
    views = np.bincount(key, weights=np.asarray(log.trials, np.float64))
    out = log.take(first)
    return dataclasses.replace(out, content=frame["h"].to_numpy()[first],
                               successes=clicks, trials=views)


@dataclasses.dataclass(frozen=True)
class Pairs:
    """Within-test pairs of rows of one log: row `win` had the higher CTR than row `lose`."""

    win: np.ndarray        # [P] row index
    lose: np.ndarray       # [P] row index
    group: np.ndarray      # [P] test code
    z: np.ndarray          # [P] two-proportion z (win minus lose, so z >= 0)
    p: np.ndarray          # [P] two-sided p-value

    def __len__(self) -> int:
        return len(self.win)

    def take(self, idx) -> "Pairs":
        return Pairs(*(getattr(self, f.name)[idx] for f in dataclasses.fields(self)))


def within_test_pairs(log: ObservationalLog, alpha: float | None = None) -> Pairs:
    """Every pair of rows in the same test with different headlines and different CTRs,
    oriented winner first (dlm.rewards.grouped.within_group_pairs), with the pooled
    two-proportion z-test of each; with `alpha`, only pairs whose CTRs differ at that
    level (two-sided p < alpha)."""
    group = require_groups(log)
    win, lose = within_group_pairs(log)
    if win.size == 0:
        return Pairs(*(np.zeros(0, t) for t in (np.int64, np.int64, np.int64, float, float)))
    s, n = np.asarray(log.successes, np.float64), np.asarray(log.trials, np.float64)
    z, p = two_proportion_z(s[win], n[win], s[lose], n[lose])
    pairs = Pairs(win, lose, group[win], np.atleast_1d(z), np.atleast_1d(p))
    return pairs if alpha is None else pairs.take(pairs.p < alpha)


def nonrandomised_tests(log: ObservationalLog) -> np.ndarray:
    """[G] bool: tests with a row in the archive's likely non-randomised window
    (dlm.data.upworthy.nonrandomised_mask): their within-test differences are not
    randomised comparisons, so experimental uses leave them out by default."""
    from dlm.data.upworthy import nonrandomised_mask

    group = require_groups(log)
    out = np.zeros(int(group.max()) + 1, bool)          # indexed like split_tests' result
    out[group[nonrandomised_mask(log)]] = True
    return out


def one_arm_per_test(log: ObservationalLog, seed: int = 0) -> np.ndarray:
    """Sorted row indices: one arm drawn uniformly at random (seeded) from every test."""
    group = require_groups(log)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(group))                 # random order, then first per test
    _, first = np.unique(group[order], return_index=True)
    return np.sort(order[first])


def pair_auc(score_win, score_lose) -> float:
    """ROC-AUC of telling the winner of a pair from the score difference.

    Each pair enters in both orientations (d = s_win - s_lose labelled 1, -d labelled 0),
    so the value does not depend on how pairs are listed: P(d_i + d_j > 0) over all pairs
    i, j, ties 1/2. A reward that ranks every pair right scores 1, a constant one 0.5.
    """
    d = np.asarray(score_win, np.float64) - np.asarray(score_lose, np.float64)
    return roc_auc(np.concatenate([d, -d]), np.r_[np.ones(d.size), np.zeros(d.size)])


def auc_table(diffs: Mapping[str, np.ndarray], groups, baseline: str | None = None,
              n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """pair_auc of every reward with percentile bootstrap CIs that resample whole tests.

    diffs: name -> [P] score differences s(winner) - s(loser) on the same pairs; groups:
    [P] test of each pair. With `baseline`, also AUC minus the baseline's AUC, computed on
    the same resamples (a paired comparison). Columns: method, auc, auc_lo, auc_hi,
    n_pairs (and vs_<baseline>, vs_lo, vs_hi).
    """
    names = list(diffs)
    if baseline is not None and baseline not in diffs:
        raise ValueError(f"baseline {baseline!r} is not one of {names}")
    d_PxM = np.column_stack([np.asarray(diffs[k], np.float64) for k in names])
    base = None if baseline is None else names.index(baseline)

    def stat(d):
        auc = np.array([pair_auc(d[:, m], 0.0 * d[:, m]) for m in range(d.shape[1])])
        return auc if base is None else np.concatenate([auc, auc - auc[base]])

    if len(d_PxM) == 0:
        raise ValueError("auc_table: no pairs to evaluate")
    point, lo, hi = bootstrap_ci(stat, d_PxM, groups=np.asarray(groups), n_boot=n_boot,
                                 alpha=alpha, seed=seed)
    M = len(names)
    out = pd.DataFrame({"method": names, "auc": point[:M], "auc_lo": lo[:M], "auc_hi": hi[:M],
                        "n_pairs": len(d_PxM)})
    if base is not None:
        out[f"vs_{baseline}"], out["vs_lo"], out["vs_hi"] = point[M:], lo[M:], hi[M:]
    return out


def auc_contrasts(diffs: Mapping[str, np.ndarray], groups,
                  contrasts: Sequence[tuple[str, str]], n_boot: int = 1000,
                  alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """AUC(a) - AUC(b) for each (a, b) of `contrasts`, with percentile bootstrap CIs over
    the same test resamples as auc_table (same seed): a paired comparison on one set of
    pairs. Columns: a, b, diff, lo, hi, n_pairs."""
    missing = sorted({m for ab in contrasts for m in ab} - set(diffs))
    if missing:
        raise ValueError(f"auc_contrasts: no scores for {missing}; have {list(diffs)}")
    names = list(diffs)
    d_PxM = np.column_stack([np.asarray(diffs[k], np.float64) for k in names])
    ia = [names.index(a) for a, _ in contrasts]
    ib = [names.index(b) for _, b in contrasts]

    def stat(d):
        auc = np.array([pair_auc(d[:, m], 0.0 * d[:, m]) for m in range(d.shape[1])])
        return auc[ia] - auc[ib]

    if len(d_PxM) == 0:
        raise ValueError("auc_contrasts: no pairs to evaluate")
    point, lo, hi = bootstrap_ci(stat, d_PxM, groups=np.asarray(groups), n_boot=n_boot,
                                 alpha=alpha, seed=seed)
    return pd.DataFrame({"a": [a for a, _ in contrasts], "b": [b for _, b in contrasts],
                         "diff": np.atleast_1d(point), "lo": np.atleast_1d(lo),
                         "hi": np.atleast_1d(hi), "n_pairs": len(d_PxM)})
