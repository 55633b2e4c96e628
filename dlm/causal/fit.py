"""DeconfoundLM's estimator: outcomes given a text representation and structured confounders.

    clicks_i ~ Binomial(n_i, sigmoid(a + h_i . w + g(C_i)))   (or y_i ~ Normal(..., sigma))

h_i is any text representation [N, F] (hand features, embeddings) with no label of which
columns are causal; g has the confounders' known structure (design.py). `fit` finds the
MAP by Newton's method (newton.py) and, on request, runs SVI or NUTS on the same NumPyro
model (estimator_model.py), started at the MAP.

Identifying assumption. Confounder effects are unpenalised (wide priors) while the text
term is shrunk (Normal(0, text_scale) on standardised features). Whatever the data cannot
split between text and confounders therefore goes to the confounders: a text feature that
is exactly collinear with a confounder level (a "Happy Monday!" marker on every Monday
post) is attributed to that level, and a true effect of such a feature is not identified
(it shows up as part of the Monday effect). Text correlated with, but not determined by, C
is identified from the rows where the two disagree (Frisch-Waugh-Lovell).

Reported confounder effects are centred (categorical levels and the time curve minus
their mean over levels, the intercept absorbs the mean; numeric slopes as they are), with
intervals from the joint posterior. The default covariance is a sandwich, because real
outcomes are overdispersed and plain Laplace intervals are too narrow.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Mapping

import jax
import numpy as np
import pandas as pd
import scipy.stats

from dlm.causal import estimator_model as em
from dlm.causal.design import ConfounderDesign, StructuredX, build_design
from dlm.causal.newton import COVARIANCES, MapResult, covariance, newton_binomial, newton_normal
from dlm.causal.rowsum import ShardedRows
from dlm.data.log import Confounder, LogValidationError

METHODS = ("map", "svi", "nuts")
ROWS = ("auto", "memory", "sharded")


@dataclasses.dataclass(frozen=True)
class EstimatorConfig:
    """How to fit g. Scales are prior sds: text on standardised features, the rest raw."""

    method: str = "map"              # map (Newton + covariance) | svi | nuts
    text_scale: float = 1.0
    confounder_scale: float = 10.0
    rw_scale: float = 0.1            # random-walk step sd of a time confounder, per period
    time_basis: str = "rw"           # rw | spline
    spline_df: int = 0               # spline basis size per time confounder (0: ~T/8)
    folds: int = 5
    seed: int = 0
    interval: float = 0.9
    svi_steps: int = 2000
    nuts_warmup: int = 500
    nuts_samples: int = 500
    covariance: str = "sandwich"     # laplace | sandwich | dispersion (method="map")
    tol: float = 1e-8                # Newton decrement at which the MAP counts as converged
    rows: str = "auto"               # MAP row sums: memory (numpy, all rows at once) | sharded
                                     # (rowsum.py: chunks over all devices and processes) |
                                     # auto (sharded above row_chunk rows or on >1 device)
    row_chunk: int = 131072          # sharded: rows per device per step

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.covariance not in COVARIANCES:
            raise ValueError(f"covariance must be one of {COVARIANCES}, got {self.covariance!r}")
        if self.rows not in ROWS:
            raise ValueError(f"rows must be one of {ROWS}, got {self.rows!r}")
        if self.row_chunk < 1:
            raise ValueError(f"row_chunk must be at least 1, got {self.row_chunk}")
        if not 0.0 < self.interval < 1.0:
            raise ValueError(f"interval must be in (0, 1), got {self.interval}")
        if self.folds < 2:
            raise ValueError(f"folds must be at least 2, got {self.folds}")


@dataclasses.dataclass(frozen=True, eq=False)
class Fit:
    """A fitted estimator. Internal parameters theta = [a, w (standardised), g-parameters];
    every public output is on the data's scale (original text units, the outcome's logit or
    units)."""

    spec: em.ModelSpec
    cfg: EstimatorConfig
    theta: np.ndarray                # [P] posterior mean (the MAP for method="map")
    theta_map: np.ndarray            # [P]
    cov: np.ndarray                  # [P, P] covariance at the MAP (cfg.covariance)
    draws: np.ndarray | None         # [S, P] posterior draws (svi, nuts)
    text_mean: np.ndarray            # [F]
    text_sd: np.ndarray              # [F]
    y_loc: float = 0.0               # real outcome: standardisation (binomial: 0, 1)
    y_scale: float = 1.0
    sigma: float | None = None       # real outcome: residual sd on the outcome's scale
    info: Mapping[str, object] = dataclasses.field(default_factory=dict)  # svi_losses: [steps]

    @property
    def design(self) -> ConfounderDesign:
        return self.spec.design

    def _g_part(self, theta: np.ndarray) -> np.ndarray:
        return theta[..., self.spec.g_offset:]

    def _z(self, level: float | None) -> float:
        return float(scipy.stats.norm.ppf(0.5 + (level or self.cfg.interval) / 2.0))

    def _interval(self, x: StructuredX, offset: int, level: float | None):
        """(lo, hi) of x @ theta[offset:] from the draws, or normal from the covariance."""
        level = level or self.cfg.interval
        if self.draws is not None:                  # row chunks: N x S would not fit
            q = np.empty((2, x.n_rows))
            for lo in range(0, x.n_rows, 8192):
                rows = np.arange(lo, min(lo + 8192, x.n_rows))
                vals_NxS = x.take(rows).matvec(self.draws[:, offset:].T)
                q[:, rows] = np.quantile(vals_NxS, [0.5 - level / 2, 0.5 + level / 2], axis=1)
            return self.y_scale * q[0], self.y_scale * q[1]
        mean = x.matvec(self.theta[offset:])
        sd = np.sqrt(x.row_variance(self.cov[offset:, offset:]))
        z = self._z(level)
        return self.y_scale * (mean - z * sd), self.y_scale * (mean + z * sd)

    def g(self, confounders: Mapping[str, Confounder]) -> np.ndarray:
        """Centred g(C) for any rows -> [N], on the logit (or outcome) scale."""
        x = self.design.rows(confounders, centred=True)
        return self.y_scale * x.matvec(self._g_part(self.theta))

    def g_interval(self, confounders: Mapping[str, Confounder], level: float | None = None):
        """Posterior interval (cfg.interval by default) of centred g(C) -> (lo [N], hi [N])."""
        return self._interval(self.design.rows(confounders, centred=True), self.spec.g_offset, level)

    @property
    def text_coef(self) -> np.ndarray:
        """Text coefficients per original feature unit -> [F]."""
        return self.y_scale * self.theta[1:self.spec.g_offset] / self.text_sd

    def predict(self, text_NxF: np.ndarray | None, confounders: Mapping[str, Confounder]) -> np.ndarray:
        """Linear predictor a + h.w + g(C) on the logit (or outcome) scale -> [N]."""
        x_g = self.design.rows(confounders)
        n = x_g.n_rows
        text = _text_array(text_NxF, n, self.spec.n_text, "<predict>")
        X = x_g.with_dense_prefix(np.hstack([np.ones((n, 1)), (text - self.text_mean) / self.text_sd]))
        return self.y_loc + self.y_scale * X.matvec(self.theta)

    def _table(self, A_ExP: np.ndarray, scale: np.ndarray, labels, columns) -> pd.DataFrame:
        mean = scale * (A_ExP @ self.theta)
        level = self.cfg.interval
        if self.draws is not None:
            vals = scale[:, None] * (A_ExP @ self.draws.T)
            lo, hi = np.quantile(vals, [0.5 - level / 2, 0.5 + level / 2], axis=1)
            sd = vals.std(axis=1)
        else:
            sd = scale * np.sqrt(np.clip(np.einsum("ep,pq,eq->e", A_ExP, self.cov, A_ExP), 0, None))
            lo, hi = mean - self._z(level) * sd, mean + self._z(level) * sd
        frame = pd.DataFrame(labels, columns=columns)
        return frame.assign(mean=mean, sd=sd, lo=lo, hi=hi)

    def effects(self) -> pd.DataFrame:
        """Centred confounder effects: columns parameter, level, mean, sd, lo, hi."""
        labels, A_g = self.design.effects_matrix()
        A = np.zeros((len(labels), self.spec.n_params))
        A[:, self.spec.g_offset:] = A_g
        return self._table(A, np.full(len(labels), self.y_scale), labels, ["parameter", "level"])

    def text_effects(self, names: tuple[str, ...] | None = None) -> pd.DataFrame:
        """Text coefficients per original unit: columns feature, mean, sd, lo, hi."""
        F = self.spec.n_text
        names = names or tuple(f"text_{j}" for j in range(F))
        A = np.zeros((F, self.spec.n_params))
        A[np.arange(F), 1 + np.arange(F)] = 1.0
        return self._table(A, self.y_scale / self.text_sd, [(n,) for n in names], ["feature"])


def _text_array(text_NxF, n: int, n_text: int | None, source: str) -> np.ndarray:
    if text_NxF is None:
        text_NxF = np.zeros((n, 0 if n_text is None else n_text))
    text = np.asarray(text_NxF, np.float64)
    if text.ndim != 2 or text.shape[0] != n or (n_text is not None and text.shape[1] != n_text):
        want = f"[{n}, {'F' if n_text is None else n_text}]"
        raise LogValidationError(f"text representation has shape {text.shape}, expected {want}",
                                 source=source, column="text")
    bad = ~np.isfinite(text)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise LogValidationError("text feature is not finite", source=source, row=int(row) + 1,
                                 column=f"text[{col}]")
    return text


def _design_matrix(x_g: StructuredX, text: np.ndarray, t_mean, t_sd) -> StructuredX:
    """[1 | standardised text | g's numeric columns] + g's blocks, the dense part built in
    one allocation (at 10M rows every N x F copy is most of a gigabyte)."""
    n, F = text.shape
    dense = np.empty((n, 1 + F + x_g.n_dense))
    dense[:, 0] = 1.0
    np.subtract(text, t_mean, out=dense[:, 1:1 + F])
    dense[:, 1:1 + F] /= t_sd
    dense[:, 1 + F:] = x_g.dense_NxD
    return StructuredX(dense, x_g.blocks)


def _outcome_arrays(successes, trials, outcome, n: int, source: str) -> dict[str, np.ndarray]:
    """Validated outcome columns: {successes, trials} or {outcome}."""
    if (outcome is None) == (successes is None or trials is None):
        raise ValueError("give either successes and trials, or outcome")
    cols = {"outcome": outcome} if outcome is not None else {"successes": successes, "trials": trials}
    out = {}
    for name, v in cols.items():
        v = np.asarray(v, np.float64)
        if v.shape != (n,):
            raise LogValidationError(f"has shape {v.shape}, expected ({n},)", source=source, column=name)
        bad = ~np.isfinite(v) | ((v < 0) if name != "outcome" else False)
        if np.any(bad):
            raise LogValidationError(f"value {v[bad][0]} is not a finite count" if name != "outcome"
                                     else "value is not finite", source=source,
                                     row=int(np.flatnonzero(bad)[0]) + 1, column=name)
        out[name] = v
    if "trials" in out and np.any(out["successes"] > out["trials"]):
        row = int(np.flatnonzero(out["successes"] > out["trials"])[0]) + 1
        raise LogValidationError("successes exceed trials", source=source, row=row, column="successes")
    return out


def fit(successes=None, trials=None, text_NxF=None, confounders: Mapping[str, Confounder] | None = None,
        cfg: EstimatorConfig = EstimatorConfig(), *, outcome=None, groups=None,
        design: ConfounderDesign | None = None, source: str = "<data>") -> Fit:
    """Fit the estimator to binomial counts (successes, trials) or a real `outcome`.

    text_NxF: [N, F] text representation (None or F=0: no text term, as in partial_out).
    groups: [N] cluster labels for the sandwich covariance (units randomised together).
    design: reuse a ConfounderDesign (cross-fitting builds one on the full data).
    """
    confounders = dict(confounders or {})
    ref = outcome if outcome is not None else successes
    n = len(ref) if ref is not None else 0
    y = _outcome_arrays(successes, trials, outcome, n, source)
    design = design or build_design(confounders, time_basis=cfg.time_basis,
                                    spline_df=cfg.spline_df, source=source)
    x_g = design.rows(confounders, source=source) if design.blocks else StructuredX(np.zeros((n, 0)), [])
    if x_g.n_rows != n:
        raise LogValidationError(f"confounders have {x_g.n_rows} rows, the outcome has {n}",
                                 source=source)
    text = _text_array(text_NxF, n, None, source)
    t_mean = text.mean(axis=0) if n else np.zeros(text.shape[1])
    t_sd = text.std(axis=0) if n else np.ones(text.shape[1])
    t_sd = np.where(t_sd > 0, t_sd, 1.0)                 # a constant column: prior only
    X = _design_matrix(x_g, text, t_mean, t_sd)
    family = "binomial" if outcome is None else "normal"
    spec = em.ModelSpec(design, text.shape[1], family, cfg.text_scale, cfg.confounder_scale,
                        cfg.rw_scale)
    Q = spec.prior_precision()
    y_loc, y_scale = 0.0, 1.0
    start = time.perf_counter()
    sharded = cfg.rows == "sharded" or (cfg.rows == "auto" and (
        n > cfg.row_chunk or jax.device_count() > 1))
    if family == "binomial":
        rows = ShardedRows(X, y["successes"], y["trials"], family=family,
                           chunk=cfg.row_chunk) if sharded else None
        res = newton_binomial(X, y["successes"], y["trials"], Q, tol=cfg.tol, rows=rows)
    else:
        y_loc, y_scale = float(np.mean(y["outcome"])), float(np.std(y["outcome"])) or 1.0
        y = {"outcome": (y["outcome"] - y_loc) / y_scale}
        rows = ShardedRows(X, y["outcome"], np.ones(n), family=family,
                           chunk=cfg.row_chunk) if sharded else None
        res = newton_normal(X, y["outcome"], Q, tol=cfg.tol, rows=rows)
    cov = covariance(X, res, Q, cfg.covariance, None if groups is None else np.asarray(groups))
    info = {"iterations": res.iterations, "converged": res.converged, "n_rows": n,
            "n_params": spec.n_params, "map_seconds": time.perf_counter() - start,
            "map_rows": "sharded" if sharded else "memory",
            "dispersion": res.pearson / max(res.n_obs - spec.n_params, 1)}
    draws = None
    if cfg.method != "map":
        draws, extra = _sample(spec, cfg, x_g, X.dense_NxD[:, 1:1 + text.shape[1]], y, res)
        info.update(extra)
    theta = res.theta if draws is None else draws.mean(axis=0)
    sigma = None if res.sigma is None else res.sigma * y_scale
    return Fit(spec, cfg, theta, res.theta, cov, draws, t_mean, t_sd, y_loc, y_scale, sigma, info)


def _sample(spec: em.ModelSpec, cfg: EstimatorConfig, x_g: StructuredX, text_std: np.ndarray,
            y: Mapping[str, np.ndarray], res: MapResult) -> tuple[np.ndarray, dict]:
    """Posterior draws of theta [S, P] by SVI or NUTS on the NumPyro model, from the MAP,
    and what the run reports about its convergence: {"svi_losses": [steps]} (the -ELBO
    per step, which diagnostics plot) or {"sample_seconds"} for NUTS (whose split R-hat
    diagnostics compute from the draws)."""
    start = time.perf_counter()
    args = em.model_args(x_g, text_std)
    init = em.theta_to_sites(spec, res.theta, sigma=res.sigma)
    if cfg.method == "svi":
        sites, losses = em.run_svi(spec, args, y, init, steps=cfg.svi_steps, seed=cfg.seed)
        extra = {"svi_losses": np.asarray(losses, np.float64)}
    else:
        J = em.site_jacobian(spec)
        laplace = covariance(None, res, spec.prior_precision(), "laplace")
        inv_mass = J @ laplace @ J.T
        if res.sigma is not None:         # log sigma: var ~ 1 / (2N) around its mode
            inv_mass = np.pad(inv_mass, ((0, 1), (0, 1)))
            inv_mass[-1, -1] = 1.0 / (2.0 * max(res.n_obs, 1))
        sites = em.run_nuts(spec, args, y, init, inv_mass, warmup=cfg.nuts_warmup,
                            samples=cfg.nuts_samples, seed=cfg.seed)
        extra = {}
    extra["sample_seconds"] = time.perf_counter() - start
    return em.sites_to_theta(spec, sites), extra
