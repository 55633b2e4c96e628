"""The stories an SFT run trains on: loading them (a given corpus, an Upworthy file or the
built-in template corpus), splitting them into train/val exactly as SFT does (later stages
reuse the split for held-out ledes), their (lede, headline) pairs, and a fingerprint that
keys the SFT cache.

`cfg` is an SFTConfig (dlm.policy.sft); only its n_stories, seed and val_fraction are read.
"""
from __future__ import annotations

import json
import pathlib

from dlm.data.builtin_corpus import builtin_corpus
from dlm.data.corpus import StoryCorpus


def load_corpus(data: pathlib.Path | None, cfg,
                corpus: tuple[StoryCorpus, str] | None = None) -> tuple[StoryCorpus, str]:
    """(stories, source label): the given `corpus`, the Upworthy stories at `data`, or the
    built-in template corpus (cfg.n_stories of them, drawn with cfg.seed)."""
    if corpus is not None:
        return check_corpus_arg(data, corpus)
    if data is None:
        return builtin_corpus(n_stories=cfg.n_stories, seed=cfg.seed), "built-in template corpus"
    from dlm.data.corpus import stories_from_log
    from dlm.data.upworthy import load_upworthy    # lazy: pandas only with a data file
    return stories_from_log(load_upworthy(data)), str(data)


def check_corpus_arg(data, corpus) -> tuple[StoryCorpus, str]:
    """`corpus` must be a (StoryCorpus, non-empty label) tuple and excludes `data`."""
    if data is not None:
        raise ValueError(f"give either data ({data}) or corpus, not both")
    if not (isinstance(corpus, tuple) and len(corpus) == 2 and isinstance(corpus[0], StoryCorpus)
            and isinstance(corpus[1], str) and corpus[1]):
        raise TypeError("corpus must be a (StoryCorpus, source_label: str) tuple, got "
                        f"{type(corpus).__name__}")
    return corpus


def corpus_fingerprint(corpus: StoryCorpus) -> str:
    """A short hash of the stories' text, so a cache keyed by a corpus label is never
    reused for a different corpus carrying the same label."""
    import hashlib
    h = hashlib.sha256()
    for sid, ctx, heads in zip(corpus.story_ids, corpus.contexts, corpus.headlines):
        h.update(json.dumps([sid, ctx, list(heads)]).encode())
    return h.hexdigest()[:16]


def split_corpus(corpus: StoryCorpus, cfg, source: str = "corpus"
                 ) -> tuple[StoryCorpus, StoryCorpus]:
    """(train, val) stories exactly as SFT splits them (cfg.val_fraction, cfg.seed), so
    held-out ledes stay unseen; a ValueError when a side would be empty."""
    train, val = corpus.split((1 - cfg.val_fraction, cfg.val_fraction), seed=cfg.seed)
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"{source}: {len(corpus)} stories are too few to split "
                         f"with val_fraction={cfg.val_fraction}")
    return train, val


def sft_pairs(corpus: StoryCorpus) -> tuple[list[str], list[str]]:
    """One (lede, headline) pair per candidate headline of every story."""
    prompts, responses = [], []
    for context, headlines in zip(corpus.contexts, corpus.headlines):
        for h in headlines:
            prompts.append(context)
            responses.append(h)
    return prompts, responses
