"""Throughput of a registered model: prefill and decode tokens/s, LoRA train-step tokens/s.

    python -m scripts.bench_pretrained --model smollm2-135m --out runs/bench_smollm2 \
        [--preset quick|tiny|gpu] [--set batch_size=8 --set lora_rank=16 ...]

Prefill: one forward pass over batch x prompt_len tokens filling the KV cache. Decode:
new tokens/s of the KV-cache sampler, from the time of new_tokens steps minus that of a
single one (so the prefill is not counted). LoRA: the SFT train step (next-token loss,
AdamW on the adapters, frozen base) on batch x seq_len tokens. Timings are wall-clock
medians after a compile run; the LoRA step also reports its compile seconds (first call
minus a median step; also in process CPU seconds) and the process's peak RSS. `--set lora_only=true` times only the LoRA
step, so peak RSS is that of load + LoRA compile + steps. Writes bench.json, results.csv,
summary.md, config.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from dlm import cli, outputs
from dlm.experiments.bench import median_time, rss_bytes
from dlm.models import lora, pretrained
from dlm.models.decoder import Decoder, count_params, init_cache
from dlm.policy.sft import sft_loss_fn
from dlm.sample import generate
from dlm.train.optim import OptimConfig, make_optimizer
from dlm.train.step import TrainState, make_train_step


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    model: str = pretrained.SCRATCH   # overridden by --model
    preset: str = "small"             # decoder preset for the scratch model
    dtype: str = "float32"
    batch_size: int = 4               # rows for prefill, decode and the train step
    prompt_len: int = 128
    new_tokens: int = 32
    seq_len: int = 128                # tokens per row in the train step
    train_steps: int = 3              # timed train steps
    repeats: int = 3                  # timed repeats for prefill / decode (median)
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = lora.ALL_LINEAR
    lora_only: bool = False           # time only the LoRA step (compile s, step s, peak RSS)
    seed: int = 0


PRESETS = {
    "quick": BenchConfig(),
    "tiny": BenchConfig(preset="tiny", batch_size=2, prompt_len=16, new_tokens=8, seq_len=16,
                        train_steps=1, repeats=1),
    "gpu": BenchConfig(dtype="bfloat16", batch_size=32, prompt_len=512, new_tokens=128,
                       seq_len=512, train_steps=10, repeats=5),
}


def _tokens(cfg: BenchConfig, vocab: int, shape) -> jax.Array:
    rng = np.random.default_rng(cfg.seed)
    return jnp.asarray(rng.integers(3, min(vocab, 30000), shape), jnp.int32)


def prefill_tokens_per_s(model_cfg, params, cfg: BenchConfig) -> float:
    """Prompt tokens/s of one cache-filling forward pass."""
    prompts = _tokens(cfg, model_cfg.vocab_size, (cfg.batch_size, cfg.prompt_len))

    @jax.jit
    def prefill(params, prompts):
        cache = init_cache(model_cfg, prompts.shape[0], prompts.shape[1] + cfg.new_tokens)
        logits, cache = Decoder(model_cfg).apply({"params": params}, prompts, cache=cache)
        return logits[:, -1], cache

    run = lambda: jax.block_until_ready(prefill(params, prompts))  # noqa: E731
    run()  # compile
    return cfg.batch_size * cfg.prompt_len / median_time(run, cfg.repeats)


def decode_tokens_per_s(model_cfg, params, cfg: BenchConfig) -> float:
    """New tokens/s of KV-cache decoding: (T - 1) steps timed as gen(T) - gen(1)."""
    prompts = _tokens(cfg, model_cfg.vocab_size, (cfg.batch_size, cfg.prompt_len))
    mask = jnp.ones(prompts.shape, bool)

    def timed(n_new: int) -> float:
        run = lambda: jax.block_until_ready(generate(  # noqa: E731
            params, model_cfg, prompts, mask, jax.random.key(1), n_new, temperature=0.7))
        run()  # compile
        return median_time(run, cfg.repeats)

    if cfg.new_tokens < 2:
        raise ValueError("decode timing needs new_tokens >= 2")
    dt = timed(cfg.new_tokens) - timed(1)
    return cfg.batch_size * (cfg.new_tokens - 1) / dt if dt > 0 else float("nan")


def _rss_mb(peak: bool) -> float:
    """Resident memory of this process in MiB: now or the peak so far."""
    return rss_bytes()[1 if peak else 0] / 2 ** 20


def lora_train_step(model_cfg, params, cfg: BenchConfig) -> dict:
    """The LoRA SFT step: tokens/s, median step and compile seconds, trainable params."""
    lcfg = lora.LoraConfig(rank=cfg.lora_rank, alpha=cfg.lora_alpha, targets=cfg.lora_targets)
    trainable = lora.init_trainable(params, lcfg, jax.random.key(cfg.seed))
    tx = make_optimizer(OptimConfig(lr=1e-4, warmup_steps=0, total_steps=cfg.train_steps + 1,
                                    weight_decay=0.0))
    step = make_train_step(lora.lora_loss(sft_loss_fn(Decoder(model_cfg)), lcfg), tx,
                           frozen=params)
    state = TrainState.create(trainable, tx)
    batch = {"tokens": _tokens(cfg, model_cfg.vocab_size, (cfg.batch_size, cfg.seq_len)),
             "loss_mask": jnp.ones((cfg.batch_size, cfg.seq_len), jnp.float32)}
    key = jax.random.key(cfg.seed)
    # wall-clock and process CPU seconds (the latter less sensitive to a shared machine)
    t0, c0 = time.perf_counter(), time.process_time()
    state, m = step(state, batch, key)  # compile
    jax.block_until_ready((state, m))
    first, first_cpu = time.perf_counter() - t0, time.process_time() - c0
    times, cpu = [], []
    for _ in range(cfg.train_steps):
        t0, c0 = time.perf_counter(), time.process_time()
        state, m = step(state, batch, key)
        jax.block_until_ready((state, m))
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    step_s, step_cpu = statistics.median(times), statistics.median(cpu)
    return {"lora_train_tokens_per_s": cfg.batch_size * cfg.seq_len / step_s,
            "lora_step_seconds": step_s, "lora_compile_seconds": first - step_s,
            "lora_step_cpu_seconds": step_cpu, "lora_compile_cpu_seconds": first_cpu - step_cpu,
            "n_lora_params": lora.count(trainable)}


def run(cfg: BenchConfig, out: pathlib.Path) -> dict:
    t0 = time.perf_counter()
    model_cfg, params, _ = pretrained.load_model(cfg.model, preset=cfg.preset, dtype=cfg.dtype,
                                                 seed=cfg.seed)
    load_s = time.perf_counter() - t0
    outputs.write_json(out / "config.json", {"bench": cfg, "model": model_cfg})
    rss_loaded = _rss_mb(peak=False)
    train = lora_train_step(model_cfg, params, cfg)
    result = {
        "model": cfg.model if cfg.model != pretrained.SCRATCH else f"scratch/{cfg.preset}",
        "device": str(jax.devices()[0].device_kind), "platform": jax.default_backend(),
        "n_devices": jax.device_count(), "dtype": cfg.dtype, "load_seconds": load_s,
        "n_params": count_params(params), **train,
        "rss_after_load_mb": rss_loaded, "peak_rss_after_lora_mb": _rss_mb(peak=True),
        "config": cfg,
    }
    nan = float("nan")
    result["prefill_tokens_per_s"] = (nan if cfg.lora_only
                                      else prefill_tokens_per_s(model_cfg, params, cfg))
    result["decode_tokens_per_s"] = (nan if cfg.lora_only
                                     else decode_tokens_per_s(model_cfg, params, cfg))
    outputs.write_json(out / "bench.json", result)
    rows = [{"model": result["model"], "quantity": q, "tokens_per_s": result[f"{q}_tokens_per_s"],
             "batch": cfg.batch_size, "tokens_per_row": n}
            for q, n in (("prefill", cfg.prompt_len), ("decode", cfg.new_tokens),
                         ("lora_train", cfg.seq_len))]
    outputs.write_csv(out / "results.csv", pd.DataFrame(rows))
    outputs.write_text(out / "summary.md", _summary(result))
    return result


def _summary(r: dict) -> str:
    c = r["config"]
    return (f"# Throughput: {r['model']} ({r['n_params']:,} params), {r['platform']} "
            f"({r['device']}, {r['n_devices']} device(s)), {r['dtype']}\n\n"
            f"| quantity | tokens/s |\n|---|---|\n"
            f"| prefill (batch {c.batch_size} x {c.prompt_len}) | "
            f"{r['prefill_tokens_per_s']:,.0f} |\n"
            f"| decode, KV cache (batch {c.batch_size}, {c.new_tokens} new) | "
            f"{r['decode_tokens_per_s']:,.1f} |\n"
            f"| LoRA train step (batch {c.batch_size} x {c.seq_len}, rank {c.lora_rank}, "
            f"{r['n_lora_params']:,} trainable) | {r['lora_train_tokens_per_s']:,.0f} |\n\n"
            f"LoRA step: compile {r['lora_compile_seconds']:.1f} s (CPU time "
            f"{r['lora_compile_cpu_seconds']:.1f} s), step {r['lora_step_seconds']:.3f} s "
            f"(CPU time {r['lora_step_cpu_seconds']:.3f} s; medians); RSS {r['rss_after_load_mb']:,.0f} MiB "
            f"after load, peak {r['peak_rss_after_lora_mb']:,.0f} MiB after the LoRA steps.\n"
            f"Model load (cache or GGUF import): {r['load_seconds']:.1f} s.\n")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_common_args(parser, PRESETS, default_preset="quick", model_field="model")
    args = parser.parse_args(argv)
    cfg = cli.resolve_config(args, PRESETS)
    if cfg.model not in pretrained.MODELS:
        parser.error(f"--model {cfg.model!r}: choose one of {', '.join(pretrained.MODELS)}")
    r = run(cfg, args.out)
    print(_summary(r))
    return r


if __name__ == "__main__":
    main()
