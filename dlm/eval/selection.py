"""How a baseline's strength is chosen, and deconfoundlm's paired gain over each choice
(DESIGN.md section 3's baseline protocol; issue 13 item 2).

A tidy results frame (one row per seed x scenario x method x strength; columns seed,
entanglement, p_marker, method, strength, objective, val_loss and split = "report" |
"tune") gives, per scenario and baseline, these selections of its strength:

  λ=<s>       every strength of the sweep, as it is (weak ones included)
  tuned       the strength with the best mean objective on the *tuning* seeds (ground
              truth, but not the seeds it is reported on)
  validation  per reported seed, the strength with the lowest val_loss on that seed's own
              small randomised A/B sample: what a user without ground truth can do
  in-sample   the best mean objective on the reported seeds themselves (the old, generous
              protocol: selection and report on the same seeds; shown for comparison)

and for each, the seed-paired difference method - baseline of the objective with a 95%
t-interval over the reported seeds (each seed its own world sample).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.stats

SCENARIO = ["entanglement", "p_marker"]


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lower, upper): Student-t interval of the mean of the non-NaN values
    (nan bounds with fewer than two)."""
    x = np.asarray(values, np.float64).reshape(-1)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(x.mean())
    if x.size < 2:
        return m, float("nan"), float("nan")
    half = scipy.stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return m, m - half, m + half


def _split(frame: pd.DataFrame, which: str) -> pd.DataFrame:
    if "split" not in frame:
        return frame if which == "report" else frame.iloc[:0]
    return frame[frame.split.fillna("report") == which]


def _best_mean(sub: pd.DataFrame, metric: str = "objective") -> float:
    """The strength with the highest mean `metric` over seeds (ties: the smaller)."""
    means = sub.groupby("strength")[metric].mean().dropna()
    if means.empty:
        return float("nan")
    return float(means[means == means.max()].index.min())


def selections(frame: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Rows (entanglement, p_marker, selection, seed, strength): the baseline's strength per
    reported seed under every selection rule (see the module docstring)."""
    report, tune = _split(frame, "report"), _split(frame, "tune")
    rows = []
    for (e, p), cell in report[report.method == baseline].groupby(SCENARIO, sort=True):
        seeds = sorted(cell.seed.unique())
        per_rule = {f"λ={s:g}": dict.fromkeys(seeds, s) for s in sorted(cell.strength.unique())}
        t = tune[(tune.method == baseline) & (tune.entanglement == e) & (tune.p_marker == p)]
        if not t.empty:
            per_rule["tuned"] = dict.fromkeys(seeds, _best_mean(t))
        if "val_loss" in cell and cell.val_loss.notna().any():
            per_rule["validation"] = {
                seed: float(g.sort_values(["val_loss", "strength"]).strength.iloc[0])
                for seed, g in cell[cell.val_loss.notna()].groupby("seed")}
        per_rule["in-sample"] = dict.fromkeys(seeds, _best_mean(cell))
        for rule, chosen in per_rule.items():
            rows += [{"entanglement": e, "p_marker": p, "selection": rule, "seed": seed,
                      "strength": s} for seed, s in chosen.items()]
    return pd.DataFrame(rows, columns=[*SCENARIO, "selection", "seed", "strength"])


def _strength_label(strengths: pd.Series) -> str:
    counts = strengths.value_counts().sort_index()
    if len(counts) == 1:
        return f"{counts.index[0]:g}"
    return ", ".join(f"{s:g}×{n}" for s, n in counts.items())


def paired_gains(frame: pd.DataFrame, method: str = "deconfoundlm",
                 baselines=("odin", "invariant"), metric: str = "objective",
                 level: float = 0.95) -> pd.DataFrame:
    """Per scenario x baseline x selection: the chosen strength(s), both means over the
    reported seeds, the paired difference method - baseline (mean, t-interval), its
    relative size (diff / |baseline mean|) and the number of seeds paired."""
    report = _split(frame, "report")
    ours = report[report.method == method].set_index([*SCENARIO, "seed"])[metric]
    rows = []
    for baseline in baselines:
        if baseline not in set(report.method):
            continue
        b = report[report.method == baseline].set_index([*SCENARIO, "seed", "strength"])[metric]
        sel = selections(frame, baseline)
        for (e, p, rule), g in sel.groupby([*SCENARIO, "selection"], sort=False):
            keys = [(e, p, s, lam) for s, lam in zip(g.seed, g.strength)]
            base = b.reindex(keys).to_numpy()
            mine = ours.reindex([k[:3] for k in keys]).to_numpy()
            ok = ~(np.isnan(base) | np.isnan(mine))
            d, lo, hi = mean_ci(mine[ok] - base[ok], level)
            bm = float(base[ok].mean()) if ok.any() else float("nan")
            rows.append({"entanglement": e, "p_marker": p, "baseline": baseline,
                         "selection": rule, "strength": _strength_label(g.strength),
                         f"{method}": float(mine[ok].mean()) if ok.any() else float("nan"),
                         "baseline_mean": bm, "diff": d, "lo": lo, "hi": hi,
                         "rel_gain": d / abs(bm) if ok.any() and bm != 0 else float("nan"),
                         "n_seeds": int(ok.sum())})
    return pd.DataFrame(rows)
