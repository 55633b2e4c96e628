"""Benchmark: scripts.deconfound on a large log sampled from the headline world.

    python -m scripts.bench_deconfound --out runs/bench_deconfound [--preset default|quick]
                                       [--set n_rows=1000000 --set text_features=ngram:256]
    python -m scripts.bench_deconfound --out runs/bench_scaling --preset scaling
                                       [--set sizes=1000000,3000000 --set row_chunk=131072]

Samples n_rows postings of sims.headlines (built-in corpus; in chunks: several sample()
calls with different keys, concatenated), writes them as a user would have them (a
Parquet file with headline, lede, story, clicks, impressions, a posting date and
log_audience), then runs the bring-your-own-log command on it end to end:

    --content headline --group story --successes clicks --trials impressions
    --confounder date:time --time-unit week --derive weekday --confounder log_audience:numeric

and compares the estimated weekday effects and audience slope with the world's truth.
Writes DIR/log.parquet, DIR/deconfound/ (the command's outputs), results.csv (quantity,
truth, estimate, lo, hi, abs_err), bench.json (seconds per stage), summary.md, config.json.

mode=estimator (presets scaling, scaling-quick) times the estimator alone, the part that
grows with N: the same rows (same keys) as arrays, no file and no text featurisation, one
full-data fit (Newton MAP with chunked, device-sharded row sums + sandwich by story, no
cross-fit). The world is sampled once for the largest size (into `cache`, DIR/sample by
default; each size fits a prefix of those rows). Each of `sizes` runs in a fresh process
(so its peak RSS is its own): a warm-up fit on row_chunk + 1 rows compiles the kernels
(warmup_s), then the timed fit reports fit seconds, seconds per million rows, peak RSS, the
RSS of its inputs, the max |weekday error| and the load average; the first size also fits
statsmodels' GLM (dense dummy design) and ours on its first `reference_rows` rows. Writes
DIR/n<N>/scaling.json per size, DIR/scaling.csv, summary.md, config.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

import numpy as np
import pandas as pd

from dlm import cli, outputs
from dlm.causal.design import drop_first_dummies


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
    mode: str = "command"              # command (scripts.deconfound end to end) | estimator
    sizes: tuple[int, ...] = ()        # estimator mode: rows per run, each in a fresh process
    reference_rows: int = 100_000      # estimator mode: statsmodels GLM on this many rows (0: no)
    row_chunk: int = 131072            # EstimatorConfig.row_chunk (rows per device per step)
    cache: str = ""                    # estimator mode: sampled arrays' directory (sizes: DIR/sample)


PRESETS = {
    "default": BenchConfig(),
    "quick": BenchConfig(n_rows=100_000, chunk=50_000),
    "tiny": BenchConfig(n_rows=6_000, chunk=3_000, n_stories=150),
    "scaling": BenchConfig(mode="estimator", sizes=(1_000_000, 3_000_000, 10_000_000)),
    "scaling-quick": BenchConfig(mode="estimator", sizes=(100_000, 300_000), chunk=50_000,
                                 reference_rows=50_000, row_chunk=32768),
}


def build_world(cfg: BenchConfig):
    from dlm.data.builtin_corpus import builtin_corpus
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


COLUMNS = ("phi", "s", "n", "story", "weekday", "week", "log_audience")


def _cache_meta(cfg: BenchConfig) -> dict:
    return {k: getattr(cfg, k) for k in ("seed", "chunk", "n_stories", "entanglement", "p_marker")}


def _cache_covers(cache: pathlib.Path, cfg: BenchConfig, n_rows: int) -> bool:
    if not (cache / "meta.json").exists():
        return False
    have = json.loads((cache / "meta.json").read_text())
    return have.pop("rows") >= n_rows and have == _cache_meta(cfg)


def world_arrays(world, cfg: BenchConfig, n_rows: int, cache: pathlib.Path | None = None) -> dict:
    """The rows of world_frame (same keys) as arrays: phi [N, F], counts, confounder codes.

    cache: a directory; its arrays (npy, written chunk by chunk, so sampling 10M rows never
    holds them all) are reused when they cover n_rows with the same seed and chunk: rows are
    a prefix of a larger sample, so every size of a scaling run fits nested rows.
    """
    import jax

    meta = _cache_meta(cfg)
    levels = {"weekday": tuple(world.truth()["weekday_levels"]),
              "week": tuple(world.corpus.week_labels)}
    if cache is not None and _cache_covers(cache, cfg, n_rows):
            load = lambda k: np.load(cache / f"{k}.npy", mmap_mode="r")[:n_rows]  # noqa: E731
            out = {k: np.array(load(k), np.float64 if k == "phi" else None) for k in COLUMNS}
            return {**out, "levels": levels}        # copies in memory, phi as float64
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "meta.json").unlink(missing_ok=True)     # half-written arrays are never reused
    out, done, i = {}, 0, 0
    while done < n_rows:
        n = min(cfg.chunk, n_rows - done)
        smp = world.sample(jax.random.fold_in(jax.random.PRNGKey(cfg.seed), i), cfg.chunk)
        conf = smp.log.confounders
        cols = {"phi": np.asarray(smp.phi), "s": smp.log.successes, "n": smp.log.trials,
                "story": smp.story, **{k: conf[k].values for k in ("weekday", "week", "log_audience")}}
        for k, v in cols.items():
            if k not in out:
                shape, dtype = (n_rows,) + v.shape[1:], v.dtype
                out[k] = (np.empty(shape, dtype) if cache is None else np.lib.format.open_memmap(
                    cache / f"{k}.npy", mode="w+", dtype=dtype, shape=shape))
            out[k][done:done + n] = v[:n]
        done, i = done + n, i + 1
    if cache is not None:
        for v in out.values():
            v.flush()
        (cache / "meta.json").write_text(json.dumps({**meta, "rows": n_rows}))
        return world_arrays(world, cfg, n_rows, cache)
    return {**out, "phi": out["phi"].astype(np.float64), "levels": levels}


def _rss_gb() -> tuple[float, float]:
    """(current RSS, peak RSS of this process so far) in GB."""
    with open("/proc/self/statm") as f:
        current = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return current / 1e9, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def statsmodels_reference(a: dict, rows: int) -> float:
    """Seconds of statsmodels' binomial GLM (IRLS, dense drop-first dummies) on these rows."""
    import statsmodels.api as sm

    la = a["log_audience"][:rows]
    X = np.hstack([np.ones((rows, 1)), a["phi"][:rows],
                   drop_first_dummies(a["weekday"][:rows], len(a["levels"]["weekday"])),
                   drop_first_dummies(a["week"][:rows], len(a["levels"]["week"])), (la - la.mean())[:, None]])
    t0 = time.perf_counter()
    sm.GLM(np.c_[a["s"][:rows], a["n"][:rows] - a["s"][:rows]], X,
           family=sm.families.Binomial()).fit()
    return time.perf_counter() - t0


def estimator_run(cfg: BenchConfig, n_rows: int, reference_rows: int) -> dict:
    """One size in this process: sample, fit once, time it (see the module docstring)."""
    from dlm.causal.fit import EstimatorConfig, fit
    from dlm.data.log import Confounder

    world, t0 = build_world(cfg), time.perf_counter()
    a = world_arrays(world, cfg, n_rows, pathlib.Path(cfg.cache) if cfg.cache else None)
    t_sample = time.perf_counter() - t0
    kinds = {"weekday": "categorical", "week": "time", "log_audience": "numeric"}
    conf = lambda m: {k: Confounder(kinds[k], a[k][:m], a["levels"].get(k)) for k in kinds}  # noqa: E731
    est = EstimatorConfig(seed=cfg.seed, row_chunk=cfg.row_chunk)
    fit_rows = lambda m: fit(a["s"][:m], a["n"][:m], a["phi"][:m], conf(m), est,  # noqa: E731
                             groups=a["story"][:m])
    t0 = time.perf_counter()        # compile the row-sum kernels (fixed chunk: any N reuses them)
    fit_rows(min(n_rows, cfg.row_chunk + 1))
    t_warmup = time.perf_counter() - t0
    rss_inputs, _ = _rss_gb()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    f = fit_rows(n_rows)
    t_fit = time.perf_counter() - t0
    rss_after, rss_peak = _rss_gb()
    truth, eff = world.truth(), f.effects()
    wd = eff[eff.parameter == "weekday"].set_index("level")["mean"]
    err = np.abs(wd.loc[list(truth["weekday_levels"])].to_numpy() - truth["weekday_effects"])
    row = {"rows": n_rows, "fit_s": t_fit, "s_per_million_rows": t_fit / (n_rows / 1e6),
           "map_s": f.info["map_seconds"], "newton_iterations": f.info["iterations"],
           "map_rows": f.info["map_rows"], "devices": __import__("jax").device_count(),
           "peak_rss_gb": rss_peak, "inputs_rss_gb": rss_inputs, "rss_after_fit_gb": rss_after,
           "weekday_max_abs_err": float(err.max()), "sample_s": t_sample, "warmup_s": t_warmup,
           "load_avg_1m_before": load_before[0], "load_avg_1m_after": os.getloadavg()[0]}
    if reference_rows:
        m = min(reference_rows, n_rows)
        t0 = time.perf_counter()
        fit_rows(m)
        row.update(reference_rows=m, ours_on_reference_s=time.perf_counter() - t0,
                   statsmodels_on_reference_s=statsmodels_reference(a, m))
        row["statsmodels_over_ours"] = row["statsmodels_on_reference_s"] / row["ours_on_reference_s"]
    return row


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def scaling(args, cfg: BenchConfig) -> int:
    """Estimator mode: one fresh process per size, then the table."""
    sizes = tuple(int(n) for n in (cfg.sizes or (cfg.n_rows,)))
    if len(sizes) == 1:
        row = estimator_run(cfg, sizes[0], cfg.reference_rows)
        row["uptime"] = _uptime()
        outputs.write_json(args.out / "scaling.json", row)
        print(json.dumps(row))
        return 0
    cache = pathlib.Path(cfg.cache) if cfg.cache else args.out / "sample"
    if not _cache_covers(cache, cfg, max(sizes)):            # sampled once; each size a prefix
        t0 = time.perf_counter()
        world_arrays(build_world(cfg), cfg, max(sizes), cache)
        print(f"sampled {max(sizes):,} rows into {cache} in {time.perf_counter() - t0:.0f} s",
              flush=True)
    rows, keep = [], [o for o in args.overrides
                      if not o.startswith(("sizes=", "reference_rows=", "cache="))]
    for i, n in enumerate(sizes):
        sub = ["--preset", args.preset, *sum((["--set", o] for o in keep), []),
               "--set", f"sizes={n}", "--set", f"reference_rows={cfg.reference_rows if i == 0 else 0}",
               "--set", f"cache={cache}",
               "--out", str(args.out / f"n{n}")]
        proc = subprocess.run([sys.executable, "-m", "scripts.bench_deconfound", *sub])
        if proc.returncode != 0:
            print(f"size {n}: exit status {proc.returncode}; table has the sizes before it",
                  file=sys.stderr)
            break
        rows.append(json.loads((args.out / f"n{n}" / "scaling.json").read_text()))
    if not rows:
        return 1
    table = pd.DataFrame(rows)
    outputs.write_csv(args.out / "scaling.csv", table)
    cols = ["rows", "map_rows", "fit_s", "s_per_million_rows", "map_s", "newton_iterations",
            "warmup_s", "peak_rss_gb",
            "inputs_rss_gb", "weekday_max_abs_err", "load_avg_1m_before", "load_avg_1m_after"]
    ref = next((r for r in rows if r.get("reference_rows")), None)
    text = ("# Estimator scaling\n\nOne full-data fit (Newton MAP, row sums chunked over "
            f"{rows[0]['devices']} device(s), sandwich by story) per size, "
            "each in a fresh process.\n\n"
            + outputs.markdown_table(table[[c for c in cols if c in table]], floatfmt=".3f") + "\n")
    if ref:
        text += (f"- statsmodels GLM on the first {ref['reference_rows']:,} rows: "
                 f"{ref['statsmodels_on_reference_s']:.1f} s, ours {ref['ours_on_reference_s']:.1f} s "
                 f"(ratio {ref['statsmodels_over_ours']:.2f})\n")
    outputs.write_text(args.out / "summary.md", text)
    outputs.write_json(args.out / "config.json", {"preset": args.preset, "config": cfg})
    print(text)
    return 0 if len(rows) == len(sizes) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    cli.add_common_args(parser, PRESETS, default_preset="default")
    args = parser.parse_args(argv)
    cfg = cli.resolve_config(args, PRESETS)
    if cfg.mode not in ("command", "estimator"):
        raise SystemExit(f"--set mode: command or estimator, got {cfg.mode!r}")
    if cfg.mode == "estimator":
        return scaling(args, cfg)
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
