"""DPO on pairs that prefer headlines containing a digit: does the share of generations
with a digit rise over the SFT policy? (models issue, acceptance: >= 15 points)

    python -m scripts.dpo_digits --preset quick --out runs/dpo_digits [--data UPWORTHY.csv.gz]
                                 [--model smollm2-135m] [--set dpo.steps=300 --set dpo.beta=0.2 ...]

The SFT policy (dlm.policy.sft, preset `sft_preset`) is trained once and cached (reused
from `sft_dir`, or $DLM_CACHE/sft-<hash> when empty). Per seed: sample `n_candidates`
headlines from it for each training lede, pair a with-digit against a without-digit
sample of the same lede, train DPO, then generate >= n_generations headlines for the
held-out ledes from SFT and from DPO with the same seed. Writes results.csv (seed x
policy), summary.md (mean ± se over seeds, the paired difference in points),
digit_share.png, samples.md, config.json and metrics.jsonl (DPO curves, by seed).
"""
from __future__ import annotations

import dataclasses
import pathlib
import shutil
import time

import jax
import numpy as np
import pandas as pd

from dlm import cli, outputs
from dlm.eval.stats import format_mean_se, format_table, mean_se, summarise
from dlm.policy import sft_cache
from dlm.policy.best_of_n import sample_pool
from dlm.policy.dpo import DPOConfig, pairs_from_pool, preference_data, train_dpo
from dlm.eval.policy_eval import (METRICS, generation_metrics, kl_to_reference, samples_markdown,
                                 policy_generations)
from sims.featurise import FEATURES, phi


@dataclasses.dataclass(frozen=True)
class DPODigitsConfig:
    sft_preset: str = "quick"         # dlm.policy.sft.PRESETS
    sft_dir: str = ""                 # "" -> the shared SFT cache for that preset and data
    model: str = ""                   # the SFT policy's model ("" -> the preset's; smollm2-135m)
    seeds: tuple[int, ...] = (0, 1, 2)
    train_prompts: int = 0            # training ledes used for pairs (0: all)
    n_candidates: int = 8             # samples per training lede
    pairs_per_prompt: int = 2
    # the DPO training (dpo.beta, dpo.lr, ...; its seed is each run's): beta 0.5 and ~1.6
    # epochs over the pairs. With the BPE quick SFT, lr 1e-4 gave only +17.5 ± 1.5 points
    # (KL to SFT 0.23 nats), lr 5e-4 +72.2 ± 1.4 (KL 8.0 nats); with the earlier byte SFT,
    # 80 steps (~9 epochs) overfit the pairs (DPO loss ~0, KL 22.8)
    dpo: DPOConfig = DPOConfig(beta=0.5, lr=5e-4, steps=30, batch_size=16, warmup_steps=3,
                               log_every=10)
    n_generations: int = 500          # per seed and policy, on the held-out ledes
    temperature: float = 1.0          # evaluation and candidate sampling
    max_new_tokens: int = 96          # tokens: ~128 bytes for byte SFTs, ~350 for BPE ones
    gen_batch_size: int = 256
    target_points: float = 15.0       # the acceptance threshold, reported in summary.md


PRESETS = {
    "tiny": DPODigitsConfig(sft_preset="tiny", train_prompts=16, n_candidates=4,
                            pairs_per_prompt=1,
                            dpo=DPOConfig(beta=0.5, lr=1e-3, steps=6, batch_size=8,
                                          warmup_steps=1, log_every=2),
                            n_generations=24, max_new_tokens=12, gen_batch_size=64),
    "quick": DPODigitsConfig(),
}
DIGIT = FEATURES.index("digit")


def has_digit(texts) -> np.ndarray:
    """The preference: 1 for a headline with a digit (marker stripped), else 0."""
    return phi(texts)[:, DIGIT].astype(np.float64)


def build(cfg: DPODigitsConfig, data: pathlib.Path | None, quiet: bool):
    """SFT policy (cached), its train/held-out ledes, and the world's true effect."""
    from sims.headlines import HeadlineWorld
    policy, sft_cfg, train, val, source = sft_cache.preset_policy(cfg.sft_preset, data, cfg.model,
                                                            cfg.sft_dir, quiet)
    ledes = list(train.contexts)
    if cfg.train_prompts:
        ledes = ledes[:cfg.train_prompts]
    return policy, sft_cfg, ledes, list(val.contexts), HeadlineWorld(train).true_effect, source


def run_seed(cfg, seed, policy, sft_cfg, train_ledes, out: pathlib.Path, quiet: bool):
    """Pairs from SFT samples, DPO; returns (DPO params, training row)."""
    gen_kw = dict(max_prompt_len=sft_cfg.max_prompt_len, batch_size=cfg.gen_batch_size)
    pool = sample_pool(policy.params, policy.model_cfg, policy.tokenizer, train_ledes,
                       cfg.n_candidates, jax.random.key(10_000 + seed), cfg.max_new_tokens,
                       cfg.temperature, **gen_kw)
    pairs = pairs_from_pool(pool, has_digit, cfg.pairs_per_prompt)
    data = preference_data(pool, pairs, policy.params, policy.model_cfg)
    dcfg = dataclasses.replace(cfg.dpo, seed=seed)
    seed_dir = out / f"dpo_seed{seed}"
    shutil.rmtree(seed_dir, ignore_errors=True)   # a rerun retrains (our own subdirectory)
    result = train_dpo(policy.params, policy.model_cfg, data, dcfg, seed_dir, quiet=quiet)
    last = result.history[-1]
    info = {"n_pairs": len(pairs), "pool_digit_share": float(has_digit(pool.flat_texts()).mean()),
            "dpo_loss": last["loss"], "dpo_reward_accuracy": last["reward_accuracy"]}
    for row in result.history:
        outputs.append_jsonl(out / "metrics.jsonl", [{"seed": seed, **row}])
    return result.state.params, info


def evaluate(cfg, seed, params, policy, sft_cfg, val_ledes, tau_fn):
    """generation_metrics (+ kl_to_ref, the drift from SFT) and the texts of one seed."""
    pool = policy_generations(params, policy.model_cfg, policy.tokenizer, val_ledes, seed,
                              cfg.n_generations, cfg.max_new_tokens, cfg.temperature,
                              sft_cfg.max_prompt_len, cfg.gen_batch_size)
    texts = pool.flat_texts()
    kl = kl_to_reference(pool, policy.params, policy.model_cfg)
    return {**generation_metrics(texts, tau_fn, (phi, FEATURES)), "kl_to_ref": kl}, texts


def paired_points(frame: pd.DataFrame) -> tuple[float, float]:
    """Mean ± se over seeds of (DPO - SFT) digit share, in percentage points."""
    wide = frame.pivot(index="seed", columns="policy", values="digit_share")
    return mean_se(100.0 * (wide["dpo"] - wide["sft"]).to_numpy())


def _summary_md(cfg, frame, source, sft_dir, seconds) -> str:
    metrics = ["digit_share", "objective", "kl_to_ref", "mean_words", "distinct_share"]
    table = format_table(summarise(frame, "policy", metrics))
    diff, se = paired_points(frame)
    verdict = "meets" if diff >= cfg.target_points else "does NOT meet"
    n_gen = int(frame["n_generations"].min())
    lines = [
        "# DPO on digit-preferring pairs", "",
        f"Data: {source}. SFT policy: preset `{cfg.sft_preset}` ({sft_dir}). "
        f"{len(cfg.seeds)} seeds; per seed and policy {n_gen} generations for held-out ledes "
        f"(temperature {cfg.temperature}).", "",
        outputs.markdown_table(table),
        f"DPO - SFT digit share: **{format_mean_se(diff, se, 1)} points** (paired by seed); "
        f"this {verdict} the >= {cfg.target_points:g}-point target.", "",
        "Per seed (pairs, pool digit share, final DPO loss / reward accuracy):", "",
        outputs.markdown_table(frame[frame["policy"] == "dpo"][
            ["seed", "n_pairs", "pool_digit_share", "dpo_loss", "dpo_reward_accuracy"]]
            .astype({"n_pairs": int})),
        f"objective = mean true effect tau of the generations under the headline world; "
        f"kl_to_ref = mean log pi(y) - log pi_sft(y) over the generations (nats; KL(pi || "
        f"SFT) at temperature 1): how far DPO moved the policy; "
        f"wall time {seconds:.0f} s. Samples: samples.md.", ""]
    return "\n".join(lines)


def _plot(frame: pd.DataFrame, path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    s = summarise(frame, "policy", ["digit_share"])
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.bar(s["policy"], 100 * s["mean"], yerr=100 * s["se"].fillna(0), capsize=4,
           color=["#999999", "#3070b0"][:len(s)])
    ax.set_ylabel("generations with a digit (%)")
    ax.set_title("SFT vs DPO (mean ± se over seeds)")
    outputs.save_figure(path, fig)


def run(cfg: DPODigitsConfig, out: pathlib.Path, data: pathlib.Path | None = None,
        quiet: bool = False) -> pd.DataFrame:
    """The whole experiment; returns results (one row per seed x policy)."""
    t0 = time.perf_counter()
    out = pathlib.Path(out)
    if (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()   # a rerun's curves replace the old ones
    policy, sft_cfg, train_ledes, val_ledes, tau_fn, source = build(cfg, data, quiet)
    outputs.write_json(out / "config.json", {"dpo_digits": cfg, "sft": sft_cfg, "data": source,
                                             "sft_dir": policy.directory,
                                             "n_train_ledes": len(train_ledes),
                                             "n_val_ledes": len(val_ledes)})
    rows, samples = [], {}
    for seed in cfg.seeds:
        dpo_params, info = run_seed(cfg, seed, policy, sft_cfg, train_ledes, out, quiet)
        for name, params in (("sft", policy.params), ("dpo", dpo_params)):
            metrics, texts = evaluate(cfg, seed, params, policy, sft_cfg, val_ledes, tau_fn)
            rows.append({"seed": seed, "policy": name, **metrics,
                         **(info if name == "dpo" else {})})
            if seed == cfg.seeds[0]:
                samples[name] = texts
        if not quiet:
            print(f"seed {seed}: digit share sft {rows[-2]['digit_share']:.3f} -> "
                  f"dpo {rows[-1]['digit_share']:.3f} ({info['n_pairs']} pairs)")
    frame = pd.DataFrame(rows)
    cols = ["seed", "policy", "n_generations", *METRICS]
    frame = frame[cols + [c for c in frame.columns if c not in cols]]
    outputs.write_csv(out / "results.csv", frame)
    per = int(frame["n_generations"].iloc[0]) // len(val_ledes)
    outputs.write_text(out / "samples.md", samples_markdown(
        "Samples (seed 0, first held-out ledes)", val_ledes, samples, per, n_ledes=5))
    summary = _summary_md(cfg, frame, source, policy.directory, time.perf_counter() - t0)
    outputs.write_text(out / "summary.md", summary)
    _plot(frame, out / "digit_share.png")
    if not quiet:
        print(summary)
    return frame


def main(argv: list[str] | None = None) -> None:
    cli.corpus_main(__doc__, PRESETS, run, argv)


if __name__ == "__main__":
    main()
