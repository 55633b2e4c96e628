"""One model, three uses: sample a NumPyro model, intervene on it, condition it.

A world is an ordinary NumPyro model. Running it under `seed` + `trace` gives data
(`sample_sites`, or `sample_many` for many replicates in one vmapped call); wrapping it in
`intervene` (numpyro's `do`) gives the interventional world that defines ground truth;
wrapping it in `condition` and handing it to MCMC/SVI gives an estimator. No Flax here.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
from numpyro import handlers

Model = Callable[..., Any]


def _interventions(model: Model) -> dict[str, Any]:
    """The do() values of every `handlers.do` in the wrapper chain around `model`.

    numpyro's `do` stops the intervened message before outer handlers see it, so a trace
    only records the fresh, non-propagating draw under the site's name; the value the rest
    of the model used has to be read off the handler itself.
    """
    found: dict[str, Any] = {}
    fn = model
    while fn is not None:
        if isinstance(fn, handlers.do) and fn.data:
            found = {**found, **fn.data}   # the innermost do sees the site first and stops it
        fn = getattr(fn, "fn", None)
    return found


def _site_values(tr: Mapping[str, dict], done: Mapping[str, Any],
                 sites: tuple[str, ...] | None) -> dict[str, jax.Array]:
    """Values of sample/deterministic sites, the intervened value where `do` set one."""
    values = {}
    for name, site in tr.items():
        if site["type"] not in ("sample", "deterministic"):
            continue
        value = site["value"]
        if name in done:
            value = jnp.broadcast_to(jnp.asarray(done[name], dtype=value.dtype), value.shape)
        values[name] = value
    if sites is None:
        return values
    missing = [s for s in sites if s not in values]
    if missing:
        raise KeyError(f"sites {missing} not in the model's trace; it has {sorted(values)}")
    return {s: values[s] for s in sites}


def sample_sites(model: Model, key: jax.Array, *args, sites: Iterable[str] | None = None,
                 **kwargs) -> dict[str, jax.Array]:
    """Run `model(*args, **kwargs)` once under `seed(key)` and return its site values.

    `sites` picks which ones (default: every sample and deterministic site). For a model
    wrapped in `intervene` (a `do` anywhere in its chain of handler wrappers), a site's
    value is the one the model used (the intervention), not the fresh draw `do` records.
    """
    tr = handlers.trace(handlers.seed(model, key)).get_trace(*args, **kwargs)
    return _site_values(tr, _interventions(model), None if sites is None else tuple(sites))


def sample_many(model: Model, keys: jax.Array, *args, sites: Iterable[str] | None = None,
                **kwargs) -> dict[str, jax.Array]:
    """`sample_sites` vmapped over a batch of keys: every value gets a leading replicate axis.

    `args`/`kwargs` are closed over (not batched), so shapes such as a sample size may be
    Python ints. Wrap the call in `jax.jit` (with those static) to compile it once.
    """
    sites = None if sites is None else tuple(sites)
    return jax.vmap(lambda k: sample_sites(model, k, *args, sites=sites, **kwargs))(keys)


def intervene(model: Model, values: Mapping[str, Any]) -> Model:
    """do(site = value, ...): the sites take these values and stop depending on their parents."""
    return handlers.do(model, data=dict(values))


def condition(model: Model, data: Mapping[str, Any]) -> Model:
    """Observe sites at `data` (numpyro's `condition`), ready for MCMC or SVI."""
    return handlers.condition(model, data=dict(data))
