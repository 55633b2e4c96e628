"""Decoder states as representations: "trunk" (a given decoder, e.g. the SFT policy) and
"llm:NAME" (a frozen pretrained model from dlm.models.pretrained)."""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dlm.data.batching import encode_texts
from dlm.data.tokenizer import Tokenizer
from dlm.models.decoder import Decoder, DecoderConfig
from dlm.representations.registry import (no_option, register_representation, standardiser,
                                          texts_list)


@functools.partial(jax.jit, static_argnums=0)
def _mean_pooled(cfg: DecoderConfig, params, tokens_BxL, lengths_B):
    h_BxLxD, _ = Decoder(cfg).apply({"params": params}, tokens_BxL, method=Decoder.hidden)
    mask_BxL = jnp.arange(tokens_BxL.shape[1])[None, :] < lengths_B[:, None]
    h_BxLxD = h_BxLxD.astype(jnp.float32) * mask_BxL[..., None]
    return h_BxLxD.sum(1) / jnp.maximum(lengths_B, 1)[:, None].astype(jnp.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class TrunkStates:
    """Mean over BOS text EOS of a decoder's final hidden states (standardised once fitted).

    Mean pooling rather than the last token: a causal LM's EOS state is trained to predict
    what follows, not to summarise the text.
    """

    params: object
    cfg: DecoderConfig
    tokenizer: Tokenizer
    max_len: int = 64
    batch_size: int = 256
    mean_D: np.ndarray | None = None
    sd_D: np.ndarray | None = None
    spec: str = "trunk"
    feature_names = None

    @property
    def dim(self) -> int:
        return self.cfg.d_model

    def raw(self, texts: Sequence[str]) -> np.ndarray:
        texts = texts_list(texts)
        out = []
        for start in range(0, len(texts), self.batch_size):  # fixed batch shape: one compile
            chunk = texts[start:start + self.batch_size]
            padded = chunk + [""] * (self.batch_size - len(chunk))
            tokens, lengths = encode_texts(self.tokenizer, padded, self.max_len)
            H = _mean_pooled(self.cfg, self.params, tokens, lengths)
            out.append(np.asarray(H)[:len(chunk)])
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate(out).astype(np.float32)

    def fit(self, texts: Sequence[str]) -> "TrunkStates":
        """The same trunk with its columns standardised on `texts`."""
        mean, sd = standardiser(self.raw(list(dict.fromkeys(texts_list(texts)))))
        return dataclasses.replace(self, mean_D=mean, sd_D=sd)

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        H = self.raw(texts)
        return H if self.mean_D is None else (H - self.mean_D) / self.sd_D

    __call__ = transform


class LLMStates:
    """Frozen pretrained LM states (dlm.models.pretrained): the mean of the final hidden
    states over each text's tokens -> dense [N, D]. Every distinct text is encoded once,
    in batches of similar length (padded to a multiple of 8, so a few compilations)."""

    feature_names = None

    def __init__(self, name: str, batch_size: int = 64, max_len: int = 40):
        from dlm.models.pretrained import load_model

        self.spec, self.batch_size, self.max_len = f"llm:{name}", batch_size, max_len
        self.cfg, self.params, self.tok = load_model(name)
        self.dim = self.cfg.d_model
        cfg = self.cfg

        @jax.jit
        def pooled(params, tokens_BxL, lengths_B):       # params as an argument, not a constant
            h_BxLxD, _ = Decoder(cfg).apply({"params": params}, tokens_BxL, method=Decoder.hidden)
            mask = (jnp.arange(tokens_BxL.shape[1])[None] < lengths_B[:, None]).astype(jnp.float32)
            return (h_BxLxD.astype(jnp.float32) * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)

        self._pooled, self._cache = pooled, {}

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        texts, cache, tok = texts_list(texts), self._cache, self.tok
        todo = [t for t in dict.fromkeys(texts) if t not in cache]
        n_tok = {t: len(tok.encode(t)) + 2 for t in todo}            # + BOS, EOS
        todo.sort(key=n_tok.get)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            width = min(self.max_len, -(-max(n_tok[t] for t in chunk) // 8) * 8)
            tokens, lengths = encode_texts(tok, chunk + [""] * (self.batch_size - len(chunk)), width)
            for t, v in zip(chunk, np.asarray(self._pooled(self.params, tokens, lengths))):
                cache[t] = v
        return (np.stack([cache[t] for t in texts]).astype(np.float32) if texts
                else np.zeros((0, self.dim), np.float32))

    __call__ = transform


def _trunk(option, train_texts, *, seed=0, trunk=None, **_):
    no_option("trunk", option)
    if trunk is None:
        raise ValueError("text representation 'trunk' needs trunk=(params, cfg, tokenizer)")
    return TrunkStates(*trunk).fit(train_texts)


def _llm(option, train_texts, *, seed=0, llm_batch: int = 64, llm_max_len: int = 40, **_):
    if not option:
        raise ValueError("text representation 'llm:NAME' needs a model name, e.g. "
                         "'llm:smollm2-135m'")
    return LLMStates(option, llm_batch, llm_max_len)


register_representation("trunk", _trunk)
register_representation("llm", _llm, "llm:NAME")
