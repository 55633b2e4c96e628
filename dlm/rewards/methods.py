"""The reward methods of DESIGN.md section 2, as configurations of one trainer.

A method is a RewardMethod: a target function (which outcomes, on which texts, the reward
regresses on) and optionally a penalty added to the loss, plus flags the trainer reads.
Everything else (representation, head, loop, evaluation) is shared, so two methods differ
only where the science says they do. Adding a method is one function and one line:

    def weekday_demeaned(ctx):                       # raw logit minus its weekday mean
        t = naive_targets(ctx)
        wd = t.confounders["weekday"].values
        return dataclasses.replace(t, target=t.target - (np.bincount(wd, t.target)
                                                         / np.bincount(wd))[wd])
    METHODS["weekday_demeaned"] = RewardMethod(weekday_demeaned)

Penalty functions get the head outputs {"reward": [B], "confounder_head": [B] (two heads),
"head_kernels": (content [H], confounder [H]) (two heads)}, the batch {"conf": [B, C]
confounder columns, "bins_onehot": [B, M] every confounder's bin, "bins_valid": [M] bins
seen in training, "target": [B], "weight": [B]} and a strength; they return (penalty, metrics).

Two methods learn from a grouped randomised log instead (MethodContext.experiment: one
row per (A/B test, text), e.g. dlm.realdata.pairs.headline_arms): "experimental" (loss
"pairwise": Bradley-Terry on within-group pairs, winner by rate) and "experimental_ctr"
(regression on the within-group centred logit rate). Their Targets carry the pairs.
Two combine an observational method with "experimental_ctr" (RewardMethod.parts):
"hybrid" (deconfoundlm) and "hybrid_naive" (naive); dlm.rewards.fit.fit_hybrid fits them.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dlm.causal import crossfit
from dlm.causal.fit import EstimatorConfig
from dlm.data.log import Confounder, LogValidationError, ObservationalLog
from dlm.representations import DEFAULT_TEXT_SPEC, text_term
from dlm.rewards.grouped import centred_logit_ctr, within_group_pairs
from dlm.train.losses import binomial_logit_weights, reward_regression

DEFAULT_KNOB: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)


@dataclasses.dataclass(frozen=True)
class Targets:
    """What a reward regresses on: per unit text, logit-scale target, weight, conditions."""

    content: np.ndarray                       # [N] texts
    target: np.ndarray                        # [N] float (logit CTR, or a real outcome)
    weight: np.ndarray                        # [N] regression weights, mean 1
    confounders: Mapping[str, Confounder]     # [N] each: conditioned's inputs, penalties' bins
    source: str = "<targets>"                 # where the rows came from, for error messages
    val: np.ndarray | None = None             # [N] bool validation rows (backends' selection)
    pairs: tuple[np.ndarray, np.ndarray] | None = None   # ([P] win, [P] lose) rows (pairwise)
    adjusted: Any = None                      # the crossfit.Adjusted behind the target, if any
    groups: np.ndarray | None = None          # [N] randomised group (A/B test) of each row
    parts: Mapping[str, "Targets"] | None = None  # a hybrid's {"observational", "experimental"}

    def __post_init__(self):
        n = len(self.content)
        if self.val is not None and len(self.val) != n:
            raise LogValidationError(f"has {len(self.val)} rows, content has {n}",
                                     source=self.source, column="val")
        if self.pairs is not None:
            rows = np.concatenate([np.asarray(r, np.int64).reshape(-1) for r in self.pairs])
            if rows.size and (rows.min() < 0 or rows.max() >= n):
                raise LogValidationError(f"pair rows must lie in [0, {n})", source=self.source,
                                         column="pairs")
        for name in ("target", "weight", "groups"):
            if getattr(self, name) is not None and len(getattr(self, name)) != n:
                raise LogValidationError(f"has {len(getattr(self, name))} rows, content has {n}",
                                         source=self.source, column=name)
        for name in ("target", "weight"):
            bad = ~np.isfinite(np.asarray(getattr(self, name), np.float64))
            if bad.any():
                raise LogValidationError("value is not finite", source=self.source,
                                         row=int(np.flatnonzero(bad)[0]) + 1, column=name)


    def take(self, rows) -> "Targets":
        """The Targets of `rows` (int indices or a [N] bool mask); pairs keep those with both
        rows kept, renumbered. A hybrid's parts are not row-aligned with it: an error."""
        if self.parts is not None:
            raise ValueError(f"{self.source}: a hybrid's Targets are taken through its parts")
        idx = np.arange(len(self.content))[np.asarray(rows)]
        pick = lambda a: None if a is None else np.asarray(a)[idx]  # noqa: E731
        pairs = None
        if self.pairs is not None:
            new = np.full(len(self.content), -1, np.int64)
            new[idx] = np.arange(idx.size)
            win, lose = (new[np.asarray(r, np.int64)] for r in self.pairs)
            both = (win >= 0) & (lose >= 0)
            pairs = (win[both], lose[both])
        return dataclasses.replace(
            self, content=pick(self.content), target=pick(self.target), weight=pick(self.weight),
            confounders={k: c.take(idx) for k, c in self.confounders.items()},
            val=pick(self.val), pairs=pairs, groups=pick(self.groups), adjusted=None)


@dataclasses.dataclass(frozen=True, eq=False)
class MethodContext:
    """What target functions may use: the observational log and, for the oracle, the world.

    represent: the frozen text representation of the reward heads. estimator_text:
    deconfoundlm's text term h(X), its own dlm.representations spec (see `estimator_text`),
    never derived from `represent`. world: anything with
    intervene(key, n, c_ref) -> sample with .log (sims.headlines.HeadlineWorld); None for
    real logs.
    """

    log: ObservationalLog
    represent: Callable[[Any], np.ndarray] | None = None
    world: Any = None
    seed: int = 0
    estimator: EstimatorConfig = EstimatorConfig()
    estimator_text: str = DEFAULT_TEXT_SPEC   # a dlm.representations spec: "ngram:256", "none", ...
    n_oracle: int | None = None               # A/B postings for the oracle (default len(log))
    c_ref: Mapping[str, Any] | None = None    # the reference condition (oracle's do(C))
    val: np.ndarray | None = None             # [N] bool validation rows of `log`
    experiment: ObservationalLog | None = None    # grouped randomised log (experimental*)
    experiment_val: np.ndarray | None = None      # [A] bool validation rows of `experiment`
    pairs: tuple[np.ndarray, np.ndarray] | None = None  # (win, lose) rows of `experiment`
                                              # (default: every within-group pair)


PenaltyFn = Callable[[dict, dict, jax.Array], tuple[jax.Array, dict]]


@dataclasses.dataclass(frozen=True)
class RewardMethod:
    """target_fn(ctx) -> Targets; penalty_fn(outputs, batch, strength) -> (penalty, metrics).

    uses_confounders: C is an input of the head (at use: the reference condition).
    two_heads: a content head (the reward) and a confounder head; their sum fits the target.
    knob: the strengths every table sweeps (empty: the method has no strength).
    loss: "regression" (weighted MSE on the targets) or "pairwise" (Bradley-Terry on the
    Targets' pairs).
    needs_experiment: learns from MethodContext.experiment (a grouped randomised log), so
    a purely observational comparison (the simulation's) leaves it out.
    """

    target_fn: Callable[[MethodContext], Targets]
    penalty_fn: PenaltyFn | None = None
    uses_confounders: bool = False
    two_heads: bool = False
    knob: tuple[float, ...] = ()
    loss: str = "regression"
    needs_experiment: bool = False
    parts: tuple[str, str] | None = None     # a hybrid's (observational, experimental) methods
    # one fixed effect per randomised group (Targets.groups) beside the text: a centred
    # target regressed on uncentred text features alone is attenuated by ~(1 - 1/arms)
    group_effects: bool = False


# ---- targets -------------------------------------------------------------------------------
def _weights(log: ObservationalLog) -> np.ndarray:
    if log.is_binomial:
        return binomial_logit_weights(log.successes, log.trials)
    return np.ones(len(log))


def group_ids(log: ObservationalLog) -> np.ndarray | None:
    """[N] each row's group by its label (the A/B test id) where the log has labels, so two
    logs cut from one archive (observational rows, experimental arms) name a test alike."""
    if log.group is None:
        return None
    codes = np.asarray(log.group)
    return codes if log.group_labels is None else np.asarray(log.group_labels, object)[codes]


def log_targets(log: ObservationalLog, target: np.ndarray | None = None, **extra) -> Targets:
    """The log's texts with `target` (default its empirical logit) and binomial weights;
    `extra`: Targets' optional fields (val, pairs, adjusted)."""
    target = log.logit_outcome() if target is None else np.asarray(target, np.float64)
    return Targets(np.asarray(log.content), target, _weights(log), dict(log.confounders),
                   source=log.source, groups=group_ids(log), **extra)


def naive_targets(ctx: MethodContext) -> Targets:
    """Raw observational outcomes."""
    return log_targets(ctx.log, val=ctx.val)


def oracle_targets(ctx: MethodContext) -> Targets:
    """Outcomes from the A/B world: do(C = c_ref), headline and marker randomised."""
    if ctx.world is None or not hasattr(ctx.world, "intervene"):
        raise ValueError(f"{ctx.log.source}: the oracle needs interventional data; pass a world "
                         "with intervene() (sims.headlines.HeadlineWorld) as MethodContext.world")
    n = ctx.n_oracle or len(ctx.log)
    ab = ctx.world.intervene(jax.random.fold_in(jax.random.key(ctx.seed), 0x0AB), n, ctx.c_ref)
    return log_targets(ab.log)


def partial_out_targets(ctx: MethodContext) -> Targets:
    """Outcome residualised on C alone (cross-fitted), intercept kept."""
    est = dataclasses.replace(ctx.estimator, seed=ctx.seed)
    adjusted = crossfit.partial_out(ctx.log, est)
    return log_targets(ctx.log, adjusted.logit_adjusted, val=ctx.val, adjusted=adjusted)


def estimator_text(ctx: MethodContext) -> np.ndarray | None:
    """DeconfoundLM's text term h(X) [N, F] float64: the dlm.representations spec
    `ctx.estimator_text` ("ngram:256", the default, as scripts.deconfound; "ngram-svd:D";
    "phi"; "none" -> None) fitted on the log's own texts, once per distinct text.

    h(X) must span the content g(C) is confounded with: a text term that misses part of a
    weekday marker lets g(C) absorb the marker's effect (issue 13: the top 16-32 components
    of the 64-d reward representation spanned ~20% of the marker, and deconfoundlm's
    Monday-marker gap was +0.09 at p_marker 0.8). So it is its own spec, not a projection
    of the reward's representation.
    """
    H = text_term(ctx.estimator_text, ctx.log.content, seed=ctx.seed)
    return None if H is None else np.asarray(H, np.float64)


def deconfoundlm_targets(ctx: MethodContext) -> Targets:
    """Outcome minus the cross-fitted g(C) estimated jointly with the text term."""
    est = dataclasses.replace(ctx.estimator, seed=ctx.seed)
    adjusted = crossfit.deconfound(ctx.log, estimator_text(ctx), est)
    return log_targets(ctx.log, adjusted.logit_adjusted, val=ctx.val, adjusted=adjusted)


def _experiment(ctx: MethodContext) -> ObservationalLog:
    if ctx.experiment is None:
        raise ValueError(f"{ctx.log.source}: the experimental methods need a grouped randomised "
                         "log: MethodContext.experiment (one row per (A/B test, text), e.g. "
                         "dlm.realdata.pairs.headline_arms)")
    return ctx.experiment


def experimental_targets(ctx: MethodContext) -> Targets:
    """The randomised arms with their within-group (win, lose) pairs: ctx.pairs, or every
    pair of different texts with different rates (the pairwise loss ignores target)."""
    arms = _experiment(ctx)
    pairs = within_group_pairs(arms) if ctx.pairs is None else tuple(map(np.asarray, ctx.pairs))
    return log_targets(arms, val=ctx.experiment_val, pairs=pairs)


def experimental_ctr_targets(ctx: MethodContext) -> Targets:
    """Every arm of a group with 2+ arms: its logit rate minus the group's weighted mean."""
    arms = _experiment(ctx)
    rows, target, weight = centred_logit_ctr(arms)
    val = None if ctx.experiment_val is None else np.asarray(ctx.experiment_val, bool)[rows]
    return Targets(np.asarray(arms.content)[rows], target, weight,
                   {k: c.take(rows) for k, c in arms.confounders.items()}, source=arms.source,
                   val=val, groups=group_ids(arms)[rows])


def hybrid_parts(observational: Targets, experimental: Targets) -> Targets:
    """A hybrid method's Targets: the experimental part's rows, carrying both parts."""
    return dataclasses.replace(
        experimental, parts={"observational": observational, "experimental": experimental},
        source=f"hybrid of {observational.source} and {experimental.source}")


def hybrid_method(observational: str, experimental: str = "experimental_ctr") -> RewardMethod:
    """A hybrid method: its target function gives both parts' Targets from one context (the
    observational method's on ctx.log, the experimental regression's on ctx.experiment);
    dlm.rewards.fit.fit_hybrid cross-fits them over the experiment's groups and mixes the
    two rewards with w* (dlm.causal.hybrid)."""
    def target_fn(ctx: MethodContext) -> Targets:
        exp = METHODS[experimental].target_fn(ctx)
        return hybrid_parts(METHODS[observational].target_fn(ctx), exp)
    return RewardMethod(target_fn, needs_experiment=True, parts=(observational, experimental))


# ---- penalties -----------------------------------------------------------------------------
def _pearson_columns(r_B: jax.Array, C_BxJ: jax.Array) -> jax.Array:
    """Pearson correlation of r with each column of C -> [J] (0 for a constant column)."""
    r = r_B - r_B.mean()
    C = C_BxJ - C_BxJ.mean(axis=0)
    num = r @ C
    den = jnp.sqrt(jnp.sum(r * r) * jnp.sum(C * C, axis=0))
    return jnp.where(den > 1e-8, num / jnp.maximum(den, 1e-8), 0.0)


ODIN_CONTENT_FIT = 0.1   # weight of the content head's own regression in odin's loss


def odin_penalty(out: dict, batch: dict, strength) -> tuple[jax.Array, dict]:
    """ODIN (Chen et al. 2024) with the confounders in place of length.

    strength * (sum_j corr(content, c_j)^2 + (w_content . w_confounder)^2)
      + ODIN_CONTENT_FIT * mse(content head alone):
    the two heads' sum fits the target (the trainer's loss), the content head is
    decorrelated from every confounder column, and the heads' last-layer weights are made
    orthogonal. The small regression of the content head alone identifies the split
    between the heads: with the sum fixed, decorrelation and orthogonality leave a whole
    family of splits, and the optimiser would stop anywhere in it; with the extra term the
    content head is the best decorrelated fit (at strength 0: the naive reward). ODIN's
    term rewarding the length head's correlation plays that role in the paper; scaled by
    the strengths swept here it outweighs the fit. Squares rather than |.|: a minibatch
    correlation is never exactly 0, and |.| turns that noise into full-size gradients.
    """
    rho2_c = jnp.square(_pearson_columns(out["reward"], batch["conf"]))
    w_c, w_k = out["head_kernels"]
    dot2 = jnp.square(w_c @ w_k)
    fit_c, _ = reward_regression(out["reward"], batch["target"], batch["weight"])
    penalty = strength * (rho2_c.sum() + dot2) + ODIN_CONTENT_FIT * fit_c
    return penalty, {"corr2_content": rho2_c.sum(), "head_dot2": dot2, "mse_content": fit_c}


def mmd_one_vs_rest(r_B: jax.Array, onehot_BxM: jax.Array, valid_M: jax.Array,
                    sigma2: jax.Array) -> jax.Array:
    """Mean over valid bins m of MMD^2(r | bin m, r | not bin m), Gaussian kernel with
    squared bandwidth sigma2 (V-statistic: the diagonal is constant, so gradients are not
    biased by it)."""
    K_BxB = jnp.exp(-jnp.square(r_B[:, None] - r_B[None, :]) / (2.0 * sigma2))
    n_in = onehot_BxM.sum(0)
    n_out = onehot_BxM.shape[0] - n_in
    diff_BxM = onehot_BxM / jnp.maximum(n_in, 1.0) - (1.0 - onehot_BxM) / jnp.maximum(n_out, 1.0)
    mmd2_M = jnp.einsum("bm,bc,cm->m", diff_BxM, K_BxB, diff_BxM)
    ok = valid_M & (n_in >= 2) & (n_out >= 2)   # both sides need rows in this batch
    return jnp.sum(jnp.where(ok, mmd2_M, 0.0)) / jnp.maximum(ok.sum(), 1)


def median_sigma2(x_B: jax.Array) -> jax.Array:
    """Median heuristic: the median squared distance over the B neighbour pairs of a randomly
    ordered batch (a full B x B median is a B^2 sort per step, too slow on a CPU)."""
    return jnp.maximum(jnp.median(jnp.square(x_B - jnp.roll(x_B, 1))), 1e-8)


MMD_ROWS = 256   # rows of each batch the MMD compares (its cost is quadratic in them)


def invariant_penalty(out: dict, batch: dict, strength) -> tuple[jax.Array, dict]:
    """Causal-reward MMD (Wang et al. 2025): strength * mean over the bins of every
    confounder (weekday levels; quantile bins of week, audience) of MMD^2 between the
    reward's distribution inside the bin and outside it.

    The bandwidth is the median heuristic on the batch's *targets* (the outcome's scale),
    held fixed: on the reward itself the penalty would be scale-free, and a scale-free
    penalty has a noise floor only a constant reward escapes, so every strong setting
    would collapse to a constant instead of trading fit for invariance.
    """
    r = out["reward"][:MMD_ROWS]
    sigma2 = jax.lax.stop_gradient(median_sigma2(batch["target"][:MMD_ROWS]))
    mmd2 = mmd_one_vs_rest(r, batch["bins_onehot"][:MMD_ROWS], batch["bins_valid"], sigma2)
    return strength * mmd2, {"mmd2": mmd2}


METHODS: dict[str, RewardMethod] = {
    "oracle": RewardMethod(oracle_targets),
    "naive": RewardMethod(naive_targets),
    "conditioned": RewardMethod(naive_targets, uses_confounders=True),
    "partial_out": RewardMethod(partial_out_targets),
    "odin": RewardMethod(naive_targets, odin_penalty, two_heads=True, knob=DEFAULT_KNOB),
    "invariant": RewardMethod(naive_targets, invariant_penalty, knob=DEFAULT_KNOB),
    "deconfoundlm": RewardMethod(deconfoundlm_targets),
    "experimental": RewardMethod(experimental_targets, loss="pairwise", needs_experiment=True),
    "experimental_ctr": RewardMethod(experimental_ctr_targets, needs_experiment=True,
                                     group_effects=True),
    # observational reward + experimental regression, mixed with the cross-fitted w*
    "hybrid": hybrid_method("deconfoundlm"),
    "hybrid_naive": hybrid_method("naive"),
}


def get_method(name: str | RewardMethod) -> RewardMethod:
    """A registered method by name (or a RewardMethod as is); unknown names list the known."""
    if isinstance(name, RewardMethod):
        return name
    if name not in METHODS:
        raise ValueError(f"unknown reward method {name!r}; registered: {', '.join(METHODS)}")
    return METHODS[name]


def observational_methods() -> list[str]:
    """The registered methods that learn from an observational log alone (in order)."""
    return [name for name, m in METHODS.items() if not m.needs_experiment]
