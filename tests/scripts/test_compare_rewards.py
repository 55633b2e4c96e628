"""scripts.compare_rewards and its pipeline (sims.experiments.compare_rewards): metrics of
known rewards, the normalised objective, the nested world config, outputs."""
import json

import numpy as np
import pandas as pd
import pytest

from dlm.eval import causal_metrics as cm
from dlm.eval.reward_eval import HeldOut, reward_metrics
from dlm.policy.best_of_n import Pool
from dlm.rewards import observational_methods
from scripts import compare_rewards as script
from sims.experiments import compare_rewards as cr
from sims.featurise import add_marker, phi

BETA = np.array([0.3, 0.25, 0.2, -0.05, 0.15, 0.2, -0.1, -0.1])   # FEATURES order


def tau_fn(texts):
    return phi(texts).astype(np.float64) @ BETA


def _pool(texts_PxN):
    P, N = len(texts_PxN), len(texts_PxN[0])
    z = np.zeros((P, N, 1))
    return Pool(prompts=tuple(f"lede {p}" for p in range(P)), texts=tuple(map(tuple, texts_PxN)),
                prompt_tokens_PxL=np.zeros((P, 1), np.int32), prompt_mask_PxL=np.ones((P, 1), bool),
                tokens_PxNxT=z.astype(np.int32), mask_PxNxT=z.astype(bool),
                logprobs_PxN=np.zeros((P, N), np.float32))


def _held(pool=None):
    texts = ["Why Did A Nurse Do This?", "A Nurse Changed Everything", "9 Things You Should Know",
             "Your Amazing View Of Drought", "What Would You Do?", "A Short Look At Drought"]
    story = np.array([0, 0, 0, 1, 1, 1])
    tau = tau_fn(texts)
    pairs = cm.interventional_pairs(texts, tau, groups=story)
    return HeldOut(texts, tau, pairs, pool, tau_fn, marker_effect=-0.1)


def test_the_true_effect_scores_perfectly():
    pool = _pool([["A Nurse Changed Everything", "Why Did You Do This?"],
                  [add_marker("9 Amazing Photos", "mon"), "9 Amazing Photos"]])
    m = reward_metrics(tau_fn, _held(pool))
    assert m["causal_corr"] == pytest.approx(1.0)
    assert m["pair_acc"] == 1.0
    assert m["spurious_gap"] == pytest.approx(0.0, abs=1e-12)
    assert m["gap_friday"] == pytest.approx(0.0, abs=1e-12)
    # best of each row by tau: the question + "you" + "this" one, the unmarked one
    want = np.mean(tau_fn(["Why Did You Do This?", "9 Amazing Photos"]))
    assert m["objective"] == pytest.approx(want)
    assert m["marker_rate"] == 0.0


def test_a_reward_that_loves_monday_markers_shows_the_gap_and_picks_them():
    bias = 0.3
    reward = lambda texts: tau_fn(texts) + bias * np.array(  # noqa: E731
        [t.startswith("Happy Monday") for t in texts])
    pool = _pool([[add_marker("9 Amazing Photos", "mon"), "9 Amazing Photos"]])
    m = reward_metrics(reward, _held(pool))
    assert m["spurious_gap"] == pytest.approx(bias)
    assert m["gap_friday"] == pytest.approx(0.0, abs=1e-12)
    assert m["marker_rate"] == 1.0
    assert m["objective"] == pytest.approx(tau_fn(["9 Amazing Photos"])[0] - 0.1)


def test_normalised_objective_per_seed_by_hand():
    frame = pd.DataFrame({"seed": [0, 0, 0, 1, 1, 1], "method": ["sft", "oracle", "naive"] * 2,
                          "objective": [0.1, 0.5, 0.3, 0.2, 0.4, 0.5]})
    got = cr._normalised(frame).to_numpy()
    np.testing.assert_allclose(got, [0.0, 1.0, 0.5, 0.0, 1.0, 1.5])


def test_labels_name_the_strength_only_where_there_is_one():
    frame = pd.DataFrame({"method": ["naive", "odin"], "strength": [np.nan, 10.0]})
    assert list(cr.labelled(frame).label) == ["naive", "odin λ=10"]


def test_main_writes_every_output_with_the_entanglement_flag(tmp_path, monkeypatch):
    seen = {}

    def fake_run(cfg, data=None, progress=True, history=None):
        seen["cfg"] = cfg
        history.append({"seed": 0, "method": "naive", "strength": None, "step": 1, "loss": 0.5})
        rows = [{"seed": s, "entanglement": cfg.world.entanglement, "method": m, "strength": st,
                 "causal_corr": 0.5 + 0.1 * s, "spurious_gap": 0.1, "pair_acc": 0.7,
                 "objective": 0.3, "marker_rate": 0.0, "gap_monday": 0.1, "gap_friday": -0.1}
                for s in (0, 1) for m, st in (("naive", np.nan), ("odin", 1.0))]
        frame = pd.DataFrame(rows).reindex(columns=["seed", "entanglement", "method", "strength",
                                                    *cr.METRICS, "seconds"])
        return frame, {"data": "test", "representation": "phi (dim 8)", "n_heldout_texts": 6,
                       "n_pairs": 3, "total_s": 1.0, "sft_s": 0.5}

    monkeypatch.setattr(cr, "run", fake_run)
    out = tmp_path / "cmp"
    assert script.main(["--preset", "tiny", "--entanglement", "0.8", "--set", "seeds=2",
                        "--out", str(out)]) == 0
    assert seen["cfg"].world.entanglement == 0.8 and seen["cfg"].seeds == 2
    res = pd.read_csv(out / "results.csv")
    assert {"seed", "entanglement", "method", "causal_corr", "spurious_gap", "pair_acc",
            "objective"} <= set(res.columns)
    summary = (out / "summary.md").read_text()
    assert "| odin λ=1 | 0.550 ± 0.050 |" in summary
    assert json.loads((out / "config.json").read_text())["config"]["world"]["entanglement"] == 0.8
    assert (out / "rewards.png").stat().st_size > 0
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["method"] == "naive"


def test_every_world_field_reaches_the_world(tmp_path, monkeypatch, capsys):
    """Issue 12: confounder_strength used to be silently ignored by compare_rewards."""
    seen = {}

    def fake_run(cfg, data=None, progress=True, history=None):
        seen["world"] = cr.build_worlds(cfg, data)[0]
        raise RuntimeError("stop after the world")

    monkeypatch.setattr(cr, "run", fake_run)
    argv = ["--preset", "tiny", "--set", "world.confounder_strength=2.5", "--set",
            "world.weekday_effects=0.1,0,0,0,0,0,-0.1", "--out", str(tmp_path / "cmp")]
    with pytest.raises(RuntimeError, match="stop after the world"):
        script.main(argv)
    world = seen["world"]
    assert world.cfg.confounder_strength == 2.5
    truth = world.truth()           # the world's true confounder effects carry the strength
    np.testing.assert_allclose(truth["weekday_effects"][0] - truth["weekday_effects"][-1],
                               2.5 * 0.2, rtol=1e-6)
    assert cr.PRESETS["tiny"].world.confounder_strength == 1.0    # the preset is untouched
    with pytest.raises(SystemExit, match="unknown field 'world.nope'.*confounder_strength") as err:
        script.main(["--preset", "tiny", "--set", "world.nope=1", "--out", str(tmp_path / "x")])
    assert err.value.code == 2
    assert "fields of 'world'" in capsys.readouterr().err


def test_presets_keep_their_values():
    """The nesting moved fields, not numbers (the values the flat presets had)."""
    tiny, quick, full = (cr.PRESETS[p] for p in ("tiny", "quick", "full"))
    assert (quick.world.entanglement, quick.world.p_marker, quick.world.marker_effect,
            quick.world.k) == (0.6, 0.8, -0.1, 4.0)
    assert (quick.reward.steps, quick.reward.batch_size, quick.reward.lr, quick.reward.l2,
            quick.reward.hidden, quick.reward.freeze_trunk) == (600, 4096, 2e-2, 1e-4, 0, True)
    assert quick.estimator.folds == 5 and tiny.estimator.folds == 2
    assert (tiny.reward.steps, tiny.reward.batch_size) == (60, 1024)
    assert full.reward == quick.reward and full.n_postings == 100_000


@pytest.mark.slow
def test_tiny_preset_end_to_end(tmp_path):
    out = tmp_path / "cmp"
    assert script.main(["--preset", "tiny", "--entanglement", "0.6", "--out", str(out)]) == 0
    res = pd.read_csv(out / "results.csv")
    methods = set(res.method)
    assert methods == {"sft", *observational_methods()}
    assert len(res[res.method == "odin"]) == len(cr.PRESETS["tiny"].knob) * cr.PRESETS["tiny"].seeds
    assert res.loc[res.method != "sft", "causal_corr"].notna().all()
    oracle = res[res.method == "oracle"]
    assert (oracle.normalised_objective == 1.0).all()


def test_an_unknown_method_is_a_usage_error_before_anything_runs(tmp_path, capsys):
    with pytest.raises(SystemExit, match="methods: unknown \\['nope'\\]; registered: oracle") as err:
        script.main(["--preset", "tiny", "--set", "methods=naive,nope", "--out", str(tmp_path)])
    assert err.value.code == 2 and not tmp_path.joinpath("results.csv").exists()
    assert cr.PRESETS["tiny"].methods == ()          # empty: every registered method
