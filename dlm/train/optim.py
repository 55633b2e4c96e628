"""The optimiser every dlm trainer uses: AdamW, linear warmup + cosine decay, clipping."""
from __future__ import annotations

import dataclasses

import jax
import optax

# Parameter leaf names that never get weight decay (biases, norm gains).
_NO_DECAY_NAMES = ("bias", "scale")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    lr: float = 3e-4
    warmup_steps: int = 100
    total_steps: int = 1000
    weight_decay: float = 0.1
    clip_norm: float = 1.0         # global gradient-norm clip; <= 0 turns it off
    b1: float = 0.9
    b2: float = 0.95
    min_lr_ratio: float = 0.1      # lr at the end of the cosine, as a share of the peak


def make_schedule(cfg: OptimConfig) -> optax.Schedule:
    """Linear warmup 0 -> lr over warmup_steps, then cosine to lr * min_lr_ratio at total_steps."""
    warmup = min(cfg.warmup_steps, max(cfg.total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.lr, warmup_steps=warmup,
        decay_steps=max(cfg.total_steps, warmup + 1), end_value=cfg.lr * cfg.min_lr_ratio)


def decay_mask(params) -> object:
    """True for leaves that get weight decay: matrices (ndim >= 2), not biases or norm gains."""
    def keep(path, leaf) -> bool:
        name = str(getattr(path[-1], "key", getattr(path[-1], "name", path[-1]))) if path else ""
        return leaf.ndim >= 2 and name not in _NO_DECAY_NAMES
    return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW on the warmup-cosine schedule (decay masked)."""
    adamw = optax.adamw(make_schedule(cfg), b1=cfg.b1, b2=cfg.b2,
                        weight_decay=cfg.weight_decay, mask=decay_mask)
    if cfg.clip_norm and cfg.clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), adamw)
    return adamw
