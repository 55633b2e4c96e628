"""Generation with a KV cache (prefill once, then jax.lax.scan), its no-cache reference,
and sequence log-probabilities for DPO / policy gradients.

Both generators draw step t's token with key fold_in(key, t) and the same filtering, so
they agree token for token (greedy or sampled) up to float rounding. Log-probs returned
are under the model's own distribution (temperature 1, no top-k/top-p), the quantity a
KL penalty or importance ratio needs, and they equal `sequence_logprobs` of the output.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from dlm.models.decoder import Decoder, DecoderConfig, init_cache


class Generation(NamedTuple):
    """tokens_BxT (pad after EOS), logprobs_BxT (0 after EOS), mask_BxT: True on generated
    tokens up to and including EOS, False once the row is done."""

    tokens: jax.Array
    logprobs: jax.Array
    mask: jax.Array


def filter_logits(logits_BxV: jax.Array, temperature, top_k: int = 0, top_p: float = 1.0):
    """Temperature, then top-k, then nucleus (top-p) filtering; removed tokens get -inf."""
    logits_BxV = logits_BxV / jnp.maximum(temperature, 1e-6)
    if top_k > 0:
        kth_Bx1 = jax.lax.top_k(logits_BxV, top_k)[0][:, -1:]
        logits_BxV = jnp.where(logits_BxV >= kth_Bx1, logits_BxV, -jnp.inf)
    if top_p < 1.0:
        sorted_BxV = jnp.sort(logits_BxV, axis=-1)[:, ::-1]
        probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
        # keep a token while the mass strictly before it is below top_p (the top one always)
        keep_BxV = (jnp.cumsum(probs_BxV, axis=-1) - probs_BxV) < top_p
        floor_Bx1 = jnp.min(jnp.where(keep_BxV, sorted_BxV, jnp.inf), axis=-1, keepdims=True)
        logits_BxV = jnp.where(logits_BxV >= floor_Bx1, logits_BxV, -jnp.inf)
    return logits_BxV


def _pick(logits_BxV, key, temperature, top_k, top_p, greedy):
    """Next token and its log-prob under the unfiltered model distribution."""
    if greedy:
        tok_B = jnp.argmax(logits_BxV, axis=-1)
    else:
        tok_B = jax.random.categorical(key, filter_logits(logits_BxV, temperature, top_k, top_p))
    lp_B = jnp.take_along_axis(jax.nn.log_softmax(logits_BxV, axis=-1), tok_B[:, None], -1)[:, 0]
    return tok_B.astype(jnp.int32), lp_B


def _emit(tok_B, lp_B, done_B, eos_id, pad_id):
    """Blank out rows that already finished; a row is done after it emits EOS."""
    out_tok = jnp.where(done_B, pad_id, tok_B)
    out_lp = jnp.where(done_B, 0.0, lp_B)
    new_done = done_B if eos_id is None else done_B | (tok_B == eos_id)
    return out_tok, out_lp, ~done_B, new_done


_STATIC = ("cfg", "max_new_tokens", "top_k", "top_p", "greedy", "eos_id", "pad_id")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _generate_kv(params, prompt_BxP, pmask_BxP, key, temperature, *, cfg, max_new_tokens, top_k,
                 top_p, greedy, eos_id, pad_id):
    model = Decoder(cfg)
    B, P = prompt_BxP.shape
    pick = lambda logits, t: _pick(logits, jax.random.fold_in(key, t), temperature,  # noqa: E731
                                   top_k, top_p, greedy)
    cache = init_cache(cfg, B, P + max_new_tokens)
    logits, cache = model.apply({"params": params}, prompt_BxP, attn_mask_BxL=pmask_BxP,
                                cache=cache)
    tok, lp, valid, done = _emit(*pick(logits[:, -1], 0), jnp.zeros(B, bool), eos_id, pad_id)

    def step(carry, t):
        cache, tok_B, done_B = carry
        logits, cache = model.apply({"params": params}, tok_B[:, None], cache=cache)
        tok_B, lp_B, valid_B, done_B = _emit(*pick(logits[:, 0], t), done_B, eos_id, pad_id)
        return (cache, tok_B, done_B), (tok_B, lp_B, valid_B)

    _, (toks, lps, valids) = jax.lax.scan(step, (cache, tok, done), jnp.arange(1, max_new_tokens))
    cat = lambda first, rest: jnp.concatenate([first[:, None], rest.T], axis=1)  # noqa: E731
    return Generation(cat(tok, toks), cat(lp, lps), cat(valid, valids))


@functools.partial(jax.jit, static_argnames=_STATIC)
def _generate_full(params, prompt_BxP, pmask_BxP, key, temperature, *, cfg, max_new_tokens,
                   top_k, top_p, greedy, eos_id, pad_id):
    model = Decoder(cfg)
    B, P = prompt_BxP.shape
    T = max_new_tokens
    buf_BxN = jnp.concatenate([prompt_BxP, jnp.full((B, T), pad_id, prompt_BxP.dtype)], axis=1)
    mask_BxN = jnp.concatenate([pmask_BxP.astype(bool), jnp.zeros((B, T), bool)], axis=1)

    def step(carry, t):
        buf, mask, done_B = carry
        logits, _ = model.apply({"params": params}, buf, attn_mask_BxL=mask)
        tok_B, lp_B = _pick(logits[:, P + t - 1], jax.random.fold_in(key, t), temperature,
                            top_k, top_p, greedy)
        tok_B, lp_B, valid_B, done_B = _emit(tok_B, lp_B, done_B, eos_id, pad_id)
        buf = buf.at[:, P + t].set(tok_B.astype(buf.dtype))
        mask = mask.at[:, P + t].set(True)
        return (buf, mask, done_B), (tok_B, lp_B, valid_B)

    _, (toks, lps, valids) = jax.lax.scan(step, (buf_BxN, mask_BxN, jnp.zeros(B, bool)),
                                          jnp.arange(T))
    return Generation(toks.T, lps.T, valids.T)


def _call(impl, params, cfg, prompt_tokens_BxP, prompt_mask_BxP, key, max_new_tokens,
          temperature, top_k, top_p, eos_id, greedy, pad_id):
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if pad_id is None:
        pad_id = 0 if eos_id is None else eos_id
    return impl(params, jnp.asarray(prompt_tokens_BxP, jnp.int32),
                jnp.asarray(prompt_mask_BxP, bool), key, jnp.float32(temperature), cfg=cfg,
                max_new_tokens=int(max_new_tokens), top_k=int(top_k), top_p=float(top_p),
                greedy=bool(greedy), eos_id=None if eos_id is None else int(eos_id),
                pad_id=int(pad_id))


def generate(params, cfg: DecoderConfig, prompt_tokens_BxP, prompt_mask_BxP, key,
             max_new_tokens: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             eos_id: int | None = None, greedy: bool = False, pad_id: int | None = None,
             ) -> Generation:
    """Continue left-padded prompts by max_new_tokens tokens with a KV cache (jit-compiled).

    Returns Generation(tokens_BxT, logprobs_BxT, mask_BxT). A row stops at eos_id (None:
    never); later slots hold pad_id (default: eos_id). Recompiles only when a static
    argument (cfg, shapes, max_new_tokens, top_k, top_p, greedy, eos_id, pad_id) changes.
    """
    return _call(_generate_kv, params, cfg, prompt_tokens_BxP, prompt_mask_BxP, key,
                 max_new_tokens, temperature, top_k, top_p, eos_id, greedy, pad_id)


def generate_nocache(params, cfg: DecoderConfig, prompt_tokens_BxP, prompt_mask_BxP, key,
                     max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
                     top_p: float = 1.0, eos_id: int | None = None, greedy: bool = False,
                     pad_id: int | None = None) -> Generation:
    """Same as `generate` but re-runs the whole prefix every step (test/benchmark reference)."""
    return _call(_generate_full, params, cfg, prompt_tokens_BxP, prompt_mask_BxP, key,
                 max_new_tokens, temperature, top_k, top_p, eos_id, greedy, pad_id)


def token_logprobs(params, cfg: DecoderConfig, tokens_BxL, attn_mask_BxL=None) -> jax.Array:
    """log p(tokens[:, t] | tokens[:, <t]) as [B, L], aligned with the tokens (column 0 is 0)."""
    logits, _ = Decoder(cfg).apply({"params": params}, tokens_BxL, attn_mask_BxL=attn_mask_BxL)
    logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    tgt = jnp.take_along_axis(logp, tokens_BxL[:, 1:, None].astype(jnp.int32), axis=-1)[..., 0]
    return jnp.pad(tgt, ((0, 0), (1, 0)))


def sequence_logprobs(params, cfg: DecoderConfig, tokens_BxL, loss_mask_BxL,
                      attn_mask_BxL=None) -> jax.Array:
    """Sum of log-probs of the tokens where loss_mask == 1 (the response, as encode_sft marks
    it), per row: [B]. Differentiable; jit it inside the caller's loss."""
    lp_BxL = token_logprobs(params, cfg, tokens_BxL, attn_mask_BxL)
    return jnp.sum(lp_BxL * loss_mask_BxL.astype(lp_BxL.dtype), axis=-1)


def continuation_batch(prompt_tokens_BxP, prompt_mask_BxP, gen: Generation):
    """Prompt + generation as one batch for `sequence_logprobs`: (tokens, loss_mask, attn_mask).

    sequence_logprobs(params, cfg, *continuation_batch(...)) equals gen.logprobs.sum(-1).
    """
    tokens = jnp.concatenate([jnp.asarray(prompt_tokens_BxP, jnp.int32), gen.tokens], axis=1)
    loss_mask = jnp.concatenate([jnp.zeros(prompt_mask_BxP.shape, jnp.float32),
                                 gen.mask.astype(jnp.float32)], axis=1)
    attn = jnp.concatenate([jnp.asarray(prompt_mask_BxP, bool), jnp.ones(gen.tokens.shape, bool)],
                           axis=1)
    return tokens, loss_mask, attn
