"""A small story corpus generated from templates, for runs without --data.

Every script's default must work on a fresh clone with no Upworthy archive (DESIGN.md
section 3). The templates are varied so that every featuriser column varies across and
within stories: digits, questions, second person, emotive words, "this", lengths.
"""
from __future__ import annotations

import datetime

import numpy as np

from dlm.data.corpus import StoryCorpus

# (subject, topic, place): the slots a lede and its headlines are written around.
TOPICS: tuple[tuple[str, str, str], ...] = (
    ("A Teacher", "Her Students' Reading Scores", "a rural school"),
    ("A Nurse", "Night Shifts", "a city hospital"),
    ("A Father", "Paid Parental Leave", "a small town"),
    ("A Scientist", "Melting Glaciers", "Greenland"),
    ("A Comedian", "Student Debt", "a late-night show"),
    ("A Mayor", "Homeless Veterans", "Salt Lake City"),
    ("A Farmer", "Drought", "California's Central Valley"),
    ("A Teenager", "Online Bullying", "her high school"),
    ("A Grandmother", "Learning To Code", "her retirement home"),
    ("A Doctor", "Vaccines", "a crowded clinic"),
    ("A Chef", "Food Waste", "a busy restaurant"),
    ("An Artist", "Plastic In The Ocean", "a beach in Hawaii"),
    ("A Firefighter", "Wildfire Season", "the hills outside Los Angeles"),
    ("A Student", "Mental Health", "a college campus"),
    ("A Pilot", "Climate Change", "the cockpit"),
    ("A Librarian", "Banned Books", "a public library"),
    ("A Veteran", "PTSD", "a support group"),
    ("A Mother", "Equal Pay", "a board meeting"),
    ("A Photographer", "Refugee Camps", "the Greek islands"),
    ("A Dog Trainer", "Shelter Animals", "an animal shelter"),
    ("A Coach", "Girls In Sports", "a youth league"),
    ("A Senator", "Gun Violence", "the Senate floor"),
    ("A Poet", "Racism", "a slam competition"),
    ("A Janitor", "The Minimum Wage", "an office tower"),
    ("An Engineer", "Clean Water", "a village in Kenya"),
    ("A Kid", "Kindness", "a playground"),
    ("A Musician", "Deafness", "a concert hall"),
    ("A Police Officer", "Community Trust", "a tense neighborhood"),
    ("A Historian", "Forgotten Heroes", "a dusty archive"),
    ("A Beekeeper", "Disappearing Bees", "an orchard"),
    ("A Stranger", "Loneliness", "a subway car"),
    ("A CEO", "Working Parents", "a tech company"),
)

LEDES: tuple[str, ...] = (
    "{subj} spent {n} years working on {topic} in {place}. Here is what happened.",
    "In {place}, {subj} decided that {topic} could not wait any longer.",
    "Nobody expected {subj} from {place} to change how people think about {topic}.",
    "{subj} gave a short talk about {topic}. The reaction in {place} was immediate.",
    "A video from {place} shows {subj} taking on {topic} in {n} minutes.",
    "What {subj} found in {place} says a lot about {topic}.",
)

HEADLINES: tuple[str, ...] = (
    "{n} Things {Subj} Learned About {Topic}",
    "Why Did {Subj} Do This?",
    "You Won't Believe What {Subj} Did For {Topic}",
    "{Subj} Made An {Emo} Discovery About {Topic}",
    "This Is What Happens When {Subj} Stands Up For {Topic} In Front Of Everyone",
    "{Subj} Changed Everything",
    "What Would You Do If {Subj} Asked You About {Topic}?",
    "{n} {Emo} Photos Of {Topic} That Will Make Your Day",
    "The {Emo} Truth About {Topic}",
    "Is {Topic} Really As {Emo} As {Subj} Says?",
    "Watch {Subj} Explain {Topic} In {n} Minutes",
    "Here's Why {Subj} Cares So Much About {Topic}",
    "{Subj} Has A Message For Everyone Who Thinks {Topic} Doesn't Matter At All",
    "Your View Of {Topic} Will Never Be The Same",
    "How {Subj} Turned {Topic} Into Something {Emo}",
    "This {Emo} Video Shows {Topic} Like Never Before",
    "Can {Subj} Fix {Topic}?",
    "{Subj} Said {n} Words About {Topic}. They Were {Emo}.",
    "After {n} Years, {Subj} Finally Speaks Out About {Topic}",
    "Everyone Should Hear What {Subj} Has To Say About {Topic}",
    "{Topic}: The Story Nobody Told You",
    "A Short Look At {Topic}",
    "What Happened Next To {Subj} Is {Emo} And {Emo2}",
    "If You Care About {Topic}, You Need To Watch {Subj} Do This",
    "Meet {Subj} Fighting For {Topic}",
    "Are We Getting {Topic} Wrong?",
)

EMOTIVE_WORDS: tuple[str, ...] = ("Amazing", "Heartbreaking", "Incredible", "Shocking",
                                  "Beautiful", "Powerful", "Stunning", "Inspiring")
NUMBERS: tuple[int, ...] = (3, 5, 7, 9, 10, 12, 15, 21, 27, 50, 100)
N_PERIODS = 110
FIRST_WEEK = datetime.date(2013, 1, 14)   # Upworthy's archive starts in early 2013


def week_labels(n_periods: int = N_PERIODS, start: datetime.date = FIRST_WEEK) -> tuple[str, ...]:
    """Consecutive ISO-week labels "YYYYWW" (the Upworthy loader's format)."""
    labels = []
    for i in range(n_periods):
        year, week, _ = (start + datetime.timedelta(weeks=i)).isocalendar()
        labels.append(f"{year}{week:02d}")
    return tuple(labels)


def _fill(template: str, subj: str, topic: str, place: str, rng: np.random.Generator) -> str:
    emo, emo2 = rng.choice(EMOTIVE_WORDS, size=2, replace=False)
    n = int(rng.choice(NUMBERS))
    return template.format(Subj=subj, subj=subj, Topic=topic, topic=topic.lower(), place=place,
                           n=n, Emo=emo, Emo2=emo2)


def _story(rng: np.random.Generator) -> tuple[str, tuple[str, ...]]:
    """One (lede, distinct headlines) pair, 2-4 headlines."""
    subj, topic, place = TOPICS[rng.integers(len(TOPICS))]
    lede = _fill(LEDES[rng.integers(len(LEDES))], subj, topic, place, rng)
    lede = lede[0].upper() + lede[1:]
    n_heads = int(rng.integers(2, 5))
    picks = rng.choice(len(HEADLINES), size=n_heads, replace=False)
    heads = tuple(dict.fromkeys(_fill(HEADLINES[i], subj, topic, place, rng) for i in picks))
    return lede, heads


def builtin_corpus(n_stories: int = 600, seed: int = 0) -> StoryCorpus:
    """A StoryCorpus of `n_stories` template stories, weeks spread over N_PERIODS periods."""
    if n_stories < 1:
        raise ValueError(f"builtin_corpus: n_stories must be >= 1, got {n_stories}")
    rng = np.random.default_rng(seed)
    stories = [_story(rng) for _ in range(n_stories)]
    return StoryCorpus(
        story_ids=tuple(f"builtin-{i:05d}" for i in range(n_stories)),
        contexts=tuple(lede for lede, _ in stories),
        headlines=tuple(heads for _, heads in stories),
        weeks=np.sort(rng.integers(0, N_PERIODS, size=n_stories)),
        week_labels=week_labels(),
    )
