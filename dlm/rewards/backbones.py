"""The reward model's parts the trainer fits: a Head on a frozen text representation
(FrozenBackbone) or the whole decoder-trunk RewardModel (FullBackbone, freeze_trunk=False)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class Head(nn.Module):
    """features [B, D] (+ confounders [B, C]) -> {"reward": [B], "confounder_head": [B]}."""

    hidden: int = 0
    n_confounders: int = 0
    two_heads: bool = False

    @nn.compact
    def __call__(self, x_BxD, confounders_BxC=None):
        h = x_BxD.astype(jnp.float32)
        if self.hidden:
            h = jnp.tanh(nn.Dense(self.hidden, name="hidden")(h))
        if self.n_confounders:
            h = jnp.concatenate([h, confounders_BxC.astype(jnp.float32)], axis=-1)
        init = nn.initializers.normal(0.02)
        out = {"reward": nn.Dense(1, kernel_init=init, name="head")(h)[:, 0]}
        if self.two_heads:
            out["confounder_head"] = nn.Dense(1, kernel_init=init, name="confounder_head")(h)[:, 0]
        return out


class Backbone:
    """What the trainer needs of a model: text_inputs(texts) -> arrays [U, ...],
    init(key, inputs, conf) -> params, apply(params, inputs, conf) -> outputs."""

    chunk = 1024          # texts scored per call at use (a fixed shape: one compile)

    def score(self, params, inputs: dict, conf):
        if not hasattr(self, "_score"):
            self._score = jax.jit(lambda p, i, c: self.apply(p, i, c)["reward"])
        return self._score(params, inputs, conf)


class FrozenBackbone(Backbone):
    """Head on a fixed representation: text inputs are the representation's rows."""

    def __init__(self, represent, cfg: TrainerConfig, n_conf: int, two_heads: bool):
        self.represent, self.module = represent, Head(cfg.hidden, n_conf, two_heads)

    def text_inputs(self, texts) -> dict:
        return {"x": np.asarray(self.represent(list(texts)), np.float32)}

    def init(self, key, inputs: dict, conf):
        return self.module.init(key, inputs["x"][:1], None if conf is None else conf[:1])["params"]

    def apply(self, params, inputs: dict, conf):
        return self.module.apply({"params": params}, inputs["x"], conf)


class FullBackbone(Backbone):
    """The whole RewardModel (trunk from a decoder) fine-tuned on token ids."""

    chunk = 128

    def __init__(self, trunk, cfg: TrainerConfig, n_conf: int, two_heads: bool):
        from dlm.models.reward import RewardModel
        self.trunk_params, model_cfg, self.tok = trunk
        self.max_len = cfg.max_len
        self.module = RewardModel(model_cfg, n_confounders=n_conf, two_heads=two_heads)

    def text_inputs(self, texts) -> dict:
        from dlm.data.batching import encode_texts
        tokens, lengths = encode_texts(self.tok, [str(t) for t in texts], self.max_len)
        return {"tokens": tokens, "lengths": lengths}

    def init(self, key, inputs: dict, conf):
        from dlm.models.reward import init_reward_params, load_trunk
        # jitted: an eager init compiles every op of the trunk one by one
        fresh = jax.jit(lambda k: init_reward_params(self.module, k, self.max_len))(key)
        return load_trunk(fresh, self.trunk_params)

    def apply(self, params, inputs: dict, conf):
        return self.module.apply({"params": params}, inputs["tokens"], inputs["lengths"], conf)
