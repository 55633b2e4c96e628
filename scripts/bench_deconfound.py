"""Benchmark: scripts.deconfound on a large log sampled from the headline world.

    python -m scripts.bench_deconfound --out runs/bench_deconfound [--preset default|quick]
                                       [--set n_rows=1000000 --set text_features=ngram:256]

Samples n_rows postings of sims.headlines (built-in corpus; in chunks: several sample()
calls with different keys, concatenated), writes them as a user would have them (a
Parquet file with headline, lede, story, clicks, impressions, a posting date and
log_audience), then runs the bring-your-own-log command on it end to end:

    --content headline --group story --successes clicks --trials impressions
    --confounder date:time --time-unit week --derive weekday --confounder log_audience:numeric

and compares the estimated weekday effects and audience slope with the world's truth.
Writes DIR/log.parquet, DIR/deconfound/ (the command's outputs), results.csv (quantity,
truth, estimate, lo, hi, abs_err), bench.json (seconds per stage), summary.md, config.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import pathlib
import sys
import time

import numpy as np
import pandas as pd

from dlm import cli, outputs


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    n_rows: int = 1_000_000
    chunk: int = 100_000               # rows per world.sample call
    seed: int = 0
    n_stories: int = 600
    text_features: str = "phi"         # the world's own features; ngram:256 also works (slower)
    entanglement: float = 0.6
    p_marker: float = 0.8
    folds: int = 5
    tolerance: float = 0.02            # acceptance: max |weekday error| on the logit scale


PRESETS = {
    "default": BenchConfig(),
    "quick": BenchConfig(n_rows=100_000, chunk=50_000),
    "tiny": BenchConfig(n_rows=6_000, chunk=3_000, n_stories=150),
}


def build_world(cfg: BenchConfig):
    from sims.builtin_corpus import builtin_corpus
    from sims.headlines import HeadlineWorld, HeadlineWorldConfig

    return HeadlineWorld(builtin_corpus(n_stories=cfg.n_stories),
                         HeadlineWorldConfig(entanglement=cfg.entanglement, p_marker=cfg.p_marker))


def _dates(week_labels: tuple[str, ...], week_N: np.ndarray, weekday_N: np.ndarray) -> np.ndarray:
    """ISO year-week label + weekday code (0 = Monday) -> datetime64[D] posting dates."""
    mondays = np.array([datetime.date.fromisocalendar(int(w[:4]), int(w[4:]), 1)
                        for w in week_labels], dtype="datetime64[D]")
    return mondays[week_N] + weekday_N.astype("timedelta64[D]")


def world_frame(world, n_rows: int, chunk: int, seed: int) -> pd.DataFrame:
    """n_rows observational postings as a user's table (one sample() call per chunk)."""
    import jax

    frames, done, i = [], 0, 0
    labels = tuple(world.corpus.week_labels)
    while done < n_rows:
        n = min(chunk, n_rows - done)
        s = world.sample(jax.random.fold_in(jax.random.PRNGKey(seed), i), chunk)
        log = s.log.take(np.arange(n))
        conf = log.confounders
        frames.append(pd.DataFrame({
            "headline": log.content, "lede": log.context,
            "story": np.char.add("s", s.story[:n].astype(str)),
            "clicks": log.successes.astype(np.int64), "impressions": log.trials.astype(np.int64),
            "date": _dates(labels, conf["week"].values, conf["weekday"].values),
            "log_audience": conf["log_audience"].values,
        }))
        done, i = done + n, i + 1
    return pd.concat(frames, ignore_index=True)


def command(path: pathlib.Path, out: pathlib.Path, cfg: BenchConfig) -> list[str]:
    return ["--data", str(path), "--content", "headline", "--context", "lede", "--group", "story",
            "--successes", "clicks", "--trials", "impressions", "--confounder", "date:time",
            "--time-unit", "week", "--derive", "weekday", "--confounder", "log_audience:numeric",
            "--text-features", cfg.text_features, "--set", f"seed={cfg.seed}",
            "--set", f"folds={cfg.folds}", "--out", str(out)]


def compare(effects: pd.DataFrame, truth: dict) -> pd.DataFrame:
    """Weekday effects and the audience slope, estimate vs truth."""
    eff = effects.set_index(["parameter", "level"])
    rows = []
    for label, true in zip(truth["weekday_levels"], truth["weekday_effects"]):
        e = eff.loc[("date_weekday", label)]
        rows.append(dict(quantity=f"weekday_{label}", truth=float(true), estimate=e["mean"],
                         lo=e["lo"], hi=e["hi"]))
    e = eff.loc[("log_audience", "slope")]
    rows.append(dict(quantity="audience_slope", truth=float(truth["audience_slope"]),
                     estimate=e["mean"], lo=e["lo"], hi=e["hi"]))
    frame = pd.DataFrame(rows)
    return frame.assign(abs_err=(frame.estimate - frame.truth).abs())


def summary(results: pd.DataFrame, bench: dict, cfg: BenchConfig) -> str:
    wd = results[results.quantity.str.startswith("weekday_")]
    worst = wd.abs_err.max()
    verdict = "met" if worst <= cfg.tolerance else "NOT met"
    return (f"# Bring-your-own-log benchmark\n\n{cfg.n_rows:,} postings of the headline world "
            f"(built-in corpus, {cfg.n_stories} stories), text term {cfg.text_features}, "
            f"{cfg.folds}-fold cross-fit, through `python -m scripts.deconfound`.\n\n"
            + outputs.markdown_table(pd.DataFrame([bench]), floatfmt=".1f") + "\n"
            + outputs.markdown_table(results, floatfmt=".4f") + "\n"
            f"- max |weekday error| {worst:.4f} (target <= {cfg.tolerance}: {verdict})\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    cli.add_common_args(parser, PRESETS, default_preset="default")
    args = parser.parse_args(argv)
    cfg = cli.resolve_config(args, PRESETS)
    from scripts import deconfound

    t0 = time.perf_counter()
    world = build_world(cfg)
    frame = world_frame(world, cfg.n_rows, cfg.chunk, cfg.seed)
    t_sample = time.perf_counter() - t0
    path = args.out / "log.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    del frame
    t1 = time.perf_counter()
    rc = deconfound.main(command(path, args.out / "deconfound", cfg))
    t_fit = time.perf_counter() - t1
    if rc != 0:
        return rc
    results = compare(pd.read_csv(args.out / "deconfound" / "effects.csv"), world.truth())
    inner = json.loads((args.out / "deconfound" / "config.json").read_text())
    bench = {"rows": cfg.n_rows, "sample_s": t_sample, "deconfound_command_s": t_fit,
             "validate_fit_diagnose_s": inner["seconds"]}
    text = summary(results, bench, cfg)
    outputs.write_csv(args.out / "results.csv", results)
    outputs.write_json(args.out / "bench.json", bench)
    outputs.write_text(args.out / "summary.md", text)
    outputs.write_json(args.out / "config.json", {
        "preset": args.preset, "config": cfg, "command": command(path, args.out / "deconfound", cfg)})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
