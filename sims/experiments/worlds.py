"""The one way a simulation pipeline builds its headline world from a config: a
HeadlineWorldConfig (a script's `world` sub-config) over the built-in template corpus, or
over the Upworthy archive's stories when `data` names it."""
from __future__ import annotations

import pathlib

from sims.headlines import HeadlineWorld, HeadlineWorldConfig


def build_world(world: HeadlineWorldConfig = HeadlineWorldConfig(), n_stories: int = 600,
                data: pathlib.Path | None = None) -> HeadlineWorld:
    """The world of `world` over n_stories built-in stories (ignored with `data`)."""
    if data is None:
        from dlm.data.builtin_corpus import builtin_corpus

        corpus = builtin_corpus(n_stories=n_stories)
    else:
        from dlm.data.corpus import stories_from_log
        from dlm.data.upworthy import load_upworthy

        corpus = stories_from_log(load_upworthy(data))
    return HeadlineWorld(corpus, world)
