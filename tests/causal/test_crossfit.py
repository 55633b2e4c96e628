"""Cross-fitting: no unit's adjustment is fitted on itself; groups stay together; baselines."""
import numpy as np
import pytest
import scipy.special

from dlm.causal.crossfit import cross_fit, deconfound, fold_ids, partial_out
from dlm.causal.fit import EstimatorConfig
from dlm.data.log import Confounder, ObservationalLog
from tests.causal.test_estimator import simulate

CFG = EstimatorConfig(folds=3)


def _log(d, groups=None):
    n = len(d["s"])
    return ObservationalLog(content=np.array(["h"] * n, dtype=object), confounders=d["conf"],
                            successes=d["s"], trials=d["trials"], group=groups, source="sim.csv")


def test_fold_ids_balance_units_and_keep_groups_together():
    fold = fold_ids(100, 5, seed=0)
    assert np.all(np.bincount(fold) == 20)
    groups = np.repeat(np.arange(30), 4)[np.random.default_rng(0).permutation(120)]
    fold = fold_ids(120, 5, seed=0, groups=groups)
    for g in range(30):
        assert len(np.unique(fold[groups == g])) == 1
    assert np.all(np.bincount(fold) == 24)          # 6 groups of 4 per fold
    with pytest.raises(ValueError, match="3 groups cannot fill 5 folds"):
        fold_ids(9, 5, 0, groups=np.arange(9) % 3)


def test_own_outcome_never_enters_own_g_hat():
    d = simulate(n=3000, T=6, F=2, seed=11)
    base = cross_fit(d["s"], d["trials"], d["h"], d["conf"], CFG)
    i = 17
    s = d["s"].copy()
    s[i] = d["trials"][i] if s[i] < d["trials"][i] / 2 else 0.0     # a drastic change
    moved = cross_fit(s, d["trials"], d["h"], d["conf"], CFG)
    np.testing.assert_array_equal(moved.fold, base.fold)
    same = base.fold == base.fold[i]
    np.testing.assert_allclose(moved.g_hat[same], base.g_hat[same], rtol=0, atol=1e-12)
    np.testing.assert_allclose(moved.g_lo[same], base.g_lo[same], rtol=0, atol=1e-12)
    assert np.max(np.abs(moved.g_hat[~same] - base.g_hat[~same])) > 1e-6   # the others saw it
    # ...but the unit's own adjusted outcome moves with its own data, one for one
    assert moved.logit_adjusted[i] - base.logit_adjusted[i] == pytest.approx(
        np.log((s[i] + .5) / (d["trials"][i] - s[i] + .5))
        - np.log((d["s"][i] + .5) / (d["trials"][i] - d["s"][i] + .5)))


def test_groups_stay_in_one_fold_and_never_see_themselves():
    d = simulate(n=3000, T=6, F=2, seed=12)
    groups = np.random.default_rng(1).integers(0, 300, 3000)
    base = deconfound(_log(d, groups), d["h"], CFG)
    for g in range(0, 300, 37):
        assert len(np.unique(base.fold[groups == g])) == 1
    s = d["s"].copy()
    members = groups == 5
    s[members] = 0.0                                    # wipe a whole A/B test's clicks
    moved = deconfound(_log(dict(d, s=s), groups), d["h"], CFG)
    np.testing.assert_allclose(moved.g_hat[members], base.g_hat[members], rtol=0, atol=1e-12)


def test_adjusted_outcome_is_empirical_logit_minus_g_hat():
    d = simulate(n=2000, T=5, F=2, seed=13)
    log = _log(d)
    adj = deconfound(log, d["h"], CFG)
    np.testing.assert_allclose(adj.logit_adjusted, log.logit_outcome() - adj.g_hat)
    np.testing.assert_allclose(adj.rate_adjusted, scipy.special.expit(adj.logit_adjusted))
    assert np.all(adj.g_lo < adj.g_hat) and np.all(adj.g_hat < adj.g_hi)
    # the full-data fit carries the effects table and the text coefficients
    assert set(adj.effects().parameter) == {"weekday", "week", "log_audience"}
    np.testing.assert_allclose(adj.fit.text_coef, d["beta"], atol=0.03)


def test_real_outcome_adjustment_is_outcome_minus_g_hat():
    d = simulate(n=2000, T=5, F=2, seed=14, outcome="normal")
    adj = cross_fit(None, None, d["h"], d["conf"], CFG, outcome=d["y"])
    np.testing.assert_allclose(adj.logit_adjusted, d["y"] - adj.g_hat)
    np.testing.assert_allclose(adj.rate_adjusted, adj.logit_adjusted)


def test_partial_out_residual_is_uncorrelated_with_the_confounders():
    d = simulate(n=20000, T=10, F=2, seed=15)
    log = _log(d)
    adj = partial_out(log, CFG)
    assert adj.fit.spec.n_text == 0
    c = d["conf"]
    columns = {f"weekday={k}": (c["weekday"].values == k).astype(float) for k in range(7)}
    columns |= {f"week={t}": (c["week"].values == t).astype(float) for t in range(10)}
    columns["log_audience"] = c["log_audience"].values
    raw = {k: abs(np.corrcoef(v, log.logit_outcome())[0, 1]) for k, v in columns.items()}
    res = {k: abs(np.corrcoef(v, adj.logit_adjusted)[0, 1]) for k, v in columns.items()}
    assert max(raw.values()) > 0.2                      # the confounders do drive the outcome
    assert max(res.values()) < 0.03, res


def test_unseen_training_level_warns():
    d = simulate(n=600, T=3, F=1, seed=16)
    wd = d["conf"]["weekday"].values.copy()
    wd[wd == 6] = 5
    wd[0] = 6                                           # Sunday: a single row
    conf = dict(d["conf"], weekday=Confounder("categorical", wd, d["conf"]["weekday"].levels))
    with pytest.warns(UserWarning, match="'weekday' levels \\['Sun'\\] have no training rows"):
        cross_fit(d["s"], d["trials"], d["h"], conf, CFG)
