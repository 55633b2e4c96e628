"""dlm.data.subword: a byte-level BPE trained on a corpus, behind the Tokenizer protocol."""
import numpy as np
import pytest

from dlm.data.batching import bits_per_byte, encode_sft, target_bytes
from dlm.data.subword import SubwordTokenizer
from dlm.data.tokenizer import Tokenizer

TEXTS = ["This Town Wins The Lottery And You Won't Believe What Happens Next",
         "Why This Town Matters More Than You Think", "A nurse on night shifts."] * 20


@pytest.fixture(scope="module")
def tok():
    return SubwordTokenizer.train(TEXTS, vocab_size=400)


def test_round_trip_is_lossless_and_merges_common_words(tok):
    assert isinstance(tok, Tokenizer)
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.sep_id) == (0, 1, 2, 3)
    for text in ["Why This Town Matters", "naïve café — 10 ways 😀", "<|eos|> stays text", ""]:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert all(not tok.is_special(i) for i in ids)   # text never yields a special id
    # a frequent training phrase takes far fewer tokens than bytes
    assert len(tok.encode(TEXTS[1])) < len(TEXTS[1].encode()) / 3
    assert tok.n_tokens <= 400 and tok.vocab_size % 64 == 0
    assert tok.n_tokens <= tok.vocab_size < tok.n_tokens + 64
    assert max(max(tok.encode(t)) for t in TEXTS) < tok.n_tokens
    # specials and unused ids are dropped by decode
    assert tok.decode([tok.bos_id, *tok.encode("Why"), tok.eos_id, tok.vocab_size - 1]) == "Why"


def test_save_load_gives_the_same_tokenizer(tok, tmp_path):
    tok.save(tmp_path / "tokenizer.json")
    again = SubwordTokenizer.load(tmp_path / "tokenizer.json")
    assert again.vocab_size == tok.vocab_size
    for text in TEXTS[:3] + ["unseen words: zebra 42"]:
        assert again.encode(text) == tok.encode(text)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="bad.json"):
        SubwordTokenizer.load(tmp_path / "bad.json")


def test_bits_per_byte_counts_utf8_bytes_of_the_targets(tok):
    responses = ["Why This Town Matters", "café 😀"]
    tokens, mask = encode_sft(tok, ["A nurse.", "A farmer."], responses, max_len=48)
    # EOS is a target but carries no bytes: the denominator is the responses' UTF-8 bytes
    n_bytes = sum(len(r.encode("utf-8")) for r in responses)
    assert target_bytes(tok, tokens, mask) == n_bytes
    assert mask.sum() == sum(len(tok.encode(r)) + 1 for r in responses)
    assert bits_per_byte(np.log(2) * n_bytes, n_bytes) == pytest.approx(1.0)
