"""Diagnostics that protect a user of the estimator from its blind spots.

collinearity  A text feature (nearly) determined by a confounder level, the "Happy Monday!"
              case: the estimator gives such a feature's effect to the level (fit.py's
              identifying assumption), so the user must know which features these are.
              Checked on the representation's features and on the texts' own phrases
              (a hashed representation can dilute a marker in a shared bucket).
              Per feature and confounder: the level holding the largest share of the
              feature's units (rows where it is non-zero; minority levels only) and the
              Pearson correlation of the feature with that level's indicator (or with a
              numeric confounder).
overlap       How far the content's distribution in one confounder level is from the rest:
              the difference in means of the text's main principal components, level vs
              rest, in units of each component's overall sd (a standardised mean
              difference; numeric confounders in quantile bins). The overall sd, not the
              pooled within-group one, so a level where a binary component is constant
              (no marker on Wednesdays) is not flagged for that alone. Large values mean
              the text term is identified only by extrapolation there.
convergence   Newton: iterations, converged, the log posterior's gradient at the mode;
              SVI: the loss curve when the fit recorded one (info["svi_losses"]);
              NUTS: split R-hat and effective sample size of every parameter.
srm           Sample ratio mismatch of a grouped binomial log, per time period
              (dlm.causal.log_checks): where the groups' arms got unequal trials,
              randomisation looks broken.
determined    A confounder fixed by another's level (dlm.causal.log_checks).

Arrays in, tables out (pandas); no Flax, no plotting.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import scipy.special

from dlm.causal import log_checks
from dlm.causal.fit import Fit
from dlm.causal.log_checks import DETERMINED_COLUMNS, SRM_GROUP_COLUMNS, SRM_PERIOD_COLUMNS
from dlm.data.log import Confounder

_CHUNK = 65_536     # rows per pass over a large text matrix (float64 copies stay small)


@dataclasses.dataclass(frozen=True)
class DiagnosticsConfig:
    share_threshold: float = 0.95    # flag: >= this share of a feature's units in one level
    corr_threshold: float = 0.9      # flag: |corr(feature, level indicator)| >= this
    min_units: int = 20              # a share needs at least this many units to count
    max_level_share: float = 0.5     # ... and a level holding at most this share of rows
    phrase_min_groups: int = 5       # phrases checked only if used in >= this many groups
    smd_threshold: float = 1.0       # overlap: flag a level whose mean text is >= 1 sd off the rest
    n_components: int = 5            # principal components of the text compared across levels
    numeric_bins: int = 5            # quantile bins of a numeric confounder (overlap)
    min_level_rows: int = 30         # levels with fewer rows get no SMD (too noisy)
    rhat_threshold: float = 1.05     # NUTS: flag parameters above this split R-hat
    max_warnings: int = 8            # flagged features (and phrases) spelled out as warnings
    srm_alpha: float = 1e-3          # SRM: a group's chi-square p below this is a mismatch
    srm_share: float = 0.25          # ... flag a period where this share of groups has one
    srm_min_groups: int = 5          # ... among at least this many groups


@dataclasses.dataclass(frozen=True, eq=False)
class Diagnostics:
    collinearity: pd.DataFrame   # feature, confounder, level, units, share, level_share, corr, flagged
    phrases: pd.DataFrame        # the same for the texts' own words/phrases (flagged ones)
    overlap: pd.DataFrame        # confounder, level, rows, max_abs_smd, component, flagged
    convergence: dict            # method, newton_iterations, newton_converged, grad_max, ...
    warnings: tuple[str, ...]    # one plain-language line per problem found
    srm: pd.DataFrame = dataclasses.field(      # per period: groups, groups_p_below, share, ...
        default_factory=lambda: pd.DataFrame(columns=SRM_PERIOD_COLUMNS))
    srm_groups: pd.DataFrame = dataclasses.field(   # per group: arms, trials, chi2, p, ...
        default_factory=lambda: pd.DataFrame(columns=SRM_GROUP_COLUMNS))
    srm_time: str | None = None  # the time confounder whose levels are the SRM periods
    determined: pd.DataFrame = dataclasses.field(   # confounder, determined_by, ...
        default_factory=lambda: pd.DataFrame(columns=DETERMINED_COLUMNS))


# ---- collinearity -------------------------------------------------------------------------
def _onehot(codes: np.ndarray, n_levels: int) -> sp.csr_matrix:
    n = len(codes)
    return sp.csr_matrix((np.ones(n), np.asarray(codes, np.int64), np.arange(n + 1)),
                         shape=(n, n_levels))


def _dense(m) -> np.ndarray:
    return m.toarray() if sp.issparse(m) else np.asarray(m)


def _column_moments(text_NxF) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sd per column (dense: accumulated in float64 over row chunks; or sparse)."""
    n, f = text_NxF.shape
    if sp.issparse(text_NxF):
        x = sp.csr_matrix(text_NxF, dtype=np.float64)
        s1, s2 = _dense(x.sum(0)).ravel(), _dense(x.multiply(x).sum(0)).ravel()
    else:
        s1, s2 = np.zeros(f), np.zeros(f)
        for lo in range(0, n, _CHUNK):
            x = np.asarray(text_NxF[lo:lo + _CHUNK], np.float64)
            s1 += x.sum(0)
            s2 += (x * x).sum(0)
    mean = s1 / max(n, 1)
    return mean, np.sqrt(np.clip(s2 / max(n, 1) - mean ** 2, 0.0, None))


def _nonzero(text_NxF):
    """Indicator of a feature's units, as float (sparse stays sparse)."""
    if sp.issparse(text_NxF):
        return (sp.csr_matrix(text_NxF) != 0).astype(np.float32)
    return (text_NxF != 0).astype(np.float32)


def _safe_div(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), 0.0)


def _level_rows(text_NxF, conf: Confounder, name: str, names: Sequence[str], mean, sd,
                cfg: DiagnosticsConfig) -> list[dict]:
    """One row per feature: the level most tied to it (categorical or time confounder)."""
    n = len(conf.values)
    oh_NxL = _onehot(conf.values, conf.n_levels)
    units_LxF = _dense(oh_NxL.T @ _nonzero(text_NxF))
    x = text_NxF.astype(np.float64) if sp.issparse(text_NxF) else np.asarray(text_NxF, np.float64)
    sums_LxF = _dense(oh_NxL.T @ x)
    p_L = np.bincount(np.asarray(conf.values, np.int64), minlength=conf.n_levels) / n
    units_F = units_LxF.sum(0)
    share_LxF = _safe_div(units_LxF, units_F[None, :])
    cov_LxF = sums_LxF / n - p_L[:, None] * mean[None, :]
    corr_LxF = _safe_div(cov_LxF, np.sqrt(p_L * (1 - p_L))[:, None] * sd[None, :])
    # a share counts with enough units and for a minority level only: being confined to a
    # level that holds 96% of the rows says little (it is the small level's overlap problem)
    usable_LxF = (units_F[None, :] >= cfg.min_units) & (p_L[:, None] <= cfg.max_level_share)
    score_LxF = np.where(usable_LxF, share_LxF, 0.0)
    worst_F = np.argmax(np.maximum(score_LxF, np.abs(corr_LxF)), axis=0)
    rows = []
    for j, lvl in enumerate(worst_F):
        share, corr = float(share_LxF[lvl, j]), float(corr_LxF[lvl, j])
        by_share = bool(usable_LxF[lvl, j]) and share >= cfg.share_threshold
        rows.append(dict(feature=names[j], confounder=name, level=str(conf.levels[lvl]),
                         units=int(units_F[j]), share=share, level_share=float(p_L[lvl]),
                         corr=corr, flagged=bool(by_share or abs(corr) >= cfg.corr_threshold)))
    return rows


def _numeric_rows(text_NxF, conf: Confounder, name: str, names: Sequence[str], mean, sd,
                  cfg: DiagnosticsConfig) -> list[dict]:
    """One row per feature: its Pearson correlation with a numeric confounder."""
    c = np.asarray(conf.values, np.float64)
    c = c - c.mean()
    if sp.issparse(text_NxF):
        cross_F = _dense(sp.csr_matrix(text_NxF, dtype=np.float64).T @ c).ravel()
    else:
        cross_F = np.zeros(len(names))
        for lo in range(0, len(c), _CHUNK):
            cross_F += c[lo:lo + _CHUNK] @ np.asarray(text_NxF[lo:lo + _CHUNK], np.float64)
    corr_F = _safe_div(cross_F / len(c), sd * c.std())
    units_F = _dense(_nonzero(text_NxF).sum(0)).ravel()
    return [dict(feature=names[j], confounder=name, level="(numeric)", units=int(units_F[j]),
                 share=np.nan, level_share=np.nan, corr=float(corr_F[j]),
                 flagged=bool(abs(corr_F[j]) >= cfg.corr_threshold)) for j in range(len(names))]


def collinearity(text_NxF, names: Sequence[str], confounders: Mapping[str, Confounder],
                 cfg: DiagnosticsConfig = DiagnosticsConfig()) -> pd.DataFrame:
    """Every (text feature, confounder) pair at its most collinear level; flagged first.

    text_NxF: dense, or scipy sparse (e.g. phrase indicators over a whole vocabulary)."""
    cols = ["feature", "confounder", "level", "units", "share", "level_share", "corr", "flagged"]
    if text_NxF is None or np.shape(text_NxF)[1] == 0 or not confounders:
        return pd.DataFrame(columns=cols)
    if len(names) != text_NxF.shape[1]:
        raise ValueError(f"{len(names)} feature names for {text_NxF.shape[1]} text columns")
    mean, sd = _column_moments(text_NxF)
    rows = []
    for name, conf in confounders.items():
        build = _numeric_rows if conf.kind == "numeric" else _level_rows
        rows += build(text_NxF, conf, name, names, mean, sd, cfg)
    frame = pd.DataFrame(rows, columns=cols)
    # flagged first, then by |corr|: a marker on most Monday posts before a rare phrase
    order = np.lexsort((-frame.share.fillna(0.0).to_numpy(), -frame["corr"].abs().to_numpy(),
                        ~frame.flagged.to_numpy()))
    return frame.iloc[order].reset_index(drop=True)


# ---- overlap ------------------------------------------------------------------------------
def text_components(text_NxF: np.ndarray, k: int) -> np.ndarray:
    """Scores [N, k] on the top-k principal components of the standardised text."""
    n, f = text_NxF.shape
    mean, sd = _column_moments(text_NxF)
    sd = np.where(sd > 0, sd, 1.0)
    gram_FxF = np.zeros((f, f))
    for lo in range(0, n, _CHUNK):
        z = (np.asarray(text_NxF[lo:lo + _CHUNK], np.float64) - mean) / sd
        gram_FxF += z.T @ z
    _, vecs = np.linalg.eigh(gram_FxF / max(n, 1))
    V_FxK = vecs[:, ::-1][:, :min(k, f)]
    out = np.empty((n, V_FxK.shape[1]))
    for lo in range(0, n, _CHUNK):
        out[lo:lo + _CHUNK] = ((np.asarray(text_NxF[lo:lo + _CHUNK], np.float64) - mean) / sd) @ V_FxK
    return out


def level_codes(conf: Confounder, n_bins: int = 5) -> tuple[np.ndarray, list[str]]:
    """Level codes and labels; a numeric confounder in quantile bins labelled by range."""
    if conf.kind != "numeric":
        return np.asarray(conf.values, np.int64), [str(v) for v in conf.levels]
    x = np.asarray(conf.values, np.float64)
    edges = np.unique(np.quantile(x, np.linspace(0, 1, n_bins + 1)))
    codes = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    return codes, [f"[{a:.3g}, {b:.3g}]" for a, b in zip(edges[:-1], edges[1:])]


def overlap(text_NxF: np.ndarray, confounders: Mapping[str, Confounder],
            cfg: DiagnosticsConfig = DiagnosticsConfig()) -> pd.DataFrame:
    """Per confounder level: the largest |standardised mean difference| of the text's main
    components between the level's rows and all other rows."""
    cols = ["confounder", "level", "rows", "max_abs_smd", "component", "flagged"]
    if text_NxF is None or np.shape(text_NxF)[1] == 0 or not confounders:
        return pd.DataFrame(columns=cols)
    Z_NxK = text_components(text_NxF, cfg.n_components)
    n = Z_NxK.shape[0]
    tot1 = Z_NxK.sum(0)
    sd_K = Z_NxK.std(axis=0)
    rows = []
    for name, conf in confounders.items():
        codes, labels = level_codes(conf, cfg.numeric_bins)
        oh_NxL = _onehot(codes, len(labels))
        cnt_L = np.bincount(codes, minlength=len(labels)).astype(np.float64)
        s1_LxK = np.asarray(oh_NxL.T @ Z_NxK)
        for lvl, label in enumerate(labels):
            n_in, n_out = cnt_L[lvl], n - cnt_L[lvl]
            if min(n_in, n_out) < cfg.min_level_rows:
                rows.append(dict(confounder=name, level=label, rows=int(n_in),
                                 max_abs_smd=np.nan, component=-1, flagged=False))
                continue
            m_in, m_out = s1_LxK[lvl] / n_in, (tot1 - s1_LxK[lvl]) / n_out
            smd_K = _safe_div(m_in - m_out, sd_K)
            k = int(np.argmax(np.abs(smd_K)))
            rows.append(dict(confounder=name, level=label, rows=int(n_in),
                             max_abs_smd=float(abs(smd_K[k])), component=k + 1,
                             flagged=bool(abs(smd_K[k]) >= cfg.smd_threshold)))
    return pd.DataFrame(rows, columns=cols)


# ---- convergence --------------------------------------------------------------------------
def map_gradient(fit: Fit, text_NxF: np.ndarray | None, confounders: Mapping[str, Confounder], *,
                 successes=None, trials=None, outcome=None) -> np.ndarray:
    """Gradient [P] of the log posterior at the MAP, in the fit's internal parameters
    (standardised text; standardised outcome for a real outcome): ~0 when converged."""
    n = len(successes if outcome is None else outcome)
    text = np.zeros((n, fit.spec.n_text)) if text_NxF is None else np.asarray(text_NxF, np.float64)
    X = fit.design.rows(dict(confounders)).with_dense_prefix(
        np.hstack([np.ones((n, 1)), (text - fit.text_mean) / fit.text_sd]))
    eta = X.matvec(fit.theta_map)
    Q = fit.spec.prior_precision()
    if outcome is None:
        s, m = np.asarray(successes, np.float64), np.asarray(trials, np.float64)
        return X.rmatvec(s - m * scipy.special.expit(eta)) - Q @ fit.theta_map
    y = (np.asarray(outcome, np.float64) - fit.y_loc) / fit.y_scale
    s2 = (fit.sigma / fit.y_scale) ** 2
    return X.rmatvec(y - eta) / s2 - Q @ fit.theta_map


def _loss_tail_change(losses: np.ndarray) -> float:
    """Relative change of the mean loss between the last two tenths of the run."""
    t = max(len(losses) // 10, 1)
    last, before = np.mean(losses[-t:]), np.mean(losses[-2 * t:-t]) if len(losses) >= 2 * t else np.nan
    return float(abs(last - before) / max(abs(last), 1e-12))


def convergence(fit: Fit, gradient: np.ndarray | None = None,
                cfg: DiagnosticsConfig = DiagnosticsConfig()) -> dict:
    """The fit's convergence record: Newton always, plus SVI's loss curve or NUTS' R-hat."""
    info = dict(fit.info)
    out = {"method": fit.cfg.method, "newton_iterations": int(info.get("iterations", -1)),
           "newton_converged": bool(info.get("converged", False)),
           "map_seconds": float(info.get("map_seconds", np.nan)),
           "grad_max": np.nan if gradient is None else float(np.max(np.abs(gradient)))}
    losses = info.get("svi_losses")
    out["losses"] = None if losses is None else np.asarray(losses, np.float64)
    if out["losses"] is not None and len(out["losses"]):
        out["final_loss"] = float(out["losses"][-1])
        out["loss_tail_change"] = _loss_tail_change(out["losses"])
    if fit.cfg.method == "nuts" and fit.draws is not None and len(fit.draws) >= 4:
        from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

        draws = np.asarray(fit.draws, np.float64)[None]          # one chain [1, S, P]
        keep = draws.std(axis=1)[0] > 0                           # a fixed parameter has no R-hat
        rhat = split_gelman_rubin(draws[..., keep])
        out["rhat_max"] = float(np.max(rhat)) if rhat.size else np.nan
        out["ess_min"] = float(np.min(effective_sample_size(draws[..., keep]))) if keep.any() else np.nan
        out["rhat_flagged"] = int(np.sum(rhat > cfg.rhat_threshold))
    return out


# ---- all together ---------------------------------------------------------------------------
def _collinear_warnings(col: pd.DataFrame, what: str, cap: int) -> list[str]:
    out = []
    flagged = col[col.flagged.astype(bool)]
    for r in flagged.head(cap).itertuples(index=False):
        if r.level == "(numeric)":
            out.append(f"{what} {r.feature!r} is collinear with numeric confounder "
                       f"{r.confounder!r} (corr {r.corr:+.2f}); its effect is not separable from it")
        else:
            out.append(f"{what} {r.feature!r} is (nearly) collinear with {r.confounder}="
                       f"{r.level}: {r.share:.0%} of its {r.units} units fall in that level "
                       f"(which holds {r.level_share:.0%} of rows; corr {r.corr:+.2f}); the "
                       "estimator attributes its effect to the level")
    if len(flagged) > cap:
        out.append(f"... and {len(flagged) - cap} more {what}s flagged (see the tables)")
    return out


def _warnings(col: pd.DataFrame, phrases: pd.DataFrame, ovl: pd.DataFrame, conv: dict,
              cfg: DiagnosticsConfig) -> list[str]:
    out = _collinear_warnings(col, "text feature", cfg.max_warnings)
    out += _collinear_warnings(phrases, "phrase", cfg.max_warnings)
    # astype(bool): an empty object column would select columns, not rows (text "none")
    for name, g in ovl[ovl.flagged.astype(bool)].groupby("confounder", sort=False):
        worst = g.loc[g.max_abs_smd.idxmax()]
        out.append(f"poor overlap of content across {name}: {len(g)} level(s) with |SMD| >= "
                   f"{cfg.smd_threshold} (worst {worst.level}: {worst.max_abs_smd:.2f} on text "
                   f"component {worst.component})")
    if not conv["newton_converged"]:
        out.append(f"the Newton MAP did not converge in {conv['newton_iterations']} iterations")
    if conv.get("loss_tail_change", 0.0) > 1e-3:
        out.append(f"SVI loss still moving at the end (relative change {conv['loss_tail_change']:.1e}); "
                   "raise svi_steps")
    if conv.get("rhat_flagged", 0):
        out.append(f"NUTS: {conv['rhat_flagged']} parameter(s) with split R-hat > "
                   f"{cfg.rhat_threshold} (max {conv['rhat_max']:.3f}); raise nuts_samples")
    return out


def diagnose(fit: Fit, text_NxF: np.ndarray | None, names: Sequence[str] | None,
             confounders: Mapping[str, Confounder], cfg: DiagnosticsConfig = DiagnosticsConfig(),
             *, successes=None, trials=None, outcome=None, phrases=None,
             group=None) -> Diagnostics:
    """Collinearity, overlap and convergence of a fit on these rows (see module docstring).

    Give the outcome (successes and trials, or outcome) to get the gradient at the MAP.
    phrases: (indicators [N, V] sparse, names [V]) of the texts' own words and phrases,
    checked like the representation's features: a hashed or compressed representation
    can dilute a marker that the plain phrases show (only flagged phrases are kept).
    group: [N] group codes; with trials, the sample-ratio-mismatch check runs per period of
    the first time confounder.
    """
    if text_NxF is not None:
        names = list(names) if names is not None else [f"text[{j}]" for j in range(text_NxF.shape[1])]
    col = collinearity(text_NxF, names, confounders, cfg)
    phr = collinearity(None, [], {}, cfg)
    if phrases is not None:
        phr = collinearity(phrases[0], phrases[1], confounders, cfg)
        phr = phr[phr.flagged].reset_index(drop=True)
    ovl = overlap(text_NxF, confounders, cfg)
    grad = None
    if successes is not None or outcome is not None:
        grad = map_gradient(fit, text_NxF, confounders, successes=successes, trials=trials,
                            outcome=outcome)
    conv = convergence(fit, grad, cfg)
    det = log_checks.determined_confounders(confounders)
    warns = log_checks.determined_warnings(det) + _warnings(col, phr, ovl, conv, cfg)
    extra = {"determined": det}
    if group is not None and trials is not None:
        per_group, per_period, time = log_checks.sample_ratio_mismatch(group, trials,
                                                                       confounders, cfg)
        warns = log_checks.srm_warning(per_period, time, cfg) + warns
        extra.update(srm=per_period, srm_groups=per_group, srm_time=time)
    return Diagnostics(col, phr, ovl, conv, tuple(warns), **extra)
