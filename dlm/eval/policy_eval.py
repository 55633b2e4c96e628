"""One evaluation for every optimiser: generate for held-out ledes with fixed seeds and
score the texts by the true effect (DESIGN.md section 4).

    frame = evaluate_policy(params, cfg, tok, val_ledes, world.true_effect, seeds=(0, 1, 2),
                            n_generations=500, features=(phi, FEATURES))   # one row per seed
    row = generation_metrics(pick_best(pool, reward_fn), world.true_effect)   # best-of-n

Seed s always samples with key(s) and the same ledes, so two policies evaluated with the
same seeds face the same prompts and sampling noise stream. `generation_metrics` scores
any list of texts, so best-of-n picks (texts, not a policy) are measured identically.
The shares of a world's text features (digit_share ...) need its feature map, passed as
`features=(phi, names)` (sims.featurise's phi and FEATURES): dlm knows no world.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import numpy as np
import pandas as pd

from dlm.data.tokenizer import Tokenizer
from dlm.eval.causal_metrics import marker_rate, objective
from dlm.models.decoder import DecoderConfig
from dlm.policy.best_of_n import Pool, pick_best, sample_pool
from dlm.policy.dpo import batched_sequence_logprobs

TauFn = Callable[[Sequence[str]], np.ndarray]
# (phi, names): texts -> [N, F] features and their column names (sims.featurise's)
FeatureMap = tuple[Callable[[Sequence[str]], np.ndarray], Sequence[str]]
# features reported as shares of generations (the rest, length, is reported as words);
# nan without a feature map
SHARE_FEATURES: tuple[str, ...] = ("digit", "question", "second_person", "emotive", "this")
METRICS: tuple[str, ...] = ("objective", "marker_rate", "digit_share", "question_share",
                            "second_person_share", "emotive_share", "this_share", "mean_words",
                            "empty_share", "distinct_share", "kl_to_ref")


def generation_metrics(texts: Sequence[str], tau_fn: TauFn | None = None,
                       features: FeatureMap | None = None) -> dict[str, float]:
    """Scores of a set of generations: objective (mean true tau, needs tau_fn), marker_rate
    (any of happy/monday/friday), the share with each SHARE_FEATURES feature (digit_share
    ..., needs features=(phi, names); nan without), mean words, and the shares of empty and
    distinct texts."""
    texts = [str(t) for t in texts]
    if not texts:
        raise ValueError("generation_metrics: no texts")
    out = {"n_generations": len(texts),
           "objective": objective(tau_fn(texts)) if tau_fn is not None else math.nan,
           "marker_rate": marker_rate(texts)["any"]}
    if features is not None:
        phi, names = features
        f_NxF = np.asarray(phi(texts))
        missing = [n for n in SHARE_FEATURES if n not in names]
        if missing:
            raise ValueError(f"generation_metrics: the feature map lacks {missing}")
    for name in SHARE_FEATURES:
        out[f"{name}_share"] = (math.nan if features is None else
                                float((f_NxF[:, list(names).index(name)] > 0).mean()))
    out["mean_words"] = float(np.mean([len(t.split()) for t in texts]))
    out["empty_share"] = float(np.mean([not t for t in texts]))
    out["distinct_share"] = len(set(texts)) / len(texts)
    return out


def samples_per_lede(n_ledes: int, n_generations: int) -> int:
    """Samples per lede so that every lede gets the same number and the total >= n_generations."""
    if n_ledes < 1:
        raise ValueError("no held-out ledes to evaluate on")
    return max(1, math.ceil(n_generations / n_ledes))


def policy_generations(params, cfg: DecoderConfig, tok: Tokenizer, ledes: Sequence[str],
                       seed: int, n_generations: int, max_new_tokens: int = 48,
                       temperature: float = 1.0, max_prompt_len: int = 96,
                       batch_size: int = 256) -> Pool:
    """The evaluation sample for one seed: samples_per_lede(...) texts for every lede."""
    n = samples_per_lede(len(ledes), n_generations)
    return sample_pool(params, cfg, tok, ledes, n, jax.random.key(seed), max_new_tokens,
                       temperature, max_prompt_len=max_prompt_len, batch_size=batch_size)


def kl_to_reference(pool: Pool, ref_params, cfg: DecoderConfig, batch_size: int = 64) -> float:
    """Mean over the pool's samples of log pi(y) - log ref(y) (sequence log-probs).

    With samples drawn from pi at temperature 1 this estimates KL(pi || ref) in nats per
    generation: how far an optimiser moved the policy to reach its reward (0 for SFT).
    """
    P, N = pool.logprobs_PxN.shape
    seqs = pool.sequences(np.repeat(np.arange(P), N), np.tile(np.arange(N), P))
    ref_N = batched_sequence_logprobs(ref_params, cfg, *seqs, batch_size=batch_size)
    return float(np.mean(pool.logprobs_PxN.reshape(-1) - ref_N))


def evaluate_policy(params, cfg: DecoderConfig, tok: Tokenizer, ledes: Sequence[str],
                    tau_fn: TauFn | None, seeds: Sequence[int] = (0, 1, 2),
                    n_generations: int = 500, max_new_tokens: int = 48,
                    temperature: float = 1.0, max_prompt_len: int = 96,
                    batch_size: int = 256, ref_params=None,
                    features: FeatureMap | None = None) -> pd.DataFrame:
    """generation_metrics of the policy's samples, one row per seed (column "seed"); with
    ref_params (the SFT policy) also kl_to_ref (kl_to_reference; nan without)."""
    rows = []
    for seed in seeds:
        pool = policy_generations(params, cfg, tok, ledes, seed, n_generations, max_new_tokens,
                                  temperature, max_prompt_len, batch_size)
        kl = math.nan if ref_params is None else kl_to_reference(pool, ref_params, cfg)
        rows.append({"seed": int(seed), **generation_metrics(pool.flat_texts(), tau_fn, features),
                     "kl_to_ref": kl})
    return pd.DataFrame(rows)


def best_of_n_pool(params, cfg: DecoderConfig, tok: Tokenizer, ledes: Sequence[str], seed: int,
                   n: int, n_generations: int = 500, max_new_tokens: int = 48,
                   temperature: float = 1.0, max_prompt_len: int = 96,
                   batch_size: int = 256) -> Pool:
    """The best-of-n evaluation sample for one seed: every lede repeated
    samples_per_lede(...) times, n candidates each, so best-of-n yields as many picks
    (texts) as a policy's evaluation has generations. Share it across reward functions."""
    prompts = [lede for lede in ledes for _ in range(samples_per_lede(len(ledes), n_generations))]
    return sample_pool(params, cfg, tok, prompts, n, jax.random.key(seed), max_new_tokens,
                       temperature, max_prompt_len=max_prompt_len, batch_size=batch_size)


def evaluate_best_of_n(pools: Sequence[Pool], reward_fn, tau_fn: TauFn | None,
                       n: int | None = None, seeds: Sequence[int] | None = None,
                       features: FeatureMap | None = None) -> pd.DataFrame:
    """generation_metrics of best-of-n picks (the first n candidates of each prompt), one
    row per pool (one pool per seed, from best_of_n_pool)."""
    seeds = range(len(pools)) if seeds is None else seeds
    return pd.DataFrame([{"seed": int(s), **generation_metrics(pick_best(p, reward_fn, n), tau_fn,
                                                            features)}
                         for s, p in zip(seeds, pools)])



def samples_markdown(title: str, ledes: Sequence[str], samples: dict[str, list[str]], per: int,
                     n_ledes: int = 5, lede_chars: int = 300) -> str:
    """samples.md of an experiment: for the first `n_ledes` ledes, the first generation of
    each policy (`samples[name]` holds `per` generations per lede, lede by lede)."""
    lines = [f"# {title}", ""]
    for i, lede in enumerate(ledes[:n_ledes]):
        lines.append(f"{i + 1}. **lede:** {lede[:lede_chars]}")
        for name, texts in samples.items():
            lines.append(f"   - **{name}:** {texts[i * per]}")
        lines.append("")
    return "\n".join(lines)
