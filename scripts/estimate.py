"""Recover the confounders' effects from simulated observational logs, with known truth.

    python -m scripts.estimate --preset quick --out runs/estimate [--data UPWORTHY.csv.gz]
                               [--set entanglement=0.9 --set seeds=20 ...]

For each seed: sample the headline world (sims.headlines; built-in template corpus unless
--data points at the Upworthy archive), then run
  deconfoundlm  g fitted jointly with a linear text term (cross-fitted; estimator_text, a
                dlm.representations spec, default phi(X): the world's features), and
  partial_out   g fitted on the confounders alone (outcome residualised on C),
and compare every weekday effect and the audience slope with the truth, plus the Pearson
correlation of each method's adjusted outcome with the true content effect tau (corr_tau).
Writes results.csv (seed, method, quantity, truth, estimate, lo, hi), summary.md,
weekday_effects.png, config.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import time

import numpy as np
import pandas as pd

from dlm import cli, outputs
from dlm.causal.crossfit import deconfound, partial_out
from dlm.causal.fit import EstimatorConfig
from dlm.eval.stats import format_mean_se, mean_se
from dlm.representations import text_term


@dataclasses.dataclass(frozen=True)
class EstimateConfig:
    n_postings: int = 20_000
    seeds: int = 5
    first_seed: int = 0
    entanglement: float = 0.6
    p_marker: float = 0.8
    marker_effect: float = -0.1
    k: float = 4.0
    confounder_strength: float = 1.0
    n_stories: int = 600              # built-in corpus size (ignored with --data)
    method: str = "map"               # estimator inference: map | svi | nuts
    covariance: str = "sandwich"
    folds: int = 5
    interval: float = 0.9
    estimator_text: str = "phi"       # deconfoundlm's text term: a dlm.representations spec


PRESETS = {
    "tiny": EstimateConfig(n_postings=4_000, seeds=2, n_stories=200),
    "quick": EstimateConfig(),
    "coverage": EstimateConfig(seeds=20),
    "full": EstimateConfig(n_postings=100_000, seeds=20),
}
METHODS = ("deconfoundlm", "partial_out")


def build_world(cfg: EstimateConfig, data: pathlib.Path | None):
    from dlm.data.builtin_corpus import builtin_corpus
    from sims.headlines import HeadlineWorld, HeadlineWorldConfig

    if data is None:
        corpus = builtin_corpus(n_stories=cfg.n_stories)
    else:
        from dlm.data.corpus import stories_from_log
        from dlm.data.upworthy import load_upworthy

        corpus = stories_from_log(load_upworthy(data))
    wcfg = HeadlineWorldConfig(entanglement=cfg.entanglement, p_marker=cfg.p_marker,
                               marker_effect=cfg.marker_effect, k=cfg.k,
                               confounder_strength=cfg.confounder_strength)
    return HeadlineWorld(corpus, wcfg)


def _rows(seed: int, method: str, adjusted, truth: dict, tau: np.ndarray) -> list[dict]:
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


def run(cfg: EstimateConfig, data: pathlib.Path | None = None, progress: bool = True) -> pd.DataFrame:
    import jax
    from tqdm import tqdm

    world = build_world(cfg, data)
    truth = world.truth()
    est_cfg = EstimatorConfig(method=cfg.method, covariance=cfg.covariance, folds=cfg.folds,
                              interval=cfg.interval)
    seeds = range(cfg.first_seed, cfg.first_seed + cfg.seeds)
    samples = world.sample_many(jnp_keys(jax, seeds), cfg.n_postings)
    rows = []
    for r, seed in enumerate(tqdm(seeds, desc="seeds", disable=not progress)):
        s = samples[r]
        est = dataclasses.replace(est_cfg, seed=seed)
        text = text_term(cfg.estimator_text, s.log.content, seed=seed)   # phi: = s.phi
        rows += _rows(seed, "deconfoundlm", deconfound(s.log, text, est), truth, s.tau)
        rows += _rows(seed, "partial_out", partial_out(s.log, est), truth, s.tau)
    return pd.DataFrame(rows, columns=["seed", "method", "quantity", "truth", "estimate", "lo", "hi"])


def jnp_keys(jax, seeds) -> "jax.Array":
    return jax.numpy.stack([jax.random.PRNGKey(s) for s in seeds])


def summarise(results: pd.DataFrame, cfg: EstimateConfig) -> tuple[pd.DataFrame, str]:
    """Per method: MAE of weekday effects and audience slope, corr_tau, interval coverage."""
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
            f"slope {cfg.interval:.0%} covers": f"{int(slope.covers.sum())}/{len(slope)}",
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
            f"entanglement {cfg.entanglement}, p_marker {cfg.p_marker}, k {cfg.k}; "
            f"estimator {cfg.method} ({cfg.covariance} covariance), {cfg.folds}-fold cross-fit. "
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    cli.add_common_args(parser, PRESETS)
    parser.add_argument("--data", type=pathlib.Path, default=None,
                        help="Upworthy CSV(.gz) whose stories the world uses (default: built-in corpus)")
    args = parser.parse_args(argv)
    cfg = cli.resolve_config(args, PRESETS)
    t0 = time.perf_counter()
    results = run(cfg, args.data, progress=sys.stderr.isatty())
    _, text = summarise(results, cfg)
    text += f"\nWall time: {time.perf_counter() - t0:.1f} s.\n"
    outputs.write_csv(args.out / "results.csv", results)
    outputs.write_text(args.out / "summary.md", text)
    outputs.write_json(args.out / "config.json", {"preset": args.preset, "data": args.data,
                                                  "config": cfg})
    plot_weekdays(results, args.out / "weekday_effects.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
