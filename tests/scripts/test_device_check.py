"""scripts.device_check: parts that time out or fail are recorded and the others still run
and report (stand-in parts); the toy preset end to end on CPU (slow)."""
import json
import sys

import pandas as pd
import pytest

from scripts import device_check as dc

_WRITE_BENCH = ("import json, pathlib, sys; p = pathlib.Path(sys.argv[-1]); "
                "p.mkdir(parents=True, exist_ok=True); (p / 'bench.json').write_text(json.dumps("
                "{'platform': 'cpu', 'device': 'cpu', 'train_tokens_per_s': 1234.0, "
                "'model_flops_utilisation': 0.25}))")
_STAND_INS = {"estimator": ["-c", "import time; time.sleep(120)"],
              "lora": ["-c", "import sys; print('boom'); sys.exit(3)"],
              "bench": ["-c", _WRITE_BENCH]}


def test_a_timeout_and_a_failure_do_not_lose_the_other_parts(tmp_path, monkeypatch):
    monkeypatch.setattr(dc, "part_command", lambda name, cfg, out, data: [
        sys.executable, *_STAND_INS[name], "--out", str(out)])
    cfg = dc.DeviceCheckConfig(budget_s=12.0, parts=("estimator", "lora", "bench"))
    runs = dc.run(cfg, "gpu", tmp_path)
    status = {r["part"]: r["status"] for r in runs}
    assert status["estimator"].startswith("timeout") and status["lora"] == "failed (rc 3)"
    assert status["bench"] == "ok"
    # the estimator had 0.25 / 0.65 of the 12 s; the later parts share what it left
    assert runs[0]["budget_s"] == pytest.approx(12 * 0.25 / 0.65)
    assert runs[1]["budget_s"] == pytest.approx((12 - runs[0]["seconds"]) * 0.2 / 0.4, abs=0.5)
    results = pd.read_csv(tmp_path / "results.csv")
    assert set(results.part) == {"estimator", "lora", "bench"}
    bench = results[results.part == "bench"].set_index("quantity").value
    assert bench["train_tokens_per_s"] == 1234.0 and bench["model_flops_utilisation"] == 0.25
    assert results[results.part == "lora"].quantity.isna().all()
    text = (tmp_path / "report.md").read_text()
    assert "## lora: failed (rc 3)" in text and "boom" in text      # the log's tail
    assert "## estimator: timeout" in text
    assert "MFU 0.250 on cpu (the >= 0.40 target is for a GPU" in text
    assert json.loads((tmp_path / "config.json").read_text())["preset"] == "gpu"


def test_unknown_part_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="unknown"):
        dc.run(dc.DeviceCheckConfig(parts=("bench", "gpu_magic")), "gpu", tmp_path)
    assert not (tmp_path / "config.json").exists()


@pytest.mark.slow
def test_toy_preset_end_to_end(tmp_path):
    rc = dc.main(["--preset", "toy", "--out", str(tmp_path)])
    results = pd.read_csv(tmp_path / "results.csv")
    status = results.groupby("part").status.first()
    assert rc == 0 and set(status) == {"ok"}, status
    assert list(status.index.sort_values()) == ["bench", "estimator", "lora", "monday"]
    value = results.set_index(["part", "quantity"]).value
    assert 0 < value["bench", "model_flops_utilisation"] < 1.5
    assert value["bench", "sample_tokens_per_s_kv"] > 0
    # (decode at toy size is gen(8) - gen(1) tokens, within timing noise: not checked)
    assert value["lora", "lora_train_tokens_per_s"] > 0 and value["lora", "prefill_tokens_per_s"] > 0
    assert value["estimator", "rows"] == 6000
    for model in ("SFT", "DPO", "DeconfoundLM-DPO"):
        assert 0 <= value["monday", f"{model} happy %"] <= 100
    text = (tmp_path / "report.md").read_text()
    for part in ("bench", "lora", "estimator", "monday"):
        assert f"## {part}: ok" in text and (tmp_path / part / "summary.md").is_file()
