"""The observational log: the one data type every layer speaks (DESIGN.md section 5).

One row per unit (a posting). Text stays as numpy string/object arrays (JAX never sees
strings); everything numeric is a numpy array the causal layer turns into jnp arrays.
"""
from __future__ import annotations

import dataclasses
from typing import Literal, Mapping

import numpy as np

ConfounderKind = Literal["categorical", "numeric", "time"]
CONFOUNDER_KINDS: tuple[str, ...] = ("categorical", "numeric", "time")


class LogValidationError(ValueError):
    """Bad input, located: names the source, the row (1-based data row) and the column."""

    def __init__(self, message: str, *, source: str = "<log>", row: int | None = None,
                 column: str | None = None):
        where = [f"file {source}"]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {message}")
        self.source, self.row, self.column = source, row, column


@dataclasses.dataclass(frozen=True)
class Confounder:
    """One named confounder column.

    categorical: `values` are int codes into `levels` (level names, as strings).
    numeric:     `values` are floats; `levels` is None.
    time:        `values` are int period indices 0..T-1 in time order (consecutive periods,
                 gaps included, so a random walk over them is meaningful); `levels` are the
                 period labels (e.g. "201446"), len(levels) == T.
    """

    kind: ConfounderKind
    values: np.ndarray
    levels: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.kind not in CONFOUNDER_KINDS:
            raise ValueError(f"confounder kind must be one of {CONFOUNDER_KINDS}, got {self.kind!r}")
        if self.kind in ("categorical", "time") and self.levels is None:
            raise ValueError(f"a {self.kind} confounder needs levels")

    @property
    def n_levels(self) -> int:
        return 0 if self.levels is None else len(self.levels)

    def take(self, idx: np.ndarray) -> "Confounder":
        return dataclasses.replace(self, values=self.values[idx])


@dataclasses.dataclass(frozen=True)
class ObservationalLog:
    """Rows of (content, context, group, outcome, confounders).

    The outcome is either binomial (`successes` out of `trials`) or real (`outcome`).
    """

    content: np.ndarray                      # [N] str
    confounders: Mapping[str, Confounder]
    successes: np.ndarray | None = None      # [N] float (counts)
    trials: np.ndarray | None = None         # [N] float (counts)
    outcome: np.ndarray | None = None        # [N] float
    context: np.ndarray | None = None        # [N] str
    group: np.ndarray | None = None          # [N] int codes (units randomised together)
    source: str = "<log>"
    # Raw id of each group code (e.g. the A/B test id); codes index into it, so take() keeps it.
    group_labels: tuple[str, ...] | None = None

    def __post_init__(self):
        n = len(self.content)
        binomial = self.successes is not None and self.trials is not None
        if binomial == (self.outcome is not None):
            raise ValueError("give either successes and trials, or outcome")
        for name in ("successes", "trials", "outcome", "context", "group"):
            arr = getattr(self, name)
            if arr is not None and len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} rows, content has {n}")
        for name, conf in self.confounders.items():
            if len(conf.values) != n:
                raise ValueError(f"confounder {name!r} has {len(conf.values)} rows, content has {n}")

    def __len__(self) -> int:
        return len(self.content)

    @property
    def is_binomial(self) -> bool:
        return self.outcome is None

    def logit_outcome(self) -> np.ndarray:
        """Empirical logit of the rate (half-count corrected), or the real outcome."""
        if not self.is_binomial:
            return np.asarray(self.outcome, dtype=np.float64)
        s = np.asarray(self.successes, np.float64)
        n = np.asarray(self.trials, np.float64)
        return np.log((s + 0.5) / (n - s + 0.5))

    def take(self, idx: np.ndarray) -> "ObservationalLog":
        """Rows `idx` (an index array or boolean mask), as a new log."""
        idx = np.asarray(idx)
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return dataclasses.replace(
            self,
            content=self.content[idx],
            confounders={k: c.take(idx) for k, c in self.confounders.items()},
            successes=pick(self.successes), trials=pick(self.trials),
            outcome=pick(self.outcome), context=pick(self.context), group=pick(self.group),
        )
