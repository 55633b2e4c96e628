"""dlm.eval.selection: each strength-selection rule and the paired gains, by hand."""
import numpy as np
import pandas as pd
import pytest
import scipy.stats

from dlm.eval.selection import mean_ci, paired_gains, selections


def _frame():
    """One scenario; reported seeds 0-2, tuning seeds 100-101; odin at λ 0.1 and 10.

    Reported seeds: λ=0.1 has the better mean objective (in-sample best); tuning seeds
    prefer λ=10; validation prefers λ=10 on seeds 0 and 1 and λ=0.1 on seed 2.
    """
    rows = []

    def add(seed, method, strength, objective, val_loss, split="report"):
        rows.append({"seed": seed, "entanglement": 0.6, "p_marker": 0.8, "method": method,
                     "strength": strength, "objective": objective, "val_loss": val_loss,
                     "split": split})

    for seed, (o01, o10, v01, v10) in {0: (0.30, 0.20, 0.5, 0.4), 1: (0.32, 0.22, 0.5, 0.4),
                                       2: (0.28, 0.27, 0.3, 0.4)}.items():
        add(seed, "odin", 0.1, o01, v01)
        add(seed, "odin", 10.0, o10, v10)
        add(seed, "deconfoundlm", np.nan, 0.40 + 0.01 * seed, 0.35)
    for seed, (o01, o10) in {100: (0.10, 0.50), 101: (0.12, 0.40)}.items():
        add(seed, "odin", 0.1, o01, 0.1, "tune")      # lowest val_loss: must not leak
        add(seed, "odin", 10.0, o10, 0.9, "tune")
    return pd.DataFrame(rows)


def test_mean_ci_is_the_student_t_interval():
    x = np.array([0.1, 0.3, 0.2, 0.6])
    m, lo, hi = mean_ci(x)
    half = scipy.stats.t.ppf(0.975, 3) * x.std(ddof=1) / 2.0
    assert (m, lo, hi) == pytest.approx((0.3, 0.3 - half, 0.3 + half))
    assert np.isnan(mean_ci([0.5])[1]) and mean_ci([0.5, np.nan])[0] == 0.5


def test_each_rule_picks_its_strength_and_tuning_seeds_are_never_reported():
    sel = selections(_frame(), "odin")
    assert set(sel.seed) == {0, 1, 2}
    by = {rule: dict(zip(g.seed, g.strength)) for rule, g in sel.groupby("selection")}
    assert by["tuned"] == {0: 10.0, 1: 10.0, 2: 10.0}          # tuning seeds: 0.45 vs 0.11
    assert by["in-sample"] == {0: 0.1, 1: 0.1, 2: 0.1}         # reported seeds: 0.30 vs 0.23
    assert by["validation"] == {0: 10.0, 1: 10.0, 2: 0.1}      # per seed, lowest val_loss
    assert by["λ=0.1"] == {0: 0.1, 1: 0.1, 2: 0.1} and by["λ=10"] == {0: 10.0, 1: 10.0, 2: 10.0}


def test_paired_gains_by_hand():
    g = paired_gains(_frame(), baselines=("odin",)).set_index("selection")
    ours = np.array([0.40, 0.41, 0.42])
    # validation: seeds 0, 1 at λ=10 (0.20, 0.22), seed 2 at λ=0.1 (0.28)
    d = ours - np.array([0.20, 0.22, 0.28])
    m, lo, hi = mean_ci(d)
    row = g.loc["validation"]
    assert row["strength"] == "0.1×1, 10×2"
    assert (row["diff"], row["lo"], row["hi"]) == pytest.approx((m, lo, hi))
    assert row["baseline_mean"] == pytest.approx(0.70 / 3)
    assert row["rel_gain"] == pytest.approx(m / (0.70 / 3))
    assert row["n_seeds"] == 3
    # tuned: λ=10 on every reported seed
    assert g.loc["tuned", "diff"] == pytest.approx(np.mean(ours - [0.20, 0.22, 0.27]))
    assert g.loc["tuned", "strength"] == "10"
    assert g.loc["in-sample", "diff"] == pytest.approx(np.mean(ours - [0.30, 0.32, 0.28]))


def test_without_tuning_seeds_or_val_loss_those_rules_are_absent():
    f = _frame()
    f = f[f.split == "report"].drop(columns=["val_loss"])
    rules = set(selections(f, "odin").selection)
    assert rules == {"λ=0.1", "λ=10", "in-sample"}
