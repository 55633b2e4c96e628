"""scripts.data_efficiency's pipeline: how many interventional postings the experimental
reward needs, alone and mixed with the deconfounded observational one (issue 15 item 2,
the simulation curve).

Per entanglement and seed: an observational log of `n_obs` postings gives the
deconfoundlm reward r_B = phi(X) . w_B (the estimator's text term, fitted jointly with
g(C)); for each n in `n_interventional`, world.intervene(n) (headline random, C fixed)
gives the experimental reward r_U = phi(X) . w_U (the same estimator, no confounder) and
its coefficient covariance. The hybrid's weight is dlm.causal.hybrid.estimate_weight on
the evaluation texts' within-story contrasts: r_U's contrasts, their variance from w_U's
covariance (Var_U), r_B's (one prediction: its Bias^2 holds Var_B); the hybrid is
w* r_U + (1 - w*) r_B. Reported: causal_corr of each reward with the true tau on every
candidate headline of `n_eval_stories` stories, bare and with each weekday marker (posted
or not: both rewards are linear in phi, nothing is memorised), and w*, Bias^2 and Var_U. The truth never forms the weight.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pandas as pd

from dlm.causal import hybrid
from dlm.causal.fit import EstimatorConfig, fit
from dlm.data.builtin_corpus import builtin_corpus
from dlm.data.markers import MARKER_PREFIXES
from dlm.eval.causal_metrics import causal_corr
from sims.featurise import phi
from sims.headlines import HeadlineWorld, HeadlineWorldConfig

REWARDS = ("experimental", "deconfoundlm", "hybrid")


@dataclasses.dataclass(frozen=True)
class DataEfficiencyConfig:
    n_interventional: tuple[int, ...] = (100, 300, 1000, 3000, 10000)
    entanglements: tuple[float, ...] = (0.0, 0.9)
    n_obs: int = 20000
    n_stories: int = 300
    n_eval_stories: int = 100       # every candidate of the last stories is scored
    seeds: int = 3
    seed: int = 0

    def __post_init__(self):
        if (not self.n_interventional or min(self.n_interventional) < 20 or self.seeds < 1
                or not 0 < self.n_eval_stories < self.n_stories):
            raise ValueError("need n_interventional >= 20, seeds >= 1 and "
                             "0 < n_eval_stories < n_stories")


PRESETS = {
    "tiny": DataEfficiencyConfig(n_interventional=(100, 2000), entanglements=(0.9,),
                                 n_obs=3000, n_stories=60, n_eval_stories=20, seeds=1),
    "quick": DataEfficiencyConfig(),
}


def _text_fit(log, phi_NxF, confounders):
    """(w [F], Cov(w) [F, F]) of the estimator's text term, in phi's units."""
    f = fit(log.successes, log.trials, phi_NxF, confounders, EstimatorConfig(),
            source=log.source)
    g = f.spec.g_offset
    scale = f.y_scale / f.text_sd
    return f.text_coef, f.cov[1:g, 1:g] * np.outer(scale, scale)


def run_data_efficiency(cfg: DataEfficiencyConfig) -> pd.DataFrame:
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
        phi_E = phi(texts).astype(np.float64)
        tau_E = world.true_effect(texts)
        c_phi = hybrid.contrasts(phi_E.T, *hybrid.group_codes(story, len(story))).T
        for seed in range(cfg.seed, cfg.seed + cfg.seeds):
            k_obs, k_int = jax.random.split(jax.random.PRNGKey(seed))
            obs = world.sample(k_obs, cfg.n_obs)
            w_B, _ = _text_fit(obs.log, obs.phi, obs.log.confounders)
            r_B = phi_E @ w_B
            for n in cfg.n_interventional:
                exp = world.intervene(jax.random.fold_in(k_int, n), n)
                w_U, cov_U = _text_fit(exp.log, exp.phi, {})
                r_U = phi_E @ w_U
                # Var_U of each text's contrast from w_U's covariance (the contrasts of one
                # story share w_U's error, so contrast_variance's independent-arm formula
                # does not apply): estimate_weight with var_U = 0 gives the mean squared
                # discrepancy, and _weight takes Var_U out of it
                var_U = float(np.einsum("nf,fg,ng->n", c_phi, cov_U, c_phi).mean())
                d2 = hybrid.estimate_weight(r_B, r_U, story, 0.0).bias2
                w = _weight(d2, var_U)
                scores = {"experimental": r_U, "deconfoundlm": r_B,
                          "hybrid": hybrid.combine(r_B, r_U, w)}
                for name, r in scores.items():
                    rows.append({"entanglement": ent, "seed": seed, "n_interventional": n,
                                 "reward": name, "causal_corr": causal_corr(lambda _, r=r: r, texts, tau_E),
                                 "w": w, "bias2": max(d2 - var_U, 0.0), "var_U": var_U})
    return pd.DataFrame(rows)


def _weight(d2: float, var_U: float) -> float:
    """w* from the mean squared discrepancy d2 = Bias^2 + Var_B + Var_U of the contrasts and
    the experimental reward's own Var_U."""
    mse_B = max(d2 - var_U, 0.0)
    total = mse_B + var_U
    return mse_B / total if total > 0 else 0.5


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """causal_corr mean ± se over seeds per entanglement x n x reward, and the mean w*."""
    from dlm.eval.stats import format_mean_se, mean_se

    out = []
    for (ent, n, name), g in results.groupby(["entanglement", "n_interventional", "reward"],
                                             sort=True):
        out.append({"entanglement": ent, "n_interventional": n, "reward": name,
                    "causal_corr": format_mean_se(*mean_se(g.causal_corr)),
                    "w*": f"{g.w.mean():.3f}"})
    return pd.DataFrame(out)
