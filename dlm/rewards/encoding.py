"""Confounders as arrays for the reward trainer: one-hot levels and standardised values (the
conditioned head's inputs), bin indicators (the invariance penalty's groups), and the
reference condition a conditioned reward is evaluated at. Fitted on the training rows.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from dlm.data.log import Confounder


@dataclasses.dataclass(frozen=True, eq=False)
class ConfounderEncoder:
    """Confounders -> columns [N, C] (one-hot levels, standardised numeric/time) and bin
    indicators [N, M] (levels; quantile bins of numeric/time), fitted on training rows."""

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    n_levels: tuple[int, ...]
    loc: tuple[float, ...]
    scale: tuple[float, ...]
    edges: tuple[np.ndarray | None, ...]
    levels: tuple[tuple[str, ...] | None, ...]
    default_ref: tuple[float, ...]

    @classmethod
    def fit(cls, confounders: Mapping[str, Confounder], bins: int = 4) -> "ConfounderEncoder":
        names, kinds, n_lv, loc, scale, edges, levels, ref = [], [], [], [], [], [], [], []
        for name, c in confounders.items():
            v = np.asarray(c.values)
            names.append(name)
            kinds.append(c.kind)
            levels.append(c.levels)
            if c.kind == "categorical":
                n_lv.append(c.n_levels)
                loc.append(0.0)
                scale.append(1.0)
                edges.append(None)
                ref.append(float(np.bincount(v.astype(np.int64), minlength=c.n_levels).argmax()))
            else:
                v = v.astype(np.float64)
                q = np.unique(np.quantile(v, np.linspace(0, 1, bins + 1)[1:-1]))
                n_lv.append(1)
                loc.append(float(v.mean()))
                scale.append(float(v.std()) or 1.0)
                edges.append(q)
                ref.append(float(np.median(v)) if c.kind == "time" else float(v.mean()))
        return cls(tuple(names), tuple(kinds), tuple(n_lv), tuple(loc), tuple(scale),
                   tuple(edges), tuple(levels), tuple(ref))

    @property
    def n_columns(self) -> int:
        return int(sum(self.n_levels))

    def _values(self, confounders: Mapping[str, Confounder]) -> list[np.ndarray]:
        missing = [n for n in self.names if n not in confounders]
        if missing:
            raise ValueError(f"confounders {missing} missing; the reward was trained with "
                             f"{self.names}")
        return [np.asarray(confounders[n].values) for n in self.names]

    def _columns(self, values: list[np.ndarray]) -> np.ndarray:
        cols = []
        for v, kind, L, mu, sd in zip(values, self.kinds, self.n_levels, self.loc, self.scale):
            if kind == "categorical":
                cols.append(np.eye(L, dtype=np.float32)[np.asarray(v, np.int64)])
            else:
                cols.append(((np.asarray(v, np.float64) - mu) / sd)[:, None].astype(np.float32))
        return np.concatenate(cols, axis=1)

    def columns(self, confounders: Mapping[str, Confounder]) -> np.ndarray:
        """[N, C]: one-hot categorical levels, standardised numeric and time values."""
        return self._columns(self._values(confounders))

    def bin_onehot(self, confounders: Mapping[str, Confounder]) -> np.ndarray:
        """[N, M]: every confounder's bin (level, or quantile bin), concatenated."""
        out = []
        for v, kind, L, q in zip(self._values(confounders), self.kinds, self.n_levels, self.edges):
            if kind == "categorical":
                out.append(np.eye(L, dtype=np.float32)[np.asarray(v, np.int64)])
            else:
                codes = np.searchsorted(q, v, side="right")
                out.append(np.eye(len(q) + 1, dtype=np.float32)[codes])
        return np.concatenate(out, axis=1)

    def reference(self, c_ref: Mapping[str, Any] | None = None) -> np.ndarray:
        """[C] columns of the reference condition: c_ref's values (a categorical by code or
        level name), else the most common level / the mean (numeric) / the median (time)."""
        c_ref = dict(c_ref or {})
        unknown = set(c_ref) - set(self.names)
        if unknown:
            raise ValueError(f"c_ref names unknown confounders {sorted(unknown)}; "
                             f"known: {self.names}")
        values = []
        rows = zip(self.names, self.kinds, self.levels, self.default_ref)
        for name, kind, levels, default in rows:
            v = c_ref.get(name, default)
            if kind == "categorical" and isinstance(v, str):
                if v not in levels:
                    raise ValueError(f"c_ref {name}={v!r} is not a level; levels: {levels}")
                v = levels.index(v)
            values.append(np.array([v]))
        return self._columns(values)[0]
