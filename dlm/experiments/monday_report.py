"""summary.md and markers.png of scripts.replicate_monday: tables over fine-tuning seeds
(the test units; generation seeds averaged inside), Welch tests, the paper's predictions."""
from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd
import scipy.stats

from dlm import outputs
from dlm.eval.stats import format_mean_se, mean_se, welch_t

MODELS: tuple[str, ...] = ("SFT", "DPO", "DeconfoundLM-DPO", "Control-DPO")
# Welch tests (fine-tuning seeds as units): each row is (model, reference)
COMPARISONS = (("DPO", "SFT"), ("DeconfoundLM-DPO", "SFT"), ("Control-DPO", "SFT"),
               ("DeconfoundLM-DPO", "DPO"), ("DeconfoundLM-DPO", "Control-DPO"),
               ("DPO", "Control-DPO"))
MARKERS: tuple[str, ...] = ("happy", "monday", "friday")
# The paper's row (SmolLM2-360M on StackExchange, 3,000 generations x 25 runs), percent.
PAPER = {"SFT": (24.3, 11.5, 8.9), "DPO": (35.4, 14.8, 2.9)}


def seed_means(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, ft_seed): generation seeds averaged inside (the test units)."""
    cols = [c for c in MARKERS + ("prefix_monday", "kl_to_ref") if c in frame]
    return frame.groupby(["model", "ft_seed"], sort=False)[cols].mean().reset_index()


def welch_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Welch t-tests of each marker share for COMPARISONS, fine-tuning seeds as the units."""
    units, rows = seed_means(frame), []
    for model, ref in COMPARISONS:
        x, y = (units[units["model"] == m] for m in (model, ref))
        if not len(x) or not len(y):
            continue
        for m in MARKERS:
            try:
                t, dof, p = welch_t(x[m], y[m])
            except ValueError:            # fewer than two units: no test
                t = dof = p = float("nan")
            rows.append({"comparison": f"{model} vs {ref}", "marker": m,
                         "difference (points)": round(x[m].mean() - y[m].mean(), 2),
                         "t": round(t, 2), "dof": round(dof, 1), "p": float(f"{p:.3g}")})
    return pd.DataFrame(rows)


def t_interval(values, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of `values` (nan with fewer than two)."""
    mean, se = mean_se(values)
    if len(values) < 2:
        return float("nan"), float("nan")
    half = scipy.stats.t.ppf(0.5 + level / 2, len(values) - 1) * se
    return mean - half, mean + half


def prediction_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The paper's predictions, checked: DPO raises Monday and lowers Friday (vs SFT), and
    DeconfoundLM-DPO's mean lies in the negative control's 95% interval (over ft seeds)."""
    units, rows = seed_means(frame), []
    mean = lambda model, m: units.loc[units["model"] == model, m].mean()  # noqa: E731
    for m in ("monday", "friday"):
        lo, hi = t_interval(units.loc[units["model"] == "Control-DPO", m].to_numpy())
        dec = mean("DeconfoundLM-DPO", m)
        shift = mean("DPO", m) - mean("SFT", m)
        rows.append({"marker": m, "DPO - SFT (points)": round(shift, 2),
                     "DPO as predicted": bool(shift > 0 if m == "monday" else shift < 0),
                     "control 95% interval": f"[{lo:.1f}, {hi:.1f}]",
                     "DeconfoundLM-DPO": round(dec, 2),
                     "inside": bool(lo <= dec <= hi)})
    return pd.DataFrame(rows)


def model_table(frame: pd.DataFrame) -> pd.DataFrame:
    units, rows = seed_means(frame), []
    for model in MODELS:
        sub = units[units["model"] == model]
        cells = {m: format_mean_se(*mean_se(sub[m]), 1) for m in MARKERS + ("prefix_monday",)}
        rows.append({"model": model, "ft seeds": len(sub), **cells,
                     "KL to SFT (nats)": format_mean_se(*mean_se(sub["kl_to_ref"]), 2)})
    for model, vals in PAPER.items():
        rows.append({"model": f"paper: {model}", "ft seeds": 25,
                     **{m: f"{v:.1f}" for m, v in zip(MARKERS, vals)}, "prefix_monday": "",
                     "KL to SFT (nats)": ""})
    return pd.DataFrame(rows)


def _sentence(note: str) -> str:
    return note[:1].upper() + note[1:] + ". " if note else ""


def summary_md(cfg, frame, info, effects, pair_stats, seconds) -> str:
    estimator = ("one fixed effect per test (within-test contrasts)" if cfg.test_effects
                 else "no test effects (across tests)")
    estimator += f", text term {cfg.text_spec}" if cfg.text_spec else ", no text term"
    lines = [
        "# The Monday experiment", "",
        f"Data: {info['source']}. {_sentence(info['left_out'])}"
        f"Arms (postings): {info['n_arms']}; stories SFT / preference / "
        f"held-out: {info['n_stories']}. Weekday effects on the logit: Monday "
        f"{cfg.monday_effect:+g}, Friday {cfg.friday_effect:+g}; markers on Monday/Friday "
        f"headlines with probability {cfg.p_marker:g}. SFT: preset `{cfg.sft_preset}` "
        f"({info['sft_steps']} steps)"
        f"{' (model ' + cfg.model + ')' if cfg.model else ''}, "
        f"{'one per fine-tuning seed' if cfg.sft_per_seed else 'one policy shared by all seeds'}. "
        f"DPO: beta {cfg.beta:g}, {cfg.steps} steps x {cfg.batch_size} pairs, lr {cfg.lr:g}.", "",
        f"Pairs: {info['pairs']['candidates']} within-test candidates, {info['pairs']['kept']} "
        f"kept (|adjusted margin| > {cfg.pair_z:g} x se; se from the binomial noise of both "
        "arms and the estimated weekday difference). Filtered pairs rather than soft labels: "
        "most within-test CTR differences are within binomial noise, so soft labels "
        "P(a preferred to b) sit near 0.5 and their tilt is exactly the weekday estimate's "
        "error; dropping the undecided pairs leaves only pairs whose order the estimate's "
        "error cannot flip (at the chosen z), needs no change to the DPO loss, and gives the "
        "three orderings one pair set, so the models differ only in the ordering.", "",
        f"## Marker shares of generations (percent, mean ± se over {len(cfg.ft_seeds)} "
        f"fine-tuning seeds, each the mean of {len(cfg.gen_seeds)} generation seeds; "
        f"{info['n_generations']} generations per run for {info['n_eval_ledes']} held-out ledes)",
        "", outputs.markdown_table(model_table(frame)),
        "Control-DPO (the negative control): DPO on the same pairs ordered by the real CTR "
        "(no weekday shift). prefix_monday: generations that start with \"Happy Monday\". "
        "The paper's rows (SmolLM2-360M, StackExchange, 3,000 generations x 25 runs) are for "
        "reference only.", "",
        "## Welch t-tests (fine-tuning seeds as units, generation seeds averaged inside)", "",
        outputs.markdown_table(welch_table(frame)),
        "## The paper's predictions", "",
        outputs.markdown_table(prediction_table(frame)),
        "Predicted: DPO raises Monday and lowers Friday; DeconfoundLM-DPO stays within the "
        "negative control's interval (Student-t over fine-tuning seeds).", "",
        "## Estimated weekday effects (centred, logit; 90% intervals) vs the truth", "",
        outputs.markdown_table(effects.round(3)),
        f"DeconfoundLM fits g(weekday) with {estimator} to the observed logit of the "
        "preference split, cross-fitted by test. At p_marker = 1 the marker is collinear "
        "with its day: a marker effect is not identified and is attributed to the day "
        "(DESIGN.md section 3).", "",
        "## Preference pairs (the kept pairs, three orderings)", "",
        outputs.markdown_table(pair_stats.round(3)),
        "win_monday: share of pairs whose preferred headline carries \"Happy Monday!\" "
        "(lose_*: the rejected one). marked_wins_mixed: among pairs of a marked and an "
        "unmarked headline, the share won by the marked one. agrees_with_real: share of pairs "
        "ordered as the arms' real CTR orders them (the negative control's ordering).", "",
        (f"Wall time {seconds:.0f} s. " if seconds == seconds else "")
        + (info["runs_note"][:1].upper() + info["runs_note"][1:] + ". "
           if info.get("runs_note") else "") + "Samples: samples.md.", ""]
    return "\n".join(lines)


def plot(frame: pd.DataFrame, path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    width, units = 0.8 / len(MODELS), seed_means(frame)
    for k, (model, colour) in enumerate(zip(MODELS, ["#999999", "#c04040", "#3070b0",
                                                     "#40a060"])):
        sub = units[units["model"] == model]
        stats = [mean_se(sub[m]) for m in MARKERS]
        ax.bar(np.arange(len(MARKERS)) + (k - 1.5) * width, [s[0] for s in stats], width,
               yerr=[0.0 if np.isnan(s[1]) else s[1] for s in stats], capsize=3,
               color=colour, label=model)
    ax.set_xticks(np.arange(len(MARKERS)), [f'"{m.title()}"' for m in MARKERS])
    ax.set_ylabel("generations containing (%)")
    ax.set_title("Marker words in generations (mean ± se over ft seeds)")
    ax.legend(fontsize=8)
    outputs.save_figure(path, fig)
