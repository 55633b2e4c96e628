"""scripts.dpo_digits: the digit preference and paired difference by hand; tiny end to end."""
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from scripts import dpo_digits


def test_has_digit_ignores_the_marker_and_reads_any_digit():
    texts = ["5 Things", "Happy Monday! No Digits Here", "Top 10?", "", "Happy Friday! 2 Cats"]
    np.testing.assert_array_equal(dpo_digits.has_digit(texts), [1, 0, 1, 0, 1])


def test_paired_points_is_the_mean_and_se_of_per_seed_differences():
    frame = pd.DataFrame({"seed": [0, 0, 1, 1, 2, 2], "policy": ["sft", "dpo"] * 3,
                          "digit_share": [0.20, 0.40, 0.10, 0.40, 0.30, 0.40]})
    mean, se = dpo_digits.paired_points(frame)
    d = np.array([20.0, 30.0, 10.0])                          # points, by seed
    assert mean == pytest.approx(d.mean()) and se == pytest.approx(d.std(ddof=1) / np.sqrt(3))


@pytest.mark.slow
def test_tiny_preset_end_to_end(tmp_path):
    cfg = dataclasses.replace(dpo_digits.PRESETS["tiny"], sft_dir=str(tmp_path / "sft"))
    out = tmp_path / "run"
    frame = dpo_digits.run(cfg, out, quiet=True)
    written = pd.read_csv(out / "results.csv")
    assert len(written) == 6 and sorted(set(written["policy"])) == ["dpo", "sft"]
    assert (written["n_generations"] >= cfg.n_generations).all()
    assert written["digit_share"].between(0, 1).all()
    dpo = frame[frame["policy"] == "dpo"]
    # DPO learned its training pairs: loss below log 2 (its value at the reference)
    assert (dpo["n_pairs"] > 0).all() and (dpo["dpo_loss"] < np.log(2)).all()
    curves = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sorted({r["seed"] for r in curves}) == [0, 1, 2]
    summary = (out / "summary.md").read_text()
    assert "DPO - SFT digit share" in summary and "points" in summary
    assert (out / "digit_share.png").stat().st_size > 0
    assert json.loads((out / "config.json").read_text())["dpo_digits"]["sft_preset"] == "tiny"
