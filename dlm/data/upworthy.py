"""The Upworthy Research Archive (headline A/B tests) as an ObservationalLog.

One row per package (arm): content = headline, context = the lede as plain text, group =
the A/B test, outcome = clicks out of impressions, one time confounder "week" from the
ISO year-week `test_week`. Works on any split with the archive's columns.
"""
from __future__ import annotations

import dataclasses
import html
import pathlib
import re

import numpy as np
import pandas as pd

from dlm.data.log import LogValidationError, ObservationalLog
from dlm.data.tables import log_from_frame, read_table

REQUIRED_COLUMNS: tuple[str, ...] = (
    "clickability_test_id", "headline", "lede", "impressions", "clicks", "test_week")
_TEXT_COLUMNS = ("clickability_test_id", "headline", "lede", "excerpt", "eyecatcher_id")

# Inline tags join their text to the neighbours ("wo<b>r</b>d" -> "word"); any other tag
# (<p>, <br>, <div>, ...) separates words.
_INLINE_TAG = re.compile(r"</?(?:a|b|i|u|em|strong|span|sup|sub|del|wbr|font)\b[^>]*>", re.I)
_ANY_TAG = re.compile(r"<!--.*?-->|<[^>]*>", re.S)
_SPACE = re.compile(r"\s+")

# The archive's authors' 2024 correction: tests run 2013-06-25 .. 2014-01-10 were likely
# not randomised (a web cache served one arm at a time). At weekly resolution that is
# test_week 201325 .. 201401 inclusive (the two edge weeks are partly outside it).
NONRANDOMISED_WEEKS: tuple[int, int] = (201325, 201401)


def clean_html(text: object) -> str:
    """HTML fragment -> plain text: tags stripped, entities unescaped, whitespace collapsed.

    Tags are removed before unescaping, so an escaped "&lt;b&gt;" survives as text.
    Missing values (None/NaN) give "".
    """
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return ""
    text = _ANY_TAG.sub(" ", _INLINE_TAG.sub("", str(text)))
    return _SPACE.sub(" ", html.unescape(text)).strip()


def load_upworthy(path: str | pathlib.Path) -> ObservationalLog:
    """Load and validate an Upworthy CSV (.csv/.csv.gz, or parquet with the same columns).

    Errors name the file, the 1-based data row and the column. The raw test ids are kept
    as `log.group_labels` (group code i is test group_labels[i]).
    """
    source = str(path)
    # Text columns stay text ("007" stays "007"); only an empty field counts as missing,
    # so a headline reading "NA" or "null" is kept as written.
    frame = read_table(path, dtype={c: str for c in _TEXT_COLUMNS},
                       keep_default_na=False, na_values=[""])
    for col in REQUIRED_COLUMNS:
        if col not in frame.columns:
            raise LogValidationError(
                f"missing required column {col!r}; found: {', '.join(map(str, frame.columns))}",
                source=source, column=col)
    frame = frame.reset_index(drop=True)
    ledes = frame["lede"]
    # ~4k distinct ledes over ~18k rows: clean each once.
    cleaned = {v: clean_html(v) for v in pd.unique(ledes.dropna())}
    frame["lede"] = [cleaned.get(v, "") if not pd.isna(v) else "" for v in ledes]
    log = log_from_frame(
        frame, content="headline", context="lede", group="clickability_test_id",
        successes="clicks", trials="impressions", confounders={"test_week": "time"},
        source=source, time_unit="week")
    return dataclasses.replace(log, confounders={"week": log.confounders["test_week"]})


def nonrandomised_mask(log: ObservationalLog, week: str = "week") -> np.ndarray:
    """[N] bool: rows whose test ran in the archive's likely non-randomised window.

    Within-test comparisons of these rows are not experimental evidence; every experimental
    use leaves them out by default. Reads the week confounder's labels (year-week, e.g.
    "201346"), so it works on any split or subset loaded by `load_upworthy`.
    """
    if week not in log.confounders:
        raise ValueError(f"log has no {week!r} confounder; found: {', '.join(log.confounders)}")
    conf = log.confounders[week]
    labels = np.array([int(label) for label in conf.levels])[conf.values]
    lo, hi = NONRANDOMISED_WEEKS
    return (labels >= lo) & (labels <= hi)
