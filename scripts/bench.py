"""Throughput of the default SFT model: training tokens/s (beside PyTorch), MFU, sampling tokens/s.

    python -m scripts.bench --out runs/bench [--preset quick|tiny] [--set batch_size=64 ...]

Writes --out/bench.json, results.csv and summary.md. Training is timed in `rounds` rounds of
`train_steps` steps, interleaved with a plain PyTorch eager twin of the same decoder, loss
and AdamW (dlm.experiments.torch_twin, started from the same weights) when torch is installed
(requirements-bench.txt; on CPU, float32 only): ours, torch, ours, torch ... so the load of
the machine falls on both; the ratio is ours / torch per round. MFU is the train step's model
FLOP/s (from dlm.models.decoder.flops_per_token) over the FLOP/s of a large jnp.dot in the
same dtype, measured in the same process, so it says how close training runs to what this
device delivers on a matmul (not to a datasheet peak). Sampling compares the KV-cache
generator with the no-cache reference on the same prompts. Timings are wall-clock medians.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from dlm import cli, outputs
from dlm.models.decoder import PRESETS as MODEL_PRESETS, Decoder, count_params, flops_per_token, init_params
from dlm.sample import generate, generate_nocache
from dlm.train.optim import OptimConfig, make_optimizer
from dlm.train.step import TrainState, make_train_step
from dlm.experiments.bench import median_time
from dlm.policy.sft import SFTConfig, sft_loss_fn


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
    rounds: int = 3                  # interleaved timing rounds (ours, torch, ours, torch ...)
    torch_reference: bool = True     # time the PyTorch twin too (when torch is importable)
    torch_threads: int = 0           # torch intra-op threads; 0: torch's default (physical cores)


PRESETS = {
    "quick": BenchConfig(),
    "tiny": BenchConfig(model="tiny", batch_size=4, seq_len=32, train_steps=2, prompt_len=8,
                        new_tokens=8, matmul_n=256, repeats=1, rounds=2, torch_threads=1),
    "gpu": BenchConfig(dtype="bfloat16", batch_size=64, seq_len=512, train_steps=20,
                       matmul_n=8192, repeats=5),
}


def matmul_flops_per_s(n: int, dtype: str, repeats: int) -> float:
    """FLOP/s of a jitted n x n matmul in `dtype` (2 n^3 FLOPs per product)."""
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.dtype(dtype))
    b = jax.random.normal(kb, (n, n), jnp.dtype(dtype))
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()
    return 2.0 * n ** 3 / median_time(lambda: dot(a, b).block_until_ready(), max(repeats, 3))


def _train_batch(model_cfg, cfg: BenchConfig) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(cfg.seed)
    tokens = rng.integers(0, model_cfg.vocab_size, (cfg.batch_size, cfg.seq_len)).astype(np.int32)
    return tokens, np.ones((cfg.batch_size, cfg.seq_len), np.float32)


def dlm_trainer(model_cfg, cfg: BenchConfig, params):
    """run() -> loss: one SFT train step (forward, backward, AdamW) of dlm, blocking."""
    tx = make_optimizer(OptimConfig(total_steps=cfg.rounds * cfg.train_steps + 1))
    state = [TrainState.create(params, tx)]
    step = make_train_step(sft_loss_fn(Decoder(model_cfg)), tx)
    tokens, mask = _train_batch(model_cfg, cfg)
    batch = {"tokens": jnp.asarray(tokens), "loss_mask": jnp.asarray(mask)}
    key = jax.random.key(cfg.seed)

    def run() -> float:
        state[0], m = step(state[0], batch, key)
        return float(m["loss"])
    return run


def torch_trainer(model_cfg, cfg: BenchConfig, params):
    """The same step in PyTorch eager from the same weights, or a reason why it cannot run."""
    if not cfg.torch_reference:
        return "off (torch_reference=false)"
    if importlib.util.find_spec("torch") is None:
        return "skipped: torch is not installed (pip install -r requirements-bench.txt)"
    if jax.default_backend() != "cpu" or cfg.dtype != "float32":
        return "skipped: the PyTorch reference runs on CPU in float32 only"
    import torch
    from dlm.experiments import torch_twin as torch_reference
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    model = torch_reference.TorchDecoder(model_cfg)
    torch_reference.load_dlm_params(model, params)
    step = torch_reference.make_train_step(
        model, OptimConfig(total_steps=cfg.rounds * cfg.train_steps + 1))
    tokens, mask = (torch.from_numpy(x) for x in _train_batch(model_cfg, cfg))
    return lambda: float(step(tokens.long(), mask)[0])


def train_throughput(model_cfg, cfg: BenchConfig) -> dict:
    """Tokens/s of dlm's train step and, interleaved round by round, of the PyTorch twin.

    Both start from the same weights and batch, so their first losses agree (a check that
    they compute the same thing). Each round times train_steps steps of each, ours first.
    """
    params = init_params(model_cfg, jax.random.key(cfg.seed))
    impls = {"dlm": dlm_trainer(model_cfg, cfg, params)}
    other = torch_trainer(model_cfg, cfg, params)
    torch_note = other if isinstance(other, str) else None
    if torch_note is None:
        impls["torch"] = other
    first_loss = {name: run() for name, run in impls.items()}   # compile / warm up
    rows = []
    for r in range(cfg.rounds):
        for name, run in impls.items():
            t0 = time.perf_counter()
            for _ in range(cfg.train_steps):
                run()
            rows.append({"round": r, "impl": name, "tokens_per_s": cfg.batch_size * cfg.seq_len
                         * cfg.train_steps / (time.perf_counter() - t0)})
    out = {"rows": rows, "first_loss": first_loss, "torch_note": torch_note,
           "dlm": statistics.median(x["tokens_per_s"] for x in rows if x["impl"] == "dlm")}
    if torch_note is None:
        import torch
        ratios = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(rows[::2], rows[1::2])]
        for row in rows:
            row["ratio"] = ratios[row["round"]]
        out.update(torch=statistics.median(x["tokens_per_s"] for x in rows if x["impl"] == "torch"),
                   ratios=ratios, ratio=statistics.median(ratios), torch_version=torch.__version__,
                   torch_threads=torch.get_num_threads())
    return out


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
        out[name] = cfg.batch_size * cfg.new_tokens / median_time(run, cfg.repeats)
    return out


def run(cfg: BenchConfig, out: pathlib.Path) -> dict:
    model_cfg = dataclasses.replace(MODEL_PRESETS[cfg.model], dtype=cfg.dtype,
                                    max_len=max(MODEL_PRESETS[cfg.model].max_len, cfg.seq_len,
                                                cfg.prompt_len + cfg.new_tokens),
                                    vocab_size=cfg.vocab_size or MODEL_PRESETS[cfg.model].vocab_size)
    train = train_throughput(model_cfg, cfg)
    train_tps = train["dlm"]
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
        "first_loss": train["first_loss"], "cpu_count": os.cpu_count(),
        "torch_note": train["torch_note"], "torch_tokens_per_s": train.get("torch"),
        "ratio_vs_torch": train.get("ratio"), "ratios_vs_torch": train.get("ratios"),
        "torch_version": train.get("torch_version"), "torch_threads": train.get("torch_threads"),
        "load_average": os.getloadavg(),
    }
    outputs.write_json(out / "bench.json", result)
    outputs.write_csv(out / "results.csv", pd.DataFrame(train["rows"]))
    outputs.write_text(out / "summary.md", _summary(result))
    return result


def _summary(r: dict) -> str:
    c = r["config"]
    if r["ratio_vs_torch"] is None:
        vs_torch = f"\nPyTorch reference: {r['torch_note']}\n"
    else:
        rs = r["ratios_vs_torch"]
        vs_torch = (f"| PyTorch {r['torch_version']} eager train tokens/s ({r['torch_threads']} "
                    f"threads) | {r['torch_tokens_per_s']:,.0f} |\n"
                    f"| ratio dlm / PyTorch (median of {len(rs)} interleaved rounds; min-max) | "
                    f"{r['ratio_vs_torch']:.2f} ({min(rs):.2f}-{max(rs):.2f}) |\n"
                    f"| first-step loss dlm / PyTorch (same weights) | {r['first_loss']['dlm']:.4f}"
                    f" / {r['first_loss']['torch']:.4f} |\n")
    load = ", ".join(f"{x:.1f}" for x in r["load_average"])
    table = (f"| train tokens/s (batch {c.batch_size} x {c.seq_len}) | "
             f"{r['train_tokens_per_s']:,.0f} |\n"
             + (vs_torch if r["ratio_vs_torch"] is not None else ""))
    return (f"# Benchmark: {c.model} decoder ({r['n_params']:,} params), {r['platform']} "
            f"({r['device']}, {r['n_devices']} device(s), {r['cpu_count']} CPUs, "
            f"load average {load})\n\n| quantity | value |\n|---|---|\n" + table +
            f"| model GFLOP/s | {r['model_flops_per_s'] / 1e9:,.1f} |\n"
            f"| {c.dtype} matmul GFLOP/s (n={c.matmul_n}) | {r['matmul_flops_per_s'] / 1e9:,.1f} |\n"
            f"| MFU (vs that matmul) | {r['model_flops_utilisation']:.2f} |\n"
            f"| sample tokens/s, KV cache ({c.new_tokens} new) | {r['sample_tokens_per_s_kv']:,.0f} |\n"
            f"| sample tokens/s, no cache | {r['sample_tokens_per_s_nocache']:,.0f} |\n"
            f"| KV-cache speed-up | {r['kv_speedup']:.1f}x |\n"
            + (vs_torch if r["ratio_vs_torch"] is None else ""))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_common_args(parser, PRESETS, default_preset="quick")
    args = parser.parse_args(argv)
    r = run(cli.resolve_config(args, PRESETS), args.out)
    print(_summary(r))


if __name__ == "__main__":
    main()
