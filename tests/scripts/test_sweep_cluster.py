"""The cluster files of scripts.sweep: the SLURM script (with an sbatch stand-in) and the
Kubernetes manifest."""
import json
import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from scripts import sweep as sweep_script
from tests import _sweep_fake


@pytest.fixture
def fake(tmp_path, monkeypatch):
    return _sweep_fake.install(tmp_path, monkeypatch)


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
