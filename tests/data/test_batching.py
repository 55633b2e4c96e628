"""Batching layouts checked against rows written out by hand."""
import math

import numpy as np
import pytest

from dlm.data.batching import (bits_per_byte, encode_prompts, encode_sft, encode_texts,
                               target_bytes)
from dlm.data.tokenizer import ByteTokenizer

TOK = ByteTokenizer()
B, P, E, PAD = TOK.bos_id, TOK.sep_id, TOK.eos_id, TOK.pad_id


def ids(text):
    return list(text.encode("utf-8"))


def test_sft_row_and_mask_by_hand():
    tokens, mask = encode_sft(TOK, ["ab", "c"], ["xy", "é"], max_len=10)
    assert tokens.dtype == np.int32 and tokens.shape == (2, 10)
    assert tokens[0].tolist() == [B, *ids("ab"), P, *ids("xy"), E, PAD, PAD, PAD]
    assert mask[0].tolist() == [0, 0, 0, 0, 1, 1, 1, 0, 0, 0]
    assert tokens[1].tolist() == [B, *ids("c"), P, 0xC3, 0xA9, E, PAD, PAD, PAD, PAD]
    assert mask[1].tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0, 0]


def test_sft_prompt_gives_way_to_response():
    # 8 slots: response "xyz"+EOS takes 4, BOS+SEP 2, so 2 prompt bytes survive
    tokens, mask = encode_sft(TOK, ["abcdef"], ["xyz"], max_len=8)
    assert tokens[0].tolist() == [B, *ids("ab"), P, *ids("xyz"), E]
    tokens, _ = encode_sft(TOK, ["abcdef"], ["xyz"], max_len=8, truncate_prompt="left")
    assert tokens[0].tolist() == [B, *ids("ef"), P, *ids("xyz"), E]
    assert mask[0].sum() == 4


def test_sft_max_prompt_len_caps_prompt():
    tokens, _ = encode_sft(TOK, ["abcdef"], ["x"], max_len=16, max_prompt_len=5)
    assert tokens[0, :7].tolist() == [B, *ids("abc"), P, ord("x"), E]


def test_sft_overlong_response_keeps_start_without_eos():
    tokens, mask = encode_sft(TOK, ["ab"], ["0123456789"], max_len=6)
    assert tokens[0].tolist() == [B, P, *ids("0123")]
    assert mask[0].tolist() == [0, 0, 1, 1, 1, 1]


def test_sft_rejects_mismatched_lengths_and_non_strings():
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        encode_sft(TOK, ["a", "b"], ["c"], max_len=8)
    with pytest.raises(TypeError, match=r"responses\[1\]"):
        encode_sft(TOK, ["a", "b"], ["c", None], max_len=8)


def test_encode_texts_right_padded_with_lengths():
    tokens, lengths = encode_texts(TOK, ["hi", "abcdefgh"], max_len=6)
    assert tokens[0].tolist() == [B, *ids("hi"), E, PAD, PAD]
    assert tokens[1].tolist() == [B, *ids("abcd"), E]
    assert lengths.tolist() == [4, 6]


def test_encode_prompts_left_padded_with_mask():
    tokens, mask = encode_prompts(TOK, ["hi", "abcdefgh"], max_len=6)
    assert tokens[0].tolist() == [PAD, PAD, B, *ids("hi"), P]
    assert mask[0].tolist() == [False, False, True, True, True, True]
    assert tokens[1].tolist() == [B, *ids("abcd"), P]
    assert mask[1].all()


def test_prompt_prefix_matches_sft_prefix():
    sft, _ = encode_sft(TOK, ["lede text"], ["title"], max_len=32)
    gen, mask = encode_prompts(TOK, ["lede text"], max_len=16)
    prefix = gen[0][mask[0]].tolist()
    assert sft[0, :len(prefix)].tolist() == prefix


def test_target_bytes_and_bits_per_byte():
    tokens, mask = encode_sft(TOK, ["p", "q"], ["é", "ab"], max_len=8)
    # response bytes: 2 (é) + 2 (ab); EOS carries no bytes
    assert target_bytes(TOK, tokens, mask) == 4
    assert bits_per_byte(4 * math.log(2.0), 4) == pytest.approx(1.0)
    assert bits_per_byte(2.0, 1) == pytest.approx(2.0 / math.log(2.0))
    with pytest.raises(ValueError):
        bits_per_byte(1.0, 0)
