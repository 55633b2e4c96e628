"""dlm.data.corpus: stories from a log, take, split by story, the real archive."""
import numpy as np
import pytest

from dlm.data.corpus import StoryCorpus, stories_from_log
from dlm.data.log import Confounder, ObservationalLog


def tiny_log(group_labels=("s-a", "s-b", "s-c")) -> ObservationalLog:
    content = np.array([" Cats! ", "Cats!", "Dogs", "Birds", "Birds?", "Cats!", "Fish"], object)
    context = np.array(["c1", "c1b", "", "b1", "b1", "c1b", "f1"], object)
    week = Confounder("time", np.array([2, 2, 0, 1, 1, 3, 0]), ("w0", "w1", "w2", "w3"))
    return ObservationalLog(
        content=content, context=context, group=np.array([0, 0, 0, 1, 1, 0, 2]),
        successes=np.ones(7), trials=np.full(7, 10.0), confounders={"week": week},
        group_labels=group_labels)


def test_stories_from_log_by_hand():
    corpus = stories_from_log(tiny_log())
    assert corpus.story_ids == ("s-a", "s-b", "s-c")
    # distinct stripped headlines, first-seen order
    assert corpus.headlines == (("Cats!", "Dogs"), ("Birds", "Birds?"), ("Fish",))
    # story a: contexts c1, c1b, "", c1b -> c1b (empty ones never win)
    assert corpus.contexts == ("c1b", "b1", "f1")
    # story a: periods 2, 2, 0, 3 -> 2
    np.testing.assert_array_equal(corpus.weeks, [2, 1, 0])
    assert corpus.week_labels == ("w0", "w1", "w2", "w3")
    np.testing.assert_array_equal(corpus.n_headlines, [2, 2, 1])


def test_story_ids_default_to_codes_and_groups_are_required():
    assert stories_from_log(tiny_log(group_labels=None)).story_ids == ("0", "1", "2")
    log = tiny_log()
    no_groups = ObservationalLog(content=log.content, confounders=log.confounders,
                                 successes=log.successes, trials=log.trials)
    with pytest.raises(ValueError, match="group"):
        stories_from_log(no_groups)
    with pytest.raises(ValueError, match="no confounder 'day'"):
        stories_from_log(log, time_confounder="day")


def test_take_and_split():
    corpus = stories_from_log(tiny_log())
    sub = corpus.take(np.array([2, 0]))
    assert sub.story_ids == ("s-c", "s-a") and sub.headlines[1] == ("Cats!", "Dogs")
    np.testing.assert_array_equal(sub.weeks, [0, 2])
    assert sub.week_labels == corpus.week_labels and len(sub) == 2

    big = StoryCorpus(story_ids=tuple(f"s{i}" for i in range(100)),
                      contexts=tuple(f"c{i}" for i in range(100)),
                      headlines=tuple((f"h{i}",) for i in range(100)),
                      weeks=np.arange(100) % 7, week_labels=tuple("abcdefg"))
    train, val, test = big.split((0.7, 0.2, 0.1), seed=3)
    assert (len(train), len(val), len(test)) == (70, 20, 10)
    ids = [set(p.story_ids) for p in (train, val, test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert set().union(*ids) == set(big.story_ids)
    again = big.split((0.7, 0.2, 0.1), seed=3)
    assert [p.story_ids for p in again] == [p.story_ids for p in (train, val, test)]
    assert big.split((0.7, 0.2, 0.1), seed=4)[0].story_ids != train.story_ids
    for p in (train, val, test):  # contexts/weeks travel with their story
        for sid, ctx, w in zip(p.story_ids, p.contexts, p.weeks):
            assert ctx == "c" + sid[1:] and w == int(sid[1:]) % 7
    with pytest.raises(ValueError, match="sum to 1"):
        big.split((0.5, 0.2))


def test_real_archive(upworthy_path):
    from dlm.data.upworthy import load_upworthy
    corpus = stories_from_log(load_upworthy(upworthy_path))
    assert len(corpus) == 3_924
    assert 2.6 < corpus.n_headlines.mean() < 2.9
    assert len(corpus.week_labels) == corpus.weeks.max() + 1
    assert all(c for c in corpus.contexts[:100])
