"""Run any script over a grid of settings, resumably and shardable; merge the results.

    python -m scripts.sweep estimate --preset quick --grid world.entanglement=0,0.3,0.6,0.9 \\
        --grid world.p_marker=0.8,1.0 [--set seeds=5] [--grid-file grid.json|grid.toml] \\
        [--data PATH] [--shard i/n] --out DIR [-- EXTRA SCRIPT ARGS]

Each point of the Cartesian grid runs as its own process
    python -m scripts.<NAME> --preset P --set ... --set FIELD=VALUE ... --out DIR/runs/<slug>
with its output in DIR/runs/<slug>/log.txt. When the process exits, DIR/runs/<slug>/exit.json
records its exit code and the sha256 of its results.csv; a point is finished only when that
says exit 0 and the checksum matches. Finished points are skipped, so a sweep (or one shard)
can be rerun after a failure or a killed job; an unfinished point's folder (e.g. results.csv
written, then killed) is cleared and the point rerun from scratch. The first failure stops
the sweep with the point and its log named. At the end (or with --merge-only) DIR gets
results.csv (every finished point's rows, the grid values as leading columns) and sweep.json
(grid, points, status, missing points). Points still missing (a dead shard, a failed or
killed point) are listed with their shard on stderr and in sweep.json; the exit code is then
3 (MISSING_EXIT) unless --allow-missing.

Grid values: comma-separated; for a tuple field (e.g. knob) separate the values with ';'
(--grid 'knob=0.1,1;10,100'). A grid file is JSON or TOML, mapping FIELD -> list of values.
Every field is checked against the script's config (its PRESETS) before anything runs.
Seeds are never an axis: a setting's seeds run in one process (--set seeds=N), which
vmaps over them where it can.

Sharding (array jobs): --shard i/n runs the points with index % n == i (0-based). Without
--shard, i is $SLURM_ARRAY_TASK_ID or $JOB_COMPLETION_INDEX (Kubernetes indexed jobs) and n
is --shards N or $SLURM_ARRAY_TASK_COUNT. Shards do not merge; when all are done, run the
same command with --merge-only (and --shards N, to name the shard of a missing point). Array
job files: scripts/cluster/sweep_slurm.sh and scripts/cluster/sweep_k8s.yaml.

Exit codes: 0 done; 2 bad arguments or a failed point; 3 merged with points missing.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd

from dlm import cli, outputs
from dlm import sweep as S

REPO = pathlib.Path(__file__).resolve().parents[1]
MISSING_EXIT = 3        # merged, but some points have no finished run (see sweep.json "missing")


def _module(name: str) -> str:
    """`estimate` -> scripts.estimate; a dotted name is any module with the same CLI."""
    return name if "." in name else f"scripts.{name}"


def _load_config(module: str, preset: str, sets: list[str]):
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        raise S.SweepError(f"cannot import {module}: {err}") from None
    presets = getattr(mod, "PRESETS", None)
    if not presets:
        raise S.SweepError(f"{module} has no PRESETS: its config fields cannot be checked")
    if preset not in presets:
        raise S.SweepError(f"{module}: unknown preset {preset!r}; presets: {', '.join(presets)}")
    try:
        return cli.apply_overrides(presets[preset], sets)
    except cli.ConfigError as err:
        raise S.SweepError(f"{module}: {err}") from None


def _command(args, module: str, point: dict, out: pathlib.Path, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", module, "--preset", args.preset]
    for item in args.overrides + [f"{k}={v}" for k, v in point.items()]:
        cmd += ["--set", item]
    if args.data is not None:
        cmd += ["--data", str(args.data.resolve())]
    return cmd + ["--out", str(out)] + extra


def _tail(path: pathlib.Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _child_setup():
    """A preexec_fn (Linux) that has the point SIGKILLed when the sweep dies, so a killed sweep
    leaves no point running that a rerun would race with; None where prctl is unavailable.
    libc is looked up here, in the parent: a forked child should not import."""
    if sys.platform != "linux":
        return None
    try:
        import ctypes
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def setup():
        prctl(1, signal.SIGKILL)                    # PR_SET_PDEATHSIG
        if os.getppid() != parent:                  # the sweep died before prctl
            os.kill(os.getpid(), signal.SIGKILL)
    return setup


def run_point(cmd: list[str], run_dir: pathlib.Path) -> int:
    """Run one point from an empty run_dir, its stdout and stderr into run_dir/log.txt; write
    run_dir/exit.json when it exits. Returns the exit code."""
    if run_dir.exists():        # an unfinished earlier run: nothing of it may be merged
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    t0 = time.perf_counter()
    with open(run_dir / "log.txt", "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env,
                            preexec_fn=_child_setup()).returncode
    S.write_marker(run_dir, rc, cmd, time.perf_counter() - t0)
    return rc


def _missing(points, slugs, status, n_shards: int | None) -> list[dict]:
    return [{"index": p, "slug": slugs[p], "values": points[p], "status": status[p],
             "shard": None if n_shards is None else f"{p % n_shards}/{n_shards}"}
            for p in range(len(points)) if status[p] != S.DONE]


def write_state(out: pathlib.Path, name: str, args, grid, points, slugs, shard,
                merged: bool, status: list[str], missing: list[dict] | None = None) -> dict:
    """sweep.json (or sweep.shard-i-of-n.json): the grid, every point and its status."""
    i, n = shard
    state = {"script": name, "preset": args.preset, "set": args.overrides, "data": args.data,
             "grid": grid, "shard": None if n == 1 else f"{i}/{n}", "merged": merged,
             "points": [{"index": p, "slug": slugs[p], "values": points[p], "status": status[p]}
                        for p in range(len(points))]}
    if missing is not None:
        state["missing"] = missing
    outputs.write_json(out / ("sweep.json" if n == 1 or merged else
                              f"sweep.shard-{i}-of-{n}.json"), state)
    return state


def merge(out: pathlib.Path, grid, typed, points, slugs, status: list[str]) -> pd.DataFrame:
    """DIR/results.csv from every finished point (grid values as leading columns, typed as
    the script parses them). A finished point whose results.csv cannot be read is marked
    in `status` instead of stopping the merge."""
    frames = []
    for p, point in enumerate(points):
        if status[p] != S.DONE:
            continue
        path = out / "runs" / slugs[p] / "results.csv"
        try:
            frames.append((slugs[p], pd.read_csv(path), S.point_values(point, grid, typed)))
        except (OSError, ValueError) as err:       # pandas' parse errors are ValueErrors
            status[p] = f"incomplete (unreadable results.csv: {err})"
    frame = S.merge_results(frames)
    outputs.write_csv(out / "results.csv", frame)
    return frame


def parse_args(argv: list[str]):
    extra = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("script", help="a scripts/ module (estimate, compare_rewards, ...) or any "
                                  "dotted module with the same CLI")
    p.add_argument("--preset", default="quick", help="the script's preset (default: quick)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override for every point (e.g. seeds=5); repeatable")
    p.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2",
                   help="a grid axis, FIELD dotted into a sub-config where the script has one "
                        "(world.p_marker=0.8,1); tuple fields: values separated by ';'; "
                        "repeatable")
    p.add_argument("--grid-file", type=pathlib.Path, default=None,
                   help="JSON or TOML file: FIELD -> list of values (more axes)")
    p.add_argument("--data", type=pathlib.Path, default=None, help="passed on as --data")
    p.add_argument("--shard", default=None, metavar="i/n",
                   help="run the points with index %% n == i (0-based)")
    p.add_argument("--shards", type=int, default=None, metavar="N",
                   help="shard count when the index comes from $SLURM_ARRAY_TASK_ID or "
                        "$JOB_COMPLETION_INDEX (default $SLURM_ARRAY_TASK_COUNT)")
    p.add_argument("--merge-only", action="store_true",
                   help="run nothing; merge the finished points into DIR/results.csv")
    p.add_argument("--allow-missing", action="store_true",
                   help=f"exit 0 after a merge with points missing (else {MISSING_EXIT})")
    p.add_argument("--dry-run", action="store_true", help="list this shard's points and exit")
    p.add_argument("--out", required=True, type=pathlib.Path, help="sweep directory")
    args = p.parse_args(argv)
    args.out = args.out.resolve()
    return args, extra


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return _main(args, extra)
    except S.SweepError as err:
        print(f"sweep: {err}", file=sys.stderr)
        return 2


def _main(args, extra: list[str]) -> int:
    from tqdm.auto import tqdm

    module = _module(args.script)
    cfg = _load_config(module, args.preset, args.overrides)
    grid = S.parse_grid_args(args.grid, cfg)
    if args.grid_file is not None:
        for name, values in S.load_grid_file(args.grid_file).items():
            S.add_axis(grid, name, values, f"--grid-file {args.grid_file}")
    set_fields = {o.split("=", 1)[0] for o in args.overrides}
    if set_fields & set(grid):
        raise S.SweepError(f"{sorted(set_fields & set(grid))}: both --set and a grid axis")
    typed = S.check_grid(grid, cfg, module)
    points = S.expand(grid)
    slugs = [S.slug(S.point_values(p, grid, typed)) for p in points]
    if args.merge_only:         # the shard count only names the shard of a missing point
        n = (S.resolve_shard(args.shard, None)[1] if args.shard else
             args.shards or S.shard_count_from_states(args.out))
        return _merge(args, grid, typed, points, slugs, n)
    shard = S.resolve_shard(args.shard, args.shards)
    mine = S.shard_indices(len(points), *shard)
    if args.dry_run:
        for p in mine:
            print(f"{p}\t{slugs[p]}\t" + " ".join(_command(args, module, points[p],
                                                             args.out / "runs" / slugs[p], extra)))
        return 0
    # statuses read once (each checks a checksum), then kept up to date as points run
    status = [S.point_status(args.out / "runs" / s) for s in slugs]
    todo = [p for p in mine if status[p] != S.DONE]
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=f"sweep {args.script}",
               unit="point")
    for p in todo:
        run_dir = args.out / "runs" / slugs[p]
        if run_dir.exists():
            bar.write(f"sweep: point {p} ({slugs[p]}) is {status[p]}; rerunning it from scratch",
                      file=sys.stderr)
        status[p] = "running"   # on record before it starts, so a killed shard shows where
        write_state(args.out, args.script, args, grid, points, slugs, shard, False, status)
        bar.set_postfix_str(slugs[p])
        t0 = time.perf_counter()
        rc = run_point(_command(args, module, points[p], run_dir, extra), run_dir)
        status[p] = S.point_status(run_dir)
        if status[p] != S.DONE:
            bar.close()
            write_state(args.out, args.script, args, grid, points, slugs, shard, False, status)
            raise S.SweepError(
                f"point {p} ({slugs[p]}) failed with exit code {rc}"
                f"{'' if rc else ' and wrote no results.csv'} after "
                f"{time.perf_counter() - t0:.0f} s; log: {run_dir / 'log.txt'}\n"
                f"--- last lines ---\n{_tail(run_dir / 'log.txt')}")
        bar.update(1)
    bar.close()
    if shard[1] == 1:
        return _merge(args, grid, typed, points, slugs, 1)
    write_state(args.out, args.script, args, grid, points, slugs, shard, False, status)
    print(f"sweep: shard {shard[0]}/{shard[1]} finished {len(mine)} points; when every "
          "shard is done, merge with the same command and --merge-only")
    return 0


def _merge(args, grid, typed, points, slugs, n_shards: int | None) -> int:
    status = [S.point_status(args.out / "runs" / s) for s in slugs]
    frame = merge(args.out, grid, typed, points, slugs, status)
    missing = _missing(points, slugs, status, n_shards)
    write_state(args.out, args.script, args, grid, points, slugs, (0, 1), True, status, missing)
    print(f"sweep: {len(points) - len(missing)}/{len(points)} points done; {len(frame)} rows -> "
          f"{args.out / 'results.csv'}")
    if not missing:
        return 0
    print(f"sweep: {len(missing)} point(s) missing (listed under \"missing\" in "
          f"{args.out / 'sweep.json'}):", file=sys.stderr)
    for m in missing:
        values = " ".join(f"{k}={v}" for k, v in m["values"].items())
        print(f"  point {m['index']} [{values}] shard {m['shard'] or '? (pass --shards N)'}: "
              f"{m['status']}", file=sys.stderr)
    shards = sorted({m["shard"] for m in missing if m["shard"]}, key=lambda t: int(t.split("/")[0]))
    if shards:
        print(f"sweep: rerun shard(s) {', '.join(shards)} (the same command with --shard i/n), "
              "then merge again", file=sys.stderr)
    return 0 if args.allow_missing else MISSING_EXIT


if __name__ == "__main__":
    sys.exit(main())
