"""Throughput of the default SFT model: training tokens/s, MFU, and sampling tokens/s.

    python -m scripts.bench --out runs/bench [--preset quick|tiny] [--set batch_size=64 ...]

Writes --out/bench.json and summary.md. MFU is the train step's model FLOP/s (from
dlm.models.decoder.flops_per_token) over the FLOP/s of a large jnp.dot in the same dtype,
measured in the same process, so it says how close training runs to what this device
delivers on a matmul (not to a datasheet peak). Sampling compares the KV-cache generator
with the no-cache reference on the same prompts. Timings are wall-clock medians.
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

from dlm import cli, outputs
from dlm.models.decoder import PRESETS as MODEL_PRESETS, Decoder, count_params, flops_per_token, init_params
from dlm.sample import generate, generate_nocache
from dlm.train.optim import OptimConfig, make_optimizer
from dlm.train.step import TrainState, make_train_step
from scripts.train_sft import SFTConfig, sft_loss_fn


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    model: str = SFTConfig().model   # the default SFT model
    vocab_size: int = 0              # 0: the preset's (bytes); 4096: the quick SFT's BPE
    dtype: str = "float32"
    batch_size: int = 32
    seq_len: int = 128
    train_steps: int = 8             # timed steps (after one compile step)
    prompt_len: int = 64
    new_tokens: int = 64
    matmul_n: int = 2048             # the reference jnp.dot is n x n @ n x n
    repeats: int = 2                 # timed repeats for sampling (median; matmul: >= 3)
    seed: int = 0


PRESETS = {
    "quick": BenchConfig(),
    "tiny": BenchConfig(model="tiny", batch_size=4, seq_len=32, train_steps=2, prompt_len=8,
                        new_tokens=8, matmul_n=256, repeats=1),
    "gpu": BenchConfig(dtype="bfloat16", batch_size=64, seq_len=512, train_steps=20,
                       matmul_n=8192, repeats=5),
}


def _median_time(fn, repeats: int) -> float:
    """Median wall-clock seconds of fn() (which must block until its result is ready)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_flops_per_s(n: int, dtype: str, repeats: int) -> float:
    """FLOP/s of a jitted n x n matmul in `dtype` (2 n^3 FLOPs per product)."""
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.dtype(dtype))
    b = jax.random.normal(kb, (n, n), jnp.dtype(dtype))
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()
    return 2.0 * n ** 3 / _median_time(lambda: dot(a, b).block_until_ready(), max(repeats, 3))


def train_tokens_per_s(model_cfg, cfg: BenchConfig) -> float:
    """Tokens/s of the SFT train step (forward, backward, AdamW) on random tokens."""
    tx = make_optimizer(OptimConfig(total_steps=cfg.train_steps + 1))
    state = TrainState.create(init_params(model_cfg, jax.random.key(cfg.seed)), tx)
    step = make_train_step(sft_loss_fn(Decoder(model_cfg)), tx)
    rng = np.random.default_rng(cfg.seed)
    batch = {"tokens": jnp.asarray(rng.integers(0, model_cfg.vocab_size, (cfg.batch_size, cfg.seq_len)),
                                   jnp.int32),
             "loss_mask": jnp.ones((cfg.batch_size, cfg.seq_len), jnp.float32)}
    key = jax.random.key(cfg.seed)
    state, m = step(state, batch, key)                     # compile
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(cfg.train_steps):
        state, m = step(state, batch, key)
    jax.block_until_ready((state, m))
    return cfg.batch_size * cfg.seq_len * cfg.train_steps / (time.perf_counter() - t0)


def sample_tokens_per_s(model_cfg, cfg: BenchConfig) -> dict[str, float]:
    """New tokens/s of generate (KV cache) and generate_nocache for a batch of prompts."""
    params = init_params(model_cfg, jax.random.key(cfg.seed))
    rng = np.random.default_rng(cfg.seed)
    prompts = jnp.asarray(rng.integers(0, model_cfg.vocab_size, (cfg.batch_size, cfg.prompt_len)),
                          jnp.int32)
    mask = jnp.ones(prompts.shape, bool)
    out = {}
    for name, fn in (("kv", generate), ("nocache", generate_nocache)):
        run = lambda: jax.block_until_ready(fn(  # noqa: E731
            params, model_cfg, prompts, mask, jax.random.key(1), cfg.new_tokens, temperature=0.7))
        run()                                              # compile
        out[name] = cfg.batch_size * cfg.new_tokens / _median_time(run, cfg.repeats)
    return out


def run(cfg: BenchConfig, out: pathlib.Path) -> dict:
    model_cfg = dataclasses.replace(MODEL_PRESETS[cfg.model], dtype=cfg.dtype,
                                    max_len=max(MODEL_PRESETS[cfg.model].max_len, cfg.seq_len,
                                                cfg.prompt_len + cfg.new_tokens),
                                    vocab_size=cfg.vocab_size or MODEL_PRESETS[cfg.model].vocab_size)
    train_tps = train_tokens_per_s(model_cfg, cfg)
    model_flops = flops_per_token(model_cfg, cfg.seq_len) * train_tps
    peak = matmul_flops_per_s(cfg.matmul_n, cfg.dtype, cfg.repeats)
    sample = sample_tokens_per_s(model_cfg, cfg)
    result = {
        "device": str(jax.devices()[0].device_kind), "platform": jax.default_backend(),
        "n_devices": jax.device_count(), "config": cfg, "model": model_cfg,
        "n_params": count_params(init_params(model_cfg, jax.random.key(0))),
        "train_tokens_per_s": train_tps, "model_flops_per_s": model_flops,
        "matmul_flops_per_s": peak, "model_flops_utilisation": model_flops / peak,
        "sample_tokens_per_s_kv": sample["kv"], "sample_tokens_per_s_nocache": sample["nocache"],
        "kv_speedup": sample["kv"] / sample["nocache"],
    }
    outputs.write_json(out / "bench.json", result)
    outputs.write_text(out / "summary.md", _summary(result))
    return result


def _summary(r: dict) -> str:
    c = r["config"]
    return (f"# Benchmark: {c.model} decoder ({r['n_params']:,} params), {r['platform']} "
            f"({r['device']}, {r['n_devices']} device(s))\n\n| quantity | value |\n|---|---|\n"
            f"| train tokens/s (batch {c.batch_size} x {c.seq_len}) | {r['train_tokens_per_s']:,.0f} |\n"
            f"| model GFLOP/s | {r['model_flops_per_s'] / 1e9:,.1f} |\n"
            f"| {c.dtype} matmul GFLOP/s (n={c.matmul_n}) | {r['matmul_flops_per_s'] / 1e9:,.1f} |\n"
            f"| MFU (vs that matmul) | {r['model_flops_utilisation']:.2f} |\n"
            f"| sample tokens/s, KV cache ({c.new_tokens} new) | {r['sample_tokens_per_s_kv']:,.0f} |\n"
            f"| sample tokens/s, no cache | {r['sample_tokens_per_s_nocache']:,.0f} |\n"
            f"| KV-cache speed-up | {r['kv_speedup']:.1f}x |\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_common_args(parser, PRESETS, default_preset="quick")
    args = parser.parse_args(argv)
    r = run(cli.resolve_config(args, PRESETS), args.out)
    print(_summary(r))


if __name__ == "__main__":
    main()
