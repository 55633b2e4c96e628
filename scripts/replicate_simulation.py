"""The simulation study: every reward method over a grid of worlds (entanglement x p_marker).

    python -m scripts.replicate_simulation --preset quick --out runs/replicate_simulation
    python -m scripts.replicate_simulation --preset full --out runs/replicate_full
                                           [--model smollm2-135m] [--data UPWORTHY.csv.gz]
                                           [--set entanglements=0,0.6 --set seeds=5]
                                           [--set world.confounder_strength=2]

Each world is scripts.compare_rewards' world (DESIGN.md section 3) at one entanglement and
p_marker; every method of dlm.rewards.METHODS trains its reward on each seed's
observational log (odin and invariant over their strength sweep `knob`) and is scored on
held-out stories (causal_corr, spurious_gap, pair_acc) and by the best-of-n objective from
an SFT policy. The SFT policy is trained once per p_marker (on the log of the
`sft_entanglement` world) and its candidate pools (one per seed) are shared by every
entanglement, so within a p_marker all worlds rank the same candidates: objective
differences across entanglement come from the rewards alone.
Baselines follow DESIGN.md section 3's protocol (dlm.eval.selection): every strength, the
strength tuned on `tune_seeds` separate seeds, and per seed the strength with the lowest
val_loss on `n_val` randomised A/B postings; deconfoundlm's seed-paired gain over each.
Writes results.csv (one row per seed x entanglement x p_marker x method x strength; split
= report | tune), summary.md (the protocol table with 95% intervals, tables per metric
incl. best-of-n marker_rate and spurious_gap with intervals, stage timings), objective.png and causal_corr.png (metric vs entanglement, one line per method,
mean ± se over seeds, one panel per p_marker), metrics.jsonl and config.json.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys

# The estimator's many small Cholesky factorisations: OpenBLAS threads busy-wait against
# XLA's on small machines (see scripts.upworthy). Only effective before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from dlm import cli, outputs  # noqa: E402
from sims.experiments import compare_rewards as cr  # noqa: E402
from sims.experiments import replicate_simulation as experiment  # noqa: E402

PRESETS = experiment.PRESETS
# the grid sets these per world: a single value would be silently replaced
GRID_FIELDS = ("world.entanglement", "world.p_marker", "entanglement", "p_marker")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    cli.add_common_args(parser, PRESETS, model_field="policy_model")
    parser.add_argument("--data", type=pathlib.Path, default=None,
                        help="Upworthy CSV(.gz) whose stories the worlds use "
                             "(default: built-in corpus)")
    args = parser.parse_args(argv)
    single = [o for o in args.overrides if o.split("=", 1)[0] in GRID_FIELDS]
    if single:
        raise cli.UsageExit(f"--set {single[0]}: the grid is set by entanglements=... and "
                            "p_markers=... (comma-separated)")
    cfg = cli.resolve_config(args, PRESETS)
    history: list = []
    frame, info = experiment.run(cfg, args.data, progress=sys.stderr.isatty(), history=history)
    # the measurements first: a report that fails to render can be redone from them
    config = {"preset": args.preset, "data": args.data, "config": cfg, "info": info}
    outputs.write_csv(args.out / "results.csv", frame)
    outputs.write_json(args.out / "config.json", config)
    text = experiment.summary_text(frame, cfg, info)
    cr.write_outputs(args.out, frame, text, config, history)
    for metric in ("objective", "causal_corr"):
        experiment.plot_metric(frame, metric, args.out / f"{metric}.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
