"""Golden one-step tests (nanodo-style): a fixed seed's first train steps of SFT, the reward
model and DPO give recorded losses and parameter norms to 1e-5, so a refactor that changes
numbers is caught. The constants were recorded on the code before the issue-12 refactor.

If a change moves these numbers ON PURPOSE (a new loss, init or optimiser default), rerun
with GOLDEN_PRINT=1 (`GOLDEN_PRINT=1 pytest -s tests/test_golden_steps.py`), check the new
values are sane, and update them in the same commit that explains why.
"""
import dataclasses
import os

import jax
import numpy as np
import optax
import pytest

from dlm.data.batching import encode_sft, prompt_weighted_mask
from dlm.data.log import Confounder
from dlm.data.tokenizer import ByteTokenizer
from dlm.models.decoder import PRESETS, Decoder, init_params
from dlm.train.optim import OptimConfig, make_optimizer, make_schedule
from dlm.train.step import TrainState, make_train_step

TOL = dict(rel=1e-5, abs=1e-5)

LEDES = ["A nurse walked into the ward at dawn.", "The city council voted on the budget.",
         "Scientists found a new species of frog.", "A dog waited at the station for years."]
HEADS = ["Why Did A Nurse Do This?", "Council Passes Budget", "Meet The Tiny Frog",
         "This Dog Will Make You Cry"]


def _check(name: str, got: dict, want: dict) -> None:
    if os.environ.get("GOLDEN_PRINT"):
        print(f"\n{name} = {{{', '.join(f'{k!r}: {v!r}' for k, v in got.items())}}}")
    for k, v in want.items():
        assert got[k] == pytest.approx(v, **TOL), f"{name}[{k!r}]: got {got[k]!r}, recorded {v!r}"


def _norm(params) -> float:
    return float(optax.tree.norm(params))


def _two_steps(loss_fn, params, batch, lr: float, weight_decay: float, clip_norm: float):
    """Two updates on one batch with no warmup (at warmup step 0 the lr is 0): the losses
    before each update and the parameter norm after both."""
    optim = OptimConfig(lr=lr, warmup_steps=0, total_steps=10, weight_decay=weight_decay,
                        clip_norm=clip_norm)
    tx = make_optimizer(optim)
    step = make_train_step(loss_fn, tx, make_schedule(optim))
    state = TrainState.create(params, tx)
    state, m0 = step(state, batch, jax.random.key(1))
    state, m1 = step(state, batch, jax.random.key(2))
    return {"loss0": float(m0["loss"]), "grad_norm0": float(m0["grad_norm"]),
            "loss1": float(m1["loss"]), "param_norm": _norm(state.params)}


CFG = dataclasses.replace(PRESETS["tiny"], n_layers=1, max_len=48)


@pytest.fixture(scope="module")
def params0():
    """The tiny decoder's init from key 0 (jitted: an eager init runs op by op), shared by
    the SFT and DPO tests; the steps donate their state, so each test gets a copy."""
    p = jax.jit(init_params, static_argnums=0)(CFG, jax.random.key(0))
    return jax.tree.map(np.asarray, p)


SFT_GOLDEN = {'loss0': 5.569062232971191, 'grad_norm0': 0.9862493276596069,
              'loss1': 5.437402248382568, 'param_norm': 10.21754264831543}


def test_sft_step_golden(params0):
    from dlm.policy.sft import sft_loss_fn
    tok = ByteTokenizer()
    tokens, mask = encode_sft(tok, LEDES, HEADS, max_len=48, max_prompt_len=30)
    weight = prompt_weighted_mask(tokens, mask, tok.pad_id, 0.3)
    got = _two_steps(sft_loss_fn(Decoder(CFG)), params0, {"tokens": tokens, "loss_mask": weight},
                     lr=3e-3, weight_decay=0.1, clip_norm=1.0)
    assert got["loss1"] < got["loss0"]
    _check("SFT_GOLDEN", got, SFT_GOLDEN)


REWARD_GOLDEN = {'loss0': 1.9839527606964111, 'loss1': 1.4370492696762085,
                 'penalty1': 0.002092296490445733, 'param_norm': 0.0722971260547638,
                 'score0': 0.16286875552573152}


def test_reward_step_golden():
    """The frozen-trunk reward trainer (invariant: weighted regression + its MMD penalty +
    l2) for two steps on fixed features."""
    from dlm.rewards.methods import Targets
    from dlm.rewards.trainer import TrainerConfig, train_reward
    rng = np.random.default_rng(0)
    n, d = 48, 6
    texts = np.array([f"headline {i}" for i in range(n)], object)
    feats = {t: rng.normal(size=d).astype(np.float32) for t in texts}
    day = Confounder("categorical", rng.integers(0, 3, n), ("Mon", "Tue", "Wed"))
    y = np.array([feats[t][0] for t in texts]) + 0.5 * (day.values == 0) + 0.1 * rng.normal(size=n)
    weight = rng.uniform(0.5, 1.5, n)
    targets = Targets(texts, y, weight / weight.mean(), {"day": day})
    history = []
    cfg = TrainerConfig(steps=2, batch_size=16, lr=1e-2, warmup_steps=0, log_every=1)
    r = train_reward("invariant", targets, lambda ts: np.stack([feats[t] for t in ts]), cfg,
                     strengths=(1.0,), history=history)[0]
    got = {"loss0": history[0]["loss"], "loss1": history[1]["loss"],
           "penalty1": history[1]["penalty"], "param_norm": _norm(r.params),
           "score0": float(r(texts[:1])[0])}
    _check("REWARD_GOLDEN", got, REWARD_GOLDEN)


DPO_GOLDEN = {'loss0': 0.8542072772979736, 'grad_norm0': 4.495351314544678,
              'loss1': 0.7364635467529297, 'param_norm': 10.177403450012207}


def test_dpo_step_golden(params0):
    """DPO from a policy whose reference is a perturbed copy (so the loss is not log 2)."""
    from dlm.policy.dpo import batched_sequence_logprobs, dpo_loss_fn
    cfg = CFG
    tok = ByteTokenizer()
    chosen, c_mask = encode_sft(tok, LEDES, HEADS, max_len=48, max_prompt_len=30)
    rejected, r_mask = encode_sft(tok, LEDES, HEADS[::-1], max_len=48, max_prompt_len=30)
    c_attn = (chosen != tok.pad_id).astype(np.float32)
    r_attn = (rejected != tok.pad_id).astype(np.float32)
    noise = np.random.default_rng(1)
    ref = jax.tree.map(lambda a: a + 0.05 * noise.normal(size=a.shape).astype(a.dtype), params0)
    batch = {"chosen_tokens": chosen, "chosen_loss_mask": c_mask, "chosen_attn_mask": c_attn,
             "rejected_tokens": rejected, "rejected_loss_mask": r_mask,
             "rejected_attn_mask": r_attn,
             "ref_chosen": batched_sequence_logprobs(ref, cfg, chosen, c_mask, c_attn, 4),
             "ref_rejected": batched_sequence_logprobs(ref, cfg, rejected, r_mask, r_attn, 4)}
    got = _two_steps(dpo_loss_fn(cfg, beta=0.5), params0, batch, lr=1e-3, weight_decay=0.0,
                     clip_norm=1.0)
    assert got["loss0"] != pytest.approx(np.log(2), abs=1e-4)
    _check("DPO_GOLDEN", got, DPO_GOLDEN)
