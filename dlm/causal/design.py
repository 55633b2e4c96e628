"""The confounders' structure: parameters of g(C), how to compute g for any rows, centring.

g(C) = sum over confounders of a structured term:
  categorical -> one effect per level;
  numeric     -> a slope on the value centred at its (design-time) mean;
  time        -> one value per period 0..T-1, either a random walk ("rw": the parameters
                 are the period values) or a cubic B-spline ("spline": per-period values
                 = basis_TxK @ coefficients).

Categorical and time terms are one-hot in the rows, so `StructuredX` keeps them as integer
codes and works with segment sums and gathers, never a dense N x T matrix: a 1,000,000-row
fit with ~120 periods must run on a 2-core machine.

Parameter layout of g: numeric slopes first (they are dense columns), then every categorical
or time block, each contiguous. Reported effects are centred (level values minus their mean
over levels; the intercept absorbs the mean), which identifies them despite wide priors.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Mapping, Sequence

import numpy as np
import scipy.interpolate
import scipy.linalg
import scipy.sparse as sp

from dlm.data.log import Confounder, LogValidationError

TIME_BASES = ("rw", "spline")


def _onehot_NxL(codes: np.ndarray, n_levels: int) -> sp.csr_matrix:
    n = len(codes)
    return sp.csr_matrix((np.ones(n), codes, np.arange(n + 1)), shape=(n, n_levels))


class StructuredX:
    """X = [dense_NxD | onehot(codes_1) @ basis_1 | onehot(codes_2) @ basis_2 | ...].

    Blocks are (codes [N] int, n_levels, basis [L, K] or None for the identity). Only the
    products a GLM fit needs are offered: X theta, X^T r, X^T diag(w) X and per-cluster
    score sums; all cost O(N * (D + number of blocks)) plus small level-sized work.
    """

    def __init__(self, dense_NxD: np.ndarray, blocks: Sequence[tuple[np.ndarray, int, np.ndarray | None]]):
        self.dense_NxD = np.asarray(dense_NxD, np.float64)
        self.blocks = [(np.asarray(c, np.int64), int(L), b) for c, L, b in blocks]
        self.n_rows, self.n_dense = self.dense_NxD.shape
        sizes = [L if b is None else b.shape[1] for _, L, b in self.blocks]
        starts = np.cumsum([self.n_dense] + sizes)
        self.slices = [slice(int(s - k), int(s)) for s, k in zip(starts[1:], sizes)]
        self.n_params = int(starts[-1])

    @functools.cached_property
    def _onehots(self) -> list[sp.csr_matrix]:
        # built on first use: a sharded MAP never needs these N-sized sparse copies
        return [_onehot_NxL(c, L) for c, L, _ in self.blocks]

    def with_dense_prefix(self, prefix_NxE: np.ndarray) -> "StructuredX":
        """Prepend dense columns (intercept, text): their parameters come first."""
        return StructuredX(np.hstack([prefix_NxE, self.dense_NxD]), self.blocks)

    def matvec(self, theta: np.ndarray) -> np.ndarray:
        """X @ theta for theta [P] or [P, S] (S posterior draws) -> [N] or [N, S]."""
        out = self.dense_NxD @ theta[: self.n_dense]
        for (codes, _, basis), sl in zip(self.blocks, self.slices):
            values = theta[sl] if basis is None else basis @ theta[sl]
            out = out + values[codes]
        return out

    def rmatvec(self, r_N: np.ndarray) -> np.ndarray:
        """X^T r -> [P]."""
        parts = [self.dense_NxD.T @ r_N]
        for codes, L, basis in self.blocks:
            seg = np.bincount(codes, weights=r_N, minlength=L)
            parts.append(seg if basis is None else basis.T @ seg)
        return np.concatenate(parts)

    ROW_BLOCK = 262144   # rows per pass of gram/row_variance/cluster_meat: their N x D
                         # temporaries stay this size however many rows there are

    def _row_blocks(self):
        """(lo, hi, the rows lo:hi as a StructuredX of views) covering all rows."""
        for lo in range(0, max(self.n_rows, 1), self.ROW_BLOCK):
            hi = min(lo + self.ROW_BLOCK, self.n_rows)
            yield lo, hi, StructuredX(self.dense_NxD[lo:hi], [(c[lo:hi], L, b) for c, L, b in self.blocks])

    def gram(self, w_N: np.ndarray) -> np.ndarray:
        """X^T diag(w) X -> [P, P], assembled block by block from segment sums."""
        if self.n_rows > self.ROW_BLOCK:
            return sum(part.gram(w_N[lo:hi]) for lo, hi, part in self._row_blocks())
        D, G = self.n_dense, np.empty((self.n_params, self.n_params))
        wD_NxD = self.dense_NxD * w_N[:, None]
        G[:D, :D] = self.dense_NxD.T @ wD_NxD
        lift = lambda m, basis: m if basis is None else basis.T @ m  # noqa: E731
        for i, ((ci, Li, bi), si, oh) in enumerate(zip(self.blocks, self.slices, self._onehots)):
            cross_KxD = lift(np.asarray(oh.T @ wD_NxD), bi)
            G[si, :D], G[:D, si] = cross_KxD, cross_KxD.T
            counts = np.bincount(ci, weights=w_N, minlength=Li)
            G[si, si] = np.diag(counts) if bi is None else bi.T @ (counts[:, None] * bi)
            for (cj, Lj, bj), sj in zip(self.blocks[i + 1:], self.slices[i + 1:]):
                h_LixLj = np.bincount(ci * Lj + cj, weights=w_N, minlength=Li * Lj).reshape(Li, Lj)
                cross = lift(lift(h_LixLj, bi).T, bj).T
                G[si, sj], G[sj, si] = cross, cross.T
        return G

    def cluster_meat(self, r_N: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, int]:
        """sum over clusters of s_g s_g^T, s_g = sum_{i in g} x_i r_i; also the cluster count."""
        _, g_codes = np.unique(groups, return_inverse=True)
        n_groups = int(g_codes.max()) + 1
        s_GxP = sum(part._cluster_scores(r_N[lo:hi], g_codes[lo:hi], n_groups)
                    for lo, hi, part in self._row_blocks()).tocsr()
        return np.asarray((s_GxP.T @ s_GxP).todense()), n_groups

    def _cluster_scores(self, r_N: np.ndarray, g_codes: np.ndarray, n_groups: int) -> sp.csr_matrix:
        """s_g = sum over these rows of cluster g of x_i r_i -> sparse [G, P]."""
        og_GxN = _onehot_NxL(g_codes, n_groups).T.tocsr()
        parts = [sp.csr_matrix(og_GxN @ (self.dense_NxD * r_N[:, None]))]
        for (_, _, basis), oh in zip(self.blocks, self._onehots):
            s_GxL = og_GxN @ (sp.diags(r_N) @ oh)
            parts.append(s_GxL if basis is None else sp.csr_matrix(s_GxL @ basis))
        return sp.hstack(parts).tocsr()

    def lift(self) -> np.ndarray:
        """T [R, P] mapping parameters to (dense coefficients, per-level values of each block)."""
        eye = lambda k: np.eye(k)  # noqa: E731
        parts = [eye(self.n_dense)] + [eye(L) if b is None else b for _, L, b in self.blocks]
        return scipy.linalg.block_diag(*parts) if parts else np.zeros((0, 0))

    def row_variance(self, cov_PxP: np.ndarray) -> np.ndarray:
        """diag(X cov X^T) -> [N], O(N (D^2 + blocks^2)) by gathers in level space."""
        T = self.lift()
        C = T @ cov_PxP @ T.T                       # covariance of (dense coefs, level values)
        if self.n_rows <= self.ROW_BLOCK:
            return self._row_variance_levels(C)
        out = np.empty(self.n_rows)
        for lo, hi, part in self._row_blocks():
            out[lo:hi] = part._row_variance_levels(C)
        return out

    def _row_variance_levels(self, C: np.ndarray) -> np.ndarray:
        D, dense = self.n_dense, self.dense_NxD
        out = np.sum((dense @ C[:D, :D]) * dense, axis=1)
        starts = np.cumsum([D] + [L for _, L, _ in self.blocks])
        idx = [s + c for s, (c, _, _) in zip(starts, self.blocks)]   # row of C per block
        for i, ci in enumerate(idx):
            out += C[ci, ci] + 2.0 * np.sum(dense * C[:D, ci].T, axis=1)
            for cj in idx[i + 1:]:
                out += 2.0 * C[ci, cj]
        return out

    def take(self, idx: np.ndarray) -> "StructuredX":
        return StructuredX(self.dense_NxD[idx], [(c[idx], L, b) for c, L, b in self.blocks])


@dataclasses.dataclass(frozen=True, eq=False)
class BlockSpec:
    """One confounder's term in g: its parameters g_params[start:start+size]."""

    name: str
    kind: str
    labels: tuple[str, ...]          # one per reported effect: levels, periods, or ("slope",)
    start: int
    size: int
    basis: np.ndarray | None = None  # [L, size] per-level values = basis @ params; None = identity
    center: float = 0.0              # numeric: the value the slope is centred on

    @property
    def slice(self) -> slice:
        return slice(self.start, self.start + self.size)

    @property
    def n_levels(self) -> int:
        return len(self.labels)


def bspline_basis(n_periods: int, n_basis: int) -> np.ndarray:
    """Cubic B-spline basis on periods 0..T-1 with equally spaced knots -> [T, K]."""
    x = np.arange(n_periods, dtype=np.float64)
    inner = np.linspace(0.0, n_periods - 1.0, n_basis - 2)[1:-1]
    knots = np.r_[[0.0] * 4, inner, [n_periods - 1.0] * 4]
    return scipy.interpolate.BSpline.design_matrix(x, knots, 3).toarray()


@dataclasses.dataclass(frozen=True, eq=False)
class ConfounderDesign:
    """Names, parameter layout and centring of g(C); built once from the full data."""

    blocks: tuple[BlockSpec, ...]    # in parameter order (numeric first)
    order: tuple[str, ...]           # the confounders' names as given (report order)
    n_params: int
    time_basis: str = "rw"

    @property
    def names(self) -> tuple[str, ...]:
        return self.order

    def block(self, name: str) -> BlockSpec:
        return next(b for b in self.blocks if b.name == name)

    @property
    def numeric(self) -> tuple[BlockSpec, ...]:
        return tuple(b for b in self.blocks if b.kind == "numeric")

    @property
    def indexed(self) -> tuple[BlockSpec, ...]:
        return tuple(b for b in self.blocks if b.kind != "numeric")

    def rows(self, confounders: Mapping[str, Confounder], *, centred: bool = False,
             source: str = "<confounders>") -> StructuredX:
        """The g-part of the design for these rows; `centred` gives g's centred form."""
        self._check_names(confounders, source)
        dense = [_numeric_values(confounders[b.name], b, source) - b.center for b in self.numeric]
        n = len(next(iter(confounders.values())).values) if confounders else 0
        blocks = []
        for b in self.indexed:
            codes = _codes(confounders[b.name], b, source)
            basis = np.eye(b.n_levels) if b.basis is None else b.basis
            if centred:
                basis = basis - basis.mean(axis=0, keepdims=True)
            elif b.basis is None:
                basis = None
            blocks.append((codes, b.n_levels, basis))
        dense_NxQ = np.stack(dense, axis=1) if dense else np.zeros((n, 0))
        return StructuredX(dense_NxQ, blocks)

    def prior_precision(self, confounder_scale: float, rw_scale: float) -> np.ndarray:
        """Prior precision of the g-parameters (block diagonal; the random walk's tridiagonal)."""
        Q = np.zeros((self.n_params, self.n_params))
        wide = 1.0 / confounder_scale ** 2
        for b in self.blocks:
            if b.kind == "time" and self.time_basis == "rw":
                D_T1xT = np.diff(np.eye(b.size), axis=0)
                q = D_T1xT.T @ D_T1xT / rw_scale ** 2
                q[0, 0] += wide                     # the level: the walk's starting value
            else:
                q = wide * np.eye(b.size)
            Q[b.slice, b.slice] = q
        return Q

    def effects_matrix(self) -> tuple[list[tuple[str, str]], np.ndarray]:
        """(parameter, level) labels and A [E, P_g] with centred effects = A @ g_params."""
        labels, rows = [], []
        for name in self.order:
            b = self.block(name)
            A = np.zeros((b.n_levels if b.kind != "numeric" else 1, self.n_params))
            if b.kind == "numeric":
                A[0, b.start] = 1.0
            else:
                basis = np.eye(b.n_levels) if b.basis is None else b.basis
                A[:, b.slice] = basis - basis.mean(axis=0, keepdims=True)
            labels += [(name, lab) for lab in b.labels]
            rows.append(A)
        return labels, (np.vstack(rows) if rows else np.zeros((0, self.n_params)))

    def _check_names(self, confounders: Mapping[str, Confounder], source: str) -> None:
        missing = [n for n in self.order if n not in confounders]
        extra = [n for n in confounders if n not in self.order]
        if missing or extra:
            raise LogValidationError(
                f"confounders do not match the design: missing {missing}, unexpected {extra}",
                source=source, column=(missing + extra)[0])
        for b in self.blocks:
            kind = confounders[b.name].kind
            if kind != b.kind:
                raise LogValidationError(f"expected a {b.kind} confounder, got {kind}",
                                         source=source, column=b.name)


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0]) + 1     # 1-based data row


def _numeric_values(conf: Confounder, b: BlockSpec, source: str) -> np.ndarray:
    x = np.asarray(conf.values, np.float64)
    if not np.all(np.isfinite(x)):
        raise LogValidationError("numeric confounder value is missing or not finite",
                                 source=source, row=_first_bad(~np.isfinite(x)), column=b.name)
    return x


def _codes(conf: Confounder, b: BlockSpec, source: str) -> np.ndarray:
    if tuple(conf.levels) != b.labels:
        raise LogValidationError(f"levels differ from the design's ({len(conf.levels)} vs "
                                 f"{len(b.labels)} levels)", source=source, column=b.name)
    raw = np.asarray(conf.values)
    if raw.dtype.kind == "f":
        bad = ~np.isfinite(raw) | (raw != np.round(raw))
        if bad.any():
            raise LogValidationError("code is not an integer", source=source,
                                     row=_first_bad(bad), column=b.name)
    elif raw.dtype.kind not in "iu":
        raise LogValidationError(f"codes must be integers, got dtype {raw.dtype}",
                                 source=source, column=b.name)
    codes = raw.astype(np.int64)
    bad = (codes < 0) | (codes >= b.n_levels)
    if bad.any():
        raise LogValidationError(f"code {codes[bad][0]} outside 0..{b.n_levels - 1}",
                                 source=source, row=_first_bad(bad), column=b.name)
    return codes


def build_design(confounders: Mapping[str, Confounder], *, time_basis: str = "rw",
                 spline_df: int = 0, source: str = "<confounders>") -> ConfounderDesign:
    """The design of g for these confounders (numeric centres are their means here).

    time_basis "spline" uses `spline_df` cubic B-splines per time confounder (0: about one
    per 8 periods, at least 4); with fewer than 5 periods it falls back to one value each.
    """
    if time_basis not in TIME_BASES:
        raise ValueError(f"time_basis must be one of {TIME_BASES}, got {time_basis!r}")
    numeric = [n for n, c in confounders.items() if c.kind == "numeric"]
    indexed = [n for n, c in confounders.items() if c.kind != "numeric"]
    blocks, start = [], 0
    for name in numeric:
        spec = BlockSpec(name, "numeric", ("slope",), start, 1)
        center = float(np.mean(_numeric_values(confounders[name], spec, source))) \
            if len(confounders[name].values) else 0.0
        blocks.append(dataclasses.replace(spec, center=center))
        start += 1
    for name in indexed:
        conf = confounders[name]
        labels = tuple(str(v) for v in conf.levels)
        basis = None
        if conf.kind == "time" and time_basis == "spline" and len(labels) >= 5:
            k = spline_df or max(4, round(len(labels) / 8))
            basis = bspline_basis(len(labels), min(max(k, 4), len(labels)))
        size = len(labels) if basis is None else basis.shape[1]
        spec = BlockSpec(name, conf.kind, labels, start, size, basis)
        _codes(conf, spec, source)                  # validate once, with row numbers
        blocks.append(spec)
        start += size
    return ConfounderDesign(tuple(blocks), tuple(confounders), start, time_basis)


def drop_first_dummies(codes: np.ndarray, n_levels: int) -> np.ndarray:
    """Dense drop-first one-hot columns of integer codes, without levels that never occur
    (they would be all zero): the design an outside GLM (statsmodels) is given."""
    present = np.flatnonzero(np.bincount(codes, minlength=n_levels))[1:]
    return (codes[:, None] == present[None, :]).astype(np.float64)
