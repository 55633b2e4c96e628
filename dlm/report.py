"""Generic report helpers: per-level summaries and the figures a deconfounding report shows.

Every function returns a matplotlib Figure (the caller saves it with dlm.outputs, after
all computation, so a failed run writes nothing) or plain arrays. Nothing here knows a
particular dataset: levels are labels, series are arrays over levels.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def level_means(values_N: np.ndarray, codes_N: np.ndarray, n_levels: int,
                weights_N: np.ndarray | None = None) -> np.ndarray:
    """Weighted mean of `values` per level code -> [L]; NaN for a level with no rows."""
    w = np.ones(len(values_N)) if weights_N is None else np.asarray(weights_N, np.float64)
    num = np.bincount(codes_N, weights=w * np.asarray(values_N, np.float64), minlength=n_levels)
    den = np.bincount(codes_N, weights=w, minlength=n_levels)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def centre_like(raw_L: np.ndarray, ref_L: np.ndarray) -> np.ndarray:
    """`raw` shifted to the mean of `ref` over the levels where raw is defined, so a raw
    series and a centred effect can share an axis."""
    has = np.isfinite(raw_L)
    if not has.any():
        return raw_L
    return raw_L - raw_L[has].mean() + ref_L[has].mean()


def _ticks(ax, labels: Sequence[str], max_ticks: int = 16) -> None:
    step = max(1, int(np.ceil(len(labels) / max_ticks)))
    idx = np.arange(0, len(labels), step)
    ax.set_xticks(idx, [labels[i] for i in idx], rotation=45 if step > 1 or len(labels) > 8 else 0,
                  ha="right" if step > 1 or len(labels) > 8 else "center", fontsize=8)


def effect_figure(name: str, kind: str, labels: Sequence[str], mean: np.ndarray, lo: np.ndarray,
                  hi: np.ndarray, raw: np.ndarray | None = None, raw_label: str = "raw level mean",
                  interval: float = 0.9, scale: str = "logit"):
    """A confounder's estimated effect per level with its interval, and optionally the raw
    per-level mean of the outcome (centred alike) for comparison."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    x = np.arange(len(labels))
    if kind == "time":
        ax.fill_between(x, lo, hi, color="C0", alpha=0.25, lw=0, label=f"{interval:.0%} interval")
        ax.plot(x, mean, "C0-", lw=1.8, label="estimated effect")
    else:
        ax.errorbar(x, mean, yerr=[mean - lo, hi - mean], fmt="o", color="C0", capsize=3,
                    label=f"estimated effect ({interval:.0%} interval)")
    if raw is not None:
        style = "-" if kind == "time" else "s"
        ax.plot(x, raw, style, color="C1", lw=1.0, alpha=0.8, mfc="none", label=raw_label)
    ax.axhline(0, color="0.8", lw=0.8)
    _ticks(ax, list(labels))
    ax.set_xlabel(name)
    ax.set_ylabel(f"effect ({scale} scale, centred)")
    ax.set_title(f"Estimated effect of {name}")
    ax.legend(frameon=False, fontsize=8)
    return fig


def before_after_figure(name: str, kind: str, labels: Sequence[str], before: np.ndarray,
                        after: np.ndarray, scale: str = "logit"):
    """Mean outcome per level before and after adjustment: the confounder's pattern should
    be gone from the adjusted series."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    x = np.arange(len(labels))
    style = "-" if kind == "time" else "o"
    ax.plot(x, before, style, color="C1", lw=1.2, label="observed")
    ax.plot(x, after, style, color="C2", lw=1.2, label="adjusted (observed - g_hat)")
    _ticks(ax, list(labels))
    ax.set_xlabel(name)
    ax.set_ylabel(f"mean outcome ({scale})")
    ax.set_title(f"Outcome by {name}, before and after adjustment")
    ax.legend(frameon=False, fontsize=8)
    return fig


def distribution_figure(before_N: np.ndarray, after_N: np.ndarray, scale: str = "logit"):
    """Histograms of the unit outcomes before and after adjustment."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 3.2))
    both = np.concatenate([before_N, after_N])
    lo, hi = np.quantile(both, [0.005, 0.995])
    bins = np.linspace(lo, hi, 60) if hi > lo else 30
    ax.hist(before_N, bins=bins, alpha=0.5, color="C1", label="observed")
    ax.hist(after_N, bins=bins, alpha=0.5, color="C2", label="adjusted")
    ax.set_xlabel(f"outcome per unit ({scale})")
    ax.set_ylabel("units")
    ax.legend(frameon=False, fontsize=8)
    return fig


def overlap_figure(overlap: pd.DataFrame, threshold: float):
    """Per confounder, max |SMD| of the text's main components for each level."""
    plt = pyplot()
    names = list(dict.fromkeys(overlap.confounder))
    fig, axes = plt.subplots(len(names), 1, figsize=(7.5, 2.2 * max(len(names), 1)), squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        g = overlap[overlap.confounder == name]
        x = np.arange(len(g))
        colors = np.where(g.flagged.to_numpy(), "C3", "C0")
        ax.bar(x, g.max_abs_smd.fillna(0).to_numpy(), color=colors)
        ax.axhline(threshold, color="C3", lw=0.8, ls="--")
        _ticks(ax, list(g.level))
        ax.set_ylabel("max |SMD|")
        ax.set_title(f"Text overlap across {name} (level vs rest)", fontsize=9)
    fig.tight_layout()
    return fig


def loss_figure(losses: np.ndarray):
    """The SVI loss (negative ELBO) per step."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 3.0))
    ax.plot(np.arange(1, len(losses) + 1), losses, lw=0.8)
    ax.set_xlabel("SVI step")
    ax.set_ylabel("loss (-ELBO)")
    ax.set_yscale("symlog")
    return fig
