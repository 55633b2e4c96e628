"""scripts.sweep and dlm.sweep: grids, validation, shards, resumable runs, merged results.

The end-to-end tests run a fake script (written to tmp_path: same CLI, writes results.csv
in milliseconds) so they take seconds; the real estimate sweep is @slow.
"""
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from dlm import sweep as S
from scripts import sweep as sweep_script

FAKE = textwrap.dedent('''
    import argparse, dataclasses, os, pathlib, sys, time
    import pandas as pd
    from dlm import cli, outputs

    @dataclasses.dataclass(frozen=True)
    class FakeConfig:
        a: float = 0.0
        b: str = "x"
        seeds: int = 2
        knob: tuple = (1.0, 2.0)

    PRESETS = {"quick": FakeConfig(), "other": FakeConfig(b="y")}

    if __name__ == "__main__":
        p = argparse.ArgumentParser()
        cli.add_common_args(p, PRESETS)
        p.add_argument("--data", type=pathlib.Path, default=None)
        args = p.parse_args()
        cfg = cli.resolve_config(args, PRESETS)
        with open(args.out.parent.parent / "calls.txt", "a") as f:
            f.write(args.out.name + "\\n")
        if cfg.b == "boom":
            print("the fake script exploded")
            sys.exit(3)
        rows = [{"seed": s, "a": cfg.a, "knob_sum": sum(cfg.knob), "value": 10 * cfg.a + s}
                for s in range(cfg.seeds)]
        # FAKE_CRASH / FAKE_HANG = a slug: write wrong results.csv, then exit 5 / hang
        if args.out.name in (os.environ.get("FAKE_CRASH"), os.environ.get("FAKE_HANG")):
            rows = [dict(r, value=-1.0) for r in rows]
        outputs.write_csv(args.out / "results.csv", pd.DataFrame(rows))
        if args.out.name == os.environ.get("FAKE_CRASH"):
            sys.exit(5)
        if args.out.name == os.environ.get("FAKE_HANG"):
            (args.out / "pid.txt").write_text(str(os.getpid()))
            print("hanging after results.csv", flush=True)
            time.sleep(600)
''')


@pytest.fixture
def fake(tmp_path, monkeypatch):
    pkg = tmp_path / "fakepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "fake_script.py").write_text(FAKE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    for var in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "JOB_COMPLETION_INDEX",
                "FAKE_CRASH", "FAKE_HANG"):
        monkeypatch.delenv(var, raising=False)
    return "fakepkg.fake_script"


def _cfg():
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        entanglement: float = 0.6
        knob: tuple = (0.1, 1.0)
        seeds: int = 3
        name: str = "a"
    return Cfg()


# ---- grid, validation, slugs, shards -------------------------------------------------------------
def test_grid_parsing_expansion_and_slugs():
    grid = S.parse_grid_args(["entanglement=0,0.3", "knob=0.1,1;10,100"], _cfg())
    assert grid == {"entanglement": ["0", "0.3"], "knob": ["0.1,1", "10,100"]}
    points = S.expand(grid)
    assert points == [{"entanglement": "0", "knob": "0.1,1"}, {"entanglement": "0", "knob": "10,100"},
                      {"entanglement": "0.3", "knob": "0.1,1"},
                      {"entanglement": "0.3", "knob": "10,100"}]
    assert S.slug(points[1]) == "entanglement=0__knob=10,100"
    odd = {"name": "a b/c"}
    assert S.slug(odd) == S.slug(dict(odd)) and "/" not in S.slug(odd) and " " not in S.slug(odd)
    assert S.slug(odd) != S.slug({"name": "a-b-c"})           # replaced characters -> a hash
    typed = S.check_grid(grid, _cfg(), "x")
    assert typed == {"entanglement": [0.0, 0.3], "knob": [(0.1, 1.0), (10.0, 100.0)]}


def test_grid_validation_errors():
    with pytest.raises(S.SweepError, match="no config field 'entanglment'.*entanglement"):
        S.check_grid({"entanglment": ["1"]}, _cfg(), "scripts.x")
    for field in ("seed", "seeds", "first_seed"):
        with pytest.raises(S.SweepError, match="not a grid axis.*--set seeds=N"):
            S.check_grid({field: ["1", "2"]}, _cfg(), "scripts.x")
    with pytest.raises(S.SweepError, match="entanglement.*'abc'"):
        S.check_grid({"entanglement": ["abc"]}, _cfg(), "scripts.x")
    with pytest.raises(S.SweepError, match="repeats a value"):
        S.parse_grid_args(["entanglement=0,0"], _cfg())
    with pytest.raises(S.SweepError, match="already a grid axis"):
        S.parse_grid_args(["entanglement=0", "entanglement=1"], _cfg())


def test_grid_files_json_and_toml(tmp_path):
    (tmp_path / "g.json").write_text(json.dumps({"entanglement": [0, 0.5], "knob": [[1, 2], [3]]}))
    (tmp_path / "g.toml").write_text('entanglement = [0, 0.5]\nknob = [[1, 2], [3]]\n')
    want = {"entanglement": ["0", "0.5"], "knob": ["1,2", "3"]}
    assert S.load_grid_file(tmp_path / "g.json") == want
    assert S.load_grid_file(tmp_path / "g.toml") == want
    (tmp_path / "bad.json").write_text(json.dumps({"entanglement": 0.5}))
    with pytest.raises(S.SweepError, match="bad.json: field 'entanglement' needs a list"):
        S.load_grid_file(tmp_path / "bad.json")


def test_shards_partition_the_points_and_come_from_the_environment():
    parts = [S.shard_indices(10, i, 3) for i in range(3)]
    assert sorted(sum(parts, [])) == list(range(10)) and parts[1] == [1, 4, 7]
    assert S.resolve_shard("1/3", None, {}) == (1, 3)
    assert S.resolve_shard(None, None, {}) == (0, 1)
    slurm = {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert S.resolve_shard(None, None, slurm) == (2, 4)
    assert S.resolve_shard("0/2", None, slurm) == (0, 2)              # explicit wins
    assert S.resolve_shard(None, 5, {"JOB_COMPLETION_INDEX": "3"}) == (3, 5)
    with pytest.raises(S.SweepError, match="no shard count"):
        S.resolve_shard(None, None, {"JOB_COMPLETION_INDEX": "3"})
    with pytest.raises(S.SweepError, match="0 <= i < n"):
        S.resolve_shard("4/4", None, {})
    with pytest.raises(S.SweepError, match="i/n"):
        S.resolve_shard("1-4", None, {})


def test_merge_keeps_a_column_the_script_writes_once_and_checks_it():
    frame = pd.DataFrame({"seed": [0, 1], "entanglement": [0.3, 0.3], "x": [1.0, 2.0]})
    merged = S.merge_results([("p", frame, {"entanglement": 0.3, "k": 4.0})])
    assert list(merged.columns) == ["entanglement", "k", "seed", "x"]
    assert merged.k.tolist() == [4.0, 4.0]
    with pytest.raises(S.SweepError, match="point p: .*'entanglement'.*entanglement=0.6"):
        S.merge_results([("p", frame, {"entanglement": 0.6})])


# ---- end to end with the fake script -------------------------------------------------------------
def _calls(out):
    path = out / "calls.txt"
    return path.read_text().split() if path.exists() else []


def test_sweep_runs_every_point_once_merges_and_resumes(fake, tmp_path):
    out = tmp_path / "sw"
    argv = [fake, "--grid", "a=0,1.5", "--grid", "knob=1,2;5", "--set", "seeds=3", "--out", str(out)]
    assert sweep_script.main(argv) == 0
    merged = pd.read_csv(out / "results.csv")
    assert list(merged.columns)[:2] == ["a", "knob"] and list(merged.columns).count("a") == 1
    assert len(merged) == 4 * 3                                    # 4 points x 3 seeds
    assert sorted(set(merged.knob)) == ["1.0,2.0", "5.0"]
    assert (merged.value == 10 * merged.a + merged.seed).all()
    assert sorted(set(merged.knob_sum)) == [3.0, 5.0]
    state = json.loads((out / "sweep.json").read_text())
    assert [p["status"] for p in state["points"]] == ["done"] * 4
    assert state["grid"] == {"a": ["0", "1.5"], "knob": ["1,2", "5"]}
    assert len(_calls(out)) == 4
    assert sweep_script.main(argv) == 0                            # resumed: nothing reruns
    assert len(_calls(out)) == 4


def test_a_failed_point_stops_the_sweep_naming_point_and_log(fake, tmp_path, capsys):
    out = tmp_path / "sw"
    argv = [fake, "--grid", "b=ok,boom,later", "--out", str(out)]
    assert sweep_script.main(argv) == 2
    err = capsys.readouterr().err
    assert "point 1 (b=boom) failed with exit code 3" in err
    assert str(out / "runs" / "b=boom" / "log.txt") in err and "exploded" in err
    assert _calls(out) == ["b=ok", "b=boom"]                       # stopped at the failure
    state = json.loads((out / "sweep.json").read_text())
    assert [p["status"] for p in state["points"]] == ["done", "failed (exit 3)", "pending"]


def test_shards_then_merge_only_equal_one_unsharded_sweep(fake, tmp_path, monkeypatch):
    grid = ["--grid", "a=0,1,2", "--grid", "b=x,y"]
    assert sweep_script.main([fake, *grid, "--out", str(tmp_path / "one")]) == 0
    sharded = tmp_path / "sharded"
    assert sweep_script.main([fake, *grid, "--shard", "0/2", "--out", str(sharded)]) == 0
    assert not (sharded / "results.csv").exists()                  # shards do not merge
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    assert sweep_script.main([fake, *grid, "--out", str(sharded)]) == 0
    assert sorted(_calls(sharded)) == sorted(_calls(tmp_path / "one"))
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    monkeypatch.delenv("SLURM_ARRAY_TASK_COUNT")
    assert sweep_script.main([fake, *grid, "--merge-only", "--out", str(sharded)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(sharded / "results.csv"),
                                  pd.read_csv(tmp_path / "one" / "results.csv"))


def test_bad_preset_and_seed_axis_are_refused_before_anything_runs(fake, tmp_path, capsys):
    out = tmp_path / "sw"
    assert sweep_script.main([fake, "--preset", "nope", "--grid", "a=1", "--out", str(out)]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert sweep_script.main([fake, "--grid", "seeds=1,2", "--out", str(out)]) == 2
    assert "--set seeds=N" in capsys.readouterr().err
    assert not out.exists()


def test_equal_values_spelled_differently_share_a_slug_and_cannot_repeat():
    typed = S.check_grid({"entanglement": ["0.30", "1"]}, _cfg(), "x")
    assert S.slug(S.point_values({"entanglement": "0.30"}, {"entanglement": ["0.30", "1"]},
                                 typed)) == "entanglement=0.3"
    typed = S.check_grid({"entanglement": ["3e-1", "1.0"], "knob": ["1,2.50"]}, _cfg(), "x")
    grid = {"entanglement": ["3e-1", "1.0"], "knob": ["1,2.50"]}
    assert [S.slug(S.point_values(p, grid, typed)) for p in S.expand(grid)] == \
        ["entanglement=0.3__knob=1,2.5", "entanglement=1__knob=1,2.5"]
    with pytest.raises(S.SweepError, match="'0.3' and '0.30' are the same value"):
        S.check_grid({"entanglement": ["0.3", "0.30"]}, _cfg(), "x")


def test_point_status_needs_exit_0_and_the_results_csv_it_left(tmp_path):
    run = tmp_path / "run"
    assert S.point_status(run) == "pending"
    run.mkdir()
    assert S.point_status(run).startswith("incomplete (no exit.json")
    (run / "results.csv").write_text("x\n1\n")
    assert S.point_status(run).startswith("incomplete (results.csv but no exit.json")
    S.write_marker(run, 0, ["cmd"], 1.0)
    assert S.point_status(run) == "done"
    (run / "results.csv").write_text("x\n2\n")                   # not the file the run left
    assert S.point_status(run).startswith("incomplete (results.csv changed")
    S.write_marker(run, 7, ["cmd"], 1.0)
    assert S.point_status(run) == "failed (exit 7)"
    (run / "results.csv").unlink()
    S.write_marker(run, 0, ["cmd"], 1.0)
    assert S.point_status(run) == "failed (exit 0 without results.csv)"
    (run / "exit.json").write_text('{"exit_co')                      # torn by hand
    assert S.point_status(run).startswith("incomplete (unreadable exit.json")


def _alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_a_sweep_killed_in_the_middle_of_a_point_resumes_to_the_uninterrupted_result(
        fake, tmp_path, capsys):
    grid = [fake, "--grid", "a=0,1,2", "--set", "seeds=2"]
    out = tmp_path / "killed"
    env = dict(os.environ, FAKE_HANG="a=1",
               PYTHONPATH=os.pathsep.join([str(tmp_path), str(sweep_script.REPO)]))
    with open(tmp_path / "sweep.err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "scripts.sweep", *grid, "--out", str(out)],
                                cwd=sweep_script.REPO, env=env, stdout=err, stderr=err)
    killed = out / "runs" / "a=1"
    deadline = time.monotonic() + 600                # a guard against hanging, not a speed test
    while "hanging" not in ((killed / "log.txt").read_text() if (killed / "log.txt").exists()
                            else ""):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the sweep never reached point a=1: {(tmp_path / 'sweep.err').read_text()}")
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)               # the sweep only, as a lost node would
    proc.wait()
    if sys.platform == "linux":                     # the point dies with it (PR_SET_PDEATHSIG)
        child = int((killed / "pid.txt").read_text())
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child)
    assert (killed / "results.csv").exists() and not (killed / "exit.json").exists()
    assert S.point_status(killed).startswith("incomplete (results.csv but no exit.json")
    assert not (out / "results.csv").exists()
    assert _calls(out) == ["a=0", "a=1"]
    assert [p["status"] for p in json.loads((out / "sweep.json").read_text())["points"]] == \
        ["done", "running", "pending"]                                  # where it was killed

    assert sweep_script.main([*grid, "--out", str(out)]) == 0          # resumed
    assert "point 1 (a=1) is incomplete (results.csv but no exit.json" in capsys.readouterr().err
    assert _calls(out) == ["a=0", "a=1", "a=1", "a=2"]                  # a=0 kept, a=1 rerun
    assert not (killed / "pid.txt").exists()                            # from scratch
    assert sweep_script.main([*grid, "--out", str(tmp_path / "whole")]) == 0
    resumed = pd.read_csv(out / "results.csv")
    pd.testing.assert_frame_equal(resumed, pd.read_csv(tmp_path / "whole" / "results.csv"))
    assert (resumed.value == 10 * resumed.a + resumed.seed).all() and len(resumed) == 6


def test_a_point_that_wrote_results_then_crashed_is_rerun(fake, tmp_path, monkeypatch, capsys):
    argv = [fake, "--grid", "a=0,1", "--out", str(tmp_path / "sw")]
    runs = tmp_path / "sw" / "runs"
    monkeypatch.setenv("FAKE_CRASH", "a=1")
    assert sweep_script.main(argv) == 2
    assert "point 1 (a=1) failed with exit code 5" in capsys.readouterr().err
    assert (runs / "a=1" / "results.csv").exists()
    assert S.point_status(runs / "a=1") == "failed (exit 5)"
    monkeypatch.delenv("FAKE_CRASH")
    assert sweep_script.main(argv) == 0
    assert _calls(tmp_path / "sw") == ["a=0", "a=1", "a=1"]
    merged = pd.read_csv(tmp_path / "sw" / "results.csv")
    assert merged.a.tolist() == [0, 0, 1, 1] and merged.seed.tolist() == [0, 1, 0, 1]
    assert (merged.value == 10 * merged.a + merged.seed).all()       # not the crashed run's -1


def test_merge_with_a_missing_shard_names_its_points(fake, tmp_path, capsys):
    out = tmp_path / "sw"
    grid = [fake, "--grid", "a=0,1,2,3", "--set", "seeds=2", "--out", str(out)]
    assert sweep_script.main([*grid, "--shard", "0/2"]) == 0            # shard 1/2 never runs
    half = out / "runs" / "a=1"                      # ...but one of its points was half written
    half.mkdir(parents=True)
    (half / "results.csv").write_text("seed,a,kn")
    capsys.readouterr()
    assert sweep_script.main([*grid, "--merge-only"]) == sweep_script.MISSING_EXIT == 3
    err = capsys.readouterr().err
    assert "2 point(s) missing" in err
    assert "point 1 [a=1] shard 1/2: incomplete (results.csv but no exit.json" in err
    assert "point 3 [a=3] shard 1/2: pending" in err and "rerun shard(s) 1/2" in err
    state = json.loads((out / "sweep.json").read_text())
    assert [(m["index"], m["values"], m["shard"]) for m in state["missing"]] == \
        [(1, {"a": "1"}, "1/2"), (3, {"a": "3"}, "1/2")]
    merged = pd.read_csv(out / "results.csv")                            # the finished ones
    assert merged.a.tolist() == [0, 0, 2, 2] and (merged.value == 10 * merged.a + merged.seed).all()
    assert sweep_script.main([*grid, "--merge-only", "--allow-missing", "--shards", "2"]) == 0
    assert sweep_script.main([*grid, "--shard", "1/2"]) == 0
    assert sweep_script.main([*grid, "--merge-only"]) == 0
    assert json.loads((out / "sweep.json").read_text())["missing"] == []
    merged = pd.read_csv(out / "results.csv")
    assert merged.a.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert (merged.value == 10 * merged.a + merged.seed).all()


@pytest.mark.slow
def test_real_estimate_sweep_tiny(tmp_path):
    out = tmp_path / "est"
    argv = ["estimate", "--preset", "tiny", "--grid", "entanglement=0,0.9", "--set", "seeds=1",
            "--set", "n_postings=1000", "--set", "n_stories=60", "--set", "folds=2",
            "--out", str(out)]
    assert sweep_script.main(argv) == 0
    merged = pd.read_csv(out / "results.csv")
    assert merged.columns[0] == "entanglement" and set(merged.entanglement) == {0.0, 0.9}
    assert {"seed", "method", "quantity", "estimate"} <= set(merged.columns)


# ---- cluster files -------------------------------------------------------------------------------
CLUSTER = sweep_script.REPO / "scripts" / "cluster"

FAKE_SBATCH = textwrap.dedent('''
    # sbatch stand-in: runs an --array job's tasks at once (skipping $FAKE_SBATCH_DEAD, a lost
    # node) with SLURM's variables, and a dependent job after them; prints ID;CLUSTER.
    import json, os, subprocess, sys
    args = sys.argv[1:]
    opts = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
    with open(os.environ["FAKE_SBATCH_LOG"], "a") as f:
        f.write(json.dumps(args) + "\\n")
    job = 100 + sum(1 for _ in open(os.environ["FAKE_SBATCH_LOG"]))
    tasks = [None]
    if "array" in opts:
        lo, hi = map(int, opts["array"].split("%")[0].split("-"))
        tasks = [i for i in range(lo, hi + 1) if str(i) != os.environ.get("FAKE_SBATCH_DEAD")]
    for i in tasks:
        env = dict(os.environ)
        if i is not None:
            env.update(SLURM_ARRAY_TASK_ID=str(i), SLURM_ARRAY_TASK_COUNT=str(hi - lo + 1))
        with open(opts["output"].replace("%a", str(i)), "w") as out:
            rc = subprocess.run(["bash", "-c", opts["wrap"]], cwd=opts["chdir"], env=env,
                                stdout=out, stderr=subprocess.STDOUT).returncode
        with open(os.environ["FAKE_SBATCH_LOG"] + ".rc", "a") as f:
            f.write(f"{job} {i} {rc}\\n")
    print(f"{job};cluster")
''')


def test_slurm_script_submits_shards_and_an_afterany_merge_that_names_a_dead_shard(fake, tmp_path):
    script = CLUSTER / "sweep_slurm.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f"#!{sys.executable}\n" + FAKE_SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    log = tmp_path / "sbatch.log"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PYTHON=sys.executable,
               FAKE_SBATCH_LOG=str(log), FAKE_SBATCH_DEAD="1",
               PYTHONPATH=os.pathsep.join([str(tmp_path), str(sweep_script.REPO)]))
    out = tmp_path / "sw"
    # ';' in a value and the trailing "-- args" must survive sbatch --wrap
    res = subprocess.run(["bash", str(script), "2", str(out), fake, "--grid", "a=0,1",
                          "--grid", "knob=1,2;5", "--set", "seeds=2", "--"],
                         env=env, capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "array job 101 (--array=0-1), merge job 102 (afterany:101)" in res.stdout
    shards_call, merge_call = (json.loads(line) for line in log.read_text().splitlines())
    assert "--array=0-1" in shards_call and "--dependency=afterany:101" in merge_call
    assert log.with_suffix(".log.rc").read_text().split("\n")[:2] == ["101 0 0", "102 None 3"]
    state = json.loads((out / "sweep.json").read_text())
    assert [(m["index"], m["values"], m["shard"], m["status"]) for m in state["missing"]] == \
        [(1, {"a": "0", "knob": "5"}, "1/2", "pending"), (3, {"a": "1", "knob": "5"}, "1/2", "pending")]
    merged = pd.read_csv(out / "results.csv")
    assert merged.a.tolist() == [0, 0, 1, 1] and set(merged.knob) == {"1.0,2.0"}
    assert (merged.value == 10 * merged.a + merged.seed).all()
    merge_log = (out / "slurm" / "merge.out").read_text()
    assert "2 point(s) missing" in merge_log and "point 3 [a=1 knob=5] shard 1/2: pending" in merge_log


def test_k8s_manifest_is_an_indexed_job_and_a_merge_of_the_same_sweep(tmp_path):
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed: manifest not parsed")
    docs = list(yaml.safe_load_all((CLUSTER / "sweep_k8s.yaml").read_text()))
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    shards, merge = by_name["Job", "dlm-sweep"]["spec"], by_name["Job", "dlm-sweep-merge"]["spec"]
    claim = by_name["PersistentVolumeClaim", "dlm-sweep"]
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    assert shards["completionMode"] == "Indexed" and 1 <= shards["parallelism"] <= shards["completions"]
    pods = [shards["template"]["spec"], merge["template"]["spec"]]
    (s_box,), (m_box,) = (p["containers"] for p in pods)
    args = s_box["args"]
    assert int(args[args.index("--shards") + 1]) == shards["completions"]
    assert m_box["args"] == args[:4] + ["--merge-only"] + args[4:]       # the same sweep, merged
    for pod, box in zip(pods, (s_box, m_box)):
        assert pod["restartPolicy"] == "Never"
        assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "dlm-sweep"
        mount = box["volumeMounts"][0]["mountPath"]
        assert args[args.index("--out") + 1].startswith(mount + "/")       # --out on the volume
    assert {d["metadata"]["labels"]["dlm-sweep/part"] for d in docs} == {"shards", "merge"}
    # the grid is valid for the script it names (fields checked, nothing run)
    argv = [*args, "--shard", "0/8", "--dry-run"]
    argv[argv.index("--out") + 1] = str(tmp_path / "sw")
    assert sweep_script.main(argv) == 0
