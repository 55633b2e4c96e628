"""The weekday markers and weekday codes shared by the simulated world (sims), the Monday
experiment (dlm.realdata.monday) and the metrics (dlm.eval.causal_metrics).

A marker is a "Happy Monday! " / "Happy Friday! " prefix that a posting on that weekday may
carry: the spurious text feature whose apparent effect is the weekday's (DESIGN.md
section 3). It lives in the data layer so that dlm never imports the world.
"""
from __future__ import annotations

import re

import numpy as np

WEEKDAYS: tuple[str, ...] = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONDAY, WEDNESDAY, FRIDAY = 0, 2, 4
MARKERS: dict[str, str] = {"monday": "Happy Monday! ", "friday": "Happy Friday! "}
# marker codes: 0 none, 1 "Happy Monday! ", 2 "Happy Friday! "
MARKER_PREFIXES = np.array(["", MARKERS["monday"], MARKERS["friday"]], dtype=object)
# a leading marker in any case and spacing; group 1 is the day
MARKER_RE = re.compile(r"^\s*happy\s+(monday|friday)\s*!\s*", re.IGNORECASE)


def strip_marker(text: str) -> str:
    """The text without a leading "Happy Monday! " / "Happy Friday! " (any case/spacing)."""
    return MARKER_RE.sub("", text, count=1)
