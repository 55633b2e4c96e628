"""The registry: spec prefix -> builder(option, train_texts, *, seed, **context) -> rep."""
from __future__ import annotations

import dataclasses
from typing import Callable, Protocol, Sequence

import numpy as np

DEFAULT_TEXT_SPEC = "ngram:256"     # the estimator's text term unless a config says otherwise


class Representation(Protocol):
    spec: str
    dim: int
    feature_names: tuple[str, ...] | None

    def transform(self, texts: Sequence[str]) -> np.ndarray: ...

    def __call__(self, texts: Sequence[str]) -> np.ndarray: ...


Builder = Callable[..., Representation]
_BUILDERS: dict[str, tuple[Builder, str]] = {}
# registered outside dlm (dlm never imports sims): what to import to get them
_ELSEWHERE = {"phi": "import sims.featurise"}


def texts_list(texts) -> list[str]:
    """Any sequence or array of texts as a flat list of str."""
    return [str(t) for t in np.asarray(texts, dtype=object).reshape(-1)]


def register_representation(prefix: str, builder: Builder, usage: str | None = None) -> None:
    """Make `prefix[:option]` a spec: builder(option | None, train_texts, *, seed, **context).
    usage: how the spec is written (e.g. "ngram:D"), for error messages. Re-registering a
    prefix replaces it (a module imported twice registers the same builder)."""
    if not prefix or ":" in prefix:
        raise ValueError(f"register_representation: bad prefix {prefix!r}")
    _BUILDERS[prefix] = (builder, usage or prefix)


def available_representations() -> tuple[str, ...]:
    """The registered specs as written ("ngram:D", ...), sorted."""
    return tuple(sorted(usage for _, usage in _BUILDERS.values()))


def fit_representation(spec: str, train_texts: Sequence[str], *, seed: int = 0, **context
                       ) -> Representation:
    """The representation `spec` fitted on `train_texts` only (no outcomes).

    context: what some builders need (trunk=(params, cfg, tokenizer) for "trunk"); builders
    ignore what they do not use, so a caller may pass the same context for any spec.
    """
    prefix, _, option = str(spec).partition(":")
    if prefix not in _BUILDERS:
        if prefix in _ELSEWHERE:
            raise ValueError(f"text representation {spec!r} is not registered: "
                             f"`{_ELSEWHERE[prefix]}` first (it registers {prefix!r})")
        raise ValueError(f"unknown text representation {spec!r}; valid: "
                         f"{', '.join(available_representations())}"
                         + "".join(f", {p} (after `{how}`)" for p, how in _ELSEWHERE.items()
                                   if p not in _BUILDERS))
    builder, _ = _BUILDERS[prefix]
    return builder(option or None, texts_list(train_texts), seed=seed, **context)


def text_term(spec: str, texts: Sequence[str], *, seed: int = 0, **context) -> np.ndarray | None:
    """The estimator's text term h(X) [N, F] float32: `spec` fitted on `texts` (the log's own
    texts, no outcomes) and applied to them, once per distinct text; None for "none"."""
    texts = texts_list(texts)
    uniq, inverse = np.unique(np.asarray(texts, dtype=object).astype(str), return_inverse=True)
    rep = fit_representation(spec, texts, seed=seed, **context)   # as dlm.api fits it
    if rep.dim == 0:
        return None
    H = rep.transform(list(uniq))
    H = H.toarray() if hasattr(H, "toarray") else H       # "ngram:D:sparse": the fit is dense
    return np.asarray(H, np.float32)[inverse.reshape(-1)]


def positive_int(spec: str, option: str | None, default: int) -> int:
    """The width after ':' in `spec` (default when absent), checked."""
    if option is None:
        return default
    if not option.isdigit() or int(option) < 1:
        raise ValueError(f"text representation {spec!r}: the width after ':' must be a "
                         "positive int")
    return int(option)


def standardiser(H_NxD: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and sds (1 where a column is constant) of H, float32."""
    mean = H_NxD.mean(axis=0)
    sd = H_NxD.std(axis=0)
    return mean.astype(np.float32), np.where(sd > 1e-8, sd, 1.0).astype(np.float32)


def no_option(prefix: str, option: str | None) -> None:
    if option is not None:
        raise ValueError(f"text representation '{prefix}:{option}': {prefix!r} takes no "
                         "option after ':'")


@dataclasses.dataclass(frozen=True, eq=False)
class Features:
    """A fixed featuriser texts -> [N, dim] as a representation (e.g. sims.featurise.phi)."""

    fn: Callable[[Sequence[str]], np.ndarray]
    dim: int
    spec: str = "features"
    feature_names: tuple[str, ...] | None = None

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        H = np.asarray(self.fn(texts_list(texts)), np.float32)
        if H.ndim != 2 or H.shape[1] != self.dim:
            raise ValueError(f"{self.spec}: featuriser returned shape {H.shape}, "
                             f"expected [N, {self.dim}]")
        return H

    __call__ = transform


def _none(option, train_texts, *, seed=0, **_):
    no_option("none", option)
    return Features(lambda texts: np.zeros((len(texts), 0), np.float32), 0, "none", ())


register_representation("none", _none)
