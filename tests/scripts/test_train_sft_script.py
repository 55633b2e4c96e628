"""scripts.train_sft end to end on the tiny preset (and scripts.bench as a smoke test)."""
import importlib.util
import json
import math

import jax
import numpy as np
import pandas as pd
import pytest

from dlm.train.checkpoint import Checkpointer
from scripts import bench, train_sft


def test_tiny_preset_end_to_end_then_resume(tmp_path):
    out = tmp_path / "sft"
    cfg = train_sft.PRESETS["tiny"]
    first = train_sft.run(cfg, out, quiet=True)
    # training on the headlines lowers held-out bits per byte from ~log2(vocab) at init
    assert first["bpb_before"] > first["bpb_after"] > 0
    assert first["bpb_before"] == pytest.approx(math.log2(264) * 1.0, rel=0.15)

    written = json.loads((out / "config.json").read_text())
    assert written["sft"]["model"] == "tiny" and written["n_val_stories"] == 10
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6, 9, 12]
    assert all(np.isfinite(r["loss"]) for r in rows)
    assert (out / "samples.md").read_text().count("**generated:**") == 10
    assert len(first["samples"]) == 10 and all(isinstance(s, str) for s in first["samples"])
    summary = (out / "summary.md").read_text()
    assert "val bits/byte after" in summary and f"{first['bpb_after']:.4f}" in summary
    with Checkpointer(out / "checkpoints") as ck:
        assert ck.latest_step() == 12
        assert "embed" in ck.restore_params()

    # the same --out without --resume is refused before any work ...
    with pytest.raises(SystemExit, match="--resume"):
        train_sft.main(["--preset", "tiny", "--out", str(out), "--quiet"])
    # ... and with it the finished run is restored exactly: same validation score
    again = train_sft.run(cfg, out, resume=True, quiet=True)
    assert again["resumed_from"] == 12
    assert again["bpb_after"] == pytest.approx(first["bpb_after"], rel=1e-6)


def test_batch_for_step_is_a_pure_function_of_seed_and_step():
    tokens = np.arange(10)[:, None] * np.ones((1, 3), np.int32)
    mask = np.ones((10, 3), np.float32)
    a = train_sft.make_batch_for_step(tokens, mask, 4, seed=1)
    b = train_sft.make_batch_for_step(tokens, mask, 4, seed=1)
    np.testing.assert_array_equal(a(7)["tokens"], b(7)["tokens"])
    # steps 0..4 read 20 rows = two epochs: each epoch is a permutation of all 10 rows
    rows = np.concatenate([a(s)["tokens"][:, 0] for s in range(5)])
    assert sorted(rows[:10]) == list(range(10)) and sorted(rows[10:]) == list(range(10))


@pytest.mark.slow
def test_train_sft_on_real_upworthy(tmp_path, upworthy_path):
    res = train_sft.run(train_sft.PRESETS["tiny"], tmp_path, data=upworthy_path, quiet=True)
    assert res["bpb_before"] > res["bpb_after"]
    assert json.loads((tmp_path / "config.json").read_text())["data"] == str(upworthy_path)


def test_bench_tiny_writes_json(tmp_path):
    bench.main(["--preset", "tiny", "--out", str(tmp_path)])
    r = json.loads((tmp_path / "bench.json").read_text())
    for key in ("train_tokens_per_s", "model_flops_utilisation", "sample_tokens_per_s_kv",
                "sample_tokens_per_s_nocache", "matmul_flops_per_s"):
        assert r[key] > 0, key
    assert r["n_devices"] == jax.device_count()
    # timed rounds interleave dlm and (when installed) its PyTorch twin from the same weights
    rows = pd.read_csv(tmp_path / "results.csv")
    has_torch = importlib.util.find_spec("torch") is not None
    impls = ["dlm", "torch"] if has_torch else ["dlm"]
    assert list(rows["impl"]) == impls * 2 and list(rows["round"]) == sorted([0, 1] * len(impls))
    if has_torch:
        assert r["first_loss"]["torch"] == pytest.approx(r["first_loss"]["dlm"], abs=1e-4)
        ratios = rows[rows["impl"] == "dlm"]["ratio"]
        assert r["ratio_vs_torch"] == pytest.approx(float(np.median(ratios)))
    else:
        assert "torch is not installed" in (tmp_path / "summary.md").read_text()


def test_model_flag_reaches_the_sft_config_of_train_sft_and_dpo_digits(tmp_path, monkeypatch):
    from scripts import dpo_digits
    monkeypatch.setenv("DLM_CACHE", str(tmp_path / "cache"))
    # --model is sugar for the SFT config's `model`: an unknown name fails before training
    with pytest.raises(SystemExit, match="unknown model 'no-such-model'"):
        train_sft.main(["--preset", "tiny", "--model", "no-such-model", "--out", str(tmp_path / "a")])
    with pytest.raises(SystemExit, match="unknown model 'no-such-model'"):
        dpo_digits.main(["--preset", "tiny", "--model", "no-such-model", "--out", str(tmp_path / "b"),
                         "--quiet"])
