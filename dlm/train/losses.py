"""Loss functions: pure maps from model outputs (and targets) to (loss, metrics).

Every training method in dlm differs only by which of these it plugs into the one
generic train step (dlm.train.step). Each returns a scalar loss and a dict of scalar
metrics, so a loss_fn can be `lambda p, batch, rng: some_loss(model(p, batch), ...)`.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

Metrics = dict[str, jax.Array]


def next_token_loss(logits_BxLxV: jax.Array, tokens_BxL: jax.Array,
                    loss_mask_BxL: jax.Array) -> tuple[jax.Array, Metrics]:
    """Shifted cross-entropy, averaged over the target tokens the mask selects.

        loss = sum_{b,t} m[b,t+1] * -log softmax(logits[b,t])[tokens[b,t+1]] / sum m[b,t+1]

    `loss_mask_BxL` is aligned with `tokens_BxL`: m[b,t] = 1 when token t is a target
    (e.g. a response byte), so position 0 is never a target. Metrics carry the summed
    nats and the target count, so bits per byte = nats_sum / ln 2 / n_bytes can be
    aggregated exactly over many batches (dlm.data.batching.bits_per_byte).
    """
    logits = logits_BxLxV[:, :-1].astype(jnp.float32)
    targets = tokens_BxL[:, 1:]
    mask = loss_mask_BxL[:, 1:].astype(jnp.float32)
    logp_BxLm1xV = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp_BxLm1xV, targets[..., None], axis=-1)[..., 0]
    nats_sum = jnp.sum(nll * mask)
    count = jnp.sum(mask)
    loss = nats_sum / jnp.maximum(count, 1.0)
    return loss, {"nats_sum": nats_sum, "n_targets": count}


def _weighted_mean(x_B: jax.Array, weight_B: jax.Array | None) -> jax.Array:
    if weight_B is None:
        return jnp.mean(x_B)
    w = weight_B.astype(jnp.float32)
    return jnp.sum(w * x_B) / jnp.maximum(jnp.sum(w), 1e-12)


def reward_regression(pred_B: jax.Array, target_B: jax.Array,
                      weight_B: jax.Array | None = None) -> tuple[jax.Array, Metrics]:
    """Weighted mean squared error: sum_i w_i (pred_i - y_i)^2 / sum_i w_i.

    Dividing by sum w makes the loss invariant to the weights' scale; with no weights it
    is the plain MSE.
    """
    sq_B = jnp.square(pred_B.astype(jnp.float32) - target_B.astype(jnp.float32))
    loss = _weighted_mean(sq_B, weight_B)
    return loss, {"mse": loss}


def binomial_logit_weights(successes, trials) -> np.ndarray:
    """Inverse variance of the empirical logit, normalised to mean 1.

    Var(logit p_hat) ~= 1/(s + 1/2) + 1/(n - s + 1/2), whose inverse is n' p' (1 - p')
    with the half-count corrected n' = n + 1, p' = (s + 1/2) / (n + 1). Units with many
    impressions (precise rates) get more weight in a regression on the logit scale.
    """
    s = np.asarray(successes, np.float64)
    n = np.asarray(trials, np.float64)
    if np.any(n < 0) or np.any(s < 0) or np.any(s > n):
        raise ValueError("binomial_logit_weights: need 0 <= successes <= trials")
    w = (s + 0.5) * (n - s + 0.5) / (n + 1.0)
    return w / np.mean(w)


def gaussian_nll(mean_B: jax.Array, log_var_B: jax.Array, target_B: jax.Array,
                 weight_B: jax.Array | None = None) -> tuple[jax.Array, Metrics]:
    """Weighted Gaussian negative log-likelihood with a predicted variance:

        nll_i = 1/2 (log 2 pi + log_var_i + (y_i - mean_i)^2 / exp(log_var_i))

    averaged with weights as in `reward_regression`. For heteroscedastic outcomes.
    """
    err = target_B.astype(jnp.float32) - mean_B.astype(jnp.float32)
    nll_B = 0.5 * (math.log(2 * math.pi) + log_var_B + jnp.square(err) * jnp.exp(-log_var_B))
    loss = _weighted_mean(nll_B, weight_B)
    return loss, {"nll": loss, "mse": _weighted_mean(jnp.square(err), weight_B)}


def bradley_terry(r_chosen_B: jax.Array, r_rejected_B: jax.Array) -> tuple[jax.Array, Metrics]:
    """Pairwise preference loss: -mean log sigmoid(r_chosen - r_rejected)."""
    margin_B = (r_chosen_B - r_rejected_B).astype(jnp.float32)
    loss = -jnp.mean(jax.nn.log_sigmoid(margin_B))
    return loss, {"pair_accuracy": jnp.mean(margin_B > 0), "margin": jnp.mean(margin_B)}


def dpo_loss(logp_chosen_B: jax.Array, logp_rejected_B: jax.Array,
             ref_logp_chosen_B: jax.Array, ref_logp_rejected_B: jax.Array,
             beta: float) -> tuple[jax.Array, Metrics]:
    """Direct preference optimisation (Rafailov et al. 2023):

        loss = -mean log sigmoid(beta * ((pc - ref_c) - (pr - ref_r)))

    with sequence log-probabilities under the policy (p) and the frozen reference (ref).
    The implicit rewards beta * (p - ref) give the reward accuracy and margin metrics.
    """
    reward_c = beta * (logp_chosen_B - ref_logp_chosen_B)
    reward_r = beta * (logp_rejected_B - ref_logp_rejected_B)
    margin_B = (reward_c - reward_r).astype(jnp.float32)
    loss = -jnp.mean(jax.nn.log_sigmoid(margin_B))
    return loss, {"reward_accuracy": jnp.mean(margin_B > 0), "reward_margin": jnp.mean(margin_B),
                  "reward_chosen": jnp.mean(reward_c), "reward_rejected": jnp.mean(reward_r)}


def reinforce_loo(logp_BxK: jax.Array, reward_BxK: jax.Array, kl_BxK: jax.Array,
                  kl_coef: float) -> tuple[jax.Array, Metrics]:
    """KL-regularised REINFORCE with a leave-one-out baseline (K samples per prompt).

        r_ik   = reward_ik - kl_coef * kl_ik
        b_ik   = (sum_j r_ij - r_ik) / (K - 1)      (mean of the other K-1 samples)
        loss   = -mean_ik stopgrad(r_ik - b_ik) * logp_ik

    The baseline uses only the other samples of the same prompt, so the gradient stays
    unbiased while its variance drops (Kool et al. 2019; Ahmadian et al. 2024).
    """
    k = logp_BxK.shape[1]
    if k < 2:
        raise ValueError(f"reinforce_loo needs K >= 2 samples per prompt, got K={k}")
    r_BxK = (reward_BxK - kl_coef * kl_BxK).astype(jnp.float32)
    baseline_BxK = (jnp.sum(r_BxK, axis=1, keepdims=True) - r_BxK) / (k - 1)
    adv_BxK = jax.lax.stop_gradient(r_BxK - baseline_BxK)
    loss = -jnp.mean(adv_BxK * logp_BxK)
    return loss, {"reward": jnp.mean(reward_BxK), "kl": jnp.mean(kl_BxK),
                  "reg_reward": jnp.mean(r_BxK), "adv_abs": jnp.mean(jnp.abs(adv_BxK))}
