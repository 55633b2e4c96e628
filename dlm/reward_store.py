"""Saved reward models: a frozen-representation reward (dlm.rewards) to disk and back.

    save_reward(reward, "runs/mine/rewards/deconfoundlm")   # Orbax checkpoint + reward.json
    reward = load_reward("runs/mine/rewards/deconfoundlm")  # scores texts as before

One Orbax checkpoint (step 0) holds the head's parameters and the fitted representation's
arrays; reward.json holds the method, strength, target offset, reference condition and
the representation's spec (dlm.representations). dlm.api re-exports both. Rewards saved
before the registry ({"kind": "ngrams" | "phi"}) load as "ngram-svd:D" / "phi".
"""
from __future__ import annotations

import json
import pathlib

import jax
import numpy as np

from dlm import outputs

# representations a saved reward can carry: ngram-svd's fitted arrays are saved; the
# others are deterministic, so their spec alone rebuilds them ("trunk" needs its decoder)
REWARD_REPRESENTATIONS = ("ngram-svd", "ngram", "phi", "llm")
_SVD_ARRAYS = ("projection_FxD", "mean_D", "sd_D")


def check_reward_representation(spec: str) -> None:
    """A clear error, before training, for a reward representation save_reward cannot store."""
    if str(spec).partition(":")[0] not in REWARD_REPRESENTATIONS:
        raise ValueError(f"reward representation {spec!r}: must be one of "
                         f"{', '.join(REWARD_REPRESENTATIONS)} (a dlm.representations spec, "
                         "e.g. 'ngram-svd:64')")


def save_reward(reward, directory: str | pathlib.Path) -> pathlib.Path:
    """Save a frozen-representation reward with Orbax: the head's parameters and the fitted
    representation's arrays as one checkpoint (step 0), its settings in reward.json."""
    from dlm.representations import NgramSVD
    from dlm.train.checkpoint import Checkpointer

    directory = pathlib.Path(directory)
    rep = reward.backbone.represent
    spec = getattr(rep, "spec", None)
    check_reward_representation(spec)
    arrays, meta = {}, {"spec": spec, "kind": spec.partition(":")[0]}
    if isinstance(rep, NgramSVD):
        arrays = {k: getattr(rep, k) for k in _SVD_ARRAYS}
        meta.update(n_features=rep.n_features, ngram_range=list(rep.ngram_range))
    with Checkpointer(directory / "checkpoints", keep=1) as ck:
        ck.save(0, {"params": reward.params, "representation": arrays})
    outputs.write_json(directory / "reward.json", {
        "method": reward.method, "strength": reward.strength, "offset": reward.offset,
        "conf_ref": None if reward.conf_ref is None else reward.conf_ref.tolist(),
        "representation": meta, "final_metrics": reward.final_metrics})
    return directory


def _representation(rep_meta: dict, arrays: dict, where: pathlib.Path):
    """The saved representation: ngram-svd from its arrays, any other from its spec."""
    from dlm.representations import NgramSVD, fit_representation

    kind = rep_meta.get("kind")
    if kind in ("ngrams", "ngram-svd"):          # "ngrams": saved before the registry
        svd = [np.asarray(arrays[k], np.float32) for k in _SVD_ARRAYS]
        spec = rep_meta.get("spec") or f"ngram-svd:{svd[0].shape[1]}"
        return NgramSVD(*svd, int(rep_meta["n_features"]), tuple(rep_meta["ngram_range"]), spec)
    if kind in REWARD_REPRESENTATIONS:
        return fit_representation(rep_meta.get("spec") or kind, [])
    raise ValueError(f"{where}: unknown representation {kind!r}")


def load_reward(directory: str | pathlib.Path):
    """The reward saved by save_reward in `directory`, ready to score texts (a TrainedReward).

    The head's architecture (hidden layer, confounder inputs, second head) is read off the
    saved parameters; the representation is rebuilt from its saved arrays (or its spec), so
    the loaded reward scores any text exactly as the one that was saved. A "phi" reward needs
    `import sims.featurise` first."""
    from dlm.rewards import TrainerConfig, TrainedReward
    from dlm.rewards.backbones import FrozenBackbone
    from dlm.train.checkpoint import Checkpointer

    directory = pathlib.Path(directory)
    meta_path = directory / "reward.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: no saved reward here (api.save_reward or "
                                "scripts.deconfound --train-reward writes one)")
    meta = json.loads(meta_path.read_text())
    with Checkpointer(directory / "checkpoints") as ck:
        saved = ck.restore(None, None)           # no target: the tree as it was saved
    rep = _representation(meta["representation"], saved.get("representation") or {}, meta_path)
    params = jax.tree.map(np.asarray, saved["params"])
    hidden = int(np.shape(params["hidden"]["kernel"])[1]) if "hidden" in params else 0
    conf_ref = None if meta["conf_ref"] is None else np.asarray(meta["conf_ref"], np.float32)
    backbone = FrozenBackbone(rep, TrainerConfig(hidden=hidden), 0 if conf_ref is None else len(conf_ref),
                       "confounder_head" in params)
    return TrainedReward(meta["method"], meta["strength"], params, backbone, conf_ref,
                         float(meta["offset"]), meta.get("final_metrics") or {})
