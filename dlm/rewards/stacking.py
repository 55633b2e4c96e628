"""Per-seed training arrays for the reward trainer, stacking them on a seed axis, and each
seed's minibatch rows.

Seeds of one setting sample different logs from one world: the rows, targets and
confounder values differ, the shapes mostly do not. Two shapes can differ harmlessly and
are padded: the number of distinct texts (rows of the text table; padding rows are never
indexed) and the number of confounder bins (a quantile may repeat; padded bins are marked
invalid, and every penalty skips invalid bins). Anything else that differs (the number of
training rows, of confounder columns) means the seeds cannot share one vmapped run.
"""
from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from dlm.rewards.encoding import ConfounderEncoder
from dlm.rewards.methods import Targets


def host_data(backbone, encoder: ConfounderEncoder, targets: Targets, offset: float) -> dict:
    """Every training array of one seed (numpy); a step only sends its row indices.

    text: the backbone's inputs for each distinct text [U, ...]; text_row [N] indexes them;
    pair_win / pair_lose [P]: rows of the pairs (pairwise methods only).
    """
    uniq, text_row = np.unique(np.asarray(targets.content).astype(str), return_inverse=True)
    bins = encoder.bin_onehot(targets.confounders)
    out = {"text": backbone.text_inputs(list(uniq)),
           "text_row": text_row.reshape(-1).astype(np.int32),
           "conf": encoder.columns(targets.confounders),
           "target": (np.asarray(targets.target, np.float64) - offset).astype(np.float32),
           "weight": np.asarray(targets.weight, np.float32),
           "bins_onehot": bins, "bins_valid": bins.sum(0) > 0}
    if targets.pairs is not None:            # a pairwise method's (win, lose) rows [P]
        out["pair_win"], out["pair_lose"] = (np.asarray(r, np.int32) for r in targets.pairs)
    return out


def _pad_rows(a: np.ndarray, n: int) -> np.ndarray:
    """Pad axis 0 to n by repeating row 0 (never indexed: text_row points below the old size)."""
    return np.concatenate([a, np.repeat(a[:1], n - len(a), 0)]) if n > len(a) else a


def pad_to_common(per_seed: Sequence[dict]) -> tuple[list[dict], str | None]:
    """Pad every seed's text table and bins to the largest; (padded, None) when the seeds can
    be stacked, else (the inputs unchanged, a one-line reason why not)."""
    n_rows = [len(d["target"]) for d in per_seed]
    if len(set(n_rows)) > 1:
        return list(per_seed), f"the seeds have different numbers of training rows {n_rows}"
    n_text = max(len(jax.tree.leaves(d["text"])[0]) for d in per_seed)
    n_bins = max(d["bins_valid"].shape[0] for d in per_seed)
    out = []
    for d in per_seed:
        extra = n_bins - d["bins_valid"].shape[0]
        out.append({**d, "text": jax.tree.map(lambda a: _pad_rows(np.asarray(a), n_text), d["text"]),
                    "bins_onehot": np.pad(d["bins_onehot"], ((0, 0), (0, extra))),
                    "bins_valid": np.pad(d["bins_valid"], (0, extra))})
    shapes = [jax.tree.map(np.shape, d) for d in out]
    for s, shape in enumerate(shapes[1:], 1):
        if shape != shapes[0]:
            diff = [k for k in shape if shape[k] != shapes[0][k]]
            return list(per_seed), f"array shapes differ between seed 0 and seed {s}: {diff}"
    return out, None


def stack(per_seed: Sequence[dict]) -> dict:
    """Stack same-shaped per-seed dicts on a leading seed axis [S, ...], on device."""
    return jax.tree.map(lambda *a: jax.numpy.asarray(np.stack(a)), *per_seed)


def row_stream(n: int, batch: int, seed: int):
    """rows(s): step s's indices from per-epoch permutations (a pure function of seed, s)."""
    perms: dict[int, np.ndarray] = {}

    def rows(s: int) -> np.ndarray:
        pos = s * batch + np.arange(batch)
        out = np.empty(batch, np.int32)
        for e in np.unique(pos // n):
            if e not in perms:
                perms.clear()
                perms[e] = np.random.default_rng([seed, int(e)]).permutation(n)
            sel = pos // n == e
            out[sel] = perms[e][pos[sel] % n]
        return out
    return rows
