"""scripts.embed_texts on a tiny Upworthy file with a toy encoder: distinct headlines,
timing.json, the second run served from the disk cache, a bad spec exits 2 writing nothing."""
import json

import numpy as np

from dlm.models import text_encoders
from dlm.models.embedding_cache import TextEmbedding
from scripts import embed_texts
from tests.data.test_upworthy import rows, write


def test_embed_texts_fills_then_reads_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DLM_CACHE", str(tmp_path / "cache"))
    seen = []

    def toy(option, train_texts=(), *, seed=0, **context):
        def embed(texts):
            seen.extend(texts)
            return np.array([[len(t), t.count("e")] for t in texts], np.float32)
        return TextEmbedding("llm:toy", 2, "toy|v1", embed)

    monkeypatch.setitem(text_encoders.ENCODERS, "toy", toy)
    data = write(tmp_path, rows(headline=["Same", "Same", "Dogs <br>Rule", "Birds?"]))
    assert embed_texts.main(["--data", str(data), "--spec", "llm:toy", "--out", str(tmp_path / "a")]) == 0
    timing = json.loads((tmp_path / "a" / "timing.json").read_text())
    assert timing["texts"] == 3 and timing["dim"] == 2 and timing["spec"] == "llm:toy"
    assert sorted(seen) == sorted(["Same", "Dogs <br>Rule", "Birds?"])  # headlines as stored
    assert embed_texts.main(["--data", str(data), "--spec", "llm:toy", "--out", str(tmp_path / "b"),
                             "--set", "limit=2"]) == 0
    assert len(seen) == 3  # second run: nothing recomputed
    assert json.loads((tmp_path / "b" / "timing.json").read_text())["texts"] == 2


def test_embed_texts_bad_spec_exits_2(tmp_path, capsys):
    data = write(tmp_path, rows())
    assert embed_texts.main(["--data", str(data), "--spec", "llm:nope", "--out", str(tmp_path / "o")]) == 2
    assert "unknown pretrained encoder llm:nope" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
