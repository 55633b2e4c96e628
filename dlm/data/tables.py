"""Tabular logs: read a CSV/parquet file and map its columns onto an ObservationalLog.

Used by the Upworthy loader and by "bring your own log" scripts. Every bad input raises a
LogValidationError naming the file, the 1-based data row (header not counted) and the
column, before any array is built, so a user can fix their file in one look.
"""
from __future__ import annotations

import datetime
import pathlib
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from dlm.data.log import CONFOUNDER_KINDS, Confounder, LogValidationError, ObservationalLog

TIME_UNITS: tuple[str, ...] = ("auto", "week", "day", "month", "period")
CALENDAR_PARTS: tuple[str, ...] = ("weekday", "month", "year")
MAX_PERIODS = 100_000  # a larger time range almost surely means a wrong time_unit
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def read_table(path: str | pathlib.Path, **csv_kwargs) -> pd.DataFrame:
    """Read a .csv, .csv.gz or .parquet file; `csv_kwargs` go to pandas.read_csv."""
    path = pathlib.Path(path)
    name = path.name.lower()
    if not path.is_file():
        raise LogValidationError("file not found (or not a regular file)", source=str(path))
    if not name.endswith((".csv", ".csv.gz", ".parquet", ".pq")):
        raise LogValidationError("unsupported file type; use .csv, .csv.gz or .parquet",
                                 source=str(path))
    try:
        if name.endswith((".parquet", ".pq")):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, **csv_kwargs)
    except pd.errors.EmptyDataError:
        raise LogValidationError("file is empty", source=str(path)) from None
    except Exception as err:  # noqa: BLE001  (pandas/pyarrow/gzip raise many types)
        raise LogValidationError(f"cannot read file: {type(err).__name__}: {err}",
                                 source=str(path)) from None
    if len(frame) == 0:
        raise LogValidationError("file has no data rows", source=str(path))
    return frame


def _fail(message: str, source: str, row: int | None = None, column: str | None = None):
    raise LogValidationError(message, source=source, row=row, column=column)


def _first(mask: np.ndarray) -> int:
    """1-based data row of the first True entry."""
    return int(np.flatnonzero(mask)[0]) + 1


def _check_missing(series: pd.Series, source: str, column: str, what: str) -> None:
    missing = series.isna().to_numpy()
    if missing.any():
        _fail(f"missing {what}", source, _first(missing), column)


def _numeric(series: pd.Series, source: str, column: str, what: str) -> np.ndarray:
    """Float values of a column; missing, non-numeric and infinite values are errors."""
    _check_missing(series, source, column, what)
    values = pd.to_numeric(series, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        row = _first(bad)
        _fail(f"{what} is not a finite number: {series.iloc[row - 1]!r}", source, row, column)
    return values


def _text(series: pd.Series) -> np.ndarray:
    """Object array of str; missing values become ''."""
    return np.array(["" if pd.isna(v) else str(v) for v in series], dtype=object)


def _label_strings(series: pd.Series) -> np.ndarray:
    """Values as level labels: integer-valued numbers print without a trailing '.0'."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        values = series.to_numpy(np.float64)
        if np.all(values == np.round(values)):
            return np.array([str(int(v)) for v in values], dtype=object)
    return np.array([str(v) for v in series], dtype=object)


def categorical_confounder(series: pd.Series, *, source: str, column: str) -> Confounder:
    """Codes into sorted levels (numerically sorted for numbers; category order for a
    pandas Categorical, e.g. from derive_calendar)."""
    _check_missing(series, source, column, "categorical value")
    labels = _label_strings(series)
    if isinstance(series.dtype, pd.CategoricalDtype):
        seen = set(labels)
        levels = [str(c) for c in series.cat.categories if str(c) in seen]
    elif pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        levels = [str(x) for x in sorted(set(labels), key=float)]
    else:
        levels = sorted(set(labels))
    if len(levels) < 2:
        _fail(f"confounder is constant (one level: {levels[0]!r}); drop it", source, None, column)
    index = {level: i for i, level in enumerate(levels)}
    return Confounder("categorical", np.array([index[x] for x in labels], np.int32), tuple(levels))


def numeric_confounder(series: pd.Series, *, source: str, column: str) -> Confounder:
    values = _numeric(series, source, column, "numeric confounder value")
    if np.ptp(values) == 0:
        _fail(f"confounder is constant (zero variance, value {values[0]:g}); drop it",
              source, None, column)
    return Confounder("numeric", values)


def _is_year_week(v: np.ndarray) -> np.ndarray:
    return (v >= 100_000) & (v <= 999_999) & (v % 100 <= 53)


def _monday(year: int, week: int, convention: str) -> datetime.date:
    """Monday of a year-week; ValueError if that year has no such week."""
    if convention == "iso":
        return datetime.date.fromisocalendar(year, week, 1)
    # strftime %W: week 01 starts on the year's first Monday, week 00 holds the days before.
    jan1 = datetime.date(year, 1, 1)
    monday = jan1 + datetime.timedelta(days=(7 - jan1.weekday()) % 7 + 7 * (week - 1))
    if monday.year != year and not (week == 0 and jan1.weekday() != 0):
        raise ValueError(f"year {year} has no week {week:02d}")
    return monday


def _week_label(monday: datetime.date, convention: str) -> str:
    if convention == "iso":
        year, week, _ = monday.isocalendar()
        return f"{year}{week:02d}"
    return monday.strftime("%Y%W")


def _year_week_mondays(ints: np.ndarray, source: str,
                       column: str) -> tuple[np.ndarray, str]:
    """year*100+week ints -> (datetime64[D] Monday of each week, convention).

    ISO weeks (01..53) unless a week 00 occurs: then the strftime %W convention (the
    Upworthy archive's test_week uses it), where e.g. 201352 and 201400 are the two halves
    of one Monday-to-Sunday week and so map to the same period.
    """
    bad = ~_is_year_week(ints)
    if bad.any():
        row = _first(bad)
        _fail(f"{ints[row - 1]} is not a year-week (YYYYWW, week 00..53); for plain integer "
              "periods use time_unit='period'", source, row, column)
    convention = "strftime" if (ints % 100 == 0).any() else "iso"
    uniq, inverse = np.unique(ints, return_inverse=True)
    mondays = []
    for u in uniq:
        try:
            mondays.append(_monday(int(u) // 100, int(u) % 100, convention))
        except ValueError:  # e.g. ISO week 53 of a 52-week year
            _fail(f"{u}: year {u // 100} has no {convention} week {u % 100:02d}",
                  source, _first(ints == u), column)
    return np.array(mondays, dtype="datetime64[D]")[inverse], convention


def _bucket_dates(days: np.ndarray, unit: str,
                  convention: str = "iso") -> tuple[np.ndarray, list[str]]:
    """datetime64[D] -> (period index 0..T-1 with gaps kept, label of every period)."""
    ordinal = days.astype(np.int64)
    if unit == "day":
        start = ordinal.min()
        labels = [str(np.datetime64(int(d), "D")) for d in range(start, ordinal.max() + 1)]
        return ordinal - start, labels
    if unit == "month":
        months = days.astype("datetime64[M]").astype(np.int64)
        start = months.min()
        labels = [str(np.datetime64(int(m), "M")) for m in range(start, months.max() + 1)]
        return months - start, labels
    monday = ordinal - (ordinal + 3) % 7  # 1970-01-01 was a Thursday
    start = monday.min()
    epoch = datetime.date(1970, 1, 1)
    labels = [_week_label(epoch + datetime.timedelta(days=int(m)), convention)
              for m in range(start, monday.max() + 1, 7)]
    return (monday - start) // 7, labels


def _parse_dates(series: pd.Series, source: str, column: str) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(series):
        parsed = series
    else:
        parsed = pd.to_datetime(series.astype(str), errors="coerce")
        bad = parsed.isna().to_numpy()
        if bad.any():
            row = _first(bad)
            _fail(f"cannot parse {series.iloc[row - 1]!r} as a time (expected a year-week like "
                  "201446, an integer period or a date)", source, row, column)
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert(None)
    return parsed.to_numpy().astype("datetime64[D]")


def time_confounder(series: pd.Series, *, source: str, column: str,
                    time_unit: str = "auto") -> Confounder:
    """Ordered periods 0..T-1, gaps included; levels label every period in the range.

    Input: year-week ints (201446; ISO, or strftime %W when a week 00 occurs), integer
    periods, or dates/datetimes. time_unit "auto" reads YYYYWW ints as weeks (judged by
    the first row), other ints as periods, dates by day; "week"/"day"/"month" bucket
    dates (or weeks' Mondays); "period" takes the ints as they are.
    """
    if time_unit not in TIME_UNITS:
        raise ValueError(f"time_unit must be one of {TIME_UNITS}, got {time_unit!r}")
    _check_missing(series, source, column, "time value")
    numbers = pd.to_numeric(series, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    # The first value decides the reading, so a later bad value is the row reported.
    if pd.api.types.is_datetime64_any_dtype(series) or np.isnan(numbers[0]):
        if time_unit == "period":
            _fail(f"cannot parse {series.iloc[0]!r} as an integer period", source, 1, column)
        days = _parse_dates(series, source, column)
        index, labels = _bucket_dates(days, "day" if time_unit == "auto" else time_unit)
    else:
        bad = ~np.isfinite(numbers) | (numbers != np.round(numbers))
        if bad.any():
            row = _first(bad)
            _fail(f"cannot parse {series.iloc[row - 1]!r} as a time (expected a year-week like "
                  "201446, an integer period or a date)", source, row, column)
        ints = numbers.astype(np.int64)
        # auto: a YYYYWW first value means year-weeks, so one bad week is reported rather
        # than silently turning the column into plain ints spanning ~100 fake periods.
        if time_unit == "period" or (time_unit == "auto" and not _is_year_week(ints[:1]).all()):
            start = ints.min()
            if ints.max() - start >= MAX_PERIODS:
                _fail(f"time range spans {ints.max() - start + 1} periods; wrong time_unit?",
                      source, None, column)
            index, labels = ints - start, [str(v) for v in range(start, ints.max() + 1)]
        else:
            mondays, convention = _year_week_mondays(ints, source, column)
            unit = "week" if time_unit == "auto" else time_unit
            index, labels = _bucket_dates(mondays, unit, convention)
    if len(labels) > MAX_PERIODS:
        _fail(f"time range spans {len(labels)} periods; wrong time_unit?", source, None, column)
    if len(labels) < 2:
        _fail(f"confounder is constant (one period: {labels[0]}); drop it", source, None, column)
    return Confounder("time", np.asarray(index, np.int32), tuple(labels))


def _check_counts(frame: pd.DataFrame, successes: str, trials: str,
                  source: str) -> tuple[np.ndarray, np.ndarray]:
    out = []
    for col, what in ((successes, "success count"), (trials, "trial count")):
        v = _numeric(frame[col], source, col, what)
        for bad, msg in ((v < 0, "is negative"), (v != np.round(v), "is not a whole number")):
            if bad.any():
                row = _first(bad)
                _fail(f"{what} {v[row - 1]:g} {msg}", source, row, col)
        out.append(v)
    s, n = out
    if (n == 0).any():
        _fail("trial count is 0", source, _first(n == 0), trials)
    if (s > n).any():
        row = _first(s > n)
        _fail(f"{successes}={s[row - 1]:g} exceeds {trials}={n[row - 1]:g}", source, row, successes)
    return s, n


def log_from_frame(frame: pd.DataFrame, *, content: str, context: str | None = None,
                   group: str | None = None, successes: str | None = None,
                   trials: str | None = None, outcome: str | None = None,
                   confounders: Mapping[str, str] | None = None, source: str = "<frame>",
                   time_unit: str = "auto") -> ObservationalLog:
    """Validate `frame` and map its columns onto an ObservationalLog.

    confounders: column -> "categorical" | "numeric" | "time". Give either `outcome` (a
    real value) or both `successes` and `trials` (counts).
    """
    confounders = dict(confounders or {})
    if (successes is None) != (trials is None):
        raise ValueError("give both successes and trials (binomial outcome), or neither")
    if (successes is None) == (outcome is None):
        raise ValueError("give either successes and trials, or outcome")
    named = [content, context, group, successes, trials, outcome, *confounders]
    for col in named:
        if col is not None and col not in frame.columns:
            _fail(f"unknown column; columns are: {', '.join(map(str, frame.columns))}",
                  source, None, col)
    for col, kind in confounders.items():
        if kind not in CONFOUNDER_KINDS:
            _fail(f"unknown confounder kind {kind!r}; use one of {CONFOUNDER_KINDS}",
                  source, None, col)
    if len(frame) == 0:
        _fail("no data rows", source)
    frame = frame.reset_index(drop=True)  # row numbers are positions, whatever the index

    text = frame[content]
    blank = text.isna().to_numpy() | (text.astype(str).str.strip() == "").to_numpy()
    if blank.any():
        _fail("content text is empty or missing", source, _first(blank), content)
    counts = _check_counts(frame, successes, trials, source) if successes else (None, None)
    real = _numeric(frame[outcome], source, outcome, "outcome") if outcome else None

    group_codes = group_labels = None
    if group is not None:
        _check_missing(frame[group], source, group, "group id")
        ids = _label_strings(frame[group]).astype(str)
        labels, group_codes = np.unique(ids, return_inverse=True)
        group_labels = tuple(str(x) for x in labels)
        group_codes = group_codes.astype(np.int32)

    builders = {"categorical": categorical_confounder, "numeric": numeric_confounder}
    conf = {}
    for col, kind in confounders.items():
        if kind == "time":
            conf[col] = time_confounder(frame[col], source=source, column=col, time_unit=time_unit)
        else:
            conf[col] = builders[kind](frame[col], source=source, column=col)

    return ObservationalLog(
        content=_text(text), confounders=conf, successes=counts[0], trials=counts[1],
        outcome=real, context=None if context is None else _text(frame[context]),
        group=group_codes, source=source, group_labels=group_labels)


def derive_calendar(frame: pd.DataFrame, column: str, parts: Sequence[str] = ("weekday", "month"),
                    *, source: str = "<frame>") -> pd.DataFrame:
    """A copy of `frame` with f"{column}_{part}" columns from a date column.

    weekday (Mon..Sun) and month (Jan..Dec) are ordered pandas Categoricals, so they
    become categorical confounders with calendar-ordered levels; year is an int.
    """
    for part in parts:
        if part not in CALENDAR_PARTS:
            raise ValueError(f"unknown calendar part {part!r}; use some of {CALENDAR_PARTS}")
    if column not in frame.columns:
        _fail(f"unknown column; columns are: {', '.join(map(str, frame.columns))}",
              source, None, column)
    series = frame[column].reset_index(drop=True)
    _check_missing(series, source, column, "date")
    dates = pd.DatetimeIndex(_parse_dates(series, source, column))
    out = frame.copy()
    if "weekday" in parts:
        names = np.array(_WEEKDAYS, dtype=object)[dates.weekday]
        out[f"{column}_weekday"] = pd.Categorical(names, categories=_WEEKDAYS, ordered=True)
    if "month" in parts:
        names = np.array(_MONTHS, dtype=object)[dates.month - 1]
        out[f"{column}_month"] = pd.Categorical(names, categories=_MONTHS, ordered=True)
    if "year" in parts:
        out[f"{column}_year"] = np.asarray(dates.year, np.int64)
    return out
