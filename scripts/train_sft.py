"""Supervised fine-tuning of the headline writer: prompt = lede, response = headline.

    python -m scripts.train_sft --preset quick --out runs/sft [--data PATH] [--resume]
                                [--model smollm2-135m] [--set steps=500 --set lr=1e-3 ...]

Without --data it trains on the built-in template corpus (dlm.data.builtin_corpus), so it
runs on a fresh machine; with --data it reads an Upworthy archive. Stories are split
into train/val, so validation ledes are unseen. Writes to --out: config.json,
metrics.jsonl, checkpoints/ (the SFT policy later stages load), samples.md (headlines
for held-out ledes) and summary.md (validation bits per byte before and after).
--model picks the policy model: a decoder preset trained from scratch (default "small")
or a pretrained LLM ("smollm2-135m": LoRA SFT on chat-formatted prompts; see the
`smollm2` preset for CPU-sized settings).
The training itself lives in dlm.policy.sft; this is its command line and presets.
"""
from __future__ import annotations

import argparse
import pathlib

from dlm import cli
from dlm.data.batching import make_batch_for_step  # noqa: F401 (tests.test_train_sft_script)
from dlm.policy import sft
# re-exported: older callers (scripts.bench) import these names from here
from dlm.policy.sft import SFTConfig, model_config, sft_loss_fn, train_sft  # noqa: F401
from dlm.train.sharding import maybe_initialize_distributed

PRESETS = sft.PRESETS   # tiny / quick / full, defined beside the trainer in dlm.policy.sft

run = train_sft  # run(cfg, out, data=None, resume=False, quiet=False) -> summary dict


def main(argv: list[str] | None = None) -> None:
    maybe_initialize_distributed()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_common_args(parser, PRESETS, default_preset="quick", model_field="model")
    parser.add_argument("--data", type=pathlib.Path, default=None,
                        help="Upworthy archive (.csv/.csv.gz/.parquet); default: built-in corpus")
    parser.add_argument("--resume", action="store_true", help="continue from --out's checkpoints")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or printout")
    args = parser.parse_args(argv)
    cfg = cli.resolve_config(args, PRESETS)
    from dlm.policy.lora_sft import is_pretrained
    try:
        if not is_pretrained(cfg.model):
            model_config(cfg)  # an unknown --model fails here, before any data is read
        run(cfg, args.out, args.data, args.resume, args.quiet)
    except (ValueError, FileExistsError, FileNotFoundError) as err:  # bad config or files
        raise SystemExit(str(err)) from None


if __name__ == "__main__":
    main()
