"""The Upworthy data-efficiency curve (dlm.experiments.upworthy_efficiency, scripts.upworthy
--efficiency) on the tiny synthetic archive, whose observational log is confounded (the
hook goes with late, low-CTR weeks) while every experimental pair says the hook wins."""
import dataclasses

import numpy as np
import pandas as pd
import pytest

from dlm.data.upworthy import load_upworthy
from dlm.experiments import upworthy as U
from dlm.experiments import upworthy_efficiency as EFF
from scripts import upworthy as S
from tests.scripts.test_upworthy_script import synthetic_upworthy

CFG = dataclasses.replace(U.PRESETS["tiny"], n_boot=20)
SHARES = (0.05, 1.0)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("eff") / "a.csv"
    synthetic_upworthy().to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def result(archive):
    return EFF.run_efficiency(CFG, load_upworthy(archive), representation="ngram",
                              shares=SHARES, seeds=2)


def test_rows_test_counts_and_weights(result):
    t = result.table
    methods = set(EFF.EXPERIMENTAL + EFF.OBSERVATIONAL)
    assert len(t) == len(SHARES) * 2 * len(methods) and set(t.method) == methods
    n = t.groupby("share").n_tests.agg(["min", "max"])
    all_tests = np.unique(np.asarray(result.data["fit_arms"].group)).size
    assert n.loc[0.05, "max"] == max(EFF.MIN_TESTS, round(0.05 * all_tests))
    assert (n.loc[1.0] == all_tests).all()
    # the observational rewards are fitted once: identical AUC in every row
    for m in EFF.OBSERVATIONAL:
        assert t[t.method == m].auc.nunique() == 1
    w = t[t.method.str.startswith("hybrid")].w
    assert w.between(0, 1).all() and t[~t.method.str.startswith("hybrid")].w.isna().all()


def test_with_every_test_the_hybrid_leans_to_the_experiment_and_beats_naive(result):
    t = result.table[result.table.share == 1.0]
    auc = t.groupby("method").auc.mean()
    # the confounded log ranks many pairs wrongly (as in test_upworthy_script); the
    # noise-free experiment ranks every one right
    assert auc["naive"] < 0.9 and auc["experimental_ctr"] > 0.95
    hyb = t[t.method == "hybrid_naive"]
    assert (hyb.w > 0.5).all() and auc["hybrid_naive"] > auc["naive"] + 0.2


@pytest.mark.slow
def test_script_writes_the_curve(archive, tmp_path):
    out = tmp_path / "o"
    assert S.main(["--data", str(archive), "--out", str(out), "--preset", "tiny",
                   "--representations", "ngram", "--efficiency", "--efficiency-seeds", "1",
                   "--set", "n_boot=10"]) == 0
    table = pd.read_csv(out / "efficiency.csv")
    assert sorted(table.share.unique()) == list(EFF.SHARES)
    for name in ("efficiency_summary.csv", "efficiency.png", "summary.md", "config.json"):
        assert (out / name).stat().st_size > 0


def test_script_rejects_two_modes_and_the_trunk(archive, tmp_path):
    with pytest.raises(SystemExit) as e:
        S.main(["--data", str(archive), "--out", str(tmp_path / "x"), "--reg-sweep",
                "--efficiency"])
    assert e.value.code == 2 and not (tmp_path / "x").exists()
    with pytest.raises(SystemExit, match="trunk"):
        S.main(["--data", str(archive), "--out", str(tmp_path / "y"), "--preset", "tiny",
                "--representations", "trunk", "--efficiency"])
    assert not (tmp_path / "y").exists()


def test_draw_tests_skips_single_arm_tests():
    from tests.rewards.test_reward_backends import grouped_log

    arms = grouped_log([0, 0, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6], list("abcdefghijkl"),
                       [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
    keep = EFF.draw_tests(arms, 1.0, seed=0)
    assert not keep[2] and not keep[11] and keep.sum() == 10      # tests 1 and 6: one arm
    assert np.unique(np.asarray(arms.group)[EFF.draw_tests(arms, 0.01, 0)]).size == EFF.MIN_TESTS
