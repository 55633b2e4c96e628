"""The GLM's log likelihood, gradient and Hessian as row sums: chunked, sharded, multi-host.

Every quantity a Newton step needs is a sum over rows, so rows can be split any way:

- over fixed-size chunks, streamed from host memory one at a time (a Python loop over one
  jit-compiled kernel), so memory beyond the inputs stays flat in N and every N (every
  fold of a cross-fit) reuses the same compiled program;
- within a chunk, over all local devices (a 1-D mesh, `shard_map`, `psum`), the last chunk
  padded with zero-weight rows;
- over processes: with `jax.process_count() > 1` (jax.distributed, initialised by
  `dlm.train.sharding.maybe_initialize_distributed`) process k takes the k-th contiguous
  row range of the arrays it is given, the mesh spans every process's devices and the same
  `psum` reduces across hosts. Every process runs the same loop (same chunk count).

The kernel works in "level space": the dense coefficients followed by the per-level values
of each block (StructuredX.lift maps theta there), so categorical and time blocks stay
integer codes and segment sums, never one-hot columns. Float64 (scoped x64), so a fit
matches the in-memory numpy path to rounding.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from dlm.causal.design import StructuredX
from dlm.train.sharding import DATA_AXIS, make_mesh

FAMILIES = ("binomial", "normal")


def _level_sums(beta_R, dense_CxD, codes, y_C, n_C, *, sizes, family, hessian):
    """(log likelihood, gradient [R], Hessian [R, R]) of these rows, in level space; only
    (log likelihood,) when hessian is False.

    binomial: y successes of n trials. normal: y outcome, n a row weight (1, or 0 padding),
    log likelihood -sum n (y - eta)^2 / 2 (unit variance; the caller scales).
    """
    D = dense_CxD.shape[1]
    eta_C = dense_CxD @ beta_R[:D]
    starts = np.cumsum([D] + list(sizes))
    for c, lo, L in zip(codes, starts, sizes):
        eta_C = eta_C + beta_R[lo:lo + L][c]
    if family == "binomial":
        p_C = jax.nn.sigmoid(eta_C)
        ll = jnp.sum(y_C * eta_C - n_C * jax.nn.softplus(eta_C))
        r_C, w_C = y_C - n_C * p_C, n_C * p_C * (1.0 - p_C)
    else:
        r_C, w_C = n_C * (y_C - eta_C), n_C
        ll = -0.5 * jnp.sum(r_C * (y_C - eta_C))
    if not hessian:                # a line-search probe needs the value alone
        return (ll,)
    grad = jnp.concatenate([dense_CxD.T @ r_C]
                           + [jax.ops.segment_sum(r_C, c, L) for c, L in zip(codes, sizes)])
    R = int(starts[-1])
    wD_CxD = dense_CxD * w_C[:, None]
    H = jnp.zeros((R, R), dense_CxD.dtype).at[:D, :D].set(dense_CxD.T @ wD_CxD)
    for i, (ci, si, Li) in enumerate(zip(codes, starts, sizes)):
        cross_LxD = jax.ops.segment_sum(wD_CxD, ci, Li)
        H = H.at[si:si + Li, :D].set(cross_LxD).at[:D, si:si + Li].set(cross_LxD.T)
        H = H.at[si:si + Li, si:si + Li].set(jnp.diag(jax.ops.segment_sum(w_C, ci, Li)))
        for cj, sj, Lj in zip(codes[i + 1:], starts[i + 1:], sizes[i + 1:]):
            h = jax.ops.segment_sum(w_C, ci * Lj + cj, Li * Lj).reshape(Li, Lj)
            H = H.at[si:si + Li, sj:sj + Lj].set(h).at[sj:sj + Lj, si:si + Li].set(h.T)
    return ll, grad, H


@functools.lru_cache(maxsize=64)
def _compiled(mesh, sizes: tuple[int, ...], family: str, hessian: bool):
    """One jit-compiled SPMD program per (mesh, block sizes, family, hessian)."""
    rows, rep = P(DATA_AXIS), P()

    def local(beta_R, dense_CxD, codes, y_C, n_C):
        out = _level_sums(beta_R, dense_CxD, codes, y_C, n_C, sizes=sizes, family=family,
                          hessian=hessian)
        return jax.tree.map(lambda v: jax.lax.psum(v, DATA_AXIS), out)

    codes_spec = tuple(rows for _ in sizes)
    out_specs = (rep, rep, rep) if hessian else (rep,)
    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(rep, rows, codes_spec, rows, rows),
                                 out_specs=out_specs))


class ShardedRows:
    """Row sums of a GLM's log likelihood over X = StructuredX (see the module docstring).

    `chunk` is rows per device per step; each process holds (a view of) all N rows and
    reads only its own range.
    """

    def __init__(self, X: StructuredX, y_N: np.ndarray, n_N: np.ndarray, *, family: str,
                 chunk: int = 131072, mesh=None):
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
        if chunk < 1:
            raise ValueError(f"chunk must be a positive number of rows, got {chunk}")
        self.X, self.family = X, family
        self.mesh = mesh or make_mesh()
        self.T_RxP = X.lift()
        self.sizes = tuple(L for _, L, _ in X.blocks)
        n_proc, pid = jax.process_count(), jax.process_index()
        bounds = np.linspace(0, X.n_rows, n_proc + 1).astype(np.int64)
        self.lo, self.hi = int(bounds[pid]), int(bounds[pid + 1])
        self.n_local_dev = len(self.mesh.local_devices) if n_proc > 1 else self.mesh.size
        self.step = chunk * self.n_local_dev                       # local rows per step
        most = int(np.max(np.diff(bounds))) if X.n_rows else 0
        self.n_steps = max(1, -(-most // self.step))                 # same on every process
        self.y_N, self.n_N = y_N, n_N
        self._sharding = NamedSharding(self.mesh, P(DATA_AXIS))
        self._replicated = NamedSharding(self.mesh, P())

    def _put(self, a: np.ndarray):
        if jax.process_count() == 1:
            return jax.device_put(a, self._sharding)
        return jax.make_array_from_process_local_data(self._sharding, a)

    def _chunk(self, k: int):
        """Rows of step k of this process, padded to `step` rows with zero weight."""
        lo = min(self.lo + k * self.step, self.hi)
        hi = min(lo + self.step, self.hi)
        pad = self.step - (hi - lo)

        def take(a, dtype):
            v = np.asarray(a[lo:hi], dtype)
            return v if not pad else np.concatenate([v, np.zeros((pad,) + v.shape[1:], dtype)])

        codes = tuple(self._put(take(c, np.int32)) for c, _, _ in self.X.blocks)
        return (self._put(take(self.X.dense_NxD, np.float64)), codes,
                self._put(take(self.y_N, np.float64)), self._put(take(self.n_N, np.float64)))

    def sums(self, theta_P: np.ndarray, hessian: bool = True):
        """(log likelihood, gradient [P], Hessian [P, P]) over all rows at theta; with
        hessian=False the log likelihood alone (then None, None)."""
        with jax.enable_x64(True):
            fn = _compiled(self.mesh, self.sizes, self.family, hessian)
            beta = jax.device_put(np.asarray(self.T_RxP @ theta_P, np.float64), self._replicated)
            acc = None
            for k in range(self.n_steps):     # dispatch is async: the next slice overlaps
                out = fn(beta, *self._chunk(k))
                acc = out if acc is None else jax.tree.map(jnp.add, acc, out)
            ll, *gH = (np.asarray(v, np.float64) for v in acc)
        if not hessian:
            return float(ll), None, None
        T = self.T_RxP
        return float(ll), T.T @ gH[0], T.T @ gH[1] @ T
