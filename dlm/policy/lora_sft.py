"""LoRA SFT of a pretrained chat LLM (SFTConfig.model = "smollm2-135m"): the base stays
frozen, only low-rank adapters train and are checkpointed, and the SFT policy handed on
holds the MERGED parameters (a plain decoder tree), so sample_pool, DPO, best-of-n,
REINFORCE and reward trunks use it exactly like a from-scratch SFT policy.

Prompts are one-turn chat prompts: `ChatPromptTokenizer` wraps the model's BPE tokenizer
and gives batching the prompt ids (system message, the lede as the user turn cut to
`max_user_tokens` and the room left, then the assistant header), so every consumer that
encodes a lede through dlm.data.batching formats it the way SFT trained on it.
"""
from __future__ import annotations

import pathlib
from typing import Any, Iterable

import jax
import numpy as np

from dlm.models import lora, pretrained

LORA_TARGETS = lora.ALL_LINEAR


def is_pretrained(model: str) -> bool:
    """Whether an SFTConfig.model names a pretrained LLM (LoRA SFT) rather than a preset."""
    return model in pretrained.MODELS and model != pretrained.SCRATCH


class ChatPromptTokenizer:
    """A chat model's tokenizer whose prompts become chat turns (the Tokenizer protocol
    plus `prompt_ids`, which dlm.data.batching uses for every prompt it encodes)."""

    sep_id = None

    def __init__(self, base, system: str | None, max_user_tokens: int):
        if not getattr(base, "chatml", False):
            raise ValueError(f"{base!r} has no chat template; LoRA SFT needs a chat model")
        self.base, self.system, self.max_user_tokens = base, system or None, max_user_tokens
        self.vocab_size, self.pad_id = base.vocab_size, base.pad_id
        self.bos_id, self.eos_id = base.bos_id, base.eos_id
        self.frame = len(self._ids([]))   # BOS + template ids around an empty user turn

    def encode(self, text: str) -> list[int]:
        return self.base.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        return self.base.decode(ids)

    def is_special(self, token_id: int) -> bool:
        return self.base.is_special(token_id)

    def _ids(self, user_ids: list[int]) -> list[int]:
        user = self.base.decode(user_ids, skip_special=False)
        return [self.bos_id, *self.base.encode(self.base.chat_prompt(user, self.system))]

    def prompt_ids(self, prompt: str, budget: int, cut: str = "right") -> list[int]:
        """BOS + the chat prompt of `prompt` in at most `budget` ids: the user text keeps
        at most max_user_tokens tokens (its start, or its end for cut="left") and gives
        way first; the template is never cut."""
        room = min(self.max_user_tokens, budget - self.frame)
        if room < 0:
            raise ValueError(f"a prompt budget of {budget} ids cannot hold the chat template "
                             f"({self.frame} ids); raise max_prompt_len / max_len")
        user = self.base.encode(prompt)
        user = user[:room] if cut == "right" else user[max(len(user) - room, 0):]
        ids = self._ids(user)
        while len(ids) > budget and user:   # re-encoding may merge differently: trim more
            user = user[:-1] if cut == "right" else user[1:]
            ids = self._ids(user)
        return ids

    def __repr__(self) -> str:
        return (f"ChatPromptTokenizer({self.base!r}, system={self.system!r}, "
                f"max_user_tokens={self.max_user_tokens})")


def lora_config(cfg) -> lora.LoraConfig:
    return lora.LoraConfig(rank=cfg.lora_rank, alpha=cfg.lora_alpha, targets=LORA_TARGETS)


def load_base(cfg) -> tuple[Any, Any, ChatPromptTokenizer]:
    """(decoder config, frozen base params, chat tokenizer) of cfg.model; ModelNotAvailable
    (naming --model) when the model's files are not installed."""
    try:
        loaded = pretrained.load_model(cfg.model, dtype=cfg.dtype)
    except pretrained.ModelNotAvailable as err:
        raise pretrained.ModelNotAvailable(f"--model {cfg.model}: {err}") from None
    tok = ChatPromptTokenizer(loaded.tokenizer, cfg.chat_system, cfg.max_user_tokens)
    return loaded.cfg, loaded.params, tok


def setup(cfg, base_loss_fn):
    """What train_sft needs for LoRA SFT: (tokenizer, model_cfg, initial trainable tree,
    loss over the trainable tree, the frozen base (the loss's jit argument, see
    lora.lora_loss), trainable -> merged params, description)."""
    model_cfg, base, tok = load_base(cfg)
    lcfg = lora_config(cfg)
    trainable = lora.init_trainable(base, lcfg, jax.random.key(cfg.seed))
    loss_fn = lora.lora_loss(base_loss_fn(model_cfg), lcfg)
    n_base = int(sum(x.size for x in jax.tree.leaves(base)))
    describe = (f"{cfg.model} ({n_base:,} frozen params; LoRA rank {cfg.lora_rank}: "
                f"{lora.count(trainable):,} trained)")
    return tok, model_cfg, trainable, loss_fn, base, lambda t: merged(base, t, lcfg), describe


def merged(base, trainable, lcfg) -> dict:
    """The plain decoder parameters (adapters merged into the base), as numpy arrays."""
    return jax.tree.map(np.asarray, jax.jit(lora.full_params, static_argnums=2)(
        base, trainable, lcfg))


def load_policy(directory: pathlib.Path, cfg, restore_params):
    """(merged params, model_cfg, tokenizer) of a finished LoRA SFT run: the base is
    reloaded and the checkpointed adapters merged into it."""
    model_cfg, base, tok = load_base(cfg)
    trainable = restore_params()
    if lora.LORA_KEY not in trainable:
        raise FileNotFoundError(f"{directory / 'checkpoints'}: no LoRA adapters in the "
                                f"checkpoint (top level: {sorted(trainable)})")
    return merged(base, trainable, lora_config(cfg)), model_cfg, tok
