"""A disk cache of text embeddings keyed by (model and options, sha1 of the text).

Each key (e.g. "minilm|<weights id>|max_len=256") gets a folder under
$DLM_CACHE/embeddings/; every call that computes new texts adds one shard (an .npz of the
texts' sha1 digests and their float32 vectors), written atomically, so concurrent or
interrupted runs leave whole shards only. A second call on the same texts reads the shards
and never calls the encoder.

Also the pieces the encoders share: length-bucketed batching (`embed_ids`), the fixed
text representation over a cached encoder (`TextEmbedding`) and "k=v,..." spec options.
"""
from __future__ import annotations

import hashlib
import pathlib
import uuid
from typing import Callable, Sequence

import numpy as np

from dlm.models.pretrained import cache_dir

# padded lengths: jit compiles one shape per bucket used; steps of 8 up to 64 because
# headlines are 10-30 tokens (padding to 32 would waste up to a third of the compute)
_BUCKETS = (8, 16, 24, 32, 40, 48, 64, 96, 128, 192, 256, 384, 512)


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def cache_folder(key: str, cache: str | pathlib.Path | None = None) -> pathlib.Path:
    return cache_dir(cache) / "embeddings" / hashlib.sha1(key.encode()).hexdigest()[:16]


def _load(folder: pathlib.Path) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    for shard in sorted(folder.glob("shard-*.npz")):
        try:
            with np.load(shard) as data:
                found.update(zip(data["hashes"].tolist(), data["vectors"]))
        except (OSError, ValueError, KeyError):
            continue  # a damaged shard is recomputed, not fatal
    return found


def cached_embed(texts: Sequence[str], key: str, compute: Callable[[list[str]], np.ndarray],
                 cache: str | pathlib.Path | None = None, dim: int = 0) -> np.ndarray:
    """Vectors [N, D] float32 for `texts`, computing (via `compute`, on the distinct uncached
    texts only, in one call) what the cache for `key` lacks, then storing it. `dim` is the
    width of the (0, dim) result for no texts."""
    from dlm.outputs import write_atomic, write_json

    folder = cache_folder(key, cache)
    hashes = [text_hash(t) for t in texts]
    found = _load(folder) if folder.is_dir() else {}
    missing: dict[str, str] = {}
    for h, t in zip(hashes, texts):
        if h not in found:
            missing.setdefault(h, t)
    if missing:
        new = np.asarray(compute(list(missing.values())), np.float32)
        if new.shape[0] != len(missing):
            raise ValueError(f"embedding {key!r}: encoder returned {new.shape[0]} rows "
                             f"for {len(missing)} texts")
        write_json(folder / "key.json", {"key": key})
        shard = folder / f"shard-{uuid.uuid4().hex}.npz"
        write_atomic(shard, lambda f: np.savez(f, hashes=np.array(list(missing)), vectors=new),
                mode="wb")
        found.update(zip(missing, new))
    if not hashes:
        return np.zeros((0, dim), np.float32)
    return np.stack([found[h] for h in hashes]).astype(np.float32)


def bucket_length(n: int, buckets: Sequence[int] = _BUCKETS) -> int:
    return next((b for b in buckets if b >= n), n)


def embed_ids(ids: Sequence[Sequence[int]], dim: int, batch_size: int, run, pad_id: int = 0,
              buckets: Sequence[int] = _BUCKETS) -> np.ndarray:
    """Batch token-id lists by length for `run(ids_BxL, mask_BxL) -> [B, dim]`.

    Texts are sorted by length and right-padded to a bucket length; a short last batch is
    padded with empty rows to the full batch, so jit sees one shape per bucket (and a row's
    numbers do not depend on how many texts came with it).
    """
    out = np.zeros((len(ids), dim), np.float32)
    order = np.argsort([len(x) for x in ids], kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        L = bucket_length(max(len(ids[i]) for i in rows), buckets)
        tok = np.full((batch_size, L), pad_id, np.int32)
        mask = np.zeros((batch_size, L), np.int32)
        for j, i in enumerate(rows):
            tok[j, :len(ids[i])] = ids[i]
            mask[j, :len(ids[i])] = 1
        out[rows] = run(tok, mask)[:len(rows)]
    return out


class TextEmbedding:
    """A fixed text representation over a cached encoder; `fit(texts)` standardises its
    columns on those (training) texts (the specs' std=1)."""

    feature_names = None

    def __init__(self, spec: str, dim: int, key: str, embed, cache=None):
        self.spec, self.dim, self._key, self._embed, self._cache = spec, dim, key, embed, cache
        self.mean_D = self.sd_D = None

    def raw(self, texts: Sequence[str]) -> np.ndarray:
        return cached_embed([str(t) for t in texts], self._key, self._embed, self._cache,
                            dim=self.dim)

    def fit(self, texts: Sequence[str]) -> "TextEmbedding":
        H = self.raw(list(dict.fromkeys(map(str, texts))))
        if len(H) < 2:
            raise ValueError(f"{self.spec}: standardising needs at least 2 distinct training "
                             f"texts, got {len(H)}")
        sd = H.std(axis=0)
        self.mean_D, self.sd_D = H.mean(axis=0), np.where(sd > 1e-8, sd, 1.0).astype(np.float32)
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        H = self.raw(texts)
        return H if self.mean_D is None else ((H - self.mean_D) / self.sd_D).astype(np.float32)

    __call__ = transform  # dlm.rewards' representations are callables


def parse_options(option: str | None, allowed: dict) -> dict:
    """"k=v,k=v" -> dict over `allowed` (name -> default; values cast to the default's type)."""
    out = dict(allowed)
    for part in filter(None, (option or "").split(",")):
        name, eq, value = part.partition("=")
        if not eq or name not in allowed:
            raise ValueError(f"unknown option {part!r}; known: "
                             f"{', '.join(f'{k}=' for k in allowed) or 'none'}")
        try:
            out[name] = type(allowed[name])(value)
        except ValueError:
            kind = type(allowed[name]).__name__
            raise ValueError(f"option {name}={value!r} is not a {kind}") from None
    return out
