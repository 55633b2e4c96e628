"""Tokenizers: the `Tokenizer` protocol every model-facing layer uses, and a byte tokenizer.

The byte tokenizer needs no vocabulary file, so every script runs on a fresh machine; a
BPE tokenizer (e.g. SmolLM2's, read from GGUF metadata) can implement the same protocol.
"""
from __future__ import annotations

from typing import Iterable, Protocol, runtime_checkable

N_BYTES = 256


@runtime_checkable
class Tokenizer(Protocol):
    """What batching, training and sampling need from a tokenizer.

    `sep_id` (prompt/response separator) is optional: batching uses it when the tokenizer
    has one (attribute present and not None) and otherwise joins prompt and response directly.
    `prompt_ids(prompt, budget, cut) -> list[int]` is optional too: when present, batching
    takes a prompt's ids (BOS included, at most `budget`) from it, e.g. a chat turn.
    """

    vocab_size: int
    pad_id: int
    bos_id: int
    eos_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


class ByteTokenizer:
    """ids 0..255 are UTF-8 bytes, then PAD, BOS, EOS, SEP.

    vocab_size is rounded up to a multiple of 8 (unused ids never occur) so the embedding
    and output matmuls have friendly shapes.
    """

    pad_id = N_BYTES
    bos_id = N_BYTES + 1
    eos_id = N_BYTES + 2
    sep_id = N_BYTES + 3
    vocab_size = _round_up(N_BYTES + 4, 8)

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"ByteTokenizer.encode expects str, got {type(text).__name__}")
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        """Bytes back to text; specials and unused ids are skipped, bad UTF-8 becomes U+FFFD."""
        data = bytes(int(i) for i in ids if 0 <= int(i) < N_BYTES)
        return data.decode("utf-8", errors="replace")

    def is_special(self, token_id: int) -> bool:
        return not 0 <= int(token_id) < N_BYTES

    def __repr__(self) -> str:
        return f"ByteTokenizer(vocab_size={self.vocab_size})"


BYTE_VOCAB_SIZE = ByteTokenizer.vocab_size
