"""Supervised fine-tuning of the headline writer: prompt = lede, response = headline.

    python -m scripts.train_sft --preset quick --out runs/sft [--data PATH] [--resume]
                                [--set steps=500 --set lr=1e-3 ...]

Without --data it trains on the built-in template corpus (sims.builtin_corpus), so it
runs on a fresh machine; with --data it reads an Upworthy archive. Stories are split
into train/val, so validation ledes are unseen. Writes to --out: config.json,
metrics.jsonl, checkpoints/ (the SFT policy later stages load), samples.md (headlines
for held-out ledes) and summary.md (validation bits per byte before and after).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from dlm import cli, outputs
from dlm.data.batching import bits_per_byte, encode_prompts, encode_sft, target_bytes
from dlm.data.corpus import StoryCorpus
from dlm.data.tokenizer import ByteTokenizer
from dlm.models.decoder import PRESETS as MODEL_PRESETS, Decoder, count_params, init_params
from dlm.train.checkpoint import Checkpointer
from dlm.train.loop import LoopConfig, train_loop
from dlm.train.losses import next_token_loss
from dlm.train.optim import OptimConfig, make_optimizer, make_schedule
from dlm.train.sharding import maybe_initialize_distributed
from dlm.train.step import TrainState, make_eval_step, make_train_step


@dataclasses.dataclass(frozen=True)
class SFTConfig:
    model: str = "small"            # decoder preset (dlm.models.decoder.PRESETS)
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


PRESETS: dict[str, SFTConfig] = {
    "tiny": SFTConfig(model="tiny", steps=12, batch_size=8, max_len=64, max_prompt_len=40,
                      lr=3e-3, warmup_steps=2, val_fraction=0.25, n_stories=40,
                      max_val_pairs=16, ckpt_every=6, log_every=3, max_new_tokens=12),
    "quick": SFTConfig(),
    "full": SFTConfig(model="base", dtype="bfloat16", steps=6000, batch_size=64, max_len=256,
                      max_prompt_len=192, lr=6e-4, warmup_steps=200, max_val_pairs=4096,
                      ckpt_every=500, log_every=50, max_new_tokens=96),
}


def load_corpus(data: pathlib.Path | None, cfg: SFTConfig) -> tuple[StoryCorpus, str]:
    """The Upworthy stories at `data`, or the built-in template corpus."""
    if data is None:
        from sims.builtin_corpus import builtin_corpus
        return builtin_corpus(n_stories=cfg.n_stories, seed=cfg.seed), "built-in template corpus"
    from dlm.data.corpus import stories_from_log
    from dlm.data.upworthy import load_upworthy
    return stories_from_log(load_upworthy(data)), str(data)


def sft_pairs(corpus: StoryCorpus) -> tuple[list[str], list[str]]:
    """One (lede, headline) pair per candidate headline of every story."""
    prompts, responses = [], []
    for context, headlines in zip(corpus.contexts, corpus.headlines):
        for h in headlines:
            prompts.append(context)
            responses.append(h)
    return prompts, responses


def make_batch_for_step(tokens_NxL: np.ndarray, mask_NxL: np.ndarray, batch_size: int, seed: int):
    """batch_for_step(s): rows s*B .. s*B+B-1 of a stream of per-epoch permutations, a pure
    function of (seed, s), so a resumed run sees exactly the same batches."""
    n = len(tokens_NxL)

    @functools.lru_cache(maxsize=4)
    def perm(epoch: int) -> np.ndarray:
        return np.random.default_rng([seed, epoch]).permutation(n)

    def batch_for_step(s: int) -> dict:
        pos = s * batch_size + np.arange(batch_size)
        idx = np.array([perm(int(p // n))[p % n] for p in pos])
        return {"tokens": tokens_NxL[idx], "loss_mask": mask_NxL[idx]}

    return batch_for_step


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
    from dlm.sample import generate
    tokens, mask = encode_prompts(tok, ledes, cfg.max_prompt_len)
    gen = generate(params, model_cfg, tokens, mask, jax.random.key(cfg.seed + 7),
                   cfg.max_new_tokens, temperature=cfg.temperature, eos_id=tok.eos_id,
                   pad_id=tok.pad_id)
    out = []
    for row, keep in zip(np.asarray(gen.tokens).tolist(), np.asarray(gen.mask).tolist()):
        out.append(tok.decode([t for t, k in zip(row, keep) if k and t != tok.eos_id]).strip())
    return out


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
    """Fail before any work when --out holds a previous run and --resume was not given."""
    ckpt_dir = out / "checkpoints"
    if resume or not ckpt_dir.exists():
        return
    with Checkpointer(ckpt_dir) as ck:
        latest = ck.latest_step()
    if latest is not None:
        raise SystemExit(f"{out} already holds a run (checkpoint step {latest}); pass --resume "
                         "to continue it, or choose a fresh --out")


def run(cfg: SFTConfig, out: pathlib.Path, data: pathlib.Path | None = None,
        resume: bool = False, quiet: bool = False) -> dict:
    """Train, evaluate and write every output; returns the summary numbers."""
    _check_resume(out, resume)
    tok = ByteTokenizer()
    model_cfg = dataclasses.replace(MODEL_PRESETS[cfg.model], dtype=cfg.dtype,
                                    max_len=max(MODEL_PRESETS[cfg.model].max_len, cfg.max_len))
    corpus, source = load_corpus(data, cfg)
    train, val = corpus.split((1 - cfg.val_fraction, cfg.val_fraction), seed=cfg.seed)
    if len(train) == 0 or len(val) == 0:
        raise SystemExit(f"{source}: {len(corpus)} stories are too few to split "
                         f"with val_fraction={cfg.val_fraction}")
    tr_tokens, tr_mask = encode_sft(tok, *sft_pairs(train), cfg.max_len, cfg.max_prompt_len)
    va_tokens, va_mask = encode_sft(tok, *sft_pairs(val), cfg.max_len, cfg.max_prompt_len)
    va_tokens, va_mask = va_tokens[:cfg.max_val_pairs], va_mask[:cfg.max_val_pairs]
    outputs.write_json(out / "config.json", {
        "sft": cfg, "model": model_cfg, "data": source, "n_train_stories": len(train),
        "n_val_stories": len(val), "n_train_pairs": len(tr_tokens), "n_val_pairs": len(va_tokens),
        "n_devices": jax.device_count()})

    model = Decoder(model_cfg)
    loss_fn = sft_loss_fn(model)
    optim = OptimConfig(lr=cfg.lr, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps,
                        weight_decay=cfg.weight_decay, clip_norm=cfg.clip_norm,
                        min_lr_ratio=cfg.min_lr_ratio)
    tx = make_optimizer(optim)
    params = init_params(model_cfg, jax.random.key(cfg.seed))
    eval_step = make_eval_step(loss_fn)
    bpb_before = validation_bpb(eval_step, params, tok, va_tokens, va_mask, cfg.batch_size)

    t0 = time.perf_counter()
    result = train_loop(
        TrainState.create(params, tx), make_train_step(loss_fn, tx, make_schedule(optim)),
        make_batch_for_step(tr_tokens, tr_mask, cfg.batch_size, cfg.seed), cfg.steps,
        jax.random.key(cfg.seed + 1),
        LoopConfig(out_dir=out, ckpt_every=cfg.ckpt_every, log_every=cfg.log_every,
                   resume=resume, quiet=quiet, desc="sft"))
    train_s = time.perf_counter() - t0
    params = result.state.params
    bpb_after = validation_bpb(eval_step, params, tok, va_tokens, va_mask, cfg.batch_size)

    n = min(cfg.n_samples, len(val))
    ledes = list(val.contexts[:n])
    generated = sample_headlines(params, model_cfg, tok, ledes, cfg)
    outputs.write_text(out / "samples.md", _samples_md(ledes, generated, [h[0] for h in val.headlines[:n]]))
    tps = [r["tokens_per_s"] for r in result.history if "tokens_per_s" in r]
    summary = {"model": f"{cfg.model} ({count_params(params):,} params)", "steps": cfg.steps,
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
            "resumed_from": result.resumed_from}


def main(argv: list[str] | None = None) -> None:
    maybe_initialize_distributed()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_common_args(parser, PRESETS, default_preset="quick")
    parser.add_argument("--data", type=pathlib.Path, default=None,
                        help="Upworthy archive (.csv/.csv.gz/.parquet); default: built-in corpus")
    parser.add_argument("--resume", action="store_true", help="continue from --out's checkpoints")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or printout")
    args = parser.parse_args(argv)
    cfg = cli.resolve_config(args, PRESETS)
    if cfg.model not in MODEL_PRESETS:
        raise SystemExit(f"--set model: unknown decoder preset {cfg.model!r}; "
                         f"have {sorted(MODEL_PRESETS)}")
    run(cfg, args.out, args.data, args.resume, args.quiet)


if __name__ == "__main__":
    main()
