"""DPO on reward-ranked pairs: sample candidates from the reference (SFT) policy, rank them
by any reward, and train the policy to prefer the higher-ranked text of each pair.

    pool = sample_pool(sft_params, cfg, tok, train_ledes, n=8, key=k)     # dlm.policy.best_of_n
    pairs = pairs_from_pool(pool, reward_fn)                              # best vs worst
    data = preference_data(pool, pairs, sft_params, cfg)                  # + reference log-probs
    result = train_dpo(sft_params, cfg, data, DPOConfig(), out_dir)       # result.state.params

Pairs use the exact generated tokens, and the reference log-probs are computed once with
dlm.sample.sequence_logprobs (the same function the loss uses), so at step 0 the policy's
implicit reward margin is exactly zero and the loss is log 2.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dlm.data.batching import index_stream
from dlm.models.decoder import DecoderConfig
from dlm.policy.best_of_n import Pool, score_pool
from dlm.sample import sequence_logprobs
from dlm.train.loop import LoopConfig, LoopResult, train_loop
from dlm.train.losses import dpo_loss
from dlm.train.optim import OptimConfig, make_optimizer, make_schedule
from dlm.train.step import TrainState, make_train_step

RewardFn = Callable[[Sequence[str]], np.ndarray]
_SIDES = ("chosen", "rejected")


@dataclasses.dataclass(frozen=True)
class DPOConfig:
    beta: float = 0.1               # KL strength of the implicit reward beta * log(pi / ref)
    lr: float = 1e-4
    steps: int = 100
    batch_size: int = 16            # pairs per step
    warmup_steps: int = 10
    weight_decay: float = 0.0       # DPO is regularised by beta, not by decay
    clip_norm: float = 1.0
    min_lr_ratio: float = 0.1
    seed: int = 0
    log_every: int = 10


class Pairs(NamedTuple):
    """Preference pairs over a Pool: prompt p_idx[i] prefers sample chosen[i] to rejected[i]."""

    p_idx: np.ndarray
    chosen: np.ndarray
    rejected: np.ndarray
    margin: np.ndarray              # reward(chosen) - reward(rejected) > min_margin

    def __len__(self) -> int:
        return len(self.p_idx)


def rank_pairs(scores_PxN, pairs_per_prompt: int = 1, min_margin: float = 0.0,
               texts: Sequence[Sequence[str]] | None = None) -> Pairs:
    """Per prompt, pair the j-th best with the j-th worst sample (j < pairs_per_prompt).

    A pair is kept only when its reward gap exceeds min_margin (ties carry no preference)
    and, given `texts`, when the two texts differ. Ties in rank go to the earlier sample.
    """
    scores = np.asarray(scores_PxN, np.float64)
    if scores.ndim != 2:
        raise ValueError(f"rank_pairs: scores must be [P, N], got shape {scores.shape}")
    if pairs_per_prompt < 1:
        raise ValueError(f"rank_pairs: pairs_per_prompt must be >= 1, got {pairs_per_prompt}")
    out = []
    for p, row in enumerate(scores):
        order = np.argsort(-np.nan_to_num(row, nan=-np.inf), kind="stable")
        for j in range(min(pairs_per_prompt, len(row) // 2)):
            c, r = int(order[j]), int(order[-1 - j])
            gap = row[c] - row[r]
            if not gap > min_margin:
                continue
            if texts is not None and texts[p][c] == texts[p][r]:
                continue
            out.append((p, c, r, gap))
    arr = np.array(out, np.float64).reshape(-1, 4)
    return Pairs(arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64),
                 arr[:, 2].astype(np.int64), arr[:, 3])


def pairs_from_pool(pool: Pool, reward_fn: RewardFn, pairs_per_prompt: int = 1,
                    min_margin: float = 0.0) -> Pairs:
    """Rank every prompt's samples by reward_fn (one call) and form pairs (rank_pairs)."""
    return rank_pairs(score_pool(pool, reward_fn), pairs_per_prompt, min_margin, pool.texts)


_seq_logprobs = jax.jit(sequence_logprobs, static_argnums=1)


@jax.jit
def copy_params(tree):
    """A copy in fresh device buffers: a train state that is donated never aliases it."""
    return jax.tree.map(lambda x: x + 0, tree)


def batched_sequence_logprobs(params, cfg: DecoderConfig, tokens_NxL, loss_mask_NxL,
                              attn_mask_NxL, batch_size: int = 64) -> np.ndarray:
    """sequence_logprobs over many rows in fixed-size batches (one compile): [N] float32."""
    n = len(tokens_NxL)
    out = []
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        t, m, a = tokens_NxL[sl], loss_mask_NxL[sl], attn_mask_NxL[sl]
        pad = batch_size - len(t)
        if pad:
            t, m, a = (np.concatenate([x, np.repeat(x[:1], pad, 0)]) for x in (t, m, a))
        out.append(np.asarray(_seq_logprobs(params, cfg, t, m, a))[:batch_size - pad])
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def preference_data(pool: Pool, pairs: Pairs, ref_params, cfg: DecoderConfig,
                    batch_size: int = 64) -> dict[str, np.ndarray]:
    """The DPO training set: chosen/rejected sequences and their reference log-probs.

    Keys: {chosen,rejected}_{tokens,loss_mask,attn_mask} [N, L] and ref_{chosen,rejected} [N].
    """
    if len(pairs) == 0:
        raise ValueError("preference_data: no pairs (every prompt's samples tied under the "
                         "reward; sample more candidates or lower min_margin)")
    data = {}
    for side, k_idx in zip(_SIDES, (pairs.chosen, pairs.rejected)):
        tokens, loss_mask, attn = pool.sequences(pairs.p_idx, k_idx)
        data.update({f"{side}_tokens": tokens, f"{side}_loss_mask": loss_mask,
                     f"{side}_attn_mask": attn})
        data[f"ref_{side}"] = batched_sequence_logprobs(ref_params, cfg, tokens, loss_mask,
                                                        attn, batch_size)
    return data


def policy_logprobs(params, cfg: DecoderConfig, batch) -> tuple[jax.Array, jax.Array]:
    """(log pi(chosen), log pi(rejected)) for a batch, in one forward over both sides."""
    cat = lambda name: jnp.concatenate([batch[f"chosen_{name}"], batch[f"rejected_{name}"]])  # noqa
    lp_2B = sequence_logprobs(params, cfg, cat("tokens"), cat("loss_mask"), cat("attn_mask"))
    b = batch["chosen_tokens"].shape[0]
    return lp_2B[:b], lp_2B[b:]


def dpo_loss_fn(cfg: DecoderConfig, beta: float):
    """loss_fn(params, batch, rng) for the generic train step (dlm.train.step)."""
    def loss_fn(params, batch, rng):
        del rng  # deterministic: no dropout, the pairs are fixed
        lp_c, lp_r = policy_logprobs(params, cfg, batch)
        loss, metrics = dpo_loss(lp_c, lp_r, batch["ref_chosen"], batch["ref_rejected"], beta)
        return loss, {**metrics, "logp_margin": jnp.mean(lp_c - lp_r)}
    return loss_fn


def train_dpo(ref_params, cfg: DecoderConfig, data: dict[str, np.ndarray], dcfg: DPOConfig,
              out_dir: pathlib.Path, quiet: bool = True) -> LoopResult:
    """DPO from the reference policy; metrics.jsonl and the final checkpoint go to out_dir.

    The policy starts as a copy of ref_params (the train step donates its state, so the
    reference itself is never updated or invalidated).
    """
    n = len(data["ref_chosen"])
    optim = OptimConfig(lr=dcfg.lr, warmup_steps=dcfg.warmup_steps, total_steps=dcfg.steps,
                        weight_decay=dcfg.weight_decay, clip_norm=dcfg.clip_norm,
                        min_lr_ratio=dcfg.min_lr_ratio)
    tx = make_optimizer(optim)
    step_fn = make_train_step(dpo_loss_fn(cfg, dcfg.beta), tx, make_schedule(optim))
    rows_for_step = index_stream(n, min(dcfg.batch_size, n), dcfg.seed)

    def batch_for_step(s: int) -> dict:
        idx = rows_for_step(s)
        return {k: v[idx] for k, v in data.items()}

    state = TrainState.create(copy_params(ref_params), tx)
    loop_cfg = LoopConfig(out_dir=pathlib.Path(out_dir), ckpt_every=0, log_every=dcfg.log_every,
                          quiet=quiet, desc="dpo", keep=1)
    return train_loop(state, step_fn, batch_for_step, dcfg.steps,
                      jax.random.key(dcfg.seed), loop_cfg)
