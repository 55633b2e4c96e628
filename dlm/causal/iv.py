"""An endogenous confounder with an instrument: P's effect on the outcome by control function.

P (e.g. popularity) raises the outcome but is itself caused by the text, the confounders
and unobserved unit shocks that also move the outcome. Three estimators of P's effect,
all with the existing estimator (dlm.causal.fit: text term + structured confounders):

  ignored           P left out: its effect is implicitly 0 (the text and C terms absorb
                    what they can of it: the text's coefficients are then its total
                    effect, P's path included);
  exogenous         P as one more numeric confounder: biased, P carries the shared shocks;
  control_function  first stage P ~ Z + C + text (a real outcome fit), its residual v added
                    to the outcome model beside P. v soaks up the shocks P shares with the
                    outcome, so P's coefficient is its causal effect, given the
                    assumptions: Z randomised (independent of the shocks), Z moves P
                    (relevance: first-stage F well above 10), Z reaches the outcome only
                    through P (exclusion), and the shocks' part correlated with P is
                    linear in v (exact for normal shocks; with a logit link a small
                    attenuation remains).

Intervals. exogenous: the fit's (sandwich by default, clustered when groups are given).
control_function: percentile bootstrap over rows, or over groups when groups are given
(both stages refitted per replicate, so the first stage's uncertainty is in the interval);
with bootstrap=0 the second stage's own interval, which treats the first stage as known
(too narrow). Pass groups when rows share a unit (a story's postings share its text and
any misfit of it): on the popularity world a row bootstrap gave intervals ~1.5x too narrow.
The first-stage F is the squared robust Wald t of Z (one instrument); F < 10 warns.

Each estimate also carries its outcome model's text coefficients (text_coef), and the
control function the first stage's (P per text unit), so a caller can build the text's
total effect: text_coef + effect * first_stage_text_coef.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Mapping

import numpy as np

from dlm.causal.fit import EstimatorConfig, Fit, fit
from dlm.data.log import Confounder

ESTIMATORS = ("ignored", "exogenous", "control_function")
RESIDUAL = "first_stage_residual"
WEAK_F = 10.0


class WeakInstrumentWarning(UserWarning):
    """The first stage's F statistic is below 10: IV estimates are biased and intervals off."""


@dataclasses.dataclass(frozen=True)
class EndogenousEffect:
    """One estimator's estimate of P's effect (on the outcome's logit or units)."""

    estimator: str
    effect: float
    lo: float                 # interval at cfg.interval (nan: not estimated)
    hi: float
    interval: str             # "none" | "sandwich" | "bootstrap" | "second stage only"
    first_stage_F: float      # nan for estimators without a first stage
    # [F] per text unit: the outcome model's text coefficients (P held fixed, except for
    # "ignored"), and the first stage's (control function only; None elsewhere)
    text_coef: np.ndarray | None = dataclasses.field(default=None, compare=False)
    first_stage_text_coef: np.ndarray | None = dataclasses.field(default=None, compare=False)


def _split(confounders: Mapping[str, Confounder], endogenous: str, instrument: str):
    """(other confounders, P values, Z values), checked."""
    for role, name in (("endogenous", endogenous), ("instrument", instrument)):
        if name not in confounders:
            raise ValueError(f"{role} confounder {name!r} is not a column; "
                             f"have {sorted(confounders)}")
        if confounders[name].kind != "numeric":
            raise ValueError(f"{role} confounder {name!r} must be numeric, "
                             f"is {confounders[name].kind}")
    if endogenous == instrument:
        raise ValueError(f"{endogenous!r} cannot be its own instrument")
    P = np.asarray(confounders[endogenous].values, np.float64)
    Z = np.asarray(confounders[instrument].values, np.float64)
    for name, v in ((endogenous, P), (instrument, Z)):
        bad = ~np.isfinite(v)
        if bad.any():
            row = int(np.flatnonzero(bad)[0]) + 1
            raise ValueError(f"column {name!r} is not finite at row {row}")
    if np.ptp(Z) == 0:
        raise ValueError(f"instrument {instrument!r} is constant: it cannot move {endogenous!r}")
    rest = {k: c for k, c in confounders.items() if k not in (endogenous, instrument)}
    return rest, P, Z


def _slope(f: Fit, name: str) -> tuple[float, float, float, float]:
    """(mean, sd, lo, hi) of a numeric confounder's slope in a fit."""
    row = f.effects().set_index(["parameter", "level"]).loc[(name, "slope")]
    return float(row["mean"]), float(row["sd"]), float(row["lo"]), float(row["hi"])


def first_stage(P, Z, confounders: Mapping[str, Confounder], text_NxF, cfg: EstimatorConfig,
                *, instrument: str = "instrument", groups=None
                ) -> tuple[np.ndarray, float, np.ndarray]:
    """P ~ Z + C + text (dlm.causal.fit, real outcome) -> (residual v [N], F of Z, P's text
    coefficients [F])."""
    conf = dict(confounders) | {instrument: Confounder("numeric", np.asarray(Z, np.float64))}
    f = fit(text_NxF=text_NxF, confounders=conf, cfg=cfg, outcome=P, groups=groups,
            source="<first stage>")
    mean, sd, _, _ = _slope(f, instrument)
    resid = np.asarray(P, np.float64) - f.predict(text_NxF, conf)
    return resid, (mean / sd) ** 2 if sd > 0 else float("inf"), f.text_coef


def _control_function(successes, trials, text_NxF, rest, P, Z, endogenous, instrument, cfg,
                      groups):
    """(mean, sd, lo, hi) of P's slope, F, the second stage's and the first stage's text
    coefficients."""
    v, F, first_text = first_stage(P, Z, rest, text_NxF, cfg, instrument=instrument,
                                   groups=groups)
    conf = dict(rest) | {endogenous: Confounder("numeric", P), RESIDUAL: Confounder("numeric", v)}
    f = fit(successes, trials, text_NxF, conf, cfg, groups=groups, source="<control function>")
    return (*_slope(f, endogenous), F, f.text_coef, first_text)


def estimate_endogenous(successes, trials, text_NxF, confounders: Mapping[str, Confounder], *,
                        endogenous: str, instrument: str,
                        cfg: EstimatorConfig = EstimatorConfig(), groups=None,
                        bootstrap: int = 100, seed: int = 0) -> dict[str, EndogenousEffect]:
    """P's effect by each estimator in ESTIMATORS, from binomial outcomes (successes out of
    trials), a text representation [N, F] and the confounders, where `endogenous` names P's
    column and `instrument` Z's (both numeric; Z is left out of every outcome model: it
    acts only through P). Warns (WeakInstrumentWarning) when the first-stage F < 10."""
    rest, P, Z = _split(confounders, endogenous, instrument)
    nan = float("nan")
    f = fit(successes, trials, text_NxF, rest, cfg, groups=groups, source="<ignored>")
    out = {"ignored": EndogenousEffect("ignored", 0.0, nan, nan, "none", nan, f.text_coef)}
    f = fit(successes, trials, text_NxF, dict(rest) | {endogenous: confounders[endogenous]}, cfg,
            groups=groups, source="<exogenous>")
    mean, _, lo, hi = _slope(f, endogenous)
    out["exogenous"] = EndogenousEffect("exogenous", mean, lo, hi, cfg.covariance, nan,
                                        f.text_coef)
    mean, _, lo, hi, F, text_coef, first_text = _control_function(
        successes, trials, text_NxF, rest, P, Z, endogenous, instrument, cfg, groups)
    if F < WEAK_F:
        warnings.warn(f"weak instrument {instrument!r}: first-stage F = {F:.1f} < {WEAK_F:g}; "
                      f"the IV estimate of {endogenous!r}'s effect is biased towards the "
                      "exogenous one and its interval unreliable", WeakInstrumentWarning,
                      stacklevel=2)
    kind = "second stage only"
    if bootstrap > 0:
        lo, hi, kind = *_bootstrap(successes, trials, text_NxF, rest, P, Z, endogenous,
                                   instrument, cfg, groups, bootstrap, seed), "bootstrap"
    out["control_function"] = EndogenousEffect("control_function", mean, lo, hi, kind, F,
                                               text_coef, first_text)
    return out


def _bootstrap(successes, trials, text_NxF, rest, P, Z, endogenous, instrument, cfg, groups,
               n_boot: int, seed: int) -> tuple[float, float]:
    """Percentile interval of the control-function estimate, resampling rows (or groups)."""
    rng = np.random.default_rng(seed)
    n = len(P)
    text = None if text_NxF is None else np.asarray(text_NxF)
    if groups is not None:      # row indices of each group, to resample whole groups
        codes = np.unique(groups, return_inverse=True)[1]
        members = np.split(np.argsort(codes, kind="stable"), np.cumsum(np.bincount(codes))[:-1])
    draws = []
    for _ in range(n_boot):
        if groups is None:
            idx = rng.integers(0, n, n)
            g = None
        else:
            pick = rng.integers(0, len(members), len(members))
            idx = np.concatenate([members[k] for k in pick])
            g = np.repeat(np.arange(len(pick)), [len(members[k]) for k in pick])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = _control_function(
                np.asarray(successes)[idx], np.asarray(trials)[idx],
                None if text is None else text[idx], {k: c.take(idx) for k, c in rest.items()},
                P[idx], Z[idx], endogenous, instrument, cfg, g)
        draws.append(est[0])
    level = cfg.interval
    lo, hi = np.quantile(draws, [0.5 - level / 2, 0.5 + level / 2])
    return float(lo), float(hi)


def control_function_log(log, text_NxF, *, endogenous: str, instrument: str,
                         cfg: EstimatorConfig = EstimatorConfig(), bootstrap: int = 100,
                         seed: int = 0):
    """A binomial ObservationalLog whose confounders hold P (`endogenous`) and Z
    (`instrument`), both numeric -> (fit_log, effects): fit_log has Z removed (it acts only
    through P) and the first-stage residual added as a control, so a deconfound fit on it
    gives P's causal slope and a g(C) whose subtraction removes every confounder's
    structural effect, P's included (the residual is orthogonal to the text by construction:
    subtracting its term removes shocks, not text effect). effects: `estimate_endogenous`'s
    three estimates (the control function's with its bootstrap interval and first-stage F;
    WeakInstrumentWarning when F < 10)."""
    if not log.is_binomial:
        raise ValueError(f"{log.source}: an endogenous confounder needs binomial counts "
                         "(successes, trials)")
    effects = estimate_endogenous(log.successes, log.trials, text_NxF, log.confounders,
                                  endogenous=endogenous, instrument=instrument, cfg=cfg,
                                  groups=log.group, bootstrap=bootstrap, seed=seed)
    rest, P, Z = _split(log.confounders, endogenous, instrument)
    v, _, _ = first_stage(P, Z, rest, text_NxF, cfg, instrument=instrument, groups=log.group)
    conf = {k: c for k, c in log.confounders.items() if k != instrument}
    conf[RESIDUAL] = Confounder("numeric", v)
    return dataclasses.replace(log, confounders=conf), effects
