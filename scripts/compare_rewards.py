"""Every reward method on one simulated world, several seeds: the causal evaluation table.

    python -m scripts.compare_rewards --preset quick --entanglement 0.6 --out runs/compare
                                      [--data UPWORTHY.csv.gz] [--set seeds=5 --set knob=0.1,1,10]

One headline world (sims.headlines; built-in template corpus unless --data points at the
Upworthy archive) with its stories split into training and held-out stories. Per seed:
an observational log of the training stories; every method of dlm.rewards.METHODS trains
its reward (odin and invariant over the `knob` sweep) on a frozen text representation
fitted once per world; each reward is scored on the held-out stories' candidates:
  causal_corr    corr(r(X), tau(X))
  spurious_gap   r(Happy Monday! + X) - r(X) - true marker effect (signed; Monday is the
                 high-traffic day), with gap_monday / gap_friday per marker
  pair_acc       within-story pairs ordered as tau orders them (the A/B world's pairs)
  objective      mean tau of best-of-n picks from an SFT policy's candidates for held-out
                 ledes (one pool per seed, shared by all methods); also normalised
                 (0 = SFT's first sample, 1 = oracle) and the picks' marker_rate.
The SFT policy is trained once per world on a log's posted (lede, headline) pairs, so it
writes weekday markers as often as editors did.
Writes results.csv (one row per seed x method x strength), summary.md (mean ± se over
seeds), rewards.png, metrics.jsonl (reward-training curves) and config.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import time

import jax
import numpy as np
import pandas as pd

from dlm import cli, outputs
from dlm.causal.fit import EstimatorConfig
from dlm.eval import causal_metrics as cm
from dlm.eval.stats import format_table, summarise
from dlm.rewards import METHODS, MethodContext, TrainerConfig, fit_representation, train_reward

METRICS = ("causal_corr", "spurious_gap", "pair_acc", "objective", "normalised_objective",
           "marker_rate", "gap_monday", "gap_friday")
TABLE_METRICS = ("causal_corr", "spurious_gap", "pair_acc", "objective", "normalised_objective",
                 "marker_rate")


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    # the world
    entanglement: float = 0.6
    p_marker: float = 0.8
    marker_effect: float = -0.1
    k: float = 4.0
    n_stories: int = 600               # built-in corpus size (ignored with --data)
    heldout_fraction: float = 0.2      # stories held out for evaluation
    max_heldout_stories: int = 200     # candidates scored from at most this many
    n_postings: int = 20_000
    n_oracle: int = 0                  # A/B postings for the oracle (0: n_postings)
    seeds: int = 3
    first_seed: int = 0
    # the rewards
    methods: tuple[str, ...] = ()      # empty: every registered method
    knob: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)
    representation: str = "ngrams"     # ngrams | trunk (the SFT policy's states) | phi
    rep_dim: int = 64
    estimator_dims: int = 32           # deconfoundlm's text term: top principal components
    folds: int = 5
    steps: int = 600
    batch_size: int = 4096
    lr: float = 2e-2
    l2: float = 1e-4
    hidden: int = 0
    freeze_trunk: bool = True
    # the objective: best-of-n from an SFT policy
    policy_model: str = "tiny"
    sft_steps: int = 400
    sft_batch: int = 32
    sft_lr: float = 3e-3
    max_len: int = 128
    max_prompt_len: int = 64
    best_of: int = 16
    n_ledes: int = 64
    max_new_tokens: int = 48
    temperature: float = 1.0


PRESETS = {
    "tiny": CompareConfig(n_stories=60, n_postings=3000, seeds=2, knob=(1.0, 100.0), rep_dim=32,
                          estimator_dims=8, folds=2, steps=60, batch_size=1024, sft_steps=8,
                          sft_batch=8, max_len=64, max_prompt_len=32, best_of=4, n_ledes=6,
                          max_new_tokens=12, max_heldout_stories=20),
    "quick": CompareConfig(),
    "full": CompareConfig(n_postings=100_000, seeds=5, rep_dim=128, policy_model="small",
                          sft_steps=3000, sft_lr=1e-3, n_ledes=120, max_heldout_stories=600),
}


# ---- the world and the policy -----------------------------------------------------------------
def _sft_config(cfg: CompareConfig):
    from dlm.policy.sft import SFTConfig
    return SFTConfig(model=cfg.policy_model, steps=cfg.sft_steps, batch_size=cfg.sft_batch,
                     max_len=cfg.max_len, max_prompt_len=cfg.max_prompt_len, lr=cfg.sft_lr,
                     warmup_steps=max(1, cfg.sft_steps // 10), val_fraction=cfg.heldout_fraction,
                     n_stories=cfg.n_stories, seed=cfg.first_seed,
                     max_new_tokens=cfg.max_new_tokens)


def build_worlds(cfg: CompareConfig, data: pathlib.Path | None):
    """(world over the training stories, world over the held-out stories, data source)."""
    from dlm.policy.sft import load_corpus, split_corpus
    from sims.headlines import HeadlineWorld, HeadlineWorldConfig

    sft = _sft_config(cfg)
    corpus, source = load_corpus(data, sft)
    train, held = split_corpus(corpus, sft, source)
    held = held.take(np.arange(min(len(held), cfg.max_heldout_stories)))
    wcfg = HeadlineWorldConfig(entanglement=cfg.entanglement, p_marker=cfg.p_marker,
                               marker_effect=cfg.marker_effect, k=cfg.k)
    return HeadlineWorld(train, wcfg), HeadlineWorld(held, wcfg), source


def train_policy(log, cfg: CompareConfig, quiet: bool = True):
    """The SFT policy on the log's posted (lede, headline) pairs: (params, DecoderConfig, tok)."""
    from tqdm.auto import tqdm

    from dlm.data.batching import encode_sft
    from dlm.data.tokenizer import ByteTokenizer
    from dlm.models.decoder import Decoder, init_params
    from dlm.policy.sft import make_batch_for_step, model_config, sft_loss_fn
    from dlm.train.optim import OptimConfig, make_optimizer, make_schedule
    from dlm.train.step import TrainState, make_train_step

    sft, tok = _sft_config(cfg), ByteTokenizer()
    model_cfg = model_config(sft)
    tokens, mask = encode_sft(tok, [str(c) for c in log.context], [str(c) for c in log.content],
                              sft.max_len, sft.max_prompt_len)
    optim = OptimConfig(lr=sft.lr, warmup_steps=sft.warmup_steps, total_steps=sft.steps)
    tx = make_optimizer(optim)
    step = make_train_step(sft_loss_fn(Decoder(model_cfg)), tx, make_schedule(optim))
    state = TrainState.create(init_params(model_cfg, jax.random.key(sft.seed)), tx)
    batches = make_batch_for_step(tokens, mask, sft.batch_size, sft.seed)
    for s in tqdm(range(sft.steps), desc="sft policy", disable=quiet, leave=False):
        state, _ = step(state, batches(s), jax.random.key(s))
    return jax.device_get(state.params), model_cfg, tok


# ---- evaluation of one reward ---------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class HeldOut:
    """What every reward is scored on: held-out candidates, their pairs, the policy's pool."""

    texts: list
    tau: np.ndarray
    pairs: np.ndarray
    pool: object            # dlm.policy.best_of_n.Pool (or None: no objective)
    tau_fn: object
    marker_effect: float


def held_out(world_held, pool, tau_fn, marker_effect: float, seed: int) -> HeldOut:
    mask = world_held.mask_SxK
    texts = [str(t) for t in world_held.text_SxK[mask]]
    story = np.nonzero(mask)[0]
    tau = tau_fn(texts)
    pairs = cm.interventional_pairs(texts, tau, groups=story, rng=seed)
    return HeldOut(texts, tau, pairs, pool, tau_fn, marker_effect)


def reward_metrics(reward_fn, h: HeldOut) -> dict:
    """causal_corr, spurious_gap (signed Monday gap), per-marker gaps, pair_acc, objective."""
    from dlm.policy.best_of_n import pick_best
    from dlm.policy.evaluate import generation_metrics

    gaps = cm.spurious_gaps(reward_fn, h.texts, h.marker_effect)
    out = {"causal_corr": cm.causal_corr(reward_fn, h.texts, h.tau),
           "spurious_gap": gaps["Happy Monday!"], "gap_monday": gaps["Happy Monday!"],
           "gap_friday": gaps["Happy Friday!"],
           "pair_acc": cm.pair_acc(reward_fn, h.texts, h.tau, h.pairs)}
    if h.pool is not None:
        g = generation_metrics(pick_best(h.pool, reward_fn), h.tau_fn)
        out.update(objective=g["objective"], marker_rate=g["marker_rate"])
    return out


def _sft_row(h: HeldOut) -> dict:
    """The policy itself (its first sample per lede): the objective's zero point."""
    from dlm.policy.evaluate import generation_metrics

    g = generation_metrics([row[0] for row in h.pool.texts], h.tau_fn)
    return {"objective": g["objective"], "marker_rate": g["marker_rate"]}


# ---- the experiment ---------------------------------------------------------------------------
def _methods(cfg: CompareConfig) -> list[str]:
    names = list(cfg.methods) or list(METHODS)
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise SystemExit(f"--set methods: unknown {unknown}; registered: {', '.join(METHODS)}")
    return names


def run(cfg: CompareConfig, data: pathlib.Path | None = None, progress: bool = True,
        history: list | None = None) -> tuple[pd.DataFrame, dict]:
    """All seeds x methods; returns (results frame, timings and sizes)."""
    from tqdm.auto import tqdm

    from dlm.policy.best_of_n import sample_pool
    from sims.headlines import MARKER_PREFIXES

    t0, info = time.perf_counter(), {}
    names = _methods(cfg)
    world, world_held, info["data"] = build_worlds(cfg, data)
    seeds = list(range(cfg.first_seed, cfg.first_seed + cfg.seeds))
    policy = train_policy(world.sample(jax.random.key(10**6 + cfg.first_seed), cfg.n_postings).log,
                          cfg, quiet=not progress)
    info["sft_s"] = time.perf_counter() - t0
    universe = [m + t for row in world.candidates for t in row for m in MARKER_PREFIXES]
    rep = fit_representation(cfg.representation, universe, dim=cfg.rep_dim, seed=cfg.first_seed,
                             trunk=policy)
    info["representation_s"] = time.perf_counter() - t0 - info["sft_s"]
    tcfg = TrainerConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, l2=cfg.l2,
                         hidden=cfg.hidden, freeze_trunk=cfg.freeze_trunk)
    est = EstimatorConfig(folds=cfg.folds)
    ledes = list(world_held.corpus.contexts[:cfg.n_ledes])
    c_ref = world.reference_condition()
    rows, history = [], [] if history is None else history
    bar = tqdm(total=len(seeds) * len(names), desc="seeds x methods", disable=not progress)
    for seed in seeds:
        sample = world.sample(jax.random.key(seed), cfg.n_postings)
        pool = sample_pool(*policy, ledes, cfg.best_of, jax.random.key(seed), cfg.max_new_tokens,
                           cfg.temperature, max_prompt_len=cfg.max_prompt_len)
        h = held_out(world_held, pool, world.true_effect, cfg.marker_effect, seed)
        base = {"seed": seed, "entanglement": cfg.entanglement}
        rows.append({**base, "method": "sft", "strength": np.nan, **_sft_row(h)})
        ctx = MethodContext(sample.log, rep, world=world, seed=seed, estimator=est,
                            estimator_dims=cfg.estimator_dims, n_oracle=cfg.n_oracle or None,
                            c_ref=c_ref)
        for name in names:
            method = METHODS[name]
            t = time.perf_counter()
            targets = method.target_fn(ctx)
            curve = []
            rewards = train_reward(name, targets, rep, tcfg, cfg.knob if method.knob else None,
                                   seed=seed, c_ref=c_ref, trunk=policy, history=curve)
            history += [{"seed": seed, **r} for r in curve]
            for r in rewards:
                rows.append({**base, "method": name,
                             "strength": np.nan if r.strength is None else r.strength,
                             **reward_metrics(r, h), "seconds": time.perf_counter() - t})
            bar.update(1)
    bar.close()
    frame = pd.DataFrame(rows)
    frame = frame.reindex(columns=["seed", "entanglement", "method", "strength", *METRICS,
                                   "seconds"])
    frame["normalised_objective"] = _normalised(frame)
    info["total_s"] = time.perf_counter() - t0
    info["n_heldout_texts"], info["n_pairs"] = len(h.texts), len(h.pairs)
    info["representation"] = f"{cfg.representation} (dim {rep.dim})"
    return frame, info


def _normalised(frame: pd.DataFrame) -> pd.Series:
    """(objective - sft) / (oracle - sft), per seed; nan without an oracle row."""
    out = pd.Series(np.nan, index=frame.index)
    for seed, sub in frame.groupby("seed"):
        sft = sub.loc[sub.method == "sft", "objective"]
        ora = sub.loc[sub.method == "oracle", "objective"]
        if len(sft) and len(ora):
            out[sub.index] = cm.normalised_objective(sub.objective.to_numpy(), sft.iloc[0],
                                                     ora.iloc[0])
    return out


# ---- reporting --------------------------------------------------------------------------------
def labelled(frame: pd.DataFrame) -> pd.DataFrame:
    """A `label` column: the method, with its strength where it has one ("odin λ=10")."""
    lab = [m if np.isnan(s) else f"{m} λ={s:g}" for m, s in zip(frame.method, frame.strength)]
    return frame.assign(label=lab)


def summary_text(frame: pd.DataFrame, cfg: CompareConfig, info: dict) -> str:
    table = format_table(summarise(labelled(frame), "label", TABLE_METRICS))
    return (f"# Reward methods on the headline world\n\n"
            f"Entanglement {cfg.entanglement}, p_marker {cfg.p_marker}, marker effect "
            f"{cfg.marker_effect}, k {cfg.k}; {cfg.seeds} seeds x {cfg.n_postings:,} postings; "
            f"data: {info['data']}. Representation {info['representation']} (frozen, fitted once "
            f"on the training stories' texts), linear head, {cfg.steps} steps. Held-out: "
            f"{info['n_heldout_texts']} candidates of unseen stories, {info['n_pairs']} "
            f"within-story pairs; objective = mean true tau of best-of-{cfg.best_of} picks for "
            f"{cfg.n_ledes} held-out ledes (sft = the policy's first sample). Mean ± se over "
            f"seeds.\n\n" + outputs.markdown_table(table) +
            "\nspurious_gap: the signed Monday-marker gap r(Happy Monday! + X) - r(X) minus the "
            "marker's true effect (0 is right; Monday is the high-traffic day); per-marker gaps "
            "are in results.csv. odin and invariant are shown over their whole strength sweep "
            f"(λ), not at a value tuned on ground truth.\n\nWall time: {info['total_s']:.0f} s "
            f"(SFT policy {info['sft_s']:.0f} s).\n")


def plot(frame: pd.DataFrame, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lab = labelled(frame)
    shown = ("causal_corr", "spurious_gap", "pair_acc", "normalised_objective")
    summ = summarise(lab, "label", shown)
    labels = list(dict.fromkeys(lab.label))
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 0.32 * len(labels) + 1.5),
                             sharey=True)
    for ax, metric in zip(axes, shown):
        s = summ[summ.metric == metric].set_index("label").reindex(labels)
        y = np.arange(len(labels))
        ax.barh(y, s["mean"].fillna(0), xerr=s["se"].fillna(0), color="tab:blue", alpha=0.8,
                capsize=2)
        ax.axvline(0, color="0.3", lw=0.8)
        ax.set_title(metric)
        ax.set_yticks(y, labels)
    axes[0].invert_yaxis()
    fig.suptitle("Reward methods: mean ± se over seeds")
    outputs.save_figure(path, fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    cli.add_common_args(parser, PRESETS)
    parser.add_argument("--entanglement", type=float, default=None,
                        help="entanglement of the confounders with causal text features")
    parser.add_argument("--data", type=pathlib.Path, default=None,
                        help="Upworthy CSV(.gz) whose stories the world uses "
                             "(default: built-in corpus)")
    args = parser.parse_args(argv)
    cfg = cli.resolve_config(args, PRESETS)
    if args.entanglement is not None:
        cfg = dataclasses.replace(cfg, entanglement=args.entanglement)
    history: list = []
    frame, info = run(cfg, args.data, progress=sys.stderr.isatty(), history=history)
    text = summary_text(frame, cfg, info)
    outputs.write_csv(args.out / "results.csv", frame)
    outputs.write_text(args.out / "summary.md", text)
    outputs.write_json(args.out / "config.json", {"preset": args.preset, "data": args.data,
                                                  "config": cfg, "info": info})
    (args.out / "metrics.jsonl").unlink(missing_ok=True)
    outputs.append_jsonl(args.out / "metrics.jsonl", history)
    plot(frame, args.out / "rewards.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
