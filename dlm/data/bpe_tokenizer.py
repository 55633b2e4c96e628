"""Byte-level BPE tokenizer read from GGUF metadata (e.g. SmolLM2's), plus chat formatting.

Implements the `Tokenizer` protocol of dlm.data.tokenizer with the `tokenizers` package
built from the GGUF fields tokenizer.ggml.{tokens, merges, token_type, pre}. Control
tokens (type 3) are specials: they are matched whole in the input text and skipped by
`decode`.

For ChatML chat models (the template uses <|im_start|>/<|im_end|>), bos_id is
<|im_start|> and eos_id is <|im_end|>, the token that ends an assistant turn. Then
batching's layouts (BOS prompt response EOS) are chat turns when the prompt text is
`chat_prompt(...)`: BOS + encode(chat_prompt(user)) == encode(format_chat(user turn)).
"""
from __future__ import annotations

import pathlib
import re
from typing import Any, Iterable, Mapping, Sequence

CONTROL = 3  # GGUF token type of control tokens (llama.cpp's LLAMA_TOKEN_TYPE_CONTROL)
_PRE_TOKENIZERS = ("smollm", "gpt2", "default")
_IM_START, _IM_END = "<|im_start|>", "<|im_end|>"
_META_KEYS = ("tokens", "merges", "token_types", "pre", "bos_id", "eos_id", "pad_id",
              "chat_template")

Message = Mapping[str, str] | tuple[str, str]


def gguf_tokenizer_metadata(reader) -> dict[str, Any]:
    """The tokenizer fields of a GGUF file as a plain JSON-able dict (what `from_metadata`
    takes), so a cache can rebuild the tokenizer without the GGUF file."""
    from dlm.data.gguf_file import gguf_field

    model = gguf_field(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(f"{reader.data.filename}: tokenizer model {model!r} is not supported "
                         "(only byte-level BPE, 'gpt2')")
    tokens = list(gguf_field(reader, "tokenizer.ggml.tokens"))
    return {
        "tokens": tokens,
        "merges": list(gguf_field(reader, "tokenizer.ggml.merges")),
        "token_types": [int(t) for t in gguf_field(reader, "tokenizer.ggml.token_type",
                                                   [1] * len(tokens))],
        "pre": gguf_field(reader, "tokenizer.ggml.pre", "default"),
        "bos_id": gguf_field(reader, "tokenizer.ggml.bos_token_id", None),
        "eos_id": gguf_field(reader, "tokenizer.ggml.eos_token_id", None),
        "pad_id": gguf_field(reader, "tokenizer.ggml.padding_token_id", None),
        "chat_template": gguf_field(reader, "tokenizer.chat_template", None),
    }


def _build_backend(tokens: Sequence[str], merges: Sequence[str], specials: Sequence[str],
                   pre: str):
    """A `tokenizers.Tokenizer`: BPE over GPT-2 byte-level symbols, digits split first
    for the "smollm" pre-tokenizer (llama.cpp: \\p{N} then the GPT-2 regex)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    pairs = []
    for i, m in enumerate(merges):
        parts = m.split(" ")
        if len(parts) != 2:
            raise ValueError(f"tokenizer.ggml.merges[{i}] = {m!r} is not 'left right'")
        pairs.append((parts[0], parts[1]))
    backend = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=pairs))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "smollm":
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        backend.pre_tokenizer = byte_level
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return backend


class BPETokenizer:
    """Byte-level BPE with control tokens as specials and ChatML chat formatting."""

    sep_id = None  # prompt and response are joined directly (the chat template separates)

    def __init__(self, tokens: Sequence[str], merges: Sequence[str],
                 token_types: Sequence[int] | None = None, pre: str = "default",
                 bos_id: int | None = None, eos_id: int | None = None,
                 pad_id: int | None = None, chat_template: str | None = None):
        if pre not in _PRE_TOKENIZERS:
            raise ValueError(f"tokenizer.ggml.pre {pre!r} is not supported; known: "
                             f"{', '.join(_PRE_TOKENIZERS)}")
        self._meta = dict(tokens=list(tokens), merges=list(merges), pre=pre, bos_id=bos_id,
                          eos_id=eos_id, pad_id=pad_id, chat_template=chat_template,
                          token_types=list(token_types or [1] * len(tokens)))
        self.tokens = self._meta["tokens"]
        self.vocab_size = len(self.tokens)
        types = self._meta["token_types"]
        self.special_ids = frozenset(i for i, t in enumerate(types) if int(t) == CONTROL)
        self._ids = {t: i for i, t in enumerate(self.tokens)}
        self.chat_template = chat_template
        self.chatml = bool(chat_template and _IM_START in chat_template
                           and _IM_START in self._ids and _IM_END in self._ids)
        # ChatML: a turn is <|im_start|> ... <|im_end|> (GGUF files often list other ids)
        self.bos_id = self._ids[_IM_START] if self.chatml else self._need(bos_id, "bos")
        self.eos_id = self._ids[_IM_END] if self.chatml else self._need(eos_id, "eos")
        self.pad_id = self.eos_id if self.chatml or pad_id is None else int(pad_id)
        self._backend = _build_backend(self.tokens, self._meta["merges"],
                                       [self.tokens[i] for i in sorted(self.special_ids)], pre)
        self.default_system = _default_system(chat_template) if self.chatml else None

    @staticmethod
    def _need(value, what: str) -> int:
        if value is None:
            raise ValueError(f"tokenizer metadata has no {what} token id")
        return int(value)

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> "BPETokenizer":
        """From `gguf_tokenizer_metadata(...)` (or its JSON round trip)."""
        missing = [k for k in ("tokens", "merges") if k not in meta]
        if missing:
            raise ValueError(f"tokenizer metadata lacks {missing}")
        return cls(**{k: meta.get(k) for k in _META_KEYS})

    @classmethod
    def from_gguf(cls, path_or_reader) -> "BPETokenizer":
        """From a GGUF file (path) or an open gguf.GGUFReader."""
        from dlm.data.gguf_file import open_gguf

        reader = (open_gguf(path_or_reader) if isinstance(path_or_reader, (str, pathlib.Path))
                  else path_or_reader)
        return cls.from_metadata(gguf_tokenizer_metadata(reader))

    def metadata(self) -> dict[str, Any]:
        """JSON-able fields that rebuild this tokenizer with `from_metadata`."""
        return dict(self._meta)

    def encode(self, text: str) -> list[int]:
        """Token ids; control-token strings in the text (e.g. "<|im_end|>") become their
        ids, as in HF tokenizers. No BOS/EOS is added (batching adds them)."""
        if not isinstance(text, str):
            raise TypeError(f"BPETokenizer.encode expects str, got {type(text).__name__}")
        return self._backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Text of the ids; specials are skipped (unless skip_special=False), bad UTF-8
        becomes U+FFFD, out-of-range ids are dropped."""
        keep = [int(i) for i in ids if 0 <= int(i) < self.vocab_size]
        return self._backend.decode(keep, skip_special_tokens=skip_special)

    def is_special(self, token_id: int) -> bool:
        return int(token_id) in self.special_ids

    def token_to_id(self, token: str) -> int:
        return self._ids[token]

    def format_chat(self, messages: Sequence[Message], add_generation_prompt: bool = True
                    ) -> str:
        """ChatML text of `messages` ((role, content) pairs or {"role", "content"} dicts),
        as the GGUF chat template renders it: the template's default system message is
        prepended when the first message is not a system message."""
        if not self.chatml:
            raise ValueError("this tokenizer has no ChatML chat template")
        turns = [(m["role"], m["content"]) if isinstance(m, Mapping) else tuple(m)
                 for m in messages]
        if self.default_system is not None and (not turns or turns[0][0] != "system"):
            turns.insert(0, ("system", self.default_system))
        text = "".join(f"{_IM_START}{role}\n{content}{_IM_END}\n" for role, content in turns)
        return text + (f"{_IM_START}assistant\n" if add_generation_prompt else "")

    def chat_prompt(self, user: str, system: str | None = None,
                    max_user_tokens: int | None = None) -> str:
        """A one-turn chat prompt as batching's prompt text: format_chat minus the leading
        BOS (<|im_start|>), which the batching layouts add themselves.

        max_user_tokens keeps the user text's first N tokens. Cut here, not by batching's
        prompt truncation, which would cut the template's closing assistant header.
        """
        if max_user_tokens is not None:
            user = self.decode(self.encode(user)[:max_user_tokens], skip_special=False)
        turns = ([("system", system)] if system is not None else []) + [("user", user)]
        text = self.format_chat(turns)
        return text[len(_IM_START):]

    def __repr__(self) -> str:
        return (f"BPETokenizer(vocab_size={self.vocab_size}, pre={self._meta['pre']!r}, "
                f"bos={self.bos_id}, eos={self.eos_id}, chatml={self.chatml})")


def _default_system(template: str | None) -> str | None:
    """The system message a ChatML template inserts when none is given, if any."""
    if not template:
        return None
    m = re.search(re.escape(_IM_START) + r"system\n(.*?)" + re.escape(_IM_END), template, re.S)
    return m.group(1) if m else None


def as_prompt(tok, text: str, system: str | None = None,
              max_user_tokens: int | None = None) -> str:
    """`text` as a prompt for `tok`: a chat turn for chat tokenizers, unchanged otherwise
    (the byte tokenizer's BOS text SEP layout, where batching truncates)."""
    if getattr(tok, "chatml", False):
        return tok.chat_prompt(text, system, max_user_tokens)
    return text
