"""Bring your own log: deconfound any observational table from Python.

The same steps `python -m scripts.deconfound` runs, as functions:

    from dlm import api
    frame = api.read_frame("upworthy_exploratory_dev.csv.gz",
                           text_columns=("headline", "lede", "clickability_test_id"))
    log = api.from_frame(frame, content="headline", context="lede",
                         group="clickability_test_id", successes="clicks",
                         trials="impressions", confounders={"test_week": "time"})
    result = api.fit(log, seed=0)          # cross-fitted g_hat, text term "ngram:256"
    result.effects()                       # every confounder parameter, 90% interval
    table = api.adjust(frame, result)      # the input rows + g_hat, g_lo, g_hi, adjusted
    diag = api.diagnose(result)            # collinearity, overlap, convergence
    (reward,) = api.train(result)          # deconfoundlm reward on the adjusted outcomes
    api.save_reward(reward, "r"); reward = api.load_reward("r")
    ft = api.finetune(result, reward, "dpo")   # SFT on the log, DPO; ft.summary, ft.save(d)
    api.fit(log, endogenous="pop", instrument="z").iv   # P by control function (IV)
    api.hybrid_reward(result, experiment_log)  # deconfounded + experimental reward, w* cross-fitted

`fit` is dlm.causal.crossfit.deconfound on a dlm.representations spec fitted on the log's
texts, so any entry point that uses the same text spec and seed gets the same adjusted
outcomes. Every representation here (the text term, the reward's) is a spec string.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from dlm.causal.crossfit import Adjusted, deconfound
from dlm.causal.design import build_design
from dlm.causal.diagnostics import Diagnostics, DiagnosticsConfig, diagnose as _diagnose
from dlm.causal.fit import EstimatorConfig
from dlm.data.frames import from_frame, parse_derive, read_frame  # noqa: F401  (the front door)
from dlm.data.log import LogValidationError, ObservationalLog
from dlm.representations import DEFAULT_TEXT_SPEC, fit_representation, gram_counts
from dlm.reward_store import (REWARD_REPRESENTATIONS, check_reward_representation,  # noqa: F401
                              load_reward, save_reward)

# Columns adjust() adds; an input column of the same name would be overwritten.
ADDED_BINOMIAL = ("g_hat", "g_lo", "g_hi", "logit_outcome", "logit_adjusted", "rate_adjusted", "fold")
ADDED_REAL = ("g_hat", "g_lo", "g_hi", "outcome_adjusted", "fold")


# ---- fitting --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class Result:
    """A deconfounded log: the cross-fitted adjustment and what it was computed from."""

    log: ObservationalLog
    text_spec: str
    text_NxF: np.ndarray | None
    feature_names: tuple[str, ...]
    adjusted: Adjusted
    cfg: EstimatorConfig
    endogenous: str | None = None    # P's column when fitted by control function
    iv: Mapping | None = None        # estimator -> dlm.causal.iv.EndogenousEffect

    def effects(self) -> pd.DataFrame:
        """Centred confounder effects: parameter, level, mean, sd, lo, hi (cfg.interval).
        With an endogenous P, its rows "slope (ESTIMATOR)" follow, with first_stage_F."""
        eff = self.adjusted.effects()
        if not self.iv:
            return eff
        rows = pd.DataFrame([{"parameter": self.endogenous, "level": f"slope ({e.estimator})",
                              "mean": e.effect, "sd": np.nan, "lo": e.lo, "hi": e.hi,
                              "first_stage_F": e.first_stage_F} for e in self.iv.values()])
        return pd.concat([eff, rows], ignore_index=True)


def n_parameters(log: ObservationalLog, n_text: int, cfg: EstimatorConfig = EstimatorConfig()) -> int:
    """Parameters of the estimator on this log: intercept + text columns + g's parameters."""
    design = build_design(log.confounders, time_basis=cfg.time_basis, spline_df=cfg.spline_df,
                          source=log.source)
    return 1 + n_text + design.n_params


def check_size(log: ObservationalLog, n_text: int, cfg: EstimatorConfig = EstimatorConfig()) -> None:
    """A clear error, before fitting, when the log has fewer rows than parameters."""
    p = n_parameters(log, n_text, cfg)
    if len(log) < p:
        design = build_design(log.confounders, time_basis=cfg.time_basis, spline_df=cfg.spline_df)
        big = max(design.blocks, key=lambda b: b.size, default=None)
        parts = [f"{n_text} text features"] + [f"{b.size} for {b.name!r}" for b in design.blocks]
        raise LogValidationError(
            f"{len(log)} rows are fewer than the model's {p} parameters (intercept, "
            f"{', '.join(parts)}); use a smaller text representation (e.g. 'ngram:32' or 'none')"
            " or fewer confounder levels", source=log.source, column=None if big is None else big.name)


def phrase_matrix(texts: Sequence[str], min_units: int = 20, groups: np.ndarray | None = None,
                  min_groups: int = 1):
    """Indicators [N, V] (scipy CSR) of the word 1-2 grams found in >= min_units rows (and,
    with `groups`, in >= min_groups groups), and the phrases: what diagnostics check for a
    marker tied to a confounder level. A phrase of one A/B test (one story) is confined to
    that test's week by construction; its effect is identified within the test, so only
    phrases spread over several groups are worth a warning."""
    import scipy.sparse as sp

    uniq, inverse, grams, freq = gram_counts(texts)
    keep = {g for g, c in freq.items() if c >= min_units}
    if groups is not None and min_groups > 1:
        pairs = np.unique(np.stack([inverse, np.asarray(groups, np.int64)], 1), axis=0)
        seen: dict[str, set] = {}
        for t, grp in pairs:                    # distinct (text, group) pairs
            for g in grams[t] & keep:
                seen.setdefault(g, set()).add(grp)
        keep = {g for g in keep if len(seen.get(g, ())) >= min_groups}
    vocab = sorted(keep)
    index = {g: j for j, g in enumerate(vocab)}
    cols = [[index[g] for g in gs if g in index] for gs in grams]
    indptr = np.cumsum([0] + [len(c) for c in cols])
    flat = np.fromiter((j for c in cols for j in c), np.int64, count=int(indptr[-1]))
    X_UxV = sp.csr_matrix((np.ones(len(flat), np.float32), flat, indptr),
                          shape=(len(uniq), len(vocab)))
    return X_UxV[inverse], tuple(vocab)


def represent(log: ObservationalLog, text: str = DEFAULT_TEXT_SPEC
              ) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """The log's text representation under a spec (fitted on the log's texts), and its
    column names (the representation's own, else "PREFIX[j]")."""
    rep = fit_representation(text, log.content)
    if rep.dim == 0:
        return None, ()
    prefix = text.partition(":")[0]
    names = rep.feature_names or tuple(f"{prefix}[{j}]" for j in range(rep.dim))
    return np.asarray(rep.transform(log.content), np.float32), tuple(names)


def check_instrument(frame: pd.DataFrame, endogenous: str | None, instrument: str | None,
                     source: str = "<frame>") -> None:
    """Clear errors, before fitting, for the --confounder P:endogenous / --instrument pair."""
    if (endogenous is None) != (instrument is None):
        raise ValueError("an endogenous confounder needs an instrument (--instrument COL: moves "
                         "it, reaches the outcome only through it), and an instrument an "
                         "endogenous confounder (--confounder NAME:endogenous)")
    if instrument is None:
        return
    for name in (endogenous, instrument):
        if name not in frame.columns:
            raise LogValidationError(f"unknown column; have {list(frame.columns)}", source=source,
                                     column=name)
    if frame[instrument].nunique(dropna=True) < 2:
        raise LogValidationError(f"instrument is constant: it cannot move {endogenous!r}",
                                 source=source, column=instrument)


def fit(log: ObservationalLog, text: str = DEFAULT_TEXT_SPEC, cfg: EstimatorConfig | None = None,
        *, endogenous: str | None = None, instrument: str | None = None, iv_bootstrap: int = 100,
        **overrides) -> Result:
    """DeconfoundLM's cross-fitted adjustment of `log` (g fitted jointly with the text term).

    text: a dlm.representations spec ("ngram:256", "ngram-svd:64", "none"; "phi" after
    `import sims.featurise`). cfg / overrides:
    EstimatorConfig fields (seed, method, folds, interval, ...). Groups of the log (units
    randomised together) stay in one fold.

    endogenous / instrument: numeric confounder columns P (caused by the text too) and Z
    (moves P, reaches the outcome only through P). P is then fitted by control function
    (dlm.causal.iv.control_function_log: Z dropped, the first-stage residual added), its IV
    estimates with a bootstrap interval (iv_bootstrap replicates) in Result.iv; a
    WeakInstrumentWarning when the first-stage F < 10.
    """
    cfg = dataclasses.replace(cfg or EstimatorConfig(), **overrides)
    text_NxF, names = represent(log, text)
    check_size(log, 0 if text_NxF is None else text_NxF.shape[1], cfg)
    if endogenous is None and instrument is None:
        return Result(log, text, text_NxF, names, deconfound(log, text_NxF, cfg), cfg)
    if endogenous is None or instrument is None:
        raise ValueError("give both endogenous and instrument")
    from dlm.causal.iv import control_function_log

    fit_log, iv = control_function_log(log, text_NxF, endogenous=endogenous,
                                       instrument=instrument, cfg=cfg, bootstrap=iv_bootstrap,
                                       seed=cfg.seed)
    # the result's log is fit_log: its residual column is a confounder of the fit (adjusted.csv)
    return Result(fit_log, text, text_NxF, names, deconfound(fit_log, text_NxF, cfg), cfg,
                  endogenous, iv)


HYBRID_L2 = (1e-3,)   # ridge strength of both parts (per unit of mean loss): no validation split here


def hybrid_reward(result: Result, experiment: ObservationalLog | None = None,
                  randomised=None, method: str = "hybrid", representation: str | None = None):
    """The registry's hybrid reward (dlm.rewards METHODS "hybrid": this result's deconfounded
    outcomes, or "hybrid_naive": the raw ones, + experimental_ctr on randomised arms; both
    ridge on `representation`, default the estimator's text spec, fitted on the log's and
    the arms' texts), its weight w* cross-fitted over the arms' groups. The arms: either
    `experiment`, a separate grouped binomial log, or `randomised`, a [N] 0/1 mask of this
    log's randomised groups (the observational part then leaves out each fold's groups'
    rows while it is scored on them). -> dlm.rewards.fit.HybridScorer: texts -> rewards,
    `.weight` (w, Bias^2, Var_B, Var_U), `.observational`, `.experimental`."""
    from dlm.causal.hybrid import experimental_arms
    from dlm.rewards import METHODS, MethodContext, fit_scorer, get_method
    from dlm.rewards.linear import LinearBackend
    from dlm.rewards.methods import hybrid_parts

    m = get_method(method)
    if m.parts is None:
        raise ValueError(f"{method!r} is not a hybrid method (hybrid, hybrid_naive)")
    if (experiment is None) == (randomised is None):
        raise ValueError("give an experimental log or a mask of randomised groups (one)")
    log = result.log
    if randomised is not None:
        mask = np.asarray(randomised, bool)
        if mask.shape != (len(log),) or not mask.any():
            raise ValueError("the randomised-group mask marks no row of the log")
        experiment = log.take(mask)
    experimental_arms(experiment)                        # groups and counts, before fitting
    spec = representation or result.text_spec
    if spec == "none":
        raise ValueError("the hybrid needs a text representation: the estimator's text term "
                         "is 'none'; pass representation= (e.g. 'ngram:256')")
    obs = _log_targets(result, m.parts[0], seed=result.cfg.seed)
    exp = METHODS[m.parts[1]].target_fn(MethodContext(log, experiment=experiment))
    texts = np.concatenate([np.asarray(log.content), np.asarray(experiment.content)])
    rep = fit_representation(spec, texts, seed=result.cfg.seed)
    return fit_scorer(method, hybrid_parts(obs, exp), LinearBackend(rep, HYBRID_L2))


# ---- outputs --------------------------------------------------------------------------------
def added_columns(log: ObservationalLog) -> tuple[str, ...]:
    return ADDED_BINOMIAL if log.is_binomial else ADDED_REAL


def check_columns_free(frame: pd.DataFrame, log: ObservationalLog) -> None:
    """adjust() would overwrite an input column of the same name: say so before fitting."""
    taken = [c for c in added_columns(log) if c in frame.columns]
    if taken:
        raise LogValidationError(f"the input already has a column named {taken[0]!r}, which the "
                                 "adjusted table adds; rename it", source=log.source, column=taken[0])


def adjust(frame: pd.DataFrame, result: Result) -> pd.DataFrame:
    """The input rows plus g_hat, its interval (g_lo, g_hi), the adjusted outcome and the fold;
    derived confounders (e.g. date_weekday) are added as columns too."""
    log, adj = result.log, result.adjusted
    if len(frame) != len(log):
        raise ValueError(f"frame has {len(frame)} rows, the log {len(log)}")
    check_columns_free(frame, log)
    out = frame.reset_index(drop=True).copy()
    for name, conf in log.confounders.items():
        if name not in out.columns:
            out[name] = (np.asarray(conf.values) if conf.levels is None else   # numeric
                         np.asarray(conf.levels, dtype=object)[np.asarray(conf.values)])
    out["g_hat"], out["g_lo"], out["g_hi"] = adj.g_hat, adj.g_lo, adj.g_hi
    if log.is_binomial:
        out["logit_outcome"] = log.logit_outcome()
        out["logit_adjusted"] = adj.logit_adjusted
        out["rate_adjusted"] = adj.rate_adjusted
    else:
        out["outcome_adjusted"] = adj.logit_adjusted
    out["fold"] = adj.fold
    return out


def diagnose(result: Result, cfg: DiagnosticsConfig = DiagnosticsConfig()) -> Diagnostics:
    """Collinearity of text features and of the texts' phrases with confounder levels,
    overlap, convergence; confounders determined by another; with groups and counts, the
    sample ratio mismatch per time period."""
    log = result.log
    return _diagnose(result.adjusted.fit, result.text_NxF, result.feature_names,
                     log.confounders, cfg, successes=log.successes, trials=log.trials,
                     outcome=log.outcome, phrases=phrase_matrix(
                         log.content, cfg.min_units, log.group, cfg.phrase_min_groups),
                     group=log.group)


# ---- reward model ---------------------------------------------------------------------------


def check_reward_method(method: str) -> None:
    """A clear error, before fitting, for a method this log cannot train."""
    from dlm.rewards import get_method

    m = get_method(method)                               # unknown names list the known ones
    if m.parts is not None:
        raise ValueError(f"reward method {method!r} mixes an observational and an experimental "
                         "reward: it needs randomised arms (scripts.deconfound "
                         "--experimental-data / --randomised-groups; api.hybrid_reward)")
    if m.needs_experiment:
        raise ValueError(f"reward method {method!r} learns from randomised arms, not from an "
                         "observational log (see api.hybrid_reward, scripts.upworthy)")
    if method == "oracle":
        raise ValueError("reward method 'oracle' needs interventional data from a simulator; "
                         "an observational log has none (use deconfoundlm, naive, ...)")


def train(result: Result, method: str = "deconfoundlm", representation: str = "ngram-svd:64",
          cfg=None, strengths=None, seed: int = 0, history: list | None = None):
    """Reward models (dlm.rewards, the replications' trainer) on this log -> [TrainedReward].

    deconfoundlm regresses on `result`'s adjusted outcomes (the ones in adjusted.csv);
    any other method builds its targets as dlm.rewards does (partial_out, naive, ...).
    Knob methods (odin, invariant) give one reward per strength. representation: the
    reward heads' frozen dlm.representations spec, fitted on the log's texts (one that
    save_reward can store: REWARD_REPRESENTATIONS).
    """
    from dlm.rewards import TrainerConfig, train_reward

    check_reward_method(method)
    check_reward_representation(representation)
    represent = fit_representation(representation, result.log.content, seed=seed)
    targets = _log_targets(result, method, represent, seed)
    return train_reward(method, targets, represent, cfg or TrainerConfig(), strengths=strengths,
                        seed=seed, history=history)


def _log_targets(result: Result, method: str, represent=None, seed: int = 0):
    """An observational method's dlm.rewards Targets on result's log: deconfoundlm's are
    result's own adjusted outcomes (the ones in adjusted.csv, no second estimator fit); any
    other method's as dlm.rewards builds them."""
    from dlm.rewards import MethodContext, get_method, log_targets

    if method == "deconfoundlm":
        return log_targets(result.log, result.adjusted.logit_adjusted)
    ctx = MethodContext(result.log, represent, seed=seed, estimator=result.cfg)
    return get_method(method).target_fn(ctx)


def reward_name(reward) -> str:
    """"deconfoundlm", or "odin-10" for a knob method's strength."""
    return reward.method if reward.strength is None else f"{reward.method}-{reward.strength:g}"


def score_contents(result: Result, rewards) -> pd.DataFrame:
    """Each distinct content: rows, mean adjusted outcome, and every reward's score."""
    frame = pd.DataFrame({"content": result.log.content.astype(str),
                          "adjusted": result.adjusted.logit_adjusted})
    out = frame.groupby("content", sort=False).adjusted.agg(["size", "mean"]).reset_index()
    out.columns = ["content", "rows", "mean_adjusted"]
    for r in rewards:
        out[f"score_{reward_name(r)}"] = r(out.content.tolist())
    return out


# ---- fine-tuning ----------------------------------------------------------------------------
def finetune(source, reward, kind: str = "dpo", cfg=None, **kwargs):
    """Fine-tune the log's SFT policy against `reward` (best-of-n, dpo or pg) and write for
    held-out contexts: dlm.finetune.finetune (see there); returns a FinetuneResult whose
    .summary compares mean reward and KL to SFT, and .save(dir) writes every output."""
    from dlm.finetune import finetune as _finetune

    return _finetune(source, reward, kind, cfg, **kwargs)
