"""dlm.realdata.pairs: story splits, headline arms, within-test pairs, one arm per test, AUC."""
import dataclasses

import numpy as np
import pytest

from dlm.data.log import Confounder, ObservationalLog
from dlm.realdata import pairs as P


def make_log(group, headline, clicks, views, lede=None, week=None):
    n = len(group)
    week = np.zeros(n, np.int32) if week is None else np.asarray(week, np.int32)
    levels = tuple(str(i) for i in range(int(week.max()) + 2))
    return ObservationalLog(
        content=np.array(headline, dtype=object),
        confounders={"week": Confounder("time", week, levels)},
        successes=np.asarray(clicks, float), trials=np.asarray(views, float),
        context=np.array(lede if lede is not None else [f"lede {g}" for g in group], dtype=object),
        group=np.asarray(group, np.int32),
        group_labels=tuple(f"t{i}" for i in range(max(group) + 1)))


def test_stories_link_tests_sharing_a_lede_or_a_headline_not_an_empty_lede():
    log = make_log(group=[0, 0, 1, 2, 2, 3, 4, 5],
                   headline=["a", "b", "c", "d", "b ", "e", "f", "g"],   # "b " is "b"
                   clicks=[1] * 8, views=[10] * 8,
                   lede=["L0", "L0", "L1", "L2", "L2", "L1", "", ""])
    story = P.story_of_test(log)
    assert story[0] == story[2]                        # headline "b"
    assert story[1] == story[3]                        # lede "L1"
    assert story[0] != story[1]
    assert story[4] != story[5]                        # empty ledes link nothing
    assert len(np.unique(story)) == 4


def test_split_keeps_stories_whole_and_follows_the_fractions():
    rng = np.random.default_rng(0)
    n_tests = 400
    group = np.repeat(np.arange(n_tests), 2)
    # tests 2k and 2k+1 share a lede: 200 stories of two tests
    lede = [f"story {g // 2}" for g in group]
    head = [f"h{g}-{i}" for g, i in zip(group, np.tile([0, 1], n_tests))]
    clicks = rng.integers(0, 10, 2 * n_tests)
    log = make_log(group.tolist(), head, clicks, [100] * (2 * n_tests), lede)
    split = P.split_tests(log, (0.6, 0.2, 0.2), seed=3)
    assert np.all(split[0::2] == split[1::2])          # a story never straddles splits
    shares = np.bincount(split, minlength=3) / n_tests
    np.testing.assert_allclose(shares, [0.6, 0.2, 0.2], atol=0.02)
    np.testing.assert_array_equal(split, P.split_tests(log, (0.6, 0.2, 0.2), seed=3))
    assert not np.array_equal(split, P.split_tests(log, (0.6, 0.2, 0.2), seed=4))
    assert set(P.split_tests(log, (0.9, 0.1, 0.0), seed=3)) == {0, 1}
    with pytest.raises(ValueError, match="sum to 1"):
        P.split_tests(log, (0.5, 0.2))


def test_headline_arms_sum_the_image_arms_of_one_headline():
    log = make_log(group=[0, 0, 0, 1, 1], headline=["A", "A  ", "B", "A", "C"],
                   clicks=[3, 5, 4, 1, 2], views=[100, 200, 150, 50, 60], week=[2, 2, 2, 5, 5])
    arms = P.headline_arms(log)
    got = {(int(g), h): (s, n)
           for g, h, s, n in zip(arms.group, arms.content, arms.successes, arms.trials)}
    assert got == {(0, "A"): (8, 300), (0, "B"): (4, 150), (1, "A"): (1, 50), (1, "C"): (2, 60)}
    assert list(arms.confounders["week"].values) == [2, 2, 5, 5]


def test_within_test_pairs_orient_by_ctr_and_match_a_hand_computed_z():
    # test 0: 30/1000 vs 10/1000 (and an equal-CTR arm); test 1: one headline twice
    log = make_log(group=[0, 0, 0, 1, 1], headline=["lo", "hi", "same", "x", "x"],
                   clicks=[10, 30, 10, 5, 9], views=[1000, 1000, 1000, 100, 100])
    pairs = P.within_test_pairs(log)
    got = {(log.content[w], log.content[l]) for w, l in zip(pairs.win, pairs.lose)}
    assert got == {("hi", "lo"), ("hi", "same")}       # equal CTRs and equal headlines: no pair
    k = list(zip(log.content[pairs.win], log.content[pairs.lose])).index(("hi", "lo"))
    pooled = 40 / 2000
    z = (0.03 - 0.01) / np.sqrt(pooled * (1 - pooled) * (2 / 1000))   # = 3.194
    assert pairs.z[k] == pytest.approx(z) and pairs.z[k] == pytest.approx(3.194, abs=1e-3)
    assert pairs.p[k] == pytest.approx(0.001402, rel=1e-3)
    assert set(pairs.group) == {0}
    strict = P.within_test_pairs(make_log(
        group=[0, 0, 0], headline=["a", "b", "c"], clicks=[10, 30, 11], views=[1000] * 3),
        alpha=0.05)
    assert len(strict) == 2 and np.all(strict.p < 0.05)  # 10 vs 11 is not significant


def test_one_arm_per_test_is_seeded_and_uniform():
    group = [0, 0, 0, 1, 1, 2]
    log = make_log(group, list("abcdef"), [1] * 6, [10] * 6)
    rows = P.one_arm_per_test(log, seed=1)
    assert sorted(np.asarray(log.group)[rows]) == [0, 1, 2]
    np.testing.assert_array_equal(rows, P.one_arm_per_test(log, seed=1))
    picks = np.concatenate([P.one_arm_per_test(log, s) for s in range(3000)])
    counts = np.bincount(picks, minlength=6)
    np.testing.assert_allclose(counts[:3] / 3000, 1 / 3, atol=0.03)
    np.testing.assert_allclose(counts[3:5] / 3000, 1 / 2, atol=0.03)
    assert counts[5] == 3000


def test_pair_auc_by_hand():
    assert P.pair_auc([2.0, 1.0], [0.0, 0.0]) == 1.0
    assert P.pair_auc([0.0, 0.0], [2.0, 1.0]) == 0.0
    assert P.pair_auc([1.0, 1.0], [1.0, 1.0]) == 0.5
    # d = [2, -1]: P(d_i + d_j > 0) over (i, j) = 3/4
    assert P.pair_auc([2.0, 0.0], [0.0, 1.0]) == pytest.approx(0.75)


def test_auc_table_pairs_methods_on_the_same_resamples():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 3)
    good = rng.normal(1.0, 1.0, groups.size)
    diffs = {"naive": rng.normal(0.0, 1.0, groups.size), "good": good, "copy": good.copy()}
    table = P.auc_table(diffs, groups, baseline="naive", n_boot=200, seed=0).set_index("method")
    assert table.loc["good", "auc"] == pytest.approx(P.pair_auc(good, 0 * good))
    assert (table.auc_lo <= table.auc).all() and (table.auc <= table.auc_hi).all()
    assert table.loc["naive", ["vs_naive", "vs_lo", "vs_hi"]].tolist() == [0.0, 0.0, 0.0]
    # identical scores: identical AUCs on every resample
    ci = ["auc_lo", "auc_hi"]
    assert table.loc["good", ci].tolist() == table.loc["copy", ci].tolist()
    assert table.loc["good", "vs_lo"] > 0            # clearly better than noise, paired
    assert (table.n_pairs == groups.size).all()
    one = P.auc_table({"good": good}, np.zeros(groups.size), n_boot=50)   # one test: no spread
    assert one.auc_lo[0] == one.auc[0] == one.auc_hi[0]


def test_centred_logit_ctr_by_hand():
    log = make_log([0, 0, 1, 2], ["a", "b", "c", "d"], [10, 30, 5, 7], [100, 100, 50, 90])
    rows, y, w = P.centred_logit_ctr(log)
    assert rows.tolist() == [0, 1]                       # tests 1 and 2 have one arm each
    la, lb = np.log(10.5 / 90.5), np.log(30.5 / 70.5)
    wa, wb = 10.5 * 90.5 / 101, 30.5 * 70.5 / 101        # inverse variance of the logit
    mean = (wa * la + wb * lb) / (wa + wb)
    np.testing.assert_allclose(y, [la - mean, lb - mean])
    np.testing.assert_allclose(w / w.mean(), np.array([wa, wb]) / np.mean([wa, wb]))


def test_auc_contrasts_match_the_table_on_the_same_resamples():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(30), 4)
    diffs = {"naive": rng.normal(0.0, 1.0, groups.size), "good": rng.normal(1.0, 1.0, groups.size)}
    table = P.auc_table(diffs, groups, baseline="naive", n_boot=100, seed=3).set_index("method")
    con = P.auc_contrasts(diffs, groups, [("good", "naive"), ("naive", "good")], n_boot=100,
                          seed=3)
    good = table.loc["good"]
    assert con.loc[0, ["diff", "lo", "hi"]].tolist() == pytest.approx(
        [good.vs_naive, good.vs_lo, good.vs_hi])
    assert con.loc[1, "diff"] == pytest.approx(-good.vs_naive)
    assert con.loc[1, "hi"] == pytest.approx(-good.vs_lo)
    with pytest.raises(ValueError, match="no scores for"):
        P.auc_contrasts(diffs, groups, [("good", "bogus")])


def test_nonrandomised_tests_mark_the_window_weeks():
    log = make_log([0, 0, 1, 1, 2], list("abcde"), [1] * 5, [10] * 5, week=[0, 0, 1, 1, 2])
    levels = ("201324", "201325", "201402")
    log = dataclasses.replace(log, confounders={"week": Confounder("time", log.confounders[
        "week"].values, levels)})
    assert P.nonrandomised_tests(log).tolist() == [False, True, False]
