"""The Monday experiment: weekday confounding, pair construction and the adjusted
ordering on hand-built logs; the tiny preset end to end (slow)."""
import json

import numpy as np
import pandas as pd
import pytest
import scipy.special
import scipy.stats

from dlm.data.log import Confounder, ObservationalLog
from dlm.realdata import monday
from scripts import replicate_monday as rm


def _arms(base_logit, group, headlines=None, contexts=None) -> ObservationalLog:
    """A binomial arms log whose empirical logit is (almost exactly) base_logit."""
    n = len(base_logit)
    trials = np.full(n, 1e7)
    headlines = headlines if headlines is not None else [f"Headline number {i}" for i in range(n)]
    return ObservationalLog(
        content=np.array(headlines, dtype=object),
        context=np.array(contexts or [f"lede {g}" for g in group], dtype=object),
        group=np.asarray(group), successes=np.round(scipy.special.expit(base_logit) * trials),
        trials=trials, confounders={"week": Confounder("time", np.zeros(n, np.int64), ("201301",))},
        source="hand-built")


def test_post_shifts_the_logit_by_the_weekday_and_prefixes_the_day_marker():
    base = np.linspace(-4.0, -3.0, 700)
    posted = monday.post(_arms(base, np.arange(700) // 2), monday.MondayConfig(0.5, -0.3, 1.0),
                         seed=1)
    wd, mk = posted.weekday, posted.marker
    shift = np.where(wd == 0, 0.5, np.where(wd == 4, -0.3, 0.0))
    np.testing.assert_allclose(posted.log.outcome, posted.base_logit + shift)
    np.testing.assert_allclose(posted.base_logit, base, atol=1e-3)
    # p_marker = 1: every Monday (Friday) headline carries its prefix, no other day does
    np.testing.assert_array_equal(mk, np.where(wd == 0, 1, np.where(wd == 4, 2, 0)))
    content = list(posted.log.content)
    assert all(c.startswith("Happy Monday! ") for c in np.array(content)[mk == 1])
    assert all(c.startswith("Happy Friday! ") for c in np.array(content)[mk == 2])
    assert all(c == f"Headline number {i}" for i, c in enumerate(content) if mk[i] == 0)
    assert set(np.bincount(wd, minlength=7) > 50) == {True}        # every day drawn
    none = monday.post(_arms(base, np.arange(700) // 2), monday.MondayConfig(p_marker=0.0), 1)
    assert (none.marker == 0).all()


def test_candidate_pairs_stay_within_tests_and_are_capped_per_story():
    # story 0: tests 0 (5 arms: 10 pairs) and 1 (3 arms: 3 pairs) -> 13, capped at 10;
    # story 1: test 2 with 2 arms (1 pair); test 3 with one arm (no pair)
    group = np.array([0] * 5 + [1] * 3 + [2] * 2 + [3])
    story = np.array([0] * 8 + [1] * 2 + [1])
    a, b = monday.candidate_pairs(group, story, max_per_story=10, seed=0)
    assert len(a) == 11 and (group[a] == group[b]).all() and (a != b).all()
    assert np.bincount(story[a]).tolist() == [10, 1]
    assert len({frozenset(p) for p in zip(a, b)}) == 11              # no pair twice
    a3, _ = monday.candidate_pairs(group, story, max_per_story=3, seed=0)
    assert np.bincount(story[a3]).tolist() == [3, 1]


def test_orient_prefers_the_higher_score_and_drops_ties():
    score = np.array([0.1, 0.5, 0.5, -1.0])
    win, lose = monday.orient([0, 1, 3], [1, 2, 0], score)
    assert win.tolist() == [1, 0] and lose.tolist() == [0, 3]        # (1, 2) tie dropped
    stats = monday.pair_stats(win, lose, np.array([1, 0, 0, 2]))
    # pairs (1 over 0): unmarked beats Monday; (0 over 3): Monday beats Friday (not mixed)
    assert stats == {"n_pairs": 2, "win_monday": 0.5, "lose_monday": 0.5,
                     "win_friday": 0.0, "lose_friday": 0.5, "marked_wins_mixed": 0.0}


def test_adjusted_ordering_removes_the_weekday_shift():
    """Two arms per test, the better one 0.2 logits ahead. Observed outcomes (+-0.5 on
    Monday/Friday) misorder many pairs; the cross-fitted, jointly estimated weekday effect
    restores the real order."""
    rng = np.random.default_rng(0)
    n_tests = 400
    group = np.repeat(np.arange(n_tests), 2)
    base = np.repeat(rng.normal(-4.0, 0.2, n_tests), 2) + np.tile([0.2, 0.0], n_tests)
    words = np.array(["cats", "dogs", "why", "you", "this", "amazing", "10", "city"])
    heads = [" ".join(rng.choice(words, 4)) for _ in range(2 * n_tests)]
    posted = monday.post(_arms(base, group, heads), monday.MondayConfig(), seed=3)
    a, b = monday.candidate_pairs(group, group, 10, seed=0)
    real = set(zip(*monday.orient(a, b, posted.base_logit)))
    agree = lambda pairs: np.mean([p in real for p in zip(*pairs)])  # noqa: E731
    adjusted = monday.adjust(posted.log, "ngram:64")
    assert agree(monday.orient(a, b, posted.log.outcome)) < 0.9
    assert agree(monday.orient(a, b, adjusted.logit_adjusted)) > 0.97
    table = monday.weekday_effect_table(adjusted, monday.MondayConfig())
    np.testing.assert_allclose(table["mean"], table["truth"], atol=0.1)
    assert table.loc[0, "truth"] == pytest.approx(0.5) and table.loc[4, "truth"] == pytest.approx(-0.5)


def test_encoded_rows_score_the_response_and_index_into_pairs():
    import jax
    from dlm.data.batching import encode_sft
    from dlm.data.tokenizer import ByteTokenizer
    from dlm.models.decoder import PRESETS, init_params
    from dlm.policy.dpo import batched_sequence_logprobs
    from dlm.policy.sft import SFTPolicy

    cfg = PRESETS["tiny"]
    policy = SFTPolicy(init_params(cfg, jax.random.key(0)), cfg, ByteTokenizer(), None)
    prompts, texts = ["a lede", "a lede", "another lede"], ["Happy Monday! Hi", "No", "Yes"]
    rows = monday.encode_rows(policy, prompts, texts, 32, 16, batch_size=4)
    tokens, mask = encode_sft(policy.tokenizer, prompts, texts, 32, 16)
    np.testing.assert_array_equal(rows["tokens"], tokens)
    assert rows["loss_mask"][1:].sum(1).tolist() == [3.0, 4.0]        # bytes + EOS
    # right padding: attending to the padding or not leaves the response's log-prob alone
    ref = batched_sequence_logprobs(policy.params, cfg, tokens, mask, np.ones_like(tokens, bool),
                                    batch_size=4)
    np.testing.assert_allclose(rows["ref"], ref, rtol=1e-5)
    data = monday.pair_data(rows, [0, 2], [1, 0])
    np.testing.assert_array_equal(data["chosen_tokens"], tokens[[0, 2]])
    np.testing.assert_array_equal(data["ref_rejected"], rows["ref"][[1, 0]])
    assert set(data) == {f"{s}_{k}" for s in ("chosen", "rejected")
                         for k in ("tokens", "loss_mask", "attn_mask")} | {"ref_chosen", "ref_rejected"}


def test_welch_table_matches_scipy():
    frame = pd.DataFrame({"model": ["SFT"] * 3 + ["DPO"] * 3 + ["DeconfoundLM-DPO"] * 3,
                          "happy": [20, 22, 25, 30, 35, 33, 21, 24, 22.0],
                          "monday": [10, 11, 9, 15, 18, 16, 10, 9, 11.0],
                          "friday": [9, 8, 10, 3, 2, 4, 9, 10, 8.0]})
    table = rm.welch_table(frame)
    row = table[(table["comparison"] == "DPO vs SFT") & (table["marker"] == "friday")].iloc[0]
    ref = scipy.stats.ttest_ind([3, 2, 4.0], [9, 8, 10.0], equal_var=False)
    assert row["t"] == pytest.approx(ref.statistic, abs=0.01)
    assert row["p"] == pytest.approx(ref.pvalue, rel=1e-2)
    assert row["difference (points)"] == pytest.approx(3.0 - 9.0)
    assert len(table) == 6


def test_model_flag_sets_the_policy_model(tmp_path):
    cfg, _ = rm.parse_args(["--preset", "tiny", "--model", "smollm2-135m", "--out", str(tmp_path)])
    assert cfg.model == "smollm2-135m" and rm.sft_config(cfg, 0).model == "smollm2-135m"
    assert rm.sft_config(rm.PRESETS["tiny"], 3).model == "tiny"


@pytest.mark.slow
def test_tiny_preset_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("DLM_CACHE", str(tmp_path / "cache"))
    cfg = rm.PRESETS["tiny"]
    out = tmp_path / "run"
    rm.run(cfg, out, quiet=True)
    frame = pd.read_csv(out / "results.csv")
    assert list(frame.columns[:6]) == ["model", "ft_seed", "gen_seed", "happy", "monday", "friday"]
    assert sorted(set(frame["model"])) == sorted(rm.MODELS)
    assert len(frame) == 3 * len(cfg.ft_seeds) * len(cfg.gen_seeds)
    assert frame[list(rm.MARKERS)].stack().between(0, 100).all()
    assert (frame["n_generations"] >= cfg.n_generations).all()
    summary = (out / "summary.md").read_text()
    for text in ("Welch", "DeconfoundLM-DPO vs SFT", "weekday effects", "paper: DPO"):
        assert text in summary
    assert (out / "markers.png").stat().st_size > 0 and (out / "samples.md").exists()
    assert json.loads((out / "config.json").read_text())["replicate_monday"]["sft_preset"] == "tiny"
    models = {json.loads(line)["model"] for line in (out / "metrics.jsonl").read_text().splitlines()}
    assert models == {"DPO", "DeconfoundLM-DPO"}
