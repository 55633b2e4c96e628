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
    assert json.loads((tmp_path / "config.json").read_text())["config"]["seeds"] == 2
    assert (tmp_path / "weekday_effects.png").stat().st_size > 1000
