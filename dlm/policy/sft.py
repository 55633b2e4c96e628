"""Supervised fine-tuning of the headline writer (prompt = lede, response = headline): the
SFT policy every optimiser starts from and is regularised towards.

    res = train_sft(cfg, out_dir, data=None)          # train, evaluate, write outputs

Without `data` it trains on the built-in template corpus (dlm.data.builtin_corpus); with a
path it reads an Upworthy archive; `corpus=(StoryCorpus, label)` trains on any story
corpus (the label names it in config.json and the cache key). Stories are loaded and split
into train/val by dlm.policy.sft_corpus, so validation ledes are unseen; later stages use
the same split for held-out ledes. The trained policy as a cached service (train once,
then load): dlm.policy.sft_cache. scripts.train_sft is the command line over this module.
"""
from __future__ import annotations

import dataclasses
import pathlib
import time
import jax
import numpy as np

from dlm import outputs
from dlm.data.batching import (bits_per_byte, encode_sft, make_batch_for_step,
                               prompt_weighted_mask, target_bytes)
from dlm.data.corpus import StoryCorpus
from dlm.data.subword import TOKENIZER_FILE, build_tokenizer, load_tokenizer
from dlm.models.decoder import PRESETS as MODEL_PRESETS, Decoder, DecoderConfig, count_params
from dlm.models.decoder import init_params
from dlm.policy.sft_corpus import corpus_fingerprint, load_corpus, split_corpus, sft_pairs
from dlm.train.checkpoint import Checkpointer
from dlm.train.loop import LoopConfig, train_loop
from dlm.train.losses import next_token_loss
from dlm.train.optim import OptimConfig, make_optimizer, make_schedule
from dlm.train.step import TrainState, make_eval_step, make_train_step


@dataclasses.dataclass(frozen=True)
class SFTConfig:
    model: str = "small"            # decoder preset, or a pretrained LLM ("smollm2-135m": LoRA SFT)
    dtype: str = "float32"          # compute dtype; "bfloat16" on GPU/TPU
    seed: int = 0
    steps: int = 300
    batch_size: int = 32            # global batch; a multiple of the device count
    max_len: int = 128              # tokens per example (BOS lede SEP headline EOS)
    max_prompt_len: int = 96        # lede budget (ids incl. BOS/SEP); the headline fits first
    lr: float = 1e-3
    warmup_steps: int = 30
    weight_decay: float = 0.1
    clip_norm: float = 1.0
    min_lr_ratio: float = 0.1
    val_fraction: float = 0.1       # share of stories held out
    n_stories: int = 600            # size of the built-in corpus (ignored with --data)
    max_val_pairs: int = 512        # (lede, headline) pairs scored for validation bpb
    ckpt_every: int = 100
    log_every: int = 10
    n_samples: int = 10             # held-out ledes to write headlines for
    temperature: float = 0.7
    max_new_tokens: int = 64
    tokenizer: str = "byte"         # "byte", or "bpe": byte-level BPE trained on the train split
    bpe_vocab: int = 4096           # BPE vocabulary (specials and 256 bytes included)
    prompt_loss_weight: float = 0.0  # weight of the lede tokens in the training loss (LM signal)
    # pretrained models only (the tokenizer field is then ignored: the model's own is used)
    lora_rank: int = 8
    lora_alpha: float = 16.0
    chat_system: str = "Write a headline for this story."   # system turn of the chat prompt
    max_user_tokens: int = 48       # lede tokens in the user turn (the template is never cut)


# Named SFT runs; scripts.train_sft exposes them as --preset, and later stages (DPO,
# REINFORCE, reward trunks) name the SFT policy they start from by the same names.
PRESETS: dict[str, SFTConfig] = {
    "tiny": SFTConfig(model="tiny", steps=12, batch_size=8, max_len=64, max_prompt_len=40,
                      lr=3e-3, warmup_steps=2, val_fraction=0.25, n_stories=40,
                      max_val_pairs=16, ckpt_every=6, log_every=3, max_new_tokens=12),
    # byte-level BPE (4k, trained on the train split) + the ledes as weighted LM signal:
    # ~3.6 bytes per token on Upworthy, so 700 steps x 32 rows of 64 tokens are ~2.3 epochs
    # of its 9.7k training pairs, ~7 min on an idle 2-core CPU. Measured: val bits/byte
    # 3.49 -> 1.91 and English, headline-shaped samples (the byte model's 300 x 32 x 128:
    # 8.26 -> 2.37, samples not English)
    "quick": SFTConfig(tokenizer="bpe", bpe_vocab=4096, max_len=64, max_prompt_len=40,
                       steps=700, lr=2e-3, warmup_steps=50, prompt_loss_weight=0.3,
                       ckpt_every=350, log_every=50),
    # LoRA SFT of SmolLM2-135M-Instruct sized for a CPU (~minutes); `--model smollm2-135m`
    # with another preset keeps that preset's steps/batch (fine on a GPU)
    "smollm2": SFTConfig(model="smollm2-135m", steps=60, batch_size=8, max_len=96,
                         max_prompt_len=72, lr=5e-4, warmup_steps=6, max_val_pairs=64,
                         ckpt_every=30, log_every=5, max_new_tokens=32),
    "full": SFTConfig(model="base", dtype="bfloat16", steps=6000, batch_size=64, max_len=256,
                      max_prompt_len=192, lr=6e-4, warmup_steps=200, max_val_pairs=4096,
                      ckpt_every=500, log_every=50, max_new_tokens=96),
}


# ---- training and evaluation -------------------------------------------------------------
def sft_loss_fn(model: Decoder):
    """loss_fn(params, batch, rng) for the generic train step: next-token loss on the
    headline bytes (and EOS) only; the lede is context."""
    def loss_fn(params, batch, rng):
        del rng  # no dropout
        logits_BxLxV, _ = model.apply({"params": params}, batch["tokens"])
        return next_token_loss(logits_BxLxV, batch["tokens"], batch["loss_mask"])
    return loss_fn


def validation_bpb(eval_step, params, tok, tokens_NxL, mask_NxL, batch_size: int) -> float:
    """Bits per byte of the held-out headlines given their ledes (padding rows carry no
    mask, so every batch keeps one shape and compiles once)."""
    nats = 0.0
    for start in range(0, len(tokens_NxL), batch_size):
        t, m = tokens_NxL[start:start + batch_size], mask_NxL[start:start + batch_size]
        pad = batch_size - len(t)
        if pad:
            t = np.concatenate([t, np.repeat(t[:1], pad, 0)])
            m = np.concatenate([m, np.zeros((pad, m.shape[1]), m.dtype)])
        nats += float(eval_step(params, {"tokens": t, "loss_mask": m}, jax.random.key(0))["nats_sum"])
    return bits_per_byte(nats, target_bytes(tok, tokens_NxL, mask_NxL))


def sample_headlines(params, model_cfg, tok, ledes: list[str], cfg: SFTConfig) -> list[str]:
    """One headline per lede, sampled at cfg.temperature and cut at EOS."""
    from dlm.policy.best_of_n import sample_pool
    pool = sample_pool(params, model_cfg, tok, ledes, 1, jax.random.key(cfg.seed + 7),
                       cfg.max_new_tokens, cfg.temperature, max_prompt_len=cfg.max_prompt_len,
                       batch_size=len(ledes))
    return [row[0] for row in pool.texts]


def model_config(cfg: SFTConfig, vocab_size: int | None = None) -> DecoderConfig:
    """The decoder preset with the SFT run's dtype, a context long enough for max_len and
    the tokenizer's vocabulary (default: the preset's, i.e. bytes)."""
    if cfg.model not in MODEL_PRESETS:
        from dlm.models.pretrained import MODELS
        raise ValueError(f"--set model: unknown model {cfg.model!r}; have the decoder presets "
                         f"{sorted(MODEL_PRESETS)} and the pretrained {sorted(MODELS[1:])}")
    base = MODEL_PRESETS[cfg.model]
    return dataclasses.replace(base, dtype=cfg.dtype, max_len=max(base.max_len, cfg.max_len),
                               vocab_size=vocab_size or base.vocab_size)


def _samples_md(ledes, generated, references) -> str:
    lines = ["# Sampled headlines for held-out ledes", ""]
    for i, (lede, gen, ref) in enumerate(zip(ledes, generated, references), 1):
        lines += [f"{i}. **lede:** {lede}", f"   - **generated:** {gen}",
                  f"   - **a real headline:** {ref}", ""]
    return "\n".join(lines)


def _summary_md(rows: dict, source: str) -> str:
    table = "\n".join(f"| {k} | {v} |" for k, v in rows.items())
    return (f"# SFT headline writer\n\nData: {source}\n\n| quantity | value |\n|---|---|\n"
            f"{table}\n\nValidation bits per byte are over held-out stories' headlines given "
            f"their ledes (lower is better). Samples: samples.md.\n")


def _check_resume(out: pathlib.Path, resume: bool) -> None:
    """Fail before any work when `out` holds a previous run and resume was not asked for."""
    ckpt_dir = out / "checkpoints"
    if resume or not ckpt_dir.exists():
        return
    with Checkpointer(ckpt_dir) as ck:
        latest = ck.latest_step()
    if latest is not None:
        raise FileExistsError(f"{out} already holds a run (checkpoint step {latest}); pass --resume "
                         "to continue it, or choose a fresh --out")


def train_sft(cfg: SFTConfig, out: pathlib.Path, data: pathlib.Path | None = None,
              resume: bool = False, quiet: bool = False,
              corpus: tuple[StoryCorpus, str] | None = None) -> dict:
    """Train, evaluate and write every output (config.json, metrics.jsonl, checkpoints/,
    samples.md, summary.md) to `out`; returns the summary numbers, params and model_cfg.

    The stories come from `corpus=(StoryCorpus, label)` when given (then `data` must be
    None), else from `data` or the built-in corpus; either way split by `split_corpus`."""
    out = pathlib.Path(out)
    _check_resume(out, resume)
    stories, source = load_corpus(data, cfg, corpus)
    train, val = split_corpus(stories, cfg, source)
    tok, model_cfg, params, loss_fn, frozen, policy_params, describe = _setup(cfg, train, out,
                                                                             resume)
    tr_tokens, tr_mask = encode_sft(tok, *sft_pairs(train), cfg.max_len, cfg.max_prompt_len)
    tr_weight = prompt_weighted_mask(tr_tokens, tr_mask, tok.pad_id, cfg.prompt_loss_weight)
    va_tokens, va_mask = encode_sft(tok, *sft_pairs(val), cfg.max_len, cfg.max_prompt_len)
    va_tokens, va_mask = va_tokens[:cfg.max_val_pairs], va_mask[:cfg.max_val_pairs]
    outputs.write_json(out / "config.json", {
        "sft": cfg, "model": model_cfg, "data": source,
        "corpus_fingerprint": corpus_fingerprint(stories) if corpus is not None else None,
        "n_train_stories": len(train),
        "n_val_stories": len(val), "n_train_pairs": len(tr_tokens), "n_val_pairs": len(va_tokens),
        "n_devices": jax.device_count()})

    optim = OptimConfig(lr=cfg.lr, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps,
                        weight_decay=cfg.weight_decay, clip_norm=cfg.clip_norm,
                        min_lr_ratio=cfg.min_lr_ratio)
    tx = make_optimizer(optim)
    eval_step = make_eval_step(loss_fn, frozen)
    bpb_before = validation_bpb(eval_step, params, tok, va_tokens, va_mask, cfg.batch_size)

    t0 = time.perf_counter()
    result = train_loop(
        TrainState.create(params, tx), make_train_step(loss_fn, tx, make_schedule(optim), frozen),
        make_batch_for_step(tr_tokens, tr_weight, cfg.batch_size, cfg.seed), cfg.steps,
        jax.random.key(cfg.seed + 1),
        LoopConfig(out_dir=out, ckpt_every=cfg.ckpt_every, log_every=cfg.log_every,
                   resume=resume, quiet=quiet, desc="sft"))
    train_s = time.perf_counter() - t0
    bpb_after = validation_bpb(eval_step, result.state.params, tok, va_tokens, va_mask,
                               cfg.batch_size)
    params = policy_params(result.state.params)

    n = min(cfg.n_samples, len(val))
    ledes = list(val.contexts[:n])
    generated = sample_headlines(params, model_cfg, tok, ledes, cfg)
    outputs.write_text(out / "samples.md", _samples_md(ledes, generated, [h[0] for h in val.headlines[:n]]))
    tps = [r["tokens_per_s"] for r in result.history if "tokens_per_s" in r]
    summary = {"model": describe, "steps": cfg.steps,
               "tokenizer": repr(tok), "prompt loss weight": cfg.prompt_loss_weight,
               "batch x context": f"{cfg.batch_size} x {cfg.max_len}",
               "resumed from step": result.resumed_from, "train seconds (this call)": round(train_s, 1),
               "train tokens/s (median window)": round(float(np.median(tps))) if tps else None,
               "val bits/byte before": round(bpb_before, 4), "val bits/byte after": round(bpb_after, 4)}
    outputs.write_text(out / "summary.md", _summary_md(summary, source))
    if not quiet:
        print(f"validation bits/byte: {bpb_before:.3f} before -> {bpb_after:.3f} after")
        for lede, gen in zip(ledes, generated):
            print(f"- {lede[:70]!r}\n    -> {gen}")
        print(f"outputs in {out}")
    return {"bpb_before": bpb_before, "bpb_after": bpb_after, "samples": generated,
            "resumed_from": result.resumed_from, "params": params, "model_cfg": model_cfg,
            "tokenizer": tok, "train_seconds": train_s}


def _setup(cfg: SFTConfig, train: StoryCorpus, out: pathlib.Path, resume: bool):
    """(tokenizer, model_cfg, initial trainable params, loss over them, the frozen tree the
    loss takes as a jit argument (None: none), trainable -> policy params, description): a
    from-scratch decoder, or LoRA on a pretrained LLM (frozen: its base)."""
    from dlm.policy import lora_sft
    if lora_sft.is_pretrained(cfg.model):
        return lora_sft.setup(cfg, lambda model_cfg: sft_loss_fn(Decoder(model_cfg)))
    if resume and (out / TOKENIZER_FILE).exists():
        tok = load_tokenizer(out)        # the checkpoints' vocabulary, not a retrained one
    else:
        # learned from the training stories only: validation text never shapes the vocabulary
        tok = build_tokenizer(cfg.tokenizer, list(train.contexts) + list(sft_pairs(train)[1]),
                              cfg.bpe_vocab)
        if cfg.tokenizer != "byte":
            tok.save(out / TOKENIZER_FILE)   # load_sft rebuilds the policy's tokenizer from it
    model_cfg = model_config(cfg, tok.vocab_size)
    params = init_params(model_cfg, jax.random.key(cfg.seed))
    describe = f"{cfg.model} ({count_params(params):,} params)"
    return tok, model_cfg, params, sft_loss_fn(Decoder(model_cfg)), None, lambda p: p, describe
