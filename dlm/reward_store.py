"""Saved reward models: a frozen-representation reward (dlm.rewards) to disk and back.

    save_reward(reward, "runs/mine/rewards/deconfoundlm")   # Orbax checkpoint + reward.json
    reward = load_reward("runs/mine/rewards/deconfoundlm")  # scores texts as before

One Orbax checkpoint (step 0) holds the head's parameters and the fitted representation's
arrays; reward.json holds the method, strength, target offset, reference condition and
the representation's settings. dlm.api re-exports both.
"""
from __future__ import annotations

import json
import pathlib

import jax
import numpy as np

from dlm import outputs

REWARD_REPRESENTATIONS = ("ngrams", "phi")     # frozen representations a saved reward can carry


def save_reward(reward, directory: str | pathlib.Path) -> pathlib.Path:
    """Save a frozen-representation reward with Orbax: the head's parameters and the fitted
    representation's arrays as one checkpoint (step 0), its settings in reward.json."""
    from dlm.rewards import NgramSVD
    from dlm.train.checkpoint import Checkpointer

    directory = pathlib.Path(directory)
    rep = reward.backbone.represent
    arrays, meta = {}, {"kind": "phi"}
    if isinstance(rep, NgramSVD):
        arrays = {"projection_FxD": rep.projection_FxD, "mean_D": rep.mean_D, "sd_D": rep.sd_D}
        meta = {"kind": "ngrams", "n_features": rep.n_features, "ngram_range": list(rep.ngram_range)}
    with Checkpointer(directory / "checkpoints", keep=1) as ck:
        ck.save(0, {"params": reward.params, "representation": arrays})
    outputs.write_json(directory / "reward.json", {
        "method": reward.method, "strength": reward.strength, "offset": reward.offset,
        "conf_ref": None if reward.conf_ref is None else reward.conf_ref.tolist(),
        "representation": meta, "final_metrics": reward.final_metrics})
    return directory


def load_reward(directory: str | pathlib.Path):
    """The reward saved by save_reward in `directory`, ready to score texts (a TrainedReward).

    The head's architecture (hidden layer, confounder inputs, second head) is read off the
    saved parameters; the representation is rebuilt from its saved arrays, so the loaded
    reward scores any text exactly as the one that was saved."""
    from dlm.rewards import NgramSVD, TrainerConfig, TrainedReward, fit_representation
    from dlm.rewards.trainer import _Frozen
    from dlm.train.checkpoint import Checkpointer

    directory = pathlib.Path(directory)
    meta_path = directory / "reward.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: no saved reward here (api.save_reward or "
                                "scripts.deconfound --train-reward writes one)")
    meta = json.loads(meta_path.read_text())
    with Checkpointer(directory / "checkpoints") as ck:
        saved = ck.restore(None, None)           # no target: the tree as it was saved
    rep_meta, arrays = meta["representation"], saved.get("representation") or {}
    if rep_meta["kind"] == "ngrams":
        rep = NgramSVD(*(np.asarray(arrays[k], np.float32) for k in ("projection_FxD", "mean_D", "sd_D")),
                       int(rep_meta["n_features"]), tuple(rep_meta["ngram_range"]))
    elif rep_meta["kind"] in REWARD_REPRESENTATIONS:
        rep = fit_representation(rep_meta["kind"], [])
    else:
        raise ValueError(f"{meta_path}: unknown representation {rep_meta['kind']!r}")
    params = jax.tree.map(np.asarray, saved["params"])
    hidden = int(np.shape(params["hidden"]["kernel"])[1]) if "hidden" in params else 0
    conf_ref = None if meta["conf_ref"] is None else np.asarray(meta["conf_ref"], np.float32)
    backbone = _Frozen(rep, TrainerConfig(hidden=hidden), 0 if conf_ref is None else len(conf_ref),
                       "confounder_head" in params)
    return TrainedReward(meta["method"], meta["strength"], params, backbone, conf_ref,
                         float(meta["offset"]), meta.get("final_metrics") or {})
