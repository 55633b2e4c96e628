"""MAP of the estimator's GLM by Newton's method, and its covariance (Laplace/sandwich/dispersion).

Float64 throughout: the per-row work is one O(N) pass per Newton step (the log likelihood,
gradient and Hessian are row sums), the linear algebra is P x P with P ~ 1 + F + levels.
The row sums run in numpy over all rows at once (StructuredX), or, given `rows`
(rowsum.ShardedRows), in fixed-size chunks of one compiled kernel over every device and
process; both give the same mode. Covariances stay in numpy (StructuredX works in row
blocks, so their temporaries do not grow with N).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import scipy.linalg
import scipy.special

from dlm.causal.design import StructuredX

COVARIANCES = ("laplace", "sandwich", "dispersion")


@dataclasses.dataclass(frozen=True, eq=False)
class MapResult:
    """The mode, the negative Hessian of the log posterior there, and what the covariance needs."""

    theta: np.ndarray        # [P]
    hessian: np.ndarray      # [P, P] X^T W X + Q (W at the mode)
    resid: np.ndarray        # [N] score residual per row: x_i * resid_i is row i's score
    weight: np.ndarray       # [N] working weight: the likelihood's curvature per row
    pearson: float           # sum of squared Pearson residuals (dispersion estimate)
    n_obs: int               # rows that carry information (trials > 0)
    iterations: int
    converged: bool
    sigma: float | None = None   # real outcome: the MAP of sigma


def _memory_sums(X: StructuredX, s_N: np.ndarray, n_N: np.ndarray):
    """The binomial row sums over all rows at once (numpy): (log lik, X^T r, X^T W X)."""
    def sums(theta: np.ndarray, hessian: bool = True):
        eta = X.matvec(theta)
        ll = float(s_N @ eta - n_N @ np.logaddexp(0.0, eta))
        if not hessian:
            return ll, None, None
        p = scipy.special.expit(eta)
        return ll, X.rmatvec(s_N - n_N * p), X.gram(n_N * p * (1.0 - p))
    return sums


def newton_binomial(X: StructuredX, s_N: np.ndarray, n_N: np.ndarray, Q_PxP: np.ndarray, *,
                    tol: float = 1e-8, max_iter: int = 50, rows=None) -> MapResult:
    """Maximise sum s eta - n log(1+e^eta) - theta'Q theta/2, eta = X theta.

    Newton steps (X^T W X + Q) d = X^T(s - n p) - Q theta with step halving until the log
    posterior rises (Armijo); stops when the Newton decrement d.grad/2 < tol.
    rows: a rowsum.ShardedRows over the same rows (chunked, sharded, multi-host sums);
    None sums in memory with numpy.
    """
    sums = _memory_sums(X, s_N, n_N) if rows is None else rows.sums
    log_post = lambda ll, th: ll - 0.5 * th @ Q_PxP @ th  # noqa: E731
    theta = np.zeros(X.n_params)
    rate = (s_N.sum() + 0.5) / (n_N.sum() + 1.0)
    theta[0] = np.log(rate / (1.0 - rate))                 # start at the pooled rate
    ll, g, H = sums(theta)
    f = log_post(ll, theta)
    converged, it = False, 0
    for it in range(1, max_iter + 1):
        grad, H = g - Q_PxP @ theta, H + Q_PxP
        step = scipy.linalg.cho_solve(scipy.linalg.cho_factor(H), grad)
        decrement = float(grad @ step)
        if decrement / 2.0 < tol:
            converged = True
            break
        t = 1.0
        while t > 1e-10:           # the full step's pass also gives the next gradient and
            ll, g, H_new = sums(theta + t * step, hessian=t == 1.0)   # Hessian: one pass a step
            f_new = log_post(ll, theta + t * step)
            if f_new >= f + 1e-4 * t * decrement:
                break
            t /= 2.0
        else:                      # no ascent left at float64 resolution: this is the mode
            converged = decrement / 2.0 < 1e3 * tol
            break
        theta, f = theta + t * step, f_new
        _, g, H = (ll, g, H_new) if H_new is not None else sums(theta)
    p = scipy.special.expit(X.matvec(theta))
    w = n_N * p * (1.0 - p)
    resid = s_N - n_N * p
    if not converged:
        H = sums(theta)[2] + Q_PxP
    has = w > 0
    return MapResult(theta, H, resid, w, float(np.sum(resid[has] ** 2 / w[has])),
                     int(has.sum()), it, converged)


def newton_normal(X: StructuredX, y_N: np.ndarray, Q_PxP: np.ndarray, *,
                  tol: float = 1e-8, max_iter: int = 100, rows=None) -> MapResult:
    """Joint MAP of (theta, sigma) for y ~ Normal(X theta, sigma), sigma ~ HalfNormal(1).

    Given sigma the log posterior is quadratic in theta (one exact solve); given theta the
    sigma mode solves sigma^4 + N sigma^2 - RSS = 0. Alternate until sigma settles.
    rows: a rowsum.ShardedRows (family normal) over the same rows; None: numpy in memory.
    """
    N = len(y_N)
    if rows is None:
        G, Xty = X.gram(np.ones(N)), X.rmatvec(y_N)
        rss_at = lambda th: float(np.sum((y_N - X.matvec(th)) ** 2))  # noqa: E731
    else:                          # at theta = 0 the residual is y: X^T y, and H = X^T X
        _, Xty, G = rows.sums(np.zeros(X.n_params))
        rss_at = lambda th: -2.0 * rows.sums(th, hessian=False)[0]  # noqa: E731
    s2, converged, it = float(np.var(y_N)) or 1.0, False, 0
    for it in range(1, max_iter + 1):
        theta = scipy.linalg.solve(G / s2 + Q_PxP, Xty / s2, assume_a="pos")
        rss = rss_at(theta)
        new = (-N + np.sqrt(N * N + 4.0 * rss)) / 2.0
        done = abs(new - s2) <= tol * s2
        s2 = new
        if done:
            converged = True
            break
    theta = scipy.linalg.solve(G / s2 + Q_PxP, Xty / s2, assume_a="pos")
    resid = y_N - X.matvec(theta)
    return MapResult(theta, G / s2 + Q_PxP, resid / s2, np.full(N, 1.0 / s2),
                     float(resid @ resid) / s2, N, it,
                     converged, sigma=float(np.sqrt(s2)))


def covariance(X: StructuredX, res: MapResult, Q_PxP: np.ndarray, kind: str,
               groups: np.ndarray | None = None) -> np.ndarray:
    """Posterior covariance of theta at the mode.

    laplace:    H^-1.
    dispersion: phi H^-1, phi = Pearson chi^2 / (N - P) (quasi-likelihood).
    sandwich:   H^-1 (B + Q) H^-1, B = sum of score outer products (per cluster when
                `groups` is given, units randomised together), leverage-corrected. Keeping
                Q in the meat makes it H^-1 when the model's variance is right, and leaves
                directions that only the prior identifies at their prior variance.
    """
    if kind not in COVARIANCES:
        raise ValueError(f"covariance must be one of {COVARIANCES}, got {kind!r}")
    H_inv = scipy.linalg.cho_solve(scipy.linalg.cho_factor(res.hessian), np.eye(len(res.theta)))
    n_params = len(res.theta)
    if kind == "laplace":
        return H_inv
    if kind == "dispersion":
        phi = res.pearson / max(res.n_obs - n_params, 1)
        return phi * H_inv
    # leverage h_i = w_i x_i' H^-1 x_i, summed per cluster: a fit pulls its own residuals
    # toward zero, most where a cluster carries much of a parameter's information (a
    # week seen in a few A/B tests); scaling residuals by (1 - leverage)^-1/2 undoes that
    # (HC2 per unit, a scalar CR2 per cluster) and stands in for the N/(N-P) factors.
    lev_N = res.weight * X.row_variance(H_inv)
    if groups is not None:
        _, g_codes = np.unique(groups, return_inverse=True)
        lev_N = np.bincount(g_codes, weights=lev_N)[g_codes]
    resid = res.resid / np.sqrt(1.0 - np.clip(lev_N, 0.0, 0.99))
    if groups is None:
        meat = X.gram(resid ** 2)
    else:
        meat, _ = X.cluster_meat(resid, groups)
    cov = H_inv @ (meat + Q_PxP) @ H_inv
    return (cov + cov.T) / 2.0
