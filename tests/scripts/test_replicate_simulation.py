"""scripts.replicate_simulation and its pipeline (sims.experiments.replicate_simulation):
the relative-gain arithmetic, the tables, the grid's worlds, the outputs."""
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from dlm.rewards import observational_methods
from scripts import replicate_simulation as script
from sims.experiments import compare_rewards as cr
from sims.experiments import replicate_simulation as rs


def _frame():
    """Two scenarios x two seeds; odin at two strengths, with known objectives."""
    rows = []
    objectives = {  # (entanglement, method, strength) -> objective for seeds 0, 1
        (0.0, "sft", np.nan): (0.10, 0.10), (0.0, "oracle", np.nan): (0.50, 0.50),
        (0.0, "deconfoundlm", np.nan): (0.40, 0.46),
        (0.0, "odin", 1.0): (0.30, 0.34), (0.0, "odin", 10.0): (0.20, 0.20),
        (0.9, "sft", np.nan): (0.10, 0.10), (0.9, "oracle", np.nan): (0.50, 0.50),
        (0.9, "deconfoundlm", np.nan): (0.30, 0.30),
        (0.9, "odin", 1.0): (0.20, 0.20), (0.9, "odin", 10.0): (0.25, 0.27),
    }
    for (e, m, s), objs in objectives.items():
        for seed, o in enumerate(objs):
            rows.append({"seed": seed, "entanglement": e, "p_marker": 0.8, "method": m,
                         "strength": s, "objective": o, "causal_corr": 0.5 + 0.1 * seed,
                         "spurious_gap": 0.0, "marker_rate": 0.0})
    frame = pd.DataFrame(rows)
    frame["objective_normalised"] = (frame.objective - 0.10) / 0.40
    return frame


def _info():
    return {"data": "test", "representation": "phi (dim 8)", "n_heldout_texts": 6, "n_pairs": 3,
            "total_s": 9.0, "sft_s": 1.0, "representation_s": 1.0, "pool_s": 1.0,
            "worlds_s": 6.0, "world_s": {"0/0.8": 3.0, "0.9/0.8": 3.0}}


def test_odin_is_compared_at_its_best_strength_per_scenario():
    best = rs.best_strength(_frame(), "odin")
    assert best[(0.0, 0.8)] == 1.0 and best[(0.9, 0.8)] == 10.0


def test_relative_gain_by_hand():
    g = rs.relative_gain(_frame()).set_index("entanglement")
    # entanglement 0: deconfoundlm 0.43, odin (λ=1) 0.32 -> +34.4 %
    assert g.loc[0.0, "odin_strength"] == 1.0
    assert g.loc[0.0, "gain_objective"] == pytest.approx(0.11 / 0.32)
    # normalised: (0.43-0.1)/0.4 = 0.825 vs (0.32-0.1)/0.4 = 0.55
    assert g.loc[0.0, "gain_objective_normalised"] == pytest.approx(0.275 / 0.55)
    # paired diffs 0.10, 0.12
    assert g.loc[0.0, "diff_mean"] == pytest.approx(0.11)
    assert g.loc[0.0, "diff_se"] == pytest.approx(0.01)
    # entanglement 0.9: odin's best is λ=10 (0.26); paired diffs 0.05, 0.03
    assert g.loc[0.9, "odin_strength"] == 10.0
    assert g.loc[0.9, "gain_objective"] == pytest.approx(0.04 / 0.26)
    assert g.loc[0.9, "diff_mean"] == pytest.approx(0.04)
    assert g.loc[0.9, "diff_se"] == pytest.approx(np.std([0.05, 0.03], ddof=1) / np.sqrt(2))


def test_a_negative_baseline_gain_uses_its_magnitude():
    f = _frame()
    f.loc[f.method == "odin", "objective"] -= 0.5      # odin's best at 0: -0.18
    g = rs.relative_gain(f).set_index("entanglement")
    assert g.loc[0.0, "gain_objective"] == pytest.approx((0.43 + 0.18) / 0.18)


def test_summary_has_the_gain_row_per_scenario_and_metric_tables():
    f = _frame()
    text = rs.summary_text(f, rs.PRESETS["tiny"], _info())
    assert "| 0 | 0.8 | 1 | 0.430 | 0.320 | +34.4% | 0.110 ± 0.010 |" in text
    assert "| 0.9 | 0.8 | 10 | 0.300 | 0.260 | +15.4% |" in text
    # the objective table: odin λ=1 at entanglement 0 is 0.32 ± 0.02
    assert "| odin λ=1 | 0.320 ± 0.020 |" in text
    for _, title, _ in rs.TABLES:
        assert f"## {title}" in text


def test_summary_protocol_rows_use_tuning_seeds_and_validation_and_exclude_tuning_rows():
    f = _frame().assign(split="report", val_loss=np.nan)
    odin = f.method == "odin"
    # validation prefers λ=10 on both seeds at entanglement 0 (in-sample best there is λ=1)
    f.loc[odin, "val_loss"] = np.where(f.loc[odin, "strength"] == 10.0, 0.1, 0.2)
    tune = f[odin & (f.seed == 0)].assign(seed=100, split="tune")
    tune.loc[tune.strength == 10.0, "objective"] = 0.9          # tuning seeds pick λ=10
    tune.loc[tune.strength == 10.0, "causal_corr"] = 99.0       # must not reach any table
    text = rs.summary_text(pd.concat([f, tune], ignore_index=True), rs.PRESETS["tiny"], _info())
    # entanglement 0: deconfoundlm 0.40, 0.46 vs odin λ=10 0.20, 0.20 -> diffs 0.20, 0.26
    half = 12.706 * 0.03                                # t(0.975, 1) * se
    cell = f"+0.230 [{0.23 - half:+.3f}, {0.23 + half:+.3f}]"
    for rule in ("tuned", "validation"):
        assert f"| 0 | 0.8 | odin | {rule} | 10 | 0.430 | 0.200 | {cell} | +115.0% | 2 |" in text
    assert "99.000" not in text
    # the in-sample section still picks λ=1 on the reported seeds
    assert "| 0 | 0.8 | 1 | 0.430 | 0.320 | +34.4% | 0.110 ± 0.010 |" in text
    assert "| deconfoundlm | +0.000 [+0.000, +0.000] |" in text     # spurious_gap with CI


def test_summary_without_odin_says_the_gain_is_not_computed():
    f = _frame()
    f = f[f.method != "odin"]
    assert "Not computed" in rs.summary_text(f, rs.PRESETS["tiny"], _info())


def test_tidy_puts_the_issue_columns_first():
    frame = pd.DataFrame([{"seed": 0, "entanglement": 0.3, "p_marker": 1.0, "method": "naive",
                           "strength": np.nan, "normalised_objective": 0.5, "objective": 0.2,
                           "causal_corr": 0.7, "spurious_gap": 0.3, "pair_acc": 0.8}])
    out = rs.tidy(frame)
    assert list(out.columns[:8]) == list(rs.COLUMNS)
    assert out.objective_normalised.iloc[0] == 0.5 and "strength" in out.columns


def test_world_configs_take_the_grid_values():
    cfg = dataclasses.replace(rs.PRESETS["quick"], world=dataclasses.replace(
        rs.PRESETS["quick"].world, confounder_strength=2.0))
    w = rs.world_config(cfg, 0.3, 1.0)
    assert isinstance(w, cr.CompareConfig) and not isinstance(w, rs.ReplicateConfig)
    assert (w.world.entanglement, w.world.p_marker, w.n_postings) == (0.3, 1.0, cfg.n_postings)
    assert w.world.confounder_strength == 2.0          # every other world field holds
    # the quick preset's values as they were before the nesting
    q = rs.PRESETS["quick"]
    assert (q.reward.steps, q.reward.batch_size, q.estimator.folds, q.n_postings) == \
        (300, 4096, 3, 8000)


def test_main_writes_every_output(tmp_path, monkeypatch):
    def fake_run(cfg, data=None, progress=True, history=None):
        history.append({"entanglement": 0.0, "p_marker": 0.8, "method": "naive", "step": 1})
        return rs.tidy(_frame()), _info()

    monkeypatch.setattr(rs, "run", fake_run)
    out = tmp_path / "rep"
    assert script.main(["--preset", "tiny", "--set", "seeds=2", "--out", str(out)]) == 0
    res = pd.read_csv(out / "results.csv")
    assert list(res.columns[:8]) == list(rs.COLUMNS)
    assert json.loads((out / "config.json").read_text())["config"]["seeds"] == 2
    for png in ("objective.png", "causal_corr.png"):
        assert (out / png).stat().st_size > 0
    for single in ("entanglement=0.3", "world.p_marker=1"):
        with pytest.raises(SystemExit, match="the grid is set by entanglements"):
            script.main(["--set", single, "--out", str(out)])


@pytest.mark.slow
def test_tiny_preset_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("DLM_CACHE", str(tmp_path / "cache"))   # a fresh SFT, no shared cache
    out = tmp_path / "rep"
    assert script.main(["--preset", "tiny", "--out", str(out)]) == 0
    cfg = rs.PRESETS["tiny"]
    res = pd.read_csv(out / "results.csv")
    assert list(res.columns[:8]) == list(rs.COLUMNS)
    cells = set(zip(res.entanglement, res.p_marker, res.method))
    for e in cfg.entanglements:
        for p in cfg.p_markers:
            for m in ("sft", *observational_methods()):
                assert (e, p, m) in cells
    summary = (out / "summary.md").read_text()
    protocol, in_sample = summary.split("## DeconfoundLM vs ODIN at its in-sample best")
    in_sample = in_sample.split("\n## ")[0]
    gain_rows = [ln for ln in in_sample.splitlines() if ln.startswith("| ") and "%" in ln]
    assert len(gain_rows) == len(cfg.entanglements) * len(cfg.p_markers)
    # the protocol table: every strength of both baselines per scenario (tiny has no tuning
    # seeds and no validation sample, so no "tuned" or "validation" rows)
    rows = [ln for ln in protocol.splitlines() if ln.startswith("| ")
            and ("| odin |" in ln or "| invariant |" in ln)]
    assert len(rows) == len(cfg.entanglements) * len(cfg.p_markers) * 2 * len(cfg.knob)
    assert not any("| tuned |" in ln or "| validation |" in ln for ln in rows)
    for png in ("objective.png", "causal_corr.png"):
        assert (out / png).stat().st_size > 1000
    # something causal: the oracle's reward tracks tau better than the naive one
    means = res.groupby("method").causal_corr.mean()
    assert means["oracle"] > means["naive"]


# ---- issue 13 item 1: deconfoundlm's text term spans the marker ------------------------------
def _deconfoundlm_monday_gaps(entanglement: float, seeds=(0, 1, 2), text: str | None = None
                              ) -> list[float]:
    """deconfoundlm's signed Monday-marker gap per seed in the quick preset's world (its
    postings, folds, representation, steps) at p_marker 0.8, marker effect -0.1; no policy."""
    import jax

    from dlm.eval.causal_metrics import spurious_gaps
    from dlm.representations import fit_representation
    from dlm.rewards import MethodContext, train_reward_seeds
    from dlm.data.markers import MARKER_PREFIXES

    cfg = rs.world_config(rs.PRESETS["quick"], entanglement, 0.8)
    assert cfg.world.marker_effect == -0.1 and cfg.estimator_text == "ngram:256"
    if text is not None:
        cfg = dataclasses.replace(cfg, estimator_text=text)
    world, held, _ = cr.build_worlds(cfg, None)
    universe = [m + t for row in world.candidates for t in row for m in MARKER_PREFIXES]
    rep = fit_representation(cfg.representation, universe, seed=cfg.first_seed)
    targets = []
    for seed in seeds:
        log = world.sample(jax.random.key(seed), cfg.n_postings).log
        ctx = MethodContext(log, rep, world=world, seed=seed,
                            estimator=cfg.estimator,
                            estimator_text=cfg.estimator_text)
        targets.append(cr.METHODS["deconfoundlm"].target_fn(ctx))
    tcfg = cfg.reward
    rewards = train_reward_seeds("deconfoundlm", targets, rep, tcfg, seeds=list(seeds))
    texts = [str(t) for t in held.text_SxK[held.mask_SxK]]
    return [spurious_gaps(r[0], texts, cfg.world.marker_effect)["Happy Monday!"] for r in rewards]


@pytest.mark.slow
@pytest.mark.parametrize("entanglement", [0.0, 0.9])
def test_deconfoundlm_marker_gap_is_within_003_with_the_default_text_term(entanglement):
    gaps = _deconfoundlm_monday_gaps(entanglement)
    assert abs(np.mean(gaps)) <= 0.03, gaps


@pytest.mark.slow
def test_a_text_term_without_the_marker_misses_the_bound():
    """The control: the same world with a text term that does not span the marker. Issue 13
    found the top 16 components of the reward representation wanting; that projection is
    gone (the text term is its own spec, and ngram-svd:16 keeps the marker: gaps ~0.015),
    so the control is no text term at all."""
    assert np.mean(_deconfoundlm_monday_gaps(0.0, text="none")) > 0.05
