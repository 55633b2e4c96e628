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


class FrozenStep:
    """A jitted fn(x, batch, rng, frozen) with `frozen` bound: self(x, batch, rng).

    `frozen` (a LoRA base) is a jit ARGUMENT: closed over, XLA would embed its arrays as
    constants in the compiled program (minutes of constant folding, a second copy of the
    weights in memory). It is replicated over a mesh, never split like a batch, and never
    differentiated or donated.
    """

    def __init__(self, fn: Callable, frozen: Any, mesh=None):
        from dlm.train.sharding import replicate
        # no mesh: on the default device and uncommitted, like a fresh state, so a caller
        # stepping an unplaced state compiles once (a mesh-committed base would make the
        # returned state's sharding differ from the first call's: a second compilation)
        self.fn, self.mesh = fn, mesh
        self.frozen = jax.device_put(frozen) if mesh is None else replicate(frozen, mesh)

    def __call__(self, x, batch: Batch, rng: jax.Array):
        return self.fn(x, batch, rng, self.frozen)

    def place(self, mesh) -> "FrozenStep":
        """The same step with `frozen` replicated over `mesh` (self if already there), as
        train_loop places the state."""
        return self if mesh == self.mesh else FrozenStep(self.fn, self.frozen, mesh)


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation,
                    lr_schedule: optax.Schedule | None = None, frozen: Any = None):
    """Return step(state, batch, rng) -> (state, metrics), jitted with the state donated.

    loss_fn(params, batch, rng) -> (loss, metrics), metrics a dict of scalars. Metrics gain
    "loss" and "grad_norm" (pre-clipping) and, given a schedule, the "lr" of this update.
    Given `frozen` (a pytree, e.g. a LoRA base), loss_fn(params, batch, rng, frozen) gets it
    as a jit argument and the step is a FrozenStep.
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(state: TrainState, batch: Batch, rng: jax.Array, *frozen_arg):
        (loss, metrics), grads = grad_fn(state.params, batch, rng, *frozen_arg)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads)}
        if lr_schedule is not None:
            metrics["lr"] = lr_schedule(state.step)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    step = jax.jit(train_step, donate_argnums=(0,))
    return step if frozen is None else FrozenStep(step, frozen)


def make_eval_step(loss_fn: LossFn, frozen: Any = None):
    """Return eval(params, batch, rng) -> metrics (with "loss"), jitted; no update. Given
    `frozen`, loss_fn(params, batch, rng, frozen) as in make_train_step."""
    def eval_step(params, batch: Batch, rng: jax.Array, *frozen_arg):
        loss, metrics = loss_fn(params, batch, rng, *frozen_arg)
        return {**metrics, "loss": loss}

    step = jax.jit(eval_step)
    return step if frozen is None else FrozenStep(step, frozen)
