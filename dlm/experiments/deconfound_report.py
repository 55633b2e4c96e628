"""report.md of scripts.deconfound: its markdown sections and figures, from an api.Result.

build_report / build_figures take everything computed (nothing is written here); the
script saves them after all computation, so a failed run leaves no partial report.
"""
from __future__ import annotations

import re

import numpy as np

from dlm import api, outputs
from dlm import finetune as ft
from dlm import report as rep
from dlm.causal.diagnostics import DiagnosticsConfig, level_codes
from dlm.causal.fit import EstimatorConfig

TABLE_MAX_LEVELS = 24     # longer effect lists (weeks) are summarised in report.md


# ---- per-confounder series for the plots ---------------------------------------------------
def confounder_series(result: api.Result, name: str) -> dict:
    """labels, estimated effect (mean, lo, hi), observed and adjusted mean outcome per level."""
    log, adj = result.log, result.adjusted
    conf = log.confounders[name]
    weights = log.trials if log.is_binomial else None
    eff = result.effects()
    eff = eff[eff.parameter == name]
    if conf.kind == "numeric":
        codes, labels = level_codes(conf, 10)
        x = rep.level_means(conf.values, codes, len(labels))
        slope = eff.iloc[0]
        dx = x - adj.fit.design.block(name).center
        mean = slope["mean"] * dx
        lo = np.minimum(slope["lo"] * dx, slope["hi"] * dx)
        hi = np.maximum(slope["lo"] * dx, slope["hi"] * dx)
    else:
        codes, labels = np.asarray(conf.values, np.int64), [str(v) for v in conf.levels]
        mean, lo, hi = (eff[c].to_numpy() for c in ("mean", "lo", "hi"))
    before = rep.level_means(log.logit_outcome(), codes, len(labels), weights)
    after = rep.level_means(adj.logit_adjusted, codes, len(labels), weights)
    raw = before
    if log.is_binomial:          # the level's pooled rate (e.g. weekly CTR), on the logit scale
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = rep.level_means(log.successes / log.trials, codes, len(labels), weights)
            raw = np.log(rate / (1 - rate))
    return dict(kind=conf.kind, labels=labels, mean=mean, lo=lo, hi=hi, before=before,
                after=after, raw=rep.centre_like(raw, mean))


def slug(name: str) -> str:
    """A confounder name as a safe file-name part."""
    return re.sub(r"[^\w.-]+", "_", name)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


# ---- report --------------------------------------------------------------------------------
def _effect_section(name: str, s: dict, scale: str, interval: float) -> str:
    lines = [f"### {name} ({s['kind']})", "", f"![effect of {name}](effect_{slug(name)}.png)", "",
             f"![outcome by {name}](adjusted_{slug(name)}.png)", ""]
    r = _corr(s["mean"], s["raw"])
    if np.isfinite(r):
        what = "rate (logit of summed successes / trials)" if scale == "logit" else "outcome"
        lines.append(f"Correlation of the estimated effect with the observed {what} per "
                     f"level: {r:+.2f}; the rest of the observed pattern is attributed to the "
                     "text and the other confounders.")
    spread = lambda v: float(np.nanmax(v) - np.nanmin(v))  # noqa: E731
    lines.append(f"Spread of the per-level mean outcome (max - min): observed "
                 f"{spread(s['before']):.3f}, adjusted {spread(s['after']):.3f}.")
    if s["kind"] == "numeric":
        lines.append("Effect per level is slope x (bin mean - centre); the slope is in effects.csv.")
    elif len(s["labels"]) <= TABLE_MAX_LEVELS:
        import pandas as pd

        t = pd.DataFrame({"level": s["labels"], "effect": s["mean"], f"lo ({interval:.0%})": s["lo"],
                          f"hi ({interval:.0%})": s["hi"], "observed mean": s["before"],
                          "adjusted mean": s["after"]})
        lines += ["", outputs.markdown_table(t)]
    else:
        i, j = int(np.argmin(s["mean"])), int(np.argmax(s["mean"]))
        lines.append(f"{len(s['labels'])} levels; lowest effect {s['mean'][i]:+.3f} at "
                     f"{s['labels'][i]}, highest {s['mean'][j]:+.3f} at {s['labels'][j]}; "
                     f"first to last level: {s['mean'][-1] - s['mean'][0]:+.3f}. All values in "
                     "effects.csv.")
    return "\n".join(lines) + "\n"


def _diagnostics_section(diag, dcfg: DiagnosticsConfig, cfg: EstimatorConfig,
                         groups: bool) -> str:
    import pandas as pd

    col, ovl, conv = diag.collinearity, diag.overlap, diag.convergence
    lines = ["## Diagnostics", "", "### Text features collinear with a confounder", "",
             f"Flag: >= {dcfg.share_threshold:.0%} of a feature's units (rows where it is non-zero, "
             f"at least {dcfg.min_units}) in one level, or |corr| >= {dcfg.corr_threshold}. Such a "
             "feature's effect goes to the confounder (the estimator's identifying assumption).", ""]
    top = col.head(max(10, int(col.flagged.sum()))) if len(col) else col
    lines += [outputs.markdown_table(top) if len(top) else "(no text term)", ""]
    phr = diag.phrases
    where = f">= {dcfg.min_units} rows" + (f" of >= {dcfg.phrase_min_groups} groups"
                                           if groups else "")
    lines += [f"Phrases of the text itself (word 1-2 grams in {where}) flagged by the same "
              f"rule: {len(phr)}" + (" (all in phrases.csv):" if len(phr) else "."), ""]
    if len(phr):
        lines += [outputs.markdown_table(phr.head(20)), ""]
    lines += ["### Overlap of content across confounder levels", "",
              f"Largest |standardised mean difference| of the top {dcfg.n_components} text "
              f"components, level vs rest (flag >= {dcfg.smd_threshold}); worst level of each:", ""]
    if len(ovl) and ovl.max_abs_smd.notna().any():
        worst = ovl.loc[ovl.dropna(subset=["max_abs_smd"]).groupby("confounder", sort=False)
                        .max_abs_smd.idxmax()]
        counts = ovl.groupby("confounder", sort=False).flagged.sum().rename("levels flagged")
        lines += [outputs.markdown_table(worst.merge(counts, on="confounder")), "",
                  "![overlap](overlap.png)", ""]
    else:
        lines += ["(no text term or no comparable levels)", ""]
    lines += _log_checks_lines(diag, dcfg)
    lines += ["### Convergence", ""]
    row = {k: v for k, v in conv.items() if k != "losses"}
    lines += [outputs.markdown_table(pd.DataFrame([row]), floatfmt=".3g"), ""]
    lines += _convergence_notes(conv, cfg, dcfg)
    return "\n".join(lines) + "\n"


def _log_checks_lines(diag, dcfg: DiagnosticsConfig) -> list[str]:
    """Randomisation (sample ratio mismatch per period) and determined confounders."""
    from dlm.causal.log_checks import flagged_runs

    lines = []
    srm = diag.srm
    if len(srm):
        flagged = srm[srm.flagged]
        per = f"{diag.srm_time} period" if diag.srm_time else "the whole log (no time confounder)"
        lines += ["### Randomisation: sample ratio mismatch", "",
                  f"Per group with 2+ arms: chi-square of its arms' trials against an equal "
                  f"split. Per {per}: the share of groups with p < {dcfg.srm_alpha:g} (about "
                  f"{dcfg.srm_alpha:g} under randomisation); flagged at >= {dcfg.srm_share:.0%} "
                  f"of >= {dcfg.srm_min_groups} groups. {len(diag.srm_groups):,} groups in "
                  f"{len(srm)} periods; flagged: {len(flagged)} period(s)"
                  + (f" ({', '.join(flagged_runs(srm))})" if len(flagged) else "")
                  + ". Every period in srm.csv.", ""]
        if len(flagged):
            lines += [outputs.markdown_table(flagged.drop(columns="flagged"), floatfmt=".3g"), ""]
        lines += ["![sample ratio mismatch](srm.png)", ""]
    if len(diag.determined):
        lines += ["### Confounders determined by another", "",
                  "Each level of `determined_by` holds a single value of `confounder`: the data "
                  "cannot separate their effects (the warnings above say what to do).", "",
                  outputs.markdown_table(diag.determined), ""]
    return lines


def srm_figure(srm, threshold: float, time: str | None, alpha: float):
    """Share of groups with a sample ratio mismatch per period; flagged periods in red."""
    plt = rep.pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.06 * len(srm)), 3.0))
    x = np.arange(len(srm))
    ax.plot(x, srm.share, lw=0.8, color="0.4")
    ax.scatter(x, srm.share, s=10, c=np.where(srm.flagged, "tab:red", "tab:blue"), zorder=3)
    ax.axhline(threshold, ls="--", lw=0.8, color="tab:red", label=f"flag at {threshold:.0%}")
    step = max(1, len(srm) // 12)
    ax.set_xticks(x[::step], list(srm.period)[::step], rotation=45, fontsize=7)
    ax.set_xlabel(time or "period")
    ax.set_ylabel(f"share of groups, p < {alpha:g}")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return fig


def _convergence_notes(conv: dict, cfg: EstimatorConfig, dcfg: DiagnosticsConfig) -> list[str]:
    """What the convergence table means for this method, and the SVI loss curve."""
    state = "converged" if conv["newton_converged"] else "did NOT converge"
    lines = [f"Newton's method (the MAP every method starts from) {state} in "
             f"{conv['newton_iterations']} iterations; grad_max {conv['grad_max']:.2g} is the "
             "largest |gradient| of the log posterior at the MAP (internal parametrisation; ~0 "
             "at the optimum).", ""]
    if conv.get("losses") is not None:
        lines += [f"SVI ({len(conv['losses'])} steps from the MAP): the loss (-ELBO) per step; "
                  f"final {conv['final_loss']:.6g}, relative change over the last tenth "
                  f"{conv['loss_tail_change']:.1e} (a warning is raised above 1e-3).", "",
                  "![SVI loss](svi_loss.png)", ""]
    if cfg.method == "nuts" and "rhat_max" in conv:
        lines += [f"NUTS ({cfg.nuts_samples} draws after {cfg.nuts_warmup} warm-up, one chain): "
                  f"largest split R-hat {conv['rhat_max']:.3f} ({conv['rhat_flagged']} "
                  f"parameter(s) above {dcfg.rhat_threshold}), smallest effective sample size "
                  f"{conv['ess_min']:.0f}.", ""]
    return lines


def build_report(args, result: api.Result, diag, series: dict, cfg: EstimatorConfig,
                 dcfg: DiagnosticsConfig, seconds: float) -> str:
    log = result.log
    scale = "logit" if log.is_binomial else "outcome"
    outcome = (f"{args.successes} / {args.trials} (binomial; logit scale)" if log.is_binomial
               else f"{args.outcome} (real)")
    n_groups = "none" if log.group is None else f"{args.group} ({len(np.unique(log.group)):,} groups)"
    conf = ", ".join(f"{n} ({c.kind}{'' if c.levels is None else f', {c.n_levels} levels'})"
                     for n, c in log.confounders.items())
    head = [f"# Deconfounded log: {args.data.name}", "",
            f"- rows: {len(log):,}; content: {args.content}; outcome: {outcome}; groups: {n_groups}",
            f"- confounders: {conf}",
            f"- text term: {result.text_spec} ({len(result.feature_names)} features); estimator: "
            f"{cfg.method}, {cfg.covariance} covariance, {cfg.folds}-fold cross-fit by group, "
            f"seed {cfg.seed}; wall time {seconds:.1f} s", "",
            "## Warnings", ""]
    head += [f"- {w}" for w in diag.warnings] or ["- none: no collinear text feature, no poor "
                                                   "overlap, no confounder determined by "
                                                   "another, no sample ratio mismatch, the fit "
                                                   "converged"]
    head += ["", "## Confounder effects", "",
             f"Centred effects ({scale} scale) with {cfg.interval:.0%} intervals from the full-data "
             "fit; the orange series is the observed outcome per level (for counts the pooled "
             "rate's logit), centred alike. "
             "adjusted.csv uses the cross-fitted g_hat.", ""]
    body = [_effect_section(n, s, scale, cfg.interval) for n, s in series.items()]
    tail = ["## Outcome before and after adjustment", "", "![distribution](distribution.png)", ""]
    return "\n".join(head + body + tail) + "\n" + _diagnostics_section(
        diag, dcfg, cfg, log.group is not None)


def build_figures(result: api.Result, diag, series: dict, dcfg: DiagnosticsConfig) -> dict:
    """Every figure of the report, keyed by file name (saved only at the end)."""
    scale = "logit" if result.log.is_binomial else "outcome"
    figs = {}
    for name, s in series.items():
        raw_label = ("observed rate per level (logit, centred)" if scale == "logit"
                     else "observed mean per level (centred)")
        figs[f"effect_{slug(name)}.png"] = rep.effect_figure(
            name, s["kind"], s["labels"], s["mean"], s["lo"], s["hi"], s["raw"], raw_label,
            result.cfg.interval, scale)
        figs[f"adjusted_{slug(name)}.png"] = rep.before_after_figure(
            name, s["kind"], s["labels"], s["before"], s["after"], scale)
    figs["distribution.png"] = rep.distribution_figure(result.log.logit_outcome(),
                                                       result.adjusted.logit_adjusted, scale)
    if len(diag.overlap):
        figs["overlap.png"] = rep.overlap_figure(diag.overlap, dcfg.smd_threshold)
    if len(diag.srm):
        figs["srm.png"] = srm_figure(diag.srm, dcfg.srm_share, diag.srm_time, dcfg.srm_alpha)
    if diag.convergence.get("losses") is not None:
        figs["svi_loss.png"] = rep.loss_figure(diag.convergence["losses"])
    return figs


def finetune_section(tuned: ft.FinetuneResult) -> str:
    """report.md's summary of DIR/finetune/."""
    s = tuned.summary.set_index("policy")
    diff = s.loc[tuned.cfg.kind, "mean_reward"] - s.loc["sft", "mean_reward"]
    return "\n".join([
        "## Fine-tuned policy", "",
        f"{tuned.cfg.kind} against the {tuned.info['reward']} reward, from an SFT policy "
        f"(preset `{tuned.cfg.sft_preset}`, model {tuned.sft_cfg.model}) on this log's "
        f"{tuned.info['n_stories']} stories; generations for "
        f"{tuned.info['n_heldout_contexts_used']} held-out contexts:", "",
        outputs.markdown_table(tuned.summary[["policy", "n", "mean_reward", "se_reward",
                                              "kl_to_sft", "marker_rate"]], floatfmt=".4g"),
        f"Mean reward {tuned.cfg.kind} - SFT: {diff:+.4f}. Details, samples and the policy's "
        "parameters: finetune/ (summary.md, samples.md, samples.csv, policy/checkpoints/).", ""])


def reward_section(scores, rewards) -> str:
    lines = ["## Reward model", "", "| reward | saved in | corr(score, mean adjusted outcome) |",
             "|---|---|---|"]
    for r in rewards:
        name = api.reward_name(r)
        corr = _corr(scores[f"score_{name}"].to_numpy(), scores.mean_adjusted.to_numpy())
        lines.append(f"| {name} | rewards/{name}/ | {corr:+.3f} |")
    return "\n".join(lines) + "\n\nScores of every distinct content: reward_scores.csv; " \
        "training curve: metrics.jsonl.\n"


def iv_section(result: api.Result, instrument: str, weak: list[str]) -> str:
    """P's effect by each estimator of dlm.causal.iv, the first-stage F, the weak warning."""
    lines = [f"## Endogenous confounder {result.endogenous!r} (instrument {instrument!r})", "",
             "| estimator | effect (logit per unit) | interval | kind | first-stage F |",
             "|---|---|---|---|---|"]
    for e in result.iv.values():
        F = "" if np.isnan(e.first_stage_F) else f"{e.first_stage_F:.1f}"
        ci = "" if np.isnan(e.lo) else f"[{e.lo:+.4f}, {e.hi:+.4f}]"
        lines.append(f"| {e.estimator} | {e.effect:+.4f} | {ci} | {e.interval} | {F} |")
    lines += ["", "The adjustment uses the control function: the instrument is left out of the "
              "outcome model, the first-stage residual is added as a control, and the adjusted "
              "outcome subtracts every confounder's effect, the endogenous one's included. "
              "Assumes the instrument moves it (F >= 10), reaches the outcome only through it, "
              "and is independent of the unobserved shocks."]
    lines += [f"\n**Warning:** {w}" for w in weak]
    return "\n".join(lines) + "\n"


def hybrid_table(h):
    """hybrid.csv: w* and its pieces, one row."""
    import pandas as pd

    return pd.DataFrame([{"w_experimental": h.w, "bias2": h.bias2, "var_B": h.var_B,
                          "var_U": h.var_U, "mse_B": h.mse_B, "n_groups": h.n_groups,
                          "n_arms": h.n_rows,
                          "fold_w": " ".join(f"{w:.3f}" for w in h.fold_w)}])


def hybrid_scores(result, scorer):
    """hybrid_scores.csv: every distinct content of the log, its hybrid reward and the
    rewards of the two parts (w* mixes them)."""
    import numpy as np
    import pandas as pd

    texts = list(dict.fromkeys(np.asarray(result.log.content).astype(str)))
    return pd.DataFrame({"content": texts, "hybrid": scorer(texts),
                         "observational": scorer.observational(texts),
                         "experimental": scorer.experimental(texts)})


def hybrid_section(h, args) -> str:
    src = (f"the experimental file {args.experimental_data}" if args.experimental_data
           else f"this log's randomised groups ({args.randomised_groups} = 1)")
    return "\n".join([
        "## Hybrid reward", "",
        f"Deconfounded observational reward (ridge on the adjusted outcomes) and experimental "
        f"reward (ridge on the within-group outcomes of {src}: {h.n_rows:,} arms in "
        f"{h.n_groups:,} randomised groups), both on the --text-features representation; "
        "the experimental reward refitted without one fold of groups and scored on it "
        "(within-group contrasts)"
        + ("; the observational one fitted once (a separate file: its Var_B is 0 and "
           "Bias^2 holds it)." if args.experimental_data else
           "; the observational one too, without its rows of those groups."),
        "", "| w* (experimental side) | Bias_B^2 | Var_B | Var_U |", "|---|---|---|---|",
        f"| {h.w:.3f} | {h.bias2:.5f} | {h.var_B:.5f} | {h.var_U:.5f} |", "",
        "w* = (Bias^2 + Var_B) / (Bias^2 + Var_B + Var_U); the hybrid reward is "
        "w* r_U + (1 - w*) r_B (hybrid_scores.csv). Per-fold w*: "
        + ", ".join(f"{w:.3f}" for w in h.fold_w) + ".",
        "w* is the held-out least-squares optimal weight (dlm.causal.hybrid.model_weight); "
        "its pieces are the issue's Bias^2, Var_B, Var_U when the two rewards' errors are "
        "independent, otherwise net of the error they share. Assumes the randomised groups "
        "represent the use."]) + "\n"
