"""LoRA adapters over any dlm parameter tree, as pure functions (Hu et al. 2021).

A target Dense kernel W [in, out] gains a low-rank update:

    W' = W + (alpha / rank) * A @ B,    A [in, rank], B [rank, out], B = 0 at init

so the adapted model equals the base model until training moves B. The adapters are
their own small pytree mirroring the paths of the kernels they adapt; `merge` adds them
to the base kernels at apply time, so the same Decoder / RewardModel code, KV-cache
sampler and loss functions run unchanged on the merged tree, and the base weights, an
argument of the loss that is not differentiated, are never updated.

Training layout: the trainable tree is {"lora": adapters, **extra}, where extra are
top-level entries trained in full (a reward "head"); `full_params(base, trainable)`
rebuilds the model's parameters, `lora_loss` lifts a loss over full parameters to one
over the trainable tree with the base as a 4th argument, ready for
dlm.train.step.make_train_step(..., frozen=base). Checkpoints then hold
only the adapters (a few MB), and a DPO reference policy is simply the base.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

LORA_KEY = "lora"
ALL_LINEAR = ("q", "k", "v", "o", "gate", "up", "down")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """rank and alpha of the update, and the names of the Dense modules it adapts
    (the decoder names them q, k, v, o, gate, up, down)."""

    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ALL_LINEAR

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
        if not self.targets:
            raise ValueError("LoRA targets is empty: name at least one Dense module")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def _is_adapter(node: Any) -> bool:
    return isinstance(node, Mapping) and set(node) == {"a", "b"} and not any(
        isinstance(v, Mapping) for v in node.values())


def _target_kernels(params: Mapping, targets: Sequence[str], path=()) -> list[tuple]:
    """Paths (tuples of keys) of the modules named in `targets` that hold a 2-D kernel."""
    found = []
    for key, node in params.items():
        if not isinstance(node, Mapping):
            continue
        kernel = node.get("kernel")
        if key in targets and kernel is not None and getattr(kernel, "ndim", 0) == 2:
            found.append(path + (key,))
        else:
            found.extend(_target_kernels(node, targets, path + (key,)))
    return found


def _set(tree: dict, path: tuple, value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def init_lora(params: Mapping, cfg: LoraConfig, key: jax.Array) -> dict:
    """Adapters for every target kernel in `params`: A ~ U(+-1/sqrt(in)), B = 0."""
    paths = _target_kernels(params, cfg.targets)
    if not paths:
        raise ValueError(f"no Dense kernel named any of {cfg.targets} in the parameters")
    adapters: dict = {}
    for i, path in enumerate(paths):
        kernel = params
        for k in path:
            kernel = kernel[k]
        d_in, d_out = kernel["kernel"].shape
        bound = d_in ** -0.5
        a = jax.random.uniform(jax.random.fold_in(key, i), (d_in, cfg.rank), jnp.float32,
                               -bound, bound)
        _set(adapters, path, {"a": a, "b": jnp.zeros((cfg.rank, d_out), jnp.float32)})
    return adapters


def merge(params: Mapping, adapters: Mapping, cfg: LoraConfig, path=()) -> dict:
    """params with W + scale * A @ B at every adapted kernel (other leaves shared)."""
    out = dict(params)
    for key, node in adapters.items():
        if key not in params:
            raise KeyError(f"LoRA adapter at {'/'.join(path + (key,))} has no such module in "
                           "the parameters")
        if _is_adapter(node):
            w = params[key]["kernel"]
            delta = (node["a"].astype(jnp.float32) @ node["b"].astype(jnp.float32)) * cfg.scale
            out[key] = {**params[key], "kernel": (w.astype(jnp.float32) + delta).astype(w.dtype)}
        else:
            out[key] = merge(params[key], node, cfg, path + (key,))
    return out


def init_trainable(base: Mapping, cfg: LoraConfig, key: jax.Array,
                   train: Sequence[str] = ()) -> dict:
    """The trainable tree: fresh adapters plus full copies of the top-level entries in
    `train` (e.g. ("head",) for a reward model on a frozen pretrained trunk)."""
    missing = [k for k in train if k not in base]
    if missing:
        raise KeyError(f"train={list(train)}: {missing} not in the parameters "
                       f"(top level: {sorted(base)})")
    if LORA_KEY in base:
        raise ValueError(f"parameters already have a top-level {LORA_KEY!r} entry")
    return {LORA_KEY: init_lora(base, cfg, key), **{k: base[k] for k in train}}


def full_params(base: Mapping, trainable: Mapping, cfg: LoraConfig) -> dict:
    """Model parameters from the frozen base and the trainable tree: adapters merged,
    then the trained top-level entries in place of the base's."""
    merged = merge(base, trainable[LORA_KEY], cfg)
    merged.update({k: v for k, v in trainable.items() if k != LORA_KEY})
    return merged


def lora_loss(loss_fn: Callable, cfg: LoraConfig) -> Callable:
    """loss_fn(params, batch, rng) over full parameters -> trainable_loss(trainable, batch,
    rng, base) over the trainable tree. The base is an argument, not a closure: jit would
    bake a closed-over base into the program as constants (slow compile, a second copy in
    memory); make_train_step(..., frozen=base) passes it and differentiates only the
    trainable tree, so gradients (and optimiser state) cover only that."""
    def trainable_loss(trainable, batch, rng, base):
        return loss_fn(full_params(base, trainable, cfg), batch, rng)
    return trainable_loss


def count(trainable: Mapping) -> int:
    """Number of trainable scalars."""
    return int(sum(x.size for x in jax.tree_util.tree_leaves(trainable)))
