"""The SFT policy as a cached service: what best-of-n, DPO, REINFORCE and reward trunks
start from.

    policy = sft_policy(cfg, data=None, directory=d)   # trained into d, or loaded from it
    policy, cfg, train, val, source = preset_policy("quick", data)

A finished run with the same config and data is loaded, an interrupted one resumed, and a
directory holding a different run is an error (FileExistsError naming the differing
fields), so a cache is never silently reused for another experiment.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, NamedTuple

import jax
import numpy as np

from dlm import cli
from dlm.data.corpus import StoryCorpus
from dlm.data.subword import load_tokenizer
from dlm.data.tokenizer import Tokenizer
from dlm.models.decoder import DecoderConfig
from dlm.policy.sft import PRESETS, SFTConfig, train_sft
from dlm.policy.sft_corpus import check_corpus_arg, corpus_fingerprint, load_corpus, split_corpus
from dlm.train.checkpoint import Checkpointer


class SFTPolicy(NamedTuple):
    """A trained SFT policy: what best-of-n, DPO and REINFORCE start from. Use its
    `tokenizer` (byte, trained BPE or a pretrained LLM's); never assume bytes."""

    params: Any
    model_cfg: DecoderConfig
    tokenizer: Tokenizer
    directory: pathlib.Path


def load_sft(directory: pathlib.Path) -> SFTPolicy:
    """The finished SFT policy in `directory` (its config.json and latest checkpoint)."""
    directory = pathlib.Path(directory)
    cfg_path = directory / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{cfg_path}: no SFT run here (train one with scripts.train_sft)")
    saved = json.loads(cfg_path.read_text())

    def restore_params():
        with Checkpointer(directory / "checkpoints") as ck:
            if ck.latest_step() is None:
                raise FileNotFoundError(f"{directory / 'checkpoints'}: no checkpoint saved yet")
            return ck.restore_params()

    from dlm.policy import lora_sft
    if lora_sft.is_pretrained(saved["sft"]["model"]):
        sft_fields = {f.name for f in dataclasses.fields(SFTConfig)}
        cfg = SFTConfig(**{k: v for k, v in saved["sft"].items() if k in sft_fields})
        return SFTPolicy(*lora_sft.load_policy(directory, cfg, restore_params), directory)
    known = {f.name for f in dataclasses.fields(DecoderConfig)}
    model_cfg = DecoderConfig(**{k: v for k, v in saved.get("model", {}).items() if k in known})
    params = jax.tree.map(np.asarray, restore_params())
    return SFTPolicy(params, model_cfg, load_tokenizer(directory), directory)


def _mismatch(directory: pathlib.Path, cfg: SFTConfig, source: str,
              fingerprint: str | None = None) -> list[str]:
    """Fields where the run saved in `directory` differs from (cfg, source, corpus)."""
    saved = json.loads((directory / "config.json").read_text())
    want = cli.to_jsonable(cfg)
    diff = [f"{k}: saved {saved['sft'].get(k)!r} vs wanted {v!r}"
            for k, v in want.items() if saved["sft"].get(k) != v]
    if saved.get("data") != source:
        diff.append(f"data: saved {saved.get('data')!r} vs wanted {source!r}")
    if saved.get("corpus_fingerprint") != fingerprint:
        diff.append(f"corpus_fingerprint: saved {saved.get('corpus_fingerprint')!r} "
                    f"vs wanted {fingerprint!r} (same label, different stories?)")
    return diff


def sft_policy(cfg: SFTConfig, data: pathlib.Path | None = None,
               directory: pathlib.Path | None = None, quiet: bool = True,
               corpus: tuple[StoryCorpus, str] | None = None) -> SFTPolicy:
    """The SFT policy for (cfg, data or corpus), trained into `directory` or loaded from it.

    A finished run with the same config and data is loaded (no training); an interrupted
    one is resumed; a run with a different config is an error naming the differing fields,
    so a cache is never silently reused for another experiment. `directory` defaults to
    `sft_cache_dir(cfg, data, corpus=corpus)`. `corpus=(StoryCorpus, label)` replaces the
    data file (then `data` must be None).
    """
    data = None if data is None else pathlib.Path(data).absolute()
    fingerprint = None
    if corpus is not None:
        check_corpus_arg(data, corpus)
        fingerprint = corpus_fingerprint(corpus[0])
        source = corpus[1]
    else:
        source = "built-in template corpus" if data is None else str(data)
    directory = (pathlib.Path(directory) if directory is not None
                 else sft_cache_dir(cfg, data, corpus=corpus))
    if (directory / "config.json").exists():
        diff = _mismatch(directory, cfg, source, fingerprint)
        if diff:
            raise FileExistsError(f"{directory / 'config.json'}: holds a different SFT run "
                             f"({'; '.join(diff)}); choose another directory")
        with Checkpointer(directory / "checkpoints") as ck:
            latest = ck.latest_step()
        if latest == cfg.steps:
            return load_sft(directory)
        resume = latest is not None
    else:
        resume = False
    res = train_sft(cfg, directory, data, resume=resume, quiet=quiet, corpus=corpus)
    return SFTPolicy(res["params"], res["model_cfg"], res["tokenizer"], directory)


def sft_cache_dir(cfg: SFTConfig, data: pathlib.Path | None = None,
                  root: pathlib.Path | None = None,
                  corpus: tuple[StoryCorpus, str] | None = None) -> pathlib.Path:
    """root/sft-<hash of config and data (or corpus label and fingerprint)>; root defaults
    to $DLM_CACHE or ~/.cache/dlm."""
    import hashlib
    import os
    root = pathlib.Path(root or os.environ.get("DLM_CACHE", pathlib.Path.home() / ".cache/dlm"))
    content = {"sft": cli.to_jsonable(cfg), "data": None if data is None else
               str(pathlib.Path(data).absolute())}
    if corpus is not None:
        check_corpus_arg(data, corpus)
        content["corpus"] = [corpus[1], corpus_fingerprint(corpus[0])]
    key = json.dumps(content, sort_keys=True)
    return root / f"sft-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def preset_policy(preset: str, data: pathlib.Path | None = None, model: str = "",
                  directory: str = "", quiet: bool = True):
    """What later stages start from: the cached SFT policy of the named preset (`model`
    overrides its model, e.g. "smollm2-135m"), its config, and the (train, val) stories it
    was split into -> (policy, cfg, train, val, source)."""
    if preset not in PRESETS:
        raise ValueError(f"--set sft_preset: unknown {preset!r}; have {sorted(PRESETS)}")
    cfg = dataclasses.replace(PRESETS[preset], model=model) if model else PRESETS[preset]
    data = None if data is None else pathlib.Path(data).absolute()
    policy = sft_policy(cfg, data, pathlib.Path(directory) if directory else None, quiet=quiet)
    corpus, source = load_corpus(data, cfg)
    train, val = split_corpus(corpus, cfg, source)
    return policy, cfg, train, val, source
