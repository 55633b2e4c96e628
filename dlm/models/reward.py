"""Reward models: the decoder trunk plus scalar heads on the last real token.

One module serves every reward method of DESIGN.md section 2: plain r(X) (naive,
partial_out, invariant, deconfoundlm, oracle), r(X, C) with confounders concatenated to
the pooled state ("conditioned"), and a content head plus a confounder head ("odin").
The trunk's parameters live under "trunk" with the decoder's own names, so an SFT
decoder's parameters drop in (`load_trunk`).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dlm.models.decoder import Decoder, DecoderConfig


def last_token(h_BxLxD: jax.Array, lengths_B: jax.Array) -> jax.Array:
    """The state at index lengths-1 of each right-padded row."""
    idx_B = jnp.clip(lengths_B.astype(jnp.int32) - 1, 0, h_BxLxD.shape[1] - 1)
    return jnp.take_along_axis(h_BxLxD, idx_B[:, None, None], axis=1)[:, 0]


def _head(name: str) -> nn.Dense:
    return nn.Dense(1, kernel_init=nn.initializers.normal(0.02), name=name)


class RewardModel(nn.Module):
    """(tokens_BxL right-padded, lengths_B[, confounders_BxC]) -> dict of [B] outputs.

    Returns {"reward": [B], "features": pooled state [B, D]} and, with two_heads,
    "confounder_head": [B]. With n_confounders > 0 the confounders are concatenated to the
    pooled state before each head, so they must be given (at use: a reference c_ref).
    """

    cfg: DecoderConfig
    n_confounders: int = 0
    two_heads: bool = False

    def _check(self, confounders_BxC):
        if self.n_confounders and confounders_BxC is None:
            raise ValueError(f"RewardModel has n_confounders={self.n_confounders}: "
                             "pass confounders_BxC (a reference value at use)")
        if not self.n_confounders and confounders_BxC is not None:
            raise ValueError("confounders_BxC given but RewardModel has n_confounders=0")
        if self.n_confounders and confounders_BxC.shape[-1] != self.n_confounders:
            raise ValueError(f"confounders_BxC has {confounders_BxC.shape[-1]} columns, "
                             f"model expects {self.n_confounders}")

    @nn.compact
    def __call__(self, tokens_BxL, lengths_B, confounders_BxC=None):
        self._check(confounders_BxC)
        h_BxLxD, _ = Decoder(self.cfg, name="trunk").hidden(tokens_BxL)
        pooled_BxD = last_token(h_BxLxD, lengths_B).astype(jnp.float32)
        inputs = pooled_BxD
        if self.n_confounders:
            inputs = jnp.concatenate([pooled_BxD, confounders_BxC.astype(jnp.float32)], axis=-1)
        out = {"reward": _head("head")(inputs)[:, 0], "features": pooled_BxD}
        if self.two_heads:
            out["confounder_head"] = _head("confounder_head")(inputs)[:, 0]
        return out


def init_reward_params(model: RewardModel, key: jax.Array, seq_len: int = 8):
    """Fresh parameters for `model` (the {"params": ...} content)."""
    tokens = jnp.zeros((1, seq_len), jnp.int32)
    lengths = jnp.ones((1,), jnp.int32)
    conf = jnp.zeros((1, model.n_confounders)) if model.n_confounders else None
    return model.init(key, tokens, lengths, conf)["params"]


def load_trunk(reward_params, decoder_params):
    """Reward params with the trunk replaced by a trained decoder's parameters.

    The decoder's output head (lm_head, untied models only) is not part of the trunk and
    is dropped; every trunk leaf must exist in the decoder with the same shape.
    """
    trunk = reward_params["trunk"]
    src = {k: v for k, v in decoder_params.items() if k in trunk}
    flat_t = dict(jax.tree_util.tree_flatten_with_path(trunk)[0])
    flat_s = dict(jax.tree_util.tree_flatten_with_path(src)[0])
    missing = [jax.tree_util.keystr(k) for k in flat_t if k not in flat_s]
    if missing:
        raise ValueError(f"load_trunk: decoder params lack {missing[:5]}")
    bad = [f"{jax.tree_util.keystr(k)}: {flat_s[k].shape} vs {v.shape}"
           for k, v in flat_t.items() if flat_s[k].shape != v.shape]
    if bad:
        raise ValueError(f"load_trunk: shape mismatch (decoder vs trunk) {bad[:5]}")
    return {**reward_params, "trunk": jax.tree_util.tree_map(jnp.asarray, src)}
