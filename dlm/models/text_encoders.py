"""The pretrained text encoders behind "llm:NAME[:opts]" specs, and timed embedding.

NAME is "minilm" (all-MiniLM-L6-v2 sentence embeddings, dlm.models.minilm) or
"smollm2-135m" (SmolLM2's frozen states, dlm.models.llm_states). Both are frozen encoders
(nothing is fitted unless the option std=1 asks for columns standardised on the training
texts) and cache their vectors on disk by text hash.
`llm_builder` has the representation registry's builder signature for the prefix "llm".
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from dlm.models import llm_states, minilm

ENCODERS = {minilm.MINILM: minilm.representation, "smollm2-135m": llm_states.representation}


def llm_builder(option: str | None, train_texts: Sequence[str] = (), *, seed: int = 0, **context):
    """option "NAME[:k=v,...]" -> a representation with .spec, .dim, .feature_names, .transform."""
    name, _, opts = (option or "").partition(":")
    if not name:
        raise ValueError("text representation 'llm:NAME' needs a model name: "
                         f"{', '.join('llm:' + n for n in ENCODERS)}")
    if name not in ENCODERS:
        raise ValueError(f"unknown pretrained encoder llm:{name}; known: "
                         f"{', '.join('llm:' + n for n in ENCODERS)}")
    return ENCODERS[name](opts or None, train_texts, seed=seed, **context)


def llm_representation(spec: str, train_texts: Sequence[str] = (), *, seed: int = 0, **context):
    """From a full spec "llm:NAME[:opts]"."""
    prefix, _, option = spec.partition(":")
    if prefix != "llm":
        raise ValueError(f"not a pretrained-encoder spec: {spec!r} (expected llm:NAME[:opts])")
    return llm_builder(option, train_texts, seed=seed, **context)


def embed_timed(texts: Sequence[str], spec: str, cache=None) -> tuple[np.ndarray, dict]:
    """Embeddings of `texts` under `spec` and how long loading and embedding took."""
    t0 = time.perf_counter()
    rep = llm_representation(spec, cache=cache)
    t1 = time.perf_counter()
    vectors = rep.transform(texts)
    t2 = time.perf_counter()
    return vectors, {"spec": rep.spec, "texts": len(texts), "distinct": len(set(texts)),
                     "dim": rep.dim, "load_s": round(t1 - t0, 2), "embed_s": round(t2 - t1, 2),
                     "total_s": round(t2 - t0, 2)}


def embed_headlines(path, spec: str, limit: int = 0, cache=None) -> tuple[np.ndarray, dict]:
    """The distinct headlines of an Upworthy archive (file order; the first `limit` if > 0),
    embedded under `spec` (filling the disk cache), with timings as in `embed_timed`."""
    import pandas as pd

    from dlm.data.upworthy import load_upworthy

    texts = [str(t) for t in pd.unique(load_upworthy(path).content)]
    vectors, timing = embed_timed(texts[:limit] if limit > 0 else texts, spec, cache)
    return vectors, {**timing, "data": str(path)}


def is_available(option: str) -> bool:
    """Whether the encoder of "NAME[:opts]" (the part after "llm:") is installed."""
    from dlm.models.pretrained import is_available as pretrained_available

    name = option.partition(":")[0]
    return minilm.is_available() if name == minilm.MINILM else pretrained_available(name)
