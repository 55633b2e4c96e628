"""Bring your own log: deconfound any observational table from one command.

    python -m scripts.deconfound --data FILE --content COL [--context COL] [--group COL]
        (--successes COL --trials COL | --outcome COL) --confounder NAME:TYPE [...]
        [--derive [COL:]weekday,month] [--text-features ngram:256] --out DIR
        [--train-reward deconfoundlm [--reward-representation ngrams|phi]]
        [--preset map|svi|nuts] [--set seed=0 --set folds=5 --set share_threshold=0.95 ...]

TYPE is categorical, numeric or time (a year-week like 201446, an integer period, or a
date/datetime: modelled as a random walk, or a spline with --set time_basis=spline;
--time-unit week|day|month buckets dates). --derive adds weekday/month/year of a date
column as categorical confounders. Input: .csv, .csv.gz or .parquet.

The adjustment is dlm.api.fit: DeconfoundLM's g(C) fitted jointly with a text term
(--text-features, default dlm.data.text_features.DEFAULT_SPEC), cross-fitted by group,
subtracted from each unit's empirical logit (or real outcome). Every input is validated
first; a bad column, row or value stops the run with an error naming it, and nothing is
written. Outputs in DIR: adjusted.csv (input rows + g_hat, g_lo, g_hi, adjusted outcome,
fold), effects.csv (every confounder parameter: mean, sd, 90% interval), collinearity.csv,
phrases.csv and overlap.csv (diagnostics), report.md with PNG plots, config.json.

--train-reward METHOD trains a reward model with dlm.rewards (the replications' trainer):
deconfoundlm on the adjusted outcomes, or any other registered method by name, on a frozen
text representation; it is saved with Orbax in DIR/rewards/NAME/ (checkpoints/, reward.json),
with its scores of every distinct content in DIR/reward_scores.csv and the training curve
in DIR/metrics.jsonl. Trainer fields (steps, lr, ...) are set with --set as well.

--finetune best-of-n|dpo|pg (needs --context; trains the deconfoundlm reward unless
--train-reward names another) fine-tunes a headline writer against that reward with
dlm.finetune: SFT on the log's (context, content) stories (one per --group, else per
context; cached in $DLM_CACHE), then best-of-n, DPO or REINFORCE from dlm.policy, and
writes generations for held-out contexts from SFT and from the fine-tuned policy to
DIR/finetune/ (samples.csv, samples.md, summary.md with mean reward and KL to SFT,
metrics.jsonl, policy/checkpoints/). --finetune-preset tiny|quick, --sft-preset,
--finetune-steps, --model NAME and --finetune-set FIELD=VALUE (dlm.finetune.FinetuneConfig)
choose its settings.
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
import re
import sys
import time

import numpy as np

from dlm import api, cli, outputs
from dlm import finetune as ft
from dlm import report as rep
from dlm.causal.diagnostics import DiagnosticsConfig, level_codes
from dlm.causal.fit import EstimatorConfig
from dlm.data.log import CONFOUNDER_KINDS, LogValidationError
from dlm.data.tables import TIME_UNITS
from dlm.data.text_features import DEFAULT_SPEC

PRESETS = {
    "map": EstimatorConfig(),
    "svi": EstimatorConfig(method="svi"),
    "nuts": EstimatorConfig(method="nuts"),
}
TABLE_MAX_LEVELS = 24     # longer effect lists (weeks) are summarised in report.md


def parse_confounders(items: list[str]) -> dict[str, str]:
    """["week:time", "weekday:categorical"] -> {"week": "time", ...}; clear errors."""
    out = {}
    for item in items:
        name, sep, kind = item.rpartition(":")
        if not sep or not name:
            raise SystemExit(f"--confounder expects NAME:TYPE (TYPE in {', '.join(CONFOUNDER_KINDS)}), "
                             f"got {item!r}")
        if kind not in CONFOUNDER_KINDS:
            raise SystemExit(f"--confounder {item!r}: unknown type {kind!r}; use one of "
                             f"{', '.join(CONFOUNDER_KINDS)}")
        if name in out:
            raise SystemExit(f"--confounder {name!r} given twice")
        out[name] = kind
    return out


def resolve_configs(args):
    """The preset's EstimatorConfig, a DiagnosticsConfig and a TrainerConfig (reward), each
    --set FIELD=VALUE routed to the config that has the field."""
    from dlm.rewards import TrainerConfig

    configs = [PRESETS[args.preset], DiagnosticsConfig(), TrainerConfig()]
    fields = [{f.name for f in dataclasses.fields(c)} for c in configs]
    routed: list[list[str]] = [[], [], []]
    for item in args.overrides:
        name = item.split("=", 1)[0]
        where = [i for i, names in enumerate(fields) if name in names]
        if not where:
            raise SystemExit(f"--set: unknown field {name!r}; estimator fields: "
                             f"{', '.join(sorted(fields[0]))}; diagnostics fields: "
                             f"{', '.join(sorted(fields[1]))}; reward trainer fields: "
                             f"{', '.join(sorted(fields[2]))}")
        routed[where[0]].append(item)
    try:
        return tuple(cli.apply_overrides(c, r) for c, r in zip(configs, routed))
    except ValueError as err:
        raise SystemExit(f"--set: {err}") from None


# ---- per-confounder series for the plots ---------------------------------------------------
def confounder_series(result: api.Result, name: str) -> dict:
    """labels, estimated effect (mean, lo, hi), observed and adjusted mean outcome per level."""
    log, adj = result.log, result.adjusted
    conf = log.confounders[name]
    weights = log.trials if log.is_binomial else None
    eff = result.effects()
    eff = eff[eff.parameter == name]
    if conf.kind == "numeric":
        codes, labels = level_codes(conf, 10)
        x = rep.level_means(conf.values, codes, len(labels))
        slope = eff.iloc[0]
        dx = x - adj.fit.design.block(name).center
        mean = slope["mean"] * dx
        lo = np.minimum(slope["lo"] * dx, slope["hi"] * dx)
        hi = np.maximum(slope["lo"] * dx, slope["hi"] * dx)
    else:
        codes, labels = np.asarray(conf.values, np.int64), [str(v) for v in conf.levels]
        mean, lo, hi = (eff[c].to_numpy() for c in ("mean", "lo", "hi"))
    before = rep.level_means(log.logit_outcome(), codes, len(labels), weights)
    after = rep.level_means(adj.logit_adjusted, codes, len(labels), weights)
    raw = before
    if log.is_binomial:          # the level's pooled rate (e.g. weekly CTR), on the logit scale
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = rep.level_means(log.successes / log.trials, codes, len(labels), weights)
            raw = np.log(rate / (1 - rate))
    return dict(kind=conf.kind, labels=labels, mean=mean, lo=lo, hi=hi, before=before,
                after=after, raw=rep.centre_like(raw, mean))


def slug(name: str) -> str:
    """A confounder name as a safe file-name part."""
    return re.sub(r"[^\w.-]+", "_", name)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


# ---- report --------------------------------------------------------------------------------
def _effect_section(name: str, s: dict, scale: str, interval: float) -> str:
    lines = [f"### {name} ({s['kind']})", "", f"![effect of {name}](effect_{slug(name)}.png)", "",
             f"![outcome by {name}](adjusted_{slug(name)}.png)", ""]
    r = _corr(s["mean"], s["raw"])
    if np.isfinite(r):
        what = "rate (logit of summed successes / trials)" if scale == "logit" else "outcome"
        lines.append(f"Correlation of the estimated effect with the observed {what} per "
                     f"level: {r:+.2f}; the rest of the observed pattern is attributed to the "
                     "text and the other confounders.")
    spread = lambda v: float(np.nanmax(v) - np.nanmin(v))  # noqa: E731
    lines.append(f"Spread of the per-level mean outcome (max - min): observed "
                 f"{spread(s['before']):.3f}, adjusted {spread(s['after']):.3f}.")
    if s["kind"] == "numeric":
        lines.append("Effect per level is slope x (bin mean - centre); the slope is in effects.csv.")
    elif len(s["labels"]) <= TABLE_MAX_LEVELS:
        import pandas as pd

        t = pd.DataFrame({"level": s["labels"], "effect": s["mean"], f"lo ({interval:.0%})": s["lo"],
                          f"hi ({interval:.0%})": s["hi"], "observed mean": s["before"],
                          "adjusted mean": s["after"]})
        lines += ["", outputs.markdown_table(t)]
    else:
        i, j = int(np.argmin(s["mean"])), int(np.argmax(s["mean"]))
        lines.append(f"{len(s['labels'])} levels; lowest effect {s['mean'][i]:+.3f} at "
                     f"{s['labels'][i]}, highest {s['mean'][j]:+.3f} at {s['labels'][j]}; "
                     f"first to last level: {s['mean'][-1] - s['mean'][0]:+.3f}. All values in "
                     "effects.csv.")
    return "\n".join(lines) + "\n"


def _diagnostics_section(diag, dcfg: DiagnosticsConfig, cfg: EstimatorConfig,
                         groups: bool) -> str:
    import pandas as pd

    col, ovl, conv = diag.collinearity, diag.overlap, diag.convergence
    lines = ["## Diagnostics", "", "### Text features collinear with a confounder", "",
             f"Flag: >= {dcfg.share_threshold:.0%} of a feature's units (rows where it is non-zero, "
             f"at least {dcfg.min_units}) in one level, or |corr| >= {dcfg.corr_threshold}. Such a "
             "feature's effect goes to the confounder (the estimator's identifying assumption).", ""]
    top = col.head(max(10, int(col.flagged.sum()))) if len(col) else col
    lines += [outputs.markdown_table(top) if len(top) else "(no text term)", ""]
    phr = diag.phrases
    where = f">= {dcfg.min_units} rows" + (f" of >= {dcfg.phrase_min_groups} groups"
                                           if groups else "")
    lines += [f"Phrases of the text itself (word 1-2 grams in {where}) flagged by the same "
              f"rule: {len(phr)}" + (" (all in phrases.csv):" if len(phr) else "."), ""]
    if len(phr):
        lines += [outputs.markdown_table(phr.head(20)), ""]
    lines += ["### Overlap of content across confounder levels", "",
              f"Largest |standardised mean difference| of the top {dcfg.n_components} text "
              f"components, level vs rest (flag >= {dcfg.smd_threshold}); worst level of each:", ""]
    if len(ovl) and ovl.max_abs_smd.notna().any():
        worst = ovl.loc[ovl.dropna(subset=["max_abs_smd"]).groupby("confounder", sort=False)
                        .max_abs_smd.idxmax()]
        counts = ovl.groupby("confounder", sort=False).flagged.sum().rename("levels flagged")
        lines += [outputs.markdown_table(worst.merge(counts, on="confounder")), "",
                  "![overlap](overlap.png)", ""]
    else:
        lines += ["(no text term or no comparable levels)", ""]
    lines += ["### Convergence", ""]
    row = {k: v for k, v in conv.items() if k != "losses"}
    lines += [outputs.markdown_table(pd.DataFrame([row]), floatfmt=".3g"), ""]
    lines += _convergence_notes(conv, cfg, dcfg)
    return "\n".join(lines) + "\n"


def _convergence_notes(conv: dict, cfg: EstimatorConfig, dcfg: DiagnosticsConfig) -> list[str]:
    """What the convergence table means for this method, and the SVI loss curve."""
    state = "converged" if conv["newton_converged"] else "did NOT converge"
    lines = [f"Newton's method (the MAP every method starts from) {state} in "
             f"{conv['newton_iterations']} iterations; grad_max {conv['grad_max']:.2g} is the "
             "largest |gradient| of the log posterior at the MAP (internal parametrisation; ~0 "
             "at the optimum).", ""]
    if conv.get("losses") is not None:
        lines += [f"SVI ({len(conv['losses'])} steps from the MAP): the loss (-ELBO) per step; "
                  f"final {conv['final_loss']:.6g}, relative change over the last tenth "
                  f"{conv['loss_tail_change']:.1e} (a warning is raised above 1e-3).", "",
                  "![SVI loss](svi_loss.png)", ""]
    if cfg.method == "nuts" and "rhat_max" in conv:
        lines += [f"NUTS ({cfg.nuts_samples} draws after {cfg.nuts_warmup} warm-up, one chain): "
                  f"largest split R-hat {conv['rhat_max']:.3f} ({conv['rhat_flagged']} "
                  f"parameter(s) above {dcfg.rhat_threshold}), smallest effective sample size "
                  f"{conv['ess_min']:.0f}.", ""]
    return lines


def build_report(args, result: api.Result, diag, series: dict, cfg: EstimatorConfig,
                 dcfg: DiagnosticsConfig, seconds: float) -> str:
    log = result.log
    scale = "logit" if log.is_binomial else "outcome"
    outcome = (f"{args.successes} / {args.trials} (binomial; logit scale)" if log.is_binomial
               else f"{args.outcome} (real)")
    n_groups = "none" if log.group is None else f"{args.group} ({len(np.unique(log.group)):,} groups)"
    conf = ", ".join(f"{n} ({c.kind}{'' if c.levels is None else f', {c.n_levels} levels'})"
                     for n, c in log.confounders.items())
    head = [f"# Deconfounded log: {args.data.name}", "",
            f"- rows: {len(log):,}; content: {args.content}; outcome: {outcome}; groups: {n_groups}",
            f"- confounders: {conf}",
            f"- text term: {result.text_spec} ({len(result.feature_names)} features); estimator: "
            f"{cfg.method}, {cfg.covariance} covariance, {cfg.folds}-fold cross-fit by group, "
            f"seed {cfg.seed}; wall time {seconds:.1f} s", "",
            "## Warnings", ""]
    head += [f"- {w}" for w in diag.warnings] or ["- none: no collinear text feature, no poor "
                                                   "overlap, the fit converged"]
    head += ["", "## Confounder effects", "",
             f"Centred effects ({scale} scale) with {cfg.interval:.0%} intervals from the full-data "
             "fit; the orange series is the observed outcome per level (for counts the pooled "
             "rate's logit), centred alike. "
             "adjusted.csv uses the cross-fitted g_hat.", ""]
    body = [_effect_section(n, s, scale, cfg.interval) for n, s in series.items()]
    tail = ["## Outcome before and after adjustment", "", "![distribution](distribution.png)", ""]
    return "\n".join(head + body + tail) + "\n" + _diagnostics_section(
        diag, dcfg, cfg, log.group is not None)


def build_figures(result: api.Result, diag, series: dict, dcfg: DiagnosticsConfig) -> dict:
    """Every figure of the report, keyed by file name (saved only at the end)."""
    scale = "logit" if result.log.is_binomial else "outcome"
    figs = {}
    for name, s in series.items():
        raw_label = ("observed rate per level (logit, centred)" if scale == "logit"
                     else "observed mean per level (centred)")
        figs[f"effect_{slug(name)}.png"] = rep.effect_figure(
            name, s["kind"], s["labels"], s["mean"], s["lo"], s["hi"], s["raw"], raw_label,
            result.cfg.interval, scale)
        figs[f"adjusted_{slug(name)}.png"] = rep.before_after_figure(
            name, s["kind"], s["labels"], s["before"], s["after"], scale)
    figs["distribution.png"] = rep.distribution_figure(result.log.logit_outcome(),
                                                       result.adjusted.logit_adjusted, scale)
    if len(diag.overlap):
        figs["overlap.png"] = rep.overlap_figure(diag.overlap, dcfg.smd_threshold)
    if diag.convergence.get("losses") is not None:
        figs["svi_loss.png"] = rep.loss_figure(diag.convergence["losses"])
    return figs


# ---- main ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    cli.add_common_args(parser, PRESETS, default_preset="map", model_field="model")
    parser.add_argument("--data", type=pathlib.Path, required=True, help=".csv, .csv.gz or .parquet")
    parser.add_argument("--content", required=True, help="text column whose effect is wanted")
    parser.add_argument("--context", help="text column it was written for (carried along)")
    parser.add_argument("--group", help="units randomised together (kept in one fold)")
    parser.add_argument("--successes", help="success counts (with --trials)")
    parser.add_argument("--trials", help="trial counts (with --successes)")
    parser.add_argument("--outcome", help="a real-valued outcome (instead of counts)")
    parser.add_argument("--confounder", action="append", default=[], metavar="NAME:TYPE",
                        help=f"TYPE in {', '.join(CONFOUNDER_KINDS)}; repeatable")
    parser.add_argument("--derive", action="append", default=[], metavar="[COL:]PARTS",
                        help="calendar parts (weekday,month,year) of a date column as "
                             "categorical confounders; COL defaults to the time confounder")
    parser.add_argument("--time-unit", default="auto", choices=TIME_UNITS,
                        help="how time confounders are bucketed (default: auto)")
    parser.add_argument("--text-features", default=DEFAULT_SPEC,
                        help=f"text representation of the estimator's text term (default "
                             f"{DEFAULT_SPEC}; also phi, none)")
    parser.add_argument("--train-reward", metavar="METHOD",
                        help="train and save a reward model (deconfoundlm: on the adjusted "
                             "outcomes; or naive, conditioned, partial_out, odin, invariant)")
    parser.add_argument("--reward-representation", default="ngrams",
                        choices=api.REWARD_REPRESENTATIONS,
                        help="frozen text representation of the reward (default: ngrams)")
    parser.add_argument("--reward-dim", type=int, default=64,
                        help="width of the n-gram SVD representation (default: 64)")
    add_finetune_args(parser)
    return parser


def add_finetune_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--finetune", choices=ft.KINDS,
                        help="fine-tune a policy against the reward (needs --context)")
    parser.add_argument("--finetune-preset", choices=sorted(ft.PRESETS), default="quick",
                        help="fine-tuning settings (default: quick; tiny to try it)")
    parser.add_argument("--sft-preset", help="SFT preset of the policy (dlm.policy.sft.PRESETS; "
                                             "default: the finetune preset's)")
    parser.add_argument("--finetune-steps", type=int, help="DPO / pg updates")
    parser.add_argument("--finetune-set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a dlm.finetune.FinetuneConfig field; repeatable")


def finetune_config(args, parser) -> ft.FinetuneConfig | None:
    """The FinetuneConfig of --finetune (None without it); every problem is a usage error
    before anything is read or fitted."""
    extra = [f for f, v in (("--sft-preset", args.sft_preset), ("--model", args.model),
                            ("--finetune-steps", args.finetune_steps),
                            ("--finetune-set", args.finetune_set)) if v]
    if not args.finetune:
        if extra:
            parser.error(f"{extra[0]} needs --finetune best-of-n|dpo|pg")
        return None
    if not args.context:
        parser.error("--finetune needs --context COL: the column holding the prompt each "
                     "content was written for (the policy learns context -> content and "
                     "writes for held-out contexts)")
    fields = {k: v for k, v in (("kind", args.finetune), ("sft_preset", args.sft_preset),
                                ("model", args.model), ("steps", args.finetune_steps)) if v}
    try:
        return ft.resolve_config(args.finetune_preset, args.finetune_set, **fields)
    except (ValueError, SystemExit) as err:
        parser.error(f"--finetune: {err}")


def _check_args(args, parser) -> None:
    if (args.successes is None) != (args.trials is None):
        parser.error("give both --successes and --trials, or --outcome")
    if (args.successes is None) == (args.outcome is None):
        parser.error("give either --successes and --trials, or --outcome")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} exists and is not a directory")


def run(args, cfg: EstimatorConfig, dcfg: DiagnosticsConfig, tcfg=None, ft_cfg=None):
    """Validate, fit, diagnose (and train a reward, fine-tune a policy against it); returns
    everything to write (nothing is written here)."""
    t0 = time.perf_counter()
    confounders = parse_confounders(args.confounder)
    if args.train_reward:
        api.check_reward_method(args.train_reward)
    text_cols = [c for c in (args.content, args.context, args.group) if c]
    frame = api.read_frame(args.data, text_columns=text_cols)
    log = api.from_frame(frame, content=args.content, context=args.context, group=args.group,
                         successes=args.successes, trials=args.trials, outcome=args.outcome,
                         confounders=confounders, derive=args.derive or None,
                         time_unit=args.time_unit, source=str(args.data))
    api.check_columns_free(frame, log)
    if ft_cfg is not None:
        ft.check_log(log, ft_cfg)
    result = api.fit(log, text=args.text_features, cfg=cfg)
    diag = api.diagnose(result, dcfg)
    series = {name: confounder_series(result, name) for name in log.confounders}
    rewards, history = [], []
    if args.train_reward:
        rewards = api.train(result, args.train_reward, args.reward_representation,
                            args.reward_dim, tcfg, seed=cfg.seed, history=history)
    tuned = None
    if ft_cfg is not None:         # a knob method's first strength (odin, invariant)
        tuned = ft.finetune(result, rewards[0], cfg=ft_cfg, quiet=True)
    seconds = time.perf_counter() - t0
    return dict(table=api.adjust(frame, result), result=result, diag=diag, series=series,
                rewards=rewards, history=history, finetune=tuned, seconds=seconds)


def finetune_section(tuned: ft.FinetuneResult) -> str:
    """report.md's summary of DIR/finetune/."""
    s = tuned.summary.set_index("policy")
    diff = s.loc[tuned.cfg.kind, "mean_reward"] - s.loc["sft", "mean_reward"]
    return "\n".join([
        "## Fine-tuned policy", "",
        f"{tuned.cfg.kind} against the {tuned.info['reward']} reward, from an SFT policy "
        f"(preset `{tuned.cfg.sft_preset}`, model {tuned.sft_cfg.model}) on this log's "
        f"{tuned.info['n_stories']} stories; generations for "
        f"{tuned.info['n_heldout_contexts_used']} held-out contexts:", "",
        outputs.markdown_table(tuned.summary[["policy", "n", "mean_reward", "se_reward",
                                              "kl_to_sft", "marker_rate"]], floatfmt=".4g"),
        f"Mean reward {tuned.cfg.kind} - SFT: {diff:+.4f}. Details, samples and the policy's "
        "parameters: finetune/ (summary.md, samples.md, samples.csv, policy/checkpoints/).", ""])


def reward_section(scores, rewards) -> str:
    lines = ["## Reward model", "", "| reward | saved in | corr(score, mean adjusted outcome) |",
             "|---|---|---|"]
    for r in rewards:
        name = api.reward_name(r)
        corr = _corr(scores[f"score_{name}"].to_numpy(), scores.mean_adjusted.to_numpy())
        lines.append(f"| {name} | rewards/{name}/ | {corr:+.3f} |")
    return "\n".join(lines) + "\n\nScores of every distinct content: reward_scores.csv; " \
        "training curve: metrics.jsonl.\n"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(args, parser)
    ft_cfg = finetune_config(args, parser)
    if ft_cfg is not None and not args.train_reward:
        args.train_reward = "deconfoundlm"
    cfg, dcfg, tcfg = resolve_configs(args)
    try:
        out = run(args, cfg, dcfg, tcfg, ft_cfg)
    except (LogValidationError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result, diag = out["result"], out["diag"]
    text = build_report(args, result, diag, out["series"], cfg, dcfg, out["seconds"])
    figs = build_figures(result, diag, out["series"], dcfg)
    scores = api.score_contents(result, out["rewards"]) if out["rewards"] else None
    if scores is not None:
        text += "\n" + reward_section(scores, out["rewards"])
    if out["finetune"] is not None:
        text += "\n" + finetune_section(out["finetune"])
    config = {"data": args.data, "content": args.content, "context": args.context,
              "group": args.group, "successes": args.successes, "trials": args.trials,
              "outcome": args.outcome, "confounders": parse_confounders(args.confounder),
              "derive": args.derive, "time_unit": args.time_unit,
              "text_features": args.text_features, "preset": args.preset, "estimator": cfg,
              "diagnostics": dcfg, "rows": len(result.log), "seconds": out["seconds"],
              "train_reward": args.train_reward,
              "reward_representation": args.reward_representation, "reward_dim": args.reward_dim,
              "trainer": tcfg if args.train_reward else None, "finetune": ft_cfg}
    d = args.out
    outputs.write_csv(d / "adjusted.csv", out["table"])
    outputs.write_csv(d / "effects.csv", result.effects())
    outputs.write_csv(d / "collinearity.csv", diag.collinearity)
    outputs.write_csv(d / "phrases.csv", diag.phrases)
    outputs.write_csv(d / "overlap.csv", diag.overlap)
    for name, fig in figs.items():
        outputs.save_figure(d / name, fig)
    for r in out["rewards"]:
        api.save_reward(r, d / "rewards" / api.reward_name(r))
    if scores is not None:
        outputs.write_csv(d / "reward_scores.csv", scores)
        outputs.append_jsonl(d / "metrics.jsonl", out["history"])
    if out["finetune"] is not None:
        out["finetune"].save(d / "finetune")
    outputs.write_text(d / "report.md", text)
    outputs.write_json(d / "config.json", config)
    print(f"wrote {d}/adjusted.csv, effects.csv, report.md ({len(result.log):,} rows, "
          f"{out['seconds']:.1f} s)")
    if out["finetune"] is not None:
        print(f"wrote {d}/finetune/ (summary.md, samples.csv): {out['finetune'].cfg.kind} vs SFT")
    for w in diag.warnings:
        print(f"warning: {w}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
