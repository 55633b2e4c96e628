"""Figures of the real-data comparison: AUC per reward method, and the week effect."""
from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd

from dlm import outputs
from dlm.data.log import ObservationalLog


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_auc(results: pd.DataFrame, path: pathlib.Path, reference: dict | None = None) -> None:
    """Points with 95% CIs: one row per method, one colour per representation; optional
    dashed reference lines {label: auc} (e.g. the paper's numbers)."""
    plt = _pyplot()
    methods = list(dict.fromkeys(results["method"]))
    reps = list(dict.fromkeys(results["representation"]))
    fig, ax = plt.subplots(figsize=(6.5, 0.5 + 0.55 * len(methods) * max(1, len(reps)) ** 0.5))
    step = 0.6 / max(len(reps), 1)
    for k, rep in enumerate(reps):
        sub = results[results["representation"] == rep].set_index("method").reindex(methods)
        y = np.arange(len(methods)) + (k - (len(reps) - 1) / 2) * step
        err = np.vstack([sub["auc"] - sub["auc_lo"], sub["auc_hi"] - sub["auc"]])
        ax.errorbar(sub["auc"], y, xerr=err, fmt="o", capsize=3, label=rep)
    for (label, value), ls in zip((reference or {}).items(), ("--", ":", "-.")):
        ax.axvline(value, ls=ls, lw=0.9, color="0.45", label=label)
    ax.axvline(0.5, color="0.8", lw=0.8)
    ax.set_yticks(range(len(methods)), methods)
    ax.invert_yaxis()
    ax.set_xlabel("ROC-AUC on significant within-test pairs (95% CI, bootstrap over tests)")
    ax.legend(frameon=False, fontsize=7, loc="best")
    outputs.save_figure(path, fig)


def weekly_raw_logit(log: ObservationalLog, week: str = "week") -> pd.DataFrame:
    """Per week with data: mean CTR over the log's rows, its logit, and that logit centred
    on its mean over weeks (comparable with the estimator's centred week effect)."""
    conf = log.confounders[week]
    ctr = np.asarray(log.successes, np.float64) / np.asarray(log.trials, np.float64)
    frame = pd.DataFrame({"period": conf.values, "ctr": ctr})
    out = frame.groupby("period", as_index=False).agg(mean_ctr=("ctr", "mean"), n=("ctr", "size"))
    p = out["mean_ctr"].clip(1e-6, 1 - 1e-6)
    out["logit"] = np.log(p / (1 - p))
    out["centred"] = out["logit"] - out["logit"].mean()
    out["level"] = [conf.levels[i] for i in out["period"]]
    return out


def week_effect_table(effects: dict[str, pd.DataFrame], raw: pd.DataFrame, levels,
                      week: str = "week") -> pd.DataFrame:
    """One row per week: the raw weekly mean CTR (and its centred logit; NaN for weeks
    without data) and each estimator's centred week effect with its interval."""
    out = pd.DataFrame({"level": list(levels)})
    out = out.merge(raw[["level", "mean_ctr", "n", "centred"]].rename(
        columns={"mean_ctr": "raw_mean_ctr", "n": "raw_n", "centred": "raw_centred_logit"}),
        on="level", how="left")
    for name, eff in effects.items():
        e = eff[eff["parameter"] == week].assign(level=lambda f: f["level"].astype(str))
        e = e[["level", "mean", "lo", "hi"]].rename(
            columns={c: f"{name}_{c}" for c in ("mean", "lo", "hi")})
        out = out.merge(e, on="level", how="left")
    return out


def plot_week_effect(table: pd.DataFrame, path) -> None:
    """Estimated centred week effects (with their intervals) over the raw weekly mean
    logit CTR (centred), on one logit axis; the raw mean CTR in % on a second axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.8))
    x = np.arange(len(table))
    ax.plot(x, table["raw_centred_logit"], ".", color="0.55", ms=4,
            label="raw weekly mean CTR (logit, centred)")
    names = [c[:-len("_mean")] for c in table.columns if c.endswith("_mean")]
    for name, colour in zip(names, ("C0", "C1", "C2", "C3")):
        ax.plot(x, table[f"{name}_mean"], color=colour, lw=1.6, label=f"{name}: estimated g(week)")
        ax.fill_between(x, table[f"{name}_lo"], table[f"{name}_hi"], color=colour, alpha=0.18, lw=0)
    ax.axhline(0, color="0.85", lw=0.8)
    ticks = np.arange(0, len(table), max(1, len(table) // 8))
    ax.set_xticks(ticks, [table["level"][i] for i in ticks], fontsize=8)
    ax.set_xlabel("test week (year, week)")
    ax.set_ylabel("effect on logit CTR (centred)")
    ax.set_title("Week effect: estimated (90% interval) vs raw weekly mean CTR", fontsize=10)
    ax.legend(frameon=False, fontsize=7, loc="upper right")
    # the centring constant: mean over weeks of the raw weekly logit
    shift = float(np.nanmean(np.log(table["raw_mean_ctr"] / (1 - table["raw_mean_ctr"]))))
    to_pct = lambda z: 100 / (1 + np.exp(-(z + shift)))  # noqa: E731

    def to_logit(q):
        q = np.clip(q, 1e-9, 100 - 1e-9)
        return np.log(q / (100 - q)) - shift

    ax.secondary_yaxis("right", functions=(to_pct, to_logit)).set_ylabel(
        "raw weekly mean CTR (%)", fontsize=8)
    outputs.save_figure(path, fig)
