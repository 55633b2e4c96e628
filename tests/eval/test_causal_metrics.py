"""dlm.eval.causal_metrics on rewards whose right answer is known by construction."""
import itertools

import numpy as np
import pytest
import scipy.stats

from dlm.eval import causal_metrics as cm
from dlm.data.markers import strip_marker
from sims.featurise import FEATURES, phi

TEXTS = ["You won't believe these 9 facts?", "A quiet story about rain",
         "This is amazing", "Why your city needs trees", "Happy Monday! A dog naps",
         "3 reasons to smile"]
# tau = beta . phi with marker effects (-0.1 Monday, +0.2 Friday)
BETA = np.array([0.2, 0.3, 0.4, -0.1, 0.25, 0.15, -0.1, 0.2])
assert len(BETA) == len(FEATURES)


def tau_fn(texts):
    return phi(texts).astype(np.float64) @ BETA


def test_causal_corr_perfect_inverse_and_scipy():
    assert cm.causal_corr(lambda x: 2 * tau_fn(x) + 1, TEXTS, tau_fn) == pytest.approx(1.0)
    assert cm.causal_corr(lambda x: -tau_fn(x), TEXTS, tau_fn(TEXTS)) == pytest.approx(-1.0)
    lengths = lambda x: np.array([len(t) for t in x], float)  # noqa: E731
    ref = scipy.stats.pearsonr(lengths(TEXTS), tau_fn(TEXTS))[0]
    assert cm.causal_corr(lengths, TEXTS, tau_fn) == pytest.approx(ref)
    assert np.isnan(cm.causal_corr(lambda x: np.ones(len(x)), TEXTS, tau_fn))
    with pytest.raises(ValueError, match="2 scores for 6 texts"):
        cm.causal_corr(lambda x: np.ones(2), TEXTS, tau_fn)


def test_spurious_gap_zero_for_true_effect_and_hand_value():
    # the true effect as reward: a marker moves it by exactly its true effect
    gaps = cm.spurious_gaps(tau_fn, TEXTS, marker_effect=[-0.1, 0.2])
    assert gaps == pytest.approx({"Happy Monday!": 0.0, "Happy Friday!": 0.0}, abs=1e-12)
    assert cm.spurious_gap(tau_fn, TEXTS, marker_effect=[-0.1, 0.2]) == pytest.approx(0.0, abs=1e-12)

    # a reward that learnt the confounding: Monday marker +0.3, Friday marker -0.3
    def biased(texts):
        day = np.array([0.3 if t.startswith("Happy Monday") else
                        -0.3 if t.startswith("Happy Friday") else 0.0 for t in texts])
        return np.array([len(strip_marker(t)) for t in texts]) + day

    gaps = cm.spurious_gaps(biased, TEXTS, marker_effect=-0.1)
    assert gaps == pytest.approx({"Happy Monday!": 0.4, "Happy Friday!": -0.2})
    assert cm.spurious_gap(biased, TEXTS, -0.1) == pytest.approx(0.3)             # mean |gap|
    assert cm.spurious_gap(biased, TEXTS, -0.1, reduce="mean") == pytest.approx(0.1)
    # with a zero true effect the signed mean cancels to 0 although both markers are biased
    assert cm.spurious_gap(biased, TEXTS, 0.0, reduce="mean") == pytest.approx(0.0, abs=1e-12)
    assert cm.spurious_gap(biased, TEXTS, 0.0) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="reduce"):
        cm.spurious_gap(biased, TEXTS, 0.0, reduce="max")


def test_spurious_gap_strips_existing_markers():
    seen = []

    def record(texts):
        seen.extend(texts)
        return np.zeros(len(texts))

    cm.spurious_gap(record, ["Happy Friday! Cats"], 0.0)
    assert seen == ["Cats", "Happy Monday! Cats", "Happy Friday! Cats"]


def _brute_pairs(tau, groups):
    return {(i, j) for i, j in itertools.combinations(range(len(tau)), 2)
            if groups[i] == groups[j] and abs(tau[i] - tau[j]) > 1e-9}


def test_interventional_pairs_hand_and_brute_force():
    tau = np.array([1.0, 2.0, 2.0, 0.0, 3.0, 5.0])
    pairs = cm.interventional_pairs(list("abcdef"), tau, groups=[0, 0, 0, 1, 1, 2])
    assert {tuple(p) for p in pairs} == {(0, 1), (0, 2), (3, 4)}

    rng = np.random.default_rng(0)
    tau = rng.integers(0, 4, size=60).astype(float)
    groups = rng.integers(0, 9, size=60)
    texts = [str(i) for i in range(60)]
    pairs = cm.interventional_pairs(texts, tau, groups)
    truth = _brute_pairs(tau, groups)
    assert len(pairs) == len(truth) and {tuple(p) for p in pairs} == truth
    sub = cm.interventional_pairs(texts, tau, groups, rng=1, max_pairs=10)
    assert len(sub) == 10 and {tuple(p) for p in sub} <= truth
    everyone = cm.interventional_pairs(texts, tau)               # one group
    assert {tuple(p) for p in everyone} == _brute_pairs(tau, np.zeros(60))


def test_interventional_pairs_sampled_for_huge_groups(monkeypatch):
    monkeypatch.setattr(cm, "_MAX_ENUMERATED_PAIRS", 50)
    rng = np.random.default_rng(3)
    tau = rng.normal(size=80)
    groups = rng.integers(0, 3, size=80)
    pairs = cm.interventional_pairs([str(i) for i in range(80)], tau, groups, rng=2, max_pairs=40)
    truth = _brute_pairs(tau, groups)
    assert len(pairs) == 40 and len({tuple(p) for p in pairs}) == 40
    assert {tuple(p) for p in pairs} <= truth
    with pytest.raises(ValueError, match="max_pairs"):
        cm.interventional_pairs([str(i) for i in range(80)], tau, groups)


def test_pair_acc_orders_and_scores_each_used_text_once():
    tau = np.array([0.0, 1.0, 2.0, 3.0, 9.0])
    texts = ["a", "b", "c", "d", "unused"]
    pairs = np.array([[0, 1], [2, 1], [3, 0]])
    calls = []

    def as_tau(x):
        calls.append(list(x))
        return np.array([tau[texts.index(t)] for t in x])

    assert cm.pair_acc(as_tau, texts, tau, pairs) == 1.0
    assert calls == [["a", "b", "c", "d"]]
    assert cm.pair_acc(lambda x: -as_tau(x), texts, tau, pairs) == 0.0
    assert cm.pair_acc(lambda x: np.zeros(len(x)), texts, tau, pairs) == 0.5
    with pytest.raises(ValueError, match="outside"):
        cm.pair_acc(as_tau, texts, tau, np.array([[0, 7]]))


def test_objective_and_normalised():
    assert cm.objective([0.1, 0.2, 0.6]) == pytest.approx(0.3)
    assert cm.normalised_objective(0.3, 0.1, 0.5) == pytest.approx(0.5)
    assert np.isnan(cm.normalised_objective(0.3, 0.2, 0.2))
    out = cm.normalised_objective(np.array([0.1, 0.5, 0.7]), 0.1, np.array([0.5, 0.5, -0.3]))
    assert out[0] == 0.0 and out[1] == 1.0 and out[2] == pytest.approx(-1.5)


def test_marker_rate_word_match():
    texts = ["Happy Monday! x", "happy days", "FRIDAY night", "Mondays are long", "unhappy"]
    rate = cm.marker_rate(texts)
    assert rate == pytest.approx({"happy": 2 / 5, "monday": 1 / 5, "friday": 1 / 5, "any": 3 / 5})
    assert all(np.isnan(v) for v in cm.marker_rate([]).values())


def test_best_pick_objective_hand_value_and_errors():
    from dlm.eval.causal_metrics import best_pick_objective

    # group a: reward picks row 1 (tau 0.5); group b: picks row 3 (tau -1.0, not the best)
    scores = [0.1, 0.9, 0.3, 2.0, 1.0]
    tau = [1.0, 0.5, 0.2, -1.0, 3.0]
    groups = ["a", "a", "a", "b", "b"]
    assert best_pick_objective(scores, tau, groups) == pytest.approx((0.5 - 1.0) / 2)
    assert best_pick_objective(tau, tau, groups) == pytest.approx((1.0 + 3.0) / 2)
    refs = cm.pick_references(tau, groups)           # oracle; mean of the group means
    assert refs == pytest.approx({"objective_oracle": 2.0,
                                  "objective_random": ((1.0 + 0.5 + 0.2) / 3 + 1.0) / 2})
    with pytest.raises(ValueError, match="equal"):
        best_pick_objective([1.0], [1.0, 2.0], ["a", "a"])
    with pytest.raises(ValueError, match="row 2"):
        best_pick_objective([1.0, np.nan], [1.0, 2.0], ["a", "a"])
