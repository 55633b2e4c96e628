"""scripts.iv_table's pipeline: the three estimators of an endogenous confounder's effect
(dlm.causal.iv) over instrument strength, on the popularity world (sims.headlines).

For each promotion strength pi, `seeds` replicate logs of n_postings; on each, P's effect
by ignoring P, adjusting for it as exogenous, and the control function. Reported: the
first-stage F, each estimate's bias against the world's popularity_effect, its interval
and whether the interval covers the truth. Seeds are replicate logs; each strength reuses
the same seeds' draws, so rows of the table share their sampling noise.

The reward each estimator implies. A headline changes clicks directly (tau) and through P
(P rises with the text: popularity_tau * tau + lambda . phi, lambda = popularity_text), so
the reward a headline writer wants is the TOTAL effect on the click logit,
world.true_total_effect. Every reward is linear in phi, r(X) = phi(X) . w:
  ignored           w = the text coefficients of the fit without P. P is a mediator, not
                    a confounder, so leaving it out leaves its path in the text term: the
                    total effect, if nothing else is wrong (its P effect of 0 is wrong);
  exogenous         w = the direct text coefficients of the fit with P: the analyst
                    subtracts P's term as a confounder's, removing the real text effect
                    that runs through P (and, P carrying the shared shock, biasing the rest);
  control_function  w = the second stage's direct text coefficients + beta_P_hat * the
                    first stage's text coefficients of P: the direct path plus P's.
Each is scored on every candidate headline of the world's stories (bare, no marker):
causal_corr with the total effect, and objective = best_pick_objective (the mean total
effect of each story's top-scored candidate); reference columns: the oracle's objective
(picks by the total effect) and a uniformly random pick's (its expectation). With
popularity_text unset P's text part is proportional to tau, every w nearly so, and
causal_corr cannot tell the estimators apart; the presets set lambda = 2 on "emotive"
(emotional headlines are shared more than clicked: a path into P other than tau) so
that P's path over the candidates, popularity_effect * sd(lambda . phi) = 0.23, is about
as large as the direct one, sd(tau) = 0.24 (60 stories). Chosen by that rule before any
estimator was run, not tuned on the table.
"""
from __future__ import annotations

import dataclasses
import warnings

import jax
import numpy as np
import pandas as pd

from dlm.causal import iv
from dlm.causal.fit import EstimatorConfig
from dlm.data.builtin_corpus import builtin_corpus
from dlm.eval.causal_metrics import best_pick_objective, causal_corr, pick_references
from dlm.eval.stats import format_mean_se, mean_se
from sims.featurise import BASE_FEATURES, phi
from sims.headlines import HeadlineWorld, HeadlineWorldConfig


@dataclasses.dataclass(frozen=True)
class IVTableConfig:
    # F ~ 2 .. 100 with popularity_text on (without it 0.05 .. 0.85 spanned that: P's text
    # part loosens the first stage's week prior, set on P's sd, and its clustered F drops)
    strengths: tuple[float, ...] = (0.1, 0.15, 0.3, 0.45, 0.6, 0.85, 1.2)
    n_postings: int = 2000
    n_stories: int = 60
    seeds: int = 3
    bootstrap: int = 50              # control-function interval: resamples, both stages refitted
    cluster: bool = True             # resample stories (and cluster the exogenous sandwich):
                                     # a story's rows share its text and misfit, so row
                                     # resampling gave intervals ~1.5x too narrow
    popularity_effect: float = 0.2
    popularity_u: float = 1.0        # endogeneity: P per sd of the shock it shares with clicks
    # lambda, P's text loading over BASE_FEATURES (digit, question, second_person, length,
    # emotive, this) besides tau: see the module docstring; all zeros: none
    popularity_text: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 2.0, 0.0)
    interval: float = 0.9
    seed: int = 0

    def __post_init__(self):
        if not self.strengths or self.n_postings < 50 or self.seeds < 1 or self.bootstrap < 0:
            raise ValueError("need strengths, n_postings >= 50, seeds >= 1 and bootstrap >= 0; "
                             f"got {len(self.strengths)} strengths, n_postings={self.n_postings}, "
                             f"seeds={self.seeds}, bootstrap={self.bootstrap}")
        if len(self.popularity_text) != len(BASE_FEATURES) or not np.isfinite(
                np.asarray(self.popularity_text, np.float64)).all():
            raise ValueError(f"popularity_text needs {len(BASE_FEATURES)} finite weights "
                             f"{BASE_FEATURES}, got {self.popularity_text}")


PRESETS = {
    "tiny": IVTableConfig(strengths=(0.2, 1.0), n_postings=600, n_stories=30, seeds=1, bootstrap=5),
    "quick": IVTableConfig(),
}


def run_iv_table(cfg: IVTableConfig) -> pd.DataFrame:
    """One row per (strength, seed, estimator): F, effect, bias, lo, hi, covers, and the
    implied reward's causal_corr and objective (with the oracle's and a random pick's)."""
    corpus = builtin_corpus(n_stories=cfg.n_stories, seed=cfg.seed)
    est_cfg = EstimatorConfig(interval=cfg.interval)
    lam = cfg.popularity_text if any(cfg.popularity_text) else None
    rows = []
    for pi in cfg.strengths:
        world = HeadlineWorld(corpus, HeadlineWorldConfig(
            popularity=True, promotion_strength=pi, popularity_effect=cfg.popularity_effect,
            popularity_u=cfg.popularity_u, popularity_text=lam))
        texts = [t for cands in world.candidates for t in cands]
        story = np.repeat(np.arange(len(world.candidates)), [len(c) for c in world.candidates])
        phi_E, total_E = phi(texts).astype(np.float64), world.true_total_effect(texts)
        refs = pick_references(total_E, story)
        keys = jax.random.split(jax.random.PRNGKey(cfg.seed), cfg.seeds)
        samples = world.sample_many(keys, cfg.n_postings)
        for r in range(cfg.seeds):
            s = samples[r]
            with warnings.catch_warnings():      # the table reports F; no warning per cell
                warnings.simplefilter("ignore", iv.WeakInstrumentWarning)
                out = iv.estimate_endogenous(
                    s.log.successes, s.log.trials, s.phi, s.log.confounders,
                    endogenous="popularity", instrument="promotion", cfg=est_cfg,
                    bootstrap=cfg.bootstrap, seed=cfg.seed + r,
                    groups=s.log.group if cfg.cluster else None)
            F = out["control_function"].first_stage_F
            for e in out.values():
                reward = phi_E @ implied_text_effect(e)
                rows.append({"strength": pi, "seed": r, "first_stage_F": F,
                             "estimator": e.estimator, "effect": e.effect,
                             "bias": e.effect - cfg.popularity_effect, "lo": e.lo, "hi": e.hi,
                             "interval": e.interval,
                             "covers": bool(e.lo <= cfg.popularity_effect <= e.hi),
                             "causal_corr": causal_corr(lambda _, v=reward: v, texts, total_E),
                             "objective": best_pick_objective(reward, total_E, story),
                             **refs})
    return pd.DataFrame(rows)


def implied_text_effect(e: iv.EndogenousEffect) -> np.ndarray:
    """The text's effect [F] per phi unit that estimate e implies (module docstring)."""
    if e.estimator == "control_function":
        return e.text_coef + e.effect * e.first_stage_text_coef
    return e.text_coef


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per strength and estimator: mean F, bias mean ± se over seeds, the mean interval
    (as bias), coverage, the implied reward's causal_corr and objective (mean ± se); then
    the reference rows: the oracle's objective and a random pick's."""
    out = []
    for (pi, name), sub in results.groupby(["strength", "estimator"], sort=False):
        truth = sub["effect"].iloc[0] - sub["bias"].iloc[0]
        lo, hi = (sub["lo"] - truth).mean(), (sub["hi"] - truth).mean()
        out.append({"strength": pi, "first-stage F": round(float(sub["first_stage_F"].mean()), 1),
                    "estimator": name, "bias": format_mean_se(*mean_se(sub["bias"]), 3),
                    "interval (bias)": "-" if np.isnan(lo) else f"[{lo:+.3f}, {hi:+.3f}]",
                    "covers": f"{int(sub['covers'].sum())}/{len(sub)}",
                    "causal_corr": format_mean_se(*mean_se(sub["causal_corr"]), 3),
                    "objective": format_mean_se(*mean_se(sub["objective"]), 3)})
    for name, col in (("oracle (picks by the total effect)", "objective_oracle"),
                      ("random pick (expected)", "objective_random")):
        out.append({"strength": "-", "first-stage F": "-", "estimator": name, "bias": "-",
                    "interval (bias)": "-", "covers": "-",
                    "causal_corr": "1.000" if col == "objective_oracle" else "-",
                    "objective": f"{results[col].mean():.3f}"})
    return pd.DataFrame(out)
