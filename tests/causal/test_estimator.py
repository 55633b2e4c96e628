"""The estimator on simulated GLM data with known truth, checked against outside references."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm.causal import estimator_model as em
from dlm.causal.fit import EstimatorConfig, fit
from dlm.data.log import Confounder, LogValidationError

WEEKDAY = np.array([0.3, 0.05, 0.0, -0.05, -0.3, 0.02, -0.02])
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def simulate(n=20000, seed=0, F=3, T=20, overdisp=0.0, trials_mean=200, marker_effect=None,
             outcome="binomial"):
    """Rows of a known GLM: weekday effects, a week trend, a log-audience slope 0.2 and F
    text features (shifted on Mondays, so text and C are dependent). marker_effect: add a
    text column that is 1 on exactly every Monday row, with that true effect."""
    rng = np.random.default_rng(seed)
    wd, week, la = rng.integers(0, 7, n), rng.integers(0, T, n), rng.normal(0.0, 0.5, n)
    trend = -0.8 * np.arange(T) / max(T - 1, 1) + 0.1 * np.sin(np.arange(T) / 3.0)
    h = rng.normal(size=(n, F)) + 0.5 * (wd == 0)[:, None]
    beta = np.linspace(0.3, -0.2, F)
    if marker_effect is not None:
        h, beta = np.c_[h, (wd == 0).astype(float)], np.r_[beta, marker_effect]
    eta = -3.0 + h @ beta + WEEKDAY[wd] + trend[week] + 0.2 * la + rng.normal(0.0, overdisp, n)
    conf = {"weekday": Confounder("categorical", wd, DAYS),
            "week": Confounder("time", week, tuple(f"w{t}" for t in range(T))),
            "log_audience": Confounder("numeric", la)}
    out = dict(h=h, conf=conf, beta=beta, weekday=WEEKDAY - WEEKDAY.mean(),
               week=trend - trend.mean(), slope=0.2, eta=eta)
    if outcome == "normal":
        return dict(out, y=eta + rng.normal(0.0, 0.5, n))
    trials = rng.poisson(trials_mean, n).astype(float)
    return dict(out, s=rng.binomial(trials.astype(int), 1 / (1 + np.exp(-eta))).astype(float),
                trials=trials)


def _fit(d, cfg=EstimatorConfig(), **kw):
    return fit(d["s"], d["trials"], d["h"], d["conf"], cfg, **kw)


def _eff(f, name):
    e = f.effects()
    return e[e.parameter == name]


def test_map_recovers_weekday_slope_and_text():
    d = simulate()
    f = _fit(d)
    assert f.info["converged"]
    wd = _eff(f, "weekday")
    assert list(wd.level) == list(DAYS)
    assert np.all(np.abs(wd["mean"] - d["weekday"]) < 4 * wd["sd"])
    assert np.all(np.abs(wd["mean"] - d["weekday"]) < 0.03)
    slope = _eff(f, "log_audience").iloc[0]
    assert abs(slope["mean"] - 0.2) < 4 * slope["sd"] and slope["lo"] < slope["mean"] < slope["hi"]
    np.testing.assert_allclose(f.text_coef, d["beta"], atol=0.015)
    # the week random walk follows the trend; g(C) of every row is the centred truth
    assert np.sqrt(np.mean((_eff(f, "week")["mean"] - d["week"]) ** 2)) < 0.03
    truth_g = d["weekday"][d["conf"]["weekday"].values] + d["week"][d["conf"]["week"].values] \
        + 0.2 * (d["conf"]["log_audience"].values - d["conf"]["log_audience"].values.mean())
    assert np.sqrt(np.mean((f.g(d["conf"]) - truth_g) ** 2)) < 0.03
    lo, hi = f.g_interval(d["conf"])
    assert np.all(lo < f.g(d["conf"])) and np.all(f.g(d["conf"]) < hi)


@pytest.mark.parametrize("family", ["binomial", "normal"])
def test_newton_map_is_the_numpyro_model_stationary_point(family):
    d = simulate(n=3000, T=8, F=2, outcome=family)
    f = _fit(d) if family == "binomial" else fit(None, None, d["h"], d["conf"], outcome=d["y"])
    x_g = f.design.rows(d["conf"])
    args = em.model_args(x_g, (d["h"] - f.text_mean) / f.text_sd)
    y = ({"successes": d["s"], "trials": d["trials"]} if family == "binomial"
         else {"outcome": (d["y"] - f.y_loc) / f.y_scale})
    sigma = None if f.sigma is None else f.sigma / f.y_scale
    with jax.enable_x64(True):
        grad = jax.grad(lambda s: em.log_density(f.spec, args, y, s))
        at = {k: jnp.asarray(v) for k, v in em.theta_to_sites(f.spec, f.theta_map, sigma).items()}
        g_map = max(float(jnp.abs(v).max()) for v in grad(at).values())
        g_off = max(float(jnp.abs(v).max()) for v in grad({k: v + 0.01 for k, v in at.items()}).values())
    assert g_map < 1e-6 * g_off + 1e-6, (g_map, g_off)
    # and the site <-> theta maps are inverse to each other
    np.testing.assert_allclose(em.sites_to_theta(f.spec, em.theta_to_sites(f.spec, f.theta_map)),
                               f.theta_map, atol=1e-12)


@pytest.mark.slow   # ~10-30 s: NumPyro's first eager initialisation compiles op by op
@pytest.mark.parametrize("method", ["svi", "nuts"])
def test_svi_and_nuts_land_near_the_map(method):
    d = simulate(n=2000, T=5, F=2, trials_mean=100, seed=3)
    cfg = EstimatorConfig(covariance="laplace", svi_steps=1000, nuts_warmup=150, nuts_samples=200)
    laplace = _fit(d, cfg)
    sampled = _fit(d, EstimatorConfig(**{**cfg.__dict__, "method": method}))
    a, b = laplace.effects(), sampled.effects()
    assert sampled.draws.shape[1] == laplace.spec.n_params
    assert np.all(np.abs(a["mean"] - b["mean"]) < 0.35 * a["sd"])
    assert np.all((b["sd"] / a["sd"]).between(0.7, 1.4))
    ta, tb = laplace.text_effects(), sampled.text_effects()
    assert np.all(np.abs(ta["mean"] - tb["mean"]) < 0.35 * ta["sd"])


def test_gaussian_outcome_equals_least_squares():
    d = simulate(n=3000, T=6, F=3, outcome="normal", seed=4)
    flat = EstimatorConfig(text_scale=1e3, confounder_scale=1e3, rw_scale=1e3)
    f = fit(None, None, d["h"], d["conf"], flat, outcome=d["y"])
    c = d["conf"]
    X = np.hstack([np.ones((3000, 1)), d["h"], np.eye(7)[c["weekday"].values][:, 1:],
                   np.eye(6)[c["week"].values][:, 1:], c["log_audience"].values[:, None]])
    beta, *_ = np.linalg.lstsq(X, d["y"], rcond=None)
    np.testing.assert_allclose(f.text_coef, beta[1:4], atol=1e-3)
    np.testing.assert_allclose(_eff(f, "log_audience")["mean"], beta[-1], atol=1e-3)
    monday_minus_tuesday = _eff(f, "weekday")["mean"].values[:2] @ [1, -1]
    assert abs(monday_minus_tuesday + beta[4]) < 1e-3        # beta[4]: Tue vs Mon
    resid = d["y"] - X @ beta
    assert abs(f.sigma - np.sqrt(resid @ resid / 3000)) < 0.01


def test_binomial_agrees_with_statsmodels_glm():
    sm = pytest.importorskip("statsmodels.api")
    d = simulate(n=6000, T=8, F=3, seed=5)
    f = _fit(d)
    c = d["conf"]
    X = np.hstack([np.ones((6000, 1)), d["h"], np.eye(7)[c["weekday"].values][:, 1:],
                   np.eye(8)[c["week"].values][:, 1:], c["log_audience"].values[:, None]])
    ref = sm.GLM(np.c_[d["s"], d["trials"] - d["s"]], X, family=sm.families.Binomial()).fit()
    np.testing.assert_allclose(f.text_coef, ref.params[1:4], atol=0.02)
    wd_ref = np.r_[0.0, ref.params[4:10]]
    np.testing.assert_allclose(_eff(f, "weekday")["mean"], wd_ref - wd_ref.mean(), atol=0.02)
    assert abs(_eff(f, "log_audience")["mean"].iloc[0] - ref.params[-1]) < 0.02


def test_marker_collinear_with_monday_is_attributed_to_monday():
    """The marker is on exactly every Monday row. Along the collinear direction only the
    priors decide: raw Monday sd 10 vs marker sd text_scale / sd(marker) = 1 / 0.35, so
    the marker keeps ~7.5% of what the data give Monday + marker, the rest is Monday's."""
    d = simulate(n=20000, F=2, marker_effect=0.0, seed=6)
    f = _fit(d)
    assert abs(_eff(f, "weekday")["mean"].iloc[0] - 0.3) < 0.05
    assert abs(f.text_coef[-1]) < 0.05
    # a true marker effect is not identified: it goes (mostly) to Monday, whose centred
    # effect then reads 0.3 + 6/7 of the marker's share (1/7 is the levels' mean)
    d = simulate(n=20000, F=2, marker_effect=0.2, seed=6)
    f = _fit(d)
    monday, marker = _eff(f, "weekday")["mean"].iloc[0], f.text_coef[-1]
    assert abs(monday + marker * 6 / 7 - (0.3 + 0.2 * 6 / 7)) < 0.03
    assert marker < 0.1 < monday - 0.3
    np.testing.assert_allclose(f.text_coef[:2], d["beta"][:2], atol=0.02)


def test_sandwich_widens_intervals_only_under_overdispersion():
    slope_sd = {}
    for od in (0.0, 0.3):
        d = simulate(n=8000, T=5, F=2, overdisp=od, trials_mean=2000, seed=7)
        for cov in ("laplace", "sandwich", "dispersion"):
            slope_sd[od, cov] = _eff(_fit(d, EstimatorConfig(covariance=cov)), "log_audience")["sd"].iloc[0]
    assert 0.85 < slope_sd[0.0, "sandwich"] / slope_sd[0.0, "laplace"] < 1.15
    assert 0.85 < slope_sd[0.0, "dispersion"] / slope_sd[0.0, "laplace"] < 1.15
    # binomial var of the logit ~ 1/(n p (1-p)) ~ 1/95 vs 0.09 extra: sd ratio ~ sqrt(9.6)
    assert slope_sd[0.3, "sandwich"] / slope_sd[0.3, "laplace"] > 2.5
    assert slope_sd[0.3, "dispersion"] / slope_sd[0.3, "laplace"] > 2.5


def test_sandwich_interval_covers_the_slope_under_overdispersion():
    """The acceptance check in miniature: 90% intervals cover the slope in >= 15 of 20 seeds
    with unit noise u ~ N(0, 0.2) on the logit (Laplace intervals would be ~2.5x too short)."""
    covered = 0
    for seed in range(20):
        d = simulate(n=3000, T=5, F=2, overdisp=0.2, trials_mean=3000, seed=100 + seed)
        s = _eff(_fit(d), "log_audience").iloc[0]
        covered += s["lo"] <= 0.2 <= s["hi"]
    assert covered >= 15


def test_spline_time_basis_follows_a_smooth_trend():
    d = simulate(n=20000, T=60, F=2, seed=8)
    f = _fit(d, EstimatorConfig(time_basis="spline"))
    assert f.spec.design.block("week").size == 8
    assert np.sqrt(np.mean((_eff(f, "week")["mean"] - d["week"]) ** 2)) < 0.04


def test_bad_input_names_row_and_column():
    d = simulate(n=50, T=3, F=2)
    s = d["s"].copy()
    s[9] = d["trials"][9] + 1
    with pytest.raises(LogValidationError, match="file clicks.csv, row 10, column 'successes'"):
        fit(s, d["trials"], d["h"], d["conf"], source="clicks.csv")
    h = d["h"].copy()
    h[4, 1] = np.nan
    with pytest.raises(LogValidationError, match=r"row 5, column 'text\[1\]'"):
        fit(d["s"], d["trials"], h, d["conf"])
    with pytest.raises(LogValidationError, match="shape"):
        fit(d["s"], d["trials"], h[:10], d["conf"])
    with pytest.raises(ValueError, match="method"):
        EstimatorConfig(method="mcmc")
