"""scripts.data_efficiency's pipeline: how many interventional postings the experimental
reward needs, alone and mixed with an observational one (issue 15 item 2, the
simulation curve).

Every reward comes from the reward registry (dlm.rewards.METHODS) on one backend, a ridge
on the world's true features (LinearBackend(phi)), so the rewards differ only in their
targets:
  experimental_ctr  the experiment alone: within-group centred logit CTR;
  naive             the observational log's raw logit CTR;
  deconfoundlm      the observational outcome minus the cross-fitted g(C) of the measured
                    confounders (text term h(X) = phi);
  hybrid_naive, hybrid
                    naive / deconfoundlm mixed with experimental_ctr by the w* that
                    dlm.rewards.fit.fit_hybrid cross-fits over the experiment's groups.
Per entanglement and world seed (the unit of replication) one observational log of
`n_obs` postings; its methods' Targets are computed once and reused for every n. Per n
in `n_interventional`, world.intervene(n) postings: the reference condition C fixed,
headline uniform over the story's candidates, marker a coin.

Groups of the experiment: every posting shares one condition and its headline is drawn
independently, so any partition of the postings is a valid randomisation unit; consecutive
blocks of `block` postings are the groups. experimental_ctr's within-group centring then
keeps (block - 1) / block of the information, and the hybrid's 5-fold cross-fitting has
n / block groups (n >= 5 * block). Their labels ("exp0", ...) are strings, so they never
match the observational log's story codes: the two samples share no row and fit_hybrid
need not hold any observational row out.

The unmeasured confounder (`unmeasured`, default week): those columns are dropped from
the observational log before its methods see it. Without one, deconfoundlm with the true
feature map is unbiased and already ~0.999 correlated with tau, so an experiment has
nothing to add. The week is the one dropped because it stands for slow drift (audience
mix, editorial policy, platform changes) that real archives rarely record, and it is one
of the two inputs of z(C) (audience up, week down) that steer the headline choice, so at
entanglement > 0 the entangled features (question, second_person) are confounded with
g(C) through it; weekday (and the markers it drives) and audience stay measured. Chosen
from the world's structure before any reward was run, not tuned on the results. At
entanglement 0 the headline does not depend on C, so the observational rewards stay
nearly unbiased (naive not: the weekday markers; and a story's week is fixed, so the
stories' slight drift in headline style over the weeks leaves deconfoundlm ~0.994) and
the hybrid should match the better input; at 0.9 they are biased and the hybrid should
approach experimental_ctr with n.

Metrics per reward on every candidate headline of the last `n_eval_stories` stories, bare
and with each weekday marker (both score linearly in phi, nothing is memorised):
causal_corr with the true tau, and objective = best_pick_objective (mean true tau of each
story's top-scored text), with the oracle's (picks by tau) and a random pick's as
references; for the hybrids their weight w*, Bias^2, Var_B, Var_U. The truth never forms
a weight.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pandas as pd

import sims.featurise  # noqa: F401  (registers the "phi" representation)
from dlm.data.builtin_corpus import builtin_corpus
from dlm.data.markers import MARKER_PREFIXES
from dlm.eval.causal_metrics import best_pick_objective, causal_corr, pick_references
from dlm.eval.stats import format_mean_se, mean_se
from dlm.representations import fit_representation
from dlm.rewards import METHODS, MethodContext, fit_scorer
from dlm.rewards.linear import LinearBackend
from dlm.rewards.methods import hybrid_parts
from sims.headlines import HeadlineWorld, HeadlineWorldConfig

OBSERVATIONAL = ("naive", "deconfoundlm")
EXPERIMENTAL = "experimental_ctr"
HYBRIDS = {"hybrid_naive": "naive", "hybrid": "deconfoundlm"}   # hybrid -> its observational part
REWARDS = (EXPERIMENTAL, *OBSERVATIONAL, *HYBRIDS)
FOLDS = 5                       # fit_hybrid's cross-fitting folds (over the experiment's groups)


@dataclasses.dataclass(frozen=True)
class DataEfficiencyConfig:
    n_interventional: tuple[int, ...] = (100, 300, 1000, 3000, 10000)
    entanglements: tuple[float, ...] = (0.0, 0.9)
    n_obs: int = 20000
    n_stories: int = 300
    n_eval_stories: int = 100       # every candidate of the last stories is scored
    unmeasured: tuple[str, ...] = ("week",)   # confounders the observational log lacks
    block: int = 5                  # experimental postings per randomised group
    # every reward's representation (dlm.representations spec): the world's own features
    # by default; a learnt one ("ngram-svd:64", fitted on the training stories' candidate
    # texts, no outcomes) must find the effect in more dimensions and needs more data
    representation: str = "phi"
    seeds: int = 10                 # world seeds, the unit of replication
    seed: int = 0

    def __post_init__(self):
        if self.block < 2 or self.seeds < 1 or not 0 < self.n_eval_stories < self.n_stories:
            raise ValueError("need block >= 2, seeds >= 1 and 0 < n_eval_stories < n_stories")
        if not self.n_interventional or min(self.n_interventional) < FOLDS * self.block:
            raise ValueError(f"need n_interventional >= {FOLDS * self.block} ({FOLDS} folds of "
                             f"groups of block={self.block} postings); got {self.n_interventional}")
        if not self.entanglements:
            raise ValueError("need at least one entanglement")


PRESETS = {
    "tiny": DataEfficiencyConfig(n_interventional=(100, 2000), entanglements=(0.9,),
                                 n_obs=3000, n_stories=60, n_eval_stories=20, seeds=2),
    "quick": DataEfficiencyConfig(),
}


def experiment_log(sample, block: int):
    """world.intervene's log with `group` = consecutive blocks of `block` postings (a last
    short block joins the one before, so every group has 2+ arms), labelled "exp<k>"."""
    n = len(sample.log)
    n_groups = max(n // block, 1)
    codes = np.minimum(np.arange(n) // block, n_groups - 1).astype(np.int32)
    return dataclasses.replace(sample.log, group=codes, source="HeadlineWorld.intervene",
                               group_labels=tuple(f"exp{k}" for k in range(n_groups)))


def observed_log(log, unmeasured: tuple[str, ...]):
    """The observational log without the unmeasured confounder columns."""
    missing = sorted(set(unmeasured) - set(log.confounders))
    if missing:
        raise ValueError(f"unmeasured confounders {missing} are not in the log; it has "
                         f"{', '.join(log.confounders)}")
    return dataclasses.replace(log, confounders={k: c for k, c in log.confounders.items()
                                                 if k not in unmeasured})


def run_data_efficiency(cfg: DataEfficiencyConfig) -> pd.DataFrame:
    """One row per entanglement x seed x n_interventional x reward (module docstring)."""
    corpus = builtin_corpus(cfg.n_stories, seed=1)
    rows = []
    for ent in cfg.entanglements:
        world = HeadlineWorld(corpus, HeadlineWorldConfig(entanglement=ent))
        ev_story = np.arange(cfg.n_stories - cfg.n_eval_stories, cfg.n_stories)
        # every candidate, bare and with each weekday marker (their true effect is the
        # world's marker_effect: a reward that reads the marker as the weekday's is off)
        texts = [m + t for s in ev_story for m in MARKER_PREFIXES for t in world.candidates[s]]
        story = np.concatenate([[s] * len(MARKER_PREFIXES) * len(world.candidates[s])
                                for s in ev_story])
        tau = world.true_effect(texts)
        refs = pick_references(tau, story)
        fit_texts = [m + t for s in range(cfg.n_stories - cfg.n_eval_stories)
                     for m in MARKER_PREFIXES for t in world.candidates[s]]
        backend = LinearBackend(fit_representation(cfg.representation, fit_texts, seed=cfg.seed))
        for seed in range(cfg.seed, cfg.seed + cfg.seeds):
            k_obs, k_int = jax.random.split(jax.random.PRNGKey(seed))
            ctx = MethodContext(observed_log(world.sample(k_obs, cfg.n_obs).log, cfg.unmeasured),
                                estimator_text="phi", seed=seed)
            obs_t = {m: METHODS[m].target_fn(ctx) for m in OBSERVATIONAL}     # once per seed
            fixed = {m: fit_scorer(m, t, backend)(texts) for m, t in obs_t.items()}
            for n in cfg.n_interventional:
                exp = experiment_log(world.intervene(jax.random.fold_in(k_int, n), n), cfg.block)
                exp_t = METHODS[EXPERIMENTAL].target_fn(dataclasses.replace(ctx, experiment=exp))
                scores = dict(fixed, **{EXPERIMENTAL: fit_scorer(EXPERIMENTAL, exp_t, backend)(texts)})
                weights = {}
                for name, part in HYBRIDS.items():
                    scorer = fit_scorer(name, hybrid_parts(obs_t[part], exp_t), backend)
                    scores[name], weights[name] = scorer(texts), scorer.weight
                for name in REWARDS:
                    h = weights.get(name)
                    rows.append({"entanglement": ent, "seed": seed, "n_interventional": n,
                                 "reward": name,
                                 "causal_corr": causal_corr(lambda _, r=scores[name]: r, texts, tau),
                                 "objective": best_pick_objective(scores[name], tau, story), **refs,
                                 **{k: np.nan if h is None else getattr(h, k)
                                    for k in ("w", "bias2", "var_B", "var_U")}})
    return pd.DataFrame(rows)


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per entanglement x n x reward: causal_corr, objective and (hybrids) w*, each mean ± se
    over world seeds; then per entanglement the oracle's and a random pick's objective."""
    out = []
    for (ent, n, name), g in results.groupby(["entanglement", "n_interventional", "reward"],
                                             sort=False):
        out.append({"entanglement": ent, "n_interventional": n, "reward": name,
                    "causal_corr": format_mean_se(*mean_se(g.causal_corr), 3),
                    "objective": format_mean_se(*mean_se(g.objective), 3),
                    "w*": "-" if g.w.isna().all() else format_mean_se(*mean_se(g.w), 2)})
    for ent, g in results.groupby("entanglement", sort=False):
        for name, col in (("oracle (picks by tau)", "objective_oracle"),
                          ("random pick (expected)", "objective_random")):
            out.append({"entanglement": ent, "n_interventional": "-", "reward": name,
                        "causal_corr": "1.000" if col == "objective_oracle" else "-",
                        "objective": f"{g[col].mean():.3f}", "w*": "-"})
    return pd.DataFrame(out)


STYLE = {EXPERIMENTAL: ("C3", "-"), "naive": ("C7", ":"), "deconfoundlm": ("C0", ":"),
         "hybrid_naive": ("C2", "--"), "hybrid": ("C1", "-")}


def curve_figure(results: pd.DataFrame):
    """The paper figure: rows causal_corr and objective, one column per entanglement, x the
    interventional postings (log), a line per reward with its ± se band over world seeds;
    the observational rewards do not use the experiment (flat); the oracle's objective dashed."""
    from dlm.report import pyplot

    plt = pyplot()
    ents = sorted(results.entanglement.unique())
    fig, axes = plt.subplots(2, len(ents), figsize=(4.2 * len(ents), 6.4), sharex=True,
                             sharey="row", squeeze=False)
    for j, ent in enumerate(ents):
        sub = results[results.entanglement == ent]
        for i, metric in enumerate(("causal_corr", "objective")):
            ax = axes[i, j]
            for name in REWARDS:
                stats = sub[sub.reward == name].groupby("n_interventional")[metric].apply(
                    lambda v: pd.Series(mean_se(v), index=("mean", "se"))).unstack()
                color, ls = STYLE[name]
                ax.plot(stats.index, stats["mean"], ls, color=color, marker="o", ms=3, label=name)
                ax.fill_between(stats.index, stats["mean"] - stats.se.fillna(0),
                                stats["mean"] + stats.se.fillna(0), color=color, alpha=0.2, lw=0)
            if metric == "objective":
                ax.axhline(sub.objective_oracle.mean(), color="k", ls="--", lw=0.8, label="oracle")
            ax.set_xscale("log")
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(f"entanglement {ent:g}")
            if i == 1:
                ax.set_xlabel("interventional postings")
            if j == 0:
                ax.set_ylabel({"causal_corr": "causal_corr (reward vs true tau)",
                               "objective": "objective (mean tau of best pick)"}[metric])
    axes[1, -1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
