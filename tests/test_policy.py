"""dlm.policy on a tiny random decoder: best-of-n, DPO, REINFORCE, evaluation."""
import jax
import numpy as np
import pytest

from dlm.data.tokenizer import ByteTokenizer
from dlm.models.decoder import PRESETS, init_params
from dlm.policy.best_of_n import best_indices, pick_best, sample_pool, score_pool
from dlm.sample import sequence_logprobs

CFG = PRESETS["tiny"]
TOK = ByteTokenizer()
LEDES = ["A nurse on night shifts.", "A farmer and the drought.", "A kid on a playground."]


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.key(0))


@pytest.fixture(scope="module")
def pool(params):
    return sample_pool(params, CFG, TOK, LEDES, n=4, key=jax.random.key(1), max_new_tokens=8,
                       batch_size=8)


def test_pool_shapes_and_logprobs_match_the_tokens(params, pool):
    assert len(pool) == 3 and pool.n == 4
    assert [len(row) for row in pool.texts] == [4, 4, 4]
    assert pool.flat_texts(2) == [t for row in pool.texts for t in row[:2]]
    # the stored log-probs are those of exactly the stored tokens under the policy
    p_idx, k_idx = np.array([0, 1, 2, 2]), np.array([3, 0, 1, 2])
    lp = sequence_logprobs(params, CFG, *pool.sequences(p_idx, k_idx))
    np.testing.assert_allclose(lp, pool.logprobs_PxN[p_idx, k_idx], rtol=1e-4, atol=1e-3)


def test_pool_is_a_pure_function_of_the_key(params, pool):
    again = sample_pool(params, CFG, TOK, LEDES, n=4, key=jax.random.key(1), max_new_tokens=8,
                        batch_size=8)
    assert again.texts == pool.texts
    other = sample_pool(params, CFG, TOK, LEDES, n=4, key=jax.random.key(2), max_new_tokens=8,
                        batch_size=8)
    assert other.texts != pool.texts


def test_best_of_n_picks_the_argmax_of_any_reward(pool):
    # a reward with a known order: the sum of byte values, so the argmax is computable by hand
    reward = lambda texts: np.array([sum(t.encode()) for t in texts], float)  # noqa: E731
    want = [max(row, key=lambda t: sum(t.encode())) for row in pool.texts]
    assert pick_best(pool, reward) == want
    # best-of-2 only looks at the first two samples of each prompt
    want2 = [max(row[:2], key=lambda t: sum(t.encode())) for row in pool.texts]
    assert pick_best(pool, reward, n=2) == want2
    idx, scores = best_indices(pool, reward)
    assert scores.shape == (3, 4) and (scores[np.arange(3), idx] == scores.max(1)).all()


def test_best_of_n_ties_and_nan_and_bad_rewards(pool):
    idx, _ = best_indices(pool, lambda t: np.zeros(len(t)))
    assert (idx == 0).all()                                   # ties: the earliest sample
    nan_first = lambda t: np.array([np.nan if i % 4 == 0 else 1.0 for i in range(len(t))])  # noqa
    assert (best_indices(pool, nan_first)[0] == 1).all()      # NaN never wins
    with pytest.raises(ValueError, match="returned 1 scores for 12 texts"):
        score_pool(pool, lambda t: np.zeros(1))
    with pytest.raises(ValueError, match="n must be in 1..4"):
        pick_best(pool, lambda t: np.zeros(len(t)), n=5)
