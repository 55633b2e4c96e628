"""sims.headlines: the headline world's observational, replicated and interventional draws."""
import jax
import numpy as np
import pytest

from dlm.data.builtin_corpus import builtin_corpus
from dlm.data.markers import MARKERS, WEEKDAYS, strip_marker
from sims.featurise import FEATURES, phi
from sims.headlines import HeadlineWorld, HeadlineWorldConfig

N = 20000   # one sample size for the shared draw, so the model compiles once per world


@pytest.fixture(scope="module")
def corpus():
    return builtin_corpus(n_stories=120, seed=1)


@pytest.fixture(scope="module")
def world(corpus):
    return HeadlineWorld(corpus, HeadlineWorldConfig())


@pytest.fixture(scope="module")
def obs(world):
    return world.sample(jax.random.PRNGKey(0), N)


def test_posted_rows_are_consistent_with_the_corpus(world, corpus, obs):
    log = obs.log
    assert len(log) == N and log.is_binomial
    for i in range(0, N, 997):
        s, h = obs.story[i], obs.headline[i]
        assert strip_marker(log.content[i]) == world.candidates[s][h]
        assert log.context[i] == corpus.contexts[s]
    np.testing.assert_array_equal(log.group, obs.story)
    np.testing.assert_array_equal(log.confounders["week"].values, np.asarray(corpus.weeks)[obs.story])
    assert log.confounders["week"].levels == corpus.week_labels
    assert log.confounders["weekday"].levels == WEEKDAYS
    la = log.confounders["log_audience"].values
    np.testing.assert_allclose(log.trials, np.round(np.exp(la)), atol=1)   # float32 exp
    assert (log.trials == np.round(log.trials)).all()
    assert (log.successes <= log.trials).all()
    assert 0.01 < log.successes.sum() / log.trials.sum() < 0.04          # CTR around 2%
    np.testing.assert_array_equal(obs.phi, phi(log.content))


def test_true_effect_matches_tau_of_posted_texts(world, obs):
    np.testing.assert_allclose(world.true_effect(obs.log.content), obs.tau, atol=1e-5)
    # by hand: digit .3 + question .25 + you .2 + length(5 words: -1) * -.05 + marker -.1
    text = "Happy Friday! Can You Name 3 Birds?"
    assert world.true_effect([text])[0] == pytest.approx(0.3 + 0.25 + 0.2 + 0.05 - 0.1)


def test_markers_only_on_their_weekday_at_rate_p_marker(obs):
    wd = obs.log.confounders["weekday"].values
    assert (obs.marker[(wd != 0) & (wd != 4)] == 0).all()
    assert (obs.marker[wd == 0] != 2).all() and (obs.marker[wd == 4] != 1).all()
    for day in (0, 4):
        rate = (obs.marker[wd == day] > 0).mean()
        se = np.sqrt(0.8 * 0.2 / (wd == day).sum())
        assert abs(rate - 0.8) < 4 * se
    starts = np.array([c.startswith(MARKERS["monday"]) for c in obs.log.content])
    np.testing.assert_array_equal(starts, obs.marker == 1)


def _entangled_score(world, sample):
    """Posted candidate's question + second_person, minus its story's candidate mean."""
    cols = [FEATURES.index(f) for f in world.cfg.entangled]
    score_SxK = world.phi_SxKxF[:, :, cols].sum(-1)
    mean_S = (score_SxK * world.mask_SxK).sum(1) / world.mask_SxK.sum(1)
    return score_SxK[sample.story, sample.headline] - mean_S[sample.story]


@pytest.mark.parametrize("entanglement", [0.0, 0.9])
def test_headline_choice_depends_on_z_only_when_entangled(corpus, entanglement):
    w = HeadlineWorld(corpus, HeadlineWorldConfig(entanglement=entanglement))
    s = w.sample(jax.random.PRNGKey(1), 4000)
    corr = np.corrcoef(s.z, _entangled_score(w, s))[0, 1]
    q = s.phi[:, FEATURES.index("question")] + s.phi[:, FEATURES.index("second_person")]
    lo, hi = s.z < np.quantile(s.z, 1 / 3), s.z > np.quantile(s.z, 2 / 3)
    if entanglement == 0.0:
        assert abs(corr) < 0.06                      # ~4 standard errors at n = 4000
        assert abs(q[hi].mean() - q[lo].mean()) < 0.1
    else:
        assert corr > 0.3
        assert q[hi].mean() > q[lo].mean() + 0.3


def test_intervene_fixes_c_and_randomises_text(world):
    s = world.intervene(jax.random.PRNGKey(2), N)
    conf = s.log.confounders
    assert (conf["week"].values == world.ref_week).all()
    assert (conf["weekday"].values == WEEKDAYS.index("Wed")).all()
    np.testing.assert_allclose(conf["log_audience"].values, world.cfg.log_audience_mean, rtol=1e-6)
    np.testing.assert_allclose(s.z, 0.0, atol=1e-5)
    # g is the same for every unit: the week's g plus Wednesday's effect (0) plus no audience term
    np.testing.assert_allclose(s.g, world.truth()["g_week"][world.ref_week], atol=1e-5)
    # headline uniform over the story's candidates: P(first candidate) = mean(1 / n_candidates)
    n_cand = world.mask_SxK.sum(1)[s.story]
    assert (s.headline < n_cand).all()
    p_first = (1.0 / n_cand).mean()
    assert abs((s.headline == 0).mean() - p_first) < 4 * np.sqrt(p_first / N)
    assert abs((s.headline / n_cand).mean() - ((n_cand - 1) / (2 * n_cand)).mean()) < 0.01
    # the marker is a fair coin, either day's marker, whatever the weekday
    assert abs((s.marker > 0).mean() - 0.5) < 0.02
    assert abs((s.marker == 1).mean() - 0.25) < 0.02
    monday = world.intervene(jax.random.PRNGKey(3), N, c_ref={"weekday": "Mon"}, marker_rate=0.0)
    assert (monday.log.confounders["weekday"].values == 0).all() and (monday.marker == 0).all()
    np.testing.assert_allclose(monday.g - s.g, 0.3, atol=1e-5)


def test_regression_on_confounders_recovers_weekday_effects(world, obs):
    """logit-CTR - tau on weekday + week dummies + log audience: g's structure comes back."""
    conf = obs.log.confounders
    wd, week = conf["weekday"].values, conf["week"].values
    X = np.column_stack([np.eye(7)[wd], np.eye(world.n_periods)[week],
                         conf["log_audience"].values - world.cfg.log_audience_mean])
    y = obs.log.logit_outcome() - obs.tau
    coef = np.linalg.lstsq(X, y, rcond=None)[0]
    truth = world.truth()
    np.testing.assert_allclose(coef[:7] - coef[:7].mean(), truth["weekday_effects"], atol=0.03)
    assert coef[-1] == pytest.approx(truth["audience_slope"], abs=0.03)


def test_sample_many_equals_separate_samples(world):
    keys = jax.random.split(jax.random.PRNGKey(4), 3)
    many = world.sample_many(keys, 300)
    assert len(many) == 3 and many.tau.shape == (3, 300) and many.phi.shape == (3, 300, len(FEATURES))
    for r in range(3):
        one = world.sample(keys[r], 300)
        rep = many[r]
        for name in ("story", "headline", "marker"):
            np.testing.assert_array_equal(getattr(rep, name), getattr(one, name))
        np.testing.assert_allclose(rep.tau, one.tau, atol=1e-6)
        np.testing.assert_allclose(rep.g, one.g, atol=1e-6)
        np.testing.assert_array_equal(rep.log.successes, one.log.successes)
        np.testing.assert_array_equal(rep.log.content, one.log.content)


def test_truth_and_config():
    cfg = HeadlineWorldConfig(confounder_strength=2.0, beta={"digit": 1.0})
    np.testing.assert_array_equal(cfg.beta_vector(), [1.0, 0, 0, 0, 0, 0])
    w = HeadlineWorld(builtin_corpus(n_stories=10, seed=2), cfg)
    t = w.truth()
    wd = np.array([0.3, 0.05, 0.0, -0.05, -0.3, 0.02, -0.02])
    np.testing.assert_allclose(t["weekday_effects"], 2.0 * (wd - wd.mean()))
    assert t["audience_slope"] == pytest.approx(0.4) and t["marker_effect"] == -0.1
    assert t["g_week"].shape == (w.n_periods,)
    # trend: -0.8 in total from the first to the last period (the season is the rest)
    season = 0.1 * np.sin(2 * np.pi * np.array([0, w.n_periods - 1]) / 52.18)
    assert (t["g_week"][-1] - t["g_week"][0]) / 2 - (season[1] - season[0]) == pytest.approx(-0.8, abs=1e-5)
    with pytest.raises(ValueError, match="unknown features"):
        HeadlineWorldConfig(beta={"digits": 1.0})
    with pytest.raises(ValueError, match="p_marker"):
        HeadlineWorldConfig(p_marker=1.5)
    with pytest.raises(ValueError, match="weekday"):
        w.reference_condition({"weekday": "Funday"})


def test_builtin_corpus_varies_every_feature():
    c = builtin_corpus(n_stories=600, seed=0)
    assert len(c) == 600 and len(set(c.story_ids)) == 600
    n_heads = np.array([len(h) for h in c.headlines])
    assert n_heads.min() >= 2 and n_heads.max() <= 4
    assert all(len(set(h)) == len(h) for h in c.headlines)
    x = phi([h for heads in c.headlines for h in heads])
    base = x[:, :6]
    assert (base.std(0) > 0).all(), dict(zip(FEATURES, base.std(0)))
    assert len(set(x[:, FEATURES.index("length")])) >= 5
    weeks = np.asarray(c.weeks)
    assert weeks.min() >= 0 and weeks.max() < len(c.week_labels) == 110
    assert len(np.unique(weeks)) > 90
    assert c.week_labels[0] == "201303" and c.week_labels[50] == "201401"   # ISO weeks, in order
    again = builtin_corpus(n_stories=600, seed=0)
    assert again.headlines == c.headlines and again.contexts == c.contexts
