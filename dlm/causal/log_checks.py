"""Checks of the log itself (no fit needed), part of dlm.causal.diagnostics.

sample ratio mismatch   In a grouped binomial log whose groups are A/B tests, a group's
                        arms should get trials (impressions) in equal shares. Per group
                        with two or more arms: Pearson's chi-square of the arms' trials
                        against an equal split (k - 1 degrees of freedom). Per time period
                        (the group's most common level of the first time confounder; one
                        period "all" without one): the share of groups with p < srm_alpha.
                        Under randomisation about srm_alpha of the groups fall below it; a
                        period is flagged when the share reaches srm_share (with at least
                        srm_min_groups groups), i.e. when randomisation looks broken there
                        and within-group comparisons of that period are not experiments.
                        The share, not a pooled chi-square: with ~10^4 trials per arm a
                        pooled statistic flags any period with one odd group.
determined confounders  A confounder whose value is the same on every row of each level of
                        another (a weekday derived from a daily time confounder: every day
                        is one weekday). The data cannot tell the two apart; the determined
                        one's effect is identified only by the other's prior (a random
                        walk's smoothness), and its intervals show that prior, not the data.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import scipy.stats

from dlm.data.log import Confounder

SRM_GROUP_COLUMNS = ["group", "period", "arms", "trials", "max_min_ratio", "chi2", "p"]
SRM_PERIOD_COLUMNS = ["period", "groups", "groups_p_below", "share", "median_max_min_ratio",
                      "flagged"]
DETERMINED_COLUMNS = ["confounder", "determined_by", "n_levels", "n_values", "one_to_one"]


def srm_groups(group, trials, period=None) -> pd.DataFrame:
    """Per group with >= 2 arms (rows): the chi-square of its trials against an equal split.

    group: [N] group codes; trials: [N]; period: [N] period codes (None: all 0). A group's
    period is its rows' most common one. Groups with one arm or no trials are left out."""
    group = np.asarray(group, np.int64)
    trials = np.asarray(trials, np.float64)
    period = np.zeros_like(group) if period is None else np.asarray(period, np.int64)
    if not (group.shape == trials.shape == period.shape):
        raise ValueError(f"srm_groups: group {group.shape}, trials {trials.shape} and period "
                         f"{period.shape} must have one entry per row")
    order = np.lexsort((period, group))
    g, t, per = group[order], trials[order], period[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    k = np.diff(np.r_[starts, g.size])
    total = np.add.reduceat(t, starts)
    mean = total / k
    dev2 = np.add.reduceat((t - np.repeat(mean, k)) ** 2, starts)
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = np.where(mean > 0, dev2 / mean, np.nan)
        ratio = np.maximum.reduceat(t, starts) / np.minimum.reduceat(t, starts)
    mode = [np.bincount(per[s:s + n]).argmax() for s, n in zip(starts, k)]
    out = pd.DataFrame({"group": g[starts], "period": np.asarray(mode, np.int64), "arms": k,
                        "trials": total, "max_min_ratio": ratio, "chi2": chi2,
                        "p": scipy.stats.chi2.sf(chi2, np.maximum(k - 1, 1))})
    return out[(k >= 2) & (total > 0)].reset_index(drop=True)[SRM_GROUP_COLUMNS]


def srm_periods(per_group: pd.DataFrame, labels, cfg) -> pd.DataFrame:
    """Per period (labels[code], in code order; periods without groups are left out): groups,
    groups with p < cfg.srm_alpha, their share, the median max/min trials ratio, flagged."""
    if per_group.empty:
        return pd.DataFrame(columns=SRM_PERIOD_COLUMNS)
    agg = per_group.assign(below=per_group.p < cfg.srm_alpha).groupby("period").agg(
        groups=("group", "size"), groups_p_below=("below", "sum"),
        median_max_min_ratio=("max_min_ratio", "median"))
    agg["share"] = agg.groups_p_below / agg.groups
    agg["flagged"] = (agg.groups >= cfg.srm_min_groups) & (agg.share >= cfg.srm_share)
    agg = agg.reset_index()
    agg["period"] = [str(labels[c]) for c in agg.period]
    return agg[SRM_PERIOD_COLUMNS]


def sample_ratio_mismatch(group, trials, confounders: Mapping[str, Confounder],
                          cfg) -> tuple[pd.DataFrame, pd.DataFrame, str | None]:
    """(per group, per period, name of the time confounder used or None); see module doc."""
    time = next((n for n, c in confounders.items() if c.kind == "time"), None)
    period = None if time is None else confounders[time].values
    labels = ["all"] if time is None else list(confounders[time].levels)
    per_group = srm_groups(group, trials, period)
    return per_group, srm_periods(per_group, labels, cfg), time


def flagged_runs(periods: pd.DataFrame) -> list[str]:
    """Consecutive flagged periods (in table order) as "first..last" (or one label)."""
    runs, start, prev = [], None, None
    for label, flag in zip(periods.period, periods.flagged):
        if flag and start is None:
            start = label
        if not flag and start is not None:
            runs.append(start if start == prev else f"{start}..{prev}")
            start = None
        prev = label
    if start is not None:
        runs.append(start if start == prev else f"{start}..{prev}")
    return runs


def srm_warning(periods: pd.DataFrame, time: str | None, cfg) -> list[str]:
    flagged = periods[periods.flagged]
    if flagged.empty:
        return []
    counts = (f"{int(flagged.groups_p_below.sum())} of {int(flagged.groups.sum())} groups split "
              f"their trials unequally across arms (chi-square vs an equal split, p < "
              f"{cfg.srm_alpha:g})")
    if len(flagged) == len(periods):       # everywhere: more likely not equal-split A/B tests
        return [f"sample ratio mismatch in every period: {counts}. If the groups are A/B tests "
                "meant to split trials evenly, randomisation is broken throughout; if not, "
                "ignore this (see srm.csv)"]
    runs = ", ".join(flagged_runs(periods))
    where = f"in {len(flagged)} of {len(periods)} {time} periods ({runs})"
    return [f"sample ratio mismatch {where}: {counts}. Randomisation looks broken there: "
            "within-group comparisons in those periods are not experiments (see srm.csv)"]


# ---- one confounder determined by another --------------------------------------------------
def _codes(conf: Confounder) -> np.ndarray:
    return np.unique(np.asarray(conf.values), return_inverse=True)[1].reshape(-1)


def determined_confounders(confounders: Mapping[str, Confounder]) -> pd.DataFrame:
    """Every (confounder, determined_by) where each level of determined_by (categorical or
    time) holds a single value of the confounder, which itself takes two or more values.
    A one-to-one pair is listed once."""
    names = list(confounders)
    codes = {n: _codes(c) for n, c in confounders.items()}
    n_values = {n: int(c.max()) + 1 if c.size else 0 for n, c in codes.items()}

    def determines(a: str, b: str) -> bool:          # every level of a has one value of b
        pairs = np.unique(codes[a] * n_values[b] + codes[b])
        return np.unique(pairs // n_values[b]).size == pairs.size

    rows = []
    for a in names:
        if confounders[a].kind == "numeric":
            continue
        for b in names:
            if b == a or n_values[b] < 2 or not determines(a, b):
                continue
            both = confounders[b].kind != "numeric" and determines(b, a)
            if both and names.index(b) < names.index(a):
                continue                              # listed already as (a, b)
            rows.append(dict(confounder=b, determined_by=a, n_levels=n_values[a],
                             n_values=n_values[b], one_to_one=both))
    return pd.DataFrame(rows, columns=DETERMINED_COLUMNS)


def determined_warnings(table: pd.DataFrame) -> list[str]:
    out = []
    for r in table.itertuples(index=False):
        if r.one_to_one:
            out.append(f"confounders {r.determined_by!r} and {r.confounder!r} are the same "
                       f"grouping (one-to-one, {r.n_levels} levels): their effects are not "
                       "separately identified; keep one")
        else:
            out.append(f"confounder {r.confounder!r} is determined by {r.determined_by!r}: each "
                       f"of the {r.n_levels} {r.determined_by} levels has a single "
                       f"{r.confounder} value ({r.n_values} values). The data cannot separate "
                       f"them; {r.confounder}'s effect and intervals come from "
                       f"{r.determined_by}'s prior (e.g. a random walk's smoothness), not the "
                       f"data. Drop one, or use a coarser {r.determined_by} (e.g. weeks, "
                       "not days)")
    return out
