"""Import llama-architecture GGUF checkpoints (llama.cpp's format) into dlm's Decoder.

`load_gguf(path)` reads the hyper-parameters from the GGUF metadata (layers, widths,
grouped-query heads, RoPE base, RMSNorm epsilon, tied or separate output head),
dequantizes every tensor with `gguf` (llama.cpp's pure-Python reader: Q4_1, Q8_0, F16 ...
all become float32) and returns (DecoderConfig, params) with params in the layout
`Decoder(cfg).apply({"params": params}, ...)` expects.

RoPE layout: llama.cpp rotates interleaved pairs (0,1),(2,3)..., while HF checkpoints
rotate halves; the HF-to-GGUF converter therefore permutes the rows of Q and K within
each head (`permute_rope`). Importing with rope_layout="half" undoes that permutation
(HF layout, cfg.rope_interleaved=False); "interleaved" keeps the GGUF rows and sets
cfg.rope_interleaved=True. Both give the same logits; mixing them up does not crash but
degrades the model (semi-fluent text, much higher perplexity).
"""
from __future__ import annotations

import pathlib
import re
from typing import Literal

import numpy as np

from dlm.data.gguf_file import gguf_field, open_gguf
from dlm.models.decoder import DecoderConfig

RopeLayout = Literal["half", "interleaved"]

# GGUF per-layer tensor name -> (path inside our block, is a Dense kernel)
_BLOCK_TENSORS = {
    "attn_norm": (("attn_norm", "scale"), False),
    "attn_q": (("attn", "q", "kernel"), True),
    "attn_k": (("attn", "k", "kernel"), True),
    "attn_v": (("attn", "v", "kernel"), True),
    "attn_output": (("attn", "o", "kernel"), True),
    "ffn_norm": (("mlp_norm", "scale"), False),
    "ffn_gate": (("mlp", "gate", "kernel"), True),
    "ffn_up": (("mlp", "up", "kernel"), True),
    "ffn_down": (("mlp", "down", "kernel"), True),
}
_GLOBAL_TENSORS = {
    "token_embd.weight": (("embed", "embedding"), False),
    "output_norm.weight": (("final_norm", "scale"), False),
    "output.weight": (("lm_head", "kernel"), True),
}


def config_from_gguf(reader, rope_layout: RopeLayout = "half", dtype: str = "float32",
                     max_len: int | None = None) -> DecoderConfig:
    """DecoderConfig from a llama-architecture GGUF's metadata."""
    where = reader.data.filename
    arch = gguf_field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"{where}: architecture {arch!r} is not supported (only 'llama')")
    if rope_layout not in ("half", "interleaved"):
        raise ValueError(f"rope_layout must be 'half' or 'interleaved', got {rope_layout!r}")
    scaling = gguf_field(reader, "llama.rope.scaling.type", "none")
    if scaling not in ("none", None):
        raise ValueError(f"{where}: RoPE scaling {scaling!r} is not supported")
    n_heads = int(gguf_field(reader, "llama.attention.head_count"))
    d_model = int(gguf_field(reader, "llama.embedding_length"))
    head_dim = d_model // n_heads
    rot = int(gguf_field(reader, "llama.rope.dimension_count", head_dim))
    if rot != head_dim:
        raise ValueError(f"{where}: partial rotary (rope.dimension_count={rot}, head_dim="
                         f"{head_dim}) is not supported")
    tokens = gguf_field(reader, "tokenizer.ggml.tokens", None)
    vocab = int(gguf_field(reader, "llama.vocab_size", len(tokens) if tokens else 0))
    if vocab <= 0:
        raise ValueError(f"{where}: no llama.vocab_size and no tokenizer.ggml.tokens")
    ctx = int(gguf_field(reader, "llama.context_length", 2048))
    return DecoderConfig(
        vocab_size=vocab, d_model=d_model, n_layers=int(gguf_field(reader, "llama.block_count")),
        n_heads=n_heads, n_kv_heads=int(gguf_field(reader, "llama.attention.head_count_kv",
                                                   n_heads)),
        d_ff=int(gguf_field(reader, "llama.feed_forward_length")),
        max_len=ctx if max_len is None else max_len,
        rope_base=float(gguf_field(reader, "llama.rope.freq_base", 10000.0)),
        norm_eps=float(gguf_field(reader, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
        tie_embeddings="output.weight" not in {t.name for t in reader.tensors},
        dtype=dtype, rope_interleaved=rope_layout == "interleaved")


def permute_rope(w_OxI: np.ndarray, n_heads: int) -> np.ndarray:
    """HF rotate-half rows -> llama.cpp interleaved rows, per head (the HF-to-GGUF
    converter's permutation of Q and K weights, in torch [out, in] layout)."""
    out = w_OxI.shape[0]
    half = out // n_heads // 2
    return w_OxI.reshape(n_heads, 2, half, -1).swapaxes(1, 2).reshape(w_OxI.shape)


def unpermute_rope(w_OxI: np.ndarray, n_heads: int) -> np.ndarray:
    """Inverse of `permute_rope`: GGUF interleaved rows back to HF rotate-half rows."""
    out = w_OxI.shape[0]
    half = out // n_heads // 2
    return w_OxI.reshape(n_heads, half, 2, -1).swapaxes(1, 2).reshape(w_OxI.shape)


def dequantize(tensor) -> np.ndarray:
    """A GGUF tensor as float32 in numpy order (torch layout: [out, in] for matrices)."""
    from gguf.quants import dequantize as _deq

    arr = _deq(np.asarray(tensor.data), tensor.tensor_type).astype(np.float32, copy=False)
    shape = tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists the fastest dim first
    return arr.reshape(shape)


def _target(name: str, n_layers: int):
    """(param path, is_kernel, gguf short name) for a GGUF tensor name, or None."""
    if name in _GLOBAL_TENSORS:
        path, kernel = _GLOBAL_TENSORS[name]
        return path, kernel, name
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", name)
    if m and int(m.group(1)) < n_layers and m.group(2) in _BLOCK_TENSORS:
        path, kernel = _BLOCK_TENSORS[m.group(2)]
        return (f"blocks_{m.group(1)}", *path), kernel, m.group(2)
    return None


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def params_from_gguf(reader, cfg: DecoderConfig) -> dict:
    """Decoder params (nested dict of float32 numpy arrays) from the GGUF tensors.

    Matrices are transposed to Flax's [in, out]; Q/K rows are un-permuted unless
    cfg.rope_interleaved. Missing, unknown or mis-shaped tensors are errors.
    """
    where = reader.data.filename
    params: dict = {}
    unknown = []
    for tensor in reader.tensors:
        hit = _target(tensor.name, cfg.n_layers)
        if hit is None:
            unknown.append(tensor.name)
            continue
        path, is_kernel, short = hit
        w = dequantize(tensor)
        if short in ("attn_q", "attn_k") and not cfg.rope_interleaved:
            w = unpermute_rope(w, cfg.n_heads if short == "attn_q" else cfg.n_kv_heads)
        _set(params, path, np.ascontiguousarray(w.T) if is_kernel else w)
    if unknown:
        raise ValueError(f"{where}: tensors with no place in the decoder: {unknown[:8]}")
    _check_shapes(params, cfg, where)
    return params


def _check_shapes(params: dict, cfg: DecoderConfig, where: str) -> None:
    """Every parameter the decoder expects is present with the right shape."""
    import jax

    from dlm.models.decoder import init_params

    want = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    flat_want = dict(jax.tree_util.tree_flatten_with_path(want)[0])
    flat_got = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    key = jax.tree_util.keystr
    missing = [key(k) for k in flat_want if k not in flat_got]
    extra = [key(k) for k in flat_got if k not in flat_want]
    bad = [f"{key(k)}: {flat_got[k].shape} vs {v.shape}" for k, v in flat_want.items()
           if k in flat_got and flat_got[k].shape != v.shape]
    if missing or extra or bad:
        raise ValueError(f"{where}: GGUF tensors do not fit the decoder config: missing "
                         f"{missing[:5]}, unexpected {extra[:5]}, shape (got vs want) {bad[:5]}")


def load_gguf(path: str | pathlib.Path, rope_layout: RopeLayout = "half",
              dtype: str = "float32", max_len: int | None = None):
    """(DecoderConfig, params as numpy float32) from a llama-architecture GGUF file."""
    reader = open_gguf(path)
    cfg = config_from_gguf(reader, rope_layout, dtype, max_len)
    return cfg, params_from_gguf(reader, cfg)
