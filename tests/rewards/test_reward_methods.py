"""The reward methods: penalties against hand computations, the trainer's knob stacking, and
the acceptance checks on tiny headline worlds where the answer is known.

The world tests use the world's own features (sims.featurise.phi) as the frozen
representation: cheap, and it isolates what they test, the methods' targets and penalties.
The slow test repeats the claims on the default hashed n-gram representation.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm.data.log import Confounder, ObservationalLog
from dlm.eval.causal_metrics import causal_corr, spurious_gaps
from dlm.representations import Features, fit_representation
from dlm.rewards import (METHODS, ConfounderEncoder, MethodContext, RewardMethod, Targets,
                         TrainerConfig, naive_targets, observational_methods, train_reward)
from dlm.rewards import methods as M

KNOB = (0.1, 1.0, 10.0, 100.0)


# ---- penalties by hand ---------------------------------------------------------------------------
def test_pearson_columns_match_numpy_and_zero_for_constant_column():
    rng = np.random.default_rng(0)
    r, C = rng.normal(size=50), rng.normal(size=(50, 3))
    C[:, 2] = 1.0
    got = np.asarray(M._pearson_columns(jnp.asarray(r), jnp.asarray(C)))
    want = [np.corrcoef(r, C[:, j])[0, 1] for j in range(2)]
    np.testing.assert_allclose(got[:2], want, atol=1e-5)
    assert got[2] == 0.0


def _mmd2_brute(x, y, sigma2):
    k = lambda a, b: np.exp(-np.subtract.outer(a, b) ** 2 / (2 * sigma2))  # noqa: E731
    return k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()


def test_mmd_one_vs_rest_equals_brute_force_average_over_bins():
    rng = np.random.default_rng(1)
    r = rng.normal(size=40)
    codes = np.repeat([0, 1, 2], [10, 14, 16])
    onehot = np.eye(4)[codes]                       # bin 3 is empty: skipped
    valid = np.array([True, True, True, True])
    got = float(M.mmd_one_vs_rest(jnp.asarray(r), jnp.asarray(onehot), jnp.asarray(valid), 0.7))
    want = np.mean([_mmd2_brute(r[codes == b], r[codes != b], 0.7) for b in range(3)])
    assert got == pytest.approx(want, rel=1e-5)


def test_mmd_is_zero_when_every_bin_has_the_same_values():
    r = np.tile([0.3, -1.0, 2.0, 0.5], 3)
    onehot = np.eye(3)[np.repeat([0, 1, 2], 4)]
    got = M.mmd_one_vs_rest(jnp.asarray(r), jnp.asarray(onehot), jnp.ones(3, bool), 1.0)
    assert abs(float(got)) < 1e-6


def test_odin_penalty_by_hand():
    rng = np.random.default_rng(2)
    reward, conf, target = rng.normal(size=30), rng.normal(size=(30, 2)), rng.normal(size=30)
    w_c, w_k = np.array([1.0, 2.0, 0.0]), np.array([0.5, 0.0, 3.0])
    out = {"reward": jnp.asarray(reward), "head_kernels": (jnp.asarray(w_c), jnp.asarray(w_k))}
    batch = {"conf": jnp.asarray(conf), "target": jnp.asarray(target), "weight": jnp.ones(30)}
    pen, _ = M.odin_penalty(out, batch, 3.0)
    rho2 = sum(np.corrcoef(reward, conf[:, j])[0, 1] ** 2 for j in range(2))
    want = 3.0 * (rho2 + (w_c @ w_k) ** 2) + M.ODIN_CONTENT_FIT * np.mean((reward - target) ** 2)
    assert float(pen) == pytest.approx(want, rel=1e-5)


# ---- the trainer on synthetic targets ------------------------------------------------------------
def _synthetic(n=600, seed=0):
    """A log of texts "t<i>" whose representation is a fixed random matrix; real outcomes
    linear in it plus a day effect. Returns (representation, matrix, beta, naive targets)."""
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(40, 5)).astype(np.float32)
    rep = Features(lambda texts: table[[int(t[1:]) for t in texts]], 5)
    idx = rng.integers(0, 40, size=n)
    day = rng.integers(0, 3, size=n)
    beta = np.array([0.5, -0.3, 0.2, 0.0, 0.1])
    log = ObservationalLog(
        content=np.array([f"t{i}" for i in idx], object),
        outcome=-3.0 + table[idx] @ beta + np.array([0.4, 0.0, -0.4])[day],
        confounders={"day": Confounder("categorical", day, ("a", "b", "c")),
                     "size": Confounder("numeric", rng.normal(size=n))})
    return rep, table, beta, naive_targets(MethodContext(log))


def test_linear_head_recovers_a_known_linear_reward():
    rep, table, beta, targets = _synthetic()
    cfg = TrainerConfig(steps=400, batch_size=256, lr=5e-2, l2=0.0)
    r = train_reward("conditioned", targets, rep, cfg, c_ref={"day": "b", "size": 0.0})[0]
    texts = [f"t{i}" for i in range(40)]
    # differences between texts are the text effects; at c_ref the day effect is 0
    np.testing.assert_allclose(np.diff(r(texts)), np.diff(table @ beta), atol=0.03)


def test_stacked_knob_values_train_exactly_as_they_would_alone():
    rep, _, _, targets = _synthetic(seed=3)
    cfg = TrainerConfig(steps=30, batch_size=128)
    together = train_reward("invariant", targets, rep, cfg, strengths=(0.1, 10.0))
    alone = train_reward("invariant", targets, rep, cfg, strengths=(10.0,))
    for a, b in zip(jax.tree.leaves(together[1].params), jax.tree.leaves(alone[0].params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert together[1].strength == 10.0 and together[0].strength == 0.1


def test_an_eighth_method_is_one_function_and_one_registry_line(monkeypatch):
    rep, _, _, targets = _synthetic(seed=4)

    def flipped(ctx):                                   # the new method's target function
        t = naive_targets(ctx)
        return dataclasses.replace(t, target=-t.target)
    monkeypatch.setitem(METHODS, "flipped", RewardMethod(flipped))   # the registry line

    log = ObservationalLog(content=targets.content, outcome=targets.target,
                           confounders=targets.confounders)
    new = METHODS["flipped"].target_fn(MethodContext(log))
    cfg = TrainerConfig(steps=200, batch_size=256)
    texts = [f"t{i}" for i in range(40)]
    r_new = train_reward("flipped", new, rep, cfg)[0](texts)
    r_naive = train_reward("naive", targets, rep, cfg)[0](texts)
    assert np.corrcoef(r_new, r_naive)[0, 1] < -0.99


def test_full_fine_tune_learns_a_byte_level_rule():
    """freeze_trunk=False trains the whole RewardModel (random tiny trunk) on token ids."""
    from dlm.data.tokenizer import ByteTokenizer
    from dlm.models.decoder import PRESETS, init_params

    rng = np.random.default_rng(0)
    words = ["cat", "dog", "sun", "tree", "blue", "red"]
    texts = [" ".join(rng.choice(words, 3)) + ("?" if rng.random() < 0.5 else "")
             for _ in range(64)]
    y = np.array([float(t.endswith("?")) for t in texts])
    day = Confounder("categorical", rng.integers(0, 2, 64), ("a", "b"))
    targets = Targets(np.array(texts, object), y, np.ones(64), {"day": day})
    model_cfg = dataclasses.replace(PRESETS["tiny"], n_layers=1)    # one block: a quick compile
    trunk = (init_params(model_cfg, jax.random.key(0)), model_cfg, ByteTokenizer())
    cfg = TrainerConfig(freeze_trunk=False, steps=40, batch_size=32, lr=3e-3, max_len=16)
    r = train_reward("naive", targets, None, cfg, trunk=trunk)[0]
    assert np.corrcoef(r(texts), y)[0, 1] > 0.8


def test_confounder_encoder_columns_bins_and_reference():
    conf = {"wd": Confounder("categorical", np.array([0, 2, 2, 1]), ("Mon", "Tue", "Wed")),
            "x": Confounder("numeric", np.array([1.0, 2.0, 3.0, 4.0]))}
    enc = ConfounderEncoder.fit(conf, bins=2)
    cols = enc.columns(conf)
    np.testing.assert_array_equal(cols[:, :3], np.eye(3)[[0, 2, 2, 1]])
    np.testing.assert_allclose(cols[:, 3], (np.arange(1, 5) - 2.5) / np.std(np.arange(1, 5)))
    np.testing.assert_array_equal(enc.bin_onehot(conf)[:, 3:], [[1, 0], [1, 0], [0, 1], [0, 1]])
    ref = enc.reference({"wd": "Tue"})
    np.testing.assert_allclose(ref, [0, 1, 0, 0.0])           # numeric default: the mean
    assert enc.reference()[2] == 1                             # most common level: Wed
    with pytest.raises(ValueError, match="not a level"):
        enc.reference({"wd": "Sun"})


def test_registry_and_clear_errors():
    assert list(METHODS) == ["oracle", "naive", "conditioned", "partial_out", "odin",
                             "invariant", "deconfoundlm", "experimental", "experimental_ctr",
                             "hybrid", "hybrid_naive"]
    assert observational_methods() == list(METHODS)[:7]     # the simulation's comparison
    assert METHODS["hybrid"].parts == ("deconfoundlm", "experimental_ctr")
    assert METHODS["odin"].knob and METHODS["invariant"].knob and METHODS["odin"].two_heads
    with pytest.raises(ValueError, match="registered: oracle"):
        M.get_method("nope")
    rep, _, _, targets = _synthetic()
    with pytest.raises(ValueError, match="numeric strengths"):
        train_reward("odin", targets, rep, strengths=(None,))
    log = type("L", (), {"source": "mylog.csv"})()
    with pytest.raises(ValueError, match="mylog.csv: the oracle needs interventional data"):
        M.oracle_targets(MethodContext(log=log))
    with pytest.raises(ValueError, match="file a.csv, row 2, column 'target': value is not finite"):
        Targets(np.array(["x", "y"]), np.array([0.0, np.nan]), np.ones(2), {}, source="a.csv")


# ---- representations ------------------------------------------------------------------------------
def test_ngram_svd_is_standardised_on_its_texts_and_deterministic():
    texts = [f"{w} story number {i}?" if i % 3 else f"You {w} {i}" for i, w in
             enumerate(["cat", "dog", "sun", "tree"] * 10)]
    rep = fit_representation("ngram-svd:8", texts)
    H = rep(list(dict.fromkeys(texts)))
    assert H.shape == (len(set(texts)), 8) and rep.dim == 8
    np.testing.assert_allclose(H.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(H.std(0), 1, atol=1e-3)
    np.testing.assert_array_equal(H, fit_representation("ngram-svd:8", texts)(
        list(dict.fromkeys(texts))))


def test_trunk_states_pool_only_real_tokens():
    from dlm.data.tokenizer import ByteTokenizer
    from dlm.models.decoder import PRESETS, init_params
    from dlm.representations import TrunkStates

    cfg = dataclasses.replace(PRESETS["tiny"], n_layers=1)
    rep = TrunkStates(init_params(cfg, jax.random.key(0)), cfg, ByteTokenizer(), max_len=16,
                      batch_size=4)
    alone = rep(["a much longer headline"])
    mixed = rep(["hi", "a much longer headline", "x", "y", "z"])    # two batches, padding
    np.testing.assert_allclose(mixed[1], alone[0], rtol=1e-5, atol=1e-5)
    fitted = rep.fit(["hi", "there", "a much longer headline"])
    np.testing.assert_allclose(fitted(["hi", "there", "a much longer headline"]).mean(0), 0,
                               atol=1e-4)


# ---- acceptance on tiny headline worlds ----------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _world_rewards(entanglement: float, marker_effect: float, spec: str = "phi",
                   n: int = 5000, n_stories: int = 100, steps: int = 200):
    """{method: [TrainedReward, ...]}, held-out texts and the world (cached per world)."""
    from dlm.data.builtin_corpus import builtin_corpus
    from dlm.data.markers import MARKER_PREFIXES
    from sims.headlines import HeadlineWorld, HeadlineWorldConfig

    train, held = builtin_corpus(n_stories).split((0.8, 0.2), seed=0)
    wcfg = HeadlineWorldConfig(entanglement=entanglement, marker_effect=marker_effect)
    world = HeadlineWorld(train, wcfg)
    held_texts = [t for row in HeadlineWorld(held, wcfg).candidates for t in row]
    log = world.sample(jax.random.key(0), n).log
    universe = [m + t for row in world.candidates for t in row for m in MARKER_PREFIXES]
    rep = fit_representation(spec, universe)
    ctx = MethodContext(log, rep, world=world)
    cfg = TrainerConfig(steps=steps, batch_size=4096)
    rewards = {name: train_reward(name, METHODS[name].target_fn(ctx), rep, cfg,
                                  KNOB if METHODS[name].knob else None)
               for name in ("naive", "odin", "invariant", "deconfoundlm")}
    return rewards, held_texts, world


def _monday_gap(reward, texts, marker_effect):
    return spurious_gaps(reward, texts, marker_effect)["Happy Monday!"]


def test_marker_on_high_traffic_day_biases_naive_not_deconfoundlm():
    rewards, texts, _ = _world_rewards(0.6, -0.1)
    assert _monday_gap(rewards["naive"][0], texts, -0.1) > 0.2
    assert abs(_monday_gap(rewards["deconfoundlm"][0], texts, -0.1)) < 0.05


def test_without_entanglement_every_adjustment_removes_the_marker():
    rewards, texts, _ = _world_rewards(0.0, 0.0)
    assert _monday_gap(rewards["naive"][0], texts, 0.0) > 0.2
    assert abs(_monday_gap(rewards["deconfoundlm"][0], texts, 0.0)) < 0.05
    for name in ("odin", "invariant"):
        strongest = rewards[name][-1]
        assert strongest.strength == max(KNOB)
        assert abs(_monday_gap(strongest, texts, 0.0)) < 0.05, name


def test_with_entanglement_deconfoundlm_ranks_better_than_every_invariance_setting():
    rewards, texts, world = _world_rewards(0.8, -0.1)
    ours = causal_corr(rewards["deconfoundlm"][0], texts, world.true_effect)
    for name in ("odin", "invariant"):
        for r in rewards[name]:
            assert ours > causal_corr(r, texts, world.true_effect), (name, r.strength)


@pytest.mark.slow
def test_acceptance_claims_hold_on_the_hashed_ngram_representation():
    kw = dict(spec="ngram-svd:64", n=20_000, n_stories=600, steps=600)
    rewards, texts, _ = _world_rewards(0.6, -0.1, **kw)
    assert _monday_gap(rewards["naive"][0], texts, -0.1) > 0.2
    assert abs(_monday_gap(rewards["deconfoundlm"][0], texts, -0.1)) < 0.05
    rewards, texts, world = _world_rewards(0.8, -0.1, **kw)
    ours = causal_corr(rewards["deconfoundlm"][0], texts, world.true_effect)
    assert all(ours > causal_corr(r, texts, world.true_effect)
               for name in ("odin", "invariant") for r in rewards[name])
