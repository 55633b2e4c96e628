"""The simulation study: every reward method over a grid of worlds (entanglement x
p_marker), the pipeline of scripts.replicate_simulation.

Each world is compare_rewards' world (sims.experiments.compare_rewards) at one
entanglement and p_marker. The SFT policy is trained once per p_marker (on the log of the
`sft_entanglement` world) and its candidate pools (one per seed) are shared by every
entanglement, so within a p_marker all worlds rank the same candidates. Baselines follow
DESIGN.md section 3's protocol (dlm.eval.selection); the report (summary_text) and plots
(plot_metric) are here too.
"""
from __future__ import annotations

import dataclasses
import pathlib
import time

import numpy as np
import pandas as pd

from dlm import outputs
from dlm.eval.selection import mean_ci, paired_gains
from dlm.eval.stats import format_mean_se, summarise
from sims.experiments import compare_rewards as cr

# results.csv starts with exactly these columns (the contract); extras follow.
COLUMNS = ("seed", "entanglement", "p_marker", "method", "causal_corr", "spurious_gap",
           "objective", "objective_normalised")
EXTRA = ("strength", "pair_acc", "marker_rate", "gap_monday", "gap_friday", "val_loss",
         "seconds", "split")
# (metric, title, cells with a 95% t-interval instead of ± se)
TABLES = (("objective", "Objective (mean true tau of the best-of-n picks)", False),
          ("marker_rate", "marker_rate of the best-of-n picks (share with a weekday marker; "
                          "sft = the policy's own samples)", False),
          ("objective_normalised", "Normalised objective (0 = SFT policy, 1 = oracle reward)",
           False),
          ("causal_corr", "causal_corr (corr of r(X) with tau(X) on held-out headlines)", False),
          ("spurious_gap", "spurious_gap (Monday-marker gap minus its true effect; 0 is right), "
                           "mean [95% t-interval] over seeds", True))


@dataclasses.dataclass(frozen=True)
class ReplicateConfig(cr.CompareConfig):
    """compare_rewards' config plus the grid; its world's `entanglement`/`p_marker` are
    replaced by every value of `entanglements` x `p_markers` (every other world field, e.g.
    world.confounder_strength, holds in every world)."""

    entanglements: tuple[float, ...] = (0.0, 0.3, 0.6, 0.9)
    p_markers: tuple[float, ...] = (0.8, 1.0)
    sft_entanglement: float = 0.0      # the world whose log each p_marker's SFT policy learns


def _from(base: cr.CompareConfig, **changes) -> ReplicateConfig:
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    return ReplicateConfig(**{**fields, **changes})


# quick: the protocol's 10 reported + 3 tuning seeds, strengths down to 0.01, a 400-posting
# validation sample per seed, and a BPE SFT policy (the byte-level one, 250 steps, wrote
# markers in ~1% of samples against ~23% in the posted log; this one ~25%: issue 13 item 3);
# two worlds (p_marker 0.8, entanglement 0 and 0.9) so that 13 seeds' pools (~60 s each on
# a loaded 2-core machine) and 10 seeds' cross-fits fit a quick run.
PRESETS = {
    "tiny": _from(cr.PRESETS["tiny"], entanglements=(0.0, 0.9)),
    "quick": _from(cr.PRESETS["quick"], n_postings=8000,
                   reward=dataclasses.replace(cr.PRESETS["quick"].reward, steps=300),
                   estimator=dataclasses.replace(cr.PRESETS["quick"].estimator, folds=3),
                   knob=(0.01, 0.1, 1.0, 10.0, 100.0), seeds=10, tune_seeds=3, n_val=400,
                   entanglements=(0.0, 0.9), p_markers=(0.8,),
                   sft_tokenizer="bpe", sft_steps=300, sft_lr=2e-3, max_len=64,
                   max_prompt_len=40, max_new_tokens=24, n_ledes=32, max_heldout_stories=100),
    "full": _from(cr.PRESETS["full"], knob=(0.01, 0.1, 1.0, 10.0, 100.0), seeds=10,
                  tune_seeds=3, n_val=400, sft_tokenizer="bpe"),
}


# ---- the grid ---------------------------------------------------------------------------------
def world_config(cfg: ReplicateConfig, entanglement: float, p_marker: float) -> cr.CompareConfig:
    """compare_rewards' config for one world of the grid."""
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cr.CompareConfig)}
    world = dataclasses.replace(cfg.world, entanglement=float(entanglement),
                                p_marker=float(p_marker))
    return cr.CompareConfig(**{**fields, "world": world})


def run(cfg: ReplicateConfig, data: pathlib.Path | None = None, progress: bool = True,
        history: list | None = None) -> tuple[pd.DataFrame, dict]:
    """Every world of the grid; returns (tidy results, per-stage seconds and sizes)."""
    from tqdm.auto import tqdm

    t0, frames = time.perf_counter(), []
    info = {"sft_s": 0.0, "representation_s": 0.0, "pool_s": 0.0, "worlds_s": 0.0,
            "world_s": {}, "posted_marker_rate": {}}
    history = [] if history is None else history
    bar = tqdm(total=len(cfg.entanglements) * len(cfg.p_markers), desc="worlds",
               disable=not progress)
    for p in cfg.p_markers:
        shared = cr.prepare(world_config(cfg, cfg.sft_entanglement, p), data, progress=False)
        info["sft_s"] += shared.sft_s
        info["representation_s"] += shared.representation_s
        info["posted_marker_rate"][f"{p:g}"] = shared.posted_marker_rate
        for e in cfg.entanglements:
            t = time.perf_counter()
            curve: list = []
            frame, winfo = cr.run(world_config(cfg, e, p), data, progress=False, history=curve,
                                  shared=shared)
            history += [{"entanglement": e, "p_marker": p, **r} for r in curve]
            frames.append(frame)
            info["pool_s"] += winfo["pool_s"]
            info["world_s"][f"{e:g}/{p:g}"] = time.perf_counter() - t
            info["worlds_s"] += time.perf_counter() - t
            bar.update(1)
    bar.close()
    info.update(data=winfo["data"], representation=winfo["representation"],
                n_heldout_texts=winfo["n_heldout_texts"], n_pairs=winfo["n_pairs"])
    info["total_s"] = time.perf_counter() - t0
    return tidy(pd.concat(frames, ignore_index=True)), info


def tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """compare_rewards' frame with the issue's column names and order (extras after)."""
    frame = frame.rename(columns={"normalised_objective": "objective_normalised"})
    return frame.reindex(columns=[*COLUMNS, *EXTRA])


# ---- the paper's comparison ------------------------------------------------------------------
def best_strength(frame: pd.DataFrame, method: str, metric: str = "objective") -> pd.Series:
    """Per scenario (entanglement, p_marker): the strength of `method` with the highest mean
    `metric` over seeds (generous to the baseline: tuned on ground truth)."""
    sub = frame[frame.method == method]
    means = sub.groupby(["entanglement", "p_marker", "strength"])[metric].mean().reset_index()
    idx = means.groupby(["entanglement", "p_marker"])[metric].idxmax()
    return means.loc[idx].set_index(["entanglement", "p_marker"])["strength"]


def relative_gain(frame: pd.DataFrame, method: str = "deconfoundlm", baseline: str = "odin"
                  ) -> pd.DataFrame:
    """Per scenario: `method` vs `baseline` at the baseline's best strength by objective.

    gain = (mean_method - mean_baseline) / |mean_baseline| over seeds, for the objective and
    the normalised objective; diff = the seed-paired difference of objectives, mean and se.
    """
    best = best_strength(frame, baseline)
    rows = []
    for (e, p), lam in best.items():
        cell = frame[(frame.entanglement == e) & (frame.p_marker == p)]
        m = cell[cell.method == method].set_index("seed")
        b = cell[(cell.method == baseline) & (cell.strength == lam)].set_index("seed")
        row = {"entanglement": e, "p_marker": p, f"{baseline}_strength": lam}
        for col in ("objective", "objective_normalised"):
            mm, bm = m[col].mean(), b[col].mean()
            row.update({f"{method}_{col}": mm, f"{baseline}_{col}": bm,
                        f"gain_{col}": (mm - bm) / abs(bm) if bm != 0 else np.nan})
        d = (m["objective"] - b["objective"]).dropna().to_numpy()
        row["diff_mean"] = d.mean() if d.size else np.nan
        row["diff_se"] = d.std(ddof=1) / np.sqrt(d.size) if d.size > 1 else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def report_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The reported seeds' rows (tuning seeds only choose a strength)."""
    return frame if "split" not in frame else frame[frame.split.fillna("report") != "tune"]


def _ci_cell(values) -> str:
    m, lo, hi = mean_ci(values)
    return f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def scenario_table(frame: pd.DataFrame, metric: str, ci: bool = False) -> pd.DataFrame:
    """Methods (odin/invariant per strength) x scenarios, cells "mean ± se" over the
    reported seeds (ci: "mean [95% t-interval]")."""
    lab = cr.labelled(report_rows(frame)[lambda f: f[metric].notna()])   # sft: no reward metrics
    summ = summarise(lab, ["label", "p_marker", "entanglement"], [metric])
    if ci:
        cells = lab.groupby(["label", "p_marker", "entanglement"], sort=False)[metric].apply(
            _ci_cell)
        summ["cell"] = [cells[(lab_, p, e)] for lab_, p, e in
                        zip(summ.label, summ.p_marker, summ.entanglement)]
    else:
        summ["cell"] = [format_mean_se(m, s) for m, s in zip(summ["mean"], summ["se"])]
    summ["scenario"] = [f"ent {e:g}, p {p:g}" for e, p in zip(summ.entanglement, summ.p_marker)]
    order = list(dict.fromkeys(summ.sort_values(["p_marker", "entanglement"]).scenario))
    wide = summ.pivot_table(index="label", columns="scenario", values="cell", aggfunc="first",
                            sort=False)
    return wide[order].reset_index().rename_axis(columns=None)


def gain_table(gain: pd.DataFrame, method: str = "deconfoundlm", baseline: str = "odin"
               ) -> pd.DataFrame:
    pct = lambda v: "nan" if np.isnan(v) else f"{100 * v:+.1f}%"  # noqa: E731
    return pd.DataFrame({
        "entanglement": [f"{e:g}" for e in gain.entanglement],
        "p_marker": [f"{p:g}" for p in gain.p_marker],
        f"{baseline} λ (best)": [f"{s:g}" for s in gain[f"{baseline}_strength"]],
        f"objective {method}": gain[f"{method}_objective"].map("{:.3f}".format),
        f"objective {baseline}": gain[f"{baseline}_objective"].map("{:.3f}".format),
        "gain (objective)": gain["gain_objective"].map(pct),
        "paired diff": [format_mean_se(m, s) for m, s in zip(gain.diff_mean, gain.diff_se)],
        f"normalised {method}": gain[f"{method}_objective_normalised"].map("{:.3f}".format),
        f"normalised {baseline}": gain[f"{baseline}_objective_normalised"].map("{:.3f}".format),
        "gain (normalised)": gain["gain_objective_normalised"].map(pct)})


def summary_text(frame: pd.DataFrame, cfg: ReplicateConfig, info: dict) -> str:
    parts = [
        "# Reward methods across simulated worlds\n",
        f"Worlds: entanglement {', '.join(f'{e:g}' for e in cfg.entanglements)} x p_marker "
        f"{', '.join(f'{p:g}' for p in cfg.p_markers)}; marker effect "
        f"{cfg.world.marker_effect}, k {cfg.world.k}, confounder strength "
        f"{cfg.world.confounder_strength}; {cfg.seeds} seeds x {cfg.n_postings:,} postings per "
        f"world; data: {info['data']}. Representation {info['representation']} (frozen), linear "
        f"head, {cfg.reward.steps} steps. Held-out: {info['n_heldout_texts']} candidates of unseen stories, "
        f"{info['n_pairs']} within-story pairs. Objective: mean true tau of best-of-{cfg.best_of} "
        f"picks for {cfg.n_ledes} held-out ledes from an SFT policy ({cfg.policy_model}, "
        f"{cfg.sft_steps} steps) trained once per p_marker on the entanglement-"
        f"{cfg.sft_entanglement:g} world's log; every world of a p_marker ranks the same "
        f"pools. sft = the policy's first sample. Mean ± se over seeds.\n",
        "## DeconfoundLM vs the baselines under the protocol (DESIGN.md section 3)\n",
        _protocol_section(frame, cfg),
        "## DeconfoundLM vs ODIN at its in-sample best\n", _gain_section(report_rows(frame))]
    for metric, title, ci in TABLES:
        parts += [f"## {title}\n", outputs.markdown_table(scenario_table(frame, metric, ci))]
    parts.append(_notes(frame, info))
    return "\n".join(parts)


def protocol_table(gains: pd.DataFrame, method: str = "deconfoundlm") -> pd.DataFrame:
    pct = lambda v: "nan" if np.isnan(v) else f"{100 * v:+.1f}%"  # noqa: E731
    return pd.DataFrame({
        "entanglement": [f"{e:g}" for e in gains.entanglement],
        "p_marker": [f"{p:g}" for p in gains.p_marker],
        "baseline": gains.baseline, "selection": gains.selection, "λ": gains.strength,
        f"objective {method}": gains[method].map("{:.3f}".format),
        "objective baseline": gains.baseline_mean.map("{:.3f}".format),
        "paired diff [95% CI]": [f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" for d, lo, hi in
                                 zip(gains["diff"], gains.lo, gains.hi)],
        "gain": gains.rel_gain.map(pct), "seeds": gains.n_seeds})


def _protocol_section(frame: pd.DataFrame, cfg: ReplicateConfig) -> str:
    gains = paired_gains(frame)
    if gains.empty:
        return "Not computed: this run has no odin or invariant rows.\n"
    shown = gains[gains.selection.isin(["tuned", "validation"])
                  | gains.selection.str.startswith("λ=")]
    return (
        f"Per scenario and baseline, deconfoundlm's objective minus the baseline's, paired by "
        f"seed over the {cfg.seeds} reported seeds (each seed its own observational log, "
        f"validation sample and best-of-n pool; the SFT policy and the representation are "
        f"shared by all seeds of a p_marker), mean and 95% t-interval. Selections: λ=s, "
        f"every strength of the sweep; tuned, the best mean objective on {cfg.tune_seeds} "
        f"tuning seeds ({cfg.tune_first_seed}..) that are never reported; validation, per "
        f"seed the strength with the lowest val_loss (binomial-weighted squared error after "
        f"a free offset) on {cfg.n_val} randomised A/B postings from the world's intervene(), "
        f"no ground truth (λ lists the strengths chosen, ×seeds). gain = diff / |baseline|.\n\n"
        + outputs.markdown_table(protocol_table(shown)))


def _gain_section(frame: pd.DataFrame) -> str:
    if not {"deconfoundlm", "odin"} <= set(frame.method):
        return "Not computed: this run has no deconfoundlm or no odin rows.\n"
    gain = relative_gain(frame)
    return ("ODIN at its best strength per scenario by mean objective over the reported seeds "
            "themselves (ground truth, selection and report on the same seeds: generous to "
            "ODIN; the old protocol, kept for comparison). gain = (deconfoundlm - odin) / |odin| of the seed means; "
            "paired diff = deconfoundlm - odin objective, paired by seed (mean ± se).\n\n"
            + outputs.markdown_table(gain_table(gain)) + "\n"
            + _gain_sentence(gain[gain.entanglement >= 0.6]))


def _gain_sentence(entangled: pd.DataFrame) -> str:
    if entangled.empty:
        return "No scenario with entanglement >= 0.6 in this grid.\n"
    g = entangled["gain_objective"]
    return (f"Under entangled confounding (entanglement >= 0.6; {len(g)} scenario(s)) we measure "
            f"deconfoundlm's objective at {100 * g.min():+.1f}% to {100 * g.max():+.1f}% of "
            f"odin's best (mean {100 * g.mean():+.1f}%); the paper reports over +16%. The "
            "objective's zero is tau's (a headline with no causal feature), so a percentage "
            "depends on that convention; the normalised objective is scale-free.\n")


def _notes(frame: pd.DataFrame, info: dict) -> str:
    per_world = ", ".join(f"{k}: {v:.0f}" for k, v in info["world_s"].items())
    sft = frame[frame.method == "sft"].groupby("p_marker").marker_rate.mean()
    posted = info.get("posted_marker_rate", {})
    rates = ", ".join(f"{100 * r:.1f}% at p_marker {p:g} (its training log's headlines: "
                      f"{100 * posted.get(f'{p:g}', np.nan):.1f}%)" for p, r in sft.items())
    return (
        "## Notes\n\n"
        "odin and invariant appear at every strength of their sweep (λ) in the tables; the "
        "protocol section chooses one per seed or per scenario. Tuning seeds' rows are in "
        "results.csv (split = tune) and in no table. At p_marker = 1 the Monday marker is collinear with Monday: its true effect is "
        "not identified from the log, and deconfoundlm (confounders unpenalised, text shrunk) "
        "attributes it to Monday, a limitation of the method, not of the estimate. Per-marker "
        "gaps, pair_acc and marker_rate are in results.csv. The SFT policy's own samples "
        f"carry a weekday marker {rates}: the fewer markers the pools hold, the less a "
        "reward's spurious gap can cost the objective.\n\n"
        f"Wall time {info['total_s']:.0f} s: SFT policies {info['sft_s']:.0f} s, "
        f"representations {info['representation_s']:.0f} s, candidate pools "
        f"{info['pool_s']:.0f} s, worlds (rewards and scoring, pools included) "
        f"{info['worlds_s']:.0f} s (entanglement/p_marker: {per_world}).\n")


# ---- plots ------------------------------------------------------------------------------------
def plot_metric(frame: pd.DataFrame, metric: str, path: pathlib.Path) -> None:
    """metric vs entanglement, one line per method (odin/invariant per λ), mean ± se error
    bars, one panel per p_marker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(frame.method))     # colours fixed across both plots
    lab = cr.labelled(frame[frame[metric].notna()])
    summ = summarise(lab, ["label", "method", "p_marker", "entanglement"], [metric])
    colour = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    styles = ("-", "--", ":", "-.")
    p_markers = sorted(summ.p_marker.unique())
    fig, axes = plt.subplots(1, len(p_markers), figsize=(5.5 * len(p_markers), 4.2), sharey=True,
                             squeeze=False)
    for ax, p in zip(axes[0], p_markers):
        seen: dict = {}
        for label, s in summ[summ.p_marker == p].groupby("label", sort=False):
            m = s.method.iloc[0]
            seen[m] = seen.get(m, -1) + 1
            s = s.sort_values("entanglement")
            ax.errorbar(s.entanglement + 0.006 * methods.index(m), s["mean"],
                        yerr=s["se"].fillna(0), label=label, color=colour[m],
                        ls=styles[seen[m] % len(styles)], marker="o", ms=3, capsize=2, lw=1.2)
        ax.set_title(f"p_marker = {p:g}")
        ax.set_xlabel("entanglement")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(metric)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(f"{metric} vs entanglement (mean ± se over seeds)")
    outputs.save_figure(path, fig)
