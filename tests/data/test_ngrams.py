"""dlm.data.ngrams: hashed features by hand, ridge vs numpy's closed form, BT vs known weights."""
import zlib

import numpy as np
import pytest
import scipy.optimize
import scipy.sparse
import scipy.special

from dlm.data import ngrams

D = 2 ** 14


def _col_sign(gram: str, d: int = D) -> tuple[int, float]:
    h = zlib.crc32(gram.encode("utf-8"))
    return (h & 0x7FFFFFFF) % d, (-1.0 if h >> 31 else 1.0)


def test_stable_hash_known_crc32():
    # crc32(b"hello") is the published constant 0x3610A686 (top bit 0: sign +1)
    X = ngrams.hashed_ngrams(["hello"], normalize=False)
    assert X.nnz == 1 and X[0, 0x3610A686 % D] == 1.0


def test_word_ngrams_counts_signs_and_question_mark():
    X = ngrams.hashed_ngrams(["The cat saw the cat?"], normalize=False, dense=True)
    expect = np.zeros(D, np.float32)
    grams = ["the", "cat", "saw", "the", "cat", "?",
             "the cat", "cat saw", "saw the", "the cat", "cat ?"]
    for g in grams:
        col, sign = _col_sign(g)
        expect[col] += sign
    assert X.dtype == np.float32 and X.shape == (1, D)
    np.testing.assert_array_equal(X[0], expect)
    assert ngrams.hashed_ngrams(["Why"], normalize=False).nnz == 1
    assert ngrams.hashed_ngrams(["Why?"], normalize=False, ngram_range=(1, 1)).nnz == 2


def test_signed_hashing_uses_the_top_bit():
    neg = next(g for g in (f"w{i}" for i in range(100)) if zlib.crc32(g.encode()) >> 31)
    col, sign = _col_sign(neg)
    assert sign == -1.0
    assert ngrams.hashed_ngrams([neg], normalize=False)[0, col] == -1.0
    assert ngrams.hashed_ngrams([neg], normalize=False, signed=False)[0, col] == 1.0


def test_char_ngrams_lowercase_and_options():
    X = ngrams.hashed_ngrams(["Abc"], char=True, ngram_range=(2, 3), normalize=False, signed=False)
    cols = sorted(_col_sign(g)[0] for g in ("ab", "bc", "abc"))
    assert sorted(X.indices.tolist()) == cols
    a, b = ngrams.hashed_ngrams(["The"]), ngrams.hashed_ngrams(["the"])
    assert (a != b).nnz == 0
    assert (ngrams.hashed_ngrams(["The"], lowercase=False) != b).nnz > 0
    with pytest.raises(ValueError, match="ngram_range"):
        ngrams.hashed_ngrams(["x"], ngram_range=(2, 1))


def test_l2_rows_duplicates_and_empty_text():
    texts = ["a b c", "", "a b c", "you won't believe this"]
    X = ngrams.hashed_ngrams(texts, n_features=64)
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    np.testing.assert_allclose(norms, [1, 0, 1, 1], atol=1e-6)
    np.testing.assert_array_equal(X[0].toarray(), X[2].toarray())
    dense = ngrams.hashed_ngrams(texts, n_features=64, dense=True)
    np.testing.assert_array_equal(dense, X.toarray())


def _ridge_closed_form(X, y, v, l2):
    """argmin 1/2 sum v (y - Xw - b)^2 / sum v + l2/2 |w|^2, by the normal equations (float64)."""
    A = np.hstack([X, np.ones((len(X), 1))])
    V = v / v.sum()
    pen = np.diag(np.r_[np.full(X.shape[1], l2), 0.0])
    theta = np.linalg.solve(A.T @ (V[:, None] * A) + pen, A.T @ (V * y))
    return theta[:-1], theta[-1]


def test_ridge_matches_numpy_closed_form_dense_and_sparse():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 12)) * (rng.random((200, 12)) < 0.4)    # sparse-ish
    y = X @ rng.normal(size=12) + 0.7 + 0.3 * rng.normal(size=200)
    v = rng.uniform(0.2, 3.0, size=200)
    w_ref, b_ref = _ridge_closed_form(X, y, v, l2=0.05)
    for Xin in (X, scipy.sparse.csr_matrix(X)):
        m = ngrams.fit_linear(Xin, y, weights=v, l2=0.05)
        np.testing.assert_allclose(m.w, w_ref, atol=2e-4)
        assert m.b == pytest.approx(b_ref, abs=2e-4)
        np.testing.assert_allclose(m(Xin), X @ w_ref + b_ref, atol=1e-3)
    with pytest.raises(ValueError, match="y 3"):
        ngrams.fit_linear(X, y[:3])
    with pytest.raises(ValueError, match="weights"):
        ngrams.fit_linear(X, y, weights=-v)


def _bt_data(rng, n_items=300, d=6, n_pairs=4000):
    X = rng.normal(size=(n_items, d))
    w_true = rng.normal(size=d)
    i, j = rng.integers(0, n_items, size=(2, n_pairs))
    i_wins = rng.random(n_pairs) < scipy.special.expit(X[i] @ w_true - X[j] @ w_true)
    return X, w_true, np.where(i_wins, i, j), np.where(i_wins, j, i)


def test_bradley_terry_recovers_generating_weights_and_optimum():
    rng = np.random.default_rng(1)
    X, w_true, a, b = _bt_data(rng)
    m = ngrams.fit_bradley_terry_linear(X, a, b, l2=1e-4)
    # 4000 pairs: the MLE's standard error is ~0.03 per weight
    np.testing.assert_allclose(m.w, w_true, atol=0.15)
    assert m.b == 0.0

    def loss(w):
        d = (X[a] - X[b]) @ w
        return np.mean(np.logaddexp(0, -d)) + 0.5e-4 * w @ w

    ref = scipy.optimize.minimize(loss, np.zeros(X.shape[1]), method="BFGS", tol=1e-10).x
    np.testing.assert_allclose(m.w, ref, atol=1e-3)
    with pytest.raises(ValueError, match="pairs_b indexes outside"):
        ngrams.fit_bradley_terry_linear(X, a[:2], [0, 10_000])


def test_hashed_reward_scores_texts():
    texts = ["is it true?", "it is true", "what now?", "now what", "who knew?", "we knew"]
    y = np.array([1.0 if t.endswith("?") else 0.0 for t in texts])
    m = ngrams.fit_linear(ngrams.hashed_ngrams(texts, n_features=256), y, l2=1e-2)
    reward = ngrams.hashed_reward(m, n_features=256)
    r = reward(["really?", "really"])
    assert r[0] > r[1]
    with pytest.raises(ValueError, match="n_features"):
        ngrams.hashed_reward(m)


def test_fits_on_many_row_counts_share_compilations():
    """Row counts are padded to power-of-two buckets (zero-weight rows, masked pairs): a
    cross-fitting sweep over many subset sizes compiles once per bucket, and the padding
    changes nothing (the 70-row fit equals the closed form, checked above for exact N)."""
    from dlm.data import ngrams as NG

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 5)).astype(np.float32)
    y = X @ np.arange(1.0, 6.0) + rng.normal(0, 0.1, 120)
    before = NG._fit_ridge._cache_size()
    fits = [NG.fit_linear(X[:n], y[:n], l2=1e-3) for n in (70, 90, 120)]   # one bucket: 128
    assert NG._fit_ridge._cache_size() - before <= 1
    A = np.c_[X[:70], np.ones(70)]
    wb = np.linalg.solve(A.T @ A / 70 + np.diag([1e-3] * 5 + [0.0]), A.T @ y[:70] / 70)
    np.testing.assert_allclose(fits[0].w, wb[:5], atol=2e-3)
    before = NG._fit_bt._cache_size()
    for p in (40, 50, 60):                                                  # one bucket: 64
        NG.fit_bradley_terry_linear(X, np.arange(p), np.arange(p) + 60, l2=1e-2)
    assert NG._fit_bt._cache_size() - before <= 1


def test_bradley_terry_padding_is_masked():
    """65 pairs pad to 128: the masked mean must equal the plain mean over the 65 (an
    unmasked one would halve the data term, i.e. double l2)."""
    import scipy.optimize

    from dlm.data.ngrams import fit_bradley_terry_linear

    rng = np.random.default_rng(3)
    X = rng.normal(size=(130, 4))
    a, b = np.arange(65), np.arange(65) + 65
    l2 = 1e-2

    def loss(w):
        return np.mean(np.logaddexp(0.0, -(X[a] - X[b]) @ w)) + 0.5 * l2 * w @ w

    want = scipy.optimize.minimize(loss, np.zeros(4), method="BFGS", tol=1e-10).x
    np.testing.assert_allclose(fit_bradley_terry_linear(X, a, b, l2=l2).w, want, atol=2e-4)
