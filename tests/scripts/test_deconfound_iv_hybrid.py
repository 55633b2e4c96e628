"""scripts.deconfound with an endogenous confounder (--instrument) and with experimental
data (--experimental-data, --randomised-groups): known truth, and bad input."""
import numpy as np
import pandas as pd
import pytest

from scripts import deconfound
from tests.scripts.test_deconfound_script import ARGS, _bad, synthetic_frame

POP_EFFECT = 0.4


def popularity_frame(n: int = 1500, seed: int = 0, strength: float = 1.0) -> pd.DataFrame:
    """synthetic_frame's postings with popularity P = 0.8 question + strength * promo +
    shock-driven noise, where the same shock raises clicks: P is endogenous, promo (a
    randomised 0/1 slot) its instrument; clicks' logit gains POP_EFFECT * P + shock."""
    rng = np.random.default_rng(seed + 100)
    f = synthetic_frame(n, seed)
    question = f.headline.str.endswith("?").to_numpy()
    promo = (rng.random(n) < 0.5).astype(float)
    shock = rng.normal(0, 0.3, n)
    pop = 0.8 * question + strength * promo + 2.0 * shock + rng.normal(0, 0.4, n)
    days = pd.to_datetime(f.date).dt.strftime("%a")
    eta = (-3.0 + days.map({"Mon": 0.4, "Fri": -0.4}).fillna(0.0).to_numpy() + 0.5 * question
           + POP_EFFECT * pop + shock)
    clicks = rng.binomial(f.impressions.to_numpy(), 1 / (1 + np.exp(-eta)))
    return f.assign(clicks=clicks, popularity=pop, promo=promo)


IV_ARGS = [*ARGS, "--confounder", "popularity:endogenous", "--instrument", "promo",
           "--iv-bootstrap", "20"]


def test_endogenous_confounder_by_control_function(tmp_path, capsys):
    frame = popularity_frame()
    frame.to_csv(tmp_path / "log.csv", index=False)
    rc = deconfound.main(["--data", str(tmp_path / "log.csv"), *IV_ARGS, "--out",
                          str(tmp_path / "out")])
    assert rc == 0
    eff = pd.read_csv(tmp_path / "out" / "effects.csv").set_index(["parameter", "level"])
    cf = eff.loc[("popularity", "slope (control_function)")]
    exo = eff.loc[("popularity", "slope (exogenous)")]
    assert cf.lo <= POP_EFFECT <= cf.hi                      # IV covers the truth
    assert not exo.lo <= POP_EFFECT <= exo.hi                # the exogenous slope does not
    assert exo["mean"] > cf["mean"]                          # the shared shock inflates it
    assert cf.first_stage_F > 10
    adj = pd.read_csv(tmp_path / "out" / "adjusted.csv")
    # P's structural effect is removed, the text's kept: regressed on [1, question, P], the
    # adjusted outcome no longer rises with P (the raw logit does, confounded: > 0.4)
    X = np.column_stack([np.ones(len(adj)), adj.headline.str.endswith("?"), adj.popularity])
    (_, q_adj, p_adj), (_, _, p_raw) = (np.linalg.lstsq(X, adj[c], rcond=None)[0]
                                        for c in ("logit_adjusted", "logit_outcome"))
    assert p_raw > POP_EFFECT and abs(p_adj) < 0.05
    assert q_adj == pytest.approx(0.5, abs=0.1)
    text = (tmp_path / "out" / "report.md").read_text()
    assert "## Endogenous confounder 'popularity' (instrument 'promo')" in text
    assert "weak instrument" not in capsys.readouterr().out


def test_weak_instrument_warns(tmp_path, capsys):
    frame = popularity_frame(600, seed=3, strength=0.02)
    frame.to_csv(tmp_path / "log.csv", index=False)
    rc = deconfound.main(["--data", str(tmp_path / "log.csv"), *IV_ARGS, "--iv-bootstrap", "0",
                          "--out", str(tmp_path / "out")])
    assert rc == 0
    assert "warning: weak instrument 'promo': first-stage F" in capsys.readouterr().out
    assert "**Warning:** weak instrument" in (tmp_path / "out" / "report.md").read_text()


def test_bad_instrument_input(tmp_path, capsys):
    frame = popularity_frame(200, seed=1)
    err = _bad(frame.assign(promo=1.0), tmp_path, capsys, args=IV_ARGS)
    assert "column 'promo'" in err and "instrument is constant" in err
    err = _bad(frame.drop(columns="promo"), tmp_path, capsys, args=IV_ARGS)
    assert "column 'promo'" in err and "unknown column" in err
    err = _bad(frame, tmp_path, capsys, args=IV_ARGS[:-4])            # no --instrument
    assert "an endogenous confounder needs an instrument" in err


def experimental_frame(n_tests: int = 60, question_effect: float = 0.5, seed: int = 5):
    """Randomised tests of two arms, a question and a statement of one story, no confounder:
    clicks ~ Binomial(20000, sigmoid(-3 + question_effect * question))."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(n_tests):
        w = ["cats", "taxes", "a storm", "the vote", "my garden", "this song"][t % 6]
        for q in (0, 1):
            n = 20000
            clicks = rng.binomial(n, 1 / (1 + np.exp(3.0 - question_effect * q)))
            rows.append({"headline": f"Why {w} matter{'?' if q else '.'}", "story": f"x{t}",
                         "clicks": clicks, "impressions": n})
    return pd.DataFrame(rows)


def _hybrid(tmp_path, exp: pd.DataFrame) -> tuple[pd.Series, pd.DataFrame]:
    synthetic_frame().to_csv(tmp_path / "log.csv", index=False)
    exp.to_csv(tmp_path / "exp.csv", index=False)
    out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
    rc = deconfound.main(["--data", str(tmp_path / "log.csv"), *ARGS, "--experimental-data",
                          str(tmp_path / "exp.csv"), "--out", str(out)])
    assert rc == 0
    assert "## Hybrid reward" in (out / "report.md").read_text()
    return pd.read_csv(out / "hybrid.csv").iloc[0], pd.read_csv(out / "hybrid_scores.csv")


def _question_gap(scores: pd.DataFrame, column: str) -> float:
    """Mean score of the log's question headlines minus its statements'."""
    q = scores.content.str.endswith("?")
    return float(scores.loc[q, column].mean() - scores.loc[~q, column].mean())


def test_hybrid_reward_against_an_experimental_file(tmp_path):
    h, scores = _hybrid(tmp_path, experimental_frame())
    # arms that agree with the log (question +0.5): no bias beyond noise (both rewards are
    # then nearly exact and w* is immaterial: 120 arms of 20,000 impressions), all three
    # rank questions first
    assert h.bias2 < 0.01 and h.var_U < 0.01 and h.var_B == 0.0     # one fit: no folds
    assert list(scores.columns) == ["content", "hybrid", "observational", "experimental"]
    assert min(_question_gap(scores, c) for c in ("observational", "hybrid", "experimental")) > 0.3
    # experiments where the question hurts (-0.5): the log's reward is off by ~1 per
    # question-vs-statement contrast (Bias^2 ~ 0.25 on two-arm contrasts), w* goes to the
    # experiment and the hybrid ranks questions below statements, as the experiment does
    h, scores = _hybrid(tmp_path, experimental_frame(question_effect=-0.5))
    assert h.bias2 == pytest.approx(0.25, abs=0.06) and h.w_experimental > 0.9
    assert _question_gap(scores, "observational") > 0.3 > -0.3 > _question_gap(scores, "hybrid")


def test_hybrid_reward_on_randomised_groups_of_the_log(tmp_path):
    log = synthetic_frame().assign(randomised=0)
    exp = experimental_frame(40).assign(date="2024-01-10", extra=0.0, randomised=1)
    both = pd.concat([log, exp], ignore_index=True)
    both.to_csv(tmp_path / "log.csv", index=False)
    rc = deconfound.main(["--data", str(tmp_path / "log.csv"), *ARGS, "--randomised-groups",
                          "randomised", "--out", str(tmp_path / "out")])
    assert rc == 0
    h = pd.read_csv(tmp_path / "out" / "hybrid.csv").iloc[0]
    assert h.n_arms == 80 and h.n_groups == 40
    # the observational part is refitted without each fold's tests: its fits differ; the
    # arms agree with the log, so both parts are nearly exact (w* immaterial)
    assert h.var_B > 0 and h.bias2 < 0.01 and h.var_U < 0.01
    scores = pd.read_csv(tmp_path / "out" / "hybrid_scores.csv")
    assert _question_gap(scores, "hybrid") > 0.3


def test_bad_experimental_input(tmp_path, capsys):
    frame = synthetic_frame(200, seed=1)
    exp = experimental_frame(10).drop(columns="story")
    exp.to_csv(tmp_path / "exp.csv", index=False)
    err = _bad(frame, tmp_path, capsys, "--experimental-data", str(tmp_path / "exp.csv"))
    assert "exp.csv, column 'story'" in err and "no group column" in err
    err = _bad(frame.assign(randomised=2), tmp_path, capsys, "--randomised-groups", "randomised")
    assert "row 1, column 'randomised'" in err and "must be 0 or 1" in err


def test_hybrid_reward_api_argument_errors():
    from dlm import api

    frame = synthetic_frame(300, seed=2)
    log = api.from_frame(frame, content="headline", group="story", successes="clicks",
                         trials="impressions", confounders={"date": "time"}, time_unit="week")
    result = api.fit(log, text="none", folds=2)
    exp = api.from_frame(experimental_frame(5), content="headline", group="story",
                         successes="clicks", trials="impressions")
    with pytest.raises(ValueError, match="a mask of randomised groups \\(one\\)"):
        api.hybrid_reward(result)
    with pytest.raises(ValueError, match="needs a text representation"):
        api.hybrid_reward(result, exp)
    with pytest.raises(ValueError, match="not a hybrid method"):
        api.hybrid_reward(result, exp, method="naive")
    with pytest.raises(ValueError, match="has 4 groups with 2\\+ arms; cross-fitting needs "
                       "at least 5"):
        api.hybrid_reward(result, exp.take(np.arange(8)), representation="ngram:64")
    with pytest.raises(ValueError, match="give both endogenous and instrument"):
        api.fit(log, text="none", endogenous="date")
