"""The popularity (IV) world option of sims.headlines and dlm.causal.iv's estimators."""
import dataclasses
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


def _estimate(s, confounders=None, **kw):
    return iv.estimate_endogenous(s.log.successes, s.log.trials, s.phi,
                                  confounders or s.log.confounders,
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


LAM = {"emotive": 2.0}    # P's text path besides tau (the iv_table presets' lambda)
CFG_TEXT = dataclasses.replace(CFG, popularity_text=LAM)


@pytest.fixture(scope="module")
def world_text(corpus):
    return HeadlineWorld(corpus, CFG_TEXT)


@pytest.fixture(scope="module")
def s_text(world_text):
    return world_text.sample(jax.random.PRNGKey(0), N)


def test_popularity_text_shifts_P_by_lambda_phi_and_nothing_else(s, s_text):
    """Same key: every draw is the same, and P moves by exactly 2 per emotive word."""
    for name in ("story", "headline", "marker", "tau", "g", "u", "promotion"):
        np.testing.assert_array_equal(getattr(s_text, name), getattr(s, name))
    emotive = s.phi[:, 4]
    assert set(np.unique(emotive)) >= {0.0, 1.0}
    np.testing.assert_allclose(s_text.popularity - s.popularity, 2.0 * emotive, atol=1e-5)


def test_true_total_effect_by_hand(world, world_text, corpus):
    # "An amazing story": length (3 - 10) / 5 = -1.4, one emotive word, nothing else
    tau = -0.05 * -1.4 + 0.15
    text = ["An amazing story"]
    assert world_text.true_effect(text)[0] == pytest.approx(tau)
    # tau directly, beta_P * (tau + 2 * emotive) through P
    assert world_text.true_total_effect(text)[0] == pytest.approx(tau + 0.2 * (tau + 2.0))
    assert world.true_total_effect(text)[0] == pytest.approx(1.2 * tau)   # lambda = 0
    default = HeadlineWorld(corpus)
    assert default.true_total_effect(text)[0] == pytest.approx(tau)      # no P at all
    assert world_text.truth()["popularity_text"]["emotive"] == 2.0


def test_popularity_text_checks():
    with pytest.raises(ValueError, match="needs popularity=True"):
        HeadlineWorldConfig(popularity_text=LAM)
    with pytest.raises(ValueError, match="popularity_text has unknown features"):
        HeadlineWorldConfig(popularity=True, popularity_text={"emotional": 1.0})
    with pytest.raises(ValueError, match="popularity_text needs 6 values"):
        HeadlineWorldConfig(popularity=True, popularity_text=(1.0, 2.0))


def test_iv_reward_carries_P_path_and_the_exogenous_one_does_not(world_text, s_text):
    """Strong instrument, P loading on emotive: the control function's implied reward
    (direct + beta_P * first stage) ranks candidates by the total effect better than the
    exogenous one (which subtracts P's path) and than the true direct effect tau itself."""
    from dlm.eval.causal_metrics import causal_corr
    from sims.experiments.iv_table import implied_text_effect
    from sims.featurise import phi

    with warnings.catch_warnings():
        warnings.simplefilter("error", iv.WeakInstrumentWarning)
        out = _estimate(s_text, bootstrap=0)
    assert out["control_function"].first_stage_F > 100
    texts = [t for c in world_text.candidates for t in c]
    total = world_text.true_total_effect(texts)
    phi_E = phi(texts).astype(np.float64)
    corr = {k: causal_corr(lambda _, e=e: phi_E @ implied_text_effect(e), texts, total)
            for k, e in out.items()}
    direct = causal_corr(world_text.true_effect, texts, total)
    assert corr["control_function"] > 0.95 and corr["ignored"] > 0.95, corr
    assert corr["control_function"] > direct + 0.1, (corr, direct)
    assert corr["exogenous"] < direct - 0.2, (corr, direct)
    # P's text coefficient on emotive is lambda + popularity_tau * beta_emotive = 2.15
    first = out["control_function"].first_stage_text_coef
    assert first[4] == pytest.approx(2.15, abs=0.15)


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
    assert frame["causal_corr"].between(-1, 1).all()
    assert (frame["objective"] <= frame["objective_oracle"] + 1e-12).all()
    assert (frame["objective_random"] < frame["objective_oracle"]).all()
    text = (out / "summary.md").read_text()
    assert "first-stage F" in text and "| causal_corr | objective |" in text
    assert "oracle (picks by the total effect)" in text


def test_iv_table_bad_config_fails_and_writes_nothing(tmp_path):
    from scripts import iv_table
    out = tmp_path / "iv"
    with pytest.raises(SystemExit) as exit_info:     # dlm.cli.UsageExit: a bad --set exits 2
        iv_table.main(["--preset", "tiny", "--out", str(out), "--set", "seeds=0"])
    assert exit_info.value.code == 2
    assert not out.exists()
    with pytest.raises(SystemExit) as exit_info:     # lambda needs one weight per base feature
        iv_table.main(["--preset", "tiny", "--out", str(out), "--set", "popularity_text=1,2"])
    assert exit_info.value.code == 2
    assert not out.exists()
