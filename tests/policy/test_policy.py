"""dlm.policy on a tiny random decoder: best-of-n, DPO, REINFORCE, evaluation."""
import dataclasses

import jax
import numpy as np
import pandas as pd
import pytest

from dlm.data.batching import prompt_weighted_mask
from dlm.data.tokenizer import ByteTokenizer
from dlm.eval.policy_eval import (best_of_n_pool, evaluate_best_of_n, evaluate_policy,
                                  generation_metrics, kl_to_reference)
from dlm.models.decoder import PRESETS, init_params
from dlm.policy import sft, sft_cache, sft_corpus
from dlm.policy.best_of_n import best_indices, pick_best, sample_pool, score_pool
from dlm.policy.dpo import (DPOConfig, pairs_from_pool, policy_logprobs, preference_data,
                            rank_pairs, train_dpo)
from dlm.policy.reinforce import ReinforceConfig, sequence_kl, train_reinforce
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


# ---- DPO ---------------------------------------------------------------------------------
def byte_sum(texts):
    """A toy reward with a known order."""
    return np.array([sum(t.encode()) for t in texts], float)


def test_rank_pairs_pairs_best_with_worst_and_skips_ties():
    scores = np.array([[1.0, 3.0, 2.0, 0.0], [5.0, 5.0, 5.0, 5.0], [0.0, 1.0, 1.0, 2.0]])
    pairs = rank_pairs(scores, pairs_per_prompt=2)
    got = list(zip(pairs.p_idx.tolist(), pairs.chosen.tolist(), pairs.rejected.tolist()))
    # prompt 0: order 1,2,0,3 -> (1 vs 3), (2 vs 0); prompt 1: all tied -> none;
    # prompt 2: order 3,1,2,0 -> (3 vs 0), (1 vs 2) is a tie -> dropped
    assert got == [(0, 1, 3), (0, 2, 0), (2, 3, 0)]
    np.testing.assert_allclose(pairs.margin, [3.0, 1.0, 2.0])
    same = rank_pairs(np.array([[1.0, 0.0]]), texts=[["x", "x"]])
    assert len(same) == 0                                     # identical texts: no preference


def test_dpo_loss_falls_and_chosen_margin_rises(params, pool, tmp_path):
    pairs = pairs_from_pool(pool, byte_sum)
    assert len(pairs) == 3 and (pairs.margin > 0).all()
    data = preference_data(pool, pairs, params, CFG)
    # the reference log-probs are those of the exact sampled tokens
    np.testing.assert_allclose(data["ref_chosen"], pool.logprobs_PxN[pairs.p_idx, pairs.chosen],
                               rtol=1e-4, atol=1e-3)
    dcfg = DPOConfig(beta=0.5, lr=3e-3, steps=12, batch_size=3, warmup_steps=1, log_every=1)
    result = train_dpo(params, CFG, data, dcfg, tmp_path)
    losses = [r["loss"] for r in result.history]
    assert losses[0] == pytest.approx(np.log(2), abs=1e-4)   # policy == reference at step 0
    assert losses[-1] < 0.5 * losses[0]
    lp_c, lp_r = policy_logprobs(result.state.params, CFG, data)
    margin_after = np.asarray(lp_c - lp_r)
    margin_before = data["ref_chosen"] - data["ref_rejected"]
    assert (margin_after > margin_before).all()
    # the reference itself was not touched by the (donating) train step
    again = preference_data(pool, pairs, params, CFG)
    np.testing.assert_array_equal(again["ref_chosen"], data["ref_chosen"])
    assert (tmp_path / "metrics.jsonl").exists()


def test_preference_data_without_pairs_is_a_clear_error(params, pool):
    pairs = pairs_from_pool(pool, lambda t: np.zeros(len(t)))
    with pytest.raises(ValueError, match="no pairs"):
        preference_data(pool, pairs, params, CFG)


# ---- REINFORCE ---------------------------------------------------------------------------
def ascii_share(texts):
    """A toy reward a random byte model can improve: the share of ASCII characters."""
    return np.array([np.mean([ord(c) < 128 for c in t]) if t else 0.0 for t in texts])


def test_kl_term_is_zero_at_the_reference(params, pool):
    seqs = pool.sequences(np.arange(3), np.zeros(3, int))
    np.testing.assert_array_equal(np.asarray(sequence_kl(params, params, CFG, *seqs)), 0.0)
    other = init_params(CFG, jax.random.key(5))
    assert np.all(np.asarray(sequence_kl(other, params, CFG, *seqs)) != 0.0)


def test_kl_to_reference_is_zero_for_the_reference_and_positive_away_from_it(params, pool):
    assert kl_to_reference(pool, params, CFG) == pytest.approx(0.0, abs=1e-3)
    other = init_params(CFG, jax.random.key(5))
    far = sample_pool(other, CFG, TOK, LEDES, n=4, key=jax.random.key(1), max_new_tokens=8)
    assert kl_to_reference(far, params, CFG) > 0.01         # two near-uniform random models


def test_reinforce_raises_a_toy_reward(params, tmp_path):
    rcfg = ReinforceConfig(steps=25, prompts_per_step=3, k=4, kl_coef=0.01, lr=1e-2,
                           warmup_steps=1, max_new_tokens=8, max_prompt_len=32, log_every=1)
    result = train_reinforce(params, CFG, TOK, LEDES, ascii_share, rcfg, tmp_path)
    assert result.history[0]["kl"] == pytest.approx(0.0, abs=1e-4)  # first rollout: pi = ref
    assert len(result.history) == 25 and (tmp_path / "metrics.jsonl").exists()

    def mean_reward(p):   # many fresh samples, same keys for both policies
        pool = sample_pool(p, CFG, TOK, LEDES, n=32, key=jax.random.key(9), max_new_tokens=8,
                           max_prompt_len=32)
        return ascii_share(pool.flat_texts()).mean()

    before, after = mean_reward(params), mean_reward(result.params)
    assert after > before + 0.1, (before, after)


# ---- evaluation --------------------------------------------------------------------------
def test_generation_metrics_by_hand():
    texts = ["5 Things You Need To Know", "Why Is This Happening?", "Happy Monday! 3 Cats", ""]
    from sims.featurise import FEATURES, phi
    m = generation_metrics(texts, lambda t: np.arange(len(t), dtype=float), (phi, FEATURES))
    assert m["n_generations"] == 4 and m["objective"] == pytest.approx(1.5)
    assert m["digit_share"] == pytest.approx(0.5)            # "5 Things", "3 Cats"
    assert m["question_share"] == pytest.approx(0.25)
    assert m["second_person_share"] == pytest.approx(0.25)
    assert m["this_share"] == pytest.approx(0.25)
    assert m["marker_rate"] == pytest.approx(0.25)
    assert m["empty_share"] == pytest.approx(0.25) and m["distinct_share"] == 1.0
    assert m["mean_words"] == pytest.approx((6 + 4 + 4 + 0) / 4)
    bare = generation_metrics(texts)       # no world's feature map: no feature shares
    for k, v in m.items():
        if k == "objective" or (k.endswith("_share") and k not in ("empty_share", "distinct_share")):
            assert np.isnan(bare[k]), k
        else:
            assert bare[k] == v, k
    with pytest.raises(ValueError, match="lacks"):
        generation_metrics(texts, features=(phi, FEATURES[1:]))


def test_evaluate_policy_uses_fixed_seeds_and_enough_generations(params):
    kw = dict(seeds=(0, 1), n_generations=7, max_new_tokens=6, max_prompt_len=32)
    a = evaluate_policy(params, CFG, TOK, LEDES, None, **kw)
    b = evaluate_policy(params, CFG, TOK, LEDES, None, **kw)
    assert list(a["seed"]) == [0, 1] and (a["n_generations"] == 9).all()   # 3 ledes x 3
    pd.testing.assert_frame_equal(a, b)
    assert a["kl_to_ref"].isna().all()                        # no reference given
    c = evaluate_policy(params, CFG, TOK, LEDES, None, ref_params=params, **kw)
    np.testing.assert_allclose(c["kl_to_ref"], 0.0, atol=1e-3)  # the reference itself
    pools = [best_of_n_pool(params, CFG, TOK, LEDES, s, n=2, n_generations=7, max_new_tokens=6,
                            max_prompt_len=32) for s in (0, 1)]
    bon = evaluate_best_of_n(pools, byte_sum, None)
    assert (bon["n_generations"] == 9).all() and list(bon["seed"]) == [0, 1]


# ---- the cached SFT policy ---------------------------------------------------------------
def test_sft_policy_trains_once_then_loads(tmp_path):
    cfg = dataclasses.replace(sft.PRESETS["tiny"], steps=4, ckpt_every=0, n_samples=2)
    first = sft_cache.sft_policy(cfg, directory=tmp_path / "sft")
    log = (tmp_path / "sft" / "metrics.jsonl").read_text()
    second = sft_cache.sft_policy(cfg, directory=tmp_path / "sft")       # loaded, not retrained
    assert (tmp_path / "sft" / "metrics.jsonl").read_text() == log
    for x, y in zip(jax.tree.leaves(first.params), jax.tree.leaves(second.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert second.model_cfg == first.model_cfg
    with pytest.raises(FileExistsError, match="steps: saved 4 vs wanted 5"):
        sft_cache.sft_policy(dataclasses.replace(cfg, steps=5), directory=tmp_path / "sft")
    assert sft_cache.sft_cache_dir(cfg, root=tmp_path) != sft_cache.sft_cache_dir(
        dataclasses.replace(cfg, seed=1), root=tmp_path)


def _hand_corpus(n=20, suffix=""):
    from dlm.data.corpus import StoryCorpus
    return StoryCorpus(
        story_ids=tuple(f"s{i}" for i in range(n)),
        contexts=tuple(f"Story {i} about a town{suffix}." for i in range(n)),
        headlines=tuple((f"Town {i} wins{suffix}", f"Why town {i} matters") for i in range(n)),
        weeks=np.zeros(n, np.int32), week_labels=("w0",))


def test_sft_on_a_given_corpus_splits_it_and_keys_the_cache_by_its_label(tmp_path):
    import json
    cfg = dataclasses.replace(sft.PRESETS["tiny"], steps=2, ckpt_every=0, n_samples=2)
    stories = _hand_corpus()
    policy = sft_cache.sft_policy(cfg, directory=tmp_path / "a", corpus=(stories, "my stories"))
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    train, val = sft_corpus.split_corpus(stories, cfg)   # the split the data file would get
    assert saved["data"] == "my stories"
    assert (saved["n_train_stories"], saved["n_val_stories"]) == (len(train), len(val)) == (15, 5)
    assert saved["n_train_pairs"] == 30            # two headlines per training story
    # the second call loads the finished run; a different corpus under the same label does not
    again = sft_cache.sft_policy(cfg, directory=tmp_path / "a", corpus=(stories, "my stories"))
    for x, y in zip(jax.tree.leaves(policy.params), jax.tree.leaves(again.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    with pytest.raises(FileExistsError, match="corpus_fingerprint"):
        sft_cache.sft_policy(cfg, directory=tmp_path / "a", corpus=(_hand_corpus(suffix="!"), "my stories"))
    keys = {sft_cache.sft_cache_dir(cfg, root=tmp_path, corpus=c) for c in
            [(stories, "my stories"), (stories, "other label"), (_hand_corpus(suffix="!"), "my stories")]}
    assert len(keys) == 3 and sft_cache.sft_cache_dir(cfg, root=tmp_path) not in keys
    with pytest.raises(ValueError, match="not both"):
        sft.train_sft(cfg, tmp_path / "b", data=tmp_path / "x.csv", corpus=(stories, "my stories"))
    with pytest.raises(TypeError, match="source_label"):
        sft_cache.sft_policy(cfg, directory=tmp_path / "c", corpus=stories)


def test_prompt_weighted_mask_weights_the_lede_and_never_bos_or_padding():
    P, B, E = 9, 1, 2                                 # pad, bos, eos ids of this toy layout
    tokens = np.array([[B, 5, 6, 7, 8, E, P, P]])      # BOS lede(5,6) response(7,8) EOS pad
    mask = np.array([[0, 0, 0, 1, 1, 1, 0, 0]], np.float32)
    np.testing.assert_array_equal(prompt_weighted_mask(tokens, mask, P, 0.0), mask)
    np.testing.assert_allclose(prompt_weighted_mask(tokens, mask, P, 0.25),
                               [[0, .25, .25, 1, 1, 1, 0, 0]])


def test_a_weighted_mask_makes_next_token_loss_a_weighted_mean_of_the_nll():
    from dlm.train.losses import next_token_loss
    # logits that give known probabilities: at every position p(token 0) = 1/2, p(1) = 1/4
    logits = np.log(np.array([0.5, 0.25, 0.25], np.float32))[None, None].repeat(4, 1)
    tokens = np.array([[0, 0, 1, 1]])                  # targets 0, 1, 1 -> nll ln2, ln4, ln4
    weights = np.array([[0, 0.5, 1, 0]], np.float32)   # weight .5 on ln2, 1 on ln4, 0 on ln4
    loss, m = next_token_loss(logits, tokens, weights)
    assert float(loss) == pytest.approx((0.5 * np.log(2) + np.log(4)) / 1.5, rel=1e-6)
    assert float(m["nats_sum"]) == pytest.approx(0.5 * np.log(2) + np.log(4), rel=1e-6)


def test_bpe_sft_policy_carries_its_tokenizer_through_load_sft(tmp_path):
    from dlm.data.subword import SubwordTokenizer
    cfg = dataclasses.replace(sft.PRESETS["tiny"], steps=2, ckpt_every=0, n_samples=2,
                              tokenizer="bpe", bpe_vocab=512, prompt_loss_weight=0.3)
    policy = sft_cache.sft_policy(cfg, directory=tmp_path / "bpe", corpus=(_hand_corpus(), "hand"))
    loaded = sft_cache.load_sft(tmp_path / "bpe")
    assert isinstance(loaded.tokenizer, SubwordTokenizer)
    assert loaded.model_cfg.vocab_size == policy.tokenizer.vocab_size == loaded.tokenizer.vocab_size
    assert loaded.tokenizer.encode("Why town 7 matters") == policy.tokenizer.encode("Why town 7 matters")
    for x, y in zip(jax.tree.leaves(policy.params), jax.tree.leaves(loaded.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    pool = sample_pool(loaded.params, loaded.model_cfg, loaded.tokenizer, ["Story 3 about a town."],
                       n=2, key=jax.random.key(0), max_new_tokens=6, batch_size=2)
    assert len(pool.texts[0]) == 2 and all(isinstance(t, str) for t in pool.texts[0])
