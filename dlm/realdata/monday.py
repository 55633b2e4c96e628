"""The paper's Monday experiment: data logic (arms, weekdays, confounded outcomes, pairs).

Every A/B arm (one headline of one test) becomes a posting on a weekday drawn uniformly;
Monday postings get +monday_effect and Friday postings friday_effect on the logit of the
arm's real CTR, and Monday (Friday) headlines get the "Happy Monday! " ("Happy Friday! ")
prefix with probability p_marker. Within a test, two arms' observed (confounded) outcomes
then differ by the weekday shift as well as by their headlines, so pairs ordered by the
observed outcome prefer Monday markers. DeconfoundLM re-orders the same pairs by the
observed logit minus the cross-fitted weekday effect g_hat(weekday), estimated from
within-test contrasts (one fixed effect per test; arms are randomised within a test).

    arms = upworthy_arms(load_upworthy(path))   # or sims.monday.builtin_arms(...) without data
    posted = post(arms, MondayConfig(), seed=0)         # weekday, marker, confounded outcome
    a, b = candidate_pairs(posted.log.group, story, max_per_story=10, seed=0)
    adj = adjust(posted.log)                            # within-test weekday effects
    margin, se = pair_margins(a, b, adj, posted.logit_var, posted.weekday)
    keep = np.abs(margin) > 2.0 * se                    # the pair filter
    win, lose = orient(a[keep], b[keep], adj.logit_adjusted)   # or by observed outcomes
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from dlm.causal.crossfit import fold_ids
from dlm.causal.design import build_design
from dlm.causal.fit import EstimatorConfig, Fit, fit
from dlm.data.batching import encode_sft
from dlm.data.log import Confounder, ObservationalLog
from dlm.data.markers import FRIDAY, MARKER_PREFIXES, MONDAY, WEEKDAYS
from dlm.realdata.pairs import headline_arms
from dlm.representations import text_term


@dataclasses.dataclass(frozen=True)
class MondayConfig:
    """How postings are confounded (the truth the estimator should recover)."""

    monday_effect: float = 0.5     # added to the logit of every Monday posting
    friday_effect: float = -0.5    # added to the logit of every Friday posting
    p_marker: float = 0.8          # share of Monday (Friday) headlines with the prefix

    def __post_init__(self):
        if not 0.0 <= self.p_marker <= 1.0:
            raise ValueError(f"p_marker must be in [0, 1], got {self.p_marker}")

    def weekday_effects(self) -> np.ndarray:
        """[7] true effect of each weekday (Mon..Sun) on the logit."""
        eff = np.zeros(len(WEEKDAYS))
        eff[MONDAY], eff[FRIDAY] = self.monday_effect, self.friday_effect
        return eff


class Posted(NamedTuple):
    """The confounded log (content as posted, outcome = confounded logit) and its truth."""

    log: ObservationalLog     # outcome: observed logit; confounders: weekday (+ the arms' own)
    base_logit: np.ndarray    # [N] empirical logit of the arm's real CTR
    weekday: np.ndarray       # [N] 0..6 (Mon..Sun)
    marker: np.ndarray        # [N] 0 none, 1 Monday prefix, 2 Friday prefix
    headline: np.ndarray      # [N] the headline without any prefix
    logit_var: np.ndarray     # [N] binomial variance of the empirical logit (1/(s+.5) + 1/(n-s+.5))


# ---- arms ----------------------------------------------------------------------------------
def upworthy_arms(log: ObservationalLog) -> ObservationalLog:
    """One row per (test, distinct headline) with clicks/impressions summed over images;
    arms with an empty lede are dropped (the lede is the prompt)."""
    arms = headline_arms(log)
    if arms.context is None:
        raise ValueError(f"{log.source}: the Monday experiment needs ledes (a context column)")
    return arms.take(np.flatnonzero(np.array([bool(str(c).strip()) for c in arms.context])))


# ---- weekdays and the confounded outcome -----------------------------------------------------
def assign_weekdays(n: int, p_marker: float, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(weekday [N] uniform over Mon..Sun, marker [N]): the day's marker w.p. p_marker on
    Mondays (1) and Fridays (2), none (0) otherwise, as in sims.headlines."""
    weekday = rng.integers(0, len(WEEKDAYS), size=n)
    tagged = rng.random(n) < p_marker
    marker = np.where(tagged & (weekday == MONDAY), 1, np.where(tagged & (weekday == FRIDAY), 2, 0))
    return weekday.astype(np.int64), marker.astype(np.int64)


def post(arms: ObservationalLog, cfg: MondayConfig, seed: int) -> Posted:
    """Give every arm a weekday and marker; outcome = empirical logit + weekday effect."""
    if not arms.is_binomial:
        raise ValueError(f"{arms.source}: arms need clicks and impressions")
    weekday, marker = assign_weekdays(len(arms), cfg.p_marker, np.random.default_rng(seed))
    headline = np.array([str(h).strip() for h in arms.content], dtype=object)
    base = arms.logit_outcome()
    # the drawn weekday replaces any the arms carry (the built-in A/B world's is fixed)
    conf = {**arms.confounders, "weekday": Confounder("categorical", weekday, WEEKDAYS)}
    log = dataclasses.replace(arms, content=MARKER_PREFIXES[marker] + headline,
                              successes=None, trials=None,
                              outcome=base + cfg.weekday_effects()[weekday], confounders=conf,
                              source=f"{arms.source} (Monday experiment)")
    s, n = np.asarray(arms.successes, np.float64), np.asarray(arms.trials, np.float64)
    return Posted(log, base, weekday, marker, headline, 1.0 / (s + 0.5) + 1.0 / (n - s + 0.5))


@dataclasses.dataclass(frozen=True, eq=False)
class WeekdayAdjusted:
    """Cross-fitted weekday adjustment: each row's g_hat(weekday) comes from the fit on the
    other folds (folds by test, so both arms of a pair share one fold and one fit)."""

    g_hat: np.ndarray            # [N] centred weekday effect of the row's day
    logit_adjusted: np.ndarray   # [N] observed logit - g_hat
    fold: np.ndarray             # [N]
    cov_KxDxD: np.ndarray        # [folds, 7, 7] covariance of each fold's weekday effects
    fit: Fit                     # on all rows (the effects table)

    def effects(self):
        return self.fit.effects()


def _weekday_block(f: Fit) -> tuple[np.ndarray, np.ndarray]:
    """(centred weekday effects [7], covariance of the uncentred ones [7, 7]) of a fit."""
    sl = f.design.block("weekday").slice
    sl = slice(f.spec.g_offset + sl.start, f.spec.g_offset + sl.stop)
    eff = f.y_scale * f.theta[sl]
    return eff - eff.mean(), f.y_scale ** 2 * f.cov[sl, sl]


def adjust(log: ObservationalLog, text_spec: str = "",
           cfg: EstimatorConfig = EstimatorConfig(covariance="dispersion"),
           test_effects: bool = True) -> WeekdayAdjusted:
    """g(weekday) (+ a fixed effect per test, + text_spec of the posted headlines if given)
    fitted to the observed logit, cross-fitted by test; logit_adjusted = outcome - g_hat.

    With test effects the weekday effect is estimated from within-test contrasts only, the
    arms' randomisation, so no text term is needed (text_spec "" leaves it out). Without
    them (test_effects=False) the fit compares arms across tests, and only a text term
    stands between the weekday and the tests' differing headlines. The test effects take
    the estimator's wide categorical prior (confounder_scale): fixed effects in effect.
    Covariance "dispersion" by default: with one fixed effect per test-cluster the
    test-clustered sandwich came out ~10x wider than the dispersion-scaled Laplace
    covariance on hand-built data with independent arms (an open question for newton.py).
    """
    conf = {"weekday": log.confounders["weekday"]}
    if test_effects:
        tests, codes = np.unique(np.asarray(log.group), return_inverse=True)
        conf["test"] = Confounder("categorical", codes.astype(np.int64),
                                  tuple(str(t) for t in tests))
    text = text_term(text_spec, log.content) if text_spec else None
    design = build_design(conf, source=log.source)
    n, group = len(log), np.asarray(log.group)
    fold = fold_ids(n, cfg.folds, cfg.seed, group)
    take = lambda idx: {k: c.take(idx) for k, c in conf.items()}  # noqa: E731
    g_hat, cov = np.empty(n), np.empty((cfg.folds, len(WEEKDAYS), len(WEEKDAYS)))
    for k in range(cfg.folds):
        train, test = fold != k, fold == k
        f_k = fit(text_NxF=None if text is None else text[train], confounders=take(train),
                  cfg=cfg, outcome=np.asarray(log.outcome)[train], groups=group[train],
                  design=design, source=f"{log.source} (fold {k} training rows)")
        eff, cov[k] = _weekday_block(f_k)
        g_hat[test] = eff[np.asarray(conf["weekday"].values)[test]]
    full = fit(text_NxF=text, confounders=conf, cfg=cfg, outcome=log.outcome, groups=group,
               design=design, source=log.source)
    return WeekdayAdjusted(g_hat, np.asarray(log.outcome, np.float64) - g_hat, fold, cov, full)


def pair_margins(a, b, adjusted: WeekdayAdjusted, logit_var, weekday
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(adjusted margin [P], its standard error [P]) of within-test pairs (a, b): the
    binomial noise of both arms' logits plus the variance of the estimated weekday
    difference g_hat(day_a) - g_hat(day_b) (zero when both arms share a day)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    k = adjusted.fold[a]
    if np.any(k != adjusted.fold[b]):
        raise ValueError("pair_margins: a pair spans two folds (pairs must stay within a test)")
    da, db = np.asarray(weekday)[a], np.asarray(weekday)[b]
    c = adjusted.cov_KxDxD
    var_g = c[k, da, da] + c[k, db, db] - 2.0 * c[k, da, db]
    var = np.asarray(logit_var)[a] + np.asarray(logit_var)[b] + np.clip(var_g, 0.0, None)
    return adjusted.logit_adjusted[a] - adjusted.logit_adjusted[b], np.sqrt(var)


def weekday_effect_table(adjusted: WeekdayAdjusted, cfg: MondayConfig):
    """Estimated centred weekday effects next to the true centred ones (pandas frame)."""
    eff = adjusted.effects()
    eff = eff[eff["parameter"] == "weekday"].reset_index(drop=True)
    truth = cfg.weekday_effects()
    return eff.assign(truth=truth - truth.mean())[["level", "truth", "mean", "lo", "hi"]]


# ---- pairs -----------------------------------------------------------------------------------
def candidate_pairs(group, story, max_per_story: int = 10, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs (a, b) of different arms of the same test, at most max_per_story per story
    (a seeded random subset, chosen before any outcome is looked at, so the confounded and
    the adjusted ordering rank the same pairs)."""
    group, story = np.asarray(group, np.int64), np.asarray(story, np.int64)
    rng = np.random.default_rng(seed)
    a_all, b_all = [], []
    for s in np.unique(story):
        rows = np.flatnonzero(story == s)
        a, b = [], []
        for g in np.unique(group[rows]):
            members = rows[group[rows] == g]
            i, j = np.triu_indices(len(members), k=1)
            a.append(members[i])
            b.append(members[j])
        a, b = np.concatenate(a), np.concatenate(b)
        if len(a) > max_per_story:
            keep = np.sort(rng.choice(len(a), max_per_story, replace=False))
            a, b = a[keep], b[keep]
        a_all.append(a)
        b_all.append(b)
    if not a_all:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(a_all).astype(np.int64), np.concatenate(b_all).astype(np.int64)


def orient(a, b, score) -> tuple[np.ndarray, np.ndarray]:
    """(winner, loser) rows of each pair by `score` (higher wins); tied pairs are dropped."""
    a, b, score = np.asarray(a), np.asarray(b), np.asarray(score, np.float64)
    keep = score[a] != score[b]
    a, b = a[keep], b[keep]
    a_wins = score[a] > score[b]
    return np.where(a_wins, a, b), np.where(a_wins, b, a)


def pair_stats(win, lose, marker) -> dict[str, float]:
    """Pair count, the shares of winners/losers carrying a Monday or Friday marker, and
    among pairs of a marked and an unmarked headline the share the marked one wins (0.5:
    the ordering carries no preference for markers)."""
    marker = np.asarray(marker)
    share = lambda rows, m: float(np.mean(marker[rows] == m)) if len(rows) else float("nan")  # noqa
    mixed = (marker[win] > 0) != (marker[lose] > 0)
    return {"n_pairs": int(len(win)), "win_monday": share(win, 1), "lose_monday": share(lose, 1),
            "win_friday": share(win, 2), "lose_friday": share(lose, 2),
            "marked_wins_mixed": float(np.mean(marker[win][mixed] > 0)) if mixed.any()
            else float("nan")}


def encode_rows(policy, prompts, texts, max_len: int, max_prompt_len: int,
                batch_size: int = 64) -> dict[str, np.ndarray]:
    """(prompt, text) rows in the SFT layout with their log-prob under the reference (SFT)
    policy: keys tokens, loss_mask, attn_mask [N, L] and ref [N]. Encode each arm once;
    `pair_data` indexes them into any number of DPO training sets. The tokenizer is the
    policy's own."""
    from dlm.policy.dpo import batched_sequence_logprobs

    tokens, loss_mask = encode_sft(policy.tokenizer, [str(p) for p in prompts],
                                   [str(t) for t in texts], max_len, max_prompt_len)
    # right padding: attend up to the last target (pad may equal a real id, e.g. EOS)
    last = loss_mask.shape[1] - 1 - np.argmax(loss_mask[:, ::-1] > 0, axis=1)
    attn = np.arange(tokens.shape[1])[None, :] <= last[:, None]
    ref = batched_sequence_logprobs(policy.params, policy.model_cfg, tokens, loss_mask, attn,
                                    batch_size)
    return {"tokens": tokens, "loss_mask": loss_mask, "attn_mask": attn, "ref": ref}


def pair_data(rows: dict[str, np.ndarray], chosen, rejected) -> dict[str, np.ndarray]:
    """dlm.policy.dpo's training set (the keys `preference_data` makes) for pairs of
    encoded rows: row chosen[i] is preferred to row rejected[i]."""
    if len(chosen) == 0:
        raise ValueError("pair_data: no pairs")
    data = {}
    for side, idx in (("chosen", np.asarray(chosen)), ("rejected", np.asarray(rejected))):
        data.update({f"{side}_{k}": rows[k][idx] for k in ("tokens", "loss_mask", "attn_mask")})
        data[f"ref_{side}"] = rows["ref"][idx]
    return data
