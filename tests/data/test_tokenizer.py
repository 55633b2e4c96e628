"""ByteTokenizer: UTF-8 round trip, specials, padding of the vocabulary."""
from dlm.data.tokenizer import BYTE_VOCAB_SIZE, ByteTokenizer, Tokenizer


def test_round_trip_ascii_and_non_ascii():
    tok = ByteTokenizer()
    for text in ["", "Happy Monday! You won't believe this", "Ünïcödé — 日本語 🙂"]:
        ids = tok.encode(text)
        assert ids == list(text.encode("utf-8"))
        assert tok.decode(ids) == text


def test_non_ascii_is_multi_byte():
    tok = ByteTokenizer()
    assert tok.encode("é") == [0xC3, 0xA9]
    assert len(tok.encode("🙂")) == 4


def test_specials_are_distinct_and_skipped_on_decode():
    tok = ByteTokenizer()
    specials = {tok.pad_id, tok.bos_id, tok.eos_id, tok.sep_id}
    assert len(specials) == 4 and min(specials) == 256
    assert max(specials) < tok.vocab_size
    ids = [tok.bos_id, *tok.encode("hi"), tok.sep_id, *tok.encode("yo"), tok.eos_id, tok.pad_id]
    assert tok.decode(ids) == "hiyo"


def test_vocab_is_padded_to_multiple_of_8():
    assert BYTE_VOCAB_SIZE == ByteTokenizer().vocab_size == 264
    assert BYTE_VOCAB_SIZE % 8 == 0


def test_invalid_utf8_is_replaced():
    tok = ByteTokenizer()
    # a lone continuation byte and a truncated 2-byte sequence
    assert tok.decode([ord("a"), 0x80, ord("b")]) == "a\ufffdb"
    assert tok.decode([0xC3]) == "\ufffd"


def test_satisfies_protocol():
    assert isinstance(ByteTokenizer(), Tokenizer)
