"""Grids of script settings: parse, validate, expand, shard, and merge the results.

A grid maps config fields to the values each takes; its points are the Cartesian product
(the first field varies slowest). Values are kept as the text `--set FIELD=VALUE` takes, so
a point is exactly a list of overrides, and its slug (its run directory's name) is stable.
Seeds are never a grid axis: a setting's seeds run in one process (`--set seeds=N`), where
the script can vmap over them.

A point counts as finished only when its run directory holds exit.json, written atomically
after its process exits, with exit code 0 and the sha256 of the results.csv it left: a
point killed (or crashed) after writing results.csv is not finished, and is rerun.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import pathlib
import re
import tomllib
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from dlm import cli, outputs

SEED_FIELDS = ("seed", "seeds", "first_seed")
Grid = dict[str, list[str]]


class SweepError(ValueError):
    """A bad grid, shard or run; the message names the field, file, point or log."""


def _value_text(v: Any) -> str:
    """A grid-file value as --set text: lists comma-joined, booleans lower-case."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ",".join(_value_text(x) for x in v)
    return str(v)


def _is_tuple_field(cfg: Any, name: str) -> bool:
    try:
        return isinstance(cli.get_field(cfg, name), (tuple, list))
    except cli.ConfigError:         # check_grid reports the unknown field
        return False


def parse_grid_args(items: Sequence[str], cfg: Any) -> Grid:
    """`--grid FIELD=v1,v2,...` items -> {field: [value text]}. A tuple field's values are
    themselves comma lists, so its grid values are separated by ';' (knob=0.1,1;10,100)."""
    grid: Grid = {}
    for item in items:
        if "=" not in item:
            raise SweepError(f"--grid expects FIELD=V1,V2,..., got {item!r}")
        name, text = item.split("=", 1)
        sep = ";" if _is_tuple_field(cfg, name) else ","
        add_axis(grid, name, [v.strip() for v in text.split(sep)], f"--grid {item!r}")
    return grid


def load_grid_file(path: pathlib.Path) -> Grid:
    """A JSON or TOML file mapping each field to a list of values ({"k": [2, 4]})."""
    path = pathlib.Path(path)
    try:
        if path.suffix == ".toml":
            raw = tomllib.loads(path.read_text())
        else:
            raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SweepError(f"--grid-file {path}: cannot read it: {err}") from None
    if not isinstance(raw, dict):
        raise SweepError(f"--grid-file {path}: expected a mapping FIELD -> list of values")
    grid: Grid = {}
    for name, values in raw.items():
        if not isinstance(values, list):
            raise SweepError(f"--grid-file {path}: field {name!r} needs a list of values, "
                             f"got {values!r}")
        add_axis(grid, name, [_value_text(v) for v in values], f"--grid-file {path}")
    return grid


def add_axis(grid: Grid, name: str, values: list[str], where: str) -> None:
    """Add one field's values to `grid`; a field given twice or without values is an error."""
    if name in grid:
        raise SweepError(f"{where}: field {name!r} is already a grid axis")
    if not values or any(v == "" for v in values):
        raise SweepError(f"{where}: field {name!r} has an empty value")
    if len(set(values)) != len(values):
        raise SweepError(f"{where}: field {name!r} repeats a value: {values}")
    grid[name] = list(values)


def check_grid(grid: Grid, cfg: Any, script: str) -> dict[str, list[Any]]:
    """Validate every axis against the script's config dataclass; returns the typed values
    (as the script will parse them) per field. A field may be a dotted path into a
    sub-config (world.p_marker). Seeds as an axis is an error."""
    for name in grid:
        if name.rsplit(".", 1)[-1] in SEED_FIELDS:
            raise SweepError(f"--grid {name}=...: seeds are not a grid axis; a setting's seeds "
                             f"run in one process (vmapped where shapes allow): use --set "
                             f"seeds=N (and --set first_seed=S)")
        try:
            cli.get_field(cfg, name)
        except cli.ConfigError as err:
            raise SweepError(f"--grid {name}: {script} has no config field {name!r} "
                             f"({str(err).removeprefix('--set: ')})") from None
    typed = {}
    for name, values in grid.items():
        try:
            typed[name] = [cli.get_field(cli.apply_overrides(cfg, [f"{name}={v}"]), name)
                           for v in values]
        except cli.ConfigError as err:
            raise SweepError(f"--grid {name}: {err}") from None
        canon = [_canonical(v) for v in typed[name]]
        for j, c in enumerate(canon):   # 0.3 and 0.30 would be one point run twice
            if c in canon[:j]:
                raise SweepError(f"--grid {name}: {values[canon.index(c)]!r} and {values[j]!r} "
                                 f"are the same value")
    return typed


def _canonical(v: Any) -> str:
    """A typed value's text for slugs, so 0.3, 0.30 and 3e-1 name one folder (1.0 -> 1)."""
    if isinstance(v, float) and not isinstance(v, bool):
        return str(int(v)) if v.is_integer() and abs(v) < 1e16 else repr(v)
    if isinstance(v, (list, tuple)):
        return ",".join(_canonical(x) for x in v)
    return _value_text(v)


def point_values(point: Mapping[str, str], grid: Grid,
                 typed: Mapping[str, list[Any]]) -> dict[str, Any]:
    """A point's values as the script parses them (from check_grid's typed values)."""
    return {k: typed[k][grid[k].index(v)] for k, v in point.items()}


def expand(grid: Grid) -> list[dict[str, str]]:
    """Every combination of the axes' values, the first axis varying slowest."""
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]


def slug(point: Mapping[str, Any]) -> str:
    """A point's directory name: field=value pairs joined by '__', filesystem-safe, stable;
    long ones end in a hash of the full text. Give it typed values (point_values) so that
    equal values spelled differently (0.3, 0.30) get one name; text is used as it is."""
    text = "__".join(f"{k}={_canonical(v)}" for k, v in point.items()) or "default"
    safe = re.sub(r"[^A-Za-z0-9._,=+-]", "-", text)
    if len(safe) > 120 or safe != text:
        safe = f"{safe[:100]}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"
    return safe


def resolve_shard(shard: str | None, shards: int | None,
                  env: Mapping[str, str] = os.environ) -> tuple[int, int]:
    """(i, n): this process runs the points whose index % n == i (0-based).

    --shard i/n wins; else i comes from $SLURM_ARRAY_TASK_ID or $JOB_COMPLETION_INDEX
    (Kubernetes indexed jobs) and n from --shards or $SLURM_ARRAY_TASK_COUNT; else (0, 1).
    """
    if shard is not None:
        m = re.fullmatch(r"(\d+)/(\d+)", shard.strip())
        if not m:
            raise SweepError(f"--shard expects i/n (0-based, e.g. 0/4), got {shard!r}")
        i, n = int(m[1]), int(m[2])
    else:
        index = env.get("SLURM_ARRAY_TASK_ID") or env.get("JOB_COMPLETION_INDEX")
        count = shards or env.get("SLURM_ARRAY_TASK_COUNT")
        if index is None:
            if shards:
                raise SweepError("--shards N needs the shard index: --shard i/N, or "
                                 "$SLURM_ARRAY_TASK_ID / $JOB_COMPLETION_INDEX")
            return 0, 1
        if count is None:
            raise SweepError(f"shard index {index} from the environment but no shard count: "
                             "pass --shards N (or --shard i/n)")
        i, n = int(index), int(count)
    if n < 1 or not 0 <= i < n:
        raise SweepError(f"shard {i}/{n}: need 0 <= i < n (indices are 0-based; SLURM: "
                         f"--array=0-{max(n - 1, 0)})")
    return i, n


def shard_indices(n_points: int, i: int, n: int) -> list[int]:
    return [p for p in range(n_points) if p % n == i]


def shard_count_from_states(out: pathlib.Path) -> int | None:
    """The n of the sweep.shard-i-of-n.json files the shards left in `out` (each shard writes
    its own as it starts); None when there are none or they disagree (resharded)."""
    counts = {int(m[1]) for f in pathlib.Path(out).glob("sweep.shard-*-of-*.json")
              if (m := re.fullmatch(r"sweep\.shard-\d+-of-(\d+)\.json", f.name))}
    return counts.pop() if len(counts) == 1 else None


# ---- a point's completion marker -------------------------------------------------------------
MARKER = "exit.json"
DONE = "done"


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_marker(run_dir: pathlib.Path, exit_code: int, command: Sequence[str],
                 seconds: float) -> dict:
    """run_dir/exit.json, atomically, once the point's process has exited: its exit code and
    the checksum of the results.csv it left (None when it left none)."""
    results = pathlib.Path(run_dir) / "results.csv"
    marker = {"exit_code": exit_code, "seconds": round(seconds, 3), "command": list(command),
              "results_sha256": _sha256(results) if results.is_file() else None}
    outputs.write_json(pathlib.Path(run_dir) / MARKER, marker)
    return marker


def point_status(run_dir: pathlib.Path) -> str:
    """'done' only for a run that exited 0 and whose results.csv is the one it left; else
    'pending' (never started), 'failed (exit N)', or 'incomplete (why)'."""
    run_dir = pathlib.Path(run_dir)
    if not run_dir.exists():
        return "pending"
    try:
        marker = json.loads((run_dir / MARKER).read_text())
        code, sha = marker["exit_code"], marker["results_sha256"]
    except FileNotFoundError:
        return ("incomplete (results.csv but no exit.json: killed or crashed after writing it)"
                if (run_dir / "results.csv").exists() else "incomplete (no exit.json: killed?)")
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"incomplete (unreadable exit.json: {err})"
    if code != 0:
        return f"failed (exit {code})"
    if sha is None:
        return "failed (exit 0 without results.csv)"
    results = run_dir / "results.csv"
    if not results.is_file() or _sha256(results) != sha:
        return "incomplete (results.csv changed or removed after the run)"
    return DONE


def _agrees(column: pd.Series, value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return column.astype(str).str.lower().isin([str(value).lower()]).all()
    if isinstance(value, (int, float)) and pd.api.types.is_numeric_dtype(column):
        return bool(np.all([math.isclose(float(x), float(value), rel_tol=1e-9, abs_tol=1e-12)
                            for x in column]))
    return bool((column.astype(str) == str(value)).all())


def merge_results(frames: Sequence[tuple[str, pd.DataFrame, Mapping[str, Any]]]) -> pd.DataFrame:
    """Concatenate (slug, results frame, typed grid values) with the grid values as leading
    columns. A column the script already writes (e.g. entanglement, or p_marker for the
    axis world.p_marker) is kept once, under the axis's name, after checking that it agrees
    with the point's value."""
    out = []
    for name, frame, values in frames:
        frame = frame.copy()
        for axis, value in values.items():
            col = axis if axis in frame.columns else axis.rsplit(".", 1)[-1]
            if col in frame.columns:
                if not _agrees(frame[col], value):
                    raise SweepError(f"point {name}: results.csv column {col!r} has "
                                     f"{sorted(set(map(str, frame[col])))} but the grid set "
                                     f"{axis}={value!r}")
                frame = frame.drop(columns=col)
        lead = pd.DataFrame({c: [_value_text(v) if isinstance(v, (tuple, list)) else v]
                             * len(frame) for c, v in values.items()}, index=frame.index)
        out.append(pd.concat([lead, frame], axis=1))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()
