"""The hybrid reward method (observational + experimental, mixed by the cross-fitted w*):
dlm.causal.hybrid.model_weight by hand, and fit_hybrid against a world with a known answer."""
import dataclasses

import numpy as np
import pytest

from dlm.causal.hybrid import model_weight
from dlm.data.log import Confounder, ObservationalLog
from dlm.rewards import METHODS, MethodContext, fit_scorer
from dlm.rewards.linear import LinearBackend
from dlm.rewards.methods import hybrid_parts


def test_model_weight_by_hand():
    # two groups of two arms, fold = group; contrasts of y: [1, -1, .5, -.5] (noise-free
    # here, so the held-out errors are known: e_B = [0, 0, 1, -1], e_U = [.5, -.5, 0, 0])
    y, groups, fold = [1, -1, .5, -.5], [0, 0, 1, 1], np.array([0, 0, 1, 1])
    r_B = [[2, 0, 1.5, -1.5], [3, -1, 1.5, -1.5]]     # held out: contrasts [1, -1, 1.5, -1.5]
    r_U = [[1.5, -1.5, .5, -.5]] * 2                  # held out: [1.5, -1.5, .5, -.5]
    h = model_weight(r_B, r_U, y, groups, fold)
    # mean (U - B)^2 = mean(.25, .25, 1, 1) = .625; mean (y - B)(U - B) = mean(0, 0, 1, 1) = .5
    assert h.mse_B == pytest.approx(0.5) and h.var_U == pytest.approx(0.125)
    assert h.mse_B == pytest.approx(np.mean(np.square([0, 0, 1, -1])))     # the true errors
    assert h.var_U == pytest.approx(np.mean(np.square([.5, -.5, 0, 0])))
    assert h.w == pytest.approx(0.5 / 0.625)
    # jackknife of r_B's fits on rows 0, 1: contrasts [1, -1] and [2, -2]: 1/2 (.25 + .25)
    assert h.var_B == pytest.approx(0.125) and h.bias2 == pytest.approx(0.375)
    # fold 0: lift 0 -> w 0; fold 1: U - B = y - B -> w 1
    np.testing.assert_allclose(h.fold_w, [0.0, 1.0])
    with pytest.raises(ValueError, match=r"\[K, 4\]"):
        model_weight(r_B, r_U[:1], y, groups, fold)


POOL = 600          # texts "x0".."x599" with features X[i]; the reward only sees X


def _world(seed, bias, n_groups, trials_exp):
    """Observational rows: logit = s + bias * b (a confounded direction) + noise; the
    experiment: groups of 3 randomised arms, logit = group level + s, binomial noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(POOL, 6))
    s = X @ rng.normal(size=6) / np.sqrt(6)
    b = X @ rng.normal(size=6) / np.sqrt(6)

    def binomial(logit, trials):
        return rng.binomial(trials, 1 / (1 + np.exp(-logit))).astype(float)

    n_obs = 3000
    i = rng.integers(0, 400, n_obs)                      # texts 400.. are for evaluation
    obs_group = rng.integers(0, 2 * n_groups, n_obs)     # half the tests also in the experiment
    obs = ObservationalLog(
        content=np.array([f"x{k}" for k in i], object), confounders={
            "week": Confounder("time", np.zeros(n_obs, np.int32), ("0",))},
        successes=binomial(-3 + s[i] + bias * b[i] + rng.normal(0, .3, n_obs), 2000),
        trials=np.full(n_obs, 2000.0), group=obs_group.astype(np.int32),
        group_labels=tuple(f"t{g}" for g in range(2 * n_groups)))
    j = rng.integers(0, 400, 3 * n_groups)
    grp = np.repeat(np.arange(n_groups), 3)
    level = rng.normal(0, .5, n_groups)[grp]
    exp = ObservationalLog(
        content=np.array([f"x{k}" for k in j], object), confounders={
            "week": Confounder("time", np.zeros(3 * n_groups, np.int32), ("0",))},
        successes=binomial(-3 + level + s[j], trials_exp), trials=np.full(3 * n_groups,
                                                                          float(trials_exp)),
        group=grp.astype(np.int32), group_labels=tuple(f"t{g}" for g in range(n_groups)))
    featurise = lambda texts: X[[int(t[1:]) for t in texts]]  # noqa: E731
    return obs, exp, featurise, s


def _fit_three(seed, bias, n_groups, trials_exp):
    obs, exp, featurise, s = _world(seed, bias, n_groups, trials_exp)
    ctx = MethodContext(obs, experiment=exp)
    backend = LinearBackend(featurise, l2_grid=(1e-2,))
    scorers = {m: fit_scorer(m, METHODS[m].target_fn(ctx), backend)
               for m in ("naive", "experimental_ctr", "hybrid_naive")}
    held = [f"x{k}" for k in range(400, POOL)]
    corr = {m: float(np.corrcoef(f(held), s[400:])[0, 1]) for m, f in scorers.items()}
    return corr, scorers["hybrid_naive"].weight


@pytest.mark.parametrize("bias, n_groups, trials_exp, side", [
    (1.0, 200, 2000, "experimental"),     # strongly biased log, a good experiment
    (0.05, 20, 100, "observational"),     # a nearly unbiased log, a small noisy experiment
])
def test_hybrid_is_never_worse_than_the_better_input(bias, n_groups, trials_exp, side):
    weights = []
    for seed in range(3):
        corr, weight = _fit_three(seed, bias, n_groups, trials_exp)
        best = max(corr["naive"], corr["experimental_ctr"])
        # "noise": 0.02 of correlation (the inputs' own seed-to-seed spread in the small
        # experiment is ~0.03; with 20 groups the weight itself is noisy: 0 .. 0.7)
        assert corr["hybrid_naive"] >= best - 0.02, (seed, corr, weight.w)
        weights.append(weight.w)
    # on average the weight leans to the side that is better here (the truth never forms it)
    assert (np.mean(weights) > 0.5) == (side == "experimental"), weights


def test_hybrid_needs_enough_experimental_groups():
    obs, exp, featurise, _ = _world(0, 0.5, 4, 500)
    targets = METHODS["hybrid_naive"].target_fn(MethodContext(obs, experiment=exp))
    with pytest.raises(ValueError, match="4 groups with 2\\+ arms; cross-fitting needs at least 5"):
        fit_scorer("hybrid_naive", targets, LinearBackend(featurise))
    with pytest.raises(ValueError, match="MethodContext.experiment"):
        METHODS["hybrid"].target_fn(MethodContext(obs))


def test_hybrid_parts_reuses_the_parts_targets():
    # the hybrid's Targets from parts computed once equal its target_fn's (rows of the
    # experiment, both parts kept whole), so a caller may reuse an observational part
    obs, exp, _, _ = _world(0, 0.5, 10, 500)
    ctx = MethodContext(obs, experiment=exp)
    whole = METHODS["hybrid_naive"].target_fn(ctx)
    naive, ctr = (METHODS[m].target_fn(ctx) for m in ("naive", "experimental_ctr"))
    built = hybrid_parts(naive, ctr)
    assert built.source == whole.source == f"hybrid of {obs.source} and {exp.source}"
    np.testing.assert_array_equal(built.target, ctr.target)
    for key in ("observational", "experimental"):
        np.testing.assert_array_equal(built.parts[key].target, whole.parts[key].target)
        np.testing.assert_array_equal(built.parts[key].content, whole.parts[key].content)
    assert len(built.parts["observational"].content) == len(obs) == 3000


def test_a_log_without_groups_holding_the_arms_warns():
    obs, exp, featurise, _ = _world(0, 0.5, 10, 500)
    arms_as_rows = dataclasses.replace(obs, content=np.concatenate([obs.content, exp.content]),
                                       successes=np.concatenate([obs.successes, exp.successes]),
                                       trials=np.concatenate([obs.trials, exp.trials]),
                                       confounders={"week": Confounder(
                                           "time", np.zeros(len(obs) + len(exp), np.int32), ("0",))},
                                       group=None, group_labels=None)
    targets = METHODS["hybrid_naive"].target_fn(MethodContext(arms_as_rows, experiment=exp))
    with pytest.warns(UserWarning, match="has no groups"):
        fit_scorer("hybrid_naive", targets, LinearBackend(featurise, l2_grid=(1e-2,)))


def test_group_fixed_effects_equal_unpenalised_group_dummies():
    """LinearBackend's within-group demeaning (experimental_ctr's fixed effects) gives the
    text coefficients of a weighted least squares with one free intercept per group."""
    from dlm.rewards.linear import within_group_demeaned

    rng = np.random.default_rng(1)
    X, g = rng.normal(size=(40, 3)), rng.integers(0, 9, 40)
    w, y = rng.uniform(0.5, 2.0, 40), rng.normal(size=40)
    D = np.eye(9)[g]
    full = np.linalg.lstsq(np.sqrt(w)[:, None] * np.c_[X, D], np.sqrt(w) * y, rcond=None)[0]
    Xd = within_group_demeaned(X, g, w).astype(np.float64)
    yd = y - (np.bincount(g, w * y, 9) / np.bincount(g, w, 9))[g]
    beta = np.linalg.solve(Xd.T @ (w[:, None] * Xd), Xd.T @ (w * yd))
    np.testing.assert_allclose(beta, full[:3], atol=1e-5)
