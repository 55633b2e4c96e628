"""Embed a file's distinct headlines with a pretrained encoder, filling the disk cache.

    python -m scripts.embed_texts --data ../shared/data/upworthy/upworthy_exploratory_dev.csv.gz \
        --spec llm:minilm --out runs/embed-minilm [--limit 1000]

--spec is "llm:minilm" or "llm:smollm2-135m[:layer=L,pool=mean|last,batch=B,max_len=T]".
Vectors are cached under $DLM_CACHE/embeddings by text hash, so a second run (or a reward
model using the same spec) reads them instead of running the encoder. --limit keeps the
first N distinct headlines (in file order). Writes --out/timing.json (load and embedding
seconds, counts) and prints it.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import pandas as pd

from dlm import outputs
from dlm.data.upworthy import load_upworthy
from dlm.models.pretrained import ModelNotAvailable
from dlm.models.text_encoders import embed_timed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=pathlib.Path, required=True, help="Upworthy archive")
    parser.add_argument("--spec", default="llm:minilm", help="llm:NAME[:opts]")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="output directory")
    parser.add_argument("--limit", type=int, default=None, help="first N distinct headlines")
    args = parser.parse_args(argv)
    texts = list(pd.unique(load_upworthy(args.data).content))[:args.limit]
    try:
        _, timing = embed_timed(texts, args.spec)
    except (ModelNotAvailable, ValueError) as err:
        print(f"embed_texts: {err}", file=sys.stderr)
        return 2
    timing["data"] = str(args.data)
    outputs.write_json(args.out / "timing.json", timing)
    print(json.dumps(timing, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
