"""The hybrid reward's weight (dlm.causal.hybrid): hand-computed cases, a simulation with a
known answer, the jackknife Var_B of a real cross-fitted regression, bad input."""
import numpy as np
import pytest

from dlm.causal import hybrid


def test_weight_hand_computed_single_prediction():
    # two groups of two arms: contrasts are the values (group means 0); d = (1, -1, 0, 0)
    r_U = [1.0, -1.0, 2.0, -2.0]
    r_B = [2.0, -2.0, 2.0, -2.0]
    est = hybrid.estimate_weight(r_B, r_U, [0, 0, 1, 1], var_U=0.2, folds=2)
    # contrast variance for m = 2: 0.2 * (1 - 2/2) + 0.4 / 4 = 0.1; mean d^2 = 0.5
    assert est.var_U == pytest.approx(0.1)
    assert est.var_B == 0.0
    assert est.bias2 == pytest.approx(0.4)
    # weight on the experimental side: (Bias^2 + Var_B) / (Bias^2 + Var_B + Var_U)
    assert est.w == pytest.approx(0.4 / 0.5)
    assert (est.n_groups, est.n_rows) == (2, 4)


def test_weight_hand_computed_crossfitted():
    r_U = [1.0, -1.0, 2.0, -2.0]
    fits = [[2.0, -2.0, 3.0, -3.0],      # fit 0 (without fold 0): scores rows 0, 1
            [1.0, -1.0, 2.0, -2.0]]      # fit 1 (without fold 1): scores rows 2, 3
    est = hybrid.estimate_weight(fits, r_U, [0, 0, 1, 1], var_U=0.2, fold=[0, 0, 1, 1])
    # scored contrasts (2, -2, 2, -2) as above: mean d^2 = 0.5; jackknife per arm:
    # (K-1)/K * sum_k (c_k - mean)^2 = 1/2 * (0.25 + 0.25) = 0.25 on every arm
    assert est.var_B == pytest.approx(0.25)
    assert est.var_U == pytest.approx(0.1)
    assert est.bias2 == pytest.approx(0.5 - 0.1 - 0.25)
    assert est.w == pytest.approx(0.4 / 0.5)
    # fold 0 alone: mean d^2 = 1, bias2 = 0.65; fold 1 alone: d = 0, bias2 clipped at 0
    np.testing.assert_allclose(est.fold_w, [0.9 / 1.0, 0.25 / 0.35])


def _world(rng, n_groups, bias, sd_B, sd_U, m=4):
    """Arms with a true score s; r_B = s + bias * x + noise_B; r_U = s + noise_U (known,
    arm-specific variance)."""
    n = n_groups * m
    groups = np.repeat(np.arange(n_groups), m)
    s, x = rng.normal(size=n), rng.normal(size=n)
    var_U = sd_U ** 2 * rng.uniform(0.5, 1.5, n)
    r_B = s + bias * x + rng.normal(0, sd_B, n)
    r_U = s + rng.normal(size=n) * np.sqrt(var_U)
    return groups, s, r_B, r_U, var_U


def _mse(pred, s, groups):
    codes, G = hybrid.group_codes(groups, len(s))
    return float(np.mean((hybrid.contrasts(pred - s, codes, G)) ** 2))


@pytest.mark.parametrize("bias,sd_U", [(0.0, 1.0), (0.3, 0.5), (0.6, 0.6), (1.0, 0.3), (0.2, 2.0)])
def test_hybrid_never_worse_than_the_better_input(bias, sd_U):
    sd_B = 0.3
    for seed in range(5):
        rng = np.random.default_rng(seed)
        groups, s, r_B, r_U, var_U = _world(rng, 300, bias, sd_B, sd_U)
        est = hybrid.estimate_weight(r_B, r_U, groups, var_U, seed=seed)
        # known answer on the contrast scale (m = 4): factor (1 - 1/m) for iid arm terms
        shrink, total = 1 - 1 / 4, bias ** 2 + sd_B ** 2 + sd_U ** 2
        se = 4 * np.sqrt(2 / len(s))          # ~4 standard errors of a mean of squares, relative
        assert est.w == pytest.approx((bias ** 2 + sd_B ** 2) / total, abs=se)
        assert est.bias2 + est.var_B == pytest.approx(shrink * (bias ** 2 + sd_B ** 2),
                                                      abs=se * shrink * total)
        # scored on fresh arms of the same world, with the weight from the first sample
        groups, s, r_B, r_U, _ = _world(rng, 300, bias, sd_B, sd_U)
        mse_B, mse_U = _mse(r_B, s, groups), _mse(r_U, s, groups)
        mse_H = _mse(hybrid.combine(r_B, r_U, est.w), s, groups)
        assert mse_H <= min(mse_B, mse_U) * 1.05 + 0.005, (seed, mse_H, mse_B, mse_U)


def test_weight_moves_the_right_way():
    def w(bias, sd_U):
        world = _world(np.random.default_rng(0), 300, bias, 0.3, sd_U)
        return hybrid.estimate_weight(*_pick(world)).w

    def _pick(world):
        groups, _, r_B, r_U, var_U = world
        return r_B, r_U, groups, var_U

    by_bias = [w(b, 0.5) for b in (0.0, 0.3, 0.6, 1.2)]
    by_var_U = [w(0.5, u) for u in (0.2, 0.5, 1.0, 2.0)]
    # a more biased observational reward: more weight on the experiment; a noisier
    # experiment: less
    assert all(np.diff(by_bias) > 0), by_bias
    assert all(np.diff(by_var_U) < 0), by_var_U


def test_jackknife_var_B_of_a_crossfitted_regression():
    """The observational side: OLS on its own log, rows tied to experimental groups (so a
    fold's groups are left out of the fit scored on them). The jackknife Var_B over the K
    fits matches the regression's analytic prediction variance (on contrasts)."""
    ratios = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        n_groups, m, F, per_group, sigma = 200, 4, 3, 5, 1.0
        groups = np.repeat(np.arange(n_groups), m)
        X_arm = rng.normal(size=(n_groups * m, F))
        beta = np.array([0.5, -0.3, 0.2])
        obs_group = np.repeat(np.arange(n_groups), per_group)
        X_obs = rng.normal(size=(len(obs_group), F))
        y_obs = X_obs @ beta + rng.normal(0, sigma, len(obs_group))

        def fit_predict(train_mask):
            keep = np.isin(obs_group, np.unique(groups[train_mask]))
            b, *_ = np.linalg.lstsq(X_obs[keep], y_obs[keep], rcond=None)
            return X_arm @ b

        r_B, fold = hybrid.crossfit_rewards(groups, fit_predict, folds=20, seed=seed)
        r_U = X_arm @ beta + rng.normal(0, 0.5, len(groups))
        est = hybrid.estimate_weight(r_B, r_U, groups, 0.25, fold=fold)
        codes, G = hybrid.group_codes(groups, len(groups))
        cX = hybrid.contrasts(X_arm.T, codes, G).T
        cov = sigma ** 2 * np.linalg.inv(X_obs.T @ X_obs)
        ratios.append(est.var_B / np.mean(np.einsum("nf,fg,ng->n", cX, cov, cX)))
    assert 0.6 < np.mean(ratios) < 1.6, ratios


@pytest.mark.parametrize("kwargs,message", [
    (dict(groups=None), "no group column"),
    (dict(groups=[0, 0, 0, 0]), "at least 2"),
    (dict(groups=[0, 0, 1]), "groups has shape"),
    (dict(groups=[0.0, 0.0, np.nan, 1.0]), "groups is missing at row 3"),
    (dict(r_U=[1.0, 1.0, 1.0, 1.0]), "r_U is constant"),
    (dict(r_B=[0.0, np.nan, 1.0, 2.0]), "r_B is not finite at row 2"),
    (dict(var_U=[0.1, -0.1, 0.1, 0.1]), "var_U is negative at row 2"),
    (dict(r_B=[[1.0, 0.0, 2.0, 3.0]] * 2), "needs the fold"),
])
def test_bad_input_raises_naming_the_problem(kwargs, message):
    args = dict(r_B=[1.0, 0.0, 2.0, 3.0], r_U=[1.0, 0.5, 2.0, 2.5], groups=[0, 0, 1, 1], var_U=0.1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        hybrid.estimate_weight(args.pop("r_B"), args.pop("r_U"), args.pop("groups"), **args)


def test_combine_checks_the_weight():
    np.testing.assert_allclose(hybrid.combine([0.0, 2.0], [1.0, 1.0], 0.25), [0.25, 1.75])
    with pytest.raises(ValueError, match="weight"):
        hybrid.combine([0.0], [1.0], 1.5)


def test_binomial_logit_variance_matches_simulation():
    rng = np.random.default_rng(0)
    n, p = 4000, 0.03
    s = rng.binomial(n, p, 20000).astype(float)
    logit = np.log((s + 0.5) / (n - s + 0.5))
    assert hybrid.binomial_logit_variance(n * p, n) == pytest.approx(logit.var(), rel=0.05)


def test_experimental_arms_from_a_log():
    from dlm.data.log import ObservationalLog
    log = ObservationalLog(content=np.array(["a", "b", "c", "d"], dtype=object), confounders={},
                           successes=np.array([10.0, 20, 5, 8]), trials=np.array([1000.0] * 4),
                           group=np.array([0, 0, 1, 1]), source="exp.csv")
    r_U, var_U, groups = hybrid.experimental_arms(log)
    assert r_U[0] == pytest.approx(np.log(10.5 / 990.5))
    assert var_U[1] == pytest.approx(1 / 20.5 + 1 / 980.5)
    np.testing.assert_array_equal(groups, [0, 0, 1, 1])
    import dataclasses
    with pytest.raises(ValueError, match="'exp.csv' has no group column"):
        hybrid.experimental_arms(dataclasses.replace(log, group=None))


def test_weight_from_a_binomial_experimental_log():
    """Arms with true logits s (400 tests x 3 arms, 2,000 impressions each): the weight from
    the log's counts matches the one computed from the known bias and binomial noise."""
    from dlm.data.log import ObservationalLog
    rng = np.random.default_rng(3)
    n_groups, m, trials, bias = 400, 3, 2000.0, 0.15
    groups = np.repeat(np.arange(n_groups), m)
    s = -3.5 + 0.3 * rng.normal(size=n_groups * m)
    clicks = rng.binomial(int(trials), 1 / (1 + np.exp(-s))).astype(float)
    log = ObservationalLog(content=np.array([f"t{i}" for i in range(len(s))], dtype=object),
                           confounders={}, successes=clicks, trials=np.full(len(s), trials),
                           group=groups, source="exp")
    r_B = s + bias * rng.normal(size=len(s))
    est = hybrid.weight_from_log(log, r_B)
    var_U = np.mean(1 / (trials * (p := 1 / (1 + np.exp(-s)))) / (1 - p)) * (1 - 1 / m)
    b2 = bias ** 2 * (1 - 1 / m)
    assert est.var_U == pytest.approx(var_U, rel=0.05)
    assert est.w == pytest.approx(b2 / (b2 + var_U), abs=0.06)   # w* = 0.57; se ~0.02
    assert est.bias2 == pytest.approx(b2, rel=0.2)
