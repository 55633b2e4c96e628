"""Embed a file's distinct headlines with a pretrained encoder, filling the disk cache.

    python -m scripts.embed_texts --data ../shared/data/upworthy/upworthy_exploratory_dev.csv.gz \
        --spec llm:minilm --out runs/embed-minilm [--limit 1000]

--spec (= --set spec=...) is "llm:minilm" or
"llm:smollm2-135m[:layer=L,pool=mean|last,batch=B,max_len=T]". Vectors are cached under
$DLM_CACHE/embeddings by text hash, so a second run (or a reward model using the same spec)
reads them instead of running the encoder. --limit N keeps the first N distinct headlines
(file order; 0: all). Writes --out/timing.json (load and embedding seconds, counts) and
config.json, and prints the timing.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys

from dlm import cli, outputs
from dlm.models.text_encoders import embed_headlines


@dataclasses.dataclass(frozen=True)
class EmbedConfig:
    spec: str = "llm:minilm"
    limit: int = 0


PRESETS = {"quick": EmbedConfig(), "smollm2": EmbedConfig(spec="llm:smollm2-135m")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_common_args(parser, PRESETS, default_preset="quick")
    parser.add_argument("--data", type=pathlib.Path, required=True, help="Upworthy archive")
    parser.add_argument("--spec", default=None, help="llm:NAME[:opts] (sugar for --set spec=)")
    parser.add_argument("--limit", type=int, default=None, help="first N distinct headlines")
    args = parser.parse_args(argv)
    sugar = [f"{k}={v}" for k, v in (("spec", args.spec), ("limit", args.limit)) if v is not None]
    args.overrides = sugar + args.overrides
    cfg = cli.resolve_config(args, PRESETS)
    try:
        _, timing = embed_headlines(args.data, cfg.spec, cfg.limit)
    except (FileNotFoundError, ValueError) as err:  # incl. a missing model, a bad file
        print(f"embed_texts: {err}", file=sys.stderr)
        return 2
    outputs.write_json(args.out / "config.json", {"preset": args.preset, "data": args.data,
                                                  "config": cfg})
    outputs.write_json(args.out / "timing.json", timing)
    print(json.dumps(timing, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
