"""scripts.sweep end to end with a fake script (tests/_sweep_fake.py: same CLI, writes
results.csv in milliseconds): runs, resumes, failures, shards, merges, a dotted axis; the real
estimate sweep is @slow."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from dlm import sweep as S
from scripts import sweep as sweep_script
from tests import _sweep_fake


@pytest.fixture
def fake(tmp_path, monkeypatch):
    return _sweep_fake.install(tmp_path, monkeypatch)


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
    argv = ["estimate", "--preset", "tiny", "--grid", "world.entanglement=0,0.9", "--set",
            "seeds=1", "--set", "n_postings=1000", "--set", "n_stories=60", "--set",
            "estimator.folds=2", "--out", str(out)]
    assert sweep_script.main(argv) == 0
    merged = pd.read_csv(out / "results.csv")
    assert merged.columns[0] == "world.entanglement"
    assert set(merged["world.entanglement"]) == {0.0, 0.9}
    assert {"seed", "method", "quantity", "estimate"} <= set(merged.columns)


def test_a_dotted_axis_reaches_the_scripts_sub_config(fake, tmp_path):
    out = tmp_path / "sw"
    assert sweep_script.main([fake, "--grid", "world.p=0.2,0.8", "--out", str(out)]) == 0
    merged = pd.read_csv(out / "results.csv")
    assert list(merged.columns)[0] == "world.p" and "p" not in merged.columns
    assert merged["world.p"].tolist() == [0.2, 0.2, 0.8, 0.8]
    assert sorted(_calls(out)) == ["world.p=0.2", "world.p=0.8"]
    assert sweep_script.main([fake, "--grid", "world.q=1", "--out", str(out)]) == 2
