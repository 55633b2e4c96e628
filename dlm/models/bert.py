"""A BERT encoder in flax.linen (post-LayerNorm, exact-erf GELU), as in HF `BertModel`.

Used for sentence embeddings (dlm.models.minilm): `encode` runs the encoder, mean-pools
the last hidden states over the attention mask and L2-normalises, as sentence-transformers
does for all-MiniLM-L6-v2. `params_from_hf` maps an HF BERT state dict (names like
`encoder.layer.0.attention.self.query.weight`) onto this module's parameter tree.
"""
from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_hf(cls, config: dict) -> "BertConfig":
        """From an HF config.json dict (unknown keys ignored; only GELU BERT is supported)."""
        act = config.get("hidden_act", "gelu")
        if act != "gelu":
            raise ValueError(f"BERT config hidden_act={act!r}; only exact 'gelu' is supported")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in known})


class _Layer(nn.Module):
    cfg: BertConfig

    @nn.compact
    def __call__(self, x_BxLxD, bias_Bx1x1xL):
        cfg = self.cfg
        B, L, D = x_BxLxD.shape
        N = cfg.num_attention_heads
        split = lambda t: t.reshape(B, L, N, D // N)  # noqa: E731
        q = split(nn.Dense(D, name="query")(x_BxLxD))
        k = split(nn.Dense(D, name="key")(x_BxLxD))
        v = split(nn.Dense(D, name="value")(x_BxLxD))
        s_BxNxLxL = jnp.einsum("blnh,bmnh->bnlm", q, k) / np.sqrt(D // N) + bias_Bx1x1xL
        a = jnp.einsum("bnlm,bmnh->blnh", jax.nn.softmax(s_BxNxLxL, axis=-1), v).reshape(B, L, D)
        eps = cfg.layer_norm_eps
        x = nn.LayerNorm(eps, name="attn_norm")(x_BxLxD + nn.Dense(D, name="attn_out")(a))
        h = jax.nn.gelu(nn.Dense(cfg.intermediate_size, name="inter")(x), approximate=False)
        return nn.LayerNorm(eps, name="out_norm")(x + nn.Dense(D, name="out")(h))


class BertEncoder(nn.Module):
    """ids_BxL, mask_BxL (1 on real tokens) -> last hidden states h_BxLxD (float32)."""

    cfg: BertConfig

    @nn.compact
    def __call__(self, ids_BxL, mask_BxL):
        cfg = self.cfg
        L = ids_BxL.shape[1]
        x = (nn.Embed(cfg.vocab_size, cfg.hidden_size, name="word")(ids_BxL)
             + nn.Embed(cfg.max_position_embeddings, cfg.hidden_size, name="position")(
                 jnp.arange(L))[None]
             + nn.Embed(cfg.type_vocab_size, cfg.hidden_size, name="token_type")(
                 jnp.zeros_like(ids_BxL)))
        x = nn.LayerNorm(cfg.layer_norm_eps, name="embed_norm")(x)
        # HF's extended mask: a large negative bias on padded keys
        bias = jnp.where(mask_BxL.astype(bool), 0.0, jnp.finfo(jnp.float32).min)[:, None, None, :]
        for i in range(cfg.num_hidden_layers):
            x = _Layer(cfg, name=f"layer_{i}")(x, bias)
        return x


def mean_pool(h_BxLxD, mask_BxL):
    """Mean of the real tokens' states (sentence-transformers' pooling_mode_mean_tokens)."""
    m = mask_BxL.astype(h_BxLxD.dtype)[..., None]
    return (h_BxLxD * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)


def l2_normalize(x_BxD):
    """As torch.nn.functional.normalize: x / max(||x||, 1e-12)."""
    return x_BxD / jnp.maximum(jnp.linalg.norm(x_BxD, axis=-1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnums=0)
def encode(cfg: BertConfig, params, ids_BxL, mask_BxL):
    """Sentence embeddings [B, D]: encoder -> mean pooling over the mask -> L2 norm."""
    h = BertEncoder(cfg).apply({"params": params}, ids_BxL, mask_BxL)
    return l2_normalize(mean_pool(h, mask_BxL))


_LINEARS = {"attention.self.query": "query", "attention.self.key": "key",
            "attention.self.value": "value", "attention.output.dense": "attn_out",
            "intermediate.dense": "inter", "output.dense": "out"}
_NORMS = {"attention.output.LayerNorm": "attn_norm", "output.LayerNorm": "out_norm"}


def params_from_hf(state: dict[str, np.ndarray], cfg: BertConfig) -> dict:
    """This module's parameter tree from an HF BERT state dict (an optional `bert.` prefix
    is stripped; pooler and position_ids are not used). Raises KeyError naming a missing tensor."""
    state = {k.removeprefix("bert."): v for k, v in state.items()}

    def get(name):
        if name not in state:
            raise KeyError(f"BERT weights lack {name!r}")
        return np.asarray(state[name], np.float32)

    norm = lambda p: {"scale": get(f"{p}.weight"), "bias": get(f"{p}.bias")}  # noqa: E731
    # torch Linear stores [out, in]; flax Dense's kernel is [in, out]
    dense = lambda p: {"kernel": get(f"{p}.weight").T, "bias": get(f"{p}.bias")}  # noqa: E731
    e = "embeddings"
    params = {"word": {"embedding": get(f"{e}.word_embeddings.weight")},
              "position": {"embedding": get(f"{e}.position_embeddings.weight")},
              "token_type": {"embedding": get(f"{e}.token_type_embeddings.weight")},
              "embed_norm": norm(f"{e}.LayerNorm")}
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}"
        layer = {ours: dense(f"{p}.{hf}") for hf, ours in _LINEARS.items()}
        layer.update({ours: norm(f"{p}.{hf}") for hf, ours in _NORMS.items()})
        params[f"layer_{i}"] = layer
    return params
