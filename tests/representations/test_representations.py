"""dlm.representations: one registry of text representations, fitted on training texts only.

The pinned values were computed with the implementations before the registry
(dlm.data.text_features "ngram:64", dlm.rewards.representations NgramSVD dim 4), so a
change of numbers under the same spec fails here."""
import numpy as np
import pytest
import scipy.sparse

import sims.featurise  # noqa: F401  (registers "phi")
from dlm.data.ngrams import hashed_ngrams
from dlm.representations import (available_representations, fit_representation,
                                  register_representation, registry, text_term)
from sims.featurise import FEATURES

TEXTS = ["You Won't Believe These 7 Facts?", "This Is Heartbreaking", "A plain headline",
         "Happy Monday! 10 Reasons To Smile", "Why Your Cat Ignores You", "The Mayor Resigns",
         "Happy Friday! This Dog Is Amazing", "What Scientists Found In The Ocean",
         "You Need To See This: A plain headline", "Stunning Photos Of The Arctic"]
NEW = ["A new headline about cats", "Happy Monday! Ten facts"]


# ---- the numbers of the old implementations ----------------------------------------------------
def test_ngram_matches_the_old_text_features():
    H = fit_representation("ngram:64", TEXTS).transform(TEXTS + NEW)
    assert H.shape == (12, 64) and H.dtype == np.float32
    assert float(H.astype(np.float64).sum()) == pytest.approx(-1.7244874238967896, abs=1e-6)
    assert float(np.abs(H).astype(np.float64).sum()) == pytest.approx(34.35179024934769, abs=1e-6)
    assert np.flatnonzero(H[0]).tolist() == [2, 8, 18, 22, 23, 24, 27, 30, 45, 48, 50, 51, 61]
    s = 1 / np.sqrt(11)                       # 11 n-grams, two of them hashed into column 9
    expect = np.zeros(64)
    expect[[9, 19, 27, 32, 33, 35, 38, 45]] = [-2 * s, -s, -s, s, -s, s, s, s]
    np.testing.assert_allclose(H[-1], expect, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(H, axis=1), 1.0, rtol=1e-5)   # l2 rows


def test_ngram_svd_matches_the_old_ngram_svd():
    H = fit_representation("ngram-svd:4", TEXTS, seed=0).transform(TEXTS + NEW)
    assert H.shape == (12, 4) and H.dtype == np.float32
    assert float(H.astype(np.float64).sum()) == pytest.approx(-1.693083988968283, abs=1e-4)
    assert float(np.abs(H).astype(np.float64).sum()) == pytest.approx(36.922142130788416, abs=1e-4)
    np.testing.assert_allclose(H[:2], [[0.45830211, -0.54036647, -0.65345484, 1.96125829],
                                       [0.0075362, 1.53043258, -0.65345484, -0.36869302]],
                               atol=1e-5)
    np.testing.assert_allclose(H[-1], [0.59247214, 0.38928175, -0.65345484, -0.18505995], atol=1e-5)


# ---- the registry --------------------------------------------------------------------------------
def test_unknown_spec_lists_the_valid_ones():
    with pytest.raises(ValueError) as err:
        fit_representation("bert", TEXTS)
    for usage in ("ngram:D", "ngram-svd:D", "trunk", "llm:NAME", "none", "phi"):
        assert usage in str(err.value)
    assert set(available_representations()) >= {"ngram:D", "ngram-svd:D", "trunk", "llm:NAME",
                                                 "none", "phi"}


@pytest.mark.parametrize("spec", ["ngram:x", "ngram:0", "ngram:8:dense", "ngram-svd:-1",
                                  "none:3", "phi:2", "trunk:1"])
def test_bad_options_are_named(spec):
    with pytest.raises(ValueError, match=f"text representation '{spec}'"):
        fit_representation(spec, TEXTS)


def test_phi_unregistered_says_what_to_import(monkeypatch):
    monkeypatch.delitem(registry._BUILDERS, "phi")
    with pytest.raises(ValueError, match="`import sims.featurise` first"):
        fit_representation("phi", TEXTS)
    with pytest.raises(ValueError, match=r"phi \(after `import sims.featurise`\)"):
        fit_representation("bert", TEXTS)


def test_fit_uses_the_training_texts_only():
    """ngram-svd's directions and standardisation come from the texts it is fitted on;
    transforming other texts (alone or mixed in) changes nothing."""
    rep = fit_representation("ngram-svd:3", TEXTS)
    train = rep.transform(TEXTS)
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(train.std(0), 1, atol=1e-4)
    new = rep.transform(NEW)
    np.testing.assert_array_equal(rep.transform(TEXTS + NEW)[len(TEXTS):], new)
    other = fit_representation("ngram-svd:3", TEXTS + NEW)
    assert not np.allclose(other.transform(NEW), new)      # fitting on NEW would change it
    # the estimator's text term fits on the log's own texts, once per distinct text
    H = text_term("ngram-svd:3", TEXTS + TEXTS[:2])
    np.testing.assert_array_equal(H[:len(TEXTS)], rep.transform(TEXTS))
    np.testing.assert_array_equal(H[len(TEXTS):], H[:2])


def test_transform_shapes_and_dtypes():
    for spec, dim in (("ngram", 256), ("ngram:32", 32), ("ngram-svd:5", 5),
                      ("phi", len(FEATURES)), ("none", 0)):
        rep = fit_representation(spec, TEXTS)
        H = rep.transform(NEW + NEW)
        assert (rep.dim, H.shape, H.dtype) == (dim, (4, dim), np.float32), spec
        assert rep(NEW + NEW).shape == H.shape                   # callable as the trainer uses it
        assert rep.transform([]).shape == (0, dim), spec
    assert text_term("none", TEXTS) is None
    X = fit_representation("ngram:32:sparse", TEXTS).transform(NEW)
    assert scipy.sparse.issparse(X) and X.shape == (2, 32)
    np.testing.assert_array_equal(X.toarray(), fit_representation("ngram:32", TEXTS).transform(NEW))
    np.testing.assert_array_equal(text_term("ngram:32:sparse", NEW), text_term("ngram:32", NEW))


def test_feature_names():
    texts = ["Happy Monday! Cats win", "Happy Monday! Dogs win", "Dogs lose"]
    names = fit_representation("ngram:64", texts).feature_names
    assert len(names) == 64
    col = hashed_ngrams(["happy monday"], n_features=64, ngram_range=(2, 2)).indices[0]
    assert "happy monday" in names[col]
    col = hashed_ngrams(["dogs"], n_features=64, ngram_range=(1, 1)).indices[0]
    assert "dogs" in names[col]
    assert fit_representation("phi", texts).feature_names == FEATURES
    assert fit_representation("ngram-svd:2", texts).feature_names is None


def test_phi_is_the_worlds_features():
    np.testing.assert_array_equal(fit_representation("phi", []).transform(TEXTS),
                                  sims.featurise.phi(TEXTS))


def test_register_a_representation_with_context(monkeypatch):
    monkeypatch.setitem(registry._BUILDERS, "dummy", registry._BUILDERS["none"])   # restored after

    def build(option, train_texts, *, seed=0, scale=1.0, **_):
        width = int(option or 2)
        return registry.Features(lambda t: np.full((len(t), width), scale * len(train_texts)),
                                 width, f"dummy:{width}")

    register_representation("dummy", build, "dummy:W")
    rep = fit_representation("dummy:3", TEXTS, scale=0.5, trunk=None)     # unused context ok
    np.testing.assert_array_equal(rep.transform(NEW), np.full((2, 3), 5.0, np.float32))
    assert "dummy:W" in available_representations()


def test_trunk_needs_its_decoder():
    with pytest.raises(ValueError, match="needs trunk="):
        fit_representation("trunk", TEXTS)
    with pytest.raises(ValueError, match="llm:NAME"):
        fit_representation("llm", TEXTS)


@pytest.mark.slow
def test_llm_states_match_the_realdata_featuriser():
    """llm:NAME is the code moved from dlm.realdata.rewards.llm_featuriser: same numbers."""
    from dlm.models.pretrained import is_available

    if not is_available("smollm2-135m"):
        pytest.skip("smollm2-135m is not installed (see dlm/models/pretrained.py)")
    rep = fit_representation("llm:smollm2-135m", TEXTS, llm_batch=8)
    H = rep.transform(TEXTS + ["a much longer headline " * 4])
    assert H.shape == (11, rep.dim) == (11, 576) and H.dtype == np.float32
    np.testing.assert_allclose(rep.transform(TEXTS[:1])[0], H[0], rtol=1e-5)   # cached, same
    try:
        from dlm.realdata.rewards import llm_featuriser
    except ImportError:                      # folded into dlm.rewards: nothing to compare
        return
    ref = llm_featuriser("smollm2-135m", batch_size=8)(TEXTS + ["a much longer headline " * 4])
    np.testing.assert_allclose(H, ref, rtol=1e-5, atol=1e-6)
