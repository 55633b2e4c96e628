"""Speed and accuracy of the DeconfoundLM estimator against statsmodels' binomial GLM.

    python -m scripts.bench_estimator --out runs/bench_estimator [--n 100000]
                                      [--preset default|quick] [--set svi=false ...]

Data: one observational sample of the simulated headline world (sims.headlines, built-in
corpus), text representation = the posted headline's features phi (8 columns, markers
included). Fits: our default fit (Newton MAP + sandwich), statsmodels GLM (IRLS on a dense
dummy design: weekday and week one-hot, drop-first), our SVI fit (reference), and the
5-fold cross-fit (deconfound). For each: wall-clock seconds (median over `repeats` for
the MAP and statsmodels) and the error of g(C) against the world's true g (RMSE of the
centred per-row g, the constant being absorbed by the intercept), of the weekday effects
and the audience slope, and of the text coefficients against the true beta.
Writes --out/bench.json, results.csv (one row per method), summary.md, config.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
import statistics
import time

import numpy as np
import pandas as pd

from dlm import cli, outputs
from dlm.causal.crossfit import deconfound
from dlm.causal.fit import EstimatorConfig, fit
from dlm.causal.design import drop_first_dummies


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    n: int = 100_000                 # postings sampled from the world
    seed: int = 0
    repeats: int = 3                 # timed repeats of the MAP and of statsmodels (median)
    statsmodels: bool = True
    svi: bool = True
    svi_steps: int = 2000
    crossfit: bool = True
    covariance: str = "sandwich"


PRESETS = {"default": BenchConfig(), "quick": BenchConfig(n=20_000, repeats=1, svi_steps=500)}


def sample_world(n: int, seed: int):
    """One observational sample of the headline world and its truth."""
    import jax

    from dlm.data.builtin_corpus import builtin_corpus
    from sims.headlines import HeadlineWorld, HeadlineWorldConfig

    world = HeadlineWorld(builtin_corpus(), HeadlineWorldConfig())
    return world, world.sample(jax.random.PRNGKey(seed), n)


def _median_seconds(fn, repeats: int):
    times, result = [], None
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def _centred_rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean(((a - a.mean()) - (b - b.mean())) ** 2)))


def statsmodels_glm(log, text_NxF: np.ndarray) -> dict:
    """IRLS binomial GLM on the dense dummy design; g = its confounder part (centred later)."""
    import statsmodels.api as sm

    c = log.confounders
    la = c["log_audience"].values - c["log_audience"].values.mean()
    wd = drop_first_dummies(c["weekday"].values, c["weekday"].n_levels)
    wk = drop_first_dummies(c["week"].values, c["week"].n_levels)
    X = np.hstack([np.ones((len(log), 1)), text_NxF, wd, wk, la[:, None]])
    res = sm.GLM(np.c_[log.successes, log.trials - log.successes], X,
                 family=sm.families.Binomial()).fit()
    F = text_NxF.shape[1]
    g = X[:, 1 + F:] @ res.params[1 + F:]
    weekday = np.r_[0.0, res.params[1 + F: 1 + F + wd.shape[1]]] if wd.shape[1] == 6 else None
    return {"g": g, "text": res.params[1:1 + F], "slope": res.params[-1],
            "weekday": None if weekday is None else weekday - weekday.mean()}


def _ours(f, log) -> dict:
    e = f.effects()
    return {"g": f.g(log.confounders), "text": f.text_coef,
            "slope": float(e[e.parameter == "log_audience"]["mean"].iloc[0]),
            "weekday": e[e.parameter == "weekday"]["mean"].to_numpy()}


def centred_truth(log, truth: dict) -> np.ndarray:
    """The true g per row in the estimator's convention: weekday levels and the week curve
    minus their means over levels, the slope times (audience - its sample mean)."""
    c = log.confounders
    week = truth["g_week"] - np.mean(truth["g_week"])
    la = c["log_audience"].values
    return (truth["weekday_effects"][c["weekday"].values] + week[c["week"].values]
            + truth["audience_slope"] * (la - la.mean()))


def _coverage(lo: np.ndarray, hi: np.ndarray, truth_N: np.ndarray) -> float:
    return float(np.mean((lo <= truth_N) & (truth_N <= hi)))


def _errors(est: dict, truth: dict, g_true: np.ndarray) -> dict:
    out = {"g_rmse": _centred_rmse(est["g"], g_true),
           "slope_err": float(est["slope"] - truth["audience_slope"]),
           "text_max_err": float(np.max(np.abs(est["text"] - truth["beta_F"])))}
    if est.get("weekday") is not None:
        out["weekday_max_err"] = float(np.max(np.abs(est["weekday"] - truth["weekday_effects"])))
    return out


def run(cfg: BenchConfig, out: pathlib.Path) -> dict:
    world, sample = sample_world(cfg.n, cfg.seed)
    log, text = sample.log, np.asarray(sample.phi, np.float64)
    truth = world.truth()
    truth["beta_F"] = np.asarray(world.beta_F, np.float64)
    est_cfg = EstimatorConfig(covariance=cfg.covariance, svi_steps=cfg.svi_steps, seed=cfg.seed)
    rows = []

    secs, f = _median_seconds(lambda: fit(log.successes, log.trials, text, log.confounders,
                                          est_cfg, groups=log.group), cfg.repeats)
    slope = f.effects().query("parameter == 'log_audience'").iloc[0]
    lo, hi = f.g_interval(log.confounders)
    rows.append({"method": "ours_map", "seconds": secs, **_errors(_ours(f, log), truth, sample.g),
                 "g_coverage": _coverage(lo, hi, centred_truth(log, truth)),
                 "iterations": f.info["iterations"],
                 "slope_covered": bool(slope["lo"] <= truth["audience_slope"] <= slope["hi"])})
    if cfg.statsmodels:
        secs, ref = _median_seconds(lambda: statsmodels_glm(log, text), cfg.repeats)
        rows.append({"method": "statsmodels_glm", "seconds": secs, **_errors(ref, truth, sample.g),
                     "text_vs_ours": float(np.max(np.abs(ref["text"] - f.text_coef)))})
    if cfg.svi:
        svi_cfg = dataclasses.replace(est_cfg, method="svi")
        t0 = time.perf_counter()
        fs = fit(log.successes, log.trials, text, log.confounders, svi_cfg, groups=log.group)
        rows.append({"method": "ours_svi", "seconds": time.perf_counter() - t0,
                     **_errors(_ours(fs, log), truth, sample.g)})
    if cfg.crossfit:
        t0 = time.perf_counter()
        adj = deconfound(log, text, est_cfg)
        rows.append({"method": f"ours_crossfit_{est_cfg.folds}fold",
                     "seconds": time.perf_counter() - t0,
                     "g_rmse": _centred_rmse(adj.g_hat, sample.g),
                     "g_coverage": _coverage(adj.g_lo, adj.g_hi, centred_truth(log, truth))})
    frame = pd.DataFrame(rows)
    result = {"config": cfg, "n_rows": len(log), "n_text": text.shape[1],
              "n_params": f.spec.n_params, "results": frame.to_dict(orient="records")}
    if cfg.statsmodels:
        result["speedup_vs_statsmodels"] = rows[1]["seconds"] / rows[0]["seconds"]
    outputs.write_json(out / "bench.json", result)
    outputs.write_json(out / "config.json", cfg)
    outputs.write_csv(out / "results.csv", frame)
    outputs.write_text(out / "summary.md", _summary(result, frame))
    return result


def _summary(result: dict, frame: pd.DataFrame) -> str:
    head = (f"# Estimator benchmark: {result['n_rows']:,} rows, {result['n_text']} text features, "
            f"{result['n_params']} parameters\n\n")
    tail = ""
    if "speedup_vs_statsmodels" in result:
        tail = f"\nstatsmodels seconds / ours: {result['speedup_vs_statsmodels']:.2f}x\n"
    return head + outputs.markdown_table(frame.astype(object).where(frame.notna(), ""), floatfmt=".4f") + tail


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_common_args(parser, PRESETS, default_preset="default")
    parser.add_argument("--n", type=int, default=None, help="rows to sample (overrides the preset)")
    args = parser.parse_args(argv)
    cfg = cli.resolve_config(args, PRESETS)
    if args.n is not None:
        cfg = dataclasses.replace(cfg, n=args.n)
    result = run(cfg, args.out)
    print(_summary(result, pd.DataFrame(result["results"])))


if __name__ == "__main__":
    main()
