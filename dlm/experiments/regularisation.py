"""Regularisation vs representation size (the paper's figure 5b) on the Upworthy pipeline.

    log, eval_log = U.load_inputs(path, None)
    sweep = run_sweep(U.PRESETS["quick"], log)              # -> SweepResult
    choices(sweep.table)                                      # best l2 per representation

For each frozen representation (dlm.experiments.upworthy: same split, Targets, and
LinearBackend as its comparison) and each method (naive: observational CTR; deconfoundlm:
deconfounded CTR), the reward head is fitted at every l2 strength of a grid. Per strength:
ROC-AUC on the held-out significant pairs (bootstrap CI over tests) of the model refitted
on train + validation rows (what the pipeline ships at that strength); and, of the model
fitted on training rows only, (a) the method's own loss on the validation rows of the
observational log (what a user can compute) and (b) AUC on the significant pairs of the
validation tests' headline arms (what the paper did: experimental data picks the strength).

Comparable strengths: every representation is multiplied by one scalar so that the mean
squared row norm over the training texts is 1; with fit_linear's l2 (per unit of mean loss)
the implied prior variance of a score, |x|^2 / l2, is then the same at any dimension D, and
l2 means the same for 16k hashed n-grams, MiniLM's 384 and SmolLM2's 576 dimensions
(the raw-unit strength is l2 / scale^2; `scale` is in the table).
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd
import scipy.sparse

from dlm.experiments import upworthy as U
from dlm.rewards.linear import LinearBackend

L2_GRID = tuple(float(x) for x in np.logspace(-4, 3, 15))   # half decades, 1e-4 .. 1e3
METHODS = ("naive", "deconfoundlm")
# parameters of the representation's encoder (n-grams: none), for "larger models"
SIZE = {"ngram": 0, "minilm": 22_700_000, "smollm2-135m": 134_500_000}


class _Stacked:
    """Several linear models as one: X -> [N, n_models] scores."""

    def __init__(self, models):
        self.models = models

    def __call__(self, X):
        return np.column_stack([np.asarray(m(X), np.float64) for m in self.models])


class SweepBackend(LinearBackend):
    """A LinearBackend that keeps every strength of its grid instead of the best: scorers
    return [N, 2 * len(l2_grid)]; column 2i is strength i fitted on the training rows only
    (its validation loss goes to history), column 2i + 1 refitted on all rows."""

    def _select(self, method, fit_on, val_loss, val):
        if not val.any():
            raise ValueError(f"{self.name}/{method}: no validation rows to sweep on")
        models = []
        for l2 in self.l2_grid:
            train_only = fit_on(~val, l2)
            self.history.append({"representation": self.name, "method": method, "l2": l2,
                                 "val_loss": val_loss(train_only)})
            models += [train_only, fit_on(np.ones_like(val), l2)]
        return _Stacked(models)


def unit_scaled(featurise, train_texts) -> tuple:
    """(featurise * s, s) with s such that the mean squared row norm on the distinct
    training texts is 1 (see the module docstring)."""
    X = featurise(list(np.unique(np.asarray(train_texts).astype(str))))
    sq = (X.multiply(X).sum(axis=1) if scipy.sparse.issparse(X)
          else np.sum(np.asarray(X, np.float64) ** 2, axis=1))
    mean_sq = float(np.mean(sq))
    if not mean_sq > 0:
        raise ValueError("unit_scaled: the representation is zero on every training text")
    s = 1.0 / np.sqrt(mean_sq)

    def scaled(texts):
        Z = featurise(texts)
        return (Z.multiply(s).tocsr() if scipy.sparse.issparse(Z)
                else np.asarray(Z, np.float32) * np.float32(s))
    return scaled, s


@dataclasses.dataclass(eq=False)
class SweepResult:
    table: pd.DataFrame      # representation, method, l2, auc, auc_lo, auc_hi, n_pairs,
                             # val_loss, val_auc, scale
    data: dict               # upworthy.prepare()'s split, logs and pairs
    val_pairs: object        # the validation tests' significant pairs (choice b)
    timings: dict[str, float]


def _scores(score, arms) -> np.ndarray:
    """[A, 2L] scores of every arm's headline (each distinct text scored once)."""
    uniq, inv = np.unique(np.asarray(arms.content).astype(str), return_inverse=True)
    return np.asarray(score(list(uniq)))[inv]


def run_sweep(cfg: U.UpworthyConfig, log, eval_log=None, l2_grid=None,
              methods=METHODS) -> SweepResult:
    """One row per (representation, method, l2) of cfg.representations (frozen ones);
    l2_grid: L2_GRID unless given."""
    from dlm.realdata import pairs as P
    from dlm.representations import fit_representation
    from dlm.rewards.fit import fit_scorers

    if "trunk" in cfg.representations:
        raise ValueError("the regularisation sweep needs frozen representations (the trunk "
                         "has no l2 head); drop 'trunk' from --representations")
    U.check_representations(cfg.representations, cfg)
    l2_grid = tuple(L2_GRID if l2_grid is None else l2_grid)
    d = U.prepare(cfg, log, eval_log)
    val_arms = d["fit_arms"].take(np.flatnonzero(d["arm_val"]))
    vp = P.within_test_pairs(val_arms, alpha=cfg.alpha)
    if len(vp) == 0:
        raise ValueError(f"{log.source}: no significant pairs (alpha={cfg.alpha}) in the "
                         "validation tests; choice (b) has nothing to score")
    t0 = time.perf_counter()
    targets = U.method_targets(cfg, d, methods)
    timings = {"adjustment": time.perf_counter() - t0}
    ev = d["eval_pairs"]
    train_texts = np.concatenate([np.asarray(d["obs"].content), np.asarray(d["fit_arms"].content)])
    rows = []
    for rep in cfg.representations:
        t0 = time.perf_counter()
        base = fit_representation(U.representation_spec(rep, cfg), train_texts, seed=cfg.seed,
                                  llm_batch=cfg.llm_batch)
        featurise, scale = unit_scaled(base, train_texts)
        history: list[dict] = []
        scorers = fit_scorers(targets, SweepBackend(featurise, l2_grid, history, rep))
        for method, score in scorers.items():
            S_ev, S_val = _scores(score, d["eval_arms"]), _scores(score, val_arms)
            diffs = {str(i): S_ev[ev.win, 2 * i + 1] - S_ev[ev.lose, 2 * i + 1]
                     for i in range(len(l2_grid))}
            t = P.auc_table(diffs, ev.group, None, cfg.n_boot, seed=cfg.seed)
            loss = {h["l2"]: h["val_loss"] for h in history if h["method"] == method}
            t = t.assign(representation=rep, method=method, l2=list(l2_grid),
                         val_loss=[loss[l2] for l2 in l2_grid],
                         val_auc=[P.pair_auc(S_val[vp.win, 2 * i], S_val[vp.lose, 2 * i])
                                  for i in range(len(l2_grid))], scale=scale)
            rows.append(t)
        timings[rep] = time.perf_counter() - t0
    table = pd.concat(rows, ignore_index=True)[
        ["representation", "method", "l2", "auc", "auc_lo", "auc_hi", "n_pairs", "val_loss",
         "val_auc", "scale"]]
    return SweepResult(table, d, vp, timings)


def choices(table: pd.DataFrame) -> pd.DataFrame:
    """Per (representation, method): the l2 chosen (a) by the observational validation loss,
    (b) by AUC on the validation tests' experimental pairs, and the evaluation AUC of each;
    best_auc is the hindsight best on the evaluation pairs (for reference only)."""
    out = []
    for (rep, method), g in table.groupby(["representation", "method"], sort=False):
        a, b = g.loc[g["val_loss"].idxmin()], g.loc[g["val_auc"].idxmax()]
        best = g.loc[g["auc"].idxmax()]
        out.append({"representation": rep, "method": method,
                    "l2_a_obs_val_loss": a.l2, "auc_a": a.auc, "auc_a_lo": a.auc_lo,
                    "auc_a_hi": a.auc_hi, "l2_b_exp_val_auc": b.l2, "auc_b": b.auc,
                    "auc_b_lo": b.auc_lo, "auc_b_hi": b.auc_hi, "l2_best_eval": best.l2,
                    "auc_best_eval": best.auc})
    return pd.DataFrame(out)


def heavier_for_larger(ch: pd.DataFrame, column: str = "l2_a_obs_val_loss") -> dict[str, str]:
    """method -> a sentence: does the chosen l2 grow with the encoder's size?"""
    verdict = {}
    for method, g in ch.groupby("method", sort=False):
        g = g.assign(size=[SIZE.get(r, np.nan) for r in g.representation]).dropna(
            subset=["size"]).sort_values("size")
        l2 = g[column].to_numpy()
        path = " -> ".join(f"{r} {v:.2g}" for r, v in zip(g.representation, l2))
        if len(l2) < 2:
            verdict[method] = f"fewer than two sized representations ({path})"
        elif np.all(np.diff(l2) >= 0) and l2[-1] > l2[0]:
            verdict[method] = f"holds ({path})"
        else:
            verdict[method] = f"does not hold ({path})"
    return verdict


def plot_sweep(table: pd.DataFrame, ch: pd.DataFrame, path) -> None:
    """AUC vs l2, one line per representation with its 95% band; one panel per method;
    circles: choice (a), crosses: choice (b)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dlm import outputs

    methods = list(dict.fromkeys(table["method"]))
    fig, axes = plt.subplots(1, len(methods), figsize=(5.5 * len(methods), 4), sharey=True,
                             squeeze=False)
    for ax, method in zip(axes[0], methods):
        for k, (rep, g) in enumerate(table[table.method == method].groupby(
                "representation", sort=False)):
            colour = f"C{k}"
            ax.plot(g.l2, g.auc, "-", color=colour, label=rep)
            ax.fill_between(g.l2, g.auc_lo, g.auc_hi, color=colour, alpha=0.2, lw=0)
            c = ch[(ch.representation == rep) & (ch.method == method)].iloc[0]
            ax.plot([c.l2_a_obs_val_loss], [c.auc_a], "o", color=colour, ms=7)
            ax.plot([c.l2_b_exp_val_auc], [c.auc_b], "x", color=colour, ms=9, mew=2)
        ax.set_xscale("log")
        ax.axhline(0.5, color="grey", lw=0.5)
        ax.set_xlabel("l2 strength (unit mean squared row norm)")
        ax.set_title(method)
    axes[0][0].set_ylabel("ROC-AUC, held-out significant pairs")
    axes[0][0].legend(title="o: chosen on obs. val. loss, x: on exp. val. pairs", fontsize=8,
                      title_fontsize=8)
    fig.tight_layout()
    outputs.save_figure(path, fig)


def summary_text(r: SweepResult, cfg: U.UpworthyConfig, wall_s: float, source: str) -> str:
    from dlm import outputs

    ch = choices(r.table)
    cell = lambda a, lo, hi: f"{a:.3f} [{lo:.3f}, {hi:.3f}]"  # noqa: E731
    view = pd.DataFrame({
        "representation": ch.representation, "method": ch.method,
        "(a) l2, obs. val. loss": ch.l2_a_obs_val_loss.map("{:.2g}".format),
        "(a) eval AUC": [cell(x.auc_a, x.auc_a_lo, x.auc_a_hi) for x in ch.itertuples()],
        "(b) l2, exp. val. pairs": ch.l2_b_exp_val_auc.map("{:.2g}".format),
        "(b) eval AUC": [cell(x.auc_b, x.auc_b_lo, x.auc_b_hi) for x in ch.itertuples()],
        "hindsight best l2": ch.l2_best_eval.map("{:.2g}".format),
        "its AUC": ch.auc_best_eval.map("{:.3f}".format)})
    ev, grid = r.data["eval_pairs"], sorted(set(r.table.l2))
    lines = ["# Upworthy: reward-head regularisation vs representation size\n",
             f"ROC-AUC on {len(ev):,} held-out significant pairs of {source} at each of "
             f"{len(grid)} l2 strengths ({grid[0]:g} .. {grid[-1]:g}); [95% CI]: bootstrap "
             f"over tests ({cfg.n_boot} resamples). Representations scaled to unit mean squared "
             "row norm on the training texts, so l2 is comparable across dimensions.\n",
             "Best strength chosen (a) by the method's own loss on the observational "
             "validation rows (no experimental data), (b) by AUC on the "
             f"{len(r.val_pairs):,} significant pairs of the validation tests (experimental "
             "data, as in the paper):\n",
             outputs.markdown_table(view), "",
             "Heavier regularisation for larger encoders, under (a):"]
    lines += [f"- {m}: {v}" for m, v in heavier_for_larger(ch).items()]
    lines += ["", "Under (b):"]
    lines += [f"- {m}: {v}" for m, v in heavier_for_larger(ch, "l2_b_exp_val_auc").items()]
    lines += ["", "## Time\n", f"- wall time {wall_s:.0f} s ("
              + ", ".join(f"{k} {v:.0f} s" for k, v in r.timings.items()) + ")."]
    return "\n".join(lines) + "\n"


def write_outputs(out, r: SweepResult, cfg: U.UpworthyConfig, run_info: dict,
                  text: str) -> None:
    """sweep.csv, choices.csv, reg_sweep.png, summary.md and config.json under `out`."""
    from dlm import outputs

    ch = choices(r.table)
    outputs.write_csv(out / "sweep.csv", r.table)
    outputs.write_csv(out / "choices.csv", ch)
    outputs.write_text(out / "summary.md", text)
    outputs.write_json(out / "config.json", {**run_info, "config": cfg, "reg_sweep": True})
    plot_sweep(r.table, ch, out / "reg_sweep.png")
