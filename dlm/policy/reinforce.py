"""KL-regularised REINFORCE with a leave-one-out baseline (RLOO) against any reward.

Each step: B prompts, K samples each from the *current* policy; reward_fn scores the
decoded texts; the KL to the SFT reference is the per-sequence sum of per-token log-ratios
log pi(y_t | .) - log ref(y_t | .) on the sampled tokens (an unbiased estimate of
KL(pi || ref)); dlm.train.losses.reinforce_loo turns reward - kl_coef * KL into the loss.

    result = train_reinforce(sft_params, cfg, tok, train_ledes, reward_fn, ReinforceConfig(),
                             out_dir)            # result.params, result.history

Sampling needs the current parameters and the reward is Python (texts), so rollouts run
between jitted train steps: dlm.train.loop.step_loop's batch function gets the current
state; the update is the generic make_train_step with a loss_fn.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dlm.data.batching import index_stream
from dlm.data.tokenizer import Tokenizer
from dlm.models.decoder import DecoderConfig
from dlm.outputs import append_jsonl
from dlm.policy.best_of_n import sample_pool
from dlm.policy.dpo import batched_sequence_logprobs, copy_params
from dlm.sample import sequence_logprobs
from dlm.train.loop import step_loop
from dlm.train.losses import reinforce_loo
from dlm.train.optim import OptimConfig, make_optimizer, make_schedule
from dlm.train.step import TrainState, make_train_step

RewardFn = Callable[[Sequence[str]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class ReinforceConfig:
    steps: int = 100
    prompts_per_step: int = 8
    k: int = 4                      # samples per prompt (leave-one-out needs >= 2)
    kl_coef: float = 0.05           # reward units per nat of KL to the reference
    lr: float = 1e-4
    warmup_steps: int = 5
    weight_decay: float = 0.0
    clip_norm: float = 1.0
    min_lr_ratio: float = 0.1
    max_new_tokens: int = 48
    max_prompt_len: int = 96
    temperature: float = 1.0        # 1 keeps the samples on-policy (the gradient assumes it)
    seed: int = 0
    log_every: int = 10


class ReinforceResult(NamedTuple):
    params: Any
    history: list[dict]             # one row per logged step (also in out_dir/metrics.jsonl)


def sequence_kl(params, ref_params, cfg: DecoderConfig, tokens_BxL, loss_mask_BxL,
                attn_mask_BxL) -> jax.Array:
    """Per row, sum over response tokens of log pi - log ref: [B]; 0 when params == ref."""
    return (sequence_logprobs(params, cfg, tokens_BxL, loss_mask_BxL, attn_mask_BxL)
            - sequence_logprobs(ref_params, cfg, tokens_BxL, loss_mask_BxL, attn_mask_BxL))


def reinforce_loss_fn(cfg: DecoderConfig, kl_coef: float, k: int):
    """loss_fn(params, batch, rng): batch rows are prompt-major, K samples per prompt.

    batch["ref_logp"] holds the reference's sequence log-probs of the same tokens, so the
    KL needs one forward pass (the policy's); it enters the reward, so it is not
    differentiated (as in RLOO)."""
    def loss_fn(params, batch, rng):
        del rng
        lp_N = sequence_logprobs(params, cfg, batch["tokens"], batch["loss_mask"],
                                 batch["attn_mask"])
        kl_N = jax.lax.stop_gradient(lp_N - batch["ref_logp"])
        shape = (-1, k)
        loss, metrics = reinforce_loo(lp_N.reshape(shape), batch["reward"].reshape(shape),
                                      kl_N.reshape(shape), kl_coef)
        n_tok = jnp.sum(batch["loss_mask"], axis=-1)
        return loss, {**metrics, "response_tokens": jnp.mean(n_tok)}
    return loss_fn


def rollout(params, ref_params, cfg: DecoderConfig, tok: Tokenizer, prompts: Sequence[str],
            reward_fn: RewardFn, key: jax.Array, rcfg: ReinforceConfig) -> dict[str, np.ndarray]:
    """K samples per prompt from `params`, their rewards and reference log-probs (a batch)."""
    pool = sample_pool(params, cfg, tok, prompts, rcfg.k, key, rcfg.max_new_tokens,
                       rcfg.temperature, max_prompt_len=rcfg.max_prompt_len,
                       batch_size=len(prompts) * rcfg.k)
    P, K = len(prompts), rcfg.k
    tokens, loss_mask, attn = pool.sequences(np.repeat(np.arange(P), K), np.tile(np.arange(K), P))
    texts = pool.flat_texts()
    reward = np.asarray(reward_fn(texts), np.float32).reshape(-1)
    if reward.size != len(texts):
        raise ValueError(f"reward_fn returned {reward.size} scores for {len(texts)} texts")
    ref_logp = batched_sequence_logprobs(ref_params, cfg, tokens, loss_mask, attn, len(tokens))
    return {"tokens": tokens, "loss_mask": loss_mask, "attn_mask": attn, "reward": reward,
            "ref_logp": ref_logp}


def train_reinforce(ref_params, cfg: DecoderConfig, tok: Tokenizer, prompts: Sequence[str],
                    reward_fn: RewardFn, rcfg: ReinforceConfig,
                    out_dir: pathlib.Path | None = None, quiet: bool = True) -> ReinforceResult:
    """rcfg.steps RLOO updates from the reference; prompts cycle in per-epoch permutations.

    Step s samples with key fold_in(key(seed), s) and prompts index_stream(...)(s), so a
    run is a pure function of (ref_params, prompts, reward_fn, rcfg).
    """
    if rcfg.k < 2:
        raise ValueError(f"ReinforceConfig.k must be >= 2 (leave-one-out), got {rcfg.k}")
    prompts = list(prompts)
    optim = OptimConfig(lr=rcfg.lr, warmup_steps=rcfg.warmup_steps, total_steps=rcfg.steps,
                        weight_decay=rcfg.weight_decay, clip_norm=rcfg.clip_norm,
                        min_lr_ratio=rcfg.min_lr_ratio)
    tx = make_optimizer(optim)
    step_fn = make_train_step(reinforce_loss_fn(cfg, rcfg.kl_coef, rcfg.k), tx,
                              make_schedule(optim))
    state = TrainState.create(copy_params(ref_params), tx)
    rows_for_step = index_stream(len(prompts), min(rcfg.prompts_per_step, len(prompts)), rcfg.seed)
    key = jax.random.key(rcfg.seed)
    history = []

    def batch_fn(s, state):         # rollouts of the current policy
        return rollout(state.params, ref_params, cfg, tok, [prompts[i] for i in rows_for_step(s)],
                       reward_fn, jax.random.fold_in(key, s), rcfg)

    def on_log(done, state, m):
        row = {"step": done, **m}
        history.append(row)
        if out_dir is not None:
            append_jsonl(pathlib.Path(out_dir) / "metrics.jsonl", [row])

    state = step_loop(state, step_fn, batch_fn, rcfg.steps, lambda s: jax.random.fold_in(key, s),
                      log_every=rcfg.log_every, on_log=on_log, check_every=1, desc="reinforce",
                      quiet=quiet)
    return ReinforceResult(state.params, history)
