"""Data parallelism: 4 (forced host) devices train to the same losses as 1 device."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from dlm.train.sharding import make_mesh, maybe_initialize_distributed, replicate, shard_batch
from tests import _tiny_train as tiny

REPO = pathlib.Path(__file__).resolve().parents[2]


def _run_on_4_devices(out: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    return subprocess.run([sys.executable, "-m", "tests._tiny_train", str(out), *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=180)


def test_four_devices_match_one_device(tmp_path):
    out = tmp_path / "dp4"
    proc = _run_on_4_devices(out, "--steps", "6", "--ckpt-every", "3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    run4 = json.loads((out / "run.json").read_text())
    assert run4["n_devices"] == 4
    one = tiny.run(tmp_path / "dp1", n_steps=6, ckpt_every=3)
    assert jax.device_count() == 1
    np.testing.assert_allclose(run4["losses"], [r["loss"] for r in one.history], rtol=1e-5)
    got = np.load(out / "final.npz")
    for name, value in tiny.flat_params(one.state.params).items():
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.slow
def test_batch_not_divisible_by_devices_is_a_clear_error(tmp_path):
    proc = _run_on_4_devices(tmp_path / "bad", "--steps", "2", "--batch-size", "6")
    assert proc.returncode != 0
    assert "batch size 6, which is not divisible by the 4 devices" in proc.stderr


def test_shard_batch_checks_shapes():
    mesh = make_mesh()
    batch = shard_batch({"tokens": np.zeros((3, 2))}, mesh)   # 1 device: any size is fine
    assert batch["tokens"].shape == (3, 2)
    with pytest.raises(ValueError, match=r"\['n'\].*scalar"):
        shard_batch({"n": np.float32(1.0)}, mesh)


def test_replicate_places_tree_on_mesh():
    mesh = make_mesh()
    tree = replicate({"w": np.ones((2, 2))}, mesh)
    assert tree["w"].sharding.is_fully_replicated


def test_no_distributed_env_means_no_initialize(monkeypatch):
    for var in ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert maybe_initialize_distributed() is False
