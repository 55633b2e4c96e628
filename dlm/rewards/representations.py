"""Frozen text representations for reward heads: fitted once per world, shared by all methods.

With a frozen trunk every reward method trains only a small head on the same features, so
methods differ by their targets and penalties alone and a 7-method x 3-seed comparison fits
on two CPU cores. A representation is any callable texts -> float32 [N, D] with a `dim`:

  NgramSVD     hashed word 1-2 grams (dlm.data.ngrams) projected on their top singular
               directions, fitted on the observational text only (no outcomes, no oracle);
               columns standardised. The default: its oracle head reaches causal_corr ~0.97
               on held-out stories of the template world (see dlm.rewards docs).
  TrunkStates  mean-pooled hidden states of a decoder trunk (e.g. the byte-level SFT policy).
  Features     any fixed featuriser, e.g. sims.featurise.phi (the world's own features:
               a known-truth representation for tests and diagnostics, not for claims).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse.linalg

from dlm.data.batching import encode_texts
from dlm.data.ngrams import hashed_ngrams
from dlm.data.tokenizer import Tokenizer
from dlm.models.decoder import Decoder, DecoderConfig

KINDS: tuple[str, ...] = ("ngrams", "trunk", "phi")


class Representation(Protocol):
    dim: int

    def __call__(self, texts: Sequence[str]) -> np.ndarray: ...


def _texts(texts) -> list[str]:
    return [str(t) for t in np.asarray(texts, dtype=object).reshape(-1)]


def _standardiser(H_NxD: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = H_NxD.mean(axis=0)
    sd = H_NxD.std(axis=0)
    return mean.astype(np.float32), np.where(sd > 1e-8, sd, 1.0).astype(np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class NgramSVD:
    """Hashed n-grams times a fitted projection [n_features, dim], then standardised."""

    projection_FxD: np.ndarray
    mean_D: np.ndarray
    sd_D: np.ndarray
    n_features: int
    ngram_range: tuple[int, int]

    @property
    def dim(self) -> int:
        return int(self.projection_FxD.shape[1])

    @classmethod
    def fit(cls, texts: Sequence[str], dim: int = 128, n_features: int = 4096,
            ngram_range: tuple[int, int] = (1, 2), seed: int = 0) -> "NgramSVD":
        """Top-`dim` right singular vectors of the distinct texts' hashed n-gram matrix
        (uncentred: the head has a bias, and the leading direction is then the mean)."""
        uniq = list(dict.fromkeys(_texts(texts)))
        X = hashed_ngrams(uniq, n_features=n_features, ngram_range=tuple(ngram_range))
        k = min(dim, min(X.shape) - 1)
        if k < 1:
            raise ValueError(f"NgramSVD.fit: {len(uniq)} distinct texts are too few for dim={dim}")
        _, s, vt = scipy.sparse.linalg.svds(X.astype(np.float64), k=k, random_state=seed)
        order = np.argsort(-s)                       # svds returns ascending singular values
        proj = vt[order].T.astype(np.float32)
        # sign convention: largest-magnitude entry of each direction positive (deterministic)
        proj *= np.sign(proj[np.abs(proj).argmax(axis=0), np.arange(k)])[None, :]
        H = np.asarray(X @ proj, np.float32)
        mean, sd = _standardiser(H)
        return cls(proj, mean, sd, n_features, tuple(ngram_range))

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        X = hashed_ngrams(_texts(texts), n_features=self.n_features, ngram_range=self.ngram_range)
        return (np.asarray(X @ self.projection_FxD, np.float32) - self.mean_D) / self.sd_D


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

    @property
    def dim(self) -> int:
        return self.cfg.d_model

    def raw(self, texts: Sequence[str]) -> np.ndarray:
        texts = _texts(texts)
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
        mean, sd = _standardiser(self.raw(list(dict.fromkeys(_texts(texts)))))
        return dataclasses.replace(self, mean_D=mean, sd_D=sd)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        H = self.raw(texts)
        return H if self.mean_D is None else (H - self.mean_D) / self.sd_D


@dataclasses.dataclass(frozen=True, eq=False)
class Features:
    """A fixed featuriser texts -> [N, dim] as a representation (e.g. sims.featurise.phi)."""

    fn: Callable[[Sequence[str]], np.ndarray]
    dim: int

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        H = np.asarray(self.fn(_texts(texts)), np.float32)
        if H.ndim != 2 or H.shape[1] != self.dim:
            raise ValueError(f"Features: featuriser returned shape {H.shape}, "
                             f"expected [N, {self.dim}]")
        return H


def fit_representation(kind: str, texts: Sequence[str], *, dim: int = 128, seed: int = 0,
                       trunk: tuple | None = None) -> Representation:
    """A representation fitted on (observational) `texts`: kind "ngrams" | "trunk" | "phi".

    trunk: (params, DecoderConfig, tokenizer) of the decoder whose states "trunk" pools.
    """
    if kind == "ngrams":
        return NgramSVD.fit(texts, dim=dim, seed=seed)
    if kind == "trunk":
        if trunk is None:
            raise ValueError("fit_representation('trunk') needs trunk=(params, cfg, tokenizer)")
        return TrunkStates(*trunk).fit(texts)
    if kind == "phi":
        from sims.featurise import FEATURES, phi
        return Features(phi, len(FEATURES))
    raise ValueError(f"unknown representation {kind!r}; choose one of {KINDS}")
