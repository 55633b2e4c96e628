"""scripts.train_oracle_reward: the tiny preset end to end (the quick preset is the check)."""
import dataclasses

import numpy as np
import pandas as pd
import pytest

from scripts import train_oracle_reward as oracle


def test_phi_linear_recovers_a_linear_target_exactly():
    texts = ["5 Things You Need", "Why Is This?", "A Quiet Day", "Your 3 Amazing Cats?",
             "This Is It", "Happy Monday! 7 Days", "Shocking News", "What You Should Know",
             "Happy Friday! A Long Story About A Very Small Town In The Hills",
             "Happy Monday! Would You?", "9 Lives", "An Epic And Tragic Tale Of This Town",
             "You", "Happy Friday! 12 Ways This Works", "Stunning"]
    assert len(texts) > oracle.phi(texts).shape[1] + 1          # overdetermined
    truth = lambda t: 0.5 + oracle.phi(t) @ np.arange(1.0, 9.0)  # noqa: E731
    targets = type("T", (), {"content": np.array(texts), "target": truth(texts),
                             "weight": np.ones(len(texts))})
    np.testing.assert_allclose(oracle.phi_linear(targets)(texts), truth(texts), atol=1e-8)


@pytest.mark.slow
def test_tiny_preset_end_to_end(tmp_path):
    pytest.importorskip("dlm.rewards")
    cfg = dataclasses.replace(oracle.PRESETS["tiny"], sft_dir=str(tmp_path / "sft"))
    frame = oracle.run(cfg, tmp_path / "run", quiet=True)
    written = pd.read_csv(tmp_path / "run" / "results.csv")
    assert len(written) == len(frame) == 2
    assert written["causal_corr"].between(-1, 1).all()
    # the feature-level reference knows phi: it must rank held-out headlines almost perfectly
    ref = written[written["reward"].str.startswith("linear")].iloc[0]
    assert ref["causal_corr"] > 0.9
    assert "corr(r(X), tau(X))" in (tmp_path / "run" / "summary.md").read_text()
