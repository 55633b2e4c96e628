"""The summaries of scripts.estimate (confounder-effect recovery against known truth):
tidy rows per method and seed, the MAE / coverage / corr_tau table, the weekday plot.
World-free: the truth comes in as the world's truth() dict (sims.experiments.estimate
runs the world)."""
from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd

from dlm import outputs
from dlm.eval.stats import format_mean_se, mean_se

METHODS = ("deconfoundlm", "partial_out")
COLUMNS = ["seed", "method", "quantity", "truth", "estimate", "lo", "hi"]


def rows(seed: int, method: str, adjusted, truth: dict, tau: np.ndarray) -> list[dict]:
    """Tidy rows: every weekday effect, the audience slope and corr_tau of one method."""
    eff = adjusted.effects().set_index(["parameter", "level"])
    rows = []
    for d, (label, true) in enumerate(zip(truth["weekday_levels"], truth["weekday_effects"])):
        e = eff.loc[("weekday", label)]
        rows.append(dict(quantity=f"weekday_{d}", truth=true, estimate=e["mean"], lo=e["lo"], hi=e["hi"]))
    e = eff.loc[("log_audience", "slope")]
    rows.append(dict(quantity="audience_slope", truth=truth["audience_slope"],
                     estimate=e["mean"], lo=e["lo"], hi=e["hi"]))
    corr = float(np.corrcoef(adjusted.logit_adjusted, tau)[0, 1])
    rows.append(dict(quantity="corr_tau", truth=np.nan, estimate=corr, lo=np.nan, hi=np.nan))
    return [dict(seed=seed, method=method, **r) for r in rows]


def summarise(results: pd.DataFrame, cfg) -> tuple[pd.DataFrame, str]:
    """Per method: MAE of weekday effects and audience slope, corr_tau, interval coverage.
    `cfg`: the run's config (seeds, n_postings, world, estimator)."""
    res = results.copy()
    res["abs_err"] = (res.estimate - res.truth).abs()
    res["covers"] = (res.lo <= res.truth) & (res.truth <= res.hi)
    weekday = res[res.quantity.str.startswith("weekday_")]
    table = []
    for method in METHODS:
        w = weekday[weekday.method == method].groupby("seed").abs_err.mean()
        slope = res[(res.method == method) & (res.quantity == "audience_slope")]
        corr = res[(res.method == method) & (res.quantity == "corr_tau")].estimate
        table.append({
            "method": method,
            "weekday MAE": format_mean_se(*mean_se(w)),
            "audience slope MAE": format_mean_se(*mean_se(slope.abs_err)),
            "max abs error (weekday, slope)": f"{max(w.max(), slope.abs_err.max()):.3f}",
            f"slope {cfg.estimator.interval:.0%} covers": f"{int(slope.covers.sum())}/{len(slope)}",
            "weekday covers": f"{weekday[weekday.method == method].covers.mean():.2f}",
            "corr_tau": format_mean_se(*mean_se(corr)),
        })
    table = pd.DataFrame(table)
    dec = res[res.method == "deconfoundlm"]
    mae = pd.concat([weekday[weekday.method == "deconfoundlm"].abs_err,
                     dec[dec.quantity == "audience_slope"].abs_err]).mean()
    corr = res[res.quantity == "corr_tau"].pivot(index="seed", columns="method", values="estimate")
    checks = [
        f"- deconfoundlm mean absolute error over weekday effects and audience slope: "
        f"{mae:.4f} (target <= 0.05: {'met' if mae <= 0.05 else 'NOT met'})",
        f"- corr_tau deconfoundlm > partial_out in {int((corr.deconfoundlm > corr.partial_out).sum())}"
        f"/{len(corr)} seeds (mean {corr.deconfoundlm.mean():.3f} vs {corr.partial_out.mean():.3f})",
    ]
    per_level = (res[res.quantity != "corr_tau"]
                 .pivot_table(index="quantity", columns="method", values="estimate", aggfunc="mean")
                 .join(res.groupby("quantity").truth.first()).reset_index())
    text = (f"# Confounder-effect recovery\n\n{cfg.seeds} seeds x {cfg.n_postings:,} postings, "
            f"entanglement {cfg.world.entanglement}, p_marker {cfg.world.p_marker}, k "
            f"{cfg.world.k}, confounder strength {cfg.world.confounder_strength}; estimator "
            f"{cfg.estimator.method} ({cfg.estimator.covariance} covariance), "
            f"{cfg.estimator.folds}-fold cross-fit. "
            "Errors on the logit scale, mean ± se over seeds; weekday effects centred.\n\n"
            + outputs.markdown_table(table) + "\n" + "\n".join(checks) + "\n\n"
            "Mean estimate per quantity (weekday_0 = Monday):\n\n"
            + outputs.markdown_table(per_level, floatfmt=".3f"))
    return table, text


def plot_weekdays(results: pd.DataFrame, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wd = results[results.quantity.str.startswith("weekday_")].copy()
    wd["day"] = wd.quantity.str[-1].astype(int)
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    truth = wd.groupby("day").truth.first()
    ax.plot(truth.index, truth.values, "k_", markersize=22, mew=2, label="truth")
    for shift, method in zip((-0.12, 0.12), METHODS):
        g = wd[wd.method == method].groupby("day").estimate
        m, s = g.mean(), g.std(ddof=1).fillna(0) / np.sqrt(g.count())
        ax.errorbar(m.index + shift, m.values, yerr=1.96 * s.values, fmt="o", capsize=3, label=method)
    ax.set_xticks(range(7), ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"])
    ax.set_ylabel("weekday effect (logit, centred)")
    ax.set_title("Estimated weekday effects (mean over seeds, 95% CI)")
    ax.axhline(0, color="0.8", lw=0.8)
    ax.legend(frameon=False, fontsize=8)
    outputs.save_figure(path, fig)
