"""Supervised fine-tuning of the headline writer (prompt = lede, response = headline): the
SFT policy every optimiser starts from and is regularised towards.

    res = train_sft(cfg, out_dir, data=None)          # train, evaluate, write outputs
    policy = sft_policy(cfg, data=None, directory=d)  # the same, or load it if d holds it

Without `data` it trains on the built-in template corpus (sims.builtin_corpus); with a
path it reads an Upworthy archive; `corpus=(StoryCorpus, label)` trains on any story
corpus (the label names it in config.json and the cache key). Stories are split into
train/val (`split_corpus`), so validation ledes are unseen; later stages use the same
split for held-out ledes.
scripts.train_sft is the command line over this module.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Any, NamedTuple

import jax
import numpy as np

from dlm import cli, outputs
from dlm.data.batching import (bits_per_byte, encode_sft, index_stream,  # noqa: F401
                               make_batch_for_step, prompt_weighted_mask, target_bytes)
from dlm.data.corpus import StoryCorpus
from dlm.data.subword import TOKENIZER_FILE, build_tokenizer, load_tokenizer
from dlm.data.tokenizer import Tokenizer
from dlm.models.decoder import PRESETS as MODEL_PRESETS, Decoder, DecoderConfig, count_params
from dlm.models.decoder import init_params
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


class SFTPolicy(NamedTuple):
    """A trained SFT policy: what best-of-n, DPO and REINFORCE start from. Use its
    `tokenizer` (byte, trained BPE or a pretrained LLM's); never assume bytes."""

    params: Any
    model_cfg: DecoderConfig
    tokenizer: Tokenizer
    directory: pathlib.Path


# ---- data --------------------------------------------------------------------------------
def load_corpus(data: pathlib.Path | None, cfg: SFTConfig,
                corpus: tuple[StoryCorpus, str] | None = None) -> tuple[StoryCorpus, str]:
    """(stories, source label): the given `corpus`, the Upworthy stories at `data`, or the
    built-in template corpus."""
    if corpus is not None:
        return _check_corpus_arg(data, corpus)
    if data is None:
        from sims.builtin_corpus import builtin_corpus
        return builtin_corpus(n_stories=cfg.n_stories, seed=cfg.seed), "built-in template corpus"
    from dlm.data.corpus import stories_from_log
    from dlm.data.upworthy import load_upworthy
    return stories_from_log(load_upworthy(data)), str(data)


def _check_corpus_arg(data, corpus) -> tuple[StoryCorpus, str]:
    """`corpus` must be a (StoryCorpus, non-empty label) tuple and excludes `data`."""
    if data is not None:
        raise ValueError(f"give either data ({data}) or corpus, not both")
    if not (isinstance(corpus, tuple) and len(corpus) == 2 and isinstance(corpus[0], StoryCorpus)
            and isinstance(corpus[1], str) and corpus[1]):
        raise TypeError("corpus must be a (StoryCorpus, source_label: str) tuple, got "
                        f"{type(corpus).__name__}")
    return corpus


def corpus_fingerprint(corpus: StoryCorpus) -> str:
    """A short hash of the stories' text, so a cache keyed by a corpus label is never
    reused for a different corpus carrying the same label."""
    import hashlib
    h = hashlib.sha256()
    for sid, ctx, heads in zip(corpus.story_ids, corpus.contexts, corpus.headlines):
        h.update(json.dumps([sid, ctx, list(heads)]).encode())
    return h.hexdigest()[:16]


def split_corpus(corpus: StoryCorpus, cfg: SFTConfig, source: str = "corpus"
                 ) -> tuple[StoryCorpus, StoryCorpus]:
    """(train, val) stories exactly as SFT splits them, so held-out ledes stay unseen."""
    train, val = corpus.split((1 - cfg.val_fraction, cfg.val_fraction), seed=cfg.seed)
    if len(train) == 0 or len(val) == 0:
        raise SystemExit(f"{source}: {len(corpus)} stories are too few to split "
                         f"with val_fraction={cfg.val_fraction}")
    return train, val


def sft_pairs(corpus: StoryCorpus) -> tuple[list[str], list[str]]:
    """One (lede, headline) pair per candidate headline of every story."""
    prompts, responses = [], []
    for context, headlines in zip(corpus.contexts, corpus.headlines):
        for h in headlines:
            prompts.append(context)
            responses.append(h)
    return prompts, responses


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
        raise SystemExit(f"--set model: unknown model {cfg.model!r}; have the decoder presets "
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
        raise SystemExit(f"{out} already holds a run (checkpoint step {latest}); pass --resume "
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


# ---- the cached policy -------------------------------------------------------------------
def load_sft(directory: pathlib.Path) -> SFTPolicy:
    """The finished SFT policy in `directory` (its config.json and latest checkpoint)."""
    directory = pathlib.Path(directory)
    cfg_path = directory / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{cfg_path}: no SFT run here (train one with scripts.train_sft)")
    saved = json.loads(cfg_path.read_text())

    def restore_params():
        with Checkpointer(directory / "checkpoints") as ck:
            if ck.latest_step() is None:
                raise FileNotFoundError(f"{directory / 'checkpoints'}: no checkpoint saved yet")
            return ck.restore_params()

    from dlm.policy import lora_sft
    if lora_sft.is_pretrained(saved["sft"]["model"]):
        sft_fields = {f.name for f in dataclasses.fields(SFTConfig)}
        cfg = SFTConfig(**{k: v for k, v in saved["sft"].items() if k in sft_fields})
        return SFTPolicy(*lora_sft.load_policy(directory, cfg, restore_params), directory)
    known = {f.name for f in dataclasses.fields(DecoderConfig)}
    model_cfg = DecoderConfig(**{k: v for k, v in saved.get("model", {}).items() if k in known})
    params = jax.tree.map(np.asarray, restore_params())
    return SFTPolicy(params, model_cfg, load_tokenizer(directory), directory)


def _mismatch(directory: pathlib.Path, cfg: SFTConfig, source: str,
              fingerprint: str | None = None) -> list[str]:
    """Fields where the run saved in `directory` differs from (cfg, source, corpus)."""
    saved = json.loads((directory / "config.json").read_text())
    want = cli.to_jsonable(cfg)
    diff = [f"{k}: saved {saved['sft'].get(k)!r} vs wanted {v!r}"
            for k, v in want.items() if saved["sft"].get(k) != v]
    if saved.get("data") != source:
        diff.append(f"data: saved {saved.get('data')!r} vs wanted {source!r}")
    if saved.get("corpus_fingerprint") != fingerprint:
        diff.append(f"corpus_fingerprint: saved {saved.get('corpus_fingerprint')!r} "
                    f"vs wanted {fingerprint!r} (same label, different stories?)")
    return diff


def sft_policy(cfg: SFTConfig, data: pathlib.Path | None = None,
               directory: pathlib.Path | None = None, quiet: bool = True,
               corpus: tuple[StoryCorpus, str] | None = None) -> SFTPolicy:
    """The SFT policy for (cfg, data or corpus), trained into `directory` or loaded from it.

    A finished run with the same config and data is loaded (no training); an interrupted
    one is resumed; a run with a different config is an error naming the differing fields,
    so a cache is never silently reused for another experiment. `directory` defaults to
    `sft_cache_dir(cfg, data, corpus=corpus)`. `corpus=(StoryCorpus, label)` replaces the
    data file (then `data` must be None).
    """
    data = None if data is None else pathlib.Path(data).absolute()
    fingerprint = None
    if corpus is not None:
        _check_corpus_arg(data, corpus)
        fingerprint = corpus_fingerprint(corpus[0])
        source = corpus[1]
    else:
        source = "built-in template corpus" if data is None else str(data)
    directory = (pathlib.Path(directory) if directory is not None
                 else sft_cache_dir(cfg, data, corpus=corpus))
    if (directory / "config.json").exists():
        diff = _mismatch(directory, cfg, source, fingerprint)
        if diff:
            raise SystemExit(f"{directory / 'config.json'}: holds a different SFT run "
                             f"({'; '.join(diff)}); choose another directory")
        with Checkpointer(directory / "checkpoints") as ck:
            latest = ck.latest_step()
        if latest == cfg.steps:
            return load_sft(directory)
        resume = latest is not None
    else:
        resume = False
    res = train_sft(cfg, directory, data, resume=resume, quiet=quiet, corpus=corpus)
    return SFTPolicy(res["params"], res["model_cfg"], res["tokenizer"], directory)


def sft_cache_dir(cfg: SFTConfig, data: pathlib.Path | None = None,
                  root: pathlib.Path | None = None,
                  corpus: tuple[StoryCorpus, str] | None = None) -> pathlib.Path:
    """root/sft-<hash of config and data (or corpus label and fingerprint)>; root defaults
    to $DLM_CACHE or ~/.cache/dlm."""
    import hashlib
    import os
    root = pathlib.Path(root or os.environ.get("DLM_CACHE", pathlib.Path.home() / ".cache/dlm"))
    content = {"sft": cli.to_jsonable(cfg), "data": None if data is None else
               str(pathlib.Path(data).absolute())}
    if corpus is not None:
        _check_corpus_arg(data, corpus)
        content["corpus"] = [corpus[1], corpus_fingerprint(corpus[0])]
    key = json.dumps(content, sort_keys=True)
    return root / f"sft-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def preset_policy(preset: str, data: pathlib.Path | None = None, model: str = "",
                  directory: str = "", quiet: bool = True):
    """What later stages start from: the cached SFT policy of the named preset (`model`
    overrides its model, e.g. "smollm2-135m"), its config, and the (train, val) stories it
    was split into -> (policy, cfg, train, val, source)."""
    if preset not in PRESETS:
        raise SystemExit(f"--set sft_preset: unknown {preset!r}; have {sorted(PRESETS)}")
    cfg = dataclasses.replace(PRESETS[preset], model=model) if model else PRESETS[preset]
    data = None if data is None else pathlib.Path(data).absolute()
    policy = sft_policy(cfg, data, pathlib.Path(directory) if directory else None, quiet=quiet)
    corpus, source = load_corpus(data, cfg)
    train, val = split_corpus(corpus, cfg, source)
    return policy, cfg, train, val, source
