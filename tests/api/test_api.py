"""dlm.api: loading with a column map, calendar parts, size check, fit/adjust, feature names."""
import numpy as np
import pandas as pd
import pytest

from dlm import api
from dlm.causal.crossfit import deconfound
from dlm.causal.fit import EstimatorConfig
from dlm.data.log import LogValidationError
from dlm.representations import fit_representation
import sims.featurise  # noqa: F401  (registers the "phi" text representation)


def _frame(n=240, seed=0):
    rng = np.random.default_rng(seed)
    dates = pd.Timestamp("2024-03-04") + pd.to_timedelta(rng.integers(0, 56, n), unit="D")
    words = np.array(["Cats", "A Storm", "The Vote", "7 Gardens", "Why You Care?"])
    return pd.DataFrame({
        "text": words[rng.integers(0, 5, n)], "test": [f"g{i // 2}" for i in range(n)],
        "s": rng.integers(5, 60, n), "n": rng.integers(300, 900, n),
        "when": dates.strftime("%Y-%m-%d"), "aud": rng.normal(size=n), "y": rng.normal(size=n)})


def test_from_frame_derives_calendar_parts_in_order():
    frame = _frame()
    log = api.from_frame(frame, content="text", group="test", successes="s", trials="n",
                         confounders={"when": "time"}, derive="weekday,month")
    wd = log.confounders["when_weekday"]
    assert wd.kind == "categorical" and wd.levels == ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    days = pd.to_datetime(frame["when"]).dt.dayofweek.to_numpy()
    np.testing.assert_array_equal(wd.values, days)          # Mon = 0, as the dates say
    assert log.confounders["when_month"].levels == ("Mar", "Apr")
    assert log.confounders["when"].n_levels == 56            # daily periods, gaps included
    named = api.from_frame(frame, content="text", outcome="y", confounders={"aud": "numeric"},
                           derive=["when:weekday"])
    np.testing.assert_array_equal(named.confounders["when_weekday"].values, days)


def test_derive_errors_name_the_problem():
    frame = _frame().assign(week=201446)
    with pytest.raises(ValueError, match="name the date column"):
        api.from_frame(frame, content="text", outcome="y", confounders={"aud": "numeric"},
                       derive="weekday")
    with pytest.raises(LogValidationError, match="column 'week'.*need dates"):
        api.from_frame(frame, content="text", outcome="y", confounders={"week": "time"},
                       derive="weekday")
    with pytest.raises(ValueError, match="parts must be some of"):
        api.parse_derive("when:hour", {"when": "time"})


def test_read_frame_keeps_na_words_as_text(tmp_path):
    frame = _frame(20)
    frame.loc[3, "text"] = "NA"
    frame.loc[4, "text"] = "null"
    path = tmp_path / "log.csv"
    frame.to_csv(path, index=False)
    back = api.read_frame(path, text_columns=("text", "test"))
    assert back.loc[3, "text"] == "NA" and back.loc[4, "text"] == "null"
    log = api.from_frame(back, content="text", outcome="y", confounders={"aud": "numeric"})
    assert log.content[3] == "NA"
    (tmp_path / "bad.csv").write_text("text,y,aud\nhello,NA,1\nbye,2,3\n")
    bad = api.read_frame(tmp_path / "bad.csv", text_columns=("text",))
    with pytest.raises(LogValidationError, match="row 1, column 'y': missing outcome"):
        api.from_frame(bad, content="text", outcome="y", confounders={"aud": "numeric"})


def test_size_check_counts_every_parameter():
    frame = _frame(40)
    log = api.from_frame(frame, content="text", successes="s", trials="n",
                         confounders={"when": "time", "aud": "numeric"})
    T = log.confounders["when"].n_levels
    assert api.n_parameters(log, 8) == 1 + 8 + T + 1
    p = 1 + 256 + T + 1
    with pytest.raises(LogValidationError, match=f"column 'when': 40 rows are fewer than the "
                                                 f"model's {p} parameters .*{T} for 'when'"):
        api.check_size(log, 256)
    small = api.from_frame(frame, content="text", successes="s", trials="n",
                           confounders={"aud": "numeric"})
    api.check_size(small, 37)                      # 1 + 37 + 1 = 39 parameters <= 40 rows
    with pytest.raises(LogValidationError, match="40 rows are fewer than the model's 41"):
        api.check_size(small, 39)


def test_fit_and_adjust_equal_the_direct_adjustment():
    frame = _frame()
    log = api.from_frame(frame, content="text", group="test", successes="s", trials="n",
                         confounders={"aud": "numeric"}, derive="when:weekday")
    result = api.fit(log, text="ngram:16", seed=3, folds=3)
    text = fit_representation("ngram:16", log.content).transform(log.content)
    ref = deconfound(log, text, EstimatorConfig(seed=3, folds=3))
    np.testing.assert_array_equal(result.adjusted.g_hat, ref.g_hat)
    table = api.adjust(frame, result)
    assert list(table.columns[:len(frame.columns)]) == list(frame.columns)
    assert set(api.ADDED_BINOMIAL) <= set(table.columns) and "when_weekday" in table
    s, n = frame.s.to_numpy(float), frame.n.to_numpy(float)
    np.testing.assert_allclose(table.logit_outcome, np.log((s + .5) / (n - s + .5)))
    np.testing.assert_allclose(table.logit_adjusted, table.logit_outcome - table.g_hat)
    np.testing.assert_allclose(table.rate_adjusted, 1 / (1 + np.exp(-table.logit_adjusted)))
    assert (table.groupby("test").fold.nunique() == 1).all()          # groups stay in one fold
    eff = result.effects()
    assert set(eff.parameter) == {"aud", "when_weekday"} and {"mean", "lo", "hi"} <= set(eff.columns)
    diag = api.diagnose(result)
    assert diag.convergence["newton_converged"] and len(diag.collinearity) == 16 * 2
    with pytest.raises(LogValidationError, match="column 'fold'"):
        api.adjust(frame.assign(fold=1), result)


def test_real_outcome_adjustment():
    frame = _frame()
    log = api.from_frame(frame, content="text", outcome="y", confounders={"aud": "numeric"})
    result = api.fit(log, text="none", folds=2)
    table = api.adjust(frame, result)
    np.testing.assert_allclose(table.outcome_adjusted, frame.y - table.g_hat)
    assert "logit_adjusted" not in table


def test_fit_names_the_text_columns():
    log = api.from_frame(_frame(), content="text", outcome="y", confounders={"aud": "numeric"})
    result = api.fit(log, text="phi", folds=2)
    assert result.feature_names[6] == "marker_monday"
    result = api.fit(log, text="ngram-svd:3", folds=2)      # no names of its own: "PREFIX[j]"
    assert result.feature_names == ("ngram-svd[0]", "ngram-svd[1]", "ngram-svd[2]")


def test_phrase_matrix_counts_rows_and_groups():
    texts = ["Happy Monday! Cats", "happy monday! dogs", "Dogs", "Dogs"]
    X, vocab = api.phrase_matrix(texts, min_units=2)
    assert vocab == ("!", "dogs", "happy", "happy monday", "monday", "monday !")
    np.testing.assert_array_equal(X.toarray()[:, vocab.index("dogs")], [0, 1, 1, 1])
    X, vocab = api.phrase_matrix(texts, 2, groups=np.array([0, 0, 1, 2]), min_groups=2)
    assert vocab == ("dogs",)                     # the marker phrases sit in one group only


def test_hashed_representation_still_flags_the_marker_phrase():
    """With n-gram buckets the marker shares columns with other words; the plain phrases
    still show it on Mondays only."""
    from tests.scripts.test_deconfound_script import synthetic_frame

    frame = synthetic_frame(900, seed=2).assign(story=[f"t{i}" for i in range(900)])
    log = api.from_frame(frame, content="headline", group="story", successes="clicks",
                         trials="impressions", confounders={"date": "time"}, derive="weekday",
                         time_unit="week")
    diag = api.diagnose(api.fit(log, text="ngram:16", folds=2))
    phr = diag.phrases.set_index("feature")
    assert phr.loc["happy monday", "level"] == "Mon" and phr.loc["happy monday", "share"] == 1.0
    assert diag.phrases.feature.iloc[0] in ("!", "happy", "happy monday", "monday", "monday !")
    assert any("phrase 'happy monday'" in w for w in diag.warnings)


def test_time_confounder_as_a_spline():
    frame = _frame(300)
    log = api.from_frame(frame, content="text", successes="s", trials="n",
                         confounders={"when": "time"}, time_unit="day")
    T = log.confounders["when"].n_levels
    rw = api.fit(log, text="none", folds=2)
    spline = api.fit(log, text="none", folds=2, time_basis="spline")
    assert api.n_parameters(log, 0, spline.cfg) < api.n_parameters(log, 0, rw.cfg) == 1 + T
    eff = spline.effects()
    assert len(eff) == T and np.isfinite(spline.adjusted.g_hat).all()
    # a cubic spline's per-period values change smoothly: second differences stay small
    wiggle = lambda e: np.abs(np.diff(e["mean"].to_numpy(), 2)).max()  # noqa: E731
    assert wiggle(eff) < wiggle(rw.effects())


@pytest.fixture(scope="module")
def marker_log():
    from tests.scripts.test_deconfound_script import synthetic_frame

    frame = synthetic_frame(1500, seed=4)
    return api.from_frame(frame, content="headline", group="story", successes="clicks",
                          trials="impressions", confounders={"date": "time"}, derive="weekday",
                          time_unit="week")


def test_deconfounded_reward_ignores_the_monday_marker(marker_log):
    """The marker has no effect of its own, but Monday posts get +0.4: a reward on raw
    outcomes pays for the marker, one on the adjusted outcomes does not."""
    from dlm.rewards import TrainerConfig

    result = api.fit(marker_log, text="phi", folds=3)
    tcfg = TrainerConfig(steps=300, batch_size=256)
    texts = ["Why cats matter?", "Why the vote matter.", "Why 7 reasons matter?"]
    marked = ["Happy Monday! " + t for t in texts]
    gap = {}
    for method in ("naive", "deconfoundlm"):
        (reward,) = api.train(result, method, representation="phi", cfg=tcfg)
        gap[method] = float(np.mean(reward(marked) - reward(texts)))
    assert gap["naive"] > 0.2                       # ~ the Monday effect leaks in
    assert abs(gap["deconfoundlm"]) < 0.1


def test_reward_round_trips_through_orbax(marker_log, tmp_path):
    import dataclasses
    import json

    from dlm.rewards import TrainerConfig
    from dlm.train.checkpoint import Checkpointer

    result = api.fit(marker_log, text="phi", folds=2)
    (reward,) = api.train(result, "deconfoundlm", representation="ngram-svd:8",
                          cfg=TrainerConfig(steps=20, batch_size=128))
    api.save_reward(reward, tmp_path / "r")
    rep = reward.backbone.represent
    like = {"params": reward.params, "representation": {
        "projection_FxD": rep.projection_FxD, "mean_D": rep.mean_D, "sd_D": rep.sd_D}}
    with Checkpointer(tmp_path / "r" / "checkpoints") as ck:
        params = ck.restore_params()
        saved = ck.restore(0, like)["representation"]
    texts = list(marker_log.content[:50])
    again = dataclasses.replace(reward, params=params)
    np.testing.assert_allclose(again(texts), reward(texts), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(saved["projection_FxD"], rep.projection_FxD)
    meta = json.loads((tmp_path / "r" / "reward.json").read_text())
    assert meta["method"] == "deconfoundlm" and meta["offset"] == pytest.approx(reward.offset)
    assert meta["representation"] == {"spec": "ngram-svd:8", "kind": "ngram-svd",
                                      "n_features": rep.n_features,
                                      "ngram_range": list(rep.ngram_range)}


def test_a_reward_saved_before_the_registry_still_loads(marker_log, tmp_path):
    """reward.json of the old format ({"kind": "ngrams", ...}, no spec) loads as ngram-svd."""
    import json

    from dlm.rewards import TrainerConfig

    result = api.fit(marker_log, text="phi", folds=2)
    (reward,) = api.train(result, "deconfoundlm", representation="ngram-svd:8",
                          cfg=TrainerConfig(steps=20, batch_size=128))
    api.save_reward(reward, tmp_path / "r")
    path = tmp_path / "r" / "reward.json"
    meta = json.loads(path.read_text())
    meta["representation"] = {"kind": "ngrams", "n_features": 4096, "ngram_range": [1, 2]}
    path.write_text(json.dumps(meta))
    loaded = api.load_reward(tmp_path / "r")
    assert loaded.backbone.represent.spec == "ngram-svd:8"
    texts = list(marker_log.content[:20]) + ["Happy Monday! Why you matter?"]
    np.testing.assert_allclose(loaded(texts), reward(texts), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="reward representation 'trunk'"):
        api.train(result, "deconfoundlm", representation="trunk")


def test_reward_method_errors_come_first():
    with pytest.raises(ValueError, match="unknown reward method 'magic'"):
        api.check_reward_method("magic")
    with pytest.raises(ValueError, match="needs interventional data"):
        api.check_reward_method("oracle")
    with pytest.raises(ValueError, match="needs randomised arms .*api.hybrid_reward"):
        api.check_reward_method("hybrid")
    with pytest.raises(ValueError, match="learns from randomised arms"):
        api.check_reward_method("experimental_ctr")


@pytest.mark.parametrize("method,representation,hidden", [
    ("deconfoundlm", "ngram-svd:8", 0), ("conditioned", "phi", 4), ("odin", "phi", 0),
    ("naive", "ngram:32", 0)])
def test_load_reward_scores_like_the_saved_one(marker_log, tmp_path, method, representation,
                                               hidden):
    """load_reward inverts save_reward: every head shape (hidden layer, confounder inputs,
    two heads) and both representations score held-out texts exactly as before saving."""
    from dlm.rewards import TrainedReward, TrainerConfig

    result = api.fit(marker_log, text="phi", folds=2)
    reward = api.train(result, method, representation=representation,
                       cfg=TrainerConfig(steps=20, batch_size=128, hidden=hidden),
                       strengths=(1.0,) if method == "odin" else None)[0]
    api.save_reward(reward, tmp_path / "r")
    loaded = api.load_reward(tmp_path / "r")
    assert isinstance(loaded, TrainedReward)
    assert (loaded.method, loaded.strength) == (reward.method, reward.strength)
    texts = list(marker_log.content[:40]) + ["Happy Monday! Why you matter?", "7 new taxes", ""]
    scores = reward(texts)
    assert np.ptp(scores) > 0                                  # a non-trivial reward
    np.testing.assert_allclose(loaded(texts), scores, rtol=0, atol=1e-6)


def test_load_reward_needs_a_saved_reward(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved reward here"):
        api.load_reward(tmp_path)
