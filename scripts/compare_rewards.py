"""Every reward method on one simulated world, several seeds: the causal evaluation table.

    python -m scripts.compare_rewards --preset quick --entanglement 0.6 --out runs/compare
                                      [--data UPWORTHY.csv.gz] [--set seeds=5 --set knob=0.1,1,10]
                                      [--set world.p_marker=1.0 --set reward.steps=300]

One headline world (sims.headlines; built-in template corpus unless --data points at the
Upworthy archive) with its stories split into training and held-out stories. Per seed:
an observational log of the training stories; every method of dlm.rewards.METHODS trains
its reward (odin and invariant over the `knob` sweep) on a frozen text representation
fitted once per world; each reward is scored on the held-out stories' candidates:
  causal_corr    corr(r(X), tau(X))
  spurious_gap   r(Happy Monday! + X) - r(X) - true marker effect (signed; Monday is the
                 high-traffic day), with gap_monday / gap_friday per marker
  pair_acc       within-story pairs ordered as tau orders them (the A/B world's pairs)
  objective      mean tau of best-of-n picks from an SFT policy's candidates for held-out
                 ledes (one pool per seed, shared by all methods); also normalised
                 (0 = SFT's first sample, 1 = oracle) and the picks' marker_rate.
The SFT policy is trained once per world on a log's posted (lede, headline) pairs (cached
under $DLM_CACHE by dlm.policy.sft_cache.sft_policy), so it writes weekday markers as often as
editors did.
The config nests the world (world.*: every field of sims.headlines.HeadlineWorldConfig), the
reward trainer (reward.*: dlm.rewards.TrainerConfig) and deconfoundlm's estimator
(estimator.*: dlm.causal.fit.EstimatorConfig); the pipeline is
sims.experiments.compare_rewards.
Writes results.csv (one row per seed x method x strength), summary.md (mean ± se over
seeds), rewards.png, metrics.jsonl (reward-training curves) and config.json.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys

# The estimator's small Cholesky factorisations: OpenBLAS threads busy-wait against XLA's
# on small machines (see scripts.upworthy). Only effective before numpy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from dlm import cli  # noqa: E402
from sims.experiments import compare_rewards as experiment  # noqa: E402

PRESETS = experiment.PRESETS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    cli.add_common_args(parser, PRESETS, model_field="policy_model")
    parser.add_argument("--entanglement", type=float, default=None,
                        help="entanglement of the confounders with causal text features "
                             "(sugar for --set world.entanglement=X)")
    parser.add_argument("--data", type=pathlib.Path, default=None,
                        help="Upworthy CSV(.gz) whose stories the world uses "
                             "(default: built-in corpus)")
    args = parser.parse_args(argv)
    if args.entanglement is not None:
        args.overrides.insert(0, f"world.entanglement={args.entanglement}")
    cfg = cli.resolve_config(args, PRESETS)
    history: list = []
    frame, info = experiment.run(cfg, args.data, progress=sys.stderr.isatty(), history=history)
    text = experiment.summary_text(frame, cfg, info)
    experiment.write_outputs(args.out, frame, text, {"preset": args.preset, "data": args.data,
                                                     "config": cfg, "info": info}, history)
    experiment.plot(frame, args.out / "rewards.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
