"""Every reward method on one simulated world, several seeds: the causal evaluation table
(the pipeline of scripts.compare_rewards; scripts.replicate_simulation runs it per world).

One headline world (sims.headlines; built-in template corpus unless `data` points at the
Upworthy archive) with its stories split into training and held-out stories. Per seed: an
observational log of the training stories; every method of dlm.rewards.METHODS trains its
reward (odin and invariant over the `knob` sweep) on a frozen text representation fitted
once per world; each reward is scored on the held-out stories' candidates
(dlm.eval.reward_eval: causal_corr, spurious_gap, pair_acc, the best-of-n objective from
an SFT policy's pools). The config nests the world (`world: HeadlineWorldConfig`), the
reward trainer (`reward: TrainerConfig`) and deconfoundlm's estimator
(`estimator: EstimatorConfig`): every world field reaches the world.
"""
from __future__ import annotations

import dataclasses
import pathlib
import time

import jax
import numpy as np
import pandas as pd

from dlm import outputs
from dlm.causal.fit import EstimatorConfig
from dlm.eval import causal_metrics as cm
from dlm.eval.reward_eval import held_out, reward_metrics, sft_row
from dlm.eval.stats import format_table, summarise
from dlm.representations import fit_representation
from dlm.rewards import (METHODS, MethodContext, TrainerConfig, observational_methods,
                         train_reward_seeds)
from dlm.data.markers import MARKER_PREFIXES
from sims.headlines import HeadlineWorld, HeadlineWorldConfig

METRICS = ("causal_corr", "spurious_gap", "pair_acc", "objective", "normalised_objective",
           "marker_rate", "gap_monday", "gap_friday", "val_loss")
TABLE_METRICS = ("causal_corr", "spurious_gap", "pair_acc", "objective", "normalised_objective",
                 "marker_rate")


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    # the world: every field of sims.headlines (--set world.confounder_strength=2)
    world: HeadlineWorldConfig = HeadlineWorldConfig()
    n_stories: int = 600               # built-in corpus size (ignored with --data)
    heldout_fraction: float = 0.2      # stories held out for evaluation
    max_heldout_stories: int = 200     # candidates scored from at most this many
    n_postings: int = 20_000
    n_oracle: int = 0                  # A/B postings for the oracle (0: n_postings)
    seeds: int = 3
    first_seed: int = 0
    tune_seeds: int = 0                # extra seeds (tune_first_seed..) for the strength
    tune_first_seed: int = 100         # methods only: ground-truth tuning, never reported
    n_val: int = 0                     # randomised A/B postings per seed for val_loss (0: none)
    # the rewards: reward.steps, reward.lr, ... (dlm.rewards.TrainerConfig)
    reward: TrainerConfig = TrainerConfig(batch_size=4096)
    estimator: EstimatorConfig = EstimatorConfig()   # deconfoundlm's g (estimator.folds, ...)
    methods: tuple[str, ...] = ()      # empty: every observational method
    knob: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)
    representation: str = "ngram-svd:64"  # the reward heads' dlm.representations spec (trunk:
                                          # the SFT policy's states; phi; llm:NAME)
    estimator_text: str = "ngram:256"  # deconfoundlm's text term h(X): its own spec
    # the objective: best-of-n from an SFT policy
    policy_model: str = "tiny"
    sft_tokenizer: str = "byte"        # or "bpe" (trained on the posted log's training split):
    sft_bpe_vocab: int = 4096          # a marker is then a few tokens, learned in few steps
    sft_steps: int = 400
    sft_batch: int = 32
    sft_lr: float = 3e-3
    max_len: int = 128
    max_prompt_len: int = 64
    best_of: int = 16
    n_ledes: int = 64
    max_new_tokens: int = 48
    temperature: float = 1.0

    def __post_init__(self):   # --set methods=... fails at once, naming the registered ones
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"methods: unknown {unknown}; registered: {', '.join(METHODS)}")


PRESETS = {
    "tiny": CompareConfig(n_stories=60, n_postings=3000, seeds=2, knob=(1.0, 100.0),
                          representation="ngram-svd:32", estimator=EstimatorConfig(folds=2),
                          reward=TrainerConfig(steps=60, batch_size=1024), sft_steps=8,
                          sft_batch=8, max_len=64, max_prompt_len=32, best_of=4, n_ledes=6,
                          max_new_tokens=12, max_heldout_stories=20),
    "quick": CompareConfig(),
    "full": CompareConfig(n_postings=100_000, seeds=5, representation="ngram-svd:128",
                          policy_model="small", sft_steps=3000, sft_lr=1e-3, n_ledes=120,
                          max_heldout_stories=600),
}


# ---- the world and the policy -----------------------------------------------------------------
def _sft_config(cfg: CompareConfig):
    from dlm.policy.sft import SFTConfig
    return SFTConfig(model=cfg.policy_model, tokenizer=cfg.sft_tokenizer,
                     bpe_vocab=cfg.sft_bpe_vocab, steps=cfg.sft_steps, batch_size=cfg.sft_batch,
                     max_len=cfg.max_len, max_prompt_len=cfg.max_prompt_len, lr=cfg.sft_lr,
                     warmup_steps=max(1, cfg.sft_steps // 10), val_fraction=cfg.heldout_fraction,
                     n_stories=cfg.n_stories, seed=cfg.first_seed,
                     max_new_tokens=cfg.max_new_tokens)


def build_worlds(cfg: CompareConfig, data: pathlib.Path | None):
    """(world over the training stories, world over the held-out stories, data source)."""
    from dlm.policy.sft_corpus import load_corpus, split_corpus

    sft = _sft_config(cfg)
    corpus, source = load_corpus(data, sft)
    train, held = split_corpus(corpus, sft, source)
    held = held.take(np.arange(min(len(held), cfg.max_heldout_stories)))
    return HeadlineWorld(train, cfg.world), HeadlineWorld(held, cfg.world), source


def posted_corpus(log, corpus):
    """The log's posted (lede, headline) pairs as stories of `corpus` (log.group indexes
    them), one headline entry per posting, repeats kept: SFT on it writes each variant, and
    weekday markers, as often as the editors posted them."""
    story = np.asarray(log.group)
    ids = np.unique(story)
    content = np.asarray(log.content).astype(str)
    heads = tuple(tuple(content[story == s]) for s in ids)
    return dataclasses.replace(corpus.take(ids), headlines=heads)


def train_policy(log, world, cfg: CompareConfig, label: str, quiet: bool = True):
    """The SFT policy on the log's posted pairs (dlm.policy.sft_cache.sft_policy: cached under
    $DLM_CACHE by config and corpus): (params, DecoderConfig, tokenizer)."""
    from dlm.policy.sft_cache import sft_policy

    sft = dataclasses.replace(_sft_config(cfg), val_fraction=0.1, max_val_pairs=128,
                              ckpt_every=cfg.sft_steps, n_samples=4)
    policy = sft_policy(sft, quiet=quiet, corpus=(posted_corpus(log, world.corpus), label))
    return policy.params, policy.model_cfg, policy.tokenizer


# ---- the experiment ---------------------------------------------------------------------------
def _methods(cfg: CompareConfig) -> list[str]:
    return list(cfg.methods) or observational_methods()   # checked by CompareConfig itself


@dataclasses.dataclass(eq=False)
class Shared:
    """What worlds over one corpus can share: the SFT policy, the frozen representation and
    the policy's best-of-n pools (one per seed, filled by `run`).

    Built by `prepare` for one config; `run` accepts it for any config that differs only in
    fields outside POLICY_FIELDS (the world, the reward training), so several worlds reuse
    one SFT run and score the same candidate pools.
    """

    cfg: CompareConfig
    policy: tuple                      # (params, DecoderConfig, tokenizer)
    rep: object
    sft_s: float
    representation_s: float
    posted_marker_rate: float = float("nan")   # share of the SFT log's headlines with a marker
    pools: dict = dataclasses.field(default_factory=dict)   # seed -> Pool

    def check(self, cfg: CompareConfig) -> None:
        diff = [f for f in POLICY_FIELDS if getattr(cfg, f) != getattr(self.cfg, f)]
        if diff:
            raise ValueError(f"shared policy/pools were prepared for other {diff}")

    def pool(self, seed: int, ledes: list[str]):
        """The policy's best-of-n pool for `seed` (sampled once, then reused)."""
        from dlm.policy.best_of_n import sample_pool

        if seed not in self.pools:
            c = self.cfg
            self.pools[seed] = sample_pool(*self.policy, ledes, c.best_of, jax.random.key(seed),
                                           c.max_new_tokens, c.temperature,
                                           max_prompt_len=c.max_prompt_len)
        return self.pools[seed]


# Fields the SFT policy, the representation or the pools depend on (the corpus split too).
POLICY_FIELDS = ("n_stories", "heldout_fraction", "max_heldout_stories", "first_seed",
                 "representation", "policy_model", "sft_tokenizer", "sft_bpe_vocab",
                 "sft_steps", "sft_batch", "sft_lr",
                 "max_len", "max_prompt_len", "best_of", "n_ledes", "max_new_tokens",
                 "temperature")


def prepare(cfg: CompareConfig, data: pathlib.Path | None = None, progress: bool = True
            ) -> Shared:
    """Train the SFT policy on a log of cfg's world and fit the representation on the
    training stories' candidates (with every marker)."""
    t0 = time.perf_counter()
    world, _, source = build_worlds(cfg, data)
    key = 10**6 + cfg.first_seed
    label = (f"posted log ({cfg.n_postings} postings, key {key}) of the world over {source}, "
             f"entanglement {cfg.world.entanglement:g}, p_marker {cfg.world.p_marker:g}")
    log = world.sample(jax.random.key(key), cfg.n_postings).log
    policy = train_policy(log, world, cfg, label, quiet=not progress)
    sft_s = time.perf_counter() - t0
    universe = [m + t for row in world.candidates for t in row for m in MARKER_PREFIXES]
    rep = fit_representation(cfg.representation, universe, seed=cfg.first_seed, trunk=policy)
    return Shared(cfg, policy, rep, sft_s, time.perf_counter() - t0 - sft_s,
                  cm.marker_rate(log.content)["any"])


def run(cfg: CompareConfig, data: pathlib.Path | None = None, progress: bool = True,
        history: list | None = None, shared: Shared | None = None
        ) -> tuple[pd.DataFrame, dict]:
    """All seeds x methods; returns (results frame, timings and sizes). `shared` (from
    `prepare`) skips the SFT policy and representation (their seconds are then 0)."""
    from tqdm.auto import tqdm

    t0, info = time.perf_counter(), {}
    names = _methods(cfg)
    if shared is None:
        shared = prepare(cfg, data, progress)
        info["sft_s"], info["representation_s"] = shared.sft_s, shared.representation_s
    else:
        shared.check(cfg)
        info["sft_s"] = info["representation_s"] = 0.0
    world, world_held, info["data"] = build_worlds(cfg, data)
    seeds = list(range(cfg.first_seed, cfg.first_seed + cfg.seeds))
    tune = list(range(cfg.tune_first_seed, cfg.tune_first_seed + cfg.tune_seeds))
    if set(tune) & set(seeds):
        raise ValueError(f"tuning seeds {tune} overlap the reported seeds {seeds}")
    rep, policy = shared.rep, shared.policy
    tcfg, est = cfg.reward, cfg.estimator
    ledes = list(world_held.corpus.contexts[:cfg.n_ledes])
    c_ref = world.reference_condition()
    rows, history = [], [] if history is None else history
    info["pool_s"] = 0.0
    bar = tqdm(total=len(seeds) + len(tune) + len(names), desc="seeds, then methods",
               disable=not progress)
    ctxs, helds, bases = [], [], []
    for seed in seeds + tune:
        sample = world.sample(jax.random.key(seed), cfg.n_postings)
        t = time.perf_counter()
        pool = shared.pool(seed, ledes)
        info["pool_s"] += time.perf_counter() - t
        # the user's validation sample: its own key, never the oracle's A/B log
        val = (world.intervene(jax.random.fold_in(jax.random.key(seed), 0x7A1), cfg.n_val, c_ref)
               .log if cfg.n_val else None)
        helds.append(held_out(world_held, pool, world.true_effect, cfg.world.marker_effect, seed,
                              val))
        bases.append({"seed": seed, "entanglement": cfg.world.entanglement,
                      "p_marker": cfg.world.p_marker,
                      "split": "tune" if seed in tune else "report"})
        if seed in seeds:
            rows.append({**bases[-1], "method": "sft", "strength": np.nan,
                         **sft_row(helds[-1])})
        ctxs.append(MethodContext(sample.log, rep, world=world, seed=seed, estimator=est,
                                  estimator_text=cfg.estimator_text,
                                  n_oracle=cfg.n_oracle or None, c_ref=c_ref))
        bar.update(1)
    # one method at a time over all seeds: train_reward_seeds shares one compile among the
    # seeds (vmapped on GPU/TPU, one after another on CPU, where that is faster); tuning
    # seeds serve the methods with a strength only
    for name in names:
        method = METHODS[name]
        t = time.perf_counter()
        n_seeds = len(seeds) + (len(tune) if method.knob else 0)
        targets = [method.target_fn(ctx) for ctx in ctxs[:n_seeds]]
        curve = []
        per_seed = train_reward_seeds(name, targets, rep, tcfg,
                                      cfg.knob if method.knob else None,
                                      seeds=(seeds + tune)[:n_seeds],
                                      c_ref=c_ref, trunk=policy, history=curve)
        history += curve
        seconds = (time.perf_counter() - t) / n_seeds
        for base, h, rewards in zip(bases, helds, per_seed):
            for r in rewards:
                rows.append({**base, "method": name,
                             "strength": np.nan if r.strength is None else r.strength,
                             **reward_metrics(r, h), "seconds": seconds})
        bar.update(1)
    h = helds[-1]
    bar.close()
    frame = pd.DataFrame(rows)
    frame = frame.reindex(columns=["seed", "entanglement", "p_marker", "method", "strength",
                                   *METRICS, "seconds", "split"])
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
    frame = frame[frame.split.fillna("report") != "tune"] if "split" in frame else frame
    table = format_table(summarise(labelled(frame), "label", TABLE_METRICS))
    return (f"# Reward methods on the headline world\n\n"
            f"Entanglement {cfg.world.entanglement}, p_marker {cfg.world.p_marker}, marker effect "
            f"{cfg.world.marker_effect}, k {cfg.world.k}, confounder strength "
            f"{cfg.world.confounder_strength}; {cfg.seeds} seeds x {cfg.n_postings:,} postings; "
            f"data: {info['data']}. Representation {info['representation']} (frozen, fitted once "
            f"on the training stories' texts), linear head, {cfg.reward.steps} steps. Held-out: "
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


def write_outputs(out: pathlib.Path, frame: pd.DataFrame, text: str, config: dict,
                  history: list) -> None:
    """results.csv, summary.md, config.json (`config`: preset, data, config, info) and
    metrics.jsonl (this run's curves only)."""
    outputs.write_csv(out / "results.csv", frame)
    outputs.write_text(out / "summary.md", text)
    outputs.write_json(out / "config.json", config)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    outputs.append_jsonl(out / "metrics.jsonl", history)
