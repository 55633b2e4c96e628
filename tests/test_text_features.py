"""Named text representations: deterministic, shaped as asked, clear errors."""
import numpy as np
import pytest

from dlm.data.text_features import text_representation
from sims.featurise import FEATURES

TEXTS = ["You Won't Believe These 7 Facts?", "This Is Heartbreaking", "A plain headline"]


def test_ngram_is_deterministic_with_requested_width():
    a = text_representation(TEXTS, "ngram:64")
    b = text_representation(list(TEXTS), "ngram:64")
    assert a.shape == (3, 64) and np.array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)


def test_phi_and_none():
    assert text_representation(TEXTS, "phi").shape == (3, len(FEATURES))
    assert text_representation(TEXTS, "none") is None


@pytest.mark.parametrize("spec", ["bert", "ngram:x", "ngram:0"])
def test_bad_specs_are_named(spec):
    with pytest.raises(ValueError, match="text representation"):
        text_representation(TEXTS, spec)
