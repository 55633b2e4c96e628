"""sims.experiments.data_efficiency (scripts.data_efficiency): the tiny preset end to end,
and its experiment's groups and unmeasured confounders."""

import jax
import numpy as np
import pandas as pd
import pytest

from dlm.data.builtin_corpus import builtin_corpus
from scripts import data_efficiency
from sims.experiments.data_efficiency import REWARDS, experiment_log, observed_log
from sims.headlines import HeadlineWorld


def test_tiny_preset(tmp_path):
    assert data_efficiency.main(["--preset", "tiny", "--out", str(tmp_path)]) == 0
    res = pd.read_csv(tmp_path / "results.csv")
    assert len(res) == 1 * 2 * 2 * len(REWARDS)          # entanglement x seeds x n x reward
    assert set(res.reward) == set(REWARDS)
    assert {"causal_corr", "objective", "objective_oracle", "w", "bias2", "var_U"} <= set(res)
    assert np.isfinite(res[["causal_corr", "objective"]].values).all()
    hyb = res.reward.str.startswith("hybrid")
    assert ((res.w[hyb] >= 0) & (res.w[hyb] <= 1)).all() and res.w[~hyb].isna().all()
    assert (res.objective <= res.objective_oracle + 1e-12).all()    # nothing beats picking by tau
    # the observational rewards are fitted once per seed: the same at every n
    obs = res[res.reward.isin(["naive", "deconfoundlm"])]
    assert (obs.groupby(["seed", "reward"]).causal_corr.nunique() == 1).all()

    # week is unmeasured and at entanglement 0.9 confounds the entangled features: with
    # 2000 interventional postings, per world seed the experiment's reward beats the
    # deconfounded one clearly (0.996 vs 0.953 measured), the hybrid leans on it (w* 0.96)
    # and is as good as it; naive (weekday too) is worse than deconfoundlm
    big = res[res.n_interventional == 2000].pivot(index="seed", columns="reward",
                                                  values="causal_corr")
    assert (big.experimental_ctr > big.deconfoundlm + 0.02).all(), big
    assert (big.hybrid >= big[["experimental_ctr", "deconfoundlm"]].max(axis=1) - 0.005).all()
    assert (big.deconfoundlm > big.naive + 0.05).all()
    w = res[res.reward == "hybrid"].pivot(index="seed", columns="n_interventional", values="w")
    assert (w[2000] > 0.8).all() and (w[2000] > w[100]).all(), w    # more data, more weight
    # the experimental reward's variance falls like 1/n (100 -> 2000 postings: ~20x)
    var_U = res[res.reward == "hybrid"].groupby("n_interventional").var_U.mean()
    assert 7 < var_U.loc[100] / var_U.loc[2000] < 60
    assert "| 0.900 | 2000 | hybrid |" in (tmp_path / "summary.md").read_text()
    assert (tmp_path / "data_efficiency.png").stat().st_size > 10_000


def test_experiment_groups_and_unmeasured():
    world = HeadlineWorld(builtin_corpus(20, seed=1))
    sample = world.intervene(jax.random.PRNGKey(0), 12)
    log = experiment_log(sample, 5)
    # consecutive blocks; the short last block joins the one before (every group 2+ arms)
    np.testing.assert_array_equal(log.group, [0] * 5 + [1] * 7)
    assert log.group_labels == ("exp0", "exp1")
    np.testing.assert_array_equal(log.content, sample.log.content)      # rows untouched
    obs = observed_log(sample.log, ("week",))
    assert set(obs.confounders) == {"weekday", "log_audience"}
    assert set(sample.log.confounders) == {"weekday", "week", "log_audience"}
    with pytest.raises(ValueError, match=r"\['month'\] are not in the log"):
        observed_log(sample.log, ("month",))


def test_bad_config_fails(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:          # dlm.cli.UsageExit: a usage error
        data_efficiency.main(["--preset", "tiny", "--out", str(tmp_path / "o"),
                              "--set", "n_interventional=20"])
    assert exit_info.value.code == 2
    assert "need n_interventional >= 25" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
