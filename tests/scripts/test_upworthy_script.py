"""scripts.upworthy end to end on a tiny synthetic archive with known truth, its input
errors (before any training), --eval-data, and (slow) the real development file."""
import dataclasses
import itertools
import json

import numpy as np
import pandas as pd
import pytest

from dlm.experiments import upworthy as U
from dlm.experiments import upworthy_report as R
from dlm.realdata import pairs as P
from scripts import upworthy as S

HOOK = " and you will love it"          # the one causal text feature


def synthetic_upworthy(n_tests=150, n_weeks=10, effect=0.3, trend=-4.0, views=200_000,
                       seed=0, id_prefix="t") -> pd.DataFrame:
    """Upworthy-format rows: logit CTR = -2 + trend * week / (T - 1) + effect * hook.

    Clicks are the expected counts (no noise), so arms with the same hook status tie and
    every hook vs no-hook pair is significant. Confounding: late tests put the hook on 2 of
    3 arms, early tests on 1 of 3, so across tests the hook goes with low-CTR late weeks.
    """
    words = (["Cats", "Dogs", "Birds", "Fish", "Goats", "Bees"],
             ["learn", "find", "build", "paint", "cook", "sing"],
             ["songs", "boats", "maps", "cakes", "hats", "games"])
    combos = list(itertools.product(*words))
    pick = np.random.default_rng(seed).choice(len(combos), n_tests, replace=False)
    rows = []
    for i in range(n_tests):
        w = i * n_weeks // n_tests
        base = " ".join(combos[pick[i]])
        late = w >= n_weeks // 2
        arms = ([base, base + HOOK, base + " now" + HOOK] if late
                else [base, base + " now", base + HOOK])
        for h in arms:
            p = 1 / (1 + np.exp(-(-2.0 + trend * w / (n_weeks - 1) + effect * (HOOK in h))))
            rows.append({"clickability_test_id": f"{id_prefix}{i:03d}", "headline": h,
                         "lede": f"<p>Lede of story {id_prefix}{i}.</p>", "excerpt": "",
                         "impressions": views, "clicks": int(round(views * p)),
                         "test_week": 201310 + w, "eyecatcher_id": "e", "significance": 0.0,
                         "winner": False, "first_place": False, "winner_count_anomaly": False})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def synthetic_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("upworthy") / "synthetic.csv"
    synthetic_upworthy().to_csv(path, index=False)
    return path


def run_main(csv, out, reps):
    assert S.main(["--data", str(csv), "--out", str(out), "--preset", "tiny",
                   "--representations", reps]) == 0
    return out


@pytest.fixture(scope="module")
def tiny_run(synthetic_csv, tmp_path_factory):
    return run_main(synthetic_csv, tmp_path_factory.mktemp("run") / "out", "ngram")


METHODS = {"experimental", "experimental_ctr", "naive", "conditioned", "partial_out",
           "deconfoundlm"}


def test_outputs_and_known_truth_ranking(tiny_run):
    res = pd.read_csv(tiny_run / "results.csv")
    assert list(res.columns) == ["method", "representation", "auc", "auc_lo", "auc_hi", "n_pairs"]
    assert len(res) == 6 and set(res.representation) == {"ngram"} and set(res.method) == METHODS
    assert ((res.auc_lo <= res.auc) & (res.auc <= res.auc_hi)).all()
    assert res.n_pairs.nunique() == 1 and res.n_pairs[0] > 20
    ng = res[res.representation == "ngram"].set_index("method").auc
    # the hook is causal; every method that sees randomised pairs or removes the week
    # effect ranks every held-out pair right, the naive observational reward does not
    for m in ("experimental", "experimental_ctr", "conditioned", "partial_out", "deconfoundlm"):
        assert ng[m] >= 0.95, (m, ng[m])
    assert ng["naive"] < 0.9 and ng["naive"] < ng["deconfoundlm"] - 0.1
    summary = (tiny_run / "summary.md").read_text()
    assert "| deconfoundlm |" in summary and "0.808" in summary and "wall time" in summary
    # loss vs data source: four rows, and paired differences that match the AUCs
    lvd = pd.read_csv(tiny_run / "loss_vs_data.csv")
    assert lvd.method.tolist() == ["experimental", "experimental_ctr", "naive", "deconfoundlm"]
    assert lvd.set_index("method").auc.to_dict() == {m: ng[m] for m in lvd.method}
    con = pd.read_csv(tiny_run / "contrasts.csv")
    np.testing.assert_allclose(con["diff"], [ng[a] - ng[b] for a, b in zip(con.a, con.b)])
    assert ((con.lo <= con["diff"]) & (con["diff"] <= con.hi)).all()
    assert con.set_index(["a", "b"]).loc[("deconfoundlm", "naive"), "lo"] > 0
    assert "## Loss vs data source" in summary and "| experimental_ctr - naive |" in summary
    cfg = json.loads((tiny_run / "config.json").read_text())
    assert cfg["preset"] == "tiny" and cfg["config"]["representations"] == ["ngram"]
    for png in ("auc.png", "week_effect.png"):
        assert (tiny_run / png).read_bytes()[:4] == b"\x89PNG"


def test_n_pairs_is_the_significant_test_split_pairs(synthetic_csv, tiny_run):
    log, _ = U.load_inputs(synthetic_csv, None)
    split = P.split_tests(log, U.PRESETS["tiny"].split, seed=0)
    arms = P.headline_arms(log)
    test_arms = arms.take(P.rows_of_tests(arms, split == 2))
    # every test holds hook and no-hook arms: 2 significant pairs per test
    assert pd.read_csv(tiny_run / "results.csv").n_pairs[0] == 2 * int((split == 2).sum())
    assert len(P.within_test_pairs(test_arms, alpha=0.05)) == 2 * int((split == 2).sum())


def test_week_effect_output_recovers_the_true_trend(tiny_run):
    weeks = pd.read_csv(tiny_run / "week_effect.csv", dtype={"level": str})
    assert len(weeks) == 10 and weeks.level.iloc[0] == "201310"
    truth = -4.0 * np.arange(10) / 9
    for m in ("deconfoundlm", "partial_out"):
        est = weeks[f"{m}_mean"].to_numpy()
        assert np.corrcoef(est, truth)[0, 1] > 0.95
        np.testing.assert_allclose(est, truth - truth.mean(), atol=0.5)
        assert (weeks[f"{m}_lo"] <= est).all() and (est <= weeks[f"{m}_hi"]).all()
    # raw weekly mean CTR, by hand from the file
    frame = synthetic_upworthy()
    raw = (frame.clicks / frame.impressions).groupby(frame.test_week).mean()
    np.testing.assert_allclose(weeks.raw_mean_ctr, raw.to_numpy())


@pytest.mark.slow
def test_trunk_representation_end_to_end(synthetic_csv, tmp_path):
    res = pd.read_csv(run_main(synthetic_csv, tmp_path / "out", "trunk") / "results.csv")
    assert len(res) == 6 and set(res.method) == METHODS
    assert ((res.auc_lo <= res.auc) & (res.auc <= res.auc_hi)).all()
    rows = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert {r["method"] for r in rows} == METHODS
    assert "validation picked trunk/experimental: step" in (tmp_path / "out" / "summary.md").read_text()


def test_selection_lines_report_the_lowest_validation_loss():
    history = [{"representation": "ngram", "method": "naive", "l2": 1e-4, "val_loss": 0.5},
               {"representation": "ngram", "method": "naive", "l2": 1e-3, "val_loss": 0.4},
               {"representation": "trunk", "method": "naive", "step": 80, "val_loss": 0.3},
               {"representation": "trunk", "method": "naive", "step": 160, "val_loss": 0.35}]
    assert R.selection_lines(history) == [
        "- validation picked ngram/naive: l2 0.001 (validation loss 0.4000); "
        "trunk/naive: step 80 (validation loss 0.3000)."]
    assert R.selection_lines([]) == []


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        S.main(["--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "--data PATH is required" in capsys.readouterr().err


def test_bad_eval_data_fails_before_any_training(synthetic_csv, tmp_path, monkeypatch):
    from dlm.rewards import fit

    def boom(*a, **k):
        raise AssertionError("training started")
    monkeypatch.setattr(U, "method_targets", boom)
    monkeypatch.setattr(fit, "fit_scorers", boom)
    bad = tmp_path / "eval.csv"
    synthetic_upworthy(n_tests=10, id_prefix="e").drop(columns=["clicks"]).to_csv(bad, index=False)
    with pytest.raises(SystemExit) as e:
        S.main(["--data", str(synthetic_csv), "--eval-data", str(bad), "--out", str(tmp_path / "o"),
                "--preset", "tiny"])
    assert str(bad) in str(e.value.code) and "'clicks'" in str(e.value.code)
    assert not (tmp_path / "o").exists()
    neg = tmp_path / "neg.csv"
    frame = synthetic_upworthy(n_tests=10)
    frame.loc[4, "clicks"] = -1
    frame.to_csv(neg, index=False)
    with pytest.raises(SystemExit, match="row 5, column 'clicks'"):
        S.main(["--data", str(neg), "--out", str(tmp_path / "o"), "--preset", "tiny"])


def test_eval_data_replaces_the_test_split_and_drops_overlapping_tests(synthetic_csv, tmp_path):
    log, _ = U.load_inputs(synthetic_csv, None)
    other = synthetic_upworthy(n_tests=40, seed=1, id_prefix="e")
    other_log = U.load_inputs(_write(other, tmp_path / "other.csv"), None)[0]
    cfg = U.PRESETS["tiny"]
    d = U.prepare(cfg, log, other_log)
    assert set(d["test_of"]) == {0, 1}                   # no test split held out of --data
    shared = {h for h in other.headline} & set(log.content)
    left = {t for t, h in zip(other.clickability_test_id, other.headline) if h in shared}
    assert len(left) > 0 and f"{len(left)} of 40 evaluation tests" in d["notes"][0]
    kept = {d["eval_arms"].group_labels[g] for g in d["eval_pairs"].group}
    assert kept == {f"e{i:03d}" for i in range(40)} - left
    with pytest.raises(ValueError, match="no within-test pairs"):
        U.prepare(cfg, log, log)                          # the training file itself: all overlap
    with pytest.raises(ValueError, match="unknown representations"):
        U.run(dataclasses.replace(cfg, representations=("bogus",)), log)


def window_archive(tmp_path, n_window=20):
    """The synthetic archive with its first n_window tests moved into the non-randomised
    window (test_week 201330) and their within-test ranking reversed: the hook loses."""
    frame = synthetic_upworthy(n_tests=60)
    moved = frame.clickability_test_id.isin([f"t{i:03d}" for i in range(n_window)])
    frame.loc[moved, "test_week"] = 201330
    hook = frame.headline.str.contains(HOOK)
    frame.loc[moved & hook, "clicks"] = frame.loc[moved & hook, "clicks"] // 2
    return U.load_inputs(_write(frame, tmp_path / "window.csv"), None)[0]


def test_nonrandomised_window_is_left_out_of_experimental_use(tmp_path):
    log = window_archive(tmp_path)
    window = P.nonrandomised_tests(log)
    assert window.sum() == 20 and all(log.group_labels[g] < "t020" for g in np.flatnonzero(window))
    cfg = U.PRESETS["tiny"]
    d = U.prepare(cfg, log)
    kept = U.prepare(dataclasses.replace(cfg, include_nonrandomised=True), log)
    test_of = d["test_of"]
    n_fit, n_eval = int((window & (test_of < 2)).sum()), int((window & (test_of == 2)).sum())
    assert n_fit > 0 and n_eval > 0
    # no experimental arm, training pair or evaluation pair from the window ...
    for arms in (d["fit_arms"], d["eval_arms"]):
        assert not window[np.asarray(arms.group)].any()
    assert not window[d["eval_pairs"].group].any()
    # ... while the observational log keeps every train/validation test
    assert window[d["obs"].group].sum() == n_fit == window[kept["obs"].group].sum()
    # every test: 3 headlines, 2 pairs (hook vs no hook), all significant
    assert d["left_out"] == {"train": {"tests": n_fit, "arms": 3 * n_fit, "pairs": 2 * n_fit},
                             "eval": {"tests": n_eval, "arms": 3 * n_eval, "pairs": 2 * n_eval},
                             "rows": 60}
    assert len(kept["train_pairs"]) == len(d["train_pairs"]) + 2 * n_fit
    assert len(kept["eval_pairs"]) == len(d["eval_pairs"]) + 2 * n_eval
    assert f"{n_fit + n_eval} tests (60 rows of --data) left out" in R.left_out_line(d, cfg)
    assert "kept" in R.left_out_line(kept, dataclasses.replace(cfg, include_nonrandomised=True))


def test_include_nonrandomised_flag_reaches_the_config(synthetic_csv, tmp_path, monkeypatch):
    seen = []

    def stop(cfg, *a, **k):
        seen.append(cfg)
        raise KeyboardInterrupt
    monkeypatch.setattr(U, "run", stop)
    for flag in ([], ["--include-nonrandomised"]):
        with pytest.raises(KeyboardInterrupt):
            S.main(["--data", str(synthetic_csv), "--out", str(tmp_path / "o"), "--preset",
                    "tiny", *flag])
    assert [c.include_nonrandomised for c in seen] == [False, True]


def _write(frame, path):
    frame.to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_real_development_file(upworthy_path, tmp_path):
    out = tmp_path / "out"
    assert S.main(["--data", str(upworthy_path), "--out", str(out), "--preset", "tiny",
                   "--representations", "ngram", "--set", "ngram_features=16384"]) == 0
    res = pd.read_csv(out / "results.csv").set_index("method")
    assert res.n_pairs.iloc[0] > 500                      # ~900 at the default split
    assert res.loc["experimental", "auc_lo"] > 0.6        # randomised pairs carry real signal
    assert res.loc["experimental", "auc"] > res.loc["naive", "auc"]


def test_representation_names_map_to_dlm_representations_specs():
    cfg = U.PRESETS["tiny"]
    assert U.representation_spec("ngram", cfg) == "ngram:512:sparse"
    assert U.representation_spec("smollm2-135m", cfg) == "llm:smollm2-135m"
    assert U.representation_spec("ngram-svd:8", cfg) == "ngram-svd:8"
    U.check_representations(("ngram", "trunk", "ngram-svd:8"), cfg)
    for bad in ("bogus", "nope:3"):
        with pytest.raises(ValueError, match="unknown representations"):
            U.check_representations((bad,), cfg)
