"""Bring your own log: deconfound any observational table from one command.

    python -m scripts.deconfound --data FILE --content COL [--context COL] [--group COL]
        (--successes COL --trials COL | --outcome COL) --confounder NAME:TYPE [...]
        [--derive [COL:]weekday,month] [--text-features ngram:256] --out DIR
        [--train-reward deconfoundlm [--reward-representation ngram-svd:64|phi|...]]
        [--finetune best-of-n|dpo|pg [--finetune-preset tiny|quick] [--sft-preset NAME]
         [--finetune-steps N] [--model NAME] [--finetune-set FIELD=VALUE ...]]
        [--preset map|svi|nuts] [--set seed=0 --set folds=5 --set share_threshold=0.95 ...]

TYPE is categorical, numeric or time (a year-week like 201446, an integer period, or a
date/datetime: modelled as a random walk, or a spline with --set time_basis=spline;
--time-unit week|day|month buckets dates). --derive adds weekday/month/year of a date
column as categorical confounders. Input: .csv, .csv.gz or .parquet.

The adjustment is dlm.api.fit: DeconfoundLM's g(C) fitted jointly with a text term
(--text-features: a dlm.representations spec, default ngram:256), cross-fitted by group,
subtracted from each unit's empirical logit (or real outcome). Every input is validated
first; a bad column, row or value stops the run with an error naming it, and nothing is
written. Outputs in DIR: adjusted.csv (input rows + g_hat, g_lo, g_hi, adjusted outcome,
fold), effects.csv (every confounder parameter: mean, sd, 90% interval), collinearity.csv,
phrases.csv and overlap.csv (diagnostics), srm.csv (grouped counts: the sample-ratio-
mismatch check per time period), report.md with PNG plots, config.json. The diagnostics
also warn when one confounder determines another (a weekday of a daily time confounder).

--train-reward METHOD trains a reward model with dlm.rewards (the replications' trainer):
deconfoundlm on the adjusted outcomes, or any other registered method by name, on a frozen
text representation; it is saved with Orbax in DIR/rewards/NAME/ (checkpoints/, reward.json),
with its scores of every distinct content in DIR/reward_scores.csv and the training curve
in DIR/metrics.jsonl. Trainer fields (steps, lr, ...) are set with --set as well.

--confounder P:endogenous --instrument Z (numeric columns): P is caused by the text too; it
is fitted by control function (dlm.causal.iv), its IV estimate with a bootstrap interval
(--iv-bootstrap N) and the first-stage F go to effects.csv and report.md (F < 10 warns).
--experimental-data PATH (grouped randomised arms, same columns) or --randomised-groups COL
(a 0/1 column of this log): the hybrid reward (dlm.rewards METHODS "hybrid": ridge on the
adjusted outcomes + ridge on the arms' within-test outcomes, the --text-features
representation, mixed with the weight w* cross-fitted over the arms' groups; api.hybrid_reward):
w*, Bias^2, Var_B and Var_U in hybrid.csv and report.md, its scores of every distinct
content (and those of its two parts) in hybrid_scores.csv.

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
import sys
import time
import warnings

import numpy as np

from dlm import api, cli, outputs
from dlm import finetune as ft
from dlm.causal.diagnostics import DiagnosticsConfig
from dlm.causal.fit import EstimatorConfig
from dlm.causal.iv import WeakInstrumentWarning
from dlm.data.log import CONFOUNDER_KINDS, LogValidationError
from dlm.data.tables import TIME_UNITS
from dlm.experiments.deconfound_report import (build_figures, build_report, confounder_series,
                                                finetune_section, hybrid_scores, hybrid_section,
                                                hybrid_table,
                                                iv_section, reward_section)
from dlm.representations import DEFAULT_TEXT_SPEC
import sims.featurise  # noqa: F401  (registers the "phi" text representation)

PRESETS = {
    "map": EstimatorConfig(),
    "svi": EstimatorConfig(method="svi"),
    "nuts": EstimatorConfig(method="nuts"),
}


TYPES = (*CONFOUNDER_KINDS, "endogenous")


def parse_confounders(items: list[str]) -> dict[str, str]:
    """["week:time", "weekday:categorical"] -> {"week": "time", ...}; clear errors.
    "pop:endogenous" is kept as such (a numeric confounder fitted by control function)."""
    out = {}
    for item in items:
        name, sep, kind = item.rpartition(":")
        if not sep or not name:
            raise SystemExit(f"--confounder expects NAME:TYPE (TYPE in {', '.join(TYPES)}), "
                             f"got {item!r}")
        if kind not in TYPES:
            raise SystemExit(f"--confounder {item!r}: unknown type {kind!r}; use one of "
                             f"{', '.join(TYPES)}")
        if name in out:
            raise SystemExit(f"--confounder {name!r} given twice")
        out[name] = kind
    if list(out.values()).count("endogenous") > 1:
        raise SystemExit("--confounder: at most one endogenous confounder (one instrument)")
    return out


def endogenous_of(confounders: dict[str, str]) -> str | None:
    return next((n for n, k in confounders.items() if k == "endogenous"), None)


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
                        help=f"TYPE in {', '.join(TYPES)}; repeatable (endogenous: numeric, "
                             "caused by the text too; needs --instrument)")
    parser.add_argument("--instrument", metavar="COL",
                        help="numeric column that moves the endogenous confounder and reaches "
                             "the outcome only through it (e.g. a randomised promotion slot)")
    parser.add_argument("--iv-bootstrap", type=int, default=100, metavar="N",
                        help="bootstrap replicates of the IV interval (default 100)")
    parser.add_argument("--derive", action="append", default=[], metavar="[COL:]PARTS",
                        help="calendar parts (weekday,month,year) of a date column as "
                             "categorical confounders; COL defaults to the time confounder")
    parser.add_argument("--time-unit", default="auto", choices=TIME_UNITS,
                        help="how time confounders are bucketed (default: auto)")
    parser.add_argument("--text-features", default=DEFAULT_TEXT_SPEC,
                        help=f"text representation of the estimator's text term (default "
                             f"{DEFAULT_TEXT_SPEC}; also ngram-svd:D, phi, none)")
    parser.add_argument("--train-reward", metavar="METHOD",
                        help="train and save a reward model (deconfoundlm: on the adjusted "
                             "outcomes; or naive, conditioned, partial_out, odin, invariant)")
    parser.add_argument("--reward-representation", default="ngram-svd:64",
                        help="frozen text representation of the reward: a dlm.representations "
                             "spec (default: ngram-svd:64; also ngram:D, phi, llm:NAME)")
    parser.add_argument("--experimental-data", type=pathlib.Path, metavar="PATH",
                        help="a grouped log of randomised arms (same columns: content, group, "
                             "successes, trials): fit the hybrid reward (deconfounded + "
                             "experimental, weight w*) with it")
    parser.add_argument("--randomised-groups", metavar="COL",
                        help="a 0/1 column marking this log's randomised groups: the hybrid "
                             "reward with them as its experimental arms")
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
    if args.experimental_data and args.randomised_groups:
        parser.error("give --experimental-data or --randomised-groups, not both")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} exists and is not a directory")


def experimental_sample(args, frame):
    """(experimental log or None, randomised mask or None) of --experimental-data /
    --randomised-groups, validated before any fit."""
    if args.experimental_data:
        if not args.group or args.successes is None:
            raise ValueError("--experimental-data needs --group (the randomised tests) and "
                             "--successes/--trials (each arm's sampling variance)")
        exp_frame = api.read_frame(args.experimental_data, text_columns=[args.content, args.group])
        if args.group not in exp_frame.columns:
            raise LogValidationError("the experimental file has no group column: its randomised "
                                     "groups (tests) are needed", source=str(args.experimental_data),
                                     column=args.group)
        exp = api.from_frame(exp_frame, content=args.content, group=args.group,
                             successes=args.successes, trials=args.trials,
                             source=str(args.experimental_data))
        from dlm.causal.hybrid import experimental_arms
        experimental_arms(exp)
        return exp, None
    if args.randomised_groups:
        col = args.randomised_groups
        if col not in frame.columns:
            raise LogValidationError("unknown column", source=str(args.data), column=col)
        values = frame[col]
        bad = ~values.isin([0, 1])
        if bad.any():
            row = int(np.flatnonzero(bad)[0]) + 1
            raise LogValidationError(f"must be 0 or 1 (randomised group), got {values[bad].iloc[0]!r}",
                                     source=str(args.data), row=row, column=col)
        return None, values.to_numpy() == 1
    return None, None


def run(args, cfg: EstimatorConfig, dcfg: DiagnosticsConfig, tcfg=None, ft_cfg=None):
    """Validate, fit, diagnose (and train a reward, fine-tune a policy against it); returns
    everything to write (nothing is written here)."""
    t0 = time.perf_counter()
    confounders = parse_confounders(args.confounder)
    endogenous = endogenous_of(confounders)
    if args.train_reward:
        api.check_reward_method(args.train_reward)
        api.check_reward_representation(args.reward_representation)
    text_cols = [c for c in (args.content, args.context, args.group) if c]
    frame = api.read_frame(args.data, text_columns=text_cols)
    api.check_instrument(frame, endogenous, args.instrument, source=str(args.data))
    kinds = {n: ("numeric" if k == "endogenous" else k) for n, k in confounders.items()}
    if args.instrument:
        kinds[args.instrument] = "numeric"
    log = api.from_frame(frame, content=args.content, context=args.context, group=args.group,
                         successes=args.successes, trials=args.trials, outcome=args.outcome,
                         confounders=kinds, derive=args.derive or None,
                         time_unit=args.time_unit, source=str(args.data))
    api.check_columns_free(frame, log)
    experiment, randomised = experimental_sample(args, frame)
    if ft_cfg is not None:
        ft.check_log(log, ft_cfg)
    with warnings.catch_warnings(record=True) as caught:   # the weak-instrument warning
        warnings.simplefilter("always", WeakInstrumentWarning)
        result = api.fit(log, text=args.text_features, cfg=cfg, endogenous=endogenous,
                         instrument=args.instrument, iv_bootstrap=args.iv_bootstrap)
    weak = [str(w.message) for w in caught if issubclass(w.category, WeakInstrumentWarning)]
    diag = api.diagnose(result, dcfg)
    hybrid = None
    if experiment is not None or randomised is not None:
        hybrid = api.hybrid_reward(result, experiment, randomised)
    series = {name: confounder_series(result, name) for name in result.log.confounders}
    rewards, history = [], []
    if args.train_reward:
        rewards = api.train(result, args.train_reward, args.reward_representation,
                            tcfg, seed=cfg.seed, history=history)
    tuned = None
    if ft_cfg is not None:         # a knob method's first strength (odin, invariant)
        tuned = ft.finetune(result, rewards[0], cfg=ft_cfg, quiet=True)
    seconds = time.perf_counter() - t0
    return dict(table=api.adjust(frame, result), result=result, diag=diag, series=series,
                rewards=rewards, history=history, finetune=tuned, seconds=seconds,
                weak=weak, hybrid=hybrid)


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
    if result.iv:
        text += "\n" + iv_section(result, args.instrument, out["weak"])
    if out["hybrid"] is not None:
        text += "\n" + hybrid_section(out["hybrid"].weight, args)
    figs = build_figures(result, diag, out["series"], dcfg)
    scores = api.score_contents(result, out["rewards"]) if out["rewards"] else None
    if scores is not None:
        text += "\n" + reward_section(scores, out["rewards"])
    if out["finetune"] is not None:
        text += "\n" + finetune_section(out["finetune"])
    config = {"data": args.data, "content": args.content, "context": args.context,
              "group": args.group, "successes": args.successes, "trials": args.trials,
              "outcome": args.outcome, "confounders": parse_confounders(args.confounder),
              "instrument": args.instrument, "iv_bootstrap": args.iv_bootstrap,
              "experimental_data": args.experimental_data,
              "randomised_groups": args.randomised_groups, "derive": args.derive, "time_unit": args.time_unit,
              "text_features": args.text_features, "preset": args.preset, "estimator": cfg,
              "diagnostics": dcfg, "rows": len(result.log), "seconds": out["seconds"],
              "train_reward": args.train_reward,
              "reward_representation": args.reward_representation,
              "trainer": tcfg if args.train_reward else None, "finetune": ft_cfg}
    d = args.out
    outputs.write_csv(d / "adjusted.csv", out["table"])
    outputs.write_csv(d / "effects.csv", result.effects())
    outputs.write_csv(d / "collinearity.csv", diag.collinearity)
    outputs.write_csv(d / "phrases.csv", diag.phrases)
    outputs.write_csv(d / "overlap.csv", diag.overlap)
    if out["hybrid"] is not None:
        outputs.write_csv(d / "hybrid.csv", hybrid_table(out["hybrid"].weight))
        outputs.write_csv(d / "hybrid_scores.csv", hybrid_scores(result, out["hybrid"]))
    if len(diag.srm):
        outputs.write_csv(d / "srm.csv", diag.srm)
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
    for w in [*out["weak"], *diag.warnings]:
        print(f"warning: {w}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
