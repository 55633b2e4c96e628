"""The simulated headline world (DESIGN.md section 3) as one NumPyro model.

Real (or template) stories and headlines, simulated clicks:

    logit p = intercept + tau(X) + g(C) + u,   clicks ~ Binomial(impressions, p)

C = (week, weekday, log audience) also shifts which candidate is posted (through
z(C) on the entangled features) and whether a weekday marker is added. Sampling the model
gives an observational log; `do()` on C, the headline and the marker gives the A/B world;
`true_effect` scores any string by the true tau.

Optional popularity (issue 15's instrumental-variable world; `popularity=True`, off by
default so the world above and its numbers are unchanged): a popularity score

    P = popularity_tau * tau + lambda . phi_base(X) + popularity_confounding * g(C)
        + promotion_strength * Z + popularity_u * u / unit_noise_sd + e_P,
    e_P ~ Normal(0, popularity_sd)

rises with a better headline, with the confounders and with a randomised promotion slot
Z ~ Bernoulli(promotion_rate), and adds popularity_effect * P to the logit. P shares the
unobserved unit noise u with the outcome, so it is endogenous: adjusting for it as an
exogenous confounder biases its effect; Z reaches the outcome only through P (the
instrument). The log then carries P and Z as numeric columns "popularity" and "promotion".

lambda = popularity_text (None by default: lambda = 0, and the draws are those without
it) weighs BASE_FEATURES, as beta does (a tuple or a {feature: weight} dict): text that
moves P other than through tau (e.g. emotive words shared more than they are clicked).
Without it P's text part is proportional to tau, so every reward built from the text is
too and rankings cannot tell P's path from the direct one. A headline's total effect on
the logit, P's path included, is `true_total_effect`:
(1 + popularity_effect * popularity_tau) * tau + popularity_effect * lambda . phi_base.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from dlm.causal import scm
from dlm.data.log import Confounder, ObservationalLog
from dlm.data.markers import FRIDAY, MARKER_PREFIXES, MONDAY, WEDNESDAY, WEEKDAYS
from sims.featurise import BASE_FEATURES, FEATURES, enlarge, phi

SITES: tuple[str, ...] = ("story", "week", "weekday", "log_audience", "z", "headline", "marker",
                          "phi", "tau", "g", "u", "impressions", "clicks")
PERIODS_PER_YEAR = 52.18   # ISO weeks per year, for the annual season
_MASKED = -1e9             # logit of a padding candidate (finite: keeps log_prob NaN-free)


@dataclasses.dataclass(frozen=True)
class HeadlineWorldConfig:
    """Every knob of the world; defaults from DESIGN.md section 3 (mean CTR about 2%)."""

    entanglement: float = 0.6
    k: float = 4.0
    p_marker: float = 0.8
    marker_effect: float = -0.1
    confounder_strength: float = 1.0
    # true effects of BASE_FEATURES (digit, question, second_person, length, emotive, this);
    # a dict {feature: weight} is accepted too (missing features weigh 0)
    beta: Any = (0.3, 0.25, 0.2, -0.05, 0.15, 0.2)
    intercept: float = -4.4             # mean CTR ~2.2% (template corpus), ~1.8% (Upworthy)
    week_trend: float = -0.8            # total change of g over the week range
    season_amp: float = 0.1             # amplitude of the annual sine
    weekday_effects: tuple[float, ...] = (0.3, 0.05, 0.0, -0.05, -0.3, 0.02, -0.02)
    audience_slope: float = 0.2
    log_audience_mean: float = math.log(3000.0)
    log_audience_sd: float = 0.5
    unit_noise_sd: float = 0.2
    n_candidates: int = 10
    entangled: tuple[str, ...] = ("question", "second_person")
    variant_seed: int = 0               # which variants enlarge each story's candidate set
    # popularity P and its instrument Z (see the module docstring); off by default
    popularity: bool = False
    popularity_effect: float = 0.2      # beta_P: P's effect on the logit
    promotion_strength: float = 0.5     # pi: shift of P in a promoted posting
    promotion_rate: float = 0.5         # P(Z = 1), randomised
    popularity_tau: float = 1.0         # P per unit of tau
    popularity_confounding: float = 1.0  # P per unit of g(C)
    popularity_u: float = 1.0           # P per sd of the unit noise u (the endogeneity)
    popularity_sd: float = 1.0
    popularity_text: Any = None         # lambda: P per unit of each BASE_FEATURE (as beta)

    def __post_init__(self):
        if not 0.0 <= self.p_marker <= 1.0:
            raise ValueError(f"p_marker must be in [0, 1], got {self.p_marker}")
        if len(self.weekday_effects) != 7:
            raise ValueError(f"weekday_effects needs 7 values (Mon..Sun), got {len(self.weekday_effects)}")
        bad = [f for f in self.entangled if f not in BASE_FEATURES]
        if bad:
            raise ValueError(f"entangled features {bad} not in {BASE_FEATURES}")
        if self.n_candidates < 1 or self.log_audience_sd <= 0 or self.unit_noise_sd < 0:
            raise ValueError("need n_candidates >= 1, log_audience_sd > 0, unit_noise_sd >= 0")
        if not 0.0 < self.promotion_rate < 1.0 or self.popularity_sd <= 0:
            raise ValueError("need promotion_rate in (0, 1) and popularity_sd > 0")
        self.beta_vector()  # validates beta
        if self.popularity_text is not None and not self.popularity:
            raise ValueError("popularity_text weighs the text's path into P: it needs popularity=True")
        self.popularity_text_vector()

    def beta_vector(self) -> np.ndarray:
        """beta over BASE_FEATURES as a float array."""
        return _base_weights("beta", self.beta)

    def popularity_text_vector(self) -> np.ndarray:
        """lambda (P's direct text loading) over BASE_FEATURES; zeros when not set."""
        if self.popularity_text is None:
            return np.zeros(len(BASE_FEATURES))
        return _base_weights("popularity_text", self.popularity_text)


def _base_weights(name: str, weights) -> np.ndarray:
    """A weight per BASE_FEATURES from a sequence in that order or a {feature: weight} dict
    (missing features weigh 0)."""
    if isinstance(weights, Mapping):
        unknown = set(weights) - set(BASE_FEATURES)
        if unknown:
            raise ValueError(f"{name} has unknown features {sorted(unknown)}; known: {BASE_FEATURES}")
        return np.array([float(weights.get(f, 0.0)) for f in BASE_FEATURES])
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (len(BASE_FEATURES),):
        raise ValueError(f"{name} needs {len(BASE_FEATURES)} values {BASE_FEATURES}, got {w.size}")
    if not np.isfinite(w).all():
        raise ValueError(f"{name} has a non-finite weight: {w.tolist()}")
    return w


@dataclasses.dataclass(frozen=True)
class WorldSample:
    """One draw of n postings: the log an analyst sees, plus the truth behind each row."""

    log: ObservationalLog
    tau: np.ndarray        # [N] true effect of the posted text (marker included)
    g: np.ndarray          # [N] confounder effect on the logit
    phi: np.ndarray        # [N, F] features of the posted text (columns FEATURES)
    story: np.ndarray      # [N] story index into the corpus
    headline: np.ndarray   # [N] candidate index within the story (HeadlineWorld.candidates)
    marker: np.ndarray     # [N] 0 none, 1 Monday marker, 2 Friday marker
    z: np.ndarray          # [N] standardised confounder score that tilts the headline choice
    u: np.ndarray          # [N] unit noise on the logit
    popularity: np.ndarray | None = None   # [N] P (popularity worlds only)
    promotion: np.ndarray | None = None    # [N] Z in {0, 1} (popularity worlds only)


@dataclasses.dataclass(frozen=True)
class WorldSamples:
    """R replicates from one vmapped call: arrays [R, N, ...]; `[r]` gives replicate r."""

    sites: Mapping[str, np.ndarray]
    world: "HeadlineWorld"

    def __len__(self) -> int:
        return int(self.sites["tau"].shape[0])

    def __getitem__(self, r: int) -> WorldSample:
        return self.world._to_sample({k: v[r] for k, v in self.sites.items()})

    def __getattr__(self, name: str) -> np.ndarray:
        if name in ("sites", "world"):
            raise AttributeError(name)
        try:
            return self.sites[name]
        except KeyError:
            raise AttributeError(name) from None


class HeadlineWorld:
    """The headline world over a StoryCorpus; see the module docstring."""

    def __init__(self, corpus, cfg: HeadlineWorldConfig = HeadlineWorldConfig()):
        self.corpus, self.cfg = corpus, cfg
        self.candidates = self._candidates(corpus, cfg)
        S, K = len(self.candidates), max(len(c) for c in self.candidates)
        self.text_SxK = np.full((S, K), "", dtype=object)
        self.mask_SxK = np.zeros((S, K), bool)
        for s, cands in enumerate(self.candidates):
            self.text_SxK[s, :len(cands)] = cands
            self.mask_SxK[s, :len(cands)] = True
        self.phi_SxKxF = phi(self.text_SxK.reshape(-1)).reshape(S, K, len(FEATURES))
        cols = [FEATURES.index(f) for f in cfg.entangled]
        self.score_SxK = self.phi_SxKxF[:, :, cols].sum(-1)
        self.beta_F = np.concatenate([cfg.beta_vector(), [cfg.marker_effect] * 2])
        self.pop_text_F = np.concatenate([cfg.popularity_text_vector(), [0.0, 0.0]])  # lambda
        self.weeks_S = np.asarray(corpus.weeks, dtype=np.int64)
        self.n_periods = len(corpus.week_labels)
        if self.weeks_S.min() < 0 or self.weeks_S.max() >= self.n_periods:
            raise ValueError(f"corpus weeks must lie in 0..{self.n_periods - 1} (its week_labels), "
                             f"got {self.weeks_S.min()}..{self.weeks_S.max()}")
        # the population's middle week: z is centred there, so z ~ 0 on average and = 0 at c_ref
        self.ref_week = int(np.rint(self.weeks_S.mean()))
        self.week_sd = float(self.weeks_S.std()) or 1.0
        self.sites = SITES + (("promotion", "popularity") if cfg.popularity else ())
        self._jit_sample = jax.jit(self._sites, static_argnums=1)
        self._jit_many = jax.jit(self._sites_many, static_argnums=1)
        self._jit_do = jax.jit(self._sites_do, static_argnums=1)

    @staticmethod
    def _candidates(corpus, cfg) -> list[tuple[str, ...]]:
        rng = np.random.default_rng(cfg.variant_seed)
        out = []
        for sid, heads in zip(corpus.story_ids, corpus.headlines):
            cands = enlarge(heads, rng, cfg.n_candidates)
            if not cands:
                raise ValueError(f"story {sid!r} has no non-empty headline")
            out.append(cands)
        if not out:
            raise ValueError("the corpus has no stories")
        return out

    # ---- the structural pieces, jnp so the model jit-compiles and vmaps -------------------
    def g_week(self, week):
        """Trend (centred, `week_trend` in total over the range) plus the annual season."""
        span = max(self.n_periods - 1, 1)
        trend = self.cfg.week_trend * (week / span - 0.5)
        season = self.cfg.season_amp * jnp.sin(2 * jnp.pi * week / PERIODS_PER_YEAR)
        return trend + season

    def z_score(self, week, log_audience):
        """Audience up and week down, standardised by the population moments (mean audience,
        story weeks' sd, centred at ref_week), so z = 0 at the reference condition."""
        a = (log_audience - self.cfg.log_audience_mean) / self.cfg.log_audience_sd
        w = (week - self.ref_week) / self.week_sd
        return (a - w) / math.sqrt(2.0)

    def model(self, n: int):
        """n postings: story, conditions, the posted candidate and marker, clicks."""
        cfg = self.cfg
        S = len(self.candidates)
        weeks_S = jnp.asarray(self.weeks_S, jnp.float32)
        with numpyro.plate("postings", n):
            story = numpyro.sample("story", dist.Categorical(logits=jnp.zeros(S)))
            week = numpyro.sample("week", dist.Delta(weeks_S[story]))
            weekday = numpyro.sample("weekday", dist.Categorical(probs=jnp.full(7, 1 / 7)))
            log_aud = numpyro.sample("log_audience",
                                     dist.Normal(cfg.log_audience_mean, cfg.log_audience_sd))
            z = numpyro.deterministic("z", self.z_score(week, log_aud))
            score_NxK = cfg.entanglement * cfg.k * z[:, None] * jnp.asarray(self.score_SxK)[story]
            logits_NxK = jnp.where(jnp.asarray(self.mask_SxK)[story], score_NxK, _MASKED)
            headline = numpyro.sample("headline", dist.Categorical(logits=logits_NxK))
            marker = numpyro.sample("marker", dist.Categorical(probs=self._marker_probs(weekday)))
            phi_NxF = jnp.asarray(self.phi_SxKxF)[story, headline]
            phi_NxF = phi_NxF.at[:, -2].set(marker == 1).at[:, -1].set(marker == 2)
            numpyro.deterministic("phi", phi_NxF)
            tau = numpyro.deterministic("tau", phi_NxF @ jnp.asarray(self.beta_F, jnp.float32))
            weekday_eff = jnp.asarray(cfg.weekday_effects, jnp.float32)[weekday]
            g = numpyro.deterministic("g", cfg.confounder_strength * (
                self.g_week(week) + weekday_eff
                + cfg.audience_slope * (log_aud - cfg.log_audience_mean)))
            u = numpyro.sample("u", dist.Normal(0.0, cfg.unit_noise_sd))
            logit = cfg.intercept + tau + g + u
            if cfg.popularity:   # new sites only here: the default world's draws are unchanged
                logit = logit + cfg.popularity_effect * self._popularity(tau, g, u, phi_NxF)
            # integer counts: numpyro's binomial sampler indexes tables by n
            impressions = numpyro.deterministic(
                "impressions", jnp.round(jnp.exp(log_aud)).astype(jnp.int32))
            return numpyro.sample("clicks", dist.Binomial(
                total_count=impressions, logits=logit))

    def _popularity(self, tau, g, u, phi_NxF):
        """P (module docstring) and its instrument Z, as sites "popularity" and "promotion"."""
        cfg = self.cfg
        promo = numpyro.sample("promotion", dist.Bernoulli(cfg.promotion_rate))
        e = numpyro.sample("popularity_noise", dist.Normal(0.0, cfg.popularity_sd))
        u_std = u / cfg.unit_noise_sd if cfg.unit_noise_sd > 0 else 0.0 * u
        text = cfg.popularity_tau * tau
        if self.pop_text_F.any():   # deterministic: no new draws, the others stay as they were
            text = text + phi_NxF @ jnp.asarray(self.pop_text_F, jnp.float32)
        return numpyro.deterministic("popularity", (
            text + cfg.popularity_confounding * g
            + cfg.promotion_strength * promo + cfg.popularity_u * u_std + e))

    def _marker_probs(self, weekday):
        """[N, 3] over (none, Monday, Friday): the day's marker w.p. p_marker on Mon/Fri."""
        p = self.cfg.p_marker
        mon = jnp.array([1 - p, p, 0.0])
        fri = jnp.array([1 - p, 0.0, p])
        none = jnp.array([1.0, 0.0, 0.0])
        wd = weekday[:, None]
        return jnp.where(wd == MONDAY, mon, jnp.where(wd == FRIDAY, fri, none))

    # ---- sampling ---------------------------------------------------------------------------
    def _sites(self, key, n):
        return scm.sample_sites(self.model, key, n, sites=self.sites)

    def _sites_many(self, keys, n):
        return scm.sample_many(self.model, keys, n, sites=self.sites)

    def _sites_do(self, key, n, week, weekday, log_audience, marker_rate):
        """The A/B world: C fixed, headline uniform over the story's candidates, marker random."""
        k_story, k_head, k_has, k_day, k_model = jax.random.split(key, 5)
        n_cand_S = jnp.asarray(self.mask_SxK.sum(1))
        story = jax.random.randint(k_story, (n,), 0, len(self.candidates))
        headline = jnp.floor(jax.random.uniform(k_head, (n,)) * n_cand_S[story]).astype(jnp.int32)
        has = jax.random.bernoulli(k_has, marker_rate, (n,))
        kind = 1 + jax.random.bernoulli(k_day, 0.5, (n,)).astype(jnp.int32)
        values = {"story": story, "headline": headline, "marker": has * kind,
                  "week": jnp.full((n,), week, jnp.float32),
                  "weekday": jnp.full((n,), weekday, jnp.int32),
                  "log_audience": jnp.full((n,), log_audience, jnp.float32)}
        return scm.sample_sites(scm.intervene(self.model, values), k_model, n, sites=self.sites)

    def sample(self, key, n: int) -> WorldSample:
        """n observational postings."""
        return self._to_sample(self._jit_sample(key, n))

    def sample_many(self, keys, n: int) -> WorldSamples:
        """len(keys) replicates of `sample` in one vmapped call (leading seed axis)."""
        sites = self._jit_many(keys, n)
        return WorldSamples({k: np.asarray(v) for k, v in sites.items()}, self)

    def reference_condition(self, c_ref: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """c_ref with defaults filled in: ref_week (the stories' mean week), Wednesday, mean
        audience, i.e. z = 0. weekday may be a code 0..6 or a name ("Wed")."""
        c = {"week": self.ref_week, "weekday": WEDNESDAY, "log_audience": self.cfg.log_audience_mean}
        unknown = set(c_ref or {}) - set(c)
        if unknown:
            raise ValueError(f"c_ref has unknown confounders {sorted(unknown)}; known: {sorted(c)}")
        c.update(c_ref or {})
        if isinstance(c["weekday"], str):
            if c["weekday"][:3].title() not in WEEKDAYS:
                raise ValueError(f"c_ref weekday must be one of {WEEKDAYS}, got {c['weekday']!r}")
            c["weekday"] = WEEKDAYS.index(c["weekday"][:3].title())
        return c

    def intervene(self, key, n: int, c_ref: Mapping[str, Any] | None = None,
                  marker_rate: float = 0.5) -> WorldSample:
        """n postings from the A/B world do(C = c_ref, headline ~ uniform, marker ~ coin)."""
        c = self.reference_condition(c_ref)
        return self._to_sample(self._jit_do(key, n, c["week"], c["weekday"], c["log_audience"],
                                            marker_rate))

    # ---- truth ------------------------------------------------------------------------------
    def true_effect(self, texts) -> np.ndarray:
        """tau for arbitrary strings: beta . phi(text) + marker_effect * marker (the direct
        effect; in a popularity world see true_total_effect)."""
        return phi(texts).astype(np.float64) @ self.beta_F

    def true_total_effect(self, texts) -> np.ndarray:
        """The text's total effect on the logit: tau plus popularity_effect times its effect
        on P (popularity_tau * tau + lambda . phi); tau itself without popularity."""
        cfg = self.cfg
        if not cfg.popularity:
            return self.true_effect(texts)
        p = phi(texts).astype(np.float64)
        return ((1.0 + cfg.popularity_effect * cfg.popularity_tau) * (p @ self.beta_F)
                + cfg.popularity_effect * (p @ self.pop_text_F))

    def truth(self) -> dict[str, Any]:
        """The true confounder structure, in the form an estimator reports it."""
        cfg, s = self.cfg, self.cfg.confounder_strength
        wd = np.asarray(cfg.weekday_effects, np.float64)
        weeks = np.arange(self.n_periods, dtype=np.float64)
        extra = {"popularity_effect": cfg.popularity_effect,
                 "popularity_text": dict(zip(BASE_FEATURES, cfg.popularity_text_vector().tolist()))
                 } if cfg.popularity else {}
        return extra | {
            "weekday_levels": WEEKDAYS,
            "weekday_effects": s * (wd - wd.mean()),
            "audience_slope": s * cfg.audience_slope,
            "marker_effect": cfg.marker_effect,
            "beta": dict(zip(BASE_FEATURES, cfg.beta_vector().tolist())),
            "g_week": s * np.asarray(self.g_week(weeks)),
            "week_labels": tuple(self.corpus.week_labels),
            "ref_week": self.ref_week,
            "intercept": cfg.intercept,
        }

    # ---- numpy edge: indices back to texts -------------------------------------------------
    def _to_sample(self, sites: Mapping[str, Any]) -> WorldSample:
        a = {k: np.asarray(v) for k, v in sites.items()}
        story, headline, marker = (a[k].astype(np.int64) for k in ("story", "headline", "marker"))
        content = MARKER_PREFIXES[marker] + self.text_SxK[story, headline]
        confounders = {
            "weekday": Confounder("categorical", a["weekday"].astype(np.int64), WEEKDAYS),
            "week": Confounder("time", np.rint(a["week"]).astype(np.int64),
                               tuple(self.corpus.week_labels)),
            "log_audience": Confounder("numeric", a["log_audience"].astype(np.float64)),
        }
        pop = {k: a[k].astype(np.float64) for k in ("popularity", "promotion") if k in a}
        confounders.update({k: Confounder("numeric", v) for k, v in pop.items()})
        log = ObservationalLog(
            content=content,
            context=np.asarray(self.corpus.contexts, dtype=object)[story],
            group=story,
            successes=a["clicks"].astype(np.float64),
            trials=a["impressions"].astype(np.float64),
            confounders=confounders,
            source="HeadlineWorld",
        )
        return WorldSample(log=log, tau=a["tau"], g=a["g"], phi=a["phi"], story=story,
                           headline=headline, marker=marker, z=a["z"], u=a["u"], **pop)
