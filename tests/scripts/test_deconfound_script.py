"""scripts.deconfound: end to end on a small known-truth table, every bad input, Upworthy."""
import json

import numpy as np
import pandas as pd
import pytest

from dlm import api
from dlm.experiments import deconfound_report
from scripts import deconfound

WEEKDAY_EFFECT = {"Mon": 0.4, "Tue": 0.0, "Wed": 0.0, "Thu": 0.0, "Fri": -0.4, "Sat": 0.0, "Sun": 0.0}
WORDS = ["cats", "taxes", "a storm", "the vote", "my garden", "this song", "7 reasons", "you"]


def synthetic_frame(n: int = 1500, seed: int = 0) -> pd.DataFrame:
    """Postings over 12 weeks: clicks ~ Binomial(impr, sigmoid(-3 + weekday + 0.5*question)),
    a "Happy Monday! " marker on 80% of Monday posts (no effect of its own)."""
    rng = np.random.default_rng(seed)
    dates = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 84, n), unit="D")
    day = dates.strftime("%a")
    question = rng.random(n) < 0.4
    text = [f"Why {rng.choice(WORDS)} matter{'?' if q else '.'}" for q in question]
    marker = (day == "Mon") & (rng.random(n) < 0.8)
    text = [("Happy Monday! " if m else "") + t for m, t in zip(marker, text)]
    impressions = rng.integers(500, 3000, n)
    eta = -3.0 + np.array([WEEKDAY_EFFECT[d] for d in day]) + 0.5 * question
    clicks = rng.binomial(impressions, 1 / (1 + np.exp(-eta)))
    return pd.DataFrame({"headline": text, "story": [f"t{i // 3}" for i in range(n)],
                         "clicks": clicks, "impressions": impressions,
                         "date": dates.strftime("%Y-%m-%d"), "extra": rng.normal(size=n)})


ARGS = ["--content", "headline", "--group", "story", "--successes", "clicks", "--trials",
        "impressions", "--confounder", "date:time", "--time-unit", "week", "--derive", "weekday",
        "--text-features", "phi", "--set", "folds=3"]


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("byol")
    frame = synthetic_frame()
    frame.to_csv(d / "log.csv.gz", index=False)
    rc = deconfound.main(["--data", str(d / "log.csv.gz"), *ARGS, "--out", str(d / "out")])
    return d, frame, rc


def test_outputs_and_truth(table_run):
    d, frame, rc = table_run
    assert rc == 0
    out = d / "out"
    for name in ("adjusted.csv", "effects.csv", "report.md", "config.json", "collinearity.csv",
                 "overlap.csv", "effect_date.png", "effect_date_weekday.png",
                 "adjusted_date_weekday.png", "distribution.png"):
        assert (out / name).is_file(), name
    adj = pd.read_csv(out / "adjusted.csv")
    assert len(adj) == len(frame)
    assert list(adj.columns[:len(frame.columns)]) == list(frame.columns)   # input rows kept
    np.testing.assert_array_equal(adj.clicks, frame.clicks)
    # adjusted = empirical logit (half-count corrected) - g_hat, row by row
    s, n = frame.clicks.to_numpy(float), frame.impressions.to_numpy(float)
    logit = np.log((s + .5) / (n - s + .5))
    np.testing.assert_allclose(adj.logit_adjusted, logit - adj.g_hat, atol=1e-9)
    assert (adj.g_lo <= adj.g_hat).all() and (adj.g_hat <= adj.g_hi).all()
    assert set(adj.date_weekday) == set(WEEKDAY_EFFECT)                       # derived column
    eff = pd.read_csv(out / "effects.csv")
    wd = eff[eff.parameter == "date_weekday"].set_index("level")
    assert list(wd.index) == list(WEEKDAY_EFFECT)                            # calendar order
    truth = np.array(list(WEEKDAY_EFFECT.values()))
    np.testing.assert_allclose(wd["mean"], truth - truth.mean(), atol=0.08)
    assert ((wd.lo <= wd["mean"]) & (wd["mean"] <= wd.hi)).all()
    assert set(eff.parameter) == {"date", "date_weekday"}
    assert len(eff[eff.parameter == "date"]) == 12     # 2024-01-01 is a Monday: 84 days, 12 weeks


def test_report_flags_the_marker(table_run):
    d, _, _ = table_run
    text = (d / "out" / "report.md").read_text()
    assert "'marker_monday' is (nearly) collinear with date_weekday=Mon: 100%" in text
    assert "![effect of date](effect_date.png)" in text and "### Convergence" in text
    cfg = json.loads((d / "out" / "config.json").read_text())
    assert cfg["estimator"]["folds"] == 3 and cfg["rows"] == 1500


def test_parquet_input_gives_the_same_adjustment(table_run, tmp_path):
    d, frame, _ = table_run
    frame.to_parquet(tmp_path / "log.parquet", index=False)
    assert deconfound.main(["--data", str(tmp_path / "log.parquet"), *ARGS, "--out",
                            str(tmp_path / "out")]) == 0
    a = pd.read_csv(d / "out" / "adjusted.csv")
    b = pd.read_csv(tmp_path / "out" / "adjusted.csv")
    np.testing.assert_allclose(a.g_hat, b.g_hat, atol=1e-12)


def _bad(frame: pd.DataFrame, tmp_path, capsys, *extra, args=ARGS) -> str:
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    rc = deconfound.main(["--data", str(path), *args, *extra, "--out", str(tmp_path / "out")])
    assert rc == 2
    assert not (tmp_path / "out").exists()               # nothing written
    return capsys.readouterr().err


@pytest.fixture
def small():
    return synthetic_frame(120, seed=1)


def test_unknown_column(small, tmp_path, capsys):
    err = _bad(small, tmp_path, capsys, "--confounder", "weather:categorical")
    assert "column 'weather'" in err and "unknown column" in err


def test_wrong_type_for_a_confounder(small, tmp_path, capsys):
    err = _bad(small, tmp_path, capsys, "--confounder", "headline:numeric")
    assert "row 1, column 'headline'" in err and "not a finite number" in err
    args = [a if a != "weekday" else "date:weekday" for a in ARGS]   # two time columns now
    err = _bad(small.assign(when=["soon"] * len(small)), tmp_path, capsys, "--confounder",
               "when:time", args=args)
    assert "row 1, column 'when'" in err and "cannot parse 'soon' as a time" in err


def test_missing_and_negative_counts(small, tmp_path, capsys):
    err = _bad(small.assign(clicks=small.clicks.where(small.index != 4)), tmp_path, capsys)
    assert "row 5, column 'clicks'" in err and "missing success count" in err
    err = _bad(small.assign(impressions=small.impressions.where(small.index != 6, -3)), tmp_path, capsys)
    assert "row 7, column 'impressions'" in err and "negative" in err


def test_successes_exceed_trials(small, tmp_path, capsys):
    bad = small.copy()
    bad.loc[9, "clicks"] = bad.loc[9, "impressions"] + 1
    err = _bad(bad, tmp_path, capsys)
    assert "row 10, column 'clicks'" in err and "exceeds impressions" in err


def test_constant_confounder(small, tmp_path, capsys):
    err = _bad(small.assign(site="web"), tmp_path, capsys, "--confounder", "site:categorical")
    assert "column 'site'" in err and "constant" in err


def test_fewer_rows_than_parameters(small, tmp_path, capsys):
    args = [a if a != "phi" else "ngram:256" for a in ARGS]
    err = _bad(small, tmp_path, capsys, args=args)
    assert "120 rows are fewer than the model's" in err and "256 text features" in err


def test_empty_text(small, tmp_path, capsys):
    bad = small.copy()
    bad.loc[11, "headline"] = "   "
    err = _bad(bad, tmp_path, capsys)
    assert "row 12, column 'headline'" in err and "empty" in err


def test_bad_confounder_spec_and_outcome_flags(small, tmp_path):
    small.to_csv(tmp_path / "x.csv", index=False)
    base = ["--data", str(tmp_path / "x.csv"), "--content", "headline", "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit, match="unknown type 'ordinal'"):
        deconfound.main(base + ["--outcome", "extra", "--confounder", "date:ordinal"])
    with pytest.raises(SystemExit):                     # counts and a real outcome together
        deconfound.main(base + ["--outcome", "extra", "--successes", "clicks", "--trials", "impressions"])
    with pytest.raises(SystemExit, match="unknown field 'speed'"):
        deconfound.main(base + ["--outcome", "extra", "--set", "speed=1"])
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_upworthy_matches_the_direct_adjustment(upworthy_path, tmp_path):
    """Acceptance: the script's adjusted outcomes equal deconfound(log, text_term(
    DEFAULT_TEXT_SPEC, log.content), EstimatorConfig(seed=0)) on the loaded Upworthy log."""
    from dlm.causal.crossfit import deconfound as direct
    from dlm.causal.fit import EstimatorConfig
    from dlm.representations import DEFAULT_TEXT_SPEC, text_term
    from dlm.data.upworthy import load_upworthy

    rc = deconfound.main([
        "--data", str(upworthy_path), "--content", "headline", "--context", "lede",
        "--group", "clickability_test_id", "--successes", "clicks", "--trials", "impressions",
        "--confounder", "test_week:time", "--set", "seed=0", "--out", str(tmp_path / "up")])
    assert rc == 0
    log = load_upworthy(upworthy_path)
    ref = direct(log, text_term(DEFAULT_TEXT_SPEC, log.content), EstimatorConfig(seed=0))
    adj = pd.read_csv(tmp_path / "up" / "adjusted.csv")
    np.testing.assert_allclose(adj.g_hat, ref.g_hat, rtol=0, atol=1e-12)
    np.testing.assert_allclose(adj.logit_adjusted, ref.logit_adjusted, rtol=0, atol=1e-12)
    report = (tmp_path / "up" / "report.md").read_text()
    assert "![effect of test_week](effect_test_week.png)" in report
    assert "observed rate (logit of summed successes / trials) per level: +0.9" in report
    # the sample-ratio-mismatch check flags exactly the likely non-randomised window
    srm = pd.read_csv(tmp_path / "up" / "srm.csv", dtype={"period": str})
    inside = srm.period.between("201325", "201401")
    assert inside.sum() == 29 and srm.flagged[inside].all() and not srm.flagged[~inside].any()


@pytest.mark.slow
def test_bench_tiny_recovers_weekday_effects(tmp_path):
    """The benchmark's pipeline (world -> Parquet -> scripts.deconfound -> truth) on 6,000 rows."""
    from scripts import bench_deconfound

    assert bench_deconfound.main(["--preset", "tiny", "--out", str(tmp_path)]) == 0
    res = pd.read_csv(tmp_path / "results.csv")
    assert len(res) == 8 and (res.abs_err < 0.1).all()      # 7 weekdays + audience slope
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert bench["rows"] == 6000 and (tmp_path / "deconfound" / "report.md").is_file()


@pytest.mark.slow
def test_bench_estimator_mode_tables_each_size(tmp_path):
    """mode=estimator: one fresh process per size over nested rows of one sample."""
    from scripts import bench_deconfound

    assert bench_deconfound.main(["--preset", "tiny", "--set", "mode=estimator",
                                  "--set", "sizes=3000,6000", "--set", "reference_rows=2000",
                                  "--set", "row_chunk=1024", "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "scaling.csv")
    assert list(table.rows) == [3000, 6000] and (table.map_rows == "sharded").all()
    assert table.weekday_max_abs_err.iloc[-1] < 0.1
    assert (table.peak_rss_gb >= table.inputs_rss_gb).all()
    assert table.reference_rows.iloc[0] == 2000 and np.isnan(table.reference_rows.iloc[1])
    assert json.loads((tmp_path / "sample" / "meta.json").read_text())["rows"] == 6000


def test_train_reward_flag(tmp_path, capsys):
    synthetic_frame(600, seed=3).to_csv(tmp_path / "log.csv", index=False)
    base = ["--data", str(tmp_path / "log.csv"), *ARGS]
    assert deconfound.main(base + ["--train-reward", "oracle", "--out", str(tmp_path / "bad")]) == 2
    assert "needs interventional data" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    out = tmp_path / "out"
    assert deconfound.main(base + ["--train-reward", "deconfoundlm", "--reward-representation",
                                   "bogus", "--out", str(tmp_path / "bad")]) == 2
    assert "reward representation 'bogus'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert deconfound.main(base + ["--train-reward", "deconfoundlm",
                                   "--reward-representation", "ngram-svd:8",
                                   "--set", "steps=30", "--out", str(out)]) == 0
    assert (out / "rewards" / "deconfoundlm" / "reward.json").is_file()
    assert (out / "rewards" / "deconfoundlm" / "checkpoints" / "0").is_dir()
    scores = pd.read_csv(out / "reward_scores.csv")
    assert scores.rows.sum() == 600 and scores.score_deconfoundlm.notna().all()
    curve = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert curve[-1]["step"] == 30 and "## Reward model" in (out / "report.md").read_text()
    assert json.loads((out / "config.json").read_text())["trainer"]["steps"] == 30


@pytest.mark.slow
def test_svi_report_shows_the_loss_curve(tmp_path):
    """method=svi: the fit records its -ELBO per step (Fit.info["svi_losses"]), and the
    report shows the curve's PNG next to the Newton MAP it started from."""
    synthetic_frame(600, seed=5).to_csv(tmp_path / "log.csv", index=False)
    out = tmp_path / "out"
    assert deconfound.main(["--data", str(tmp_path / "log.csv"), *ARGS, "--preset", "svi",
                            "--set", "svi_steps=40", "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "![SVI loss](svi_loss.png)" in text and "SVI (40 steps from the MAP)" in text
    assert "Newton's method (the MAP every method starts from) converged" in text
    assert (out / "svi_loss.png").stat().st_size > 1000


def test_fit_records_svi_losses():
    from dlm.causal.fit import EstimatorConfig, fit

    log = api.from_frame(synthetic_frame(300, seed=6), content="headline", successes="clicks",
                         trials="impressions", confounders={"extra": "numeric"})
    f = fit(log.successes, log.trials, None, log.confounders,
            EstimatorConfig(method="svi", svi_steps=20))
    losses = np.asarray(f.info["svi_losses"])
    assert losses.shape == (20,) and np.isfinite(losses).all()
    assert "svi_losses" not in fit(log.successes, log.trials, None, log.confounders).info


def test_convergence_notes_per_method():
    """map: Newton's iterations and gradient; svi: the loss curve; nuts: split R-hat."""
    from dlm.causal.diagnostics import DiagnosticsConfig
    from dlm.causal.fit import EstimatorConfig

    conv = {"newton_iterations": 7, "newton_converged": True, "grad_max": 3e-9, "losses": None}
    text = "\n".join(deconfound_report._convergence_notes(conv, EstimatorConfig(), DiagnosticsConfig()))
    assert "converged in 7 iterations; grad_max 3e-09" in text and "svi_loss.png" not in text
    svi = {**conv, "losses": np.linspace(2, 1, 50), "final_loss": 1.0, "loss_tail_change": 2e-4}
    text = "\n".join(deconfound_report._convergence_notes(svi, EstimatorConfig(method="svi"),
                                                   DiagnosticsConfig()))
    assert "SVI (50 steps from the MAP)" in text and "![SVI loss](svi_loss.png)" in text
    nuts = {**conv, "rhat_max": 1.12, "rhat_flagged": 2, "ess_min": 40.0}
    text = "\n".join(deconfound_report._convergence_notes(
        nuts, EstimatorConfig(method="nuts", nuts_samples=100), DiagnosticsConfig()))
    assert "largest split R-hat 1.120 (2 parameter(s) above 1.05)" in text


def test_report_flags_a_broken_period_and_a_weekday_fixed_by_the_day(tmp_path, capsys):
    """Daily A/B tests of 3 arms splitting impressions evenly (multinomial), except on one
    day where one arm gets half; weekday derived from the daily time confounder."""
    rng = np.random.default_rng(0)
    rows = []
    for day in range(14):
        for g in range(6):
            p = [0.5, 0.25, 0.25] if day == 5 else [1 / 3] * 3
            for arm, n in enumerate(rng.multinomial(30_000, p)):
                rows.append({"headline": f"{rng.choice(WORDS)} {arm}", "test": f"d{day}g{g}",
                             "impressions": n, "clicks": rng.binomial(n, 0.02),
                             "date": (pd.Timestamp("2024-03-04") + pd.Timedelta(days=day))
                             .strftime("%Y-%m-%d")})
    pd.DataFrame(rows).to_csv(tmp_path / "ab.csv", index=False)
    rc = deconfound.main(["--data", str(tmp_path / "ab.csv"), "--content", "headline",
                          "--group", "test", "--successes", "clicks", "--trials", "impressions",
                          "--confounder", "date:time", "--time-unit", "day", "--derive",
                          "weekday", "--text-features", "none", "--set", "folds=2",
                          "--out", str(tmp_path / "out")])
    assert rc == 0
    srm = pd.read_csv(tmp_path / "out" / "srm.csv")
    assert len(srm) == 14 and (srm.groups == 6).all()
    assert srm.period[srm.flagged].tolist() == ["2024-03-09"]        # day 5
    report = (tmp_path / "out" / "report.md").read_text()
    assert "sample ratio mismatch in 1 of 14 date periods (2024-03-09)" in report
    assert "'date_weekday' is determined by 'date'" in report
    assert "![sample ratio mismatch](srm.png)" in report
    assert (tmp_path / "out" / "srm.png").read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "warning: sample ratio mismatch" in out and "warning: confounder 'date_weekday'" in out
