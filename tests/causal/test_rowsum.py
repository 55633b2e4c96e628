"""The sharded, chunked Newton MAP is the same fit as the in-memory one, on 1 device or 4."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from dlm.causal.design import build_design
from dlm.causal.fit import EstimatorConfig, fit
from dlm.causal.newton import _memory_sums
from dlm.causal.rowsum import ShardedRows
from tests.causal.test_estimator import simulate

REPO = pathlib.Path(__file__).resolve().parents[2]
N, CHUNK = 3001, 500          # 7 chunks per device on 1 device, the last one padded


def _fit(d, family, **cfg):
    c = EstimatorConfig(**cfg)
    if family == "binomial":
        return fit(d["s"], d["trials"], d["h"], d["conf"], c)
    return fit(None, None, d["h"], d["conf"], c, outcome=d["y"])


def test_level_sums_equal_numpy_sums():
    d = simulate(n=N, T=8, F=2, seed=5)
    x_g = build_design(d["conf"]).rows(d["conf"])
    X = x_g.with_dense_prefix(np.hstack([np.ones((N, 1)), d["h"]]))
    theta = np.random.default_rng(0).normal(0.0, 0.2, X.n_params)
    want = _memory_sums(X, d["s"], d["trials"])(theta)
    got = ShardedRows(X, d["s"], d["trials"], family="binomial", chunk=CHUNK).sums(theta)
    assert got[2].shape == (X.n_params, X.n_params)
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-8)
    only = ShardedRows(X, d["s"], d["trials"], family="binomial", chunk=CHUNK).sums(theta, False)
    assert only[2] is None and abs(only[0] - want[0]) < 1e-8 * abs(want[0])


@pytest.mark.parametrize("family", ["binomial", "normal"])
def test_chunked_map_equals_in_memory_map(family):
    d = simulate(n=N, T=8, F=2, seed=6, outcome=family)
    mem = _fit(d, family, rows="memory")
    shard = _fit(d, family, rows="sharded", row_chunk=CHUNK)
    assert (mem.info["map_rows"], shard.info["map_rows"]) == ("memory", "sharded")
    assert shard.info["converged"]
    np.testing.assert_allclose(shard.theta_map, mem.theta_map, rtol=0, atol=1e-6)
    np.testing.assert_allclose(shard.cov, mem.cov, rtol=1e-6, atol=1e-12)
    if family == "normal":
        assert abs(shard.sigma - mem.sigma) < 1e-6


_FOUR = """
import json, sys, jax, numpy as np
from dlm.causal.fit import EstimatorConfig, fit
from tests.causal.test_estimator import simulate
d = simulate(n=%d, T=8, F=2, seed=6)
f = fit(d["s"], d["trials"], d["h"], d["conf"], EstimatorConfig(row_chunk=%d))
json.dump({"devices": jax.device_count(), "rows": f.info["map_rows"],
           "theta": f.theta_map.tolist()}, sys.stdout)
"""


def test_four_devices_give_the_one_device_fit():
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    proc = subprocess.run([sys.executable, "-c", _FOUR % (N, CHUNK // 4)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    four = json.loads(proc.stdout.strip().splitlines()[-1])
    assert four["devices"] == 4 and four["rows"] == "sharded"      # auto: >1 device shards
    d = simulate(n=N, T=8, F=2, seed=6)
    one = _fit(d, "binomial", rows="sharded", row_chunk=CHUNK)
    np.testing.assert_allclose(four["theta"], one.theta_map, rtol=0, atol=1e-6)
    mem = _fit(d, "binomial", rows="memory")
    np.testing.assert_allclose(four["theta"], mem.theta_map, rtol=0, atol=1e-6)


_HOST = """
import json, sys, jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")   # CPU collectives across processes
from dlm.train.sharding import maybe_initialize_distributed
assert maybe_initialize_distributed()
from dlm.causal.fit import EstimatorConfig, fit
from tests.causal.test_estimator import simulate
d = simulate(n=%d, T=8, F=2, seed=6)
f = fit(d["s"], d["trials"], d["h"], d["conf"], EstimatorConfig(row_chunk=%d))
json.dump({"procs": jax.process_count(), "devices": jax.device_count(),
           "theta": f.theta_map.tolist()}, sys.stdout)
"""


@pytest.mark.slow   # two processes start JAX and meet through jax.distributed
def test_two_processes_give_the_one_process_fit():
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = [subprocess.Popen(
        [sys.executable, "-c", _HOST % (N, CHUNK // 4)], cwd=REPO, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
             "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
             "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
             "JAX_PROCESS_ID": str(k)}) for k in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    got = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert all(g["procs"] == 2 and g["devices"] == 4 for g in got)
    d = simulate(n=N, T=8, F=2, seed=6)
    mem = _fit(d, "binomial", rows="memory")
    for g in got:
        np.testing.assert_allclose(g["theta"], mem.theta_map, rtol=0, atol=1e-6)


def test_bad_rows_options_are_errors():
    with pytest.raises(ValueError, match="rows must be one of"):
        EstimatorConfig(rows="gpu")
    with pytest.raises(ValueError, match="row_chunk must be at least 1"):
        EstimatorConfig(row_chunk=0)
