"""Checkpoints restore exactly, and a run SIGKILLed mid-way resumes to the same result."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm.train.checkpoint import Checkpointer
from tests import _tiny_train as tiny

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_save_restore_roundtrip_and_keep_last_k(tmp_path):
    state = tiny.init_state(0, 10)
    with Checkpointer(tmp_path / "ck", keep=2) as ck:
        assert ck.latest_step() is None
        for step in (1, 2, 3):
            ck.save(step, state.replace(step=jnp.asarray(step, jnp.int32)))
        assert ck.all_steps() == [2, 3] and ck.latest_step() == 3
        blank = jax.tree.map(jnp.zeros_like, state)
        back = ck.restore(None, blank)
    assert int(back.step) == 3
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(back.params),
                 jax.device_get(state.params))
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(back.opt_state),
                 jax.device_get(state.opt_state))
    with Checkpointer(tmp_path / "ck") as ck:
        params = ck.restore_params(2)                      # no optimiser / target needed
        jax.tree.map(np.testing.assert_array_equal, params, jax.device_get(state.params))
        with pytest.raises(FileNotFoundError, match="no checkpoint 7"):
            ck.restore(7, state)


def _child(out: pathlib.Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "tests._tiny_train", str(out), "--steps", "12",
                             "--ckpt-every", "2", *extra], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    killed = tmp_path / "killed"
    proc = _child(killed, "--sleep", "0.4")
    ckpt4 = killed / "checkpoints" / "4"
    deadline = time.monotonic() + 120
    while not ckpt4.exists():
        assert proc.poll() is None, f"child exited early: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "child never wrote checkpoint 4"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    latest = max(int(p.name) for p in (killed / "checkpoints").iterdir() if p.name.isdigit())
    assert 4 <= latest < 12, "the kill should land mid-way"

    resumed = _child(killed, "--resume")
    _, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err[-2000:]
    run = json.loads((killed / "run.json").read_text())
    assert run["resumed_from"] >= 4

    full = tiny.run(tmp_path / "full", n_steps=12, ckpt_every=2)
    got = np.load(killed / "final.npz")
    want = tiny.flat_params(full.state.params)
    assert set(got.files) == set(want)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-6, atol=1e-7, err_msg=name)
    # the resumed run's log has every step exactly once, with the uninterrupted losses
    rows = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13))
    np.testing.assert_allclose([r["loss"] for r in rows], [r["loss"] for r in full.history],
                               rtol=1e-6)
