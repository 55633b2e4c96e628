"""The one generic train step: (state, batch, rng) -> (state, metrics), jit-compiled once.

SFT, reward models, DPO and policy gradient differ only by the loss_fn plugged in here
(a loss-factory seam, as in nanodo); the loop and this step are shared by all of them.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

Batch = Any
LossFn = Callable[[Any, Batch, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training, as one pytree (what checkpoints hold).

    The optimiser (its update rule) and the model's apply function are not state; they
    are closed over by the step function, so this pytree holds only arrays.
    """

    step: jax.Array      # int32 scalar: number of updates applied
    params: Any
    opt_state: Any

    @classmethod
    def create(cls, params, tx: optax.GradientTransformation) -> "TrainState":
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation,
                    lr_schedule: optax.Schedule | None = None):
    """Return step(state, batch, rng) -> (state, metrics), jitted with the state donated.

    loss_fn(params, batch, rng) -> (loss, metrics), metrics a dict of scalars. Metrics gain
    "loss" and "grad_norm" (pre-clipping) and, given a schedule, the "lr" of this update.
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(state: TrainState, batch: Batch, rng: jax.Array):
        (loss, metrics), grads = grad_fn(state.params, batch, rng)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads)}
        if lr_schedule is not None:
            metrics["lr"] = lr_schedule(state.step)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    return jax.jit(train_step, donate_argnums=(0,))


def make_eval_step(loss_fn: LossFn):
    """Return eval(params, batch, rng) -> metrics (with "loss"), jitted; no update."""
    def eval_step(params, batch: Batch, rng: jax.Array):
        loss, metrics = loss_fn(params, batch, rng)
        return {**metrics, "loss": loss}

    return jax.jit(eval_step)
