"""The paper's Monday experiment: does DPO on confounded pairs learn "Happy Monday!", and
does DeconfoundLM-DPO (pairs re-ordered by weekday-adjusted outcomes) avoid it?

    python -m scripts.replicate_monday --preset quick --out runs/monday \
        --data ../shared/data/upworthy/upworthy_exploratory_dev.csv.gz
    python -m scripts.replicate_monday --preset full --model smollm2-135m --data PATH --out DIR

Prompt = lede, response = headline. Every A/B arm gets a weekday (uniform); Monday arms
get +monday_effect and Friday arms friday_effect on the logit of their real CTR, and
Monday (Friday) headlines the prefix "Happy Monday! " ("Happy Friday! ") w.p. p_marker
(dlm.realdata.monday). Stories are split into disjoint SFT, preference and held-out sets.
Upworthy tests of the non-randomised window (test_week 201325..201401) are left out unless
--include-nonrandomised. One SFT per fine-tuning seed learns the SFT split's headlines as
posted (markers included). Within-test candidate pairs of the preference split (at most
max_pairs_per_story per story) are kept when their adjusted margin exceeds pair_z times its
standard error (binomial noise of both arms + the estimated weekday difference; the
weekday effect from within-test contrasts, test fixed effects, cross-fitted by test). The
kept pairs train three DPO models that differ only in the ordering: DPO by the observed
(confounded) outcome, DeconfoundLM-DPO by the adjusted one, Control-DPO (the negative
control) by the real CTR. Over fine-tuning x generation seeds: the share of generations
for held-out ledes containing "Happy", "Monday", "Friday"; Welch t-tests with fine-tuning
seeds as the units (generation seeds averaged inside). Without --data the built-in
template corpus is used, with the headline world's simulated CTR as the real one.
Writes results.csv, summary.md, markers.png, samples.md, config.json, metrics.jsonl.
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib

from dlm import cli
from sims.experiments import replicate_monday as experiment

PRESETS = experiment.PRESETS


def parse_args(argv: list[str] | None = None):
    """(config, parsed arguments) from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_common_args(parser, PRESETS, default_preset="quick", model_field="model")
    parser.add_argument("--data", type=pathlib.Path, default=None,
                        help="Upworthy archive (.csv/.csv.gz/.parquet); default: built-in corpus")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or printout")
    parser.add_argument("--combine", nargs="+", type=pathlib.Path, default=None, metavar="DIR",
                        help="merge these runs (one fine-tuning seed each, same config) into "
                             "--out instead of training")
    parser.add_argument("--include-nonrandomised", action="store_true",
                        help="keep Upworthy tests of the non-randomised window (test_week "
                             "201325..201401), left out by default")
    args = parser.parse_args(argv)
    cfg = cli.resolve_config(args, PRESETS)
    if args.include_nonrandomised:
        cfg = dataclasses.replace(cfg, include_nonrandomised=True)
    return cfg, args


def main(argv: list[str] | None = None) -> None:
    cfg, args = parse_args(argv)
    try:
        if args.combine:
            experiment.combine(cfg, args.out, args.combine, args.data, args.quiet)
        else:
            experiment.run(cfg, args.out, args.data, args.quiet)
    except (ValueError, FileExistsError) as err:   # unknown sft_preset, a cache holding another run
        raise SystemExit(str(err)) from None


if __name__ == "__main__":
    main()
