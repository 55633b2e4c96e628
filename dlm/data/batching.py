"""Turning text into fixed-shape numpy batches for the models (JAX never sees strings).

Layouts (one format everywhere, so an SFT decoder, its reward trunk and the sampler agree):
  SFT:        BOS prompt [SEP] response EOS PAD...    (right-padded)
  generation: PAD... BOS prompt [SEP]                 (left-padded, the model continues it)
  reward:     BOS text EOS PAD...                     (right-padded, head reads the last token)
[SEP] appears only when the tokenizer has a `sep_id`. A tokenizer with a
`prompt_ids(prompt, budget, cut)` method (a chat model's: dlm.policy.lora_sft) builds the
"BOS prompt" part itself, e.g. as a chat turn truncated inside the user text.
"""
from __future__ import annotations

import functools
import math
from typing import Literal, Sequence

import numpy as np

from dlm.data.tokenizer import Tokenizer

Side = Literal["left", "right"]


def _sep(tok: Tokenizer) -> list[int]:
    sep = getattr(tok, "sep_id", None)
    return [] if sep is None else [int(sep)]


def _clip(ids: list[int], n: int, cut: Side) -> list[int]:
    """Keep at most n ids, cutting from the `cut` side."""
    n = max(n, 0)
    if len(ids) <= n:
        return ids
    return ids[len(ids) - n:] if cut == "left" else ids[:n]


def _check_texts(texts: Sequence[str], what: str) -> None:
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{what}[{i}] must be str, got {type(t).__name__}: {t!r}")


def _prompt_ids(tok: Tokenizer, prompt: str, budget: int, cut: Side) -> list[int]:
    """BOS prompt [SEP] in at most `budget` ids; the prompt text gives way first."""
    custom = getattr(tok, "prompt_ids", None)
    if custom is not None:
        return list(custom(prompt, budget, cut))
    frame = 1 + len(_sep(tok))
    body = _clip(tok.encode(prompt), budget - frame, cut)
    return [tok.bos_id, *body, *_sep(tok)]


def encode_sft(tok: Tokenizer, prompts: Sequence[str], responses: Sequence[str], max_len: int,
               max_prompt_len: int | None = None, truncate_prompt: Side = "right",
               ) -> tuple[np.ndarray, np.ndarray]:
    """Prompt/response pairs -> (tokens_BxL int32, loss_mask_BxL float32).

    loss_mask marks the *targets* (response tokens and EOS): a loss predicts tokens[:, t]
    from logits[:, t-1] where loss_mask[:, t] == 1. The response always fits: it is cut
    only when it alone exceeds max_len (then it keeps its start and gets no EOS, since the
    text did not end there); the prompt text takes what is left, at most max_prompt_len ids
    including BOS/SEP, cut from `truncate_prompt` ("right" keeps a lede's opening, "left"
    keeps the words nearest the response).
    """
    if len(prompts) != len(responses):
        raise ValueError(f"encode_sft: {len(prompts)} prompts but {len(responses)} responses")
    _check_texts(prompts, "prompts")
    _check_texts(responses, "responses")
    frame = 1 + len(_sep(tok))
    if max_len < frame + 2:
        raise ValueError(f"encode_sft: max_len={max_len} leaves no room for a response")
    max_prompt_len = max_len if max_prompt_len is None else max_prompt_len
    tokens = np.full((len(prompts), max_len), tok.pad_id, np.int32)
    mask = np.zeros((len(prompts), max_len), np.float32)
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        resp = tok.encode(response)
        if len(resp) + 1 > max_len - frame:  # too long even with an empty prompt
            resp = resp[:max_len - frame]
        else:
            resp = resp + [tok.eos_id]
        head = _prompt_ids(tok, prompt, min(max_prompt_len, max_len - len(resp)), truncate_prompt)
        row = head + resp
        tokens[i, :len(row)] = row
        mask[i, len(head):len(row)] = 1.0
    return tokens, mask


def encode_texts(tok: Tokenizer, texts: Sequence[str], max_len: int,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Texts for a reward model -> (tokens_BxL int32 right-padded, lengths_B int32).

    Each row is BOS text EOS; a too-long text is cut at the right and keeps its EOS, so the
    reward head (at index lengths-1) always reads an EOS after the content.
    """
    _check_texts(texts, "texts")
    if max_len < 3:
        raise ValueError(f"encode_texts: max_len={max_len} < 3 (BOS, one token, EOS)")
    tokens = np.full((len(texts), max_len), tok.pad_id, np.int32)
    lengths = np.zeros(len(texts), np.int32)
    for i, text in enumerate(texts):
        row = [tok.bos_id, *_clip(tok.encode(text), max_len - 2, "right"), tok.eos_id]
        tokens[i, :len(row)] = row
        lengths[i] = len(row)
    return tokens, lengths


def encode_prompts(tok: Tokenizer, prompts: Sequence[str], max_len: int,
                   truncate_prompt: Side = "right") -> tuple[np.ndarray, np.ndarray]:
    """Prompts for generation -> (tokens_BxP int32 LEFT-padded, mask_BxP bool).

    Left padding puts every row's last prompt token in the final column, so one decoding
    step serves the whole batch; the mask tells the model which columns are real. Rows are
    BOS prompt [SEP], the same prefix encode_sft trains on.
    """
    _check_texts(prompts, "prompts")
    if max_len < 1 + len(_sep(tok)):
        raise ValueError(f"encode_prompts: max_len={max_len} cannot hold BOS/SEP")
    tokens = np.full((len(prompts), max_len), tok.pad_id, np.int32)
    mask = np.zeros((len(prompts), max_len), bool)
    for i, prompt in enumerate(prompts):
        row = _prompt_ids(tok, prompt, max_len, truncate_prompt)
        tokens[i, max_len - len(row):] = row
        mask[i, max_len - len(row):] = True
    return tokens, mask


def target_bytes(tok: Tokenizer, tokens_BxL: np.ndarray, loss_mask_BxL: np.ndarray) -> int:
    """UTF-8 bytes of the text under the loss mask (specials such as EOS count 0 bytes)."""
    tokens_BxL, loss_mask_BxL = np.asarray(tokens_BxL), np.asarray(loss_mask_BxL)
    total = 0
    for ids, m in zip(tokens_BxL, loss_mask_BxL):
        total += len(tok.decode(ids[m > 0].tolist()).encode("utf-8"))
    return total


def bits_per_byte(nll_nats: float, n_bytes: int) -> float:
    """Summed next-token loss (nats) per UTF-8 byte of target text, in bits.

    Tokenizer-independent, so byte and BPE models are comparable: nats / ln 2 / bytes.
    """
    if n_bytes <= 0:
        raise ValueError(f"bits_per_byte: n_bytes must be positive, got {n_bytes}")
    return float(nll_nats) / math.log(2.0) / n_bytes


# ---- training batches ---------------------------------------------------------------
def prompt_weighted_mask(tokens_NxL: np.ndarray, mask_NxL: np.ndarray, pad_id: int,
                         weight: float) -> np.ndarray:
    """The training loss weights: 1 on response targets, `weight` on the prompt's tokens
    after BOS (predicting the lede is language-model signal), 0 on BOS and padding.

    next_token_loss averages nll with these weights, so weight=0 is exactly the
    prompt-masked SFT loss."""
    if weight == 0:
        return mask_NxL
    prompt = (tokens_NxL != pad_id) & (mask_NxL == 0)
    prompt[:, 0] = False  # BOS is never a target
    return (mask_NxL + weight * prompt).astype(np.float32)


def index_stream(n: int, batch_size: int, seed: int):
    """rows_for_step(s): rows s*B .. s*B+B-1 of a stream of per-epoch permutations of
    range(n), a pure function of (seed, s), so a resumed run sees the same batches."""
    if n < 1:
        raise ValueError("index_stream: no rows to draw batches from")

    @functools.lru_cache(maxsize=4)
    def perm(epoch: int) -> np.ndarray:
        return np.random.default_rng([seed, epoch]).permutation(n)

    def rows_for_step(s: int) -> np.ndarray:
        pos = s * batch_size + np.arange(batch_size)
        return np.array([perm(int(p // n))[p % n] for p in pos])

    return rows_for_step


def make_batch_for_step(tokens_NxL: np.ndarray, mask_NxL: np.ndarray, batch_size: int, seed: int):
    """batch_for_step(s) -> {"tokens", "loss_mask"} over `index_stream` rows."""
    rows_for_step = index_stream(len(tokens_NxL), batch_size, seed)

    def batch_for_step(s: int) -> dict:
        idx = rows_for_step(s)
        return {"tokens": tokens_NxL[idx], "loss_mask": mask_NxL[idx]}

    return batch_for_step
