"""sims.featurise: hand-computed features, marker stripping, candidate variants."""
import numpy as np
import pytest

from dlm.data.markers import strip_marker
from sims.featurise import (BASE_FEATURES, FEATURES, PREFIXES, add_marker, enlarge, phi,
                            toggle_question)

COL = {name: i for i, name in enumerate(FEATURES)}


def row(text):
    return dict(zip(FEATURES, phi([text])[0].tolist()))


def test_hand_computed_features():
    # 12 words, a digit, a question, "you", two emotive words (+1 capped), "this"
    r = row("Are You Ready For 7 Amazing, Shocking, Beautiful Facts About This Dog?")
    assert r == {"digit": 1.0, "question": 1.0, "second_person": 1.0, "length": pytest.approx(0.4),
                 "emotive": 2.0, "this": 1.0, "marker_monday": 0.0, "marker_friday": 0.0}
    # 5 words, nothing else; "thistle"/"youth" are not the words "this"/"you"
    r = row("A thistle for the youth")
    assert r == {"digit": 0.0, "question": 0.0, "second_person": 0.0, "length": -1.0,
                 "emotive": 0.0, "this": 0.0, "marker_monday": 0.0, "marker_friday": 0.0}
    assert row("What you’re missing")["second_person"] == 1.0   # curly apostrophe
    assert row("Do it yourself.")["second_person"] == 1.0
    assert row("One incredible story")["emotive"] == 1.0
    assert row("Is it over? No.")["question"] == 0.0            # the question must end it


def test_shape_dtype_and_empty():
    x = phi(["a", "b c", "a"])
    assert x.shape == (3, len(FEATURES)) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0], x[2])
    assert phi([]).shape == (0, len(FEATURES))


def test_marker_changes_only_marker_columns():
    texts = ["You Won't Believe These 3 Amazing Dogs?", "This is a plain headline", "x"]
    base = phi(texts)
    mon = phi([add_marker(t, "monday") for t in texts])
    fri = phi([add_marker(t, "Fri") for t in texts])
    b = [COL[f] for f in BASE_FEATURES]
    np.testing.assert_array_equal(mon[:, b], base[:, b])
    np.testing.assert_array_equal(fri[:, b], base[:, b])
    assert (mon[:, COL["marker_monday"]] == 1).all() and (mon[:, COL["marker_friday"]] == 0).all()
    assert (fri[:, COL["marker_friday"]] == 1).all() and (fri[:, COL["marker_monday"]] == 0).all()
    assert (base[:, [COL["marker_monday"], COL["marker_friday"]]] == 0).all()


def test_add_and_strip_marker():
    assert add_marker("Dogs", "mon") == "Happy Monday! Dogs"
    assert add_marker("Happy Monday! Dogs", "friday") == "Happy Friday! Dogs"   # no stacking
    assert strip_marker("happy friday!  Dogs") == "Dogs"
    assert strip_marker("Dogs are happy Monday!") == "Dogs are happy Monday!"   # prefix only
    with pytest.raises(ValueError, match="day"):
        add_marker("Dogs", "sunday")


def test_toggle_question():
    assert toggle_question("Is it real?") == "Is it real"
    assert toggle_question("It is real.") == "It is real?"
    assert toggle_question("It is real") == "It is real?"


def test_enlarge_keeps_originals_dedupes_and_caps():
    rng = np.random.default_rng(0)
    originals = ["Why Are We Doing This?", "Happy Friday! Dogs Are Great", "Dogs Are Great"]
    out = enlarge(originals, rng, target=10)
    assert out[:2] == ("Why Are We Doing This?", "Dogs Are Great")   # marker stripped, deduped
    assert len(out) == 10 and len(set(out)) == 10
    for v in out[2:]:   # every variant is a toggle and/or a prefix of an original
        core = next((v[len(p):] for p in PREFIXES if v.startswith(p)), v)
        assert core in out[:2] or toggle_question(core) in out[:2]
    # small target: originals are never dropped
    assert enlarge(originals, rng, target=1) == out[:2]
    # few variants available: all of them, no padding
    assert len(enlarge(["Dogs"], rng, target=100)) == 1 + 1 + 2 * len(PREFIXES)


def test_enlarge_is_deterministic_for_a_seed():
    h = ["One", "Two?"]
    a = enlarge(h, np.random.default_rng(5), target=6)
    b = enlarge(h, np.random.default_rng(5), target=6)
    assert a == b
