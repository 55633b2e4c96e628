"""The estimator as a NumPyro model: the log posterior the Newton MAP maximises, for SVI/NUTS.

    y_i ~ Binomial(n_i, sigmoid(eta_i))   or   y_i ~ Normal(eta_i, sigma) (standardised y)
    eta_i = a + h_i . w + g(C_i)
    a ~ Normal(0, 10 * confounder_scale)  (practically flat: the block means go to zero)
    w ~ Normal(0, text_scale)            (standardised text features: shrunk)
    categorical levels, numeric slopes, spline coefficients ~ Normal(0, confounder_scale)
    random-walk time: level ~ Normal(0, confounder_scale), steps ~ Normal(0, rw_scale)
    sigma ~ HalfNormal(1)                (real outcome only)

The parameter vector theta = [a, w (F), g-parameters (ConfounderDesign layout)] is what
fit.py works in; `theta_to_sites` / `sites_to_theta` translate (the random walk is sampled
as level + steps, a unit-Jacobian linear map of its period values, which NUTS mixes well).
Arrays in, arrays out: no Flax here.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoMultivariateNormal
from numpyro.infer.initialization import init_to_value
from numpyro.infer.util import log_density as _numpyro_log_density

from dlm.causal.design import ConfounderDesign, StructuredX

INTERCEPT_SCALE_FACTOR = 10.0   # intercept prior sd = this x confounder_scale


@dataclasses.dataclass(frozen=True, eq=False)
class ModelSpec:
    """Everything static about the model: structure, family and prior scales."""

    design: ConfounderDesign
    n_text: int
    family: str                      # "binomial" | "normal"
    text_scale: float = 1.0
    confounder_scale: float = 10.0
    rw_scale: float = 0.1

    @property
    def n_params(self) -> int:
        return 1 + self.n_text + self.design.n_params

    @property
    def g_offset(self) -> int:
        return 1 + self.n_text

    def prior_precision(self) -> np.ndarray:
        """Prior precision of theta [P, P] (the same priors as the NumPyro model)."""
        Q = np.zeros((self.n_params, self.n_params))
        Q[0, 0] = 1.0 / (INTERCEPT_SCALE_FACTOR * self.confounder_scale) ** 2
        Q[1:self.g_offset, 1:self.g_offset] = np.eye(self.n_text) / self.text_scale ** 2
        Q[self.g_offset:, self.g_offset:] = self.design.prior_precision(
            self.confounder_scale, self.rw_scale)
        return Q

    def is_rw(self, block) -> bool:
        return block.kind == "time" and self.design.time_basis == "rw" and block.basis is None

    def site_names(self) -> list[str]:
        names = ["intercept"] + (["text"] if self.n_text else [])
        for b in self.design.blocks:
            names += [f"C:{b.name}:level", f"C:{b.name}:steps"] if self.is_rw(b) else [f"C:{b.name}"]
        return names + (["sigma"] if self.family == "normal" else [])


def model_args(x_g: StructuredX, text_NxF: np.ndarray) -> tuple:
    """The model's data arguments from the (uncentred) g rows and standardised text."""
    codes = tuple(jnp.asarray(c) for c, _, _ in x_g.blocks)
    return jnp.asarray(text_NxF), jnp.asarray(x_g.dense_NxD), codes


def make_model(spec: ModelSpec):
    """The NumPyro model: model(text_NxF, numeric_NxQ, codes, successes, trials, outcome)."""
    d, cs = spec.design, spec.confounder_scale

    def block_values(b):
        if spec.is_rw(b):
            level = numpyro.sample(f"C:{b.name}:level", dist.Normal(0.0, cs))
            steps = numpyro.sample(f"C:{b.name}:steps",
                                   dist.Normal(0.0, spec.rw_scale).expand([b.size - 1]).to_event(1))
            return level + jnp.concatenate([jnp.zeros(1), jnp.cumsum(steps)])
        coef = numpyro.sample(f"C:{b.name}", dist.Normal(0.0, cs).expand([b.size]).to_event(1))
        return coef if b.basis is None else jnp.asarray(b.basis) @ coef

    def model(text_NxF, numeric_NxQ, codes, successes=None, trials=None, outcome=None):
        a = numpyro.sample("intercept", dist.Normal(0.0, INTERCEPT_SCALE_FACTOR * cs))
        eta_N = a
        if spec.n_text:
            w = numpyro.sample("text", dist.Normal(0.0, spec.text_scale).expand([spec.n_text]).to_event(1))
            eta_N = eta_N + text_NxF @ w
        for j, b in enumerate(d.numeric):
            eta_N = eta_N + numpyro.sample(f"C:{b.name}", dist.Normal(0.0, cs)) * numeric_NxQ[:, j]
        for b, c in zip(d.indexed, codes):
            eta_N = eta_N + block_values(b)[c]
        if spec.family == "binomial":
            numpyro.sample("y", dist.Binomial(total_count=trials, logits=eta_N), obs=successes)
        else:
            sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
            numpyro.sample("y", dist.Normal(eta_N, sigma), obs=outcome)

    return model


def theta_to_sites(spec: ModelSpec, theta: np.ndarray, sigma=None) -> dict[str, np.ndarray]:
    """theta [..., P] -> the model's site values (leading sample axes kept)."""
    sites = {"intercept": theta[..., 0]}
    if spec.n_text:
        sites["text"] = theta[..., 1:spec.g_offset]
    for b in spec.design.blocks:
        block = theta[..., spec.g_offset + b.start: spec.g_offset + b.start + b.size]
        if spec.is_rw(b):
            sites[f"C:{b.name}:level"] = block[..., 0]
            sites[f"C:{b.name}:steps"] = np.diff(block, axis=-1)
        else:
            sites[f"C:{b.name}"] = block[..., 0] if b.kind == "numeric" else block
    if spec.family == "normal" and sigma is not None:
        sites["sigma"] = sigma
    return sites


def sites_to_theta(spec: ModelSpec, sites: Mapping[str, Any]) -> np.ndarray:
    """The model's site values (with leading sample axes) -> theta [..., P]."""
    a = np.asarray(sites["intercept"])
    parts = [a[..., None]]
    if spec.n_text:
        parts.append(np.asarray(sites["text"]))
    for b in spec.design.blocks:
        if spec.is_rw(b):
            level = np.asarray(sites[f"C:{b.name}:level"])[..., None]
            steps = np.asarray(sites[f"C:{b.name}:steps"])
            parts.append(level + np.concatenate([np.zeros_like(level), np.cumsum(steps, -1)], -1))
        else:
            v = np.asarray(sites[f"C:{b.name}"])
            parts.append(v[..., None] if b.kind == "numeric" else v)
    return np.concatenate(parts, axis=-1)


def _obs(spec: ModelSpec, y: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    keys = ("successes", "trials") if spec.family == "binomial" else ("outcome",)
    return {k: jnp.asarray(y[k]) for k in keys}


def log_density(spec: ModelSpec, args: tuple, y: Mapping[str, np.ndarray],
                sites: Mapping[str, Any]) -> jax.Array:
    """NumPyro's log joint density (constrained space, no Jacobian) at `sites`."""
    value, _ = _numpyro_log_density(make_model(spec), args, _obs(spec, y), dict(sites))
    return value


def _as_jnp(sites: Mapping[str, Any]) -> dict[str, jax.Array]:
    return {k: jnp.asarray(v) for k, v in sites.items()}


def run_svi(spec: ModelSpec, args: tuple, y: Mapping[str, np.ndarray],
            init_sites: Mapping[str, Any], *, steps: int, seed: int,
            n_draws: int = 1000, lr: float = 0.01) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """SVI with a full-rank Gaussian guide started at `init_sites` (the MAP): (draws, losses).

    Runs in float64 (scoped): the binomial log likelihood over 1e5 rows is ~1e7 in size.
    """
    with jax.enable_x64(True):
        guide = AutoMultivariateNormal(make_model(spec), init_loc_fn=init_to_value(
            values=_as_jnp(init_sites)), init_scale=0.01)
        # decaying step size: the last iterate, not a noisy neighbour of the optimum
        schedule = optax.cosine_decay_schedule(lr, max(steps, 1), alpha=0.01)
        optim = numpyro.optim.optax_to_numpyro(optax.adam(schedule))
        svi = SVI(make_model(spec), guide, optim, Trace_ELBO())
        res = svi.run(jax.random.PRNGKey(seed), steps, *args, progress_bar=False, **_obs(spec, y))
        draws = guide.sample_posterior(jax.random.PRNGKey(seed + 1), res.params,
                                       sample_shape=(n_draws,))
        return {k: np.asarray(v) for k, v in draws.items()}, np.asarray(res.losses)


def run_nuts(spec: ModelSpec, args: tuple, y: Mapping[str, np.ndarray],
             init_sites: Mapping[str, Any], inverse_mass: np.ndarray | None, *,
             warmup: int, samples: int, seed: int) -> dict[str, np.ndarray]:
    """NUTS started at the MAP; `inverse_mass` (site order of `spec.site_names()`) is the
    Laplace covariance mapped to the sites, a dense preconditioner that makes the
    prior-identified intercept/level ridges cheap to explore."""
    names = tuple(n for n in spec.site_names() if n in init_sites)
    kwargs: dict[str, Any] = {}
    if inverse_mass is not None:
        kwargs = dict(dense_mass=[names], inverse_mass_matrix={names: jnp.asarray(inverse_mass)},
                      adapt_mass_matrix=False)
    with jax.enable_x64(True):
        kernel = NUTS(make_model(spec), init_strategy=init_to_value(values=_as_jnp(init_sites)),
                      **kwargs)
        mcmc = MCMC(kernel, num_warmup=warmup, num_samples=samples, progress_bar=False)
        mcmc.run(jax.random.PRNGKey(seed), *args, **_obs(spec, y))
        return {k: np.asarray(v) for k, v in mcmc.get_samples().items()}


def site_jacobian(spec: ModelSpec) -> np.ndarray:
    """d(flattened sites, in site_names order, sigma excluded) / d theta -> [S, P]."""
    eye_PxP = np.eye(spec.n_params)
    sites = theta_to_sites(spec, eye_PxP)          # each column of theta is a unit vector
    cols = []
    for name in spec.site_names():
        if name == "sigma":
            continue
        v = sites[name]
        cols.append(v[:, None] if v.ndim == 1 else v)
    return np.concatenate(cols, axis=1).T
