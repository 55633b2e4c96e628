"""Reward model: pooling at the last real token, confounder inputs, two heads, trunk loading."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm.data.batching import encode_texts
from dlm.data.tokenizer import ByteTokenizer
from dlm.models.decoder import PRESETS, Decoder, init_params
from dlm.models.reward import RewardModel, init_reward_params, load_trunk

CFG = PRESETS["tiny"]
TOK = ByteTokenizer()


@functools.partial(jax.jit, static_argnums=0)
def run(model, params, tokens, lengths, conf=None):
    return model.apply({"params": params}, tokens, lengths, conf)


@jax.jit
def trunk_hidden(params, tokens):
    return Decoder(CFG).apply({"params": params}, tokens, method="hidden")[0]


init_reward = jax.jit(init_reward_params, static_argnums=0)


def test_reads_last_non_pad_token():
    model = RewardModel(CFG)
    p = init_reward(model, jax.random.PRNGKey(0))
    tokens, lengths = encode_texts(TOK, ["short", "a longer headline"], max_len=24)
    base = run(model, p, tokens, lengths)
    assert base["reward"].shape == (2,) and base["features"].shape == (2, CFG.d_model)
    # anything after the last real token (the padding) is ignored
    junk = tokens.copy()
    junk[0, lengths[0]:] = 65
    np.testing.assert_allclose(run(model, p, junk, lengths)["reward"], base["reward"], atol=1e-6)
    # the pooled state is the trunk's hidden state at index length-1
    h = trunk_hidden(p["trunk"], tokens)
    np.testing.assert_allclose(base["features"], h[jnp.arange(2), lengths - 1], atol=1e-5)
    # and the reward is the head applied to it
    head = p["head"]
    np.testing.assert_allclose(base["reward"],
                               base["features"] @ head["kernel"][:, 0] + head["bias"][0], atol=1e-5)


def test_confounders_enter_the_head_and_are_required():
    model = RewardModel(CFG, n_confounders=3)
    p = init_reward(model, jax.random.PRNGKey(1))
    assert p["head"]["kernel"].shape == (CFG.d_model + 3, 1)
    tokens, lengths = encode_texts(TOK, ["x", "y"], max_len=8)
    c0, c1 = jnp.zeros((2, 3)), jnp.array([[1.0, 0, 0], [1.0, 0, 0]])
    r0 = run(model, p, tokens, lengths, c0)["reward"]
    r1 = run(model, p, tokens, lengths, c1)["reward"]
    # reward is linear in the confounders through the head's first confounder weight
    np.testing.assert_allclose(r1 - r0, p["head"]["kernel"][CFG.d_model, 0], atol=1e-6)
    with pytest.raises(ValueError, match="n_confounders=3"):
        model.apply({"params": p}, tokens, lengths)
    with pytest.raises(ValueError, match="2 columns, model expects 3"):
        model.apply({"params": p}, tokens, lengths, jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="n_confounders=0"):
        RewardModel(CFG).apply({"params": p}, tokens, lengths, c0)


def test_two_heads():
    model = RewardModel(CFG, two_heads=True)
    p = init_reward(model, jax.random.PRNGKey(2))
    tokens, lengths = encode_texts(TOK, ["x", "y"], max_len=8)
    out = run(model, p, tokens, lengths)
    assert set(out) == {"reward", "confounder_head", "features"}
    assert out["confounder_head"].shape == (2,)
    assert not np.allclose(out["reward"], out["confounder_head"])


def test_trunk_initialises_from_sft_decoder():
    dec = jax.jit(init_params, static_argnums=0)(CFG, jax.random.PRNGKey(3))
    model = RewardModel(CFG)
    p = load_trunk(init_reward(model, jax.random.PRNGKey(4)), dec)
    for a, b in zip(jax.tree_util.tree_leaves(p["trunk"]), jax.tree_util.tree_leaves(dec)):
        np.testing.assert_array_equal(a, b)
    tokens, lengths = encode_texts(TOK, ["hello"], max_len=10)
    h = trunk_hidden(dec, tokens)
    np.testing.assert_allclose(run(model, p, tokens, lengths)["features"][0], h[0, lengths[0] - 1],
                               atol=1e-5)
    other = jax.eval_shape(lambda: init_params(PRESETS["small"], jax.random.PRNGKey(0)))
    with pytest.raises(ValueError, match="shape mismatch"):
        load_trunk(p, other)
