"""Hashed n-gram features and small linear reward models on them (ridge, Bradley-Terry).

The linear baselines' text representation: no vocabulary to fit or store, so the same
featuriser applies to training headlines and to any generated text. The hash is zlib's
CRC-32 of the utf-8 n-gram (stable across processes, unlike Python's salted hash());
its top bit gives a +-1 sign, so colliding n-grams cancel in expectation instead of adding
up (Weinberger et al. 2009). The linear models are fitted in JAX with optax L-BFGS over a
sparse matvec (segment_sum), so 2**14-wide features never become a dense D x D matrix.
"""
from __future__ import annotations

import dataclasses
import functools
import re
import zlib
from typing import Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.sparse

# Words (with inner apostrophes) and the marks "?"/"!": a question mark is itself a
# headline feature, so a linear model must be able to see it.
_TOKEN_RE = re.compile(r"\w+(?:['\u2019]\w+)*|[?!]")


def _word_ngrams(text: str, lo: int, hi: int) -> list[str]:
    toks = _TOKEN_RE.findall(text)
    return [" ".join(toks[i:i + n]) for n in range(lo, hi + 1) for i in range(len(toks) - n + 1)]


def _char_ngrams(text: str, lo: int, hi: int) -> list[str]:
    text = " ".join(text.split())
    return [text[i:i + n] for n in range(lo, hi + 1) for i in range(len(text) - n + 1)]


def _l2_normalise_rows(X: scipy.sparse.csr_matrix) -> scipy.sparse.csr_matrix:
    """Rows scaled to unit l2 norm; all-zero rows stay zero."""
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).reshape(-1))
    inv = np.where(norms > 0, 1.0 / np.maximum(norms, 1e-30), 0.0).astype(np.float32)
    return (scipy.sparse.diags(inv) @ X).tocsr()


def hashed_ngrams(texts: Sequence[str], n_features: int = 2 ** 14,
                  ngram_range: tuple[int, int] = (1, 2), char: bool = False,
                  lowercase: bool = True, signed: bool = True, normalize: bool = True,
                  dense: bool = False) -> scipy.sparse.csr_matrix | np.ndarray:
    """Counts of hashed word (or `char`acter) n-grams: CSR float32 [N, n_features].

    ngram_range: inclusive (min n, max n). signed: +-1 per n-gram from the hash's top bit.
    normalize: rows scaled to unit l2 norm (empty rows stay 0). dense: a float32 ndarray
    instead (N x n_features x 4 bytes: mind the size).
    """
    lo, hi = ngram_range
    if not 1 <= lo <= hi:
        raise ValueError(f"hashed_ngrams: ngram_range must satisfy 1 <= min <= max, got {ngram_range}")
    if not 1 <= n_features <= 2 ** 31:
        raise ValueError(f"hashed_ngrams: n_features must be in [1, 2**31], got {n_features}")
    texts = [str(t) for t in np.asarray(texts, dtype=object).reshape(-1)]
    # Featurise each distinct text once (real corpora repeat headlines across tests).
    index = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    uniq = list(index)
    grams_of = _char_ngrams if char else _word_ngrams
    per_row = [grams_of(t.lower() if lowercase else t, lo, hi) for t in uniq]
    counts = np.fromiter((len(g) for g in per_row), np.int64, count=len(per_row))
    crc = zlib.crc32
    h = np.fromiter((crc(g.encode("utf-8")) for grams in per_row for g in grams),
                    np.uint32, count=int(counts.sum()))
    cols = (h & np.uint32(0x7FFFFFFF)) % np.uint32(n_features)
    vals = np.where(h >> np.uint32(31), -1.0, 1.0).astype(np.float32) if signed \
        else np.ones(h.size, np.float32)
    rows = np.repeat(np.arange(len(uniq)), counts)
    X = scipy.sparse.csr_matrix((vals, (rows, cols.astype(np.int64))),
                                shape=(len(uniq), n_features), dtype=np.float32)
    X.sum_duplicates()
    X.eliminate_zeros()                    # signed collisions can cancel exactly
    if normalize:
        X = _l2_normalise_rows(X)
    X = X[np.fromiter((index[t] for t in texts), np.int64, count=len(texts))]
    return X.toarray() if dense else X


# ---- linear models in JAX ----------------------------------------------------------------

@flax.struct.dataclass
class SparseRows:
    """A CSR matrix as COO arrays JAX can trace; matvec via segment_sum."""

    data: jax.Array                                         # [nnz] float32
    rows: jax.Array                                         # [nnz] int32
    cols: jax.Array                                         # [nnz] int32
    n_rows: int = flax.struct.field(pytree_node=False)


def _bucket(n: int) -> int:
    """The next power of two (at least 64): arrays are padded to it so that fits on many
    row counts (cross-fitting folds, subsamples) share a few XLA compilations instead of
    compiling one each (thousands of them exhaust the process's memory mappings)."""
    return max(64, 1 << max(int(n) - 1, 0).bit_length())


def _pad(a: np.ndarray, n: int) -> np.ndarray:
    """`a` with zero rows appended up to n rows."""
    a = np.asarray(a)
    return np.concatenate([a, np.zeros((n - a.shape[0],) + a.shape[1:], a.dtype)])


def _design(X) -> jax.Array | SparseRows:
    """Dense float32 jnp array, or SparseRows for scipy.sparse input, padded with zero rows
    (and zero entries) to _bucket sizes: callers pad their row vectors alike (zero weight)."""
    if scipy.sparse.issparse(X):
        coo = X.tocoo()
        nnz = _bucket(coo.nnz)
        return SparseRows(jnp.asarray(_pad(coo.data.astype(np.float32), nnz)),
                          jnp.asarray(_pad(coo.row.astype(np.int32), nnz)),
                          jnp.asarray(_pad(coo.col.astype(np.int32), nnz)),
                          _bucket(X.shape[0]))
    X = np.asarray(X, np.float32)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D [N, D], got shape {X.shape}")
    return jnp.asarray(_pad(X, _bucket(X.shape[0])))


def _matvec(X, w_D: jax.Array) -> jax.Array:
    if isinstance(X, SparseRows):
        return jax.ops.segment_sum(X.data * w_D[X.cols], X.rows, num_segments=X.n_rows)
    return X @ w_D


def _lbfgs(fun: Callable, params, max_iter: int, tol):
    """Minimise `fun` with optax L-BFGS (zoom line search) until ||grad|| < tol or max_iter."""
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(fun)

    def step(carry):
        params, state = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=fun)
        return optax.apply_updates(params, updates), state

    def keep_going(carry):
        _, state = carry
        k = optax.tree.get(state, "count")
        gnorm = optax.tree.norm(optax.tree.get(state, "grad"))
        return (k == 0) | ((k < max_iter) & (gnorm >= tol))

    params, state = jax.lax.while_loop(keep_going, step, (params, opt.init(params)))
    return params, optax.tree.get(state, "count"), optax.tree.norm(optax.tree.get(state, "grad"))


@functools.partial(jax.jit, static_argnames=("max_iter",))
def _fit_ridge(X, y_N, v_N, w0_D, l2, tol, max_iter: int):
    v_N = v_N / v_N.sum()

    def loss(p):
        resid = y_N - _matvec(X, p["w"]) - p["b"]
        return 0.5 * jnp.sum(v_N * resid ** 2) + 0.5 * l2 * jnp.sum(p["w"] ** 2)

    return _lbfgs(loss, {"w": w0_D, "b": jnp.sum(v_N * y_N)}, max_iter, tol)


@functools.partial(jax.jit, static_argnames=("max_iter",))
def _fit_bt(X, a_P, b_P, m_P, w0_D, l2, tol, max_iter: int):
    def loss(w_D):                                    # m_P: 1 on real pairs, 0 on padding
        r_N = _matvec(X, w_D)
        pair_loss = jax.nn.softplus(r_N[b_P] - r_N[a_P])
        return jnp.sum(m_P * pair_loss) / jnp.sum(m_P) + 0.5 * l2 * jnp.sum(w_D ** 2)

    return _lbfgs(loss, w0_D, max_iter, tol)


@dataclasses.dataclass(frozen=True)
class LinearModel:
    """r(x) = x . w + b, with the solver's iteration count and final gradient norm."""

    w: np.ndarray          # [D]
    b: float
    n_iter: int
    grad_norm: float

    def __call__(self, X) -> np.ndarray:
        """Scores [N] for features X [N, D] (dense or scipy.sparse)."""
        if X.shape[1] != self.w.size:
            raise ValueError(f"X has {X.shape[1]} features, the model has {self.w.size}")
        return np.asarray(X @ self.w, np.float64).reshape(-1) + self.b


def _n_features(X) -> int:
    if len(X.shape) != 2:
        raise ValueError(f"X must be 2-D [N, D], got shape {X.shape}")
    return int(X.shape[1])


def fit_linear(X, y, weights=None, l2: float = 1e-3, tol: float = 1e-6,
               max_iter: int = 500) -> LinearModel:
    """Weighted ridge regression with an unpenalised intercept.

    Minimises  1/2 sum_i v_i (y_i - x_i.w - b)^2 / sum_i v_i  +  l2/2 ||w||^2, so `l2` is
    per unit of mean loss and means the same at any N. X: dense [N, D] or scipy.sparse.
    """
    n = X.shape[0]
    y = np.asarray(y, np.float32).reshape(-1)
    v = np.ones(n, np.float32) if weights is None else np.asarray(weights, np.float32).reshape(-1)
    if y.size != n or v.size != n:
        raise ValueError(f"fit_linear: X has {n} rows, y {y.size}, weights {v.size}")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(v))):
        raise ValueError("fit_linear: y and weights must be finite")
    if np.any(v < 0) or v.sum() <= 0:
        raise ValueError("fit_linear: weights must be >= 0 with a positive sum")
    n_pad = _bucket(n)                               # zero-weight padding rows (see _design)
    params, k, g = _fit_ridge(_design(X), jnp.asarray(_pad(y, n_pad)), jnp.asarray(_pad(v, n_pad)),
                              jnp.zeros(_n_features(X), jnp.float32), l2, tol, max_iter=max_iter)
    return LinearModel(np.asarray(params["w"], np.float64), float(params["b"]), int(k), float(g))


def fit_bradley_terry_linear(X, pairs_a, pairs_b, l2: float = 1e-3, tol: float = 1e-6,
                             max_iter: int = 500) -> LinearModel:
    """Linear Bradley-Terry reward: row pairs_a[k] of X was preferred to row pairs_b[k].

    Minimises  mean_k log(1 + exp(-(x_a - x_b).w))  +  l2/2 ||w||^2  (no intercept: it
    cancels in every difference, so b = 0).
    """
    n, d = X.shape[0], _n_features(X)
    a = np.asarray(pairs_a, np.int64).reshape(-1)
    b = np.asarray(pairs_b, np.int64).reshape(-1)
    if a.size != b.size or a.size == 0:
        raise ValueError(f"fit_bradley_terry_linear: {a.size} winners vs {b.size} losers")
    for name, idx in (("pairs_a", a), ("pairs_b", b)):
        if idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"fit_bradley_terry_linear: {name} indexes outside 0..{n - 1}")
    p_pad = _bucket(a.size)
    w, k, g = _fit_bt(_design(X), jnp.asarray(_pad(a, p_pad), jnp.int32),
                      jnp.asarray(_pad(b, p_pad), jnp.int32),
                      jnp.asarray(_pad(np.ones(a.size, np.float32), p_pad)),
                      jnp.zeros(d, jnp.float32), l2, tol, max_iter=max_iter)
    return LinearModel(np.asarray(w, np.float64), 0.0, int(k), float(g))


def hashed_reward(model: LinearModel, **hash_kwargs) -> Callable[[Sequence[str]], np.ndarray]:
    """A reward function texts -> scores: `model` on hashed_ngrams(texts, **hash_kwargs).

    Pass the same featuriser arguments the model was fitted with.
    """
    n_features = hash_kwargs.setdefault("n_features", 2 ** 14)
    if n_features != model.w.size:
        raise ValueError(f"hashed_reward: n_features={n_features} but the model has {model.w.size}")
    return lambda texts: model(hashed_ngrams(texts, **hash_kwargs))
