"""Frozen hidden states of SmolLM2-135M as a text representation ("llm:smollm2-135m").

Options "layer=L,pool=mean|last,batch=B,max_len=T,std=0|1": the residual stream after the
first L decoder blocks (default: all 30), passed through the model's final RMSNorm (the same
per-token normalisation the last layer's states get), pooled by the mean over the tokens or
the last one. Each text is read as BOS text EOS cut to T tokens (default 40; EOS kept), as
dlm.data.batching.encode_texts lays out reward-model inputs, so the default spec gives the
numbers of the earlier realdata featuriser. std=1 standardises columns on the training
texts. Batched, jit-compiled per (batch, bucket length), cached on disk by text hash like
"llm:minilm".
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dlm.models.decoder import Decoder, DecoderConfig
from dlm.models.embedding_cache import TextEmbedding, embed_ids, parse_options
from dlm.models.pretrained import SMOLLM2, load_smollm2, smollm2_gguf_path

POOLS = ("mean", "last")
# layer 0: the last; batch/max_len 0: the context's llm_batch/llm_max_len, else 32/40
_OPTIONS = {"layer": 0, "pool": "mean", "batch": 0, "max_len": 0, "std": 0}


@functools.partial(jax.jit, static_argnums=(0, 1))
def pooled_states(cfg: DecoderConfig, pool: str, params, ids_BxL, mask_BxL):
    """[B, d_model] float32: final-normed states of `cfg.n_layers` blocks, pooled over the mask."""
    h, _ = Decoder(cfg).apply({"params": params}, ids_BxL, attn_mask_BxL=mask_BxL.astype(bool),
                              method=Decoder.hidden)
    h = h.astype(jnp.float32)
    m = mask_BxL.astype(jnp.float32)
    if pool == "mean":
        return (h * m[..., None]).sum(1) / jnp.maximum(m.sum(1, keepdims=True), 1.0)
    last = jnp.maximum(m.sum(1).astype(jnp.int32) - 1, 0)  # right padding: last real token
    return h[jnp.arange(h.shape[0]), last]


def truncate_params(params: dict, n_layers: int) -> dict:
    """The parameters of the first `n_layers` blocks (plus embedding and final norm)."""
    return {k: v for k, v in params.items()
            if not k.startswith("blocks_") or int(k.split("_")[1]) < n_layers}


class DecoderStates:
    """A loaded decoder read at one layer: `embed(texts)` -> [N, d_model] float32."""

    def __init__(self, loaded, layer: int, pool: str, batch: int, max_len: int):
        cfg, params, self.tokenizer = loaded
        if not 0 <= layer <= cfg.n_layers:
            raise ValueError(f"layer={layer} outside 1..{cfg.n_layers} (0 means the last)")
        if max_len < 3:
            raise ValueError(f"max_len={max_len} < 3 (BOS, one token, EOS)")
        if pool not in POOLS:
            raise ValueError(f"pool={pool!r}; known: {', '.join(POOLS)}")
        self.layer = layer or cfg.n_layers
        self.cfg = dataclasses.replace(cfg, n_layers=self.layer, remat=False)
        self.params = truncate_params(params, self.layer)
        self.pool, self.batch, self.max_len = pool, batch, max_len
        self.calls = 0

    @property
    def dim(self) -> int:
        return self.cfg.d_model

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        tok = self.tokenizer
        return [[tok.bos_id, *tok.encode(t)[:self.max_len - 2], tok.eos_id] for t in texts]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return embed_ids(self.tokenize(texts), self.dim, self.batch, self._run,
                         pad_id=self.tokenizer.pad_id)

    def _run(self, ids_BxL, mask_BxL):
        self.calls += 1
        return np.asarray(pooled_states(self.cfg, self.pool, self.params, ids_BxL, mask_BxL))


def representation(option: str | None, train_texts: Sequence[str] = (), *, seed: int = 0,
                   cache=None, llm_batch: int = 32, llm_max_len: int = 40,
                   **context) -> TextEmbedding:
    """The "llm:smollm2-135m[:layer=L,pool=mean|last,...]" representation (std=1: columns
    standardised on `train_texts`)."""
    opts = parse_options(option, _OPTIONS)
    states = DecoderStates(load_smollm2(cache=cache), opts["layer"], opts["pool"],
                           opts["batch"] or llm_batch, opts["max_len"] or llm_max_len)
    source = smollm2_gguf_path()
    key = (f"{SMOLLM2}|{source.name}|{source.stat().st_size}|layer={states.layer}"
           f"|pool={states.pool}|bos-text-eos|max_len={states.max_len}")
    spec = f"llm:{SMOLLM2}" + (f":{option}" if option else "")
    rep = TextEmbedding(spec, states.dim, key, states.embed, cache)
    return rep.fit(train_texts) if opts["std"] else rep
