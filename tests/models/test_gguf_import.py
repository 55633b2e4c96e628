"""GGUF import: a tiny decoder written the way llama.cpp's HF converter writes it (torch
layout, Q/K rows permuted for interleaved RoPE) must come back with the same logits."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm.models.decoder import Decoder, DecoderConfig, init_params
from dlm.data.gguf_file import open_gguf
from dlm.models.gguf_import import config_from_gguf, load_gguf, permute_rope, unpermute_rope

gguf = pytest.importorskip("gguf", reason="GGUF import needs the `gguf` package")

CFG = DecoderConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48,
                    max_len=64, rope_base=50000.0, norm_eps=1e-6)
_NAMES = {"attn_norm": "attn_norm", "attn_q": "attn/q", "attn_k": "attn/k", "attn_v": "attn/v",
          "attn_output": "attn/o", "ffn_norm": "mlp_norm", "ffn_gate": "mlp/gate",
          "ffn_up": "mlp/up", "ffn_down": "mlp/down"}


def _get(tree, path):
    for k in path.split("/"):
        tree = tree[k]
    return np.asarray(tree)


def write_gguf(path, cfg, params, arch="llama", quant_embed=False, skip=(), extra=(), kv=None):
    """Write `params` (HF layout) as a GGUF file the way convert_hf_to_gguf.py does;
    kv(writer) may add more metadata (a tokenizer)."""
    w = gguf.GGUFWriter(str(path), arch)
    if kv is not None:
        kv(w)
    w.add_block_count(cfg.n_layers)
    w.add_context_length(cfg.max_len)
    w.add_embedding_length(cfg.d_model)
    w.add_feed_forward_length(cfg.d_ff)
    w.add_head_count(cfg.n_heads)
    w.add_head_count_kv(cfg.n_kv_heads)
    w.add_rope_freq_base(cfg.rope_base)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_vocab_size(cfg.vocab_size)
    tensors = {"token_embd.weight": _get(params, "embed/embedding"),
               "output_norm.weight": _get(params, "final_norm/scale")}
    if not cfg.tie_embeddings:
        tensors["output.weight"] = _get(params, "lm_head/kernel").T
    for i in range(cfg.n_layers):
        for short, ours in _NAMES.items():
            if ours.endswith("norm"):
                t = _get(params, f"blocks_{i}/{ours}/scale")
            else:
                t = _get(params, f"blocks_{i}/{ours}/kernel").T  # torch [out, in]
            if short == "attn_q":
                t = permute_rope(t, cfg.n_heads)
            if short == "attn_k":
                t = permute_rope(t, cfg.n_kv_heads)
            tensors[f"blk.{i}.{short}.weight"] = t
    tensors.update(extra)
    for name, t in tensors.items():
        if name in skip:
            continue
        t = np.ascontiguousarray(t, np.float32)
        if quant_embed and name == "token_embd.weight":
            q8 = gguf.GGMLQuantizationType.Q8_0
            w.add_tensor(name, gguf.quants.quantize(t, q8), raw_dtype=q8)
        else:
            w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _random_params(cfg, seed=0):
    # random norm gains too, so a misplaced norm cannot go unnoticed
    p = init_params(cfg, jax.random.key(seed))
    leaves, tree = jax.tree_util.tree_flatten(p)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    return jax.tree_util.tree_unflatten(
        tree, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def _logits(cfg, params, tokens):
    return np.asarray(Decoder(cfg).apply({"params": params}, jnp.asarray(tokens))[0])


TOKENS = np.array([[3, 17, 42, 5, 9, 60, 1, 33, 7, 2, 11, 50]])


def test_permute_rope_by_hand():
    # one head, head_dim 4: HF rotates pairs (0,2),(1,3); llama.cpp wants them adjacent
    w = np.arange(4)[:, None] * np.ones((1, 3))
    assert permute_rope(w, 1)[:, 0].tolist() == [0, 2, 1, 3]
    w2 = np.random.default_rng(0).normal(size=(12, 5))
    assert np.array_equal(unpermute_rope(permute_rope(w2, 3), 3), w2)


def test_roundtrip_half_layout_is_exact(tmp_path):
    params = _random_params(CFG)
    cfg, got = load_gguf(write_gguf(tmp_path / "m.gguf", CFG, params), rope_layout="half")
    # GQA, rope base, eps (stored as float32), tied head, context length from the metadata
    assert cfg.norm_eps == pytest.approx(CFG.norm_eps, rel=1e-6)
    assert dataclasses.replace(cfg, norm_eps=CFG.norm_eps) == CFG
    flat_in = jax.tree_util.tree_leaves_with_path(params)
    flat_out = dict(jax.tree_util.tree_leaves_with_path(got))
    for path, x in flat_in:
        np.testing.assert_array_equal(flat_out[path], np.asarray(x), err_msg=str(path))


def test_interleaved_layout_gives_same_logits_and_wrong_choice_differs(tmp_path):
    params = _random_params(CFG)
    path = write_gguf(tmp_path / "m.gguf", CFG, params)
    want = _logits(CFG, params, TOKENS)
    cfg_i, p_i = load_gguf(path, rope_layout="interleaved")
    assert cfg_i.rope_interleaved
    np.testing.assert_allclose(_logits(cfg_i, p_i, TOKENS), want, atol=2e-5, rtol=1e-5)
    # GGUF rows with rotate-half RoPE: the mistake the issue warns about
    wrong = _logits(dataclasses.replace(cfg_i, rope_interleaved=False), p_i, TOKENS)
    assert np.max(np.abs(wrong - want)) > 1e-2


def test_untied_head_and_quantized_embedding(tmp_path):
    cfg = dataclasses.replace(CFG, tie_embeddings=False)
    params = _random_params(cfg, seed=3)
    cfg2, got = load_gguf(write_gguf(tmp_path / "m.gguf", cfg, params, quant_embed=True))
    assert not cfg2.tie_embeddings
    np.testing.assert_array_equal(got["lm_head"]["kernel"], np.asarray(params["lm_head"]["kernel"]))
    # Q8_0: blocks of 32 values share scale d = max|x| / 127, stored as float16 (relative
    # error <= 2^-11), so each error is <= d / 2 + 127 * d * 2^-11
    emb = np.asarray(params["embed"]["embedding"])
    d = np.abs(emb.reshape(-1, 32)).max(axis=1, keepdims=True) / 127
    err = np.abs(got["embed"]["embedding"] - emb).reshape(-1, 32)
    assert np.all(err <= d * (0.5 + 127 / 2048)) and err.max() > 0


def test_clear_errors(tmp_path):
    params = _random_params(CFG)
    with pytest.raises(ValueError, match="architecture 'gpt2'"):
        load_gguf(write_gguf(tmp_path / "a.gguf", CFG, params, arch="gpt2"))
    with pytest.raises(ValueError, match=r"missing.*blocks_1.*attn.*v"):
        load_gguf(write_gguf(tmp_path / "b.gguf", CFG, params, skip=("blk.1.attn_v.weight",)))
    extra = {"rope_freqs.weight": np.ones(4, np.float32)}
    with pytest.raises(ValueError, match="rope_freqs.weight"):
        load_gguf(write_gguf(tmp_path / "c.gguf", CFG, params, extra=extra))
    (tmp_path / "d.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(ValueError, match="d.gguf"):
        open_gguf(tmp_path / "d.gguf")
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        open_gguf(tmp_path / "nope.gguf")
    with pytest.raises(ValueError, match="rope_layout"):
        config_from_gguf(open_gguf(tmp_path / "c.gguf"), rope_layout="rotate")
