"""The benchmarks' samples of the headline world (scripts.bench_deconfound): a large
observational log as a user's table (world_frame) or as arrays, sampled chunk by chunk and
cached on disk (world_arrays)."""
from __future__ import annotations

import datetime
import json
import pathlib

import numpy as np
import pandas as pd

from dlm import cli


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


COLUMNS = ("phi", "s", "n", "story", "weekday", "week", "log_audience")


def _cache_meta(cfg) -> dict:
    return {**{k: getattr(cfg, k) for k in ("seed", "chunk", "n_stories")},
            "world": json.loads(json.dumps(cli.to_jsonable(cfg.world)))}


def cache_covers(cache: pathlib.Path, cfg, n_rows: int) -> bool:
    """Whether `cache` holds at least n_rows sampled rows of cfg's world, seed and chunk."""
    if not (cache / "meta.json").exists():
        return False
    have = json.loads((cache / "meta.json").read_text())
    return have.pop("rows") >= n_rows and have == _cache_meta(cfg)


def world_arrays(world, cfg, n_rows: int, cache: pathlib.Path | None = None) -> dict:
    """The rows of world_frame (same keys) as arrays: phi [N, F], counts, confounder codes.
    `cfg`: seed, chunk, n_stories and world (scripts.bench_deconfound's config).

    cache: a directory; its arrays (npy, written chunk by chunk, so sampling 10M rows never
    holds them all) are reused when they cover n_rows with the same seed and chunk: rows are
    a prefix of a larger sample, so every size of a scaling run fits nested rows.
    """
    import jax

    meta = _cache_meta(cfg)
    levels = {"weekday": tuple(world.truth()["weekday_levels"]),
              "week": tuple(world.corpus.week_labels)}
    if cache is not None and cache_covers(cache, cfg, n_rows):
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
