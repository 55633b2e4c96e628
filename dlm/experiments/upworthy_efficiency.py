"""Data efficiency on Upworthy: how much experimental data a reward needs, alone and mixed
with the observational log (issue 15, item 2; `scripts.upworthy --efficiency`).

    log, eval_log = U.load_inputs(path, None)
    r = run_efficiency(U.PRESETS["quick"], log, representation="minilm")   # EfficiencyResult

The Upworthy pipeline's split, Targets and LinearBackend (dlm.experiments.upworthy) on one
frozen representation. The observational rewards (naive, deconfoundlm: every training
test's one random arm) are fitted once. For each share of the randomised training tests
(SHARES) and each subsample seed, that share of tests (at least MIN_TESTS, the hybrid's
cross-fitting folds) is drawn; on their arms the experimental rewards (pairwise,
experimental; CTR regression, experimental_ctr) and the two hybrids (dlm.rewards
METHODS "hybrid" = deconfoundlm + experimental_ctr, "hybrid_naive" = naive +
experimental_ctr, weight w* cross-fitted over the drawn tests) are fitted. Each reward is
scored by ROC-AUC on the held-out significant within-test pairs (the same pairs for every
share and seed), with a 95% bootstrap CI over evaluation tests.

Replication unit: the subsample seed (a fresh draw of experimental tests, every reward
refitted). The summary gives the mean over seeds with the seeds' standard error (the
variability of which tests one happens to run); the evaluation pairs are common to all
rows, so their own sampling error (the bootstrap CI, ~±0.05) shifts every curve alike.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd

from dlm.experiments import upworthy as U

SHARES = (0.01, 0.03, 0.1, 0.3, 1.0)
MIN_TESTS = 5
OBSERVATIONAL = ("naive", "deconfoundlm")
EXPERIMENTAL = ("experimental", "experimental_ctr", "hybrid_naive", "hybrid")


@dataclasses.dataclass(eq=False)
class EfficiencyResult:
    table: pd.DataFrame       # share, seed, n_tests, n_arms, method, auc, auc_lo, auc_hi, w
    data: dict                # U.prepare's split
    representation: str
    timings: dict


def draw_tests(arms, share: float, seed: int) -> np.ndarray:
    """[A] bool: the arms of `share` of arms' tests with two or more headline arms (a
    single-arm test contrasts nothing; at least MIN_TESTS), drawn by seed."""
    group = np.asarray(arms.group)
    tests, counts = np.unique(group, return_counts=True)
    tests = tests[counts >= 2]
    k = min(len(tests), max(MIN_TESTS, int(round(share * len(tests)))))
    chosen = np.random.default_rng(seed).choice(tests, size=k, replace=False)
    return np.isin(group, chosen)


def run_efficiency(cfg: U.UpworthyConfig, log, eval_log=None, representation: str = "minilm",
                   shares=SHARES, seeds: int = 5, progress: bool = False) -> EfficiencyResult:
    """One row per (share, seed, method); observational rows repeat their single fit."""
    from dlm.realdata import pairs as P
    from dlm.representations import fit_representation
    from dlm.rewards import METHODS, MethodContext
    from dlm.rewards.fit import fit_scorer
    from dlm.rewards.linear import LinearBackend
    from dlm.rewards.methods import hybrid_parts

    if representation == "trunk":
        raise ValueError("the efficiency curve refits every reward ~50 times: use a frozen "
                         "representation (ngram, minilm, smollm2-135m), not the trunk")
    if not shares or min(shares) <= 0 or max(shares) > 1 or seeds < 1:
        raise ValueError(f"shares must lie in (0, 1] and seeds >= 1; got {shares}, {seeds}")
    U.check_representations((representation,), cfg)
    d = U.prepare(cfg, log, eval_log)
    t0 = time.perf_counter()
    obs_targets = U.method_targets(cfg, d, OBSERVATIONAL)
    timings = {"adjustment": time.perf_counter() - t0}
    t0 = time.perf_counter()
    train_texts = np.concatenate([np.asarray(d["obs"].content), np.asarray(d["fit_arms"].content)])
    featurise = fit_representation(U.representation_spec(representation, cfg), train_texts,
                                   seed=cfg.seed, llm_batch=cfg.llm_batch)
    backend = LinearBackend(featurise, cfg.l2_grid, [], representation)
    ev, arms = d["eval_pairs"], d["eval_arms"]
    uniq, inv = np.unique(np.asarray(arms.content).astype(str), return_inverse=True)

    def diff(score) -> np.ndarray:
        s = np.asarray(score(list(uniq)), np.float64)[inv]
        return s[ev.win] - s[ev.lose]

    obs_diffs = {m: diff(fit_scorer(m, t, backend)) for m, t in obs_targets.items()}
    train_alpha = None if cfg.train_pair_alpha >= 1 else cfg.train_pair_alpha
    rows = []
    grid = [(share, seed) for share in shares for seed in range(cfg.seed, cfg.seed + seeds)]
    for share, seed in _progress(grid, progress):
        keep = draw_tests(d["fit_arms"], share, seed)
        sub = d["fit_arms"].take(np.flatnonzero(keep))
        pairs = P.within_test_pairs(sub, alpha=train_alpha)
        ctx = MethodContext(d["obs"], seed=cfg.seed, val=d["obs_val"], experiment=sub,
                            experiment_val=d["arm_val"][keep], pairs=(pairs.win, pairs.lose))
        ctr = METHODS["experimental_ctr"].target_fn(ctx)
        targets = {"experimental": METHODS["experimental"].target_fn(ctx),
                   "experimental_ctr": ctr,
                   "hybrid_naive": hybrid_parts(obs_targets["naive"], ctr),
                   "hybrid": hybrid_parts(obs_targets["deconfoundlm"], ctr)}
        diffs, weights = dict(obs_diffs), {}
        for m, t in targets.items():
            if m == "experimental" and len(pairs) == 0:
                continue                            # no within-test pair with a winner
            score = fit_scorer(m, t, backend)
            diffs[m] = diff(score)
            if hasattr(score, "weight"):
                weights[m] = score.weight.w
        table = P.auc_table(diffs, ev.group, None, cfg.n_boot, seed=cfg.seed)
        rows.append(table.assign(share=share, seed=seed, n_tests=int(np.unique(sub.group).size),
                                 n_arms=len(sub), w=table.method.map(weights)))
    timings[representation] = time.perf_counter() - t0
    table = pd.concat(rows, ignore_index=True)[
        ["share", "seed", "n_tests", "n_arms", "method", "auc", "auc_lo", "auc_hi", "n_pairs", "w"]]
    return EfficiencyResult(table, d, representation, timings)


def _progress(items, on: bool):
    if not on:
        return items
    from tqdm import tqdm

    return tqdm(items, desc="share x seed")


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per (share, method): mean AUC over subsample seeds, its se, the mean bootstrap CI
    bounds, the mean w* (hybrids) and the mean number of experimental tests."""
    out = []
    for (share, method), g in table.groupby(["share", "method"], sort=True):
        se = g.auc.std(ddof=1) / np.sqrt(len(g)) if len(g) > 1 else np.nan
        out.append({"share": share, "method": method, "n_tests": g.n_tests.mean(),
                    "auc": g.auc.mean(), "auc_se": se, "auc_lo": g.auc_lo.mean(),
                    "auc_hi": g.auc_hi.mean(), "seeds": len(g), "w": g.w.mean()})
    order = {m: i for i, m in enumerate(EXPERIMENTAL + OBSERVATIONAL)}
    return pd.DataFrame(out).sort_values(["share", "method"], key=lambda c: c.map(order)
                                         if c.name == "method" else c, ignore_index=True)


PAIRED = (("hybrid", "deconfoundlm"), ("hybrid", "experimental_ctr"),
          ("hybrid_naive", "naive"), ("hybrid_naive", "experimental_ctr"))


def paired(table: pd.DataFrame) -> pd.DataFrame:
    """Per share and PAIRED contrast: AUC(a) - AUC(b) on the same seed's draw (and the same
    evaluation pairs), mean and se over subsample seeds."""
    auc = table.pivot_table(index=["share", "seed"], columns="method", values="auc")
    out = []
    for share, g in auc.groupby(level="share"):
        for a, b in PAIRED:
            if a in g and b in g:
                d = (g[a] - g[b]).dropna()
                se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else np.nan
                out.append({"share": share, "contrast": f"{a} - {b}", "diff": d.mean(),
                            "se": se, "seeds": len(d)})
    return pd.DataFrame(out)


def plot_efficiency(summ: pd.DataFrame, path, title: str) -> None:
    """AUC vs share of experimental tests (log x), ±se bands over subsample seeds; the
    observational rewards (one fit) as horizontal lines; w* of the hybrids below."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dlm import outputs

    fig, (ax, axw) = plt.subplots(2, 1, figsize=(6.5, 6.5), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1]})
    x = 100 * np.array(sorted(summ.share.unique()))
    for k, method in enumerate(EXPERIMENTAL):
        g = summ[summ.method == method].sort_values("share")
        if g.empty:
            continue
        se = g.auc_se.fillna(0).to_numpy()
        ax.plot(100 * g.share, g.auc, "o-", color=f"C{k}", label=method)
        ax.fill_between(100 * g.share, g.auc - se, g.auc + se, color=f"C{k}", alpha=0.2, lw=0)
        if g.w.notna().any():
            axw.plot(100 * g.share, g.w, "o-", color=f"C{k}", label=method)
    for k, method in enumerate(OBSERVATIONAL, start=len(EXPERIMENTAL)):
        g = summ[summ.method == method]
        if not g.empty:
            ax.axhline(g.auc.iloc[0], color=f"C{k}", ls="--", label=f"{method} (observational)")
    ax.set_xscale("log")
    ax.set_xticks(x, [f"{v:g}%" for v in x])
    ax.set_ylabel("ROC-AUC, held-out significant pairs")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    axw.set_ylabel("w* (experimental side)")
    axw.set_ylim(0, 1)
    axw.set_xlabel("share of randomised training tests used as experimental data")
    fig.tight_layout()
    outputs.save_figure(path, fig)


def summary_text(r: EfficiencyResult, cfg: U.UpworthyConfig, wall_s: float, source: str) -> str:
    from dlm import outputs

    s = summary(r.table)
    view = pd.DataFrame({
        "share": s.share.map(lambda v: f"{100 * v:g}%"), "tests": s.n_tests.map("{:.0f}".format),
        "method": s.method,
        "AUC (mean ± se over seeds)": [f"{a:.3f} ± {e:.3f}" if np.isfinite(e) else f"{a:.3f}"
                                       for a, e in zip(s.auc, s.auc_se)],
        "mean 95% CI (eval tests)": [f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(s.auc_lo, s.auc_hi)],
        "w*": s.w.map(lambda v: "" if pd.isna(v) else f"{v:.2f}")})
    p = paired(r.table)
    wide = p.assign(cell=[f"{d:+.3f} ± {e:.3f}" if np.isfinite(e) else f"{d:+.3f}"
                          for d, e in zip(p["diff"], p.se)]).pivot(
        index="share", columns="contrast", values="cell")
    wide.index = [f"{100 * v:g}%" for v in wide.index]
    seeds = int(r.table.seed.nunique())
    return (f"# Data efficiency on Upworthy ({r.representation})\n\n"
            f"Evaluation: {int(r.table.n_pairs.iloc[0])} significant within-test pairs of {source}. "
            f"{seeds} subsample seeds per share (each a fresh draw of experimental tests, every "
            f"reward refitted); naive and deconfoundlm are fitted once on the observational log. "
            f"w*: the hybrid's cross-fitted weight on its experimental side. Wall {wall_s:.0f} s.\n\n"
            + outputs.markdown_table(view) + "\n\n## Paired over subsample seeds\n\n"
            "AUC differences on the same draw of experimental tests, mean ± se over seeds "
            "(at 100% every seed draws every test).\n\n"
            + outputs.markdown_table(wide.rename_axis("share").reset_index()) + "\n")


def write_outputs(out, r: EfficiencyResult, cfg: U.UpworthyConfig, run_info: dict,
                  text: str) -> None:
    from dlm import outputs

    outputs.write_csv(out / "efficiency.csv", r.table)
    outputs.write_csv(out / "efficiency_summary.csv", summary(r.table))
    outputs.write_csv(out / "efficiency_paired.csv", paired(r.table))
    plot_efficiency(summary(r.table), out / "efficiency.png",
                    f"Upworthy, {r.representation}: experimental data vs observational log")
    outputs.write_text(out / "summary.md", text)
    outputs.write_json(out / "config.json", {**run_info, "config": cfg, "efficiency": True,
                                             "representation": r.representation})
