"""Experimental-only vs deconfoundlm vs hybrid reward by the number of interventional postings.

    python -m scripts.data_efficiency --preset quick --out runs/data_efficiency [--set seeds=5]

On the headline world (sims.headlines) at each entanglement: causal_corr of the
experimental reward (fitted on world.intervene(n)), the deconfoundlm reward (fitted on an
observational log) and their hybrid (weight w* of dlm.causal.hybrid) for n in
n_interventional (sims/experiments/data_efficiency.py). Writes results.csv, summary.md,
config.json. Presets: tiny (tests), quick (100..10,000 postings, entanglement 0 and 0.9).
"""
from __future__ import annotations

import argparse
import sys
import time

from dlm import cli, outputs
from sims.experiments.data_efficiency import PRESETS, run_data_efficiency, summary_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_common_args(parser, PRESETS)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    cfg = cli.resolve_config(args, PRESETS)        # a bad --set exits 2 (dlm.cli.UsageExit)
    try:
        results = run_data_efficiency(cfg)
    except ValueError as err:
        print(f"data_efficiency: {err}", file=sys.stderr)
        return 2
    text = (f"# causal_corr by interventional postings ({cfg.n_obs} observational postings, "
            f"{cfg.seeds} seeds, mean ± se)\n\n" + outputs.markdown_table(summary_table(results))
            + f"\nWall time: {time.perf_counter() - t0:.1f} s.\n")
    outputs.write_csv(args.out / "results.csv", results)
    outputs.write_text(args.out / "summary.md", text)
    outputs.write_json(args.out / "config.json", {"preset": args.preset, "config": cfg})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
