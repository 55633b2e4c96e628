"""A tiny language model and trainer for the train-machinery tests.

Imported by the tests, and run as a subprocess (`python -m tests._tiny_train OUT ...`) by
the resume-after-kill and multi-device tests. The data for step s is a pure function of
(seed, s): each row counts up modulo V from a random start, so the loss falls quickly.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dlm.train.loop import LoopConfig, train_loop
from dlm.train.losses import next_token_loss
from dlm.train.optim import OptimConfig, make_optimizer, make_schedule
from dlm.train.step import TrainState, make_train_step

V, L, B = 16, 8, 8


class TinyLM(nn.Module):
    """Embedding -> MLP -> LayerNorm -> vocab logits (no attention: position-local)."""

    @nn.compact
    def __call__(self, tokens_BxL):
        x_BxLxD = nn.Embed(V, 16)(tokens_BxL)
        x_BxLxD = nn.relu(nn.Dense(32)(x_BxLxD))
        return nn.Dense(V)(nn.LayerNorm()(x_BxLxD))


def make_batch(seed: int, step: int, batch_size: int = B, nan_at: int = -1) -> dict:
    rng = np.random.default_rng([seed, step])
    start_B = rng.integers(0, V, size=batch_size)
    tokens = (start_B[:, None] + np.arange(L)[None, :]) % V
    poison = np.full(batch_size, np.nan if step == nan_at else 0.0, np.float32)
    return {"tokens": tokens.astype(np.int32), "mask": np.ones((batch_size, L), np.float32),
            "poison": poison}


def loss_fn(params, batch, rng):
    del rng
    logits = TinyLM().apply({"params": params}, batch["tokens"])
    loss, metrics = next_token_loss(logits, batch["tokens"], batch["mask"])
    return loss + jnp.mean(batch["poison"]), metrics   # poison: NaN at one chosen step


def optim_config(n_steps: int) -> OptimConfig:
    return OptimConfig(lr=1e-2, warmup_steps=2, total_steps=n_steps, weight_decay=0.01)


def init_state(seed: int, n_steps: int) -> TrainState:
    params = TinyLM().init(jax.random.key(seed), jnp.zeros((1, L), jnp.int32))["params"]
    return TrainState.create(params, make_optimizer(optim_config(n_steps)))


def run(out: pathlib.Path, n_steps: int, ckpt_every: int, seed: int = 0, resume: bool = False,
        sleep: float = 0.0, nan_at: int = -1, batch_size: int = B):
    """Train the tiny model; returns the LoopResult."""
    cfg = optim_config(n_steps)
    step_fn = make_train_step(loss_fn, make_optimizer(cfg), make_schedule(cfg))

    def batch_for_step(s):
        time.sleep(sleep)   # slows the run so a test can kill it mid-way
        return make_batch(seed, s, batch_size, nan_at)

    loop_cfg = LoopConfig(out_dir=out, ckpt_every=ckpt_every, log_every=1, resume=resume,
                          keep=2, quiet=True)
    return train_loop(init_state(seed, n_steps), step_fn, batch_for_step, n_steps,
                      jax.random.key(seed + 1), loop_cfg)


def flat_params(params) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_leaves_with_path(jax.device_get(params))
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=pathlib.Path)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--ckpt-every", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=B)
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()
    result = run(args.out, args.steps, args.ckpt_every, resume=args.resume, sleep=args.sleep,
                 batch_size=args.batch_size)
    np.savez(args.out / "final.npz", **flat_params(result.state.params))
    (args.out / "run.json").write_text(json.dumps(
        {"n_devices": jax.device_count(), "losses": [r["loss"] for r in result.history],
         "resumed_from": result.resumed_from}))


if __name__ == "__main__":
    main()
