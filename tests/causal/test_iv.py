"""The popularity (IV) world option of sims.headlines and dlm.causal.iv's estimators."""
import warnings

import jax
import numpy as np
import pytest

from dlm.causal import iv
from dlm.data.builtin_corpus import builtin_corpus
from dlm.data.log import Confounder
from sims.headlines import HeadlineWorld, HeadlineWorldConfig


N = 2000
CFG = HeadlineWorldConfig(popularity=True, promotion_strength=1.0)


@pytest.fixture(scope="module")
def corpus():
    return builtin_corpus(n_stories=60, seed=1)


@pytest.fixture(scope="module")
def world(corpus):
    return HeadlineWorld(corpus, CFG)


@pytest.fixture(scope="module")
def s(world):
    """One log of the popularity world (sampling compiles per world and size: share it)."""
    return world.sample(jax.random.PRNGKey(0), N)


def _estimate(s, **kw):
    return iv.estimate_endogenous(s.log.successes, s.log.trials, s.phi, s.log.confounders,
                                  endogenous="popularity", instrument="promotion", **kw)


def test_popularity_world_follows_its_structural_equation(world, s):
    cfg = CFG
    assert {"popularity", "promotion"} <= set(s.log.confounders)
    np.testing.assert_array_equal(s.log.confounders["popularity"].values, s.popularity)
    assert set(np.unique(s.promotion)) == {0.0, 1.0}
    assert s.promotion.mean() == pytest.approx(cfg.promotion_rate, abs=0.04)
    e = s.popularity - (cfg.popularity_tau * s.tau + cfg.popularity_confounding * s.g
                        + cfg.promotion_strength * s.promotion
                        + cfg.popularity_u * s.u / cfg.unit_noise_sd)
    assert e.mean() == pytest.approx(0.0, abs=0.07)
    assert e.std() == pytest.approx(cfg.popularity_sd, rel=0.06)
    assert abs(np.corrcoef(e, s.promotion)[0, 1]) < 0.06          # Z randomised
    assert world.truth()["popularity_effect"] == cfg.popularity_effect


def test_popularity_option_leaves_the_default_draws_alone(corpus, s):
    """P's sites come after every existing one: the draws up to u are the default world's
    for the same key, so the default world's numbers do not change."""
    base = HeadlineWorld(corpus).sample(jax.random.PRNGKey(0), N)
    for name in ("story", "headline", "marker", "tau", "g", "u"):
        np.testing.assert_array_equal(getattr(s, name), getattr(base, name))
    assert "popularity" not in base.log.confounders and base.popularity is None


def _estimate(s, confounders=None, **kw):
    return iv.estimate_endogenous(s.log.successes, s.log.trials, s.phi,
                                  confounders or s.log.confounders,
                                  endogenous="popularity", instrument="promotion", **kw)


def test_iv_recovers_the_effect_and_the_exogenous_adjustment_does_not(world, s):
    beta_P = world.truth()["popularity_effect"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", iv.WeakInstrumentWarning)   # strong: must not warn
        out = _estimate(s, bootstrap=30, seed=0)
    cf, exo = out["control_function"], out["exogenous"]
    assert cf.first_stage_F > 100 and cf.interval == "bootstrap"
    assert cf.lo <= beta_P <= cf.hi, cf
    assert not exo.lo <= beta_P <= exo.hi, exo
    assert exo.effect - beta_P > 0.05                 # P carries the shared shock u upwards
    assert abs(cf.effect - beta_P) < 0.03
    assert out["ignored"].effect == 0.0


def test_weak_instrument_warns(s):
    """A coin unrelated to P as the instrument: F ~ chi2(1), far below 10."""
    conf = dict(s.log.confounders)
    coin = np.random.default_rng(0).integers(0, 2, N).astype(float)
    conf["promotion"] = Confounder("numeric", coin)
    with pytest.warns(iv.WeakInstrumentWarning, match="first-stage F"):
        out = _estimate(s, conf, bootstrap=0)
    assert out["control_function"].first_stage_F < 10
    assert out["control_function"].interval == "second stage only"


def test_bad_instrument_raises(s):
    conf = dict(s.log.confounders)
    conf["promotion"] = Confounder("numeric", np.ones(N))
    with pytest.raises(ValueError, match="instrument 'promotion' is constant"):
        _estimate(s, conf)
    with pytest.raises(ValueError, match="instrument confounder 'slot' is not a column"):
        iv.estimate_endogenous(s.log.successes, s.log.trials, s.phi, s.log.confounders,
                               endogenous="popularity", instrument="slot")
    conf = dict(s.log.confounders)
    conf["popularity"] = Confounder("numeric", np.where(np.arange(N) == 7, np.nan, s.popularity))
    with pytest.raises(ValueError, match="'popularity' is not finite at row 8"):
        _estimate(s, conf)
    conf = dict(s.log.confounders)
    conf["promotion"] = s.log.confounders["weekday"]
    with pytest.raises(ValueError, match="must be numeric"):
        _estimate(s, conf)


def test_iv_table_script_tiny(tmp_path):
    import pandas as pd

    from scripts import iv_table
    out = tmp_path / "iv"
    rc = iv_table.main(["--preset", "tiny", "--out", str(out), "--set", "strengths=1.0",
                        "--set", "n_postings=300", "--set", "bootstrap=3"])
    assert rc == 0
    frame = pd.read_csv(out / "results.csv")
    assert sorted(frame["estimator"]) == sorted(iv.ESTIMATORS)
    np.testing.assert_allclose(frame["bias"], frame["effect"] - 0.2)
    assert frame.set_index("estimator").loc["ignored", "bias"] == pytest.approx(-0.2)
    assert "first-stage F" in (out / "summary.md").read_text()


def test_iv_table_bad_config_fails_and_writes_nothing(tmp_path):
    from scripts import iv_table
    out = tmp_path / "iv"
    with pytest.raises(SystemExit) as exit_info:     # dlm.cli.UsageExit: a bad --set exits 2
        iv_table.main(["--preset", "tiny", "--out", str(out), "--set", "seeds=0"])
    assert exit_info.value.code == 2
    assert not out.exists()
