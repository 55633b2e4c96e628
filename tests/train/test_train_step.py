"""The generic train step, the optimiser and the loop, on a tiny model."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dlm.train.optim import OptimConfig, decay_mask, make_optimizer, make_schedule
from dlm.train.step import TrainState, make_eval_step, make_train_step
from tests import _tiny_train as tiny


def test_one_step_changes_params_and_returns_finite_metrics():
    state = tiny.init_state(0, 10)
    before = jax.tree.map(np.array, state.params)
    cfg = tiny.optim_config(10)
    step = make_train_step(tiny.loss_fn, make_optimizer(cfg), make_schedule(cfg))
    batch = tiny.make_batch(0, 0)
    # at step 0 the warmup lr is 0, so take two steps
    state, m0 = step(state, batch, jax.random.key(0))
    state, m1 = step(state, tiny.make_batch(0, 1), jax.random.key(1))
    assert int(state.step) == 2
    for m in (m0, m1):
        for k in ("loss", "grad_norm", "lr", "nats_sum", "n_targets"):
            assert np.isfinite(float(m[k])), k
    assert float(m0["lr"]) == 0.0 and float(m1["lr"]) == pytest.approx(cfg.lr / 2)
    changed = jax.tree.map(lambda a, b: not np.allclose(a, b), before, jax.device_get(state.params))
    assert all(jax.tree.leaves(changed))


def test_eval_step_matches_loss_without_update():
    state = tiny.init_state(0, 10)
    batch = tiny.make_batch(0, 0)
    m = make_eval_step(tiny.loss_fn)(state.params, batch, jax.random.key(0))
    loss, _ = tiny.loss_fn(state.params, batch, None)
    assert float(m["loss"]) == pytest.approx(float(loss), rel=1e-6)


def test_schedule_warmup_then_cosine_to_floor():
    cfg = OptimConfig(lr=1.0, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    sched = make_schedule(cfg)
    assert float(sched(0)) == 0.0
    assert float(sched(5)) == pytest.approx(0.5)
    assert float(sched(10)) == pytest.approx(1.0)
    # halfway through the cosine: floor + (peak - floor) / 2
    assert float(sched(60)) == pytest.approx(0.1 + 0.9 / 2, rel=1e-5)
    assert float(sched(110)) == pytest.approx(0.1, rel=1e-5)


def test_weight_decay_masks_biases_and_norms():
    params = {"Dense_0": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)},
              "LayerNorm_0": {"scale": jnp.ones(3), "bias": jnp.ones(3)},
              "Embed_0": {"embedding": jnp.ones((4, 2))}}
    mask = decay_mask(params)
    assert mask["Dense_0"] == {"kernel": True, "bias": False}
    assert mask["LayerNorm_0"] == {"scale": False, "bias": False}
    assert mask["Embed_0"]["embedding"]
    # with zero gradients (and lr flat after warmup) only decayed leaves move
    tx = make_optimizer(OptimConfig(lr=0.1, warmup_steps=0, total_steps=10, weight_decay=0.5))
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    assert float(new["Dense_0"]["kernel"][0, 0]) == pytest.approx(1 - 0.1 * 0.5)
    assert float(new["Dense_0"]["bias"][0]) == 1.0 and float(new["LayerNorm_0"]["scale"][0]) == 1.0


def test_clipping_bounds_the_update_of_a_huge_gradient():
    params = {"w": jnp.zeros((3, 3))}
    tx = make_optimizer(OptimConfig(lr=1.0, warmup_steps=0, total_steps=10, weight_decay=0.0,
                                    clip_norm=1.0))
    state = TrainState.create(params, tx)
    step = make_train_step(lambda p, b, r: (jnp.sum(p["w"] * b["g"]), {}), tx)
    _, m = step(state, {"g": jnp.full((3, 3), 1e6)}, jax.random.key(0))
    assert float(m["grad_norm"]) == pytest.approx(3e6, rel=1e-5)   # reported before clipping


def test_loop_trains_logs_and_checkpoints(tmp_path):
    result = tiny.run(tmp_path, n_steps=30, ckpt_every=10)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 31))
    assert rows[-1]["loss"] < 0.5 * rows[0]["loss"]            # it learns the counting rule
    assert all(r["tokens_per_s"] > 0 for r in rows)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) \
        == ["20", "30"]                                         # keep=2
    assert int(result.state.step) == 30 and result.resumed_from is None
    with pytest.raises(FileExistsError, match="resume"):
        tiny.run(tmp_path, n_steps=30, ckpt_every=10)
