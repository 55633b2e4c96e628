"""The Upworthy comparison's report: results tables, the loss-vs-data-source table and its
paired contrasts, the summary text and the output files (dlm.experiments.upworthy).
"""
from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd

from dlm import outputs
from dlm.experiments.upworthy import CONTRASTS, LOSS_VS_DATA, UpworthyConfig, UpworthyResult

# the paper's Upworthy AUCs (Pythia-12B embeddings): experimental pairwise, observational CTR
PAPER = {"paper experimental 0.808": 0.808, "paper observational 0.727": 0.727}
_EXP, _REG = "experimental (randomised tests)", "CTR regression"
DATA_LOSS: dict[str, tuple[str, str]] = {          # method -> (data source, loss)
    "experimental": (_EXP, "pairwise Bradley-Terry"),
    "experimental_ctr": (_EXP, "CTR regression, within-test centred"),
    "naive": ("observational", _REG),
    "deconfoundlm": ("deconfounded observational", _REG)}

RESULT_COLUMNS = ["method", "representation", "auc", "auc_lo", "auc_hi", "n_pairs"]


def selection_lines(history: list[dict]) -> list[str]:
    """What validation picked per representation and method: the l2 of a linear model,
    or the step of the trunk's best checkpoint."""
    if not history:
        return []
    h = pd.DataFrame(history)
    lines = []
    for (rep, method), g in h.groupby(["representation", "method"], sort=False):
        best = g.loc[g["val_loss"].idxmin()] if g["val_loss"].notna().any() else g.iloc[-1]
        linear = pd.notna(best.get("l2", np.nan))     # linear rows carry l2, trunk rows step
        knob = f"l2 {best['l2']:g}" if linear else f"step {int(best['step'])}"
        lines.append(f"{rep}/{method}: {knob} (validation loss {best['val_loss']:.4f})")
    return ["- validation picked " + "; ".join(lines) + "."]


def loss_vs_data(results: pd.DataFrame) -> pd.DataFrame:
    """The four loss x data-source rows per representation (loss_vs_data.csv)."""
    rows = results[results["method"].isin(LOSS_VS_DATA)].copy()
    rows["data"] = [DATA_LOSS[m][0] for m in rows["method"]]
    rows["loss"] = [DATA_LOSS[m][1] for m in rows["method"]]
    rows["order"] = [LOSS_VS_DATA.index(m) for m in rows["method"]]
    rows = rows.sort_values(["representation", "order"], kind="stable")
    return rows[["representation", "data", "loss", "method", "auc", "auc_lo", "auc_hi",
                 "n_pairs"]].reset_index(drop=True)


def loss_vs_data_lines(results: pd.DataFrame, contrasts: pd.DataFrame, reps,
                       randomised: bool = True) -> list[str]:
    fmt = lambda a, lo, hi, sign="": f"{a:{sign}.3f} [{lo:{sign}.3f}, {hi:{sign}.3f}]"  # noqa: E731
    t = loss_vs_data(results)
    t["cell"] = [fmt(r.auc, r.auc_lo, r.auc_hi) for r in t.itertuples()]
    wide = t.pivot_table(index=["data", "loss", "method"], columns="representation",
                         values="cell", aggfunc="first", sort=False)
    wide = wide.reindex(columns=list(reps)).reset_index()
    wide = wide.iloc[np.argsort([LOSS_VS_DATA.index(m) for m in wide["method"]])]
    c = contrasts.assign(cell=[fmt(r.diff, r.lo, r.hi, "+") for r in contrasts.itertuples()])
    cw = c.pivot_table(index="contrast", columns="representation", values="cell",
                       aggfunc="first", sort=False).reindex(columns=list(reps))
    cw = cw.reindex([x[2] for x in CONTRASTS]).reset_index()
    cw.insert(1, "methods", [f"{a} - {b}" for a, b, _ in CONTRASTS])
    return ["\n## Loss vs data source\n",
            f"The same held-out significant pairs{' of randomised tests' if randomised else ''}, "
            "the same representation; "
            "only the training data and the loss change. ROC-AUC [95% CI]:\n",
            outputs.markdown_table(wide),
            "\nPaired AUC differences (same bootstrap resamples over tests) [95% CI]:\n",
            outputs.markdown_table(cw),
            "\nPaper (Pythia-12B embeddings): experimental pairwise 0.808, observational CTR "
            "regression 0.727."]


def left_out_line(d: dict, cfg: UpworthyConfig) -> str:
    lo = d["left_out"]
    if cfg.include_nonrandomised:
        return ("- non-randomised window (test_week 201325..201401) kept as experimental "
                "data (--include-nonrandomised).")
    tr, ev = lo["train"], lo["eval"]
    return (f"- non-randomised window (test_week 201325..201401): {tr['tests'] + ev['tests']:,} "
            f"tests ({lo['rows']:,} rows of --data) left out of every experimental use: "
            f"{tr['tests']:,} train/validation tests ({tr['arms']:,} headline arms, "
            f"{tr['pairs']:,} within-test training pairs) and {ev['tests']:,} evaluation tests "
            f"({ev['arms']:,} headline arms, {ev['pairs']:,} significant evaluation pairs); the "
            "observational log keeps them (--include-nonrandomised keeps them everywhere).")


def summary_text(results: pd.DataFrame, d: dict, cfg: UpworthyConfig, timings: dict,
                 wall_s: float, eval_source: str, history: list[dict] = (),
                 contrasts: pd.DataFrame | None = None) -> str:
    fmt = lambda r: f"{r.auc:.3f} [{r.auc_lo:.3f}, {r.auc_hi:.3f}]"  # noqa: E731
    wide = results.assign(cell=[fmt(r) for r in results.itertuples()]).pivot(
        index="method", columns="representation", values="cell")
    wide = wide.reindex(list(dict.fromkeys(results["method"])))[list(cfg.representations)]
    diff = results.assign(cell=[f"{r.vs_naive:+.3f} [{r.vs_lo:+.3f}, {r.vs_hi:+.3f}]"
                                for r in results.itertuples()]).pivot(
        index="method", columns="representation", values="cell")
    diff = diff.reindex(list(wide.index))[list(cfg.representations)]
    counts = np.bincount(d["test_of"], minlength=3)
    ev = d["eval_pairs"]
    g = np.asarray(d["fit_arms"].group)
    n_ctr_arms = int((np.bincount(g)[g] >= 2).sum()) if g.size else 0
    lines = [
        "# Upworthy: observational vs experimental vs deconfounded reward models\n",
        f"ROC-AUC on {len(ev):,} within-test pairs of different headlines whose CTRs differ at "
        f"p < {cfg.alpha} (two-proportion z-test), from {len(np.unique(ev.group)):,} "
        f"{'' if cfg.include_nonrandomised else 'randomised '}tests of {eval_source}; "
        f"[95% CI]: percentile bootstrap over tests ({cfg.n_boot} resamples).\n",
        outputs.markdown_table(wide.reset_index()),
        "\nDifference from naive (same bootstrap resamples, paired):\n",
        outputs.markdown_table(diff.reset_index()),
        *([] if contrasts is None else loss_vs_data_lines(
            results, contrasts, cfg.representations, not cfg.include_nonrandomised)),
        "",
        "## Data\n",
        f"- {d['log'].source}: {len(d['log']):,} arms in {counts.sum():,} tests; split by story "
        f"(seed {cfg.seed}): train {counts[0]:,}, validation {counts[1]:,}, "
        f"test {counts[2]:,} tests.",
        f"- observational training log: one random arm per train/validation test "
        f"({len(d['obs']):,} rows, {int(d['obs_val'].sum()):,} for validation).",
        f"- experimental training pairs: {len(d['train_pairs']):,} within-test pairs of different "
        f"headlines ({int(d['pair_val'].sum()):,} validation)"
        + ("" if cfg.train_pair_alpha >= 1 else f", p < {cfg.train_pair_alpha}") + "; "
        f"experimental CTR regression: the {n_ctr_arms:,} headline arms of those tests "
        "with 2+ headlines.",
        left_out_line(d, cfg),
        *[f"- {n}." for n in d["notes"]],
        *selection_lines(list(history)),
        "\n## Time\n",
        f"- wall time {wall_s:.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + ").",
    ]
    return "\n".join(lines) + "\n"


def write_outputs(out: pathlib.Path, r: UpworthyResult, cfg: UpworthyConfig, run_info: dict,
                  text: str) -> None:
    """Every output file of the run under `out` (run_info: preset, data, eval_data)."""
    from dlm.realdata import plots

    outputs.write_csv(out / "results.csv", r.results[RESULT_COLUMNS])
    outputs.write_csv(out / "loss_vs_data.csv", loss_vs_data(r.results))
    outputs.write_csv(out / "contrasts.csv", r.contrasts[["representation", "contrast", "a", "b",
                                                          "diff", "lo", "hi", "n_pairs"]])
    outputs.write_text(out / "summary.md", text)
    outputs.write_json(out / "config.json", {**run_info, "config": cfg})
    if r.history:
        (out / "metrics.jsonl").unlink(missing_ok=True)
        outputs.append_jsonl(out / "metrics.jsonl", r.history)
    plots.plot_auc(r.results, out / "auc.png", PAPER)
    log = r.data["log"]
    weeks = plots.week_effect_table({k: a.effects() for k, a in r.adjusted.items()},
                                    plots.weekly_raw_logit(log), log.confounders["week"].levels)
    outputs.write_csv(out / "week_effect.csv", weeks)
    plots.plot_week_effect(weeks, out / "week_effect.png")
