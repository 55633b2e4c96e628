"""dlm.causal.log_checks: sample ratio mismatch per period, confounders determined by another."""
import numpy as np
import pandas as pd
import pytest
import scipy.stats

from dlm.causal import log_checks as L
from dlm.causal.diagnostics import DiagnosticsConfig
from dlm.data.log import Confounder

CFG = DiagnosticsConfig()


def grouped_log(broken_period=None, n_periods=12, n_groups=20, n_arms=3, trials=20_000, seed=0):
    """Groups (A/B tests) of n_arms arms; trials split multinomially, evenly except in
    broken_period, where one arm is served half the time (a cache serving one arm)."""
    rng = np.random.default_rng(seed)
    group, period, n = [], [], []
    for t in range(n_periods):
        for g in range(n_groups):
            p = np.full(n_arms, 1 / n_arms)
            if t == broken_period:
                p = np.r_[0.5, np.full(n_arms - 1, 0.5 / (n_arms - 1))]
            n += list(rng.multinomial(trials, p))
            group += [t * n_groups + g] * n_arms
            period += [t] * n_arms
    labels = tuple(f"2013{w:02d}" for w in range(20, 20 + n_periods))
    time = Confounder("time", np.asarray(period), labels)
    return np.asarray(group), np.asarray(n, float), {"week": time}


def test_srm_flags_the_broken_period_only():
    group, trials, conf = grouped_log(broken_period=5)
    per_group, per_period, time = L.sample_ratio_mismatch(group, trials, conf, CFG)
    assert time == "week" and len(per_period) == 12 and len(per_group) == 240
    assert per_period.period[per_period.flagged].tolist() == ["201325"]
    broken = per_period.set_index("period").loc["201325"]
    assert broken.share == 1.0 and broken.groups == 20
    assert per_period.share[~per_period.flagged].max() < CFG.srm_share
    warning = L.srm_warning(per_period, time, CFG)
    assert len(warning) == 1 and "in 1 of 12 week periods (201325)" in warning[0]


def test_srm_clean_log_is_not_flagged():
    group, trials, conf = grouped_log(broken_period=None, seed=1)
    _, per_period, time = L.sample_ratio_mismatch(group, trials, conf, CFG)
    assert not per_period.flagged.any() and L.srm_warning(per_period, time, CFG) == []
    # equal multinomial splits: about srm_alpha of the groups fall below it, not a quarter
    assert per_period.groups_p_below.sum() <= 3


def test_srm_chi_square_by_hand_and_group_period():
    # group 0: arms 100, 130, 70 in period 1 (one row in period 0: the mode wins);
    # group 1 has a single arm and group 2 no trials: both left out
    group = np.array([0, 0, 0, 1, 2, 2])
    trials = np.array([100.0, 130.0, 70.0, 50.0, 0.0, 0.0])
    period = np.array([1, 1, 0, 0, 1, 1])
    t = L.srm_groups(group, trials, period)
    assert t.group.tolist() == [0] and t.period.tolist() == [1] and t.arms.tolist() == [3]
    chi2 = (0 ** 2 + 30 ** 2 + 30 ** 2) / 100
    assert t.chi2[0] == pytest.approx(chi2) and t.max_min_ratio[0] == pytest.approx(130 / 70)
    assert t.p[0] == pytest.approx(scipy.stats.chi2.sf(chi2, 2))
    with pytest.raises(ValueError, match="one entry per row"):
        L.srm_groups(group, trials[:-1])


def test_srm_runs_and_every_period_message():
    periods = pd.DataFrame({"period": list("abcdef"), "groups": 10, "groups_p_below": 5,
                            "share": 0.5, "median_max_min_ratio": 1.2,
                            "flagged": [False, True, True, False, True, False]})
    assert L.flagged_runs(periods) == ["b..c", "e"]
    everywhere = L.srm_warning(periods.assign(flagged=True), "week", CFG)
    assert "in every period" in everywhere[0] and "ignore this" in everywhere[0]


def test_weekday_derived_from_a_daily_time_confounder_is_determined():
    days = np.repeat(np.arange(70), 5)                  # five rows a day
    rng = np.random.default_rng(0)
    conf = {"day": Confounder("time", days, tuple(str(d) for d in range(70))),
            "weekday": Confounder("categorical", days % 7, tuple("MTWTFSS")),
            "region": Confounder("categorical", rng.integers(0, 3, days.size), ("a", "b", "c")),
            "region2": None}
    conf["region2"] = Confounder("categorical", 2 - conf["region"].values, ("c", "b", "a"))
    table = L.determined_confounders(conf)
    got = {(r.confounder, r.determined_by, r.one_to_one) for r in table.itertuples()}
    # each day is one weekday; region and region2 are one grouping (listed once); region
    # varies within a day
    assert got == {("weekday", "day", False), ("region2", "region", True)}
    row = table[(table.confounder == "weekday")].iloc[0]
    assert row.n_levels == 70 and row.n_values == 7
    warnings = L.determined_warnings(table)
    assert any("'weekday' is determined by 'day'" in w for w in warnings)
    assert any("'region' and 'region2' are the same grouping" in w for w in warnings)
    weekly = {"week": Confounder("time", days // 7, tuple(str(w) for w in range(10))),
              "weekday": conf["weekday"]}
    assert L.determined_confounders(weekly).empty      # a week holds all seven weekdays
