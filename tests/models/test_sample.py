"""Sampling: KV-cache generation equals the no-cache reference; filters; EOS handling."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm.data.batching import encode_prompts
from dlm.data.tokenizer import ByteTokenizer
from dlm.models.decoder import PRESETS, init_params
from dlm.sample import (continuation_batch, filter_logits, generate, generate_nocache,
                        sequence_logprobs)

CFG = PRESETS["tiny"]
TOK = ByteTokenizer()
T = 28


@pytest.fixture(scope="module")
def setup():
    params = jax.jit(init_params, static_argnums=0)(CFG, jax.random.PRNGKey(0))
    # larger weights than the init so greedy decoding does not just repeat one token
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(
        lambda x: jnp.asarray(0.4 * rng.standard_normal(x.shape) if x.ndim > 1 else x), params)
    prompts, mask = encode_prompts(TOK, ["The story of a dog", "Hi", "Ünïcode lede"], max_len=20)
    return params, prompts, mask


def gen(fn, setup, **kw):
    params, prompts, mask = setup
    return fn(params, CFG, prompts, mask, jax.random.PRNGKey(1), T, **kw)


def test_greedy_kv_cache_equals_no_cache(setup):
    a = gen(generate, setup, greedy=True)
    b = gen(generate_nocache, setup, greedy=True)
    assert a.tokens.shape == (3, T)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)
    assert len(np.unique(np.asarray(a.tokens))) > 5  # a real sequence, not one token repeated
    assert a.mask.all()  # no eos_id given: nothing stops


def test_sampling_kv_cache_equals_no_cache(setup):
    a = gen(generate, setup, temperature=1.3, top_p=0.9)
    b = gen(generate_nocache, setup, temperature=1.3, top_p=0.9)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, gen(generate, setup, greedy=True).tokens)


def test_top_k_one_is_greedy(setup):
    np.testing.assert_array_equal(gen(generate, setup, top_k=1, temperature=2.0).tokens,
                                  gen(generate, setup, greedy=True).tokens)


def test_eos_stops_a_row(setup):
    free = np.asarray(gen(generate, setup, greedy=True).tokens)
    eos = int(free[0, 5])  # pretend row 0's 6th token is EOS
    stop = [int(np.argmax(r == eos)) if (r == eos).any() else None for r in free]
    out = gen(generate, setup, greedy=True, eos_id=eos, pad_id=TOK.pad_id)
    for row, k in enumerate(stop):
        toks, mask, lps = (np.asarray(x[row]) for x in out)
        if k is None:
            np.testing.assert_array_equal(toks, free[row])
            assert mask.all()
            continue
        np.testing.assert_array_equal(toks[:k + 1], free[row, :k + 1])  # up to and incl. EOS
        assert (toks[k + 1:] == TOK.pad_id).all() and (lps[k + 1:] == 0).all()
        assert mask[:k + 1].all() and not mask[k + 1:].any()
    assert stop[0] <= 5


def test_logprobs_equal_sequence_logprobs(setup):
    params, prompts, mask = setup
    out = gen(generate, setup, temperature=1.0, eos_id=TOK.eos_id)
    got = jax.jit(sequence_logprobs, static_argnums=1)(params, CFG,
                                                        *continuation_batch(prompts, mask, out))
    np.testing.assert_allclose(got, out.logprobs.sum(-1), rtol=1e-4)
    assert (out.logprobs <= 0).all()


def test_filter_logits_by_hand():
    logits = jnp.log(jnp.array([[0.05, 0.5, 0.15, 0.3]]))
    def keep(**kw):
        return np.isfinite(np.asarray(filter_logits(logits, 1.0, **kw)))[0].tolist()

    assert keep(top_k=2) == [False, True, False, True]
    # mass before each sorted token: 0, .5, .8, .95 -> top_p .7 keeps the first two
    assert keep(top_p=0.7) == [False, True, False, True]
    assert keep(top_p=0.85) == [False, True, True, True]
    assert keep(top_p=0.4) == [False, True, False, False]
    np.testing.assert_allclose(filter_logits(logits, 2.0), logits / 2.0)


def test_bad_arguments(setup):
    with pytest.raises(ValueError, match="top_p"):
        gen(generate, setup, top_p=0.0)
