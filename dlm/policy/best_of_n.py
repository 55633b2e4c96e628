"""Best-of-n: sample n headlines per prompt from a policy once, then pick by any reward.

    pool = sample_pool(policy_params, cfg, tok, ledes, n=16, key=jax.random.key(0),
                       max_new_tokens=48, temperature=1.0)
    picks = pick_best(pool, reward_fn)           # list[str], one chosen text per prompt
    idx, scores_PxN = best_indices(pool, reward_fn)

`reward_fn` is any callable texts -> scores (a list of P*n strings in, an array of P*n
floats out), the same type dlm.eval.causal_metrics takes, so every reward method is
compared on the same candidates: sampling (the expensive part) happens once, and each
reward only re-ranks the shared Pool. `pick_best(pool, reward_fn, n=4)` uses the first 4
candidates of every prompt, so one pool of 16 also gives best-of-1/2/4/8 curves.

The Pool also keeps the generated token ids (not only the texts), so DPO pairs and
REINFORCE log-probs are computed on exactly the tokens the policy produced
(`Pool.sequences`).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import numpy as np

from dlm.data.batching import encode_prompts
from dlm.data.tokenizer import Tokenizer
from dlm.models.decoder import DecoderConfig
from dlm.sample import generate

RewardFn = Callable[[Sequence[str]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Pool:
    """n sampled continuations for each of P prompts (numpy, host side).

    texts[p][k] is sample k for prompt p, decoded up to (not including) EOS and stripped.
    tokens_PxNxT / mask_PxNxT are the raw generated ids and the generated-token mask (EOS
    included); logprobs_PxN is each sample's summed log-prob under the sampling policy at
    temperature 1 (the model's own distribution, see dlm.sample).
    """

    prompts: tuple[str, ...]
    texts: tuple[tuple[str, ...], ...]
    prompt_tokens_PxL: np.ndarray
    prompt_mask_PxL: np.ndarray
    tokens_PxNxT: np.ndarray
    mask_PxNxT: np.ndarray
    logprobs_PxN: np.ndarray

    @property
    def n(self) -> int:
        return self.tokens_PxNxT.shape[1]

    def __len__(self) -> int:
        return len(self.prompts)

    def flat_texts(self, n: int | None = None) -> list[str]:
        """The first n (default all) texts of every prompt, prompt-major: [P * n]."""
        n = self.n if n is None else n
        return [t for row in self.texts for t in row[:n]]

    def sequences(self, p_idx, k_idx) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Prompt + sample k_idx[i] of prompt p_idx[i], as (tokens, loss_mask, attn_mask)
        rows for dlm.sample.sequence_logprobs (loss on the generated tokens only)."""
        p_idx, k_idx = np.asarray(p_idx, np.int64), np.asarray(k_idx, np.int64)
        gen_tok, gen_mask = self.tokens_PxNxT[p_idx, k_idx], self.mask_PxNxT[p_idx, k_idx]
        tokens = np.concatenate([self.prompt_tokens_PxL[p_idx], gen_tok], axis=1)
        loss_mask = np.concatenate([np.zeros(self.prompt_mask_PxL[p_idx].shape, np.float32),
                                    gen_mask.astype(np.float32)], axis=1)
        attn = np.concatenate([self.prompt_mask_PxL[p_idx], np.ones(gen_tok.shape, bool)], axis=1)
        return tokens.astype(np.int32), loss_mask, attn


def decode_generations(tok: Tokenizer, tokens_BxT, mask_BxT) -> list[str]:
    """Each row's generated text: tokens under the mask, EOS dropped, whitespace stripped."""
    out = []
    for row, keep in zip(np.asarray(tokens_BxT).tolist(), np.asarray(mask_BxT).tolist()):
        out.append(tok.decode([t for t, k in zip(row, keep) if k and t != tok.eos_id]).strip())
    return out


def sample_pool(policy_params, cfg: DecoderConfig, tokenizer: Tokenizer, prompts: Sequence[str],
                n: int, key: jax.Array, max_new_tokens: int = 48, temperature: float = 1.0, *,
                max_prompt_len: int = 96, batch_size: int = 256, top_k: int = 0,
                top_p: float = 1.0) -> Pool:
    """n samples for each prompt from the policy, generated in fixed-size batches.

    Rows are prompt-major (prompt p's n samples are adjacent); every batch has batch_size
    rows (the last is padded), so generation compiles once. Batch b uses key fold_in(key, b):
    the pool is a pure function of (params, prompts, n, key, batch_size).
    """
    prompts = [str(p) for p in prompts]
    if not prompts:
        raise ValueError("sample_pool: no prompts given")
    if n < 1:
        raise ValueError(f"sample_pool: n must be >= 1, got {n}")
    p_tok, p_mask = encode_prompts(tokenizer, prompts, max_prompt_len)
    rows = np.repeat(np.arange(len(prompts)), n)                     # [P * n]
    bs = max(1, min(batch_size, len(rows)))
    toks, masks, lps = [], [], []
    for b, start in enumerate(range(0, len(rows), bs)):
        idx = rows[start:start + bs]
        pad = bs - len(idx)
        idx_full = np.concatenate([idx, np.repeat(idx[:1], pad)])
        gen = generate(policy_params, cfg, p_tok[idx_full], p_mask[idx_full],
                       jax.random.fold_in(key, b), max_new_tokens, temperature=temperature,
                       top_k=top_k, top_p=top_p, eos_id=tokenizer.eos_id,
                       pad_id=tokenizer.pad_id)
        gen = jax.device_get(gen)
        toks.append(np.asarray(gen.tokens)[:len(idx)])
        masks.append(np.asarray(gen.mask)[:len(idx)])
        lps.append((np.asarray(gen.logprobs) * np.asarray(gen.mask))[:len(idx)].sum(-1))
    P, T = len(prompts), max_new_tokens
    tokens_PxNxT = np.concatenate(toks).reshape(P, n, T)
    mask_PxNxT = np.concatenate(masks).reshape(P, n, T)
    flat = decode_generations(tokenizer, tokens_PxNxT.reshape(P * n, T),
                              mask_PxNxT.reshape(P * n, T))
    texts = tuple(tuple(flat[p * n:(p + 1) * n]) for p in range(P))
    return Pool(prompts=tuple(prompts), texts=texts, prompt_tokens_PxL=p_tok,
                prompt_mask_PxL=p_mask, tokens_PxNxT=tokens_PxNxT, mask_PxNxT=mask_PxNxT,
                logprobs_PxN=np.concatenate(lps).reshape(P, n).astype(np.float32))


def score_pool(pool: Pool, reward_fn: RewardFn, n: int | None = None) -> np.ndarray:
    """reward_fn over the first n samples of every prompt in one call: scores [P, n]."""
    n = pool.n if n is None else n
    if not 1 <= n <= pool.n:
        raise ValueError(f"n must be in 1..{pool.n} (the pool's size), got {n}")
    texts = pool.flat_texts(n)
    scores = np.asarray(reward_fn(texts), np.float64).reshape(-1)
    if scores.size != len(texts):
        raise ValueError(f"reward_fn returned {scores.size} scores for {len(texts)} texts")
    return scores.reshape(len(pool), n)


def best_indices(pool: Pool, reward_fn: RewardFn, n: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(index of the best of the first n samples per prompt [P], scores [P, n]); ties go to
    the earliest sample. NaN scores never win (they rank below every number)."""
    scores = score_pool(pool, reward_fn, n)
    return np.argmax(np.nan_to_num(scores, nan=-np.inf), axis=1), scores


def pick_best(pool: Pool, reward_fn: RewardFn, n: int | None = None) -> list[str]:
    """The highest-reward text of the first n samples of each prompt: [P] strings."""
    idx, _ = best_indices(pool, reward_fn, n)
    return [pool.texts[p][k] for p, k in enumerate(idx)]
