"""The full reward model (trunk from the SFT policy, nothing frozen) trained on the headline
world's interventional outcomes: does r(X) track the true effect tau(X) on held-out
headlines? (models issue, acceptance: corr(r, tau) >= 0.8)

    python -m scripts.train_oracle_reward --preset quick --out runs/oracle_reward
                                          [--data UPWORTHY.csv.gz] [--set steps=800 ...]

Stories are split as SFT splits them: the A/B world do(C = c_ref) (sims.headlines,
`intervene`) runs on the training stories; the held-out headlines are every candidate
of the validation stories, never seen by SFT or the reward. The reward is the "oracle"
method of dlm.rewards trained with freeze_trunk=False. For scale, a linear regression
of the same targets on the world's own features phi(X) (the best any reward could learn
from this data, up to noise) is scored the same way. Writes results.csv, summary.md,
config.json and metrics.jsonl.
"""
from __future__ import annotations

import dataclasses
import pathlib
import time

import jax
import numpy as np
import pandas as pd

from dlm import cli, outputs
from dlm.eval.causal_metrics import causal_corr, interventional_pairs, pair_acc, spurious_gap
from dlm.eval.stats import format_table, summarise
from dlm.policy import sft_cache
from dlm.rewards import TrainerConfig
from sims.featurise import phi


@dataclasses.dataclass(frozen=True)
class OracleRewardConfig:
    sft_preset: str = "quick"         # the trunk: this SFT policy (dlm.policy.sft, cached)
    sft_dir: str = ""                 # "" -> the shared SFT cache for that preset and data
    model: str = ""                   # the trunk's model ("" -> the preset's; smollm2-135m)
    seeds: tuple[int, ...] = (0,)
    n_postings: int = 20_000          # A/B postings the reward is trained on
    marker_rate: float = 0.5          # share of A/B postings carrying a weekday marker
    # the reward training (reward.steps, reward.lr, ...): the whole model, nothing frozen;
    # max_len 144 bytes + BOS/EOS: the longest marked built-in candidates fit
    reward: TrainerConfig = TrainerConfig(steps=400, batch_size=32, lr=3e-4, warmup_steps=20,
                                          freeze_trunk=False, max_len=144, clip_norm=1.0,
                                          log_every=20)
    target_corr: float = 0.8          # the acceptance threshold, reported in summary.md


PRESETS = {
    "tiny": OracleRewardConfig(sft_preset="tiny", n_postings=400,
                               reward=TrainerConfig(steps=6, batch_size=8, lr=3e-4,
                                                    warmup_steps=1, freeze_trunk=False,
                                                    max_len=96, clip_norm=1.0, log_every=2)),
    "quick": OracleRewardConfig(),
}


def build(cfg: OracleRewardConfig, data: pathlib.Path | None, quiet: bool):
    """The SFT policy (trunk) and the A/B world on training stories / held-out stories."""
    from sims.headlines import HeadlineWorld
    policy, _, train, val, source = sft_cache.preset_policy(cfg.sft_preset, data, cfg.model,
                                                      cfg.sft_dir, quiet)
    return policy, HeadlineWorld(train), HeadlineWorld(val), source


def phi_linear(targets) -> callable:
    """Weighted least squares of the targets on phi(X): a reward that knows the features."""
    X = np.column_stack([np.ones(len(targets.content)), phi(list(targets.content))])
    w = np.sqrt(np.asarray(targets.weight, np.float64))
    coef = np.linalg.lstsq(X * w[:, None], np.asarray(targets.target) * w, rcond=None)[0]
    return lambda texts: np.column_stack([np.ones(len(texts)), phi(list(texts))]) @ coef


def score(name, reward_fn, world_val, seed) -> dict:
    """causal_corr, within-story pair accuracy and spurious gap on the held-out candidates."""
    texts = [t for cands in world_val.candidates for t in cands]
    story = np.repeat(np.arange(len(world_val.candidates)), [len(c) for c in world_val.candidates])
    pairs = interventional_pairs(texts, world_val.true_effect, groups=story)
    return {"seed": seed, "reward": name, "n_heldout": len(texts),
            "causal_corr": causal_corr(reward_fn, texts, world_val.true_effect),
            "pair_acc": pair_acc(reward_fn, texts, world_val.true_effect, pairs),
            "spurious_gap": spurious_gap(reward_fn, texts, world_val.cfg.marker_effect)}


def run(cfg: OracleRewardConfig, out: pathlib.Path, data: pathlib.Path | None = None,
        quiet: bool = False) -> pd.DataFrame:
    from dlm.rewards import log_targets, train_reward
    out = pathlib.Path(out)
    if (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()   # a rerun's curves replace the old ones
    policy, world_tr, world_va, source = build(cfg, data, quiet)
    outputs.write_json(out / "config.json", {"oracle_reward": cfg, "data": source,
                                             "sft_dir": policy.directory,
                                             "n_train_stories": len(world_tr.candidates),
                                             "n_val_stories": len(world_va.candidates)})
    tcfg = cfg.reward
    rows = []
    for seed in cfg.seeds:
        ab = world_tr.intervene(jax.random.key(seed), cfg.n_postings, marker_rate=cfg.marker_rate)
        targets = log_targets(ab.log)
        history: list[dict] = []
        t0 = time.perf_counter()
        reward = train_reward("oracle", targets, cfg=tcfg, seed=seed, history=history,
                              trunk=(policy.params, policy.model_cfg, policy.tokenizer))[0]
        seconds = time.perf_counter() - t0
        outputs.append_jsonl(out / "metrics.jsonl", [{"seed": seed, **h} for h in history])
        rows.append({**score("reward model (full fine-tune)", reward, world_va, seed),
                     "train_seconds": seconds,
                     "train_corr": causal_corr(reward, ab.log.content[:2000], ab.tau[:2000])})
        rows.append(score("linear on phi (reference)", phi_linear(targets), world_va, seed))
        if not quiet:
            print(f"seed {seed}: held-out corr(r, tau) = {rows[-2]['causal_corr']:.3f} "
                  f"(linear on phi: {rows[-1]['causal_corr']:.3f}), {seconds:.0f} s")
    frame = pd.DataFrame(rows)
    outputs.write_csv(out / "results.csv", frame)
    outputs.write_text(out / "summary.md", _summary_md(cfg, frame, source, policy.directory))
    if not quiet:
        print((out / "summary.md").read_text())
    return frame


def _summary_md(cfg, frame, source, sft_dir) -> str:
    table = format_table(summarise(frame, "reward", ["causal_corr", "pair_acc", "spurious_gap"]))
    full = frame[frame["reward"].str.startswith("reward model")]["causal_corr"]
    verdict = "meets" if full.mean() >= cfg.target_corr else "does NOT meet"
    return "\n".join([
        "# Oracle reward model on interventional outcomes", "",
        f"Data: {source}; trunk: SFT preset `{cfg.sft_preset}` ({sft_dir}), nothing frozen. "
        f"{cfg.n_postings} A/B postings (do(C = c_ref)) on the training stories, "
        f"{cfg.reward.steps} steps x {cfg.reward.batch_size}; held-out: every candidate headline "
        f"of the validation stories ({int(frame['n_heldout'].iloc[0])} texts); {len(cfg.seeds)} seed(s).",
        "", outputs.markdown_table(table),
        f"Held-out corr(r(X), tau(X)) of the full reward model: {full.mean():.3f}; this "
        f"{verdict} the >= {cfg.target_corr} target. spurious_gap: mean |r(marker + X) - r(X)"
        f" - true marker effect| (0 is right).", ""])


def main(argv: list[str] | None = None) -> None:
    cli.corpus_main(__doc__, PRESETS, run, argv)


if __name__ == "__main__":
    main()
