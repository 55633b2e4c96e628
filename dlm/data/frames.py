"""A user's table as an ObservationalLog: read a file (text columns kept as text), derive
calendar confounders, map columns onto the log (the loading half of dlm.api)."""
from __future__ import annotations

import pathlib
from typing import Mapping, Sequence

import pandas as pd

from dlm.data.log import LogValidationError, ObservationalLog
from dlm.data.tables import CALENDAR_PARTS, derive_calendar, log_from_frame, read_table

# pandas' default missing-value markers (read_csv docs), kept for the non-text columns
_PANDAS_NA = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
              "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}


def read_frame(path: str | pathlib.Path, text_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Read .csv / .csv.gz / .parquet. In `text_columns` only an empty field is missing, so a
    headline reading "NA" or "null" stays text (other columns keep pandas' NA markers)."""
    path = pathlib.Path(path)
    if path.name.lower().endswith((".parquet", ".pq")) or not text_columns:
        return read_table(path)
    try:
        header = pd.read_csv(path, nrows=0).columns
    except Exception:                       # noqa: BLE001  read_table reports it, located
        return read_table(path)
    text = [c for c in text_columns if c in header]
    na = {c: ([""] if c in text else sorted(_PANDAS_NA)) for c in header}
    return read_table(path, dtype={c: str for c in text}, keep_default_na=False, na_values=na)


def parse_derive(derive: str | Sequence[str] | Mapping[str, Sequence[str]] | None,
                 confounders: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """{date column: calendar parts}. "weekday,month" uses the one time confounder;
    "COL:weekday,month" names the date column."""
    if not derive:
        return {}
    if isinstance(derive, Mapping):
        return {str(k): tuple(v) for k, v in derive.items()}
    items = [derive] if isinstance(derive, str) else list(derive)
    out: dict[str, tuple[str, ...]] = {}
    for item in items:
        col, _, parts = item.rpartition(":")
        if not col:
            times = [c for c, k in confounders.items() if k == "time"]
            if len(times) != 1:
                raise ValueError(f"derive {item!r}: name the date column as COL:{parts} "
                                 f"(time confounders: {times or 'none'})")
            col = times[0]
        parts_t = tuple(p.strip() for p in parts.split(",") if p.strip())
        bad = [p for p in parts_t if p not in CALENDAR_PARTS]
        if bad or not parts_t:
            raise ValueError(f"derive {item!r}: parts must be some of {CALENDAR_PARTS}")
        out[col] = out.get(col, ()) + parts_t
    return out


def _derive(frame: pd.DataFrame, derive: Mapping[str, Sequence[str]], source: str
            ) -> tuple[pd.DataFrame, dict[str, str]]:
    """The frame with calendar columns added, and their confounder kinds."""
    kinds: dict[str, str] = {}
    for col, parts in derive.items():
        if col in frame.columns and pd.api.types.is_numeric_dtype(frame[col]):
            raise LogValidationError("calendar parts need dates (e.g. 2014-11-17); this column "
                                     "holds numbers (a year-week or period has no weekday)",
                                     source=source, column=col)
        frame = derive_calendar(frame, col, parts, source=source)
        kinds.update({f"{col}_{p}": "categorical" for p in parts})
    return frame, kinds


def from_frame(frame: pd.DataFrame, *, content: str, context: str | None = None,
               group: str | None = None, successes: str | None = None, trials: str | None = None,
               outcome: str | None = None, confounders: Mapping[str, str] | None = None,
               derive=None, time_unit: str = "auto", source: str = "<frame>") -> ObservationalLog:
    """Validate a DataFrame and map its columns onto an ObservationalLog.

    confounders: column -> "categorical" | "numeric" | "time". derive: calendar parts from a
    date column (see parse_derive), added as categorical confounders "COL_weekday", ...
    Errors (LogValidationError) name the file, the row and the column.
    """
    confounders = dict(confounders or {})
    frame, derived = _derive(frame, parse_derive(derive, confounders), source)
    return log_from_frame(frame, content=content, context=context, group=group,
                          successes=successes, trials=trials, outcome=outcome,
                          confounders={**confounders, **derived}, source=source,
                          time_unit=time_unit)
