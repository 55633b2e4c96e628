"""Decoder: shapes, causality, a numpy reference of the whole forward pass, GQA, rotary
positions, left padding and the KV cache."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm.models.decoder import (PRESETS, Decoder, DecoderConfig, count_params,
                                flops_per_token, init_cache, init_params, rope)

CFG = PRESETS["tiny"]


def randomize(params, key, scale=0.3):
    """Larger random weights than the init, so outputs vary strongly with the input."""
    rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**30)))
    leaves, tree = jax.tree_util.tree_flatten(params)
    return tree.unflatten([jnp.asarray(1.0 + 0.1 * rng.standard_normal(x.shape) if x.ndim == 1
                                       else scale * rng.standard_normal(x.shape), jnp.float32)
                           for x in leaves])


@functools.partial(jax.jit, static_argnums=0)
def forward(cfg, params, tokens, attn_mask_BxL=None, cache=None):
    """Jitted so each test compiles once instead of dispatching op by op."""
    return Decoder(cfg).apply({"params": params}, tokens, attn_mask_BxL=attn_mask_BxL, cache=cache)


init = jax.jit(init_params, static_argnums=0)


@pytest.fixture(scope="module")
def params():
    return randomize(init(CFG, jax.random.PRNGKey(0)), jax.random.PRNGKey(1))


def tokens_of(key, B, L):
    return jax.random.randint(jax.random.PRNGKey(key), (B, L), 0, 256)


def test_shapes_and_hidden(params):
    logits, cache = forward(CFG, params, tokens_of(0, 3, 7))
    assert logits.shape == (3, 7, CFG.vocab_size) and logits.dtype == jnp.float32
    assert cache is None
    h, _ = jax.jit(lambda p, t: Decoder(CFG).apply({"params": p}, t, method="hidden"))(
        params, tokens_of(0, 3, 7))
    assert h.shape == (3, 7, CFG.d_model)


def test_causal(params):
    a = tokens_of(1, 2, 10)
    b = a.at[:, 6].set((a[:, 6] + 1) % 256)
    la, _ = forward(CFG, params, a)
    lb, _ = forward(CFG, params, b)
    np.testing.assert_allclose(la[:, :6], lb[:, :6], atol=1e-5)
    assert np.abs(la[:, 6:] - lb[:, 6:]).max() > 1e-3


def _np_reference(cfg, p, tokens):
    """Plain per-head multi-head attention in numpy (rotate-half RoPE, SwiGLU, tied output)."""
    p = jax.tree_util.tree_map(np.asarray, p)
    H, N, K = cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
    norm = lambda x, s: x / np.sqrt((x * x).mean(-1, keepdims=True) + cfg.norm_eps) * s  # noqa
    L = tokens.shape[1]
    freqs = cfg.rope_base ** (-np.arange(H // 2) / (H // 2))
    ang = np.arange(L)[:, None] * freqs  # [L, H/2]
    cos, sin = np.concatenate([np.cos(ang)] * 2, -1), np.concatenate([np.sin(ang)] * 2, -1)

    def rot(x):  # x [L, H]
        x1, x2 = x[:, :H // 2], x[:, H // 2:]
        return x * cos + np.concatenate([-x2, x1], -1) * sin

    x = p["embed"]["embedding"][np.asarray(tokens)]
    out = []
    for row in x:
        for i in range(cfg.n_layers):
            b = p[f"blocks_{i}"]
            hn = norm(row, b["attn_norm"]["scale"])
            q = hn @ b["attn"]["q"]["kernel"]
            k = hn @ b["attn"]["k"]["kernel"]
            v = hn @ b["attn"]["v"]["kernel"]
            heads = []
            for h in range(N):
                kv = h // (N // K)
                qh, kh = rot(q[:, h * H:(h + 1) * H]), rot(k[:, kv * H:(kv + 1) * H])
                s = qh @ kh.T / np.sqrt(H) + np.triu(np.full((L, L), -np.inf), 1)
                w = np.exp(s - s.max(-1, keepdims=True))
                heads.append((w / w.sum(-1, keepdims=True)) @ v[:, kv * H:(kv + 1) * H])
            row = row + np.concatenate(heads, -1) @ b["attn"]["o"]["kernel"]
            hn = norm(row, b["mlp_norm"]["scale"])
            g = hn @ b["mlp"]["gate"]["kernel"]
            swiglu = g / (1 + np.exp(-g)) * (hn @ b["mlp"]["up"]["kernel"])
            row = row + swiglu @ b["mlp"]["down"]["kernel"]
        out.append(norm(row, p["final_norm"]["scale"]) @ p["embed"]["embedding"].T)
    return np.stack(out)


@pytest.mark.parametrize("n_kv", [4, 2])
def test_matches_numpy_reference(n_kv):
    cfg = dataclasses.replace(CFG, n_kv_heads=n_kv)
    p = randomize(init(cfg, jax.random.PRNGKey(2)), jax.random.PRNGKey(3))
    tok = tokens_of(4, 2, 9)
    logits, _ = forward(cfg, p, tok)
    np.testing.assert_allclose(logits, _np_reference(cfg, p, tok), rtol=2e-4, atol=2e-4)


def test_gqa_equals_mha_with_repeated_kv_heads(params):
    mha = dataclasses.replace(CFG, n_kv_heads=CFG.n_heads)
    G, H = CFG.n_heads // CFG.n_kv_heads, CFG.head_dim

    def repeat(kernel):  # [D, K*H] -> [D, K*G*H], each kv head serving its G query heads
        D = kernel.shape[0]
        return jnp.repeat(kernel.reshape(D, -1, 1, H), G, axis=2).reshape(D, -1)

    is_kv = lambda path: any(getattr(k, "key", None) in ("k", "v") for k in path)  # noqa: E731
    p_mha = jax.tree_util.tree_map_with_path(lambda path, x: repeat(x) if is_kv(path) else x,
                                             params)
    tok = tokens_of(5, 2, 8)
    np.testing.assert_allclose(forward(CFG, params, tok)[0], forward(mha, p_mha, tok)[0],
                               rtol=1e-5, atol=1e-5)


def test_rope_depends_on_relative_position_and_interleaving_is_a_permutation():
    x = jax.random.normal(jax.random.PRNGKey(6), (1, 2, 1, 8))
    def dot(pq, pk, il):  # <rope(q at pq), rope(k at pk)>
        q = rope(x[:, :1], jnp.array([[pq]]), 100.0, il)
        return float(jnp.sum(q * rope(x[:, 1:], jnp.array([[pk]]), 100.0, il)))

    for il in (False, True):
        assert dot(5, 2, il) == pytest.approx(dot(13, 10, il), rel=1e-4)
        assert dot(5, 2, il) != pytest.approx(dot(5, 4, il), rel=1e-3)
    # interleaved pairs (2i, 2i+1) == rotate-half after moving even dims first
    perm = jnp.array([0, 2, 4, 6, 1, 3, 5, 7])
    pos = jnp.array([[3, 7]])
    np.testing.assert_allclose(rope(x, pos, 100.0, True)[..., perm],
                               rope(x[..., perm], pos, 100.0, False), atol=1e-6)


def test_left_padding_invariance(params):
    tok = tokens_of(7, 1, 6)
    unpadded, _ = forward(CFG, params, tok)
    padded_tok = jnp.concatenate([jnp.full((1, 3), 256), tok], axis=1)
    mask = jnp.arange(9)[None] >= 3
    padded, _ = forward(CFG, params, padded_tok, attn_mask_BxL=mask)
    np.testing.assert_allclose(padded[:, 3:], unpadded, rtol=1e-5, atol=1e-5)


def test_cache_prefill_then_steps_equals_full_forward(params):
    tok = tokens_of(8, 2, 10)
    mask = jnp.array([[False, False] + [True] * 8, [True] * 10])
    full, _ = forward(CFG, params, tok, attn_mask_BxL=mask)
    cache = init_cache(CFG, 2, 16)
    logits, cache = forward(CFG, params, tok[:, :6], attn_mask_BxL=mask[:, :6], cache=cache)
    steps = [logits]
    for t in range(6, 10):
        logits, cache = forward(CFG, params, tok[:, t:t + 1], cache=cache)
        steps.append(logits)
    np.testing.assert_allclose(jnp.concatenate(steps, 1)[:, 2:], full[:, 2:], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jnp.concatenate(steps, 1)[1], full[1], rtol=1e-5, atol=1e-5)
    assert int(cache.index) == 10 and cache.next_pos_B.tolist() == [8, 10]


def test_count_params_and_flops_by_hand():
    D, F, V, H = 32, 96, 264, 8
    per_layer = D * 4 * H + 2 * D * 2 * H + 4 * H * D + 3 * D * F + 2 * D  # q,k,v,o,mlp,norms
    assert count_params(init(CFG, jax.random.PRNGKey(0))) == V * D + 2 * per_layer + D
    matmul = 2 * (per_layer - 2 * D) + V * D
    assert flops_per_token(CFG, 16) == 6 * matmul + 12 * 2 * D * 16


def test_untied_head_and_remat_give_same_math():
    cfg = dataclasses.replace(CFG, tie_embeddings=False, n_layers=1)
    p = init(cfg, jax.random.PRNGKey(9))
    assert p["lm_head"]["kernel"].shape == (CFG.d_model, CFG.vocab_size)
    tok = tokens_of(10, 2, 5)
    loss = lambda c: jax.jit(jax.grad(lambda q: forward(c, q, tok)[0].sum()))  # noqa: E731
    g1 = loss(cfg)(p)
    g2 = loss(dataclasses.replace(cfg, remat=True))(p)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), g1, g2)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="n_kv_heads"):
        DecoderConfig(d_model=32, n_heads=4, n_kv_heads=3)


def test_presets_sizes():
    small = count_params(init(PRESETS["small"], jax.random.PRNGKey(0)))
    assert 2e6 < small < 5e6
    for name, lo, hi in [("base", 20e6, 30e6), ("large100m", 85e6, 115e6)]:
        shapes = jax.eval_shape(lambda: init_params(PRESETS[name], jax.random.PRNGKey(0)))
        assert lo < count_params(shapes) < hi, name


def test_bfloat16_compute_tracks_float32(params):
    cfg16 = dataclasses.replace(CFG, dtype="bfloat16")
    tok = tokens_of(11, 2, 8)
    l32, _ = forward(CFG, params, tok)
    l16, _ = forward(cfg16, params, tok)
    assert l16.dtype == jnp.float32 and bool(jnp.isfinite(l16).all())
    # bf16 keeps ~3 significant digits; logits here are O(10)
    assert float(jnp.abs(l16 - l32).max()) < 0.05 * float(jnp.abs(l32).max())
    assert (jnp.argmax(l16, -1) == jnp.argmax(l32, -1)).mean() > 0.8
