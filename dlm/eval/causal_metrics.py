"""Causal metrics of a reward function and of a policy's generations (DESIGN.md section 4).

A reward function is any callable texts -> np.ndarray of scores [N], so every method
(oracle, naive, ..., deconfoundlm) is measured by the same code. `tau` is the true causal
effect: an array aligned with `texts`, or a callable texts -> tau (e.g. a world's
`true_effect`), so metrics can score text the world never posted.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np

from dlm.data.markers import MARKERS, strip_marker
from dlm.eval.stats import pair_accuracy

RewardFn = Callable[[Sequence[str]], np.ndarray]
TauLike = np.ndarray | Sequence[float] | Callable[[Sequence[str]], np.ndarray]

DEFAULT_MARKERS: tuple[str, ...] = tuple(MARKERS.values())
MARKER_WORDS: tuple[str, ...] = ("happy", "monday", "friday")
_WORD_RES = {w: re.compile(rf"\b{w}\b", re.IGNORECASE) for w in MARKER_WORDS}
# Enumerating every within-group pair is fine for A/B tests (~10 candidates); one huge
# group (all held-out texts) is sampled instead of materialising ~N^2/2 pairs.
_MAX_ENUMERATED_PAIRS = 5_000_000


def _texts(texts) -> list[str]:
    out = [str(t) for t in np.asarray(texts, dtype=object).reshape(-1)]
    if not out:
        raise ValueError("no texts given")
    return out


def _scores(reward_fn: RewardFn, texts: list[str]) -> np.ndarray:
    r = np.asarray(reward_fn(texts), dtype=np.float64).reshape(-1)
    if r.size != len(texts):
        raise ValueError(f"reward_fn returned {r.size} scores for {len(texts)} texts")
    return r


def _tau(tau: TauLike, texts: list[str]) -> np.ndarray:
    t = np.asarray(tau(texts) if callable(tau) else tau, dtype=np.float64).reshape(-1)
    if t.size != len(texts):
        raise ValueError(f"tau has {t.size} values for {len(texts)} texts")
    return t


def causal_corr(reward_fn: RewardFn, texts, tau: TauLike) -> float:
    """Pearson correlation of r(X) with tau(X); nan if either is constant."""
    texts = _texts(texts)
    r, t = _scores(reward_fn, texts), _tau(tau, texts)
    if r.size < 2 or np.ptp(r) == 0 or np.ptp(t) == 0:
        return float("nan")
    return float(np.corrcoef(r, t)[0, 1])


def spurious_gaps(reward_fn: RewardFn, texts, marker_effect: float | Sequence[float],
                  markers: Sequence[str] = DEFAULT_MARKERS) -> dict[str, float]:
    """Per marker: mean over texts of r(marker + X) - r(X), minus its true effect (0 is right).

    Texts already carrying a marker are stripped first, so X is always the unmarked text.
    `marker_effect` is one true effect for all markers or one per marker. Keys are the
    markers without surrounding spaces. The gap is in the reward's units, so it is
    comparable to the true effect for rewards on tau's (logit) scale.
    """
    base = [strip_marker(t) for t in _texts(texts)]
    effects = np.broadcast_to(np.asarray(marker_effect, np.float64), (len(markers),))
    r0 = _scores(reward_fn, base)
    # One reward call over all marked copies: batching is cheaper for model-based rewards.
    marked = [m + x for m in markers for x in base]
    r_MxN = _scores(reward_fn, marked).reshape(len(markers), len(base))
    gap_M = (r_MxN - r0[None, :]).mean(axis=1) - effects
    return {m.strip(): float(g) for m, g in zip(markers, gap_M)}


def spurious_gap(reward_fn: RewardFn, texts, marker_effect: float | Sequence[float],
                 markers: Sequence[str] = DEFAULT_MARKERS, reduce: str = "mean_abs") -> float:
    """The markers' spurious gaps (see spurious_gaps) as one number; 0 is right.

    reduce="mean_abs" (default) averages |gap| over markers; "mean" averages the signed gaps.
    The signed mean is blind to the usual confounding: Monday traffic is high and Friday
    traffic low, so a naive reward's Monday gap (~ +0.3) and Friday gap (~ -0.3) cancel.
    """
    gaps = np.array(list(spurious_gaps(reward_fn, texts, marker_effect, markers).values()))
    if reduce == "mean_abs":
        return float(np.abs(gaps).mean())
    if reduce == "mean":
        return float(gaps.mean())
    raise ValueError(f"spurious_gap: reduce must be 'mean_abs' or 'mean', got {reduce!r}")


def interventional_pairs(texts, tau: TauLike, groups=None, rng=None,
                         max_pairs: int | None = None, min_diff: float = 1e-9) -> np.ndarray:
    """Index pairs [P, 2] (i < j) of texts in the same group whose tau differs.

    Such pairs are what an A/B test (or the SCM under do(C)) can rank: only the content
    differs. `groups=None` puts all texts in one group. With `max_pairs`, a uniform random
    subset of that size is returned (drawn with `rng`, a Generator or seed).
    """
    texts = _texts(texts)
    t = _tau(tau, texts)
    n = len(texts)
    groups = np.zeros(n, np.int64) if groups is None else np.asarray(groups).reshape(-1)
    if groups.size != n:
        raise ValueError(f"groups has {groups.size} labels for {n} texts")
    rng = np.random.default_rng(rng)
    codes = np.unique(groups, return_inverse=True)[1].reshape(-1)
    sizes = np.bincount(codes)
    n_all = int((sizes * (sizes - 1) // 2).sum())
    if max_pairs is not None and n_all > _MAX_ENUMERATED_PAIRS:
        pairs = _sample_pairs(codes, sizes, rng, 4 * max_pairs)
    else:
        if n_all > _MAX_ENUMERATED_PAIRS:
            raise ValueError(f"{n_all} within-group pairs: pass max_pairs to sample them")
        pairs = _all_pairs(codes, sizes)
    pairs = pairs[np.abs(t[pairs[:, 0]] - t[pairs[:, 1]]) > min_diff]
    if max_pairs is not None and len(pairs) > max_pairs:
        pairs = pairs[np.sort(rng.choice(len(pairs), size=max_pairs, replace=False))]
    return pairs


def _all_pairs(codes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Every within-group pair, built per group size so groups of one size share triu_indices."""
    order = np.argsort(codes, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    out = [np.zeros((0, 2), np.int64)]
    for k in np.unique(sizes[sizes >= 2]):
        iu, ju = np.triu_indices(k, 1)
        s = starts[sizes == k][:, None]                        # [G_k, 1]
        out.append(np.stack([order[s + iu].ravel(), order[s + ju].ravel()], axis=1))
    pairs = np.concatenate(out)
    return np.sort(pairs, axis=1)


def _sample_pairs(codes, sizes, rng, n_draw: int) -> np.ndarray:
    """n_draw distinct within-group pairs, uniform over all pairs (for huge groups)."""
    order = np.argsort(codes, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    weight = sizes * (sizes - 1) / 2.0
    g = rng.choice(sizes.size, size=n_draw, p=weight / weight.sum())
    i = rng.integers(0, sizes[g])
    j = (i + rng.integers(1, sizes[g])) % sizes[g]             # j != i, uniform
    pairs = np.sort(np.stack([order[starts[g] + i], order[starts[g] + j]], axis=1), axis=1)
    return np.unique(pairs, axis=0)


def pair_acc(reward_fn: RewardFn, texts, tau: TauLike, pairs: np.ndarray) -> float:
    """Share of `pairs` the reward orders as tau does (ties 0.5); see interventional_pairs."""
    texts = _texts(texts)
    t = _tau(tau, texts)
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    if pairs.size and (pairs.min() < 0 or pairs.max() >= len(texts)):
        raise ValueError(f"pairs index outside 0..{len(texts) - 1}")
    used, inverse = np.unique(pairs, return_inverse=True)     # score each text once
    r = _scores(reward_fn, [texts[i] for i in used])[inverse.reshape(pairs.shape)]
    return pair_accuracy(r[:, 0], r[:, 1], t[pairs[:, 0]] > t[pairs[:, 1]])


def objective(tau_of_generations) -> float:
    """The policy's true objective: mean tau of its generations."""
    t = np.asarray(tau_of_generations, np.float64).reshape(-1)
    if t.size == 0:
        raise ValueError("objective: no generations")
    return float(t.mean())


def best_pick_objective(scores, tau, groups) -> float:
    """Best-of-n selection's objective: in each group (a story's candidate headlines) the
    text the reward scores highest is picked; the mean true tau of the picks. The policy
    here is uniform over a fixed candidate set, so no generator is trained (a cheap stand-in
    for the best-of-n objective of DESIGN.md section 4 where only the reward varies)."""
    r, t = np.asarray(scores, np.float64).reshape(-1), np.asarray(tau, np.float64).reshape(-1)
    g = np.asarray(groups).reshape(-1)
    if not r.size == t.size == g.size or r.size == 0:
        raise ValueError(f"scores, tau and groups need one equal, non-zero length; got "
                         f"{r.size}, {t.size}, {g.size}")
    if not np.isfinite(r).all():
        raise ValueError(f"scores are not finite at row {int(np.flatnonzero(~np.isfinite(r))[0]) + 1}")
    _, codes = np.unique(g, return_inverse=True)
    order = np.lexsort((-r, codes))                 # by group, best score first
    first = np.r_[True, codes[order][1:] != codes[order][:-1]]
    return float(t[order[first]].mean())


def pick_references(tau, groups) -> dict[str, float]:
    """The best-pick objective's reference points: "objective_oracle" (picks by tau itself)
    and "objective_random" (a uniform pick per group: the mean of its group's mean tau)."""
    t, g = np.asarray(tau, np.float64).reshape(-1), np.asarray(groups).reshape(-1)
    _, codes = np.unique(g, return_inverse=True)
    group_mean = np.bincount(codes, t) / np.bincount(codes)
    return {"objective_oracle": best_pick_objective(t, t, g),
            "objective_random": float(group_mean.mean())}


def normalised_objective(obj, obj_sft, obj_oracle, eps: float = 1e-9):
    """(obj - obj_sft) / (obj_oracle - obj_sft): 0 = SFT, 1 = oracle; nan if oracle ~ SFT."""
    obj, sft, ora = np.broadcast_arrays(*(np.asarray(v, np.float64)
                                          for v in (obj, obj_sft, obj_oracle)))
    denom = ora - sft
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(np.abs(denom) > eps, (obj - sft) / denom, np.nan)
    return float(out) if out.ndim == 0 else out


def marker_rate(texts) -> dict[str, float]:
    """Share of texts containing the word "happy", "monday", "friday" (any case), and any."""
    arr = [str(t) for t in np.asarray(texts, dtype=object).reshape(-1)]
    if not arr:
        return {w: float("nan") for w in MARKER_WORDS + ("any",)}
    hits = np.array([[bool(_WORD_RES[w].search(t)) for w in MARKER_WORDS] for t in arr])
    out = {w: float(hits[:, k].mean()) for k, w in enumerate(MARKER_WORDS)}
    out["any"] = float(hits.any(axis=1).mean())
    return out
