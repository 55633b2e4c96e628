"""Generate text from a registered model (KV-cache sampling) and print it.

    python -m scripts.generate --model smollm2-135m --chat "What is the capital of France?" \
        --greedy --max-new-tokens 16
    python -m scripts.generate --model smollm2-135m --prompt "Once upon a time" --temperature 0.8
    python -m scripts.generate --run runs/sft --prompt "A lede ..."     # a train_sft run

--chat wraps each text in the model's chat template (a user turn, optional --system);
--prompt continues raw text (for the byte-tokenizer models: the BOS lede SEP layout that
train_sft trains on). Both may be repeated to generate a batch. The default model is the
from-scratch decoder: untrained unless --run points at a train_sft output directory.
With --out DIR, config.json and generations.json are written there too.
"""
from __future__ import annotations

import argparse
import pathlib
import time

import jax
import numpy as np

from dlm import outputs
from dlm.data.batching import encode_prompts
from dlm.data.bpe_tokenizer import as_prompt
from dlm.models import pretrained
from dlm.sample import generate, generate_nocache


def load(args) -> pretrained.LoadedModel:
    """The model named by --model, or a train_sft run's decoder with --run."""
    if args.run is None:
        return pretrained.load_model(args.model, preset=args.preset, dtype=args.dtype,
                                     seed=args.seed)
    if args.model != pretrained.SCRATCH:
        raise SystemExit("--run loads a from-scratch train_sft run; drop --model")
    from dlm.policy.sft_cache import load_sft

    try:
        policy = load_sft(args.run)
    except FileNotFoundError as err:
        raise SystemExit(f"--run: {err}") from None
    return pretrained.LoadedModel(policy.model_cfg, policy.params, policy.tokenizer)


def prompt_batch(tok, texts: list[str], chat: bool, system: str | None):
    """Left-padded prompt ids and mask for the sampler."""
    if chat:
        if not getattr(tok, "chatml", False):
            raise SystemExit("--chat needs a chat model (e.g. --model smollm2-135m); "
                             "use --prompt for this one")
        texts = [as_prompt(tok, t, system) for t in texts]
    has_sep = getattr(tok, "sep_id", None) is not None
    if chat or has_sep:  # batching's layout: BOS prompt [SEP]
        return encode_prompts(tok, texts, max(2 + len(tok.encode(t)) for t in texts))
    rows = [tok.encode(t) for t in texts]  # raw continuation: the text alone
    if not all(rows):
        raise SystemExit("--prompt: empty prompt")
    n = max(len(r) for r in rows)
    tokens = np.full((len(rows), n), tok.pad_id, np.int32)
    mask = np.zeros((len(rows), n), bool)
    for i, r in enumerate(rows):
        tokens[i, n - len(r):], mask[i, n - len(r):] = r, True
    return tokens, mask


def run(args) -> list[str]:
    """Generate for every --chat/--prompt text; returns the decoded continuations."""
    cfg, params, tok = load(args)
    chat = bool(args.chat)
    texts = args.chat or args.prompt
    tokens, mask = prompt_batch(tok, texts, chat, args.system)
    sampler = generate_nocache if args.nocache else generate
    t0 = time.perf_counter()
    gen = sampler(params, cfg, tokens, mask, jax.random.key(args.seed), args.max_new_tokens,
                  temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                  eos_id=tok.eos_id, greedy=args.greedy, pad_id=tok.pad_id)
    out_tokens = np.asarray(gen.tokens)
    seconds = time.perf_counter() - t0
    keep = np.asarray(gen.mask) & (out_tokens != tok.eos_id)
    results = [tok.decode(row[k].tolist()).strip() for row, k in zip(out_tokens, keep)]
    if args.out is not None:
        outputs.write_json(args.out / "config.json", {**vars(args), "model_config": cfg})
        outputs.write_json(args.out / "generations.json", {
            "seconds_incl_compile": seconds,
            "items": [{"input": t, "output": r, "tokens": row[k].tolist()}
                      for t, r, row, k in zip(texts, results, out_tokens, keep)]})
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=pretrained.MODELS, default=pretrained.SCRATCH,
                   help="registered model (default: the from-scratch decoder)")
    p.add_argument("--preset", default="small", help="decoder preset for --model scratch")
    p.add_argument("--run", type=pathlib.Path, default=None,
                   help="a scripts.train_sft --out directory: generate with its trained decoder")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--chat", action="append", metavar="TEXT",
                     help="a user message, formatted with the chat template; repeatable")
    src.add_argument("--prompt", action="append", metavar="TEXT",
                     help="raw text to continue; repeatable")
    p.add_argument("--system", default=None, help="system message for --chat "
                   "(default: the template's own)")
    p.add_argument("--greedy", action="store_true", help="argmax decoding")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32", help="compute dtype (bfloat16 on GPU/TPU)")
    p.add_argument("--nocache", action="store_true",
                   help="re-run the whole prefix each step (the KV cache's reference)")
    p.add_argument("--out", type=pathlib.Path, default=None,
                   help="optional: also write config.json and generations.json here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[str]:
    args = parse_args(argv)
    results = run(args)
    for i, text in enumerate(results):
        print(text if len(results) == 1 else f"[{i}] {text}")
    return results


if __name__ == "__main__":
    main()
