"""Real data: observational vs experimental vs deconfounded reward models (Upworthy archive).

    python -m scripts.upworthy --data PATH [--eval-data PATH] --out DIR
                               [--preset tiny|quick|full] [--representations ngram,trunk]
                               [--model smollm2-135m] [--include-nonrandomised]
                               [--set FIELD=VALUE ...]

The tests of --data are split by story (tests sharing a lede or headline stay together)
into train / validation / test. Six reward models are trained on each text
representation (hashed n-gram linear model; the from-scratch byte-level reward trunk;
optionally frozen SmolLM2 states, "smollm2-135m"):
  experimental      Bradley-Terry on within-test headline pairs of the training tests
  experimental_ctr  regress the within-test centred logit CTR of the training tests' arms
  naive             one random arm per test, regress its logit CTR
  conditioned       the same with the week as an input (a fixed reference week at use)
  partial_out       logit CTR residualised on the week alone (cross-fitted)
  deconfoundlm      logit CTR minus g(week) fitted jointly with a text term (cross-fitted)
and scored by ROC-AUC on the held-out within-test pairs of different headlines whose CTRs
differ at the 5% level, with 95% bootstrap CIs over tests. Four of them separate the loss
from the data source: experimental pairwise / experimental CTR regression / observational
CTR regression / deconfounded CTR regression, with paired AUC differences.
Tests run in the archive's likely non-randomised window (test_week 201325..201401,
dlm.data.upworthy.NONRANDOMISED_WEEKS) are left out of every experimental use (training
pairs and arms, evaluation pairs) unless --include-nonrandomised; the observational log
keeps them. --eval-data evaluates on another file of the same format instead (no test
split is then held out of --data).
Writes results.csv (method, representation, auc, auc_lo, auc_hi, n_pairs), loss_vs_data.csv,
contrasts.csv, summary.md, auc.png, week_effect.png (+ week_effect.csv: raw weekly mean
CTR and the estimated centred week effects with 90% intervals), config.json, metrics.jsonl.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import sys
import time

# The estimator's Newton steps are many small Cholesky factorisations; on a 2-core machine
# OpenBLAS's worker threads busy-wait against XLA's and make one cross-fit ~50x slower
# (0.14 s vs 8 s measured on a 90-row log). Only effective before numpy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from dlm import cli, outputs  # noqa: E402
from dlm.data.log import LogValidationError  # noqa: E402

REPRESENTATIONS = ("ngram", "trunk", "smollm2-135m")
# the paper's Upworthy AUCs (Pythia-12B embeddings): experimental pairwise, observational CTR
PAPER = {"paper experimental 0.808": 0.808, "paper observational 0.727": 0.727}
LOSS_VS_DATA = ("experimental", "experimental_ctr", "naive", "deconfoundlm")
CONTRASTS = (("experimental", "experimental_ctr", "loss: pairwise - regression (experimental data)"),
             ("experimental_ctr", "naive", "data: experimental - observational (regression)"),
             ("deconfoundlm", "naive", "deconfounded - observational (regression)"),
             ("experimental_ctr", "deconfoundlm", "experimental - deconfounded (regression)"))


@dataclasses.dataclass(frozen=True)
class UpworthyConfig:
    seed: int = 0
    split: tuple[float, ...] = (0.7, 0.1, 0.2)     # train / val / test shares of the tests
    alpha: float = 0.05                             # evaluation pairs differ at this level
    train_pair_alpha: float = 1.0                   # experimental training pairs (1: all)
    representations: tuple[str, ...] = ("ngram", "trunk")
    model: str = ""                                 # a pretrained LLM whose frozen states join them
    n_boot: int = 1000
    ngram_features: int = 2 ** 14
    l2_grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
    trunk_d_model: int = 32
    trunk_layers: int = 2
    trunk_heads: int = 4
    trunk_d_ff: int = 96
    trunk_max_len: int = 104                        # bytes incl. BOS/EOS (99% of headlines fit)
    trunk_steps: int = 400
    trunk_batch: int = 64                           # sequences per step (pairs: half as many)
    trunk_lr: float = 2e-3
    trunk_eval_every: int = 80
    llm_batch: int = 64
    include_nonrandomised: bool = False             # keep the window's tests as experiments


PRESETS = {
    "tiny": UpworthyConfig(n_boot=50, ngram_features=512, l2_grid=(1e-3,), trunk_d_model=16,
                           trunk_d_ff=32, trunk_max_len=48, trunk_steps=4, trunk_batch=8,
                           trunk_eval_every=2),
    "quick": UpworthyConfig(),
    "full": UpworthyConfig(n_boot=2000, trunk_d_model=256, trunk_layers=4, trunk_d_ff=768,
                           trunk_max_len=128, trunk_steps=4000, trunk_batch=128,
                           trunk_lr=1e-3, trunk_eval_every=250),
}


# ---- data ----------------------------------------------------------------------------------------
def load_inputs(data: pathlib.Path, eval_data: pathlib.Path | None):
    """Both files through the loader's validation, before anything is trained."""
    from dlm.data.upworthy import load_upworthy

    return load_upworthy(data), (None if eval_data is None else load_upworthy(eval_data))


def _overlapping_tests(eval_arms, train_log) -> np.ndarray:
    """[G_eval] bool: eval tests that share a test id, headline or lede with the training
    file (the same story on both sides would leak)."""
    from dlm.realdata.pairs import norm_text

    texts = lambda log: [log.content] + ([] if log.context is None else [log.context])  # noqa: E731
    seen = set().union(*(set(norm_text(t)) for t in texts(train_log))) - {""}
    ids = set(train_log.group_labels or ())
    bad = np.zeros(len(eval_arms.group_labels), bool)
    for cols in map(norm_text, texts(eval_arms)):
        hit = np.array([c in seen for c in cols])
        bad[np.asarray(eval_arms.group)[hit]] = True
    bad |= np.array([g in ids for g in eval_arms.group_labels])
    return bad


def _window_tests(cfg: UpworthyConfig, log) -> np.ndarray:
    """[G] bool: tests left out of experimental use (none with include_nonrandomised)."""
    from dlm.realdata import pairs as P

    if cfg.include_nonrandomised:
        return np.zeros(int(np.max(log.group)) + 1, bool)
    return P.nonrandomised_tests(log)


def _left_out(arms, tests_G, alpha) -> dict:
    """Tests, headline arms and within-test pairs (at `alpha`) of the selected tests."""
    from dlm.realdata import pairs as P

    sub = arms.take(P.rows_of_tests(arms, tests_G))
    return {"tests": int(np.unique(sub.group).size), "arms": len(sub),
            "pairs": len(P.within_test_pairs(sub, alpha=alpha)) if len(sub) else 0}


def prepare(cfg: UpworthyConfig, log, eval_log=None) -> dict:
    """Split, pairs and the observational log; errors here come before any training.

    Experimental data (training pairs and arms, evaluation pairs) come from randomised
    tests only: the non-randomised window's tests are left out (counted in "left_out")
    unless cfg.include_nonrandomised. The observational log keeps every test."""
    from dlm.realdata import pairs as P

    split = cfg.split if eval_log is None else (cfg.split[0] + cfg.split[2], cfg.split[1], 0.0)
    test_of = P.split_tests(log, split, cfg.seed)               # [G] 0 train, 1 val, 2 test
    arms = P.headline_arms(log)
    window = _window_tests(cfg, log)
    train_alpha = None if cfg.train_pair_alpha >= 1 else cfg.train_pair_alpha
    notes = []
    if eval_log is None:
        eval_arms, eval_window = arms, window & (test_of == 2)
        keep_eval = (test_of == 2) & ~window
    else:
        eval_arms = P.headline_arms(eval_log)
        bad = _overlapping_tests(eval_arms, log)
        if bad.any():
            notes.append(f"{int(bad.sum())} of {bad.size} evaluation tests share a test id, "
                         "headline or lede with --data and were left out")
        eval_window = _window_tests(cfg, eval_log) & ~bad
        keep_eval = ~bad & ~eval_window
    left_out = {"train": _left_out(arms, window & (test_of < 2), train_alpha),
                "eval": _left_out(eval_arms, eval_window, cfg.alpha),
                "rows": int(window[np.asarray(log.group)].sum())}
    eval_arms = eval_arms.take(P.rows_of_tests(eval_arms, keep_eval))
    eval_pairs = P.within_test_pairs(eval_arms, alpha=cfg.alpha)
    if len(eval_pairs) == 0:
        where = eval_log.source if eval_log is not None else f"the test split of {log.source}"
        raise SystemExit(f"{where}: no within-test pairs of different headlines differ at "
                         f"alpha={cfg.alpha}; nothing to evaluate on")
    fit_rows = P.rows_of_tests(log, test_of < 2)                # observational: every test
    obs = log.take(fit_rows[P.one_arm_per_test(log.take(fit_rows), cfg.seed)])
    fit_arms = arms.take(P.rows_of_tests(arms, (test_of < 2) & ~window))
    arm_val = test_of[np.asarray(fit_arms.group)] == 1
    train_pairs = P.within_test_pairs(fit_arms, alpha=train_alpha)
    return dict(log=log, test_of=test_of, obs=obs, obs_val=test_of[obs.group] == 1,
                fit_arms=fit_arms, arm_val=arm_val, train_pairs=train_pairs,
                pair_val=arm_val[train_pairs.win], eval_arms=eval_arms, eval_pairs=eval_pairs,
                left_out=left_out, notes=notes)


# ---- models --------------------------------------------------------------------------------
def make_backend(rep: str, cfg: UpworthyConfig, history: list, progress: bool):
    from dlm.realdata import rewards as R

    if rep == "ngram":
        return R.LinearBackend(R.ngram_featuriser(cfg.ngram_features), cfg.l2_grid, history, rep)
    if rep == "trunk":
        tc = R.TrunkConfig(d_model=cfg.trunk_d_model, n_layers=cfg.trunk_layers,
                           n_heads=cfg.trunk_heads, n_kv_heads=max(1, cfg.trunk_heads // 2),
                           d_ff=cfg.trunk_d_ff, max_len=cfg.trunk_max_len,
                           steps=cfg.trunk_steps, batch_size=cfg.trunk_batch, lr=cfg.trunk_lr,
                           eval_every=cfg.trunk_eval_every, seed=cfg.seed)
        return R.TrunkBackend(tc, history, progress, rep)
    return R.LinearBackend(R.llm_featuriser(rep, cfg.llm_batch), cfg.l2_grid, history, rep)


def check_representations(reps) -> None:
    unknown = [r for r in reps if r not in REPRESENTATIONS]
    if unknown:
        raise SystemExit(f"unknown representations {unknown}; known: {', '.join(REPRESENTATIONS)}")
    if "smollm2-135m" in reps:
        from dlm.models.pretrained import is_available

        if not is_available("smollm2-135m"):
            raise SystemExit("representation smollm2-135m: the model is not installed "
                             "(see dlm/models/pretrained.py for the pip command)")


def run(cfg: UpworthyConfig, log, eval_log=None, progress: bool = False):
    """-> (results frame with paired vs-naive columns, paired contrasts frame, prepared
    data, adjustments, history, timings)."""
    from dlm.realdata import pairs as P
    from dlm.realdata import rewards as R

    check_representations(cfg.representations)
    d = prepare(cfg, log, eval_log)
    t0 = time.perf_counter()
    adjusted = R.adjusted_outcomes(d["obs"], cfg.seed)
    timings = {"adjustment": time.perf_counter() - t0}
    data = R.RewardData.build(d["obs"], d["obs_val"], adjusted, d["fit_arms"], d["arm_val"],
                              d["train_pairs"])
    ev, arms = d["eval_pairs"], d["eval_arms"]
    uniq, inv = np.unique(np.asarray(arms.content).astype(str), return_inverse=True)
    history, tables, contrasts = [], [], []
    for rep in cfg.representations:
        t0 = time.perf_counter()
        scorers = R.fit_rewards(data, make_backend(rep, cfg, history, progress))
        diffs = {}
        for method, score in scorers.items():
            s = np.asarray(score(list(uniq)))[inv]
            diffs[method] = s[ev.win] - s[ev.lose]
        table = P.auc_table(diffs, ev.group, "naive", cfg.n_boot, seed=cfg.seed)
        tables.append(table.assign(representation=rep))
        con = P.auc_contrasts(diffs, ev.group, [c[:2] for c in CONTRASTS], cfg.n_boot,
                              seed=cfg.seed)      # same seed: the same resamples as the table
        contrasts.append(con.assign(contrast=[c[2] for c in CONTRASTS], representation=rep))
        timings[rep] = time.perf_counter() - t0
    results = pd.concat(tables, ignore_index=True)
    return results, pd.concat(contrasts, ignore_index=True), d, adjusted, history, timings


# ---- reporting -----------------------------------------------------------------------------
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
    from dlm.realdata.rewards import DATA_LOSS

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


def write_outputs(out: pathlib.Path, results, contrasts, d, adjusted, history, cfg, args,
                  text) -> None:
    from dlm.realdata import plots

    outputs.write_csv(out / "results.csv", results[RESULT_COLUMNS])
    outputs.write_csv(out / "loss_vs_data.csv", loss_vs_data(results))
    outputs.write_csv(out / "contrasts.csv", contrasts[["representation", "contrast", "a", "b",
                                                        "diff", "lo", "hi", "n_pairs"]])
    outputs.write_text(out / "summary.md", text)
    outputs.write_json(out / "config.json", {"preset": args.preset, "data": args.data,
                                             "eval_data": args.eval_data, "config": cfg})
    if history:
        (out / "metrics.jsonl").unlink(missing_ok=True)
        outputs.append_jsonl(out / "metrics.jsonl", history)
    plots.plot_auc(results, out / "auc.png", PAPER)
    weeks = plots.week_effect_table({k: a.effects() for k, a in adjusted.items()},
                                    plots.weekly_raw_logit(d["log"]),
                                    d["log"].confounders["week"].levels)
    outputs.write_csv(out / "week_effect.csv", weeks)
    plots.plot_week_effect(weeks, out / "week_effect.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    cli.add_common_args(parser, PRESETS, model_field="model")
    parser.add_argument("--data", type=pathlib.Path, default=None,
                        help="Upworthy archive CSV(.gz)/parquet to train on (required)")
    parser.add_argument("--eval-data", type=pathlib.Path, default=None,
                        help="evaluate on this file (same format) instead of the test split")
    parser.add_argument("--include-nonrandomised", action="store_true",
                        help="keep the tests of the likely non-randomised window (test_week "
                             "201325..201401) as experimental data (default: left out)")
    parser.add_argument("--representations", default=None,
                        help=f"comma list from {', '.join(REPRESENTATIONS)} "
                             "(default: the preset's)")
    args = parser.parse_args(argv)
    if args.data is None:
        parser.error("--data PATH is required: this script compares reward models on the real "
                     "Upworthy archive (see README, Data, for where to get it)")
    cfg = cli.resolve_config(args, PRESETS)
    if args.include_nonrandomised:
        cfg = dataclasses.replace(cfg, include_nonrandomised=True)
    if args.representations:
        cfg = dataclasses.replace(cfg, representations=tuple(
            r.strip() for r in args.representations.split(",") if r.strip()))
    if cfg.model and cfg.model not in cfg.representations:   # --model smollm2-135m
        cfg = dataclasses.replace(cfg, representations=cfg.representations + (cfg.model,))
    check_representations(cfg.representations)
    t0 = time.perf_counter()
    try:
        log, eval_log = load_inputs(args.data, args.eval_data)
    except LogValidationError as err:               # bad input: one clear line, no traceback
        raise SystemExit(f"error: {err}") from None
    results, contrasts, d, adjusted, history, timings = run(cfg, log, eval_log,
                                                            progress=sys.stderr.isatty())
    wall = time.perf_counter() - t0
    source = f"the test split of {args.data}" if eval_log is None else str(args.eval_data)
    text = summary_text(results, d, cfg, timings, wall, source, history, contrasts)
    write_outputs(args.out, results, contrasts, d, adjusted, history, cfg, args, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
