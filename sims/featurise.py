"""Deterministic headline features phi(X), weekday markers, and candidate variants.

phi is the simulated world's notion of "what in the text matters": tau = beta . phi(X).
Base features are computed on the text with any weekday marker stripped, so adding a
marker changes only the marker columns (DESIGN.md section 3). Importing this module
registers the text representation "phi" in dlm.representations.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from dlm.data.markers import MARKER_RE, MARKERS, strip_marker
from dlm.representations import Features, register_representation
from dlm.representations.registry import no_option

FEATURES: tuple[str, ...] = ("digit", "question", "second_person", "length", "emotive",
                             "this", "marker_monday", "marker_friday")
BASE_FEATURES: tuple[str, ...] = FEATURES[:6]
MARKER_FEATURES: tuple[str, ...] = FEATURES[6:]

EMOTIVE: frozenset[str] = frozenset("""
    amazing heartbreaking incredible shocking beautiful powerful stunning brilliant awesome
    hilarious terrifying devastating inspiring adorable outrageous unbelievable horrifying
    gorgeous epic wonderful tragic heartwarming disturbing jaw-dropping mind-blowing
    astonishing breathtaking genius insane painful
""".split())
SECOND_PERSON: frozenset[str] = frozenset({"you", "your", "you're", "yourself"})
EMOTIVE_CAP = 2
LENGTH_CENTRE, LENGTH_SCALE = 10.0, 5.0

# Prefixes that turn a headline into a second-person variant (DESIGN.md section 3).
PREFIXES: tuple[str, ...] = ("You Need To See This: ", "Here's Why You Should Care: ",
                             "You Won't Believe This: ", "What You Should Know: ")

_WORD_RE = re.compile(r"[a-z0-9]+(?:['\-][a-z0-9]+)*")
_DIGIT_RE = re.compile(r"\d")
_DAYS = {"monday": "monday", "mon": "monday", "friday": "friday", "fri": "friday"}


def add_marker(text: str, day: str) -> str:
    """`text` with the weekday marker for `day` ("monday"/"mon"/"friday"/"fri") in front.

    Any existing marker is replaced, so markers never stack.
    """
    key = _DAYS.get(day.strip().lower())
    if key is None:
        raise ValueError(f"add_marker: day must be one of {sorted(_DAYS)}, got {day!r}")
    return MARKERS[key] + strip_marker(text)


def _marker_of(text: str) -> str | None:
    m = MARKER_RE.match(text)
    return None if m is None else m.group(1).lower()


def _features_one(text: str) -> tuple[float, ...]:
    """The 8 features of one text (see FEATURES)."""
    day = _marker_of(text)
    base = strip_marker(text).strip()
    words = _WORD_RE.findall(base.lower().replace("\u2019", "'").replace("\u2018", "'"))
    return (
        float(bool(_DIGIT_RE.search(base))),
        float(base.endswith("?")),
        float(any(w in SECOND_PERSON for w in words)),
        (len(base.split()) - LENGTH_CENTRE) / LENGTH_SCALE,
        float(min(sum(w in EMOTIVE for w in words), EMOTIVE_CAP)),
        float("this" in words),
        float(day == "monday"),
        float(day == "friday"),
    )


def phi(texts: Sequence[str]) -> np.ndarray:
    """Features [N, F] float32, columns FEATURES.

    digit: any digit; question: ends with "?"; second_person: you/your/you're/yourself;
    length: (words - 10) / 5; emotive: emotive-lexicon words, capped at 2; this: the word
    "this"; marker_*: the weekday marker prefix. Duplicate texts are featurised once.
    """
    arr = np.asarray(texts, dtype=object).reshape(-1)
    if arr.size == 0:
        return np.zeros((0, len(FEATURES)), np.float32)
    uniq, inverse = np.unique(arr.astype(str), return_inverse=True)
    table = np.array([_features_one(t) for t in uniq], dtype=np.float32)
    return table[inverse.reshape(-1)]


def toggle_question(text: str) -> str:
    """Add a trailing "?" (replacing trailing . or !), or remove it if there is one."""
    t = text.rstrip()
    if t.endswith("?"):
        return t.rstrip("?").rstrip()
    return t.rstrip(".!").rstrip() + "?"


def _variants(text: str) -> list[str]:
    toggled = toggle_question(text)
    out = [toggled]
    for prefix in PREFIXES:
        out += [prefix + text, prefix + toggled]
    return out


def enlarge(headlines: Sequence[str], rng: np.random.Generator, target: int = 10) -> tuple[str, ...]:
    """A story's candidate set: its (marker-stripped) originals plus simple variants.

    Variants toggle a trailing "?" and add a second-person prefix (PREFIXES). Duplicates are
    dropped; variants are drawn at random (`rng`) until there are `target` candidates.
    Originals always come first and are always kept, even when there are more than `target`.
    """
    originals = list(dict.fromkeys(strip_marker(h).strip() for h in headlines))
    originals = [h for h in originals if h]
    seen = set(originals)
    pool = []
    for h in originals:
        for v in _variants(h):
            if v and v not in seen:
                seen.add(v)
                pool.append(v)
    n_more = max(0, min(target - len(originals), len(pool)))
    picked = rng.choice(len(pool), size=n_more, replace=False) if n_more else []
    return tuple(originals + [pool[i] for i in sorted(picked)])


def _phi_representation(option, train_texts, *, seed=0, **_):
    """"phi": the world's own features (a known-truth representation for tests and
    diagnostics, not for claims); nothing is fitted."""
    no_option("phi", option)
    return Features(phi, len(FEATURES), "phi", FEATURES)


register_representation("phi", _phi_representation)
