"""Bring-your-own-log fine-tuning: scripts.deconfound --finetune and dlm.finetune, end to end
on a small headline-world log (tiny SFT, a few DPO / REINFORCE steps)."""
import json
import os

import jax
import numpy as np
import pandas as pd
import pytest

from dlm import api
from dlm import finetune as ft
from dlm.data.corpus import log_stories
from scripts import deconfound

ARGS = ["--content", "headline", "--context", "lede", "--group", "story", "--successes",
        "clicks", "--trials", "impressions", "--confounder", "week:time", "--confounder",
        "weekday:categorical", "--confounder", "log_audience:numeric", "--text-features", "phi",
        "--reward-representation", "phi", "--set", "folds=2", "--set", "steps=60",
        "--finetune-preset", "tiny"]


def world_frame(n_stories: int = 40, n: int = 800, seed: int = 0) -> pd.DataFrame:
    """A headline-world log as a user's table: posted headline, its lede, story, counts and
    the three confounders (weeks as year-week labels)."""
    from dlm.data.builtin_corpus import builtin_corpus
    from sims.headlines import HeadlineWorld

    log = HeadlineWorld(builtin_corpus(n_stories=n_stories, seed=seed)).sample(
        jax.random.key(seed), n).log
    c = log.confounders
    return pd.DataFrame({
        "headline": log.content, "lede": log.context, "story": [f"s{g}" for g in log.group],
        "clicks": log.successes.astype(int), "impressions": log.trials.astype(int),
        "week": np.asarray(c["week"].levels)[c["week"].values].astype(int),
        "weekday": np.asarray(c["weekday"].levels)[c["weekday"].values],
        "log_audience": c["log_audience"].values})


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return world_frame()


@pytest.fixture(scope="module")
def data(tmp_path_factory, frame):
    """The log as a CSV, and a private SFT cache shared by this module's runs."""
    d = tmp_path_factory.mktemp("ft")
    frame.to_csv(d / "log.csv", index=False)
    old = os.environ.get("DLM_CACHE")
    os.environ["DLM_CACHE"] = str(d / "cache")
    yield d
    if old is None:
        os.environ.pop("DLM_CACHE", None)
    else:
        os.environ["DLM_CACHE"] = old


def _run(data, kind: str, name: str, *extra) -> "os.PathLike":
    out = data / name
    assert deconfound.main(["--data", str(data / "log.csv"), *ARGS, "--finetune", kind,
                            *extra, "--out", str(out)]) == 0
    return out


def _check_outputs(out, kind: str) -> pd.DataFrame:
    d = out / "finetune"
    for name in ("samples.csv", "samples.md", "summary.md", "config.json"):
        assert (d / name).is_file(), name
    samples = pd.read_csv(d / "samples.csv", keep_default_na=False)
    assert list(samples.columns[:5]) == ["context", "policy", "sample", "text", "reward"]
    assert set(samples.policy) == {"sft", kind}
    # tiny preset: 2 generations for each of 6 held-out contexts, per policy
    assert (samples.groupby("policy").size() == 12).all()
    lede = set(pd.read_csv(out / "adjusted.csv").lede)
    assert set(samples.context) <= lede
    # the rewards are the saved reward's scores of the written texts (a load_reward check)
    reward = api.load_reward(out / "rewards" / "deconfoundlm")
    np.testing.assert_allclose(samples.reward, reward(samples.text.tolist()), atol=1e-5)
    summary = (d / "summary.md").read_text()
    assert "against the deconfoundlm reward" in summary and "kl_to_sft" in summary
    assert "## Fine-tuned policy" in (out / "report.md").read_text()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["finetune"]["kind"] == kind and cfg["train_reward"] == "deconfoundlm"
    return samples


def test_best_of_n_end_to_end(data):
    out = _run(data, "best-of-n", "bon")
    samples = _check_outputs(out, "best-of-n")
    mean = samples.groupby("policy").reward.mean()
    # each pick is the best of n candidates that include SFT's first sample
    assert mean["best-of-n"] >= mean["sft"]
    picked = samples[samples.policy == "best-of-n"].reward.to_numpy()
    first = samples[samples.policy == "sft"].reward.to_numpy()
    assert (picked >= first - 1e-9).all()
    assert not (out / "finetune" / "policy").exists()         # nothing trained: no params


@pytest.mark.parametrize("kind", ["dpo", "pg"])
def test_trained_kinds_end_to_end(data, kind):
    from dlm.policy.sft_cache import load_sft
    from dlm.train.checkpoint import Checkpointer

    out = _run(data, kind, kind, "--finetune-steps", "3")
    _check_outputs(out, kind)
    cfg = json.loads((out / "finetune" / "config.json").read_text())
    with Checkpointer(out / "finetune" / "policy" / "checkpoints") as ck:
        assert ck.latest_step() == 3
        params = ck.restore_params()
    sft = load_sft(cfg["sft_dir"]).params
    assert jax.tree.structure(params) == jax.tree.structure(sft)
    moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                         params, sft)
    assert max(jax.tree.leaves(moved)) > 0                   # the optimiser changed the policy
    curve = [json.loads(x) for x in (out / "finetune" / "metrics.jsonl").read_text().splitlines()]
    assert curve[-1]["step"] == 3 and np.isfinite(curve[-1]["loss"])


def test_api_finetune_with_any_reward(data, frame):
    """Any callable is a reward; best-of-n by the count of 'e' picks texts with more of it.
    (Same stories and label as the command line's log: its cached SFT policy is reused.)"""
    log = api.from_frame(frame, content="headline", context="lede", group="story",
                         successes="clicks", trials="impressions",
                         confounders={"week": "time", "weekday": "categorical"},
                         source=str(data / "log.csv"))

    def count_e(texts):
        return np.array([str(t).count("e") for t in texts], np.float64)

    res = api.finetune(log, count_e, "best-of-n", ft.PRESETS["tiny"], n_candidates=4)
    s = res.summary.set_index("policy")
    assert s.loc["best-of-n", "mean_reward"] >= s.loc["sft", "mean_reward"]
    assert s.loc["best-of-n", "kl_to_sft"] == pytest.approx(np.log(4) - 3 / 4)
    assert res.info["reward"] == "count_e" and res.params is None


def test_finetune_without_context_fails_before_fitting(data, tmp_path, capsys):
    args = [a for a in ARGS if a not in ("--context", "lede")]
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as err:
        deconfound.main(["--data", str(data / "log.csv"), *args, "--finetune", "dpo",
                         "--out", str(out)])
    assert err.value.code == 2
    assert "--finetune needs --context COL" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("extra,message", [
    (["--model", "tiny"], "--model needs --finetune"),
    (["--finetune", "dpo", "--finetune-set", "magic=1"], "unknown field 'magic'"),
    (["--finetune", "dpo", "--sft-preset", "huge"], "unknown SFT preset 'huge'"),
    (["--finetune", "pg", "--model", "gpt-9"], "unknown policy model 'gpt-9'")])
def test_bad_finetune_options_are_usage_errors(data, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit):
        deconfound.main(["--data", str(data / "log.csv"), *ARGS, *extra, "--out", str(out)])
    assert message in capsys.readouterr().err and not out.exists()


def test_too_few_stories_fail_before_fitting(frame, tmp_path, capsys):
    """Two stories cannot be split into training and held-out ones: said before fitting."""
    frame = frame.assign(story=np.where(frame.index % 2 == 0, "a", "b"))
    frame.to_csv(tmp_path / "log.csv", index=False)
    out = tmp_path / "out"
    assert deconfound.main(["--data", str(tmp_path / "log.csv"), *ARGS, "--finetune", "dpo",
                            "--out", str(out)]) == 2
    assert "too few to split" in capsys.readouterr().err and not out.exists()


def test_stories_by_context_without_groups(frame):
    log = api.from_frame(frame, content="headline", context="lede", successes="clicks",
                         trials="impressions", confounders={"log_audience": "numeric"})
    corpus, label = log_stories(log)
    assert sorted(corpus.contexts) == sorted(set(frame.lede)) and "stories by context" in label
    for ctx, heads in zip(corpus.contexts, corpus.headlines):
        assert set(heads) == {h.strip() for h in frame.headline[frame.lede == ctx]}
