"""Benchmark: the seeds of one setting trained in one program (vmapped) vs one after another.

    python -m scripts.bench_seeds --out runs/bench_seeds [--preset quick|tiny]
                                  [--set seeds=8 --set methods=deconfoundlm,odin]
                                  [--set world.entanglement=0.9 --set reward.steps=300]
                                  [--set end_to_end=true]

One headline world (sims.headlines on the built-in corpus, as compare_rewards' quick
preset: 20,000 postings per seed) and a frozen n-gram representation; per seed a log and
each method's targets (not timed). Then, per method, the reward training of all seeds
(odin: every value of its knob) five ways, each timed including its compilation:
  vmapped      train_reward_seeds, seed_batching="vmap": S seeds x K values in one vmapped run
  mapped       the same program with lax.map over the seeds
  loop         seed_batching="loop": one seed after another, one compile (the CPU default)
  separate     S train_reward calls, each compiling its own step (what a seed loop over
               train_reward costs); separate_no_scan: scan=False (one host call per step)
The vmapped rewards are checked against the separate ones (max |score difference|).
end_to_end: also scripts.estimate's tiny preset with all seeds in one process vs one
process per seed (seeds=1, first_seed=i), the cost a seed grid axis would have.
Writes bench.json and summary.md; prints the speed ratios.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

from dlm import cli, outputs
from dlm.causal.fit import EstimatorConfig
from dlm.rewards import TrainerConfig
from sims.headlines import HeadlineWorldConfig


@dataclasses.dataclass(frozen=True)
class BenchSeedsConfig:
    n_stories: int = 600
    n_postings: int = 20_000
    world: HeadlineWorldConfig = HeadlineWorldConfig()   # world.entanglement, ... (sims.headlines)
    seeds: int = 8
    methods: tuple[str, ...] = ("deconfoundlm", "odin")
    knob: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)
    representation: str = "ngram-svd:64"   # the reward heads' dlm.representations spec
    estimator: EstimatorConfig = EstimatorConfig()      # deconfoundlm's g (estimator.folds, ...)
    reward: TrainerConfig = TrainerConfig(batch_size=4096)   # reward.steps, reward.lr, ...
    end_to_end: bool = False
    end_to_end_preset: str = "tiny"     # scripts.estimate preset for the end-to-end check


PRESETS = {
    "tiny": BenchSeedsConfig(n_stories=60, n_postings=3000, seeds=3, knob=(1.0, 100.0),
                             representation="ngram-svd:32", estimator=EstimatorConfig(folds=2),
                             reward=TrainerConfig(steps=60, batch_size=1024)),
    "quick": BenchSeedsConfig(),
}


def setup(cfg: BenchSeedsConfig):
    """(representation, {method: [targets per seed]}, c_ref): the untimed part."""
    import jax

    from dlm.representations import fit_representation
    from dlm.rewards import METHODS, MethodContext
    from sims.experiments.worlds import build_world
    from dlm.data.markers import MARKER_PREFIXES

    world = build_world(cfg.world, cfg.n_stories)
    universe = [m + t for row in world.candidates for t in row for m in MARKER_PREFIXES]
    rep = fit_representation(cfg.representation, universe, seed=0)
    c_ref = world.reference_condition()
    targets = {name: [] for name in cfg.methods}
    for seed in range(cfg.seeds):
        log = world.sample(jax.random.key(seed), cfg.n_postings).log
        ctx = MethodContext(log, rep, world=world, seed=seed, c_ref=c_ref,
                            estimator=cfg.estimator)
        for name in cfg.methods:
            targets[name].append(METHODS[name].target_fn(ctx))
    return rep, targets, c_ref, universe[:2000]


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


MODES = ("vmapped", "mapped", "loop", "separate", "separate_no_scan")


def bench_method(name: str, targets: list, rep, cfg: BenchSeedsConfig, c_ref, texts) -> dict:
    """Every way to train one method's seeds: seconds (compile included), ratios to the
    vmapped run, and how far the vmapped rewards are from the separately trained ones."""
    from dlm.rewards import METHODS, train_reward
    from dlm.rewards.trainer import train_reward_seeds

    tcfg = cfg.reward
    knob = cfg.knob if METHODS[name].knob else None
    seeds = list(range(cfg.seeds))

    def together(batching: str, **kw):
        c = dataclasses.replace(tcfg, seed_batching=batching, **kw)
        return lambda: train_reward_seeds(name, targets, rep, c, knob, seeds, c_ref=c_ref)

    def separate(scan: bool):
        c = dataclasses.replace(tcfg, scan=scan)
        return lambda: [train_reward(name, t, rep, c, knob, seed=s, c_ref=c_ref)
                        for s, t in zip(seeds, targets)]

    runs = {"vmapped": together("vmap"), "mapped": together("map"), "loop": together("loop"),
            "separate": separate(True), "separate_no_scan": separate(False)}
    out, seconds = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        together("vmap", steps=2)()       # untimed warm-up: eager init ops of these shapes
        together("map", steps=2)()
        for mode in MODES:
            out[mode], seconds[mode] = _timed(runs[mode])
    diff = max(float(np.max(np.abs(a(texts) - b(texts))))
               for rs, ss in zip(out["vmapped"], out["separate"]) for a, b in zip(rs, ss))
    return {"method": name, "knob_values": len(out["vmapped"][0]), "seeds": cfg.seeds,
            **{f"{m}_s": seconds[m] for m in MODES},
            **{f"ratio_{m}_over_vmapped": seconds[m] / seconds["vmapped"] for m in MODES[1:]},
            "max_abs_score_diff_vmapped_vs_separate": diff}


def end_to_end(cfg: BenchSeedsConfig) -> dict:
    """scripts.estimate: all seeds in one process vs one process per seed."""
    repo = pathlib.Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    base = [sys.executable, "-m", "scripts.estimate", "--preset", cfg.end_to_end_preset]

    def run(sets: list[str], out: str):
        cmd = base + sum((["--set", s] for s in sets), []) + ["--out", out]
        subprocess.run(cmd, check=True, cwd=repo, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    with tempfile.TemporaryDirectory() as tmp:
        _, one = _timed(lambda: run([f"seeds={cfg.seeds}"], f"{tmp}/one"))
        _, many = _timed(lambda: [run(["seeds=1", f"first_seed={s}"], f"{tmp}/s{s}")
                                  for s in range(cfg.seeds)])
    return {"script": f"scripts.estimate --preset {cfg.end_to_end_preset}", "seeds": cfg.seeds,
            "one_process_s": one, "process_per_seed_s": many, "ratio": many / one}


def summary_text(result: dict) -> str:
    head = " | ".join(f"{m} s" for m in MODES)
    lines = [f"# Seeds in one program vs one after another\n\n{result['setting']}\n",
             f"| method | knob values | {head} | loop / vmapped | separate / vmapped | "
             "separate / loop | max abs score diff |", "|" + "---|" * (len(MODES) + 6)]
    for r in result["methods"]:
        secs = " | ".join(f"{r[m + '_s']:.1f}" for m in MODES)
        lines.append(f"| {r['method']} | {r['knob_values']} | {secs} | "
                     f"{r['ratio_loop_over_vmapped']:.2f}x | "
                     f"{r['ratio_separate_over_vmapped']:.2f}x | "
                     f"{r['separate_s'] / r['loop_s']:.2f}x | "
                     f"{r['max_abs_score_diff_vmapped_vs_separate']:.1e} |")
    lines.append("\nvmapped: train_reward_seeds with seed_batching='vmap'; mapped: one program "
                 "with lax.map over the seeds; loop: one seed after another, one compile (the "
                 "CPU default); separate: one train_reward call per seed (each compiles), "
                 "no_scan: one host call per step. Ratios > 1: the vmapped/loop run is faster.")
    e = result.get("end_to_end")
    if e:
        lines.append(f"\nEnd to end, {e['script']}, {e['seeds']} seeds: one process "
                     f"{e['one_process_s']:.1f} s, one process per seed {e['process_per_seed_s']:.1f}"
                     f" s ({e['ratio']:.2f}x).")
    lines.append(f"\nMachine: {result['machine']}; load average before {result['load_before']}, "
                 f"after {result['load_after']}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    cli.add_common_args(parser, PRESETS)
    args = parser.parse_args(argv)
    cfg = cli.resolve_config(args, PRESETS)
    import jax

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    t0 = time.perf_counter()
    rep, targets, c_ref, texts = setup(cfg)
    setup_s = time.perf_counter() - t0
    rows = []
    for name in cfg.methods:
        rows.append(bench_method(name, targets[name], rep, cfg, c_ref, texts))
        print(f"{name}: " + ", ".join(f"{m} {rows[-1][m + '_s']:.1f} s" for m in MODES),
              flush=True)
    result = {"preset": args.preset, "config": cfg, "methods": rows, "setup_s": setup_s,
              "setting": f"{cfg.seeds} seeds x {cfg.n_postings:,} postings, entanglement "
                         f"{cfg.world.entanglement}, representation {cfg.representation}, "
                         f"{cfg.reward.steps} steps of batch {cfg.reward.batch_size}; times include "
                         f"compilation; setup (logs, targets) {setup_s:.0f} s not timed.",
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, jax "
                         f"{jax.__version__} on {jax.default_backend()}",
              "load_before": load}
    if cfg.end_to_end:
        result["end_to_end"] = end_to_end(cfg)
    result["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = summary_text(result)
    outputs.write_json(args.out / "bench.json", result)
    outputs.write_text(args.out / "summary.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
