"""The story corpus: contexts (ledes) and their candidate headlines, one entry per story.

The simulated headline world samples stories and candidates from it, and the SFT
trainer learns lede -> headline from it. Built from any log with groups (one story per
A/B test), or by dlm.data.builtin_corpus when no data is given.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Sequence

import numpy as np

from dlm.data.log import Confounder, ObservationalLog


@dataclasses.dataclass(frozen=True)
class StoryCorpus:
    """Stories with a context, their distinct candidate headlines and their time period.

    weeks are period indices into week_labels (shared by every take/split, so periods
    stay comparable across splits).
    """

    story_ids: tuple[str, ...]
    contexts: tuple[str, ...]                 # one lede per story (plain text)
    headlines: tuple[tuple[str, ...], ...]    # distinct candidate headlines per story
    weeks: np.ndarray                         # [S] int period index, 0..T-1
    week_labels: tuple[str, ...]              # [T] label of each period

    def __post_init__(self):
        n = len(self.story_ids)
        for name in ("contexts", "headlines", "weeks"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries, "
                                 f"story_ids has {n}")
        weeks = np.asarray(self.weeks)
        if n and (weeks.min() < 0 or weeks.max() >= len(self.week_labels)):
            raise ValueError(f"weeks must lie in 0..{len(self.week_labels) - 1}")
        empty = [i for i, h in enumerate(self.headlines) if not h]
        if empty:
            raise ValueError(f"story {self.story_ids[empty[0]]!r} has no headline")

    def __len__(self) -> int:
        return len(self.story_ids)

    @property
    def n_headlines(self) -> np.ndarray:
        """[S] number of distinct candidate headlines per story."""
        return np.array([len(h) for h in self.headlines], np.int64)

    def take(self, idx: np.ndarray | Sequence[int]) -> "StoryCorpus":
        """Stories `idx` (an index array or boolean mask), as a new corpus."""
        idx = np.arange(len(self))[np.asarray(idx)]
        return dataclasses.replace(
            self,
            story_ids=tuple(self.story_ids[i] for i in idx),
            contexts=tuple(self.contexts[i] for i in idx),
            headlines=tuple(self.headlines[i] for i in idx),
            weeks=np.asarray(self.weeks)[idx],
        )

    def split(self, fractions: Sequence[float], seed: int = 0) -> tuple["StoryCorpus", ...]:
        """Disjoint random parts by story (e.g. (0.8, 0.2) -> train, val), deterministic
        for a seed; fractions must sum to 1; each part keeps the corpus order."""
        fractions = np.asarray(fractions, np.float64)
        if fractions.ndim != 1 or len(fractions) == 0 or (fractions < 0).any() \
                or abs(fractions.sum() - 1.0) > 1e-6:
            raise ValueError("fractions must be non-negative and sum to 1, "
                             f"got {fractions.tolist()}")
        order = np.random.default_rng(seed).permutation(len(self))
        bounds = np.round(np.cumsum(fractions) * len(self)).astype(int)
        parts = np.split(order, bounds[:-1])
        return tuple(self.take(np.sort(part)) for part in parts)


def _most_common(items: list[str]) -> str:
    """Most frequent item; ties go to the first seen (Counter keeps insertion order)."""
    return collections.Counter(items).most_common(1)[0][0]


def stories_from_log(log: ObservationalLog, time_confounder: str = "week") -> StoryCorpus:
    """One story per group: its distinct stripped headlines in first-seen order, its most
    common non-empty context and its most common period (ties: the earliest)."""
    if log.group is None:
        raise ValueError(f"{log.source}: the log has no group column; stories need groups")
    if time_confounder not in log.confounders:
        raise ValueError(f"{log.source}: no confounder {time_confounder!r}; "
                         f"have {sorted(log.confounders)}")
    period = log.confounders[time_confounder]
    if period.levels is None:
        raise ValueError(f"{log.source}: confounder {time_confounder!r} is {period.kind}; "
                         "stories need a time (or categorical) confounder")
    contexts = log.context if log.context is not None else np.full(len(log), "", dtype=object)
    rows: dict[int, list[int]] = collections.defaultdict(list)
    for i, g in enumerate(np.asarray(log.group)):
        rows[int(g)].append(i)

    ids, ctxs, heads, weeks = [], [], [], []
    for g in sorted(rows):
        members = rows[g]
        headlines = [str(log.content[i]).strip() for i in members]
        distinct = tuple(dict.fromkeys(h for h in headlines if h))
        if not distinct:
            continue  # a log validated by dlm.data.tables never has empty content
        ids.append(log.group_labels[g] if log.group_labels is not None else str(g))
        texts = [str(contexts[i]) for i in members]
        ctxs.append(_most_common([t for t in texts if t] or [""]))
        heads.append(distinct)
        counts = np.bincount(period.values[members])
        weeks.append(int(np.argmax(counts)))  # argmax takes the earliest on ties
    return StoryCorpus(story_ids=tuple(ids), contexts=tuple(ctxs), headlines=tuple(heads),
                       weeks=np.array(weeks, np.int32), week_labels=tuple(period.levels))


def period_confounder(log: ObservationalLog) -> str | None:
    """The confounder that dates a story: the first time confounder, else a categorical."""
    for kind in ("time", "categorical"):
        for name, conf in log.confounders.items():
            if conf.kind == kind:
                return name
    return None


def log_stories(log: ObservationalLog) -> tuple[StoryCorpus, str]:
    """(stories, label) of any log with a context column, for SFT: one story per group, or
    per distinct context when it has no group; dated by period_confounder (one period for
    all when none); a story's candidates are its distinct contents (stories_from_log)."""
    if log.context is None:
        raise ValueError(f"{log.source}: fine-tuning needs a context column (the prompt each "
                         "content was written for; --context COL)")
    by = "group"
    if log.group is None:
        labels, codes = np.unique(np.asarray(log.context, dtype=object).astype(str),
                                  return_inverse=True)
        log = dataclasses.replace(log, group=codes.reshape(-1), group_labels=tuple(labels))
        by = "context"
    period = period_confounder(log)
    if period is None:                       # no dated confounder: one period for all
        period = "_period"
        log = dataclasses.replace(log, confounders={
            **log.confounders, period: Confounder("categorical", np.zeros(len(log), np.int64),
                                                  ("all",))})
    return stories_from_log(log, time_confounder=period), f"{log.source} (stories by {by})"
