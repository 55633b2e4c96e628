"""dlm.causal.scm: sampling, vmapped replicates, do() and condition on a toy chain."""
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from dlm.causal import scm


def chain(n):
    """c -> x -> y with y = 2x + c + noise, so do(x) changes y's mean by 2 per unit."""
    with numpyro.plate("units", n):
        c = numpyro.sample("c", dist.Normal(0.0, 1.0))
        x = numpyro.sample("x", dist.Normal(c, 1.0))
        numpyro.deterministic("x2", 2.0 * x)
        return numpyro.sample("y", dist.Normal(2.0 * x + c, 0.1))


def test_sample_sites_returns_named_arrays():
    out = scm.sample_sites(chain, jax.random.PRNGKey(0), 5)
    assert set(out) == {"c", "x", "x2", "y"}
    assert out["x"].shape == (5,)
    np.testing.assert_allclose(out["x2"], 2 * out["x"], rtol=1e-6)
    picked = scm.sample_sites(chain, jax.random.PRNGKey(0), 5, sites=["y"])
    assert set(picked) == {"y"}
    np.testing.assert_array_equal(picked["y"], out["y"])


def test_sample_sites_unknown_site_is_a_clear_error():
    with pytest.raises(KeyError, match="nope"):
        scm.sample_sites(chain, jax.random.PRNGKey(0), 3, sites=["nope"])


def test_sample_many_equals_separate_samples():
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    many = scm.sample_many(chain, keys, 4)
    assert many["y"].shape == (3, 4)
    for r in range(3):
        one = scm.sample_sites(chain, keys[r], 4)
        for name in one:
            np.testing.assert_allclose(many[name][r], one[name], rtol=1e-6, atol=1e-6)


def test_intervene_fixes_the_site_and_propagates():
    x_fixed = jnp.full((2000,), 1.5)
    out = scm.sample_sites(scm.intervene(chain, {"x": x_fixed}), jax.random.PRNGKey(2), 2000)
    # the reported x is the intervened value, and y responds to it: E[y | do(x)] = 2x + E[c]
    np.testing.assert_array_equal(out["x"], x_fixed)
    np.testing.assert_allclose(out["x2"], 3.0)
    assert abs(float(out["y"].mean()) - 3.0) < 0.1
    # c is no longer correlated with x's value (it was the confounder)
    assert abs(float(jnp.corrcoef(out["c"], out["y"])[0, 1]) - 1.0) < 0.05  # y = 3 + c + noise


def test_condition_observes_values():
    y_obs = jnp.arange(3.0)
    out = scm.sample_sites(scm.condition(chain, {"y": y_obs}), jax.random.PRNGKey(3), 3)
    np.testing.assert_array_equal(out["y"], y_obs)
