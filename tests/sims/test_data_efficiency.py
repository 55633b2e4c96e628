"""sims.experiments.data_efficiency (scripts.data_efficiency): the tiny preset end to end."""
import numpy as np
import pandas as pd
import pytest

from scripts import data_efficiency


def test_tiny_preset(tmp_path):
    assert data_efficiency.main(["--preset", "tiny", "--out", str(tmp_path)]) == 0
    res = pd.read_csv(tmp_path / "results.csv")
    assert set(res.reward) == {"experimental", "deconfoundlm", "hybrid"}
    per_n = res.groupby("n_interventional")[["var_U", "w"]].first()
    # the experimental reward's variance falls like 1/n (100 -> 2000 postings: ~20x)
    ratio = per_n.var_U.loc[100] / per_n.var_U.loc[2000]
    assert 7 < ratio < 60
    assert per_n.w.loc[2000] > per_n.w.loc[100]          # more data, more weight on it
    assert ((res.w >= 0) & (res.w <= 1)).all()
    # the hybrid is never worse than the worse of its inputs, and close to the better
    wide = res.pivot_table(index="n_interventional", columns="reward", values="causal_corr")
    assert (wide.hybrid >= wide[["experimental", "deconfoundlm"]].min(axis=1) - 1e-9).all()
    assert (wide.hybrid >= wide[["experimental", "deconfoundlm"]].max(axis=1) - 0.03).all()
    assert np.isfinite(wide.values).all()
    assert "| 0.900 | 2000 | hybrid |" in (tmp_path / "summary.md").read_text()


def test_bad_config_fails(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:          # dlm.cli.UsageExit: a usage error
        data_efficiency.main(["--preset", "tiny", "--out", str(tmp_path / "o"),
                              "--set", "n_interventional=5"])
    assert exit_info.value.code == 2
    assert "need n_interventional >= 20" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
