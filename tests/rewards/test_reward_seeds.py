"""train_reward_seeds: S seeds in one program (vmapped or lax.mapped) train each seed exactly
as train_reward would alone; seeds whose shapes differ fall back to one by one, with a reason."""
import dataclasses

import jax
import numpy as np
import pytest

from dlm.data.log import Confounder, ObservationalLog
from dlm.representations import Features
from dlm.rewards import MethodContext, TrainerConfig, naive_targets, train_reward
from dlm.rewards.trainer import train_reward_seeds

CFG = TrainerConfig(steps=30, batch_size=128, log_every=10)


def _rep():
    table = np.random.default_rng(0).normal(size=(40, 5))
    return Features(lambda texts: table[[int(t[1:]) for t in texts]], 5), table


def _targets(seed: int, n: int = 400, constant_size: bool = False):
    """A log of n postings of 40 texts: a linear text effect plus a day effect. Each seed
    draws its own rows, so the number of distinct texts posted differs between seeds."""
    rng = np.random.default_rng(seed)
    _, table = _rep()
    idx = rng.integers(0, 40 if seed % 2 else 25, size=n)
    day = rng.integers(0, 3, size=n)
    size = np.zeros(n) if constant_size else rng.normal(size=n)
    log = ObservationalLog(
        content=np.array([f"t{i}" for i in idx], object),
        outcome=table[idx] @ np.array([0.5, -0.3, 0.2, 0.0, 0.1]) + 0.4 * (day == 0)
        + rng.normal(0, 0.1, n),
        confounders={"day": Confounder("categorical", day, ("a", "b", "c")),
                     "size": Confounder("numeric", size)})
    return naive_targets(MethodContext(log))


def _assert_same(a, b, texts):
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a(texts), b(texts), rtol=1e-5, atol=1e-6)
    assert a.strength == b.strength and a.offset == pytest.approx(b.offset)


@pytest.mark.parametrize("method, strengths, batching", [("invariant", (0.1, 10.0), "vmap"),
                                                         ("conditioned", None, "map"),
                                                         ("odin", (1.0,), "vmap"),
                                                         ("invariant", (0.1, 10.0), "loop")])
def test_seeds_together_equal_sequential_train_reward(method, strengths, batching):
    rep, _ = _rep()
    seeds = [3, 4, 5]
    targets = [_targets(s) for s in seeds]
    assert len({len(set(t.content)) for t in targets}) > 1     # text tables get padded
    c_ref = {"day": "b", "size": 0.0}
    history = []
    cfg = dataclasses.replace(CFG, seed_batching=batching)
    together = train_reward_seeds(method, targets, rep, cfg, strengths, seeds, c_ref=c_ref,
                                  history=history)
    texts = [f"t{i}" for i in range(40)]
    for seed, t, got in zip(seeds, targets, together):
        alone = train_reward(method, t, rep, CFG, strengths, seed=seed, c_ref=c_ref)
        assert len(got) == len(alone)
        for a, b in zip(got, alone):
            _assert_same(a, b, texts)
    # every seed x strength logs at steps 10, 20, 30, tagged with its seed
    assert sorted({(h["seed"], h["step"]) for h in history}) == \
        [(s, k) for s in seeds for k in (10, 20, 30)]


def test_seeds_with_different_row_counts_run_one_by_one_with_a_reason():
    rep, _ = _rep()
    targets = [_targets(0, n=300), _targets(1, n=400)]
    with pytest.warns(UserWarning, match="one by one: .*different numbers of training rows"):
        got = train_reward_seeds("naive", targets, rep, CFG, seeds=[0, 1])
    texts = [f"t{i}" for i in range(40)]
    for seed, t, g in zip([0, 1], targets, got):
        _assert_same(g[0], train_reward("naive", t, rep, CFG, seed=seed)[0], texts)


def test_padded_confounder_bins_do_not_change_the_invariance_penalty():
    """A constant numeric confounder has one bin, a spread one has cfg.bins: stacked, the
    first seed's bin indicators are padded with invalid bins."""
    rep, _ = _rep()
    targets = [_targets(6, constant_size=True), _targets(7)]
    cfg = dataclasses.replace(CFG, seed_batching="vmap")
    got = train_reward_seeds("invariant", targets, rep, cfg, (10.0,), seeds=[6, 7])
    for seed, t, g in zip([6, 7], targets, got):
        _assert_same(g[0], train_reward("invariant", t, rep, CFG, (10.0,), seed=seed)[0],
                     [f"t{i}" for i in range(40)])


def test_one_step_per_call_equals_the_scanned_chunks():
    rep, _ = _rep()
    t = _targets(8)
    a = train_reward("invariant", t, rep, CFG, (1.0,), seed=8)[0]
    b = train_reward("invariant", t, rep, dataclasses.replace(CFG, scan=False), (1.0,), seed=8)[0]
    _assert_same(a, b, [f"t{i}" for i in range(40)])
    assert a.final_metrics["loss"] == pytest.approx(b.final_metrics["loss"], rel=1e-5)


def test_bad_arguments():
    rep, _ = _rep()
    targets = [_targets(0), _targets(1)]
    with pytest.raises(ValueError, match="seed_batching"):
        TrainerConfig(seed_batching="pmap")
    with pytest.raises(ValueError, match="2 targets for 3 seeds"):
        train_reward_seeds("naive", targets, rep, CFG, seeds=[0, 1, 2])


@pytest.mark.slow
def test_bench_seeds_tiny_writes_every_timing(tmp_path):
    import json

    from scripts import bench_seeds

    argv = ["--preset", "tiny", "--set", "seeds=2", "--set", "reward.steps=10", "--out",
            str(tmp_path)]
    assert bench_seeds.main(argv) == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    for row in result["methods"]:
        assert all(row[f"{m}_s"] > 0 for m in bench_seeds.MODES)
        assert row["max_abs_score_diff_vmapped_vs_separate"] < 1e-4
    assert "Seeds in one program" in (tmp_path / "summary.md").read_text()
