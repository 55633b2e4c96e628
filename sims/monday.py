"""The built-in world's arms for the Monday experiment (dlm.realdata.monday), for runs
without the Upworthy archive: the headline world plays the archive's A/B tests."""
from __future__ import annotations

import jax

from dlm.data.builtin_corpus import builtin_corpus
from dlm.data.log import ObservationalLog
from dlm.realdata.pairs import headline_arms
from sims.headlines import HeadlineWorld, HeadlineWorldConfig


def builtin_arms(n_stories: int, postings_per_arm: int = 3, seed: int = 0,
                 world_cfg=None) -> ObservationalLog:
    """A/B arms of the built-in template corpus: the headline world's interventional
    postings (reference conditions, headline uniform, no marker) summed per (story,
    headline), so each arm's CTR is the world's simulated 'real CTR' of that headline."""
    world = HeadlineWorld(builtin_corpus(n_stories=n_stories, seed=seed),
                          world_cfg or HeadlineWorldConfig())
    n = postings_per_arm * int(world.mask_SxK.sum())
    sample = world.intervene(jax.random.key(seed), n, marker_rate=0.0)
    return headline_arms(sample.log)
