"""`--model NAME` reaches the policy-model field of every script that has a policy model
(train_sft, dpo_digits and replicate_monday are checked in their own test files)."""
import importlib

import pytest


class Captured(Exception):
    """Raised by the stand-in `run` with the config the script resolved."""


def _capture_run(cfg, *args, **kwargs):
    raise Captured(cfg)


@pytest.mark.parametrize("script, field, extra", [
    ("compare_rewards", "policy_model", []),
    ("replicate_simulation", "policy_model", []),
    ("train_oracle_reward", "model", []),
    ("bench_pretrained", "model", []),
    ("upworthy", "model", ["--data", "unused.csv"]),
])
def test_model_flag_sets_the_policy_model(script, field, extra, tmp_path, monkeypatch):
    module = importlib.import_module(f"scripts.{script}")
    # a thin script calls its library pipeline (sims.experiments / dlm.experiments: imported
    # as `experiment`, or `U` in scripts.upworthy); the others still have their own run
    pipeline = getattr(module, "experiment", None) or getattr(module, "U", None) or module
    monkeypatch.setattr(pipeline, "run", _capture_run)
    if script == "upworthy":   # reaches run only after loading its data
        monkeypatch.setattr(pipeline, "load_inputs", lambda *a: (None, None))
        monkeypatch.setattr(pipeline, "check_representations", lambda *a: None)
    with pytest.raises(Captured) as got:
        module.main(["--out", str(tmp_path), "--model", "smollm2-135m", *extra])
    cfg = got.value.args[0]
    assert getattr(cfg, field) == "smollm2-135m"
    if script == "upworthy":   # the LLM's frozen states join the representations
        assert "smollm2-135m" in cfg.representations


def test_bench_pretrained_rejects_an_unknown_model(tmp_path):
    from scripts import bench_pretrained
    with pytest.raises(SystemExit):
        bench_pretrained.main(["--out", str(tmp_path), "--model", "gpt-17"])
