"""scripts.estimate end to end on its tiny preset: outputs exist and the truth is recovered."""
import json

import pandas as pd

from scripts import estimate


def test_tiny_preset_writes_outputs_and_recovers_truth(tmp_path):
    assert estimate.main(["--preset", "tiny", "--out", str(tmp_path)]) == 0
    res = pd.read_csv(tmp_path / "results.csv")
    assert list(res.columns) == ["seed", "method", "quantity", "truth", "estimate", "lo", "hi"]
    assert set(res.method) == {"deconfoundlm", "partial_out"}
    quantities = {f"weekday_{d}" for d in range(7)} | {"audience_slope", "corr_tau"}
    assert set(res.quantity) == quantities
    assert len(res) == 2 * 2 * len(quantities)  # seeds x methods x quantities
    dec = res[(res.method == "deconfoundlm") & (res.quantity != "corr_tau")]
    assert (dec.estimate - dec.truth).abs().mean() < 0.05
    corr = res[res.quantity == "corr_tau"].pivot(index="seed", columns="method", values="estimate")
    assert (corr.deconfoundlm > corr.partial_out).all()
    assert "deconfoundlm" in (tmp_path / "summary.md").read_text()
    config = json.loads((tmp_path / "config.json").read_text())["config"]
    assert config["seeds"] == 2 and config["world"]["entanglement"] == 0.6   # nested JSON
    assert (tmp_path / "weekday_effects.png").stat().st_size > 1000


def test_world_and_estimator_fields_are_set_by_dotted_names(tmp_path, monkeypatch, capsys):
    """Every world field reaches the world (issue 12); an unknown one names the valid ones."""
    import numpy as np
    import pytest

    from dlm import cli
    from sims.experiments import estimate as experiment
    from sims.experiments.worlds import build_world

    cfg = cli.apply_overrides(experiment.PRESETS["tiny"], [
        "world.confounder_strength=2", "world.entanglement=0.9", "estimator.folds=3"])
    assert (cfg.world.entanglement, cfg.estimator.folds, cfg.n_stories) == (0.9, 3, 200)
    truth = build_world(cfg.world, cfg.n_stories).truth()
    wd = np.array([0.3, 0.05, 0.0, -0.05, -0.3, 0.02, -0.02])       # the default weekday effects
    np.testing.assert_allclose(truth["weekday_effects"], 2 * (wd - wd.mean()), atol=1e-12)
    assert truth["audience_slope"] == pytest.approx(2 * 0.2)
    seen = {}
    monkeypatch.setattr(experiment, "run", lambda c, *a, **k: seen.setdefault("cfg", c) and 1 / 0)
    monkeypatch.setattr(estimate, "run", experiment.run)
    with pytest.raises(ZeroDivisionError):
        estimate.main(["--preset", "tiny", "--set", "world.p_marker=1", "--out", str(tmp_path)])
    assert seen["cfg"].world.p_marker == 1.0
    with pytest.raises(SystemExit, match="unknown field 'world.nope'.*confounder_strength"):
        estimate.main(["--preset", "tiny", "--set", "world.nope=1", "--out", str(tmp_path)])
    assert "fields of 'world'" in capsys.readouterr().err
