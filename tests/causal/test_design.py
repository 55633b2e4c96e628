"""The confounder design: g(C) by hand, centring, structured products vs dense algebra."""
import numpy as np
import pytest

from dlm.causal.design import StructuredX, bspline_basis, build_design
from dlm.data.log import Confounder, LogValidationError


def _confounders(n=40, seed=0, T=6):
    rng = np.random.default_rng(seed)
    return {
        "day": Confounder("categorical", rng.integers(0, 3, n), ("a", "b", "c")),
        "week": Confounder("time", rng.integers(0, T, n), tuple(f"w{t}" for t in range(T))),
        "aud": Confounder("numeric", rng.normal(2.0, 1.0, n)),
    }


def _dense(x: StructuredX) -> np.ndarray:
    return x.matvec(np.eye(x.n_params))            # X materialised, column by column


def test_layout_and_g_by_hand():
    conf = _confounders()
    d = build_design(conf)
    # numeric first, then categorical/time blocks in the order given
    assert [b.name for b in d.blocks] == ["aud", "day", "week"]
    assert d.names == ("day", "week", "aud") and d.n_params == 1 + 3 + 6
    theta = np.array([0.5, 1.0, 2.0, 4.0, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    day, week, aud = (conf[k].values for k in ("day", "week", "aud"))
    center = aud.mean()
    by_hand = 0.5 * (aud - center) + np.array([1.0, 2.0, 4.0])[day] + 0.1 * week
    np.testing.assert_allclose(d.rows(conf).matvec(theta), by_hand, atol=1e-12)
    # centred: each block minus its mean over levels (day mean 7/3, week mean 0.25)
    centred = 0.5 * (aud - center) + (np.array([1.0, 2.0, 4.0]) - 7 / 3)[day] + 0.1 * week - 0.25
    np.testing.assert_allclose(d.rows(conf, centred=True).matvec(theta), centred, atol=1e-12)


def test_numeric_centre_is_the_design_time_mean():
    conf = _confounders()
    d = build_design(conf)
    other = {k: c.take(np.arange(5)) for k, c in conf.items()}
    theta = np.zeros(d.n_params)
    theta[0] = 2.0
    np.testing.assert_allclose(d.rows(other).matvec(theta),
                               2.0 * (other["aud"].values - conf["aud"].values.mean()))


def test_effects_matrix_is_centred():
    d = build_design(_confounders())
    labels, A = d.effects_matrix()
    assert labels[:3] == [("day", "a"), ("day", "b"), ("day", "c")]
    assert labels[-1] == ("aud", "slope")
    theta = np.random.default_rng(1).normal(size=d.n_params)
    eff = A @ theta
    np.testing.assert_allclose(eff[:3], theta[1:4] - theta[1:4].mean())
    np.testing.assert_allclose(eff[3:9], theta[4:10] - theta[4:10].mean())
    assert eff[-1] == theta[0]


@pytest.mark.parametrize("row_block", [None, 7])    # 7: rows in 9 passes, the last short
@pytest.mark.parametrize("time_basis", ["rw", "spline"])
def test_structured_products_equal_dense_algebra(time_basis, row_block, monkeypatch):
    if row_block:
        monkeypatch.setattr(StructuredX, "ROW_BLOCK", row_block)
    conf = _confounders(n=60, T=12)
    d = build_design(conf, time_basis=time_basis, spline_df=5)
    rng = np.random.default_rng(2)
    x = d.rows(conf).with_dense_prefix(np.c_[np.ones(60), rng.normal(size=(60, 2))])
    X = _dense(x)
    assert X.shape == (60, x.n_params)
    w, r = rng.uniform(0.5, 2.0, 60), rng.normal(size=60)
    np.testing.assert_allclose(x.gram(w), X.T @ (w[:, None] * X), atol=1e-10)
    np.testing.assert_allclose(x.rmatvec(r), X.T @ r, atol=1e-10)
    groups = rng.integers(0, 7, 60)
    S = np.stack([X[groups == g].T @ r[groups == g] for g in np.unique(groups)])
    meat, n_groups = x.cluster_meat(r, groups)
    assert n_groups == 7
    np.testing.assert_allclose(meat, S.T @ S, atol=1e-10)
    A = rng.normal(size=(x.n_params, x.n_params))
    cov = A @ A.T
    np.testing.assert_allclose(x.row_variance(cov), np.einsum("np,pq,nq->n", X, cov, X), rtol=1e-10)


def test_random_walk_prior_precision_is_the_walk_covariance_inverse():
    T, cs, rw = 5, 10.0, 0.1
    conf = {"t": Confounder("time", np.arange(T), tuple(map(str, range(T))))}
    Q = build_design(conf).prior_precision(cs, rw)
    # f = level + cumsum(steps): cov = cs^2 11' + rw^2 min(s, t) over the steps taken
    steps = np.minimum.outer(np.arange(T), np.arange(T))
    cov = cs ** 2 * np.ones((T, T)) + rw ** 2 * steps
    np.testing.assert_allclose(Q, np.linalg.inv(cov), rtol=1e-8, atol=1e-8)
    assert np.all(np.triu(Q, 2) == 0)                   # tridiagonal


def test_spline_basis_partition_of_unity():
    B = bspline_basis(30, 6)
    assert B.shape == (30, 6)
    np.testing.assert_allclose(B.sum(axis=1), 1.0)
    d = build_design({"t": Confounder("time", np.arange(30), tuple(map(str, range(30))))},
                     time_basis="spline")
    assert d.n_params == 4                              # about one per 8 periods, at least 4


def test_bad_confounders_name_row_and_column():
    conf = _confounders()
    d = build_design(conf)
    bad = dict(conf, day=Confounder("categorical", np.r_[conf["day"].values[:-1], 3], ("a", "b", "c")))
    with pytest.raises(LogValidationError, match=r"row 40, column 'day'.*outside 0..2"):
        d.rows(bad, source="x.csv")
    with pytest.raises(LogValidationError, match="missing \\['aud'\\]"):
        d.rows({k: v for k, v in conf.items() if k != "aud"})
    relevel = dict(conf, day=Confounder("categorical", conf["day"].values, ("a", "b", "z")))
    with pytest.raises(LogValidationError, match="column 'day': levels differ"):
        d.rows(relevel)
    nan = dict(conf, aud=Confounder("numeric", np.r_[np.nan, conf["aud"].values[1:]]))
    with pytest.raises(LogValidationError, match="row 1, column 'aud'"):
        d.rows(nan)
    with pytest.raises(LogValidationError, match="expected a numeric"):
        d.rows(dict(conf, aud=Confounder("categorical", np.zeros(40, int), ("x",))))
