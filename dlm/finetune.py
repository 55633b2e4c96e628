"""Fine-tune a headline writer on your own log against a reward (issue 8, step 4).

    ft = finetune(result, reward, kind="dpo")      # result: api.fit(...) or a log
    ft.summary                                     # mean reward SFT vs fine-tuned, KL to SFT
    ft.save("runs/mine/finetune")                  # samples.csv/.md, summary.md, policy/

The policy is SFT on the log's (context, content) pairs: one story per group (per distinct
context when the log has no group), split into train / held-out stories exactly as
dlm.policy.sft splits any corpus (cfg.val_fraction, seed), and cached like every SFT run.
The optimisers are the replications' own (dlm.policy): best-of-n re-ranks SFT samples,
DPO trains on reward-ranked pairs of SFT samples of the training contexts, pg is
KL-regularised REINFORCE (RLOO). Both policies then write for the held-out contexts with
the same sampling key, so their rewards compare like for like.
"""
from __future__ import annotations

import dataclasses
import math
import pathlib
import tempfile
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from dlm import cli, outputs
from dlm.data.corpus import StoryCorpus, log_stories
from dlm.data.log import ObservationalLog

KINDS: tuple[str, ...] = ("best-of-n", "dpo", "pg")
RewardFn = Callable[[Sequence[str]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """How the policy is fine-tuned and evaluated (SFT itself: dlm.policy.sft.PRESETS)."""

    kind: str = "dpo"               # best-of-n | dpo | pg
    sft_preset: str = "quick"       # dlm.policy.sft.PRESETS
    model: str = ""                 # policy model: "" (the SFT preset's), a decoder preset or smollm2-135m
    steps: int = 30                 # DPO / pg updates
    n_candidates: int = 8           # best-of-n's n; DPO's SFT samples per training context
    pairs_per_prompt: int = 2       # DPO: best vs worst, 2nd best vs 2nd worst, ...
    train_prompts: int = 0          # training contexts used by DPO / pg (0: all)
    beta: float = 0.5               # DPO: KL strength of the implicit reward
    kl_coef: float = 0.05           # pg: reward units per nat of KL to SFT
    k: int = 4                      # pg: samples per prompt (leave-one-out baseline)
    lr: float = 1e-4
    batch_size: int = 16            # DPO pairs / pg prompts per step
    warmup_steps: int = 3
    heldout_contexts: int = 0       # held-out contexts written for (0: all)
    samples_per_context: int = 4    # generations per held-out context and policy
    temperature: float = 1.0        # 1: samples from the policy itself (KL estimate, RLOO)
    max_new_tokens: int = 48
    gen_batch_size: int = 256
    seed: int = 0
    log_every: int = 10

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"finetune kind must be one of {KINDS}, got {self.kind!r}")
        small = {k: getattr(self, k) for k in ("steps", "n_candidates", "pairs_per_prompt",
                                                 "batch_size", "samples_per_context",
                                                 "max_new_tokens", "gen_batch_size")
                 if getattr(self, k) < 1}
        if small or self.k < 2 or self.lr <= 0 or self.temperature <= 0:
            raise ValueError(f"FinetuneConfig needs steps, n_candidates, pairs_per_prompt, "
                             f"batch_size, samples_per_context, max_new_tokens, gen_batch_size "
                             f">= 1, k >= 2, lr and temperature > 0; got {small or self}")


PRESETS: dict[str, FinetuneConfig] = {
    "tiny": FinetuneConfig(sft_preset="tiny", steps=4, n_candidates=4, pairs_per_prompt=1,
                           train_prompts=12, lr=1e-3, batch_size=8, k=2, warmup_steps=1,
                           heldout_contexts=6, samples_per_context=2, max_new_tokens=12,
                           gen_batch_size=64, log_every=2),
    # capped so that a real log (thousands of stories) fine-tunes on a laptop CPU; the
    # byte-level writer needs ~96 new tokens for an Upworthy headline
    "quick": FinetuneConfig(train_prompts=256, heldout_contexts=64, max_new_tokens=96),
}


@dataclasses.dataclass(frozen=True, eq=False)
class FinetuneResult:
    """What finetune() produced: the samples (one row per held-out generation and policy),
    the per-policy summary, the fine-tuned parameters (None for best-of-n, which only
    re-ranks SFT samples) and the training curve."""

    cfg: FinetuneConfig
    sft_cfg: Any                    # dlm.policy.sft.SFTConfig
    policy: Any                     # dlm.policy.sft_cache.SFTPolicy (the reference)
    params: Any
    samples: pd.DataFrame           # context, policy, sample, text, reward
    summary: pd.DataFrame           # policy, n, mean_reward, se_reward, kl_to_sft, ...
    history: list
    info: dict                      # reward name, corpus label, story counts, pairs, ...

    def save(self, out: str | pathlib.Path) -> pathlib.Path:
        """samples.csv, samples.md, summary.md, config.json, metrics.jsonl and (DPO, pg)
        the fine-tuned parameters with Orbax in policy/checkpoints/<steps>/ ({"params"},
        so dlm.train.checkpoint.Checkpointer.restore_params loads them)."""
        from dlm.train.checkpoint import Checkpointer

        out = pathlib.Path(out)
        outputs.write_csv(out / "samples.csv", self.samples)
        outputs.write_text(out / "samples.md", samples_md(self.samples))
        outputs.write_text(out / "summary.md", summary_md(self))
        (out / "metrics.jsonl").unlink(missing_ok=True)       # a rerun's curve replaces it
        if self.history:
            outputs.append_jsonl(out / "metrics.jsonl", self.history)
        if self.params is not None:
            with Checkpointer(out / "policy" / "checkpoints", keep=1) as ck:
                ck.save(self.cfg.steps, {"params": self.params})
        outputs.write_json(out / "config.json", {"finetune": self.cfg, "sft": self.sft_cfg,
                                                 "sft_dir": self.policy.directory, **self.info})
        return out


# ---- configuration --------------------------------------------------------------------------
def resolve_config(preset: str = "quick", overrides: Sequence[str] = (), **fields) -> FinetuneConfig:
    """A preset with FIELD=VALUE overrides (as on the command line) and keyword fields."""
    if preset not in PRESETS:
        raise ValueError(f"unknown finetune preset {preset!r}; have {sorted(PRESETS)}")
    cfg = cli.apply_overrides(PRESETS[preset], list(overrides))
    cfg = dataclasses.replace(cfg, **fields)
    sft_config(cfg)                                     # unknown SFT preset / model: now
    return cfg


def sft_config(cfg: FinetuneConfig):
    """The SFT preset named by cfg, with cfg.model as its policy model; clear errors."""
    from dlm.models.decoder import PRESETS as DECODERS
    from dlm.models.pretrained import SMOLLM2
    from dlm.policy import sft

    if cfg.sft_preset not in sft.PRESETS:
        raise ValueError(f"unknown SFT preset {cfg.sft_preset!r}; have {sorted(sft.PRESETS)}")
    base = sft.PRESETS[cfg.sft_preset]
    if not cfg.model:
        return base
    if cfg.model not in DECODERS and cfg.model != SMOLLM2:
        raise ValueError(f"unknown policy model {cfg.model!r}; use a decoder preset "
                         f"({', '.join(sorted(DECODERS))}) or {SMOLLM2}")
    return dataclasses.replace(base, model=cfg.model)


# ---- stories --------------------------------------------------------------------------------
def check_log(log: ObservationalLog, cfg: FinetuneConfig) -> tuple[StoryCorpus, str]:
    """(stories, label) of a log that can be fine-tuned on; a clear error (ValueError)
    before any fitting when it has no context or too few stories to hold some out."""
    from dlm.policy.sft_corpus import split_corpus

    corpus, label = log_stories(log)
    split_corpus(corpus, sft_config(cfg), label)      # a ValueError when too few stories
    return corpus, label


# ---- fine-tuning ----------------------------------------------------------------------------
def reward_label(reward) -> str:
    """"deconfoundlm" / "odin-10" for a TrainedReward, else the callable's name."""
    method = getattr(reward, "method", None)
    if method is None:
        return getattr(reward, "__name__", type(reward).__name__)
    strength = getattr(reward, "strength", None)
    return method if strength is None else f"{method}-{strength:g}"


def _gen_kw(cfg: FinetuneConfig, sft_cfg) -> dict:
    return dict(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                max_prompt_len=sft_cfg.max_prompt_len, batch_size=cfg.gen_batch_size)


def _dpo(cfg, sft_cfg, policy, ledes, reward) -> tuple[Any, list, dict]:
    import jax

    from dlm.policy.best_of_n import sample_pool
    from dlm.policy.dpo import DPOConfig, pairs_from_pool, preference_data, train_dpo

    kw = _gen_kw(cfg, sft_cfg)
    pool = sample_pool(policy.params, policy.model_cfg, policy.tokenizer, ledes, cfg.n_candidates,
                       jax.random.key(10_000 + cfg.seed), kw.pop("max_new_tokens"),
                       kw.pop("temperature"), **kw)
    pairs = pairs_from_pool(pool, reward, cfg.pairs_per_prompt)
    data = preference_data(pool, pairs, policy.params, policy.model_cfg)
    dcfg = DPOConfig(beta=cfg.beta, lr=cfg.lr, steps=cfg.steps, batch_size=cfg.batch_size,
                     warmup_steps=min(cfg.warmup_steps, cfg.steps), seed=cfg.seed,
                     log_every=cfg.log_every)
    with tempfile.TemporaryDirectory() as tmp:        # the saved copy is FinetuneResult.save's
        res = train_dpo(policy.params, policy.model_cfg, data, dcfg, pathlib.Path(tmp))
    last = res.history[-1] if res.history else {}
    return res.state.params, res.history, {"n_pairs": len(pairs),
                                           "mean_pair_margin": float(np.mean(pairs.margin)),
                                           "final_loss": last.get("loss")}


def _pg(cfg, sft_cfg, policy, ledes, reward) -> tuple[Any, list, dict]:
    from dlm.policy.reinforce import ReinforceConfig, train_reinforce

    rcfg = ReinforceConfig(steps=cfg.steps, prompts_per_step=cfg.batch_size, k=cfg.k,
                           kl_coef=cfg.kl_coef, lr=cfg.lr,
                           warmup_steps=min(cfg.warmup_steps, cfg.steps),
                           max_new_tokens=cfg.max_new_tokens, max_prompt_len=sft_cfg.max_prompt_len,
                           temperature=cfg.temperature, seed=cfg.seed, log_every=cfg.log_every)
    res = train_reinforce(policy.params, policy.model_cfg, policy.tokenizer, ledes, reward, rcfg)
    last = res.history[-1] if res.history else {}
    return res.params, res.history, {"final_loss": last.get("loss")}


def _evaluate(cfg, sft_cfg, policy, params, held: list[str]) -> tuple[dict, dict]:
    """{policy: texts [H * m]} for the held-out contexts (context-major) and {policy: KL}."""
    from dlm.eval.policy_eval import kl_to_reference, policy_generations

    kw = _gen_kw(cfg, sft_cfg)
    n_gen = len(held) * cfg.samples_per_context
    pools = {name: policy_generations(p, policy.model_cfg, policy.tokenizer, held, cfg.seed,
                                      n_gen, **kw)
             for name, p in (("sft", policy.params), (cfg.kind, params))}
    kl = {"sft": 0.0, cfg.kind: kl_to_reference(pools[cfg.kind], policy.params, policy.model_cfg)}
    return {k: p.flat_texts() for k, p in pools.items()}, kl


def _best_of_n(cfg, sft_cfg, policy, held: list[str], reward) -> tuple[dict, dict]:
    """SFT's first candidate and the reward's pick of n, for the same prompts."""
    import jax

    from dlm.policy.best_of_n import pick_best, sample_pool

    kw = _gen_kw(cfg, sft_cfg)
    prompts = [c for c in held for _ in range(cfg.samples_per_context)]
    pool = sample_pool(policy.params, policy.model_cfg, policy.tokenizer, prompts,
                       cfg.n_candidates, jax.random.key(cfg.seed), kw.pop("max_new_tokens"),
                       kw.pop("temperature"), **kw)
    n = cfg.n_candidates
    # best-of-n is not a parametric policy: report the analytic bound on its KL to SFT
    bound = math.log(n) - (n - 1) / n
    return ({"sft": [row[0] for row in pool.texts], cfg.kind: pick_best(pool, reward)},
            {"sft": 0.0, cfg.kind: bound})


def finetune(source, reward: RewardFn, kind: str | None = None, cfg: FinetuneConfig | None = None,
             *, sft_dir: str | pathlib.Path | None = None, quiet: bool = True,
             **overrides) -> FinetuneResult:
    """Fine-tune the log's SFT policy against `reward` and write for held-out contexts.

    source: an api.Result (its .log) or an ObservationalLog with a context column.
    reward: any callable texts -> scores (api.train / api.load_reward give one).
    kind: "best-of-n" | "dpo" | "pg" (default cfg.kind); cfg / overrides: FinetuneConfig
    fields (sft_preset, model, steps, ...). sft_dir: where the SFT policy is trained or
    loaded (default: the $DLM_CACHE entry for this SFT config and corpus).
    """
    from dlm.policy.sft_cache import sft_policy
    from dlm.policy.sft_corpus import split_corpus

    cfg = dataclasses.replace(cfg or PRESETS["quick"], **overrides)
    if kind is not None:
        cfg = dataclasses.replace(cfg, kind=kind)
    sft_cfg = sft_config(cfg)
    corpus, label = check_log(getattr(source, "log", source), cfg)
    train, val = split_corpus(corpus, sft_cfg, label)              # as SFT splits it
    policy = sft_policy(sft_cfg, directory=None if sft_dir is None else pathlib.Path(sft_dir),
                        quiet=quiet, corpus=(corpus, label))
    held = list(val.contexts)[:cfg.heldout_contexts or None]
    ledes = list(train.contexts)[:cfg.train_prompts or None]
    params, history, info = None, [], {}
    if cfg.kind == "best-of-n":
        texts, kl = _best_of_n(cfg, sft_cfg, policy, held, reward)
    else:
        params, history, info = (_dpo if cfg.kind == "dpo" else _pg)(cfg, sft_cfg, policy,
                                                                    ledes, reward)
        texts, kl = _evaluate(cfg, sft_cfg, policy, params, held)
    samples = samples_frame(held, texts, reward, cfg.samples_per_context)
    info = {"reward": reward_label(reward), "corpus": label, "n_stories": len(corpus),
            "n_train_stories": len(train), "n_heldout_stories": len(val),
            "n_train_contexts_used": len(ledes), "n_heldout_contexts_used": len(held), **info}
    return FinetuneResult(cfg, sft_cfg, policy, params, samples, summarise(samples, kl),
                          history, info)


# ---- tables ---------------------------------------------------------------------------------
def samples_frame(held: list[str], texts: dict[str, list[str]], reward: RewardFn,
                  per: int) -> pd.DataFrame:
    """One row per (policy, held-out context, sample), every text scored in one call."""
    frames = []
    for name, t in texts.items():
        frames.append(pd.DataFrame({"context": np.repeat(held, per)[:len(t)], "policy": name,
                                    "sample": np.tile(np.arange(per), len(held))[:len(t)],
                                    "text": t}))
    out = pd.concat(frames, ignore_index=True)
    out["reward"] = np.asarray(reward(out.text.tolist()), np.float64).reshape(-1)
    return out


def summarise(samples: pd.DataFrame, kl: dict[str, float]) -> pd.DataFrame:
    """Per policy: generations, mean reward ± se, KL to SFT, marker rate, words, diversity."""
    from dlm.eval.policy_eval import generation_metrics

    rows = []
    for name, g in samples.groupby("policy", sort=False):
        r = g.reward.to_numpy()
        m = generation_metrics(g.text.tolist())
        rows.append({"policy": name, "n": len(g), "mean_reward": float(r.mean()),
                     "se_reward": float(r.std(ddof=1) / np.sqrt(len(r))) if len(r) > 1 else math.nan,
                     "kl_to_sft": kl.get(name, math.nan), "marker_rate": m["marker_rate"],
                     "mean_words": m["mean_words"], "distinct_share": m["distinct_share"],
                     "empty_share": m["empty_share"]})
    return pd.DataFrame(rows)


def samples_md(samples: pd.DataFrame, n_contexts: int = 8) -> str:
    """The first held-out contexts with each policy's first generation and its reward."""
    lines = ["# Generations for held-out contexts", ""]
    first = samples[samples["sample"] == 0]
    for i, (ctx, g) in enumerate(first.groupby("context", sort=False)):
        if i == n_contexts:
            break
        lines.append(f"{i + 1}. **context:** {' '.join(str(ctx).split())}")
        lines += [f"   - **{r.policy}** ({r.reward:+.3f}): {' '.join(str(r.text).split())}"
                  for r in g.itertuples()]
        lines.append("")
    return "\n".join(lines) + "\nAll generations with their rewards: samples.csv.\n"


def summary_md(res: FinetuneResult) -> str:
    cfg, info = res.cfg, res.info
    how = {"best-of-n": f"best of {cfg.n_candidates} SFT samples by the reward",
           "dpo": f"DPO, {cfg.steps} steps at beta {cfg.beta} on {info.get('n_pairs')} "
                  f"reward-ranked pairs of SFT samples ({cfg.n_candidates} per training context)",
           "pg": f"REINFORCE (RLOO), {cfg.steps} steps, {cfg.k} samples per prompt, "
                 f"kl_coef {cfg.kl_coef}"}[cfg.kind]
    sft_row = res.summary.set_index("policy").loc["sft"]
    ft_row = res.summary.set_index("policy").loc[cfg.kind]
    kl_note = ("best-of-n's KL to SFT is the analytic bound log n - (n-1)/n (nats), not an "
               "estimate" if cfg.kind == "best-of-n" else "kl_to_sft: mean log pi(y) - "
               "log pi_sft(y) over the fine-tuned policy's generations (nats; KL(pi || SFT) at "
               "temperature 1)")
    lines = [
        f"# Fine-tuning against the {info['reward']} reward", "",
        f"- policy: SFT preset `{cfg.sft_preset}` (model {res.sft_cfg.model}) on "
        f"{info['corpus']}: {info['n_stories']} stories, {info['n_train_stories']} for training, "
        f"{info['n_heldout_stories']} held out; SFT run: {res.policy.directory}",
        f"- fine-tuning: {how}; {info['n_train_contexts_used']} training contexts",
        f"- evaluation: {cfg.samples_per_context} generations for each of "
        f"{info['n_heldout_contexts_used']} held-out contexts per policy (temperature "
        f"{cfg.temperature}, the same sampling key for both)", "",
        outputs.markdown_table(res.summary, floatfmt=".4g"), "",
        f"Mean reward {cfg.kind} - SFT: {ft_row.mean_reward - sft_row.mean_reward:+.4f} "
        f"(reward units; the reward's scale is the logit of the rate for counts). {kl_note}. "
        "Generations: samples.md, samples.csv.", ""]
    return "\n".join(lines)
