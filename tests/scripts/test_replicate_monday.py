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
from scripts import replicate_monday as script
from sims.experiments import replicate_monday as rm


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
    from dlm.policy.sft_cache import SFTPolicy

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


def _seed_frame():
    """Two generation seeds per fine-tuning seed; 3 fine-tuning seeds per model."""
    vals = {"SFT": [20, 22, 25], "DPO": [30, 35, 33], "DeconfoundLM-DPO": [21, 24, 22],
            "Control-DPO": [20, 23, 21.0]}
    rows = []
    for model, per_seed in vals.items():
        for ft, v in enumerate(per_seed):
            for gen, d in enumerate((-1.0, 1.0)):      # gen seeds average to v
                rows.append({"model": model, "ft_seed": ft, "gen_seed": gen, "happy": v + d,
                             "monday": v / 2 + 2 * d, "friday": 40 - v + d, "kl_to_ref": 0.0})
    return pd.DataFrame(rows)


def test_welch_table_uses_fine_tuning_seeds_as_units():
    table = rm.welch_table(_seed_frame())
    assert len(table) == 3 * len(rm.COMPARISONS)
    assert {"DeconfoundLM-DPO vs DPO", "DeconfoundLM-DPO vs Control-DPO"} <= set(table["comparison"])
    row = table[(table["comparison"] == "DPO vs SFT") & (table["marker"] == "happy")].iloc[0]
    ref = scipy.stats.ttest_ind([30, 35, 33.0], [20, 22, 25.0], equal_var=False)  # seed means
    assert row["t"] == pytest.approx(ref.statistic, abs=0.01)
    assert row["p"] == pytest.approx(ref.pvalue, rel=1e-2)
    assert row["difference (points)"] == pytest.approx(32.6667 - 22.3333, abs=0.01)
    row = table[(table["comparison"] == "DeconfoundLM-DPO vs Control-DPO")
                & (table["marker"] == "friday")].iloc[0]
    ref = scipy.stats.ttest_ind([40 - 21, 40 - 24, 40 - 22.0], [40 - 20, 40 - 23, 40 - 21.0],
                                equal_var=False)
    assert row["t"] == pytest.approx(ref.statistic, abs=0.01)


def test_prediction_table_checks_direction_and_the_control_interval():
    table = rm.prediction_table(_seed_frame()).set_index("marker")
    # monday: DPO 16.33 vs SFT 11.17 (up, as predicted); control seed means 10, 11.5, 10.5
    assert table.loc["monday", "DPO - SFT (points)"] == pytest.approx(16.333 - 11.167, abs=0.01)
    assert table.loc["monday", "DPO as predicted"]
    lo, hi = rm.t_interval(np.array([10.0, 11.5, 10.5]))
    half = scipy.stats.t.ppf(0.975, 2) * np.std([10.0, 11.5, 10.5], ddof=1) / np.sqrt(3)
    assert (lo, hi) == pytest.approx((32 / 3 - half, 32 / 3 + half))
    assert table.loc["monday", "control 95% interval"] == f"[{lo:.1f}, {hi:.1f}]"
    assert table.loc["monday", "inside"] == bool(lo <= 67 / 6 <= hi)       # DeconfoundLM 11.17
    # friday: DPO 7.33 below SFT 17.67 (lowered, as predicted)
    assert table.loc["friday", "DPO as predicted"]


def test_pair_margins_add_binomial_and_weekday_variance_by_hand():
    cov = np.zeros((2, 7, 7))
    cov[0, 0, 0], cov[0, 4, 4], cov[0, 0, 4] = 0.04, 0.09, 0.01
    cov[0, 4, 0] = 0.01
    adj = monday.WeekdayAdjusted(g_hat=np.zeros(4), logit_adjusted=np.array([1.0, 0.2, 0.5, 0.4]),
                                 fold=np.array([0, 0, 0, 1]), cov_KxDxD=cov, fit=None)
    weekday = np.array([0, 4, 4, 0])                  # Mon, Fri, Fri, Mon
    var = np.array([0.1, 0.2, 0.3, 0.4])
    margin, se = monday.pair_margins([0, 1], [1, 2], adj, var, weekday)
    np.testing.assert_allclose(margin, [0.8, -0.3])
    # Mon-Fri: 0.1 + 0.2 + (0.04 + 0.09 - 2 * 0.01); Fri-Fri: 0.2 + 0.3 (no weekday term)
    np.testing.assert_allclose(se, np.sqrt([0.41, 0.5]))
    with pytest.raises(ValueError, match="two folds"):
        monday.pair_margins([0], [3], adj, var, weekday)


def _confounded_across_tests(n_tests=300, seed=0):
    """Arms randomised within tests, but the tests posted on Mondays are the good ones:
    each test's arms share its base CTR and most of its arms fall on its 'usual' day,
    so across tests the weekday carries the test's quality; within a test it does not."""
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(n_tests), 3)
    quality = rng.normal(0.0, 0.5, n_tests)
    usual = np.where(quality > 0.3, 0, rng.integers(1, 7, n_tests))     # good tests: Monday
    weekday = np.where(rng.random(3 * n_tests) < 0.6, usual[group], rng.integers(0, 7, 3 * n_tests))
    real = -4.0 + quality[group] + rng.normal(0.0, 0.3, 3 * n_tests)
    truth = monday.MondayConfig(0.5, -0.5, 0.0)
    n = np.full(3 * n_tests, 20000.0)
    clicks = rng.binomial(n.astype(int), scipy.special.expit(real)).astype(float)
    base = np.log((clicks + 0.5) / (n - clicks + 0.5))
    log = ObservationalLog(
        content=np.array([f"headline {i}" for i in range(3 * n_tests)], dtype=object),
        group=group, outcome=base + truth.weekday_effects()[weekday],
        confounders={"weekday": Confounder("categorical", weekday.astype(np.int64),
                                           ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"))},
        source="hand-built")
    var = 1.0 / (clicks + 0.5) + 1.0 / (n - clicks + 0.5)
    return log, base, weekday, var, truth, real


@pytest.mark.slow
def test_within_test_estimate_and_pair_filter_recover_the_real_order():
    log, base, weekday, var, truth, latent = _confounded_across_tests()
    within = monday.adjust(log)                 # test fixed effects, dispersion covariance
    across = monday.adjust(log, test_effects=False)               # the old design, no text
    cfg_truth = truth.weekday_effects() - truth.weekday_effects().mean()
    est = lambda a: a.effects().query("parameter == 'weekday'")["mean"].to_numpy()  # noqa: E731
    sd = within.effects().query("parameter == 'weekday'")["sd"].to_numpy()
    assert (np.abs(est(within) - cfg_truth) < 3 * sd).all() and (sd < 0.06).all()
    np.testing.assert_allclose(est(within), cfg_truth, atol=0.1)
    assert est(across)[0] - cfg_truth[0] > 0.3                   # Monday soaks up test quality
    a, b = monday.candidate_pairs(log.group, log.group, 10, seed=0)
    margin, se = monday.pair_margins(a, b, within, var, weekday)
    # the se is calibrated: the adjusted margin's error against the latent (noise-free)
    # margin, binomial noise and weekday error together, over se ~ N(0, 1)
    err = (margin - (latent[a] - latent[b])) / se
    assert 0.85 < np.std(err) < 1.15
    agree = {}
    for z in (0.0, 1.0, 2.0):
        keep = np.abs(margin) > z * se
        for name, ref in (("latent", latent), ("real CTR", base), ("observed", None)):
            score = np.sign(margin) if ref is not None else np.sign(log.outcome[a] - log.outcome[b])
            truth_sign = np.sign((latent if ref is None else ref)[a] - (latent if ref is None
                                                                         else ref)[b])
            agree[name, z] = np.mean((score == truth_sign)[keep])
        agree["kept", z] = keep.mean()
    # unfiltered, binomial noise misorders 6% of pairs and the weekday estimate's error
    # flips near-zero margins against the real CTR's order (the tilt of issue 13)
    assert agree["latent", 0.0] < 0.96 and agree["real CTR", 0.0] < 0.99
    # filtered, the kept pairs' order is the latent one, and exactly the real CTR's
    assert agree["latent", 1.0] > 0.975 and agree["latent", 2.0] > 0.99
    assert agree["real CTR", 1.0] > 0.995 and agree["real CTR", 2.0] > 0.995
    assert 0.5 < agree["kept", 2.0] < agree["kept", 1.0] < 0.95
    # the confounded order stays wrong on the kept pairs (what DPO trains on)
    assert all(agree["observed", z] < 0.93 for z in (0.0, 1.0, 2.0))


def test_nonrandomised_window_left_out_by_default(tmp_path, capsys):
    frame = pd.DataFrame({
        "clickability_test_id": ["a", "a", "b", "b", "c", "c"],
        "headline": ["A one", "A two", "B one", "B two", "C one", "C two"],
        "lede": ["lede a", "lede a", "lede b", "lede b", "lede c", "lede c"],
        "impressions": [100] * 6, "clicks": [3, 4, 5, 6, 7, 8],
        "test_week": [201324, 201324, 201330, 201330, 201402, 201402]})
    path = tmp_path / "up.csv"
    frame.to_csv(path, index=False)
    cfg, _ = script.parse_args(["--out", str(tmp_path)])
    arms, _, note = rm.load_arms(cfg, path)
    assert sorted(arms.content) == ["A one", "A two", "C one", "C two"]
    assert note.startswith("left out 2 rows / 1 tests") and note in capsys.readouterr().out
    cfg, _ = script.parse_args(["--out", str(tmp_path), "--include-nonrandomised"])
    assert cfg.include_nonrandomised
    arms, _, note = rm.load_arms(cfg, path, quiet=True)
    assert len(arms) == 6 and "included" in note


def test_model_flag_sets_the_policy_model(tmp_path):
    cfg, _ = script.parse_args(["--preset", "tiny", "--model", "smollm2-135m", "--out", str(tmp_path)])
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
    assert len(frame) == len(rm.MODELS) * len(cfg.ft_seeds) * len(cfg.gen_seeds)
    assert frame[list(rm.MARKERS)].stack().between(0, 100).all()
    assert (frame["n_generations"] >= cfg.n_generations).all()
    summary = (out / "summary.md").read_text()
    for text in ("Welch", "DeconfoundLM-DPO vs SFT", "DeconfoundLM-DPO vs Control-DPO",
                 "weekday effects", "paper: DPO", "predictions", "kept"):
        assert text in summary
    assert (out / "markers.png").stat().st_size > 0 and (out / "samples.md").exists()
    assert json.loads((out / "config.json").read_text())["replicate_monday"]["sft_preset"] == "tiny"
    models = {json.loads(line)["model"] for line in (out / "metrics.jsonl").read_text().splitlines()}
    assert models == {"DPO", "DeconfoundLM-DPO", "Control-DPO"}
    config = json.loads((out / "config.json").read_text())
    assert 0 < config["info"]["pairs"]["kept"] <= config["info"]["pairs"]["candidates"]


@pytest.mark.slow
def test_combine_merges_one_seed_runs_into_one_summary(tmp_path):
    frame = _seed_frame().assign(prefix_monday=1.0, n_generations=16)
    parts = []
    for k in range(3):
        part = tmp_path / f"seed{k}"
        part.mkdir()
        frame[frame["ft_seed"] == k].to_csv(part / "results.csv", index=False)
        (part / "summary.md").write_text(f"Wall time {10 + k} s. Samples: samples.md.\n")
        (part / "metrics.jsonl").write_text(json.dumps({"model": "DPO", "ft_seed": k}) + "\n")
        parts.append(part)
    out = tmp_path / "all"
    rm.combine(rm.PRESETS["tiny"], out, parts, quiet=True)
    merged = pd.read_csv(out / "results.csv")
    assert len(merged) == len(frame) and sorted(set(merged["ft_seed"])) == [0, 1, 2]
    summary = (out / "summary.md").read_text()
    assert "wall times 10 s, 11 s, 12 s" in summary and "Wall time nan" not in summary
    # the merged Welch table is the one over all three seeds
    row = rm.welch_table(frame).query("comparison == 'DPO vs SFT' and marker == 'happy'").iloc[0]
    assert f"| DPO vs SFT | happy | {row['difference (points)']:.3f} | {row['t']:.3f} |" in summary
    assert [json.loads(x)["ft_seed"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2]
    assert json.loads((out / "config.json").read_text())["replicate_monday"]["ft_seeds"] == [0, 1, 2]
    with pytest.raises(ValueError, match="repeat"):
        rm.combine(rm.PRESETS["tiny"], tmp_path / "dup", parts[:1] * 2, quiet=True)
