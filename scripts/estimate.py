"""Recover the confounders' effects from simulated observational logs, with known truth.

    python -m scripts.estimate --preset quick --out runs/estimate [--data UPWORTHY.csv.gz]
                               [--set world.entanglement=0.9 --set seeds=20 ...]

For each seed: sample the headline world (sims.headlines; built-in template corpus unless
--data points at the Upworthy archive), then run
  deconfoundlm  g fitted jointly with a linear text term (cross-fitted; estimator_text, a
                dlm.representations spec, default phi(X): the world's features), and
  partial_out   g fitted on the confounders alone (outcome residualised on C),
and compare every weekday effect and the audience slope with the truth, plus the Pearson
correlation of each method's adjusted outcome with the true content effect tau (corr_tau).
The config nests the world (world.*: every field of sims.headlines.HeadlineWorldConfig) and
the estimator (estimator.*: dlm.causal.fit.EstimatorConfig); the pipeline is
sims.experiments.estimate, the summaries dlm.experiments.estimate.
Writes results.csv (seed, method, quantity, truth, estimate, lo, hi), summary.md,
weekday_effects.png, config.json.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

from dlm import cli, outputs
from dlm.experiments.estimate import plot_weekdays, summarise
from sims.experiments.estimate import PRESETS, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    cli.add_common_args(parser, PRESETS)
    parser.add_argument("--data", type=pathlib.Path, default=None,
                        help="Upworthy CSV(.gz) whose stories the world uses (default: built-in corpus)")
    args = parser.parse_args(argv)
    cfg = cli.resolve_config(args, PRESETS)
    t0 = time.perf_counter()
    results = run(cfg, args.data, progress=sys.stderr.isatty())
    _, text = summarise(results, cfg)
    text += f"\nWall time: {time.perf_counter() - t0:.1f} s.\n"
    outputs.write_csv(args.out / "results.csv", results)
    outputs.write_text(args.out / "summary.md", text)
    outputs.write_json(args.out / "config.json", {"preset": args.preset, "data": args.data,
                                                  "config": cfg})
    plot_weekdays(results, args.out / "weekday_effects.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
