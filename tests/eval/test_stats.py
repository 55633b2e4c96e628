"""dlm.eval.stats against hand-computed values, scipy/statsmodels and brute force."""
import itertools

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from statsmodels.stats.proportion import proportions_ztest

from dlm.eval import stats


def test_mean_se_hand_values():
    # mean 2.5, sample sd sqrt(5/3), se = sd / 2
    m, se = stats.mean_se([1.0, 2.0, 3.0, 4.0])
    assert m == pytest.approx(2.5)
    assert se == pytest.approx(np.sqrt(5.0 / 3.0) / 2.0)
    m1, se1 = stats.mean_se([0.7])
    assert m1 == 0.7 and np.isnan(se1)
    # NaN seeds are left out
    assert stats.mean_se([1.0, np.nan, 3.0]) == pytest.approx((2.0, 1.0))
    assert all(np.isnan(stats.mean_se([])))


def test_bootstrap_iid_covers_and_vectorised_matches_loop():
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 1.0, size=200)
    point, lo, hi = stats.bootstrap_ci(np.mean, x, n_boot=500, seed=3)
    assert point == pytest.approx(x.mean())
    assert lo < point < hi
    # percentile CI of the mean ~ mean ± 1.96 se
    se = x.std(ddof=1) / np.sqrt(x.size)
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.2)
    # the same replicates whether the statistic is vectorised or called per replicate
    loop = stats.bootstrap_ci(np.mean, x, n_boot=300, seed=5)
    vec = stats.bootstrap_ci(lambda a: a.mean(axis=1), x, n_boot=300, seed=5, vectorized=True)
    assert vec == pytest.approx(loop)


def test_bootstrap_two_arrays_resampled_together():
    # y == 2x exactly: any joint resample has slope 2, so the CI collapses to a point
    x = np.arange(10.0)
    slope = lambda a, b: np.polyfit(a, b, 1)[0]  # noqa: E731
    point, lo, hi = stats.bootstrap_ci(slope, x, 2 * x, n_boot=50)
    assert point == pytest.approx(2.0) and lo == pytest.approx(2.0) and hi == pytest.approx(2.0)


def test_cluster_bootstrap_resamples_whole_groups():
    # every value equals its group's id; a whole-group resample keeps group sizes intact,
    # so each replicate's row count is a sum of drawn group sizes (here all 3)
    groups = np.repeat([10, 20, 30, 40], 3)
    vals = groups.astype(float)
    seen = []

    def stat(v):
        seen.append(v.copy())
        return v.mean()

    stats.bootstrap_ci(stat, vals, groups=groups, n_boot=40, seed=0)
    for v in seen[1:]:
        assert v.size == 12
        uniq, counts = np.unique(v, return_counts=True)
        assert np.all(counts % 3 == 0)          # groups never split
    # with perfectly correlated clusters the cluster CI is wider than the iid one
    _, lo_c, hi_c = stats.bootstrap_ci(np.mean, vals, groups=groups, n_boot=400)
    _, lo_i, hi_i = stats.bootstrap_ci(np.mean, vals, n_boot=400)
    assert hi_c - lo_c > hi_i - lo_i


def test_bootstrap_bad_input_is_named():
    with pytest.raises(ValueError, match="array 1"):
        stats.bootstrap_ci(lambda a, b: 0.0, np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="groups has 2"):
        stats.bootstrap_ci(np.mean, np.zeros(3), groups=[1, 2])


def test_welch_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 12), rng.normal(0.5, 3, 30)
    t, dof, p = stats.welch_t(a, b)
    ref = scipy.stats.ttest_ind(a, b, equal_var=False)
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    assert dof == pytest.approx(ref.df)


def test_two_proportion_z_hand_and_statsmodels():
    # 60/100 vs 40/100: pooled 0.5, se = sqrt(0.25 * 0.02) = 0.0707..., z = 0.2 / se
    z, p = stats.two_proportion_z(60, 100, 40, 100)
    assert z == pytest.approx(0.2 / np.sqrt(0.005))
    assert p == pytest.approx(2 * scipy.stats.norm.sf(z))
    s1, n1 = np.array([5, 30, 0]), np.array([50, 90, 10])
    s2, n2 = np.array([9, 25, 0]), np.array([40, 100, 20])
    zv, pv = stats.two_proportion_z(s1, n1, s2, n2)
    for i in range(2):
        zr, pr = proportions_ztest([s1[i], s2[i]], [n1[i], n2[i]])
        assert zv[i] == pytest.approx(zr) and pv[i] == pytest.approx(pr)
    assert zv[2] == 0.0 and pv[2] == 1.0        # both rates 0: no difference
    with pytest.raises(ValueError, match="successes"):
        stats.two_proportion_z(5, 4, 1, 4)


def _auc_brute(s, y):
    pos, neg = s[y == 1], s[y == 0]
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg)]
    return np.mean(wins)


def test_roc_auc_against_brute_force_with_ties():
    rng = np.random.default_rng(2)
    s = rng.integers(0, 5, size=40).astype(float)   # many ties
    y = rng.integers(0, 2, size=40)
    assert stats.roc_auc(s, y) == pytest.approx(_auc_brute(s, y))
    assert stats.roc_auc([0.1, 0.9, 0.5], [0, 1, 1]) == 1.0
    assert stats.roc_auc([1.0, 1.0], [0, 1]) == 0.5
    assert np.isnan(stats.roc_auc([1.0, 2.0], [1, 1]))


def test_pair_accuracy_hand_values():
    # right, wrong, tie(0.5), right (b better and b higher)
    acc = stats.pair_accuracy([2.0, 1.0, 3.0, 0.0], [1.0, 2.0, 3.0, 1.0], [True, True, False, False])
    assert acc == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert np.isnan(stats.pair_accuracy([], [], []))


def test_summarise_and_format():
    frame = pd.DataFrame({
        "method": ["naive"] * 3 + ["oracle"] * 2,
        "seed": [0, 1, 2, 0, 1],
        "obj": [1.0, 2.0, 3.0, 5.0, np.nan],
        "corr": [0.1, 0.3, 0.2, 0.9, 0.7],
    })
    out = stats.summarise(frame, "method", ["obj", "corr"])
    assert list(out.columns) == ["method", "metric", "mean", "se", "n"]
    naive_obj = out[(out.method == "naive") & (out.metric == "obj")].iloc[0]
    assert naive_obj["mean"] == pytest.approx(2.0)
    assert naive_obj["se"] == pytest.approx(1.0 / np.sqrt(3))
    oracle_obj = out[(out.method == "oracle") & (out.metric == "obj")].iloc[0]
    assert oracle_obj["n"] == 1 and np.isnan(oracle_obj["se"])
    assert stats.format_mean_se(0.81234, 0.01271) == "0.812 ± 0.013"
    assert stats.format_mean_se(0.5, np.nan) == "0.500"
    table = stats.format_table(out)
    assert list(table.columns) == ["method", "obj", "corr"]
    assert table.loc[table.method == "oracle", "corr"].item() == "0.800 ± 0.100"
    with pytest.raises(ValueError, match="missing_col"):
        stats.summarise(frame, "method", ["missing_col"])
