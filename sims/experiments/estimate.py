"""The pipeline of scripts.estimate: recover the confounders' effects from simulated
observational logs, with known truth. Per seed a log of the headline world (sims.headlines;
built-in template corpus unless `data` names the Upworthy archive); deconfoundlm (g with a
cross-fitted linear text term, `estimator_text`: a dlm.representations spec, default phi(X),
the world's features) and partial_out (g on the confounders alone).
The config nests the world (`world`) and the estimator (`estimator`)."""
from __future__ import annotations

import dataclasses
import pathlib

import pandas as pd

from dlm.causal.crossfit import deconfound, partial_out
from dlm.causal.fit import EstimatorConfig
from dlm.experiments.estimate import COLUMNS, rows
from dlm.representations import text_term
from sims.experiments.worlds import build_world
from sims.headlines import HeadlineWorldConfig


@dataclasses.dataclass(frozen=True)
class EstimateConfig:
    n_postings: int = 20_000
    seeds: int = 5
    first_seed: int = 0
    world: HeadlineWorldConfig = HeadlineWorldConfig()   # world.entanglement, world.p_marker, ...
    n_stories: int = 600              # built-in corpus size (ignored with --data)
    estimator: EstimatorConfig = EstimatorConfig()      # estimator.method (map | svi | nuts),
                                                        # estimator.folds, .covariance, .interval
    estimator_text: str = "phi"       # deconfoundlm's text term: a dlm.representations spec


PRESETS = {
    "tiny": EstimateConfig(n_postings=4_000, seeds=2, n_stories=200),
    "quick": EstimateConfig(),
    "coverage": EstimateConfig(seeds=20),
    "full": EstimateConfig(n_postings=100_000, seeds=20),
}


def run(cfg: EstimateConfig, data: pathlib.Path | None = None, progress: bool = True) -> pd.DataFrame:
    """Every seed's log of the world, both methods: tidy rows (dlm.experiments.estimate)."""
    import jax
    from tqdm import tqdm

    world = build_world(cfg.world, cfg.n_stories, data)
    truth = world.truth()
    est_cfg = cfg.estimator
    seeds = range(cfg.first_seed, cfg.first_seed + cfg.seeds)
    samples = world.sample_many(jnp_keys(jax, seeds), cfg.n_postings)
    out = []
    for r, seed in enumerate(tqdm(seeds, desc="seeds", disable=not progress)):
        s = samples[r]
        est = dataclasses.replace(est_cfg, seed=seed)
        text = text_term(cfg.estimator_text, s.log.content, seed=seed)   # phi: = s.phi
        out += rows(seed, "deconfoundlm", deconfound(s.log, text, est), truth, s.tau)
        out += rows(seed, "partial_out", partial_out(s.log, est), truth, s.tau)
    return pd.DataFrame(out, columns=COLUMNS)


def jnp_keys(jax, seeds) -> "jax.Array":
    return jax.numpy.stack([jax.random.PRNGKey(s) for s in seeds])
