"""dlm.causal.diagnostics: collinearity, overlap and convergence against hand computations."""
import dataclasses

import numpy as np
import pytest

from dlm.causal import diagnostics as D
from dlm.causal.fit import EstimatorConfig, fit
from dlm.data.log import Confounder

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@pytest.fixture(scope="module")
def monday_world():
    """A headline-world log whose "Happy Monday! " marker appears only on Mondays."""
    import jax

    from dlm.data.builtin_corpus import builtin_corpus
    from sims.headlines import HeadlineWorld, HeadlineWorldConfig

    world = HeadlineWorld(builtin_corpus(n_stories=120), HeadlineWorldConfig(p_marker=0.8))
    s = world.sample(jax.random.PRNGKey(3), 3000)
    f = fit(s.log.successes, s.log.trials, s.phi, s.log.confounders, EstimatorConfig())
    return s, f


def test_monday_marker_is_flagged_by_name(monday_world):
    from sims.featurise import FEATURES

    s, f = monday_world
    mon = s.log.confounders["weekday"].values == 0
    marker = s.phi[:, FEATURES.index("marker_monday")] > 0
    assert marker.any() and mon[marker].all() and not marker[mon].all()   # only, not every, Monday
    diag = D.diagnose(f, s.phi, FEATURES, s.log.confounders,
                      successes=s.log.successes, trials=s.log.trials)
    col = diag.collinearity.set_index(["feature", "confounder"])
    row = col.loc[("marker_monday", "weekday")]
    assert row.flagged and row.level == "Mon" and row.share == 1.0 and row.units == marker.sum()
    assert row.level_share == pytest.approx(mon.mean())
    assert row["corr"] == pytest.approx(np.corrcoef(marker, mon)[0, 1])
    flagged = set(diag.collinearity[diag.collinearity.flagged].feature)
    assert flagged <= {"marker_monday", "marker_friday"}    # no causal feature is flagged
    assert any("'marker_monday'" in w and "weekday=Mon: 100%" in w for w in diag.warnings)
    # the marker also makes Monday's content distribution stand out from the other days
    ovl = diag.overlap[diag.overlap.confounder == "weekday"].set_index("level")
    assert ovl.loc["Mon", "flagged"] and ovl.max_abs_smd.idxmax() in ("Mon", "Fri")


def test_collinearity_by_hand():
    x = np.array([1, 1, 0, 0, 1, 0, 0, 0, 1, 0], float)           # units: rows 0, 1, 4, 8
    codes = np.array([0, 0, 1, 1, 0, 2, 1, 2, 1, 2])
    conf = {"day": Confounder("categorical", codes, ("a", "b", "c"))}
    cfg = D.DiagnosticsConfig(min_units=4)
    t = D.collinearity(x[:, None], ["x"], conf, cfg).iloc[0]
    assert (t.level, t.units, t.share, t.level_share) == ("a", 4, 0.75, 0.3)
    assert t["corr"] == pytest.approx(np.corrcoef(x, codes == 0)[0, 1])
    assert not t.flagged                                          # 75% < 95%, corr 0.76 < 0.9
    x[8] = 0                                                      # now every unit is in "a"
    t = D.collinearity(x[:, None], ["x"], conf, D.DiagnosticsConfig(min_units=3)).iloc[0]
    assert t.share == 1.0 and t["corr"] == pytest.approx(1.0) and t.flagged
    strict = D.DiagnosticsConfig(min_units=4, corr_threshold=1.1)
    t = D.collinearity(x[:, None], ["x"], conf, strict).iloc[0]
    assert not t.flagged                                          # too few units for the share rule


def test_majority_level_does_not_flag_every_feature():
    rng = np.random.default_rng(0)
    codes = (rng.random(2000) < 0.03).astype(int)                 # level "big" holds ~97% of rows
    x = (rng.random(2000) < 0.3).astype(float)                     # independent of the level
    x[codes == 1] = 0                                              # ... absent from the small level
    t = D.collinearity(x[:, None], ["x"], {"c": Confounder("categorical", codes, ("big", "small"))}).iloc[0]
    assert not t.flagged                            # "big" holds > half the rows: not counted
    t = D.collinearity(x[:, None], ["x"], {"c": Confounder("categorical", codes, ("big", "small"))},
                       D.DiagnosticsConfig(max_level_share=1.0)).iloc[0]
    assert t.level == "big" and t.share == 1.0 and t.flagged


def test_numeric_confounder_correlation():
    rng = np.random.default_rng(1)
    aud = rng.normal(size=500)
    X = np.stack([aud + 0.1 * rng.normal(size=500), rng.normal(size=500)], 1)
    t = D.collinearity(X, ["tracks", "noise"], {"aud": Confounder("numeric", aud)}).set_index("feature")
    assert t.loc["tracks", "corr"] == pytest.approx(np.corrcoef(X[:, 0], aud)[0, 1])
    assert t.loc["tracks", "flagged"] and not t.loc["noise", "flagged"]


def test_overlap_smd_by_hand():
    rng = np.random.default_rng(2)
    codes = np.repeat([0, 1, 2], 200)
    x = rng.normal(size=600) + np.where(codes == 2, 2.5, 0.0)      # level 2's text is shifted
    conf = {"c": Confounder("categorical", codes, ("p", "q", "r"))}
    ovl = D.overlap(x[:, None], conf, D.DiagnosticsConfig(n_components=1)).set_index("level")
    sd = x.std()
    for code, label in enumerate("pqr"):
        want = abs(x[codes == code].mean() - x[codes != code].mean()) / sd
        assert ovl.loc[label, "max_abs_smd"] == pytest.approx(want)
    assert list(ovl.flagged) == [False, False, True]


def test_numeric_overlap_bins_and_small_levels():
    rng = np.random.default_rng(3)
    aud = rng.normal(size=1000)
    x = aud + rng.normal(size=1000)
    ovl = D.overlap(x[:, None], {"aud": Confounder("numeric", aud)}, D.DiagnosticsConfig(numeric_bins=4))
    assert len(ovl) == 4 and (ovl.rows == 250).all()
    assert ovl.max_abs_smd.iloc[0] > 0.5 and ovl.max_abs_smd.iloc[0] == ovl.max_abs_smd.max()
    tiny = Confounder("categorical", np.r_[np.zeros(995, int), np.ones(5, int)], ("a", "b"))
    ovl = D.overlap(x[:, None], {"t": tiny}).set_index("level")
    assert np.isnan(ovl.loc["b", "max_abs_smd"]) and not ovl.loc["b", "flagged"]


def _binomial_data(seed=0, n=600):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 4, n)
    x = rng.normal(size=(n, 2))
    trials = rng.integers(100, 400, n).astype(float)
    eta = -2 + 0.3 * x[:, 0] + np.array([0.2, 0, -0.2, 0.1])[codes]
    succ = rng.binomial(trials.astype(int), 1 / (1 + np.exp(-eta))).astype(float)
    return succ, trials, x, {"c": Confounder("categorical", codes, tuple("abcd"))}


def test_gradient_vanishes_at_the_map():
    s, n, x, conf = _binomial_data()
    f = fit(s, n, x, conf, EstimatorConfig())
    g = D.map_gradient(f, x, conf, successes=s, trials=n)
    off = dataclasses.replace(f, theta_map=f.theta_map + 0.05)
    g_off = D.map_gradient(off, x, conf, successes=s, trials=n)
    assert np.max(np.abs(g)) < 1e-3 * np.max(np.abs(g_off))
    noise = np.random.default_rng(1).normal(size=len(s))
    y = x[:, 0] * 2 + np.array([1.0, 0, -1, 0])[conf["c"].values] + noise
    f = fit(None, None, x, conf, EstimatorConfig(), outcome=y)
    assert np.max(np.abs(D.map_gradient(f, x, conf, outcome=y))) < 1e-6
    conv = D.convergence(f, D.map_gradient(f, x, conf, outcome=y))
    assert conv["method"] == "map" and conv["newton_converged"] and conv["grad_max"] < 1e-6


def test_nuts_rhat_and_svi_losses_are_read_from_the_fit():
    s, n, x, conf = _binomial_data(1)
    f = fit(s, n, x, conf, EstimatorConfig())
    rng = np.random.default_rng(0)
    P = len(f.theta)
    nuts = dataclasses.replace(f, cfg=EstimatorConfig(method="nuts"))
    mixed = dataclasses.replace(nuts, draws=rng.normal(size=(400, P)))
    conv = D.convergence(mixed)
    assert conv["rhat_max"] < 1.05 and conv["rhat_flagged"] == 0 and conv["ess_min"] > 100
    drift = dataclasses.replace(nuts, draws=rng.normal(size=(400, P)) + np.linspace(0, 3, 400)[:, None])
    conv = D.convergence(drift)
    assert conv["rhat_flagged"] == P and conv["rhat_max"] > 1.2
    steps = np.arange(1000)
    flat = dataclasses.replace(f, info={**f.info, "svi_losses": 100 + 50 * np.exp(-steps / 50)})
    assert D.convergence(flat)["loss_tail_change"] < 1e-3
    moving = dataclasses.replace(f, info={**f.info, "svi_losses": 1000 - steps * 0.5})
    diag = D.diagnose(moving, x, ["x0", "x1"], conf)
    assert any("SVI loss still moving" in w for w in diag.warnings)


def test_sparse_and_dense_text_give_the_same_table():
    import scipy.sparse as sp

    rng = np.random.default_rng(4)
    X = (rng.random((300, 6)) < 0.2) * rng.normal(size=(300, 6))
    conf = {"c": Confounder("categorical", rng.integers(0, 5, 300), tuple("abcde")),
            "v": Confounder("numeric", rng.normal(size=300))}
    names = [f"f{j}" for j in range(6)]
    dense = D.collinearity(X, names, conf, D.DiagnosticsConfig(min_units=5))
    sparse = D.collinearity(sp.csr_matrix(X), names, conf, D.DiagnosticsConfig(min_units=5))
    key = ["feature", "confounder"]
    a, b = dense.sort_values(key).reset_index(drop=True), sparse.sort_values(key).reset_index(drop=True)
    np.testing.assert_allclose(a["corr"], b["corr"], atol=1e-12)
    assert (a.level == b.level).all() and (a.units == b.units).all()
