"""dlm.rewards on grouped randomised logs: the experimental methods' targets and pairwise
loss by hand, fit_scorer on the linear and trunk backends, and the step loop they share."""
import math

import numpy as np
import pytest

from dlm.data.log import Confounder, ObservationalLog
from dlm.realdata import pairs as P
from dlm.rewards import (METHODS, MethodContext, fit_scorer, observational_methods,
                         pairwise_loss, regression_loss)
from dlm.representations import fit_representation
from dlm.rewards.linear import LinearBackend


def grouped_log(group, text, clicks, views=None):
    n = len(group)
    views = np.full(n, 100.0) if views is None else np.asarray(views, float)
    return ObservationalLog(
        content=np.array(text, dtype=object),
        confounders={"week": Confounder("time", np.zeros(n, np.int32), ("0", "1"))},
        successes=np.asarray(clicks, float), trials=views,
        group=np.asarray(group, np.int32), group_labels=tuple(f"t{i}" for i in range(max(group) + 1)))


# group 0: a 30%, b 10%, c 20%; group 1: a 5%, d 50%, e 5% (ties with a: no pair)
TWO_GROUPS = grouped_log([0, 0, 0, 1, 1, 1], ["a", "b", "c", "a", "d", "e"],
                         [30, 10, 20, 5, 50, 5])


def test_experimental_pairwise_loss_on_a_two_group_log_by_hand():
    targets = METHODS["experimental"].target_fn(MethodContext(TWO_GROUPS, experiment=TWO_GROUPS))
    win, lose = targets.pairs
    assert sorted(zip(win.tolist(), lose.tolist())) == [(0, 1), (0, 2), (2, 1), (4, 3), (4, 5)]
    scores = np.array([1.0, -0.5, 0.2, 0.3, 0.0, -0.1])
    # s_win - s_lose: 1.5, 0.8, 0.7, -0.3, 0.1 -> mean of log(1 + exp(-d))
    want = (0.2014132780 + 0.3711006659 + 0.4031860489 + 0.8543552445 + 0.6443966601) / 5
    assert pairwise_loss(scores, targets) == pytest.approx(want, abs=1e-9)
    assert want == pytest.approx(np.mean([math.log1p(math.exp(-d))
                                          for d in (1.5, 0.8, 0.7, -0.3, 0.1)]), abs=1e-9)
    with pytest.raises(ValueError, match="no pairs"):
        pairwise_loss(scores, METHODS["naive"].target_fn(MethodContext(TWO_GROUPS)))


def test_experimental_ctr_targets_are_within_group_centred_and_drop_singletons():
    log = grouped_log([0, 0, 1, 2, 2], ["a", "b", "c", "d", "e"], [30, 10, 20, 5, 50])
    val = np.array([False, False, False, True, True])
    t = METHODS["experimental_ctr"].target_fn(MethodContext(log, experiment=log,
                                                            experiment_val=val))
    assert t.content.tolist() == ["a", "b", "d", "e"] and t.val.tolist() == [False, False, True, True]
    y, w = log.logit_outcome(), t.weight
    for rows, idx in (([0, 1], [0, 1]), ([3, 4], [2, 3])):      # by hand: y - weighted mean
        mean = np.sum(w[idx] * y[rows]) / np.sum(w[idx])
        np.testing.assert_allclose(t.target[idx], y[rows] - mean, atol=1e-12)
    assert regression_loss(t.target, t) == 0.0


def test_experimental_methods_need_the_grouped_log_and_the_simulation_leaves_them_out():
    with pytest.raises(ValueError, match="MethodContext.experiment"):
        METHODS["experimental"].target_fn(MethodContext(TWO_GROUPS))
    obs = observational_methods()
    assert "experimental" not in obs and "experimental_ctr" not in obs
    assert {"naive", "oracle", "deconfoundlm"} <= set(obs)


def test_fit_scorer_on_the_linear_backend_learns_the_randomised_preference():
    rng = np.random.default_rng(0)
    words = ["cats", "dogs", "sing", "play", "today", "people", "boats", "maps"]
    base = [" ".join(rng.choice(words, 3)) + f" {i}" for i in range(60)]
    # every group: the base text and base + " wow" (the causal feature, +0.5 logit)
    text = [t for b in base for t in (b, b + " wow")]
    p = 1 / (1 + np.exp(-(-2.0 + 0.5 * np.tile([0, 1], 60))))
    log = grouped_log(np.repeat(np.arange(60), 2).tolist(), text, np.round(1e4 * p), np.full(120, 1e4))
    val = np.repeat(np.arange(60) >= 50, 2)
    hist = []
    backend = LinearBackend(fit_representation("ngram:256:sparse", text), (1e-3, 1e-1), hist, "ngram")
    ctx = MethodContext(log, experiment=log, experiment_val=val)
    for method in ("experimental", "experimental_ctr"):
        score = fit_scorer(method, METHODS[method].target_fn(ctx), backend, name=method)
        new = ["fish learn songs", "goats cook hats"]
        assert (score([t + " wow" for t in new]) > score(new)).all(), method
    assert {h["method"] for h in hist} == {"experimental", "experimental_ctr"}   # l2 picked


def test_trunk_backend_learns_a_preference_from_pairs():
    from dlm.rewards.trunk import TrunkBackend, TrunkConfig

    rng = np.random.default_rng(0)
    base = ["".join(rng.choice(list("abcdefgh"), 6)) for _ in range(200)]
    win, lose = np.array([b + "!!" for b in base]), np.array(base)
    hist = []
    backend = TrunkBackend(TrunkConfig(d_model=16, d_ff=32, max_len=16, steps=60, batch_size=32,
                                       lr=1e-2, eval_every=20), history=hist)
    score = backend.compare("experimental", win, lose, np.arange(200) >= 160)
    assert P.pair_auc(score([b + "!!" for b in base[:40]]), score(base[:40])) > 0.95
    assert [h["step"] for h in hist] == [20, 40, 60] and hist[-1]["val_loss"] < 0.69


def test_step_loop_logs_on_schedule_and_stops_on_a_non_finite_loss():
    import jax.numpy as jnp

    from dlm.train.loop import NonFiniteLossError, step_loop

    def step(x, batch, rng):                       # the loss becomes nan at the 4th step
        return x + 1, {"loss": jnp.where(x + 1 >= 4, jnp.nan, 1.0 / (x + 1))}
    seen = []
    out = step_loop(0, step, lambda s, x: None, 3, lambda s: None, log_every=2,
                    on_log=lambda done, x, m: seen.append((done, x, m["loss"])))
    assert out == 3 and seen == [(2, 2, 0.5), (3, 3, pytest.approx(1 / 3))]
    with pytest.raises(NonFiniteLossError, match="step 4"):
        step_loop(0, step, lambda s, x: None, 6, lambda s: None, log_every=5, check_every=1)


@pytest.mark.slow
def test_frozen_smollm2_states_learn_a_preference():
    from dlm.models.pretrained import is_available

    if not is_available("smollm2-135m"):
        pytest.skip("smollm2-135m is not installed (see dlm/models/pretrained.py)")
    rng = np.random.default_rng(0)
    words = ["cats", "dogs", "sing", "play", "today", "people", "this", "will"]
    base = [" ".join(rng.choice(words, 5)) for _ in range(64)]
    featurise = fit_representation("llm:smollm2-135m", [], llm_batch=32)
    X = featurise(base[:3] + ["a much longer headline " * 4])     # two length buckets
    assert X.shape == (4, 576) and np.isfinite(X).all()
    np.testing.assert_allclose(featurise(base[:1])[0], X[0], rtol=1e-5)  # cached, same
    score = LinearBackend(featurise, (1e-3, 1e-2)).compare(
        "experimental", np.array([b + "!" for b in base[:48]]), np.array(base[:48]),
        np.arange(48) >= 40)
    assert P.pair_auc(score([b + "!" for b in base[48:]]), score(base[48:])) > 0.9


def test_train_reward_fits_the_experimental_pairwise_loss_on_a_frozen_representation():
    from dlm.rewards import TrainerConfig, train_reward

    # features: [causal, noise]; every group pits x against x + the causal feature
    rng = np.random.default_rng(0)
    n = 40
    text = [t for i in range(n) for t in (f"b{i}", f"w{i}")]
    feats = {t: np.array([t[0] == "w", rng.normal()], np.float32) for t in text}
    clicks = np.tile([10.0, 30.0], n)                   # the "w" arm wins every group
    log = grouped_log(np.repeat(np.arange(n), 2).tolist(), text, clicks)
    targets = METHODS["experimental"].target_fn(MethodContext(log, experiment=log))
    assert len(targets.pairs[0]) == n
    hist = []
    (reward,) = train_reward("experimental", targets, lambda ts: np.stack([feats[t] for t in ts]),
                             TrainerConfig(steps=60, batch_size=16, lr=5e-2, log_every=20),
                             history=hist)
    s = reward(text)
    assert pairwise_loss(s, targets) < 0.5 * math.log(2)   # from log 2 at the start
    assert hist[-1]["pair_accuracy"] == 1.0 and [h["step"] for h in hist] == [20, 40, 60]
    with pytest.raises(ValueError, match="needs the Targets' pairs"):
        train_reward("experimental", METHODS["naive"].target_fn(MethodContext(log)),
                     lambda ts: np.stack([feats[t] for t in ts]))
