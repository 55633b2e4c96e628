"""Real data: observational vs experimental vs deconfounded reward models (Upworthy archive).

    python -m scripts.upworthy --data PATH [--eval-data PATH] --out DIR
                               [--preset tiny|quick|full] [--representations ngram,trunk]
                               [--model smollm2-135m] [--include-nonrandomised]
                               [--reg-sweep | --efficiency [--efficiency-seeds 5]]
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
The pipeline is dlm.experiments.upworthy (run) and dlm.experiments.upworthy_report.
--reg-sweep instead sweeps the reward head's l2 strength (1e-4 .. 1e3) of naive and
deconfoundlm on each frozen representation (the paper's figure 5b,
dlm.experiments.regularisation): writes sweep.csv, choices.csv (best strength chosen on the
observational validation loss vs on the validation tests' experimental pairs),
reg_sweep.png, summary.md, config.json.
--efficiency instead draws 1, 3, 10, 30 and 100% of the randomised training tests (5
subsample seeds, --efficiency-seeds) as the experimental data and fits experimental,
experimental_ctr and the hybrids (naive / deconfoundlm + experimental_ctr, cross-fitted w*)
on them, beside naive and deconfoundlm fitted once (dlm.experiments.upworthy_efficiency),
on the first of --representations (default minilm): writes efficiency.csv,
efficiency_summary.csv, efficiency_paired.csv, efficiency.png, summary.md, config.json.
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

from dlm import cli  # noqa: E402
from dlm.data.log import LogValidationError  # noqa: E402
from dlm.experiments import regularisation as REG  # noqa: E402
from dlm.experiments import upworthy as U  # noqa: E402
from dlm.experiments import upworthy_efficiency as EFF  # noqa: E402
from dlm.experiments import upworthy_report as R  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    cli.add_common_args(parser, U.PRESETS, model_field="model")
    parser.add_argument("--data", type=pathlib.Path, default=None,
                        help="Upworthy archive CSV(.gz)/parquet to train on (required)")
    parser.add_argument("--eval-data", type=pathlib.Path, default=None,
                        help="evaluate on this file (same format) instead of the test split")
    parser.add_argument("--include-nonrandomised", action="store_true",
                        help="keep the tests of the likely non-randomised window (test_week "
                             "201325..201401) as experimental data (default: left out)")
    parser.add_argument("--representations", default=None,
                        help=f"comma list from {', '.join(U.REPRESENTATIONS)} or "
                             "dlm.representations specs (default: the preset's)")
    parser.add_argument("--reg-sweep", action="store_true",
                        help="sweep the l2 strength of naive and deconfoundlm per representation "
                             "(regularisation vs model size) instead of the comparison")
    parser.add_argument("--efficiency", action="store_true",
                        help="AUC vs share of experimental tests (1..100%%) for experimental, "
                             "observational, deconfounded and hybrid rewards, instead of the "
                             "comparison")
    parser.add_argument("--efficiency-seeds", type=int, default=5,
                        help="subsample seeds per share for --efficiency (default 5)")
    args = parser.parse_args(argv)
    if args.reg_sweep and args.efficiency:
        parser.error("--reg-sweep and --efficiency are two different runs: pick one")
    if args.data is None:
        parser.error("--data PATH is required: this script compares reward models on the real "
                     "Upworthy archive (see README, Data, for where to get it)")
    cfg = cli.resolve_config(args, U.PRESETS)
    if args.include_nonrandomised:
        cfg = dataclasses.replace(cfg, include_nonrandomised=True)
    if args.representations:
        cfg = dataclasses.replace(cfg, representations=tuple(
            r.strip() for r in args.representations.split(",") if r.strip()))
    if cfg.model and cfg.model not in cfg.representations:   # --model smollm2-135m
        cfg = dataclasses.replace(cfg, representations=cfg.representations + (cfg.model,))
    t0 = time.perf_counter()
    try:                       # bad input: one clear line, no traceback, nothing written
        U.check_representations(cfg.representations, cfg)
        log, eval_log = U.load_inputs(args.data, args.eval_data)
        if args.reg_sweep:
            result = REG.run_sweep(cfg, log, eval_log)
        elif args.efficiency:
            rep = args.representations.split(",")[0].strip() if args.representations else "minilm"
            result = EFF.run_efficiency(cfg, log, eval_log, representation=rep,
                                        seeds=args.efficiency_seeds,
                                        progress=sys.stderr.isatty())
        else:
            result = U.run(cfg, log, eval_log, progress=sys.stderr.isatty())
    except (LogValidationError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    wall = time.perf_counter() - t0
    source = f"the test split of {args.data}" if eval_log is None else str(args.eval_data)
    run_info = {"preset": args.preset, "data": args.data, "eval_data": args.eval_data}
    if args.efficiency:
        text = EFF.summary_text(result, cfg, wall, source)
        EFF.write_outputs(args.out, result, cfg, run_info, text)
        print(text)
        return 0
    if args.reg_sweep:
        text = REG.summary_text(result, cfg, wall, source)
        REG.write_outputs(args.out, result, cfg, run_info, text)
        print(text)
        return 0
    text = R.summary_text(result.results, result.data, cfg, result.timings, wall, source,
                          result.history, result.contrasts)
    R.write_outputs(args.out, result, cfg, run_info, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
