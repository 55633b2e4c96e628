"""Each loss against a value computed by hand in numpy on small numbers."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm.train import losses


def _log_sigmoid(x):
    return -np.log1p(np.exp(-np.asarray(x, np.float64)))


def test_next_token_loss_is_shifted_masked_mean():
    # B=1, L=3, V=2: logits at t predict token t+1; only the last target is masked in.
    logits = np.array([[[0.0, 0.0], [2.0, 0.0], [5.0, 5.0]]], np.float32)
    tokens = np.array([[1, 1, 0]])
    mask = np.array([[0, 0, 1]])
    # target token 0 predicted from logits[1] = (2, 0): -log(e^2 / (e^2 + 1))
    want = -math.log(math.exp(2) / (math.exp(2) + 1))
    loss, m = losses.next_token_loss(jnp.asarray(logits), jnp.asarray(tokens), jnp.asarray(mask))
    assert float(loss) == pytest.approx(want, rel=1e-6)
    assert float(m["n_targets"]) == 1 and float(m["nats_sum"]) == pytest.approx(want, rel=1e-6)
    # all targets in: mean of ln 2 (from uniform logits[0] -> token 1) and the value above
    loss2, m2 = losses.next_token_loss(jnp.asarray(logits), jnp.asarray(tokens), jnp.ones((1, 3)))
    assert float(loss2) == pytest.approx((math.log(2) + want) / 2, rel=1e-6)


def test_next_token_loss_empty_mask_is_zero_not_nan():
    loss, _ = losses.next_token_loss(jnp.zeros((2, 4, 3)), jnp.zeros((2, 4), jnp.int32),
                                     jnp.zeros((2, 4)))
    assert float(loss) == 0.0


def test_reward_regression_weighted_mse():
    pred, target, w = np.array([1.0, 2.0, 4.0]), np.array([0.0, 2.0, 1.0]), np.array([1.0, 2.0, 3.0])
    loss, _ = losses.reward_regression(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(w))
    assert float(loss) == pytest.approx((1 * 1 + 2 * 0 + 3 * 9) / 6)
    loss_u, _ = losses.reward_regression(jnp.asarray(pred), jnp.asarray(target))
    assert float(loss_u) == pytest.approx((1 + 0 + 9) / 3)


def test_binomial_logit_weights_are_inverse_variance_mean_one():
    s, n = np.array([1.0, 10.0, 50.0]), np.array([10.0, 100.0, 100.0])
    var = 1 / (s + 0.5) + 1 / (n - s + 0.5)       # delta-method variance of the logit
    want = (1 / var) / np.mean(1 / var)
    got = losses.binomial_logit_weights(s, n)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got.mean() == pytest.approx(1.0)
    assert got[2] > got[1] > got[0]                # more impressions, nearer 1/2: more weight
    with pytest.raises(ValueError, match="successes <= trials"):
        losses.binomial_logit_weights([5.0], [3.0])


def test_gaussian_nll():
    mean, log_var, y = np.array([0.0, 1.0]), np.array([0.0, math.log(4.0)]), np.array([1.0, 3.0])
    want = np.mean(0.5 * (math.log(2 * math.pi) + log_var + (y - mean) ** 2 / np.exp(log_var)))
    loss, _ = losses.gaussian_nll(jnp.asarray(mean), jnp.asarray(log_var), jnp.asarray(y))
    assert float(loss) == pytest.approx(want, rel=1e-6)


def test_bradley_terry():
    rc, rr = np.array([2.0, 0.0]), np.array([1.0, 1.0])
    loss, m = losses.bradley_terry(jnp.asarray(rc), jnp.asarray(rr))
    assert float(loss) == pytest.approx(-np.mean(_log_sigmoid(rc - rr)), rel=1e-6)
    assert float(m["pair_accuracy"]) == 0.5


def test_dpo_loss_and_reward_metrics():
    pc, pr = np.array([-3.0, -5.0]), np.array([-4.0, -2.0])
    rc, rr = np.array([-3.5, -4.0]), np.array([-3.5, -3.0])
    beta = 0.5
    z = beta * ((pc - rc) - (pr - rr))             # [0.5*(0.5+0.5), 0.5*(-1-1)] = [0.5, -1]
    loss, m = losses.dpo_loss(*(jnp.asarray(a) for a in (pc, pr, rc, rr)), beta=beta)
    assert float(loss) == pytest.approx(-np.mean(_log_sigmoid(z)), rel=1e-6)
    assert float(m["reward_accuracy"]) == 0.5
    assert float(m["reward_margin"]) == pytest.approx(np.mean(z))


def test_reinforce_loo_value_and_gradient():
    logp = np.array([[-1.0, -2.0, -3.0]])
    reward = np.array([[1.0, 2.0, 6.0]])
    kl = np.array([[0.0, 2.0, 2.0]])
    kl_coef = 0.5
    r = reward - kl_coef * kl                      # [1, 1, 5]
    baseline = np.array([[(1 + 5) / 2, (1 + 5) / 2, (1 + 1) / 2]])
    adv = r - baseline                             # [-2, -2, 4]
    loss, m = losses.reinforce_loo(jnp.asarray(logp), jnp.asarray(reward), jnp.asarray(kl), kl_coef)
    assert float(loss) == pytest.approx(-np.mean(adv * logp))
    # the advantage is a constant: d loss / d logp = -adv / (B K)
    g = jax.grad(lambda lp: losses.reinforce_loo(lp, jnp.asarray(reward), jnp.asarray(kl),
                                                 kl_coef)[0])(jnp.asarray(logp))
    np.testing.assert_allclose(np.asarray(g), -adv / 3, rtol=1e-6)
    with pytest.raises(ValueError, match="K >= 2"):
        losses.reinforce_loo(jnp.zeros((2, 1)), jnp.zeros((2, 1)), jnp.zeros((2, 1)), 0.1)
