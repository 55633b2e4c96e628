"""LoRA: the merge by hand, identity at init, and SFT / reward / DPO training on a tiny
decoder that moves only the adapters (and a reward head), never the frozen base."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dlm.data.batching import encode_sft, encode_texts
from dlm.data.tokenizer import ByteTokenizer
from dlm.models import lora
from dlm.models.decoder import PRESETS, Decoder, init_params
from dlm.models.reward import RewardModel, init_reward_params, load_trunk
from dlm.sample import sequence_logprobs
from dlm.train.losses import dpo_loss, next_token_loss, reward_regression
from dlm.train.step import TrainState, make_train_step

CFG = PRESETS["tiny"]
TOK = ByteTokenizer()


def _flat(tree):
    return {jax.tree_util.keystr(p): np.asarray(x)
            for p, x in jax.tree_util.tree_leaves_with_path(tree)}


@functools.lru_cache(maxsize=1)
def _base():
    return jax.jit(init_params, static_argnums=0)(CFG, jax.random.key(0))


def _train(loss_fn, trainable, batch, steps, lr=1e-2, frozen=None):
    tx = optax.adam(lr)
    step = make_train_step(loss_fn, tx, frozen=frozen)
    state = TrainState.create(trainable, tx)
    losses = []
    for s in range(steps):
        state, m = step(state, batch, jax.random.key(s))
        losses.append(float(m["loss"]))
    return state.params, losses


def test_merge_by_hand():
    params = {"blk": {"q": {"kernel": jnp.ones((2, 3))}, "norm": {"scale": jnp.ones(2)}}}
    cfg = lora.LoraConfig(rank=1, alpha=2.0, targets=("q",))
    adapters = {"blk": {"q": {"a": jnp.array([[1.0], [2.0]]), "b": jnp.array([[3.0, 0.0, -1.0]])}}}
    merged = lora.merge(params, adapters, cfg)
    # W + (alpha / rank) * a @ b = 1 + 2 * [[3, 0, -1], [6, 0, -2]]
    np.testing.assert_array_equal(merged["blk"]["q"]["kernel"],
                                  [[7.0, 1.0, -1.0], [13.0, 1.0, -3.0]])
    assert merged["blk"]["norm"] is params["blk"]["norm"]
    np.testing.assert_array_equal(params["blk"]["q"]["kernel"], np.ones((2, 3)))  # not mutated


def test_init_targets_shapes_and_identity():
    base = _base()
    cfg = lora.LoraConfig(rank=4, targets=("q", "v", "down"))
    adapters = lora.init_lora(base, cfg, jax.random.key(1))
    flat = _flat(adapters)
    assert len(flat) == CFG.n_layers * 3 * 2
    a_q = adapters["blocks_0"]["attn"]["q"]["a"]
    assert a_q.shape == (CFG.d_model, 4)
    assert adapters["blocks_1"]["mlp"]["down"]["b"].shape == (4, CFG.d_model)
    assert np.all(np.abs(a_q) <= CFG.d_model ** -0.5) and np.any(a_q != 0)
    # B = 0: the adapted model is exactly the base model
    merged = lora.merge(base, adapters, cfg)
    for k, v in _flat(base).items():
        np.testing.assert_array_equal(_flat(merged)[k], v, err_msg=k)
    d_kv = CFG.n_kv_heads * CFG.head_dim  # rank * (d_in + d_out) per adapted kernel
    per_layer = 4 * ((CFG.d_model + CFG.d_model) + (CFG.d_model + d_kv) + (CFG.d_ff + CFG.d_model))
    assert lora.count(adapters) == CFG.n_layers * per_layer


def test_errors_are_clear():
    base = _base()
    with pytest.raises(ValueError, match="no Dense kernel named"):
        lora.init_lora(base, lora.LoraConfig(targets=("qkv",)), jax.random.key(0))
    with pytest.raises(KeyError, match="'head'"):
        lora.init_trainable(base, lora.LoraConfig(), jax.random.key(0), train=("head",))
    with pytest.raises(KeyError, match="blocks_9"):
        lora.merge(base, {"blocks_9": {"attn": {"q": {"a": 0, "b": 0}}}}, lora.LoraConfig())
    with pytest.raises(ValueError, match="rank"):
        lora.LoraConfig(rank=0)


def _sft_batch():
    prompts = ["lede one about cats", "a second lede", "third lede on dogs", "fourth"]
    heads = ["Cats Rule", "You Won't Believe This", "Dogs Are Great", "Numbers 1 2 3"]
    tokens, mask = encode_sft(TOK, prompts, heads, max_len=48)
    return {"tokens": tokens, "loss_mask": mask}


def test_sft_moves_only_adapters():
    base = _base()
    cfg = lora.LoraConfig(rank=4, alpha=8.0, targets=("q", "v", "up", "down"))
    model = Decoder(CFG)

    def sft_loss(params, batch, rng):
        logits, _ = model.apply({"params": params}, batch["tokens"])
        return next_token_loss(logits, batch["tokens"], batch["loss_mask"])

    before = _flat(base)
    trainable = lora.init_trainable(base, cfg, jax.random.key(2))
    trained, losses = _train(lora.lora_loss(sft_loss, cfg), trainable, _sft_batch(), 20,
                              lr=3e-2, frozen=base)
    # a random tiny base with a frozen tied embedding (std 0.02) keeps logits small, so
    # the reachable drop from log(264) is modest; it is steady (5.58 -> 5.17 here)
    assert losses[-1] < losses[0] - 0.2 and np.mean(losses[-5:]) < np.mean(losses[:5])
    for k, v in _flat(base).items():  # the frozen base is untouched
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    merged = _flat(lora.full_params(base, trained, cfg))
    changed = {k for k in before if not np.array_equal(merged[k], before[k])}
    adapted = (("attn", "q"), ("attn", "v"), ("mlp", "up"), ("mlp", "down"))
    assert changed == {f"['blocks_{i}']['{block}']['{m}']['kernel']"
                       for i in range(CFG.n_layers) for block, m in adapted}
    assert set(trained) == {"lora"}


def test_reward_head_on_frozen_trunk():
    model = RewardModel(CFG)
    init = jax.jit(init_reward_params, static_argnums=0)
    base = load_trunk(init(model, jax.random.key(3)), _base())
    cfg = lora.LoraConfig(rank=2, targets=("q", "k", "v", "o"))
    texts = ["Cats Rule", "You Won't Believe This", "Dogs Are Great", "Numbers 1 2 3"]
    tokens, lengths = encode_texts(TOK, texts, max_len=32)
    batch = {"tokens": tokens, "lengths": lengths,
             "y": np.array([1.0, -1.0, 0.5, -0.5], np.float32)}

    def reward_loss(params, b, rng):
        out = model.apply({"params": params}, b["tokens"], b["lengths"])
        return reward_regression(out["reward"], b["y"])

    trainable = lora.init_trainable(base, cfg, jax.random.key(4), train=("head",))
    trained, losses = _train(lora.lora_loss(reward_loss, cfg), trainable, batch, 20,
                             frozen=base)
    assert losses[-1] < 0.6 * losses[0]
    assert not np.array_equal(trained["head"]["kernel"], base["head"]["kernel"])
    full = lora.full_params(base, trained, cfg)
    np.testing.assert_array_equal(full["trunk"]["embed"]["embedding"],
                                  base["trunk"]["embed"]["embedding"])
    assert not np.array_equal(full["trunk"]["blocks_0"]["attn"]["o"]["kernel"],
                              base["trunk"]["blocks_0"]["attn"]["o"]["kernel"])


def test_dpo_reference_is_the_base():
    base = _base()
    cfg = lora.LoraConfig(rank=4)
    good, _ = encode_sft(TOK, ["p1", "p2"], ["Good Headline", "Also Good"], max_len=32)
    bad, mask_bad = encode_sft(TOK, ["p1", "p2"], ["bad bad bad", "worse"], max_len=32)
    _, mask_good = encode_sft(TOK, ["p1", "p2"], ["Good Headline", "Also Good"], max_len=32)
    batch = {"good": good, "good_mask": mask_good, "bad": bad, "bad_mask": mask_bad}
    seq_lp = jax.jit(sequence_logprobs, static_argnums=1)
    ref_good, ref_bad = seq_lp(base, CFG, good, mask_good), seq_lp(base, CFG, bad, mask_bad)

    def dpo(params, b, rng):
        lp_good = sequence_logprobs(params, CFG, b["good"], b["good_mask"])
        lp_bad = sequence_logprobs(params, CFG, b["bad"], b["bad_mask"])
        return dpo_loss(lp_good, lp_bad, ref_good, ref_bad, beta=0.5)

    trainable = lora.init_trainable(base, cfg, jax.random.key(5))
    loss_fn = lora.lora_loss(dpo, cfg)
    # at init the policy is the reference exactly: -log sigmoid(0) = log 2
    loss0 = float(jax.jit(loss_fn)(trainable, batch, None, base)[0])
    assert loss0 == pytest.approx(math.log(2), abs=1e-6)
    _, losses = _train(loss_fn, trainable, batch, 10, lr=5e-3, frozen=base)
    assert losses[-1] < losses[0] - 0.1


def _sft_loss(params, batch, rng):
    logits, _ = Decoder(CFG).apply({"params": params}, batch["tokens"])
    return next_token_loss(logits, batch["tokens"], batch["loss_mask"])


def test_base_as_jit_argument_matches_closed_over_base():
    """The base passed as a jit argument gives the closed-over step's losses and adapters
    (to 1e-6) and appears in the compiled program as an input, not as constants."""
    base, cfg, tx = _base(), lora.LoraConfig(rank=4), optax.adam(1e-2)
    loss_fn = lora.lora_loss(_sft_loss, cfg)
    trainable = lora.init_trainable(base, cfg, jax.random.key(6))
    batch, key = _sft_batch(), jax.random.key(7)
    closed = make_train_step(lambda t, b, r: loss_fn(t, b, r, base), tx)
    as_arg = make_train_step(loss_fn, tx, frozen=base)
    # the steps donate their state: each starts from its own copy of the adapters
    states = [TrainState.create(jax.tree.map(jnp.copy, trainable), tx) for _ in range(2)]
    # the jaxpr's constants: the whole base when closed over, nothing of it as an argument
    n_base = sum(x.size for x in jax.tree.leaves(base))
    n_const = [sum(np.size(c) for c in step_jit.trace(states[i], batch, key, *frozen).jaxpr.consts)
               for i, (step_jit, frozen) in enumerate(((closed, ()), (as_arg.fn, (as_arg.frozen,))))]
    assert n_const[0] >= n_base and n_const[1] < 100, (n_const, n_base)
    for s in range(3):
        states[0], m0 = closed(states[0], batch, jax.random.fold_in(key, s))
        states[1], m1 = as_arg(states[1], batch, jax.random.fold_in(key, s))
        np.testing.assert_allclose(float(m1["loss"]), float(m0["loss"]), rtol=0, atol=1e-6)
    assert float(m0["loss"]) < float(jax.jit(loss_fn)(trainable, batch, key, base)[0])  # it trains
    assert as_arg.fn._cache_size() == 1        # one compilation for the three steps
    for k, v in _flat(states[0].params).items():
        np.testing.assert_allclose(_flat(states[1].params)[k], v, rtol=0, atol=1e-6, err_msg=k)


def test_train_loop_replicates_the_frozen_base(tmp_path):
    """train_loop places a FrozenStep's base on its mesh and runs it like a plain step."""
    from dlm.train.loop import LoopConfig, train_loop
    from dlm.train.sharding import make_mesh

    base, cfg, tx = _base(), lora.LoraConfig(rank=2), optax.adam(1e-2)
    step = make_train_step(lora.lora_loss(_sft_loss, cfg), tx, frozen=base)
    mesh = make_mesh(jax.devices()[:1])
    result = train_loop(TrainState.create(lora.init_trainable(base, cfg, jax.random.key(8)), tx),
                        step, lambda s: _sft_batch(), 3, jax.random.key(9),
                        LoopConfig(out_dir=tmp_path, quiet=True, log_every=1), mesh=mesh)
    assert int(result.state.step) == 3 and len(result.history) == 3
    assert step.fn._cache_size() == 1
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    for leaf in jax.tree.leaves(step.place(mesh).frozen):
        assert leaf.sharding.is_fully_replicated and leaf.sharding.mesh == mesh
