"""Small, exact statistics for reporting: seed spreads, bootstrap CIs, tests, AUC, tables.

Pure numpy/scipy. Every figure a script reports carries its spread (DESIGN.md section 4):
`summarise` turns a tidy results frame (one row per seed x method x setting) into
mean, standard error and n per group, and `format_table` prints it as "mean ± se".
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd
import scipy.stats

# Bootstrap replicates are drawn in chunks of at most this many resampled elements, so a
# vectorised statistic over [B, N] never holds more than ~32 MB of float64 indices/values.
_BOOT_CHUNK_ELEMS = 1 << 22


def _flat(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1)


def mean_se(values) -> tuple[float, float]:
    """Mean and standard error (ddof=1) of the non-NaN values.

    NaNs (a metric undefined in one seed) are left out; SE is nan with fewer than two
    values and the mean is nan with none.
    """
    x = _flat(values)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), float("nan")
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(x.size))


def _group_rows(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows sorted by group, and each group's start and size in that order."""
    codes = np.unique(groups, return_inverse=True)[1].reshape(-1)
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return order, starts, sizes


def _cluster_indices(rng, order, starts, sizes) -> np.ndarray:
    """Row indices of one cluster-bootstrap replicate: G groups drawn with replacement."""
    pick = rng.integers(0, sizes.size, size=sizes.size)
    n_k = sizes[pick]
    # Position within the concatenation minus each chosen group's offset in it gives
    # the row's position within its group; add the group's start in `order`.
    offsets = np.repeat(np.cumsum(n_k) - n_k, n_k)
    within = np.arange(n_k.sum()) - offsets
    return order[np.repeat(starts[pick], n_k) + within]


def bootstrap_ci(stat_fn: Callable[..., float], *arrays, groups=None, n_boot: int = 1000,
                 alpha: float = 0.05, seed: int = 0,
                 vectorized: bool = False) -> tuple[float, float, float]:
    """Percentile bootstrap: (stat on the data, lower, upper) at level 1 - alpha.

    `arrays` share their first axis (units) and are resampled together. With `groups`
    (one label per unit, e.g. the A/B test) whole groups are resampled with replacement,
    so within-group dependence is kept (cluster bootstrap). With `vectorized=True` (and no
    groups) `stat_fn` gets arrays with a leading replicate axis [B, N, ...] and returns [B],
    so all replicates run as a few numpy calls. Replicates whose statistic is NaN (e.g. an
    AUC with one class missing) are dropped. A vector-valued statistic gives vector bounds.
    """
    arrays = tuple(np.asarray(a) for a in arrays)
    if not arrays:
        raise ValueError("bootstrap_ci: give at least one array")
    n = arrays[0].shape[0] if arrays[0].ndim else 0
    for i, a in enumerate(arrays):
        if a.ndim == 0 or a.shape[0] != n:
            raise ValueError(f"bootstrap_ci: array {i} has shape {a.shape}, expected first axis {n}")
    if n == 0:
        raise ValueError("bootstrap_ci: no units to resample")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"bootstrap_ci: alpha must be in (0, 1), got {alpha}")
    if n_boot < 1:
        raise ValueError(f"bootstrap_ci: n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    if vectorized and groups is None:      # the data itself as a batch of one replicate
        point = np.asarray(stat_fn(*(a[None] for a in arrays)), dtype=np.float64)[0]
    else:
        point = np.asarray(stat_fn(*arrays), dtype=np.float64)

    if groups is not None:
        groups = np.asarray(groups).reshape(-1)
        if groups.size != n:
            raise ValueError(f"bootstrap_ci: groups has {groups.size} labels, arrays have {n} rows")
        grp = _group_rows(groups)
        boot = [stat_fn(*(a[_cluster_indices(rng, *grp)] for a in arrays)) for _ in range(n_boot)]
    elif vectorized:
        boot, chunk = [], max(1, _BOOT_CHUNK_ELEMS // n)
        for start in range(0, n_boot, chunk):
            idx_BxN = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
            boot.append(np.asarray(stat_fn(*(a[idx_BxN] for a in arrays)), dtype=np.float64))
        boot = np.concatenate(boot, axis=0)
    else:
        idx_BxN = rng.integers(0, n, size=(n_boot, n))
        boot = [stat_fn(*(a[idx] for a in arrays)) for idx in idx_BxN]
    boot = np.asarray(boot, dtype=np.float64).reshape((n_boot,) + point.shape)
    keep = ~np.isnan(boot).reshape(n_boot, -1).any(axis=1)
    if not keep.any():
        nan = np.full(point.shape, np.nan)
        lo = hi = nan
    else:
        lo, hi = np.quantile(boot[keep], [alpha / 2, 1 - alpha / 2], axis=0)
    if point.ndim == 0:
        return float(point), float(lo), float(hi)
    return point, lo, hi


def welch_t(a, b) -> tuple[float, float, float]:
    """Welch's unequal-variance t-test: (t, Welch-Satterthwaite dof, two-sided p)."""
    a, b = _flat(a), _flat(b)
    if a.size < 2 or b.size < 2:
        raise ValueError(f"welch_t: need >= 2 values per sample, got {a.size} and {b.size}")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (a.mean() - b.mean()) / np.sqrt(va + vb)
        dof = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    p = 2.0 * scipy.stats.t.sf(np.abs(t), dof)
    return float(t), float(dof), float(p)


def two_proportion_z(s1, n1, s2, n2) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Pooled two-proportion z-test of s1/n1 vs s2/n2 (broadcasting): (z, two-sided p).

    When the pooled rate is 0 or 1 the two rates are equal: z = 0, p = 1.
    """
    s1, n1, s2, n2 = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (s1, n1, s2, n2)))
    if np.any(n1 <= 0) or np.any(n2 <= 0):
        raise ValueError("two_proportion_z: trials n1 and n2 must be positive")
    if np.any((s1 < 0) | (s1 > n1) | (s2 < 0) | (s2 > n2)):
        raise ValueError("two_proportion_z: successes must lie in [0, trials]")
    pooled = (s1 + s2) / (n1 + n2)
    se = np.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (s1 / n1 - s2 / n2) / se, 0.0)
    p = 2.0 * scipy.stats.norm.sf(np.abs(z))
    if z.ndim == 0:
        return float(z), float(p)
    return z, p


def roc_auc(scores, labels) -> float:
    """ROC-AUC: P(score of a positive > score of a negative), ties counted 0.5.

    Mann-Whitney U from average ranks; nan when either class is empty.
    """
    s, y = _flat(scores), np.asarray(labels).reshape(-1)
    if s.size != y.size:
        raise ValueError(f"roc_auc: {s.size} scores but {y.size} labels")
    if np.isnan(s).any():
        raise ValueError("roc_auc: scores contain NaN")
    y = y.astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = scipy.stats.rankdata(s)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def pair_accuracy(score_a, score_b, a_better) -> float:
    """Share of pairs the scores order correctly; a tied score counts 0.5. nan if no pairs."""
    sa, sb = _flat(score_a), _flat(score_b)
    truth = np.asarray(a_better).reshape(-1).astype(bool)
    if not sa.size == sb.size == truth.size:
        raise ValueError(f"pair_accuracy: lengths differ ({sa.size}, {sb.size}, {truth.size})")
    if sa.size == 0:
        return float("nan")
    right = np.where(sa == sb, 0.5, (sa > sb) == truth)
    return float(right.mean())


def summarise(frame: pd.DataFrame, by: str | Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Tidy summary: one row per group x metric with mean, se and n (non-NaN values).

    `frame` is a results table (one row per seed x method x setting); `by` names the
    grouping columns (e.g. ["method", "entanglement"]); groups keep first-seen order.
    """
    by = [by] if isinstance(by, str) else list(by)
    missing = [c for c in by + list(metrics) if c not in frame.columns]
    if missing:
        raise ValueError(f"summarise: columns {missing} not in frame (has {list(frame.columns)})")
    rows = []
    for key, sub in frame.groupby(by, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        for m in metrics:
            vals = pd.to_numeric(sub[m], errors="coerce").to_numpy(np.float64)
            mean, se = mean_se(vals)
            rows.append({**dict(zip(by, key)), "metric": m, "mean": mean, "se": se,
                         "n": int((~np.isnan(vals)).sum())})
    return pd.DataFrame(rows, columns=by + ["metric", "mean", "se", "n"])


def format_mean_se(mean: float, se: float, digits: int = 3) -> str:
    """'0.812 ± 0.013'; just the mean when the SE is undefined (one seed)."""
    if np.isnan(mean):
        return "nan"
    if np.isnan(se):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


def format_table(summary: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """A `summarise` result as a wide table of "mean ± se" strings: groups x metrics.

    Ready for `dlm.outputs.markdown_table` in summary.md.
    """
    by = [c for c in summary.columns if c not in ("metric", "mean", "se", "n")]
    cells = summary.assign(cell=[format_mean_se(m, s, digits)
                                 for m, s in zip(summary["mean"], summary["se"])])
    wide = cells.pivot_table(index=by, columns="metric", values="cell", aggfunc="first",
                             sort=False)
    metrics = list(dict.fromkeys(summary["metric"]))
    return wide[metrics].reset_index().rename_axis(columns=None)
