"""scripts.iv_table's pipeline: the three estimators of an endogenous confounder's effect
(dlm.causal.iv) over instrument strength, on the popularity world (sims.headlines).

For each promotion strength pi, `seeds` replicate logs of n_postings; on each, P's effect
by ignoring P, adjusting for it as exogenous, and the control function. Reported: the
first-stage F, each estimate's bias against the world's popularity_effect, its interval
and whether the interval covers the truth. Seeds are replicate logs; each strength reuses
the same seeds' draws, so rows of the table share their sampling noise.
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
from dlm.eval.stats import format_mean_se, mean_se
from sims.headlines import HeadlineWorld, HeadlineWorldConfig


@dataclasses.dataclass(frozen=True)
class IVTableConfig:
    strengths: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.85)  # F ~ 2 .. 100
    n_postings: int = 2000
    n_stories: int = 60
    seeds: int = 3
    bootstrap: int = 50              # control-function interval: resamples, both stages refitted
    cluster: bool = True             # resample stories (and cluster the exogenous sandwich):
                                     # a story's rows share its text and misfit, so row
                                     # resampling gave intervals ~1.5x too narrow
    popularity_effect: float = 0.2
    popularity_u: float = 1.0        # endogeneity: P per sd of the shock it shares with clicks
    interval: float = 0.9
    seed: int = 0

    def __post_init__(self):
        if not self.strengths or self.n_postings < 50 or self.seeds < 1 or self.bootstrap < 0:
            raise ValueError("need strengths, n_postings >= 50, seeds >= 1 and bootstrap >= 0; "
                             f"got {len(self.strengths)} strengths, n_postings={self.n_postings}, "
                             f"seeds={self.seeds}, bootstrap={self.bootstrap}")


PRESETS = {
    "tiny": IVTableConfig(strengths=(0.2, 1.0), n_postings=600, n_stories=30, seeds=1, bootstrap=5),
    "quick": IVTableConfig(),
}


def run_iv_table(cfg: IVTableConfig) -> pd.DataFrame:
    """One row per (strength, seed, estimator): F, effect, bias, lo, hi, covers."""
    corpus = builtin_corpus(n_stories=cfg.n_stories, seed=cfg.seed)
    est_cfg = EstimatorConfig(interval=cfg.interval)
    rows = []
    for pi in cfg.strengths:
        world = HeadlineWorld(corpus, HeadlineWorldConfig(
            popularity=True, promotion_strength=pi, popularity_effect=cfg.popularity_effect,
            popularity_u=cfg.popularity_u))
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
                rows.append({"strength": pi, "seed": r, "first_stage_F": F,
                             "estimator": e.estimator, "effect": e.effect,
                             "bias": e.effect - cfg.popularity_effect, "lo": e.lo, "hi": e.hi,
                             "interval": e.interval,
                             "covers": bool(e.lo <= cfg.popularity_effect <= e.hi)})
    return pd.DataFrame(rows)


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per strength and estimator: mean F, bias mean ± se over seeds, the mean interval
    (as bias), coverage."""
    out = []
    for (pi, name), sub in results.groupby(["strength", "estimator"], sort=False):
        truth = sub["effect"].iloc[0] - sub["bias"].iloc[0]
        lo, hi = (sub["lo"] - truth).mean(), (sub["hi"] - truth).mean()
        out.append({"strength": pi, "first-stage F": round(float(sub["first_stage_F"].mean()), 1),
                    "estimator": name, "bias": format_mean_se(*mean_se(sub["bias"]), 3),
                    "interval (bias)": "-" if np.isnan(lo) else f"[{lo:+.3f}, {hi:+.3f}]",
                    "covers": f"{int(sub['covers'].sum())}/{len(sub)}"})
    return pd.DataFrame(out)
