"""dlm.data.tables: reading files, validating logs (every error located), time periods."""
import gzip

import numpy as np
import pandas as pd
import pytest

from dlm.data.log import LogValidationError
from dlm.data.tables import derive_calendar, log_from_frame, read_table

SRC = "mylog.csv"


def frame(**overrides) -> pd.DataFrame:
    base = {
        "text": ["Cats are great", "Dogs too", "You Won't Believe This", "Birds?"],
        "lede": ["about cats", None, "about things", "about birds"],
        "test": ["t2", "t1", "t2", "t3"],
        "clicks": [1, 0, 5, 2],
        "views": [10, 10, 20, 5],
        "score": [0.5, -1.0, 2.0, 0.0],
        "audience": [100.0, 250.0, 80.0, 90.0],
        "weekday": ["Tue", "Mon", "Mon", "Fri"],
        "week": [201451, 201452, 201501, 201503],
    }
    base.update(overrides)
    return pd.DataFrame(base)


def binomial(f: pd.DataFrame, **kw):
    kw.setdefault("confounders", {"week": "time", "weekday": "categorical", "audience": "numeric"})
    return log_from_frame(f, content="text", context="lede", group="test", successes="clicks",
                          trials="views", source=SRC, **kw)


def assert_located(excinfo, row, column, source=SRC):
    err = excinfo.value
    assert (err.source, err.row, err.column) == (source, row, column)
    msg = str(err)
    assert source in msg and repr(column) in msg
    if row is not None:
        assert f"row {row}" in msg


# ---------------------------------------------------------------- happy paths

def test_binomial_log_maps_every_column():
    log = binomial(frame())
    assert list(log.content) == ["Cats are great", "Dogs too", "You Won't Believe This", "Birds?"]
    assert list(log.context) == ["about cats", "", "about things", "about birds"]
    assert log.group_labels == ("t1", "t2", "t3")
    np.testing.assert_array_equal(log.group, [1, 0, 1, 2])
    np.testing.assert_array_equal(log.successes, [1, 0, 5, 2])
    np.testing.assert_array_equal(log.trials, [10, 10, 20, 5])
    day = log.confounders["weekday"]
    assert day.levels == ("Fri", "Mon", "Tue")  # sorted strings
    np.testing.assert_array_equal(day.values, [2, 1, 1, 0])
    np.testing.assert_array_equal(log.confounders["audience"].values, [100, 250, 80, 90])
    sub = log.take(np.array([2, 3]))
    assert sub.group_labels == log.group_labels and list(sub.group) == [1, 2]


def test_real_outcome_and_numeric_levels_sort_by_value():
    f = frame(tier=[10, 2, 2, 1])
    log = log_from_frame(f, content="text", outcome="score", confounders={"tier": "categorical"})
    assert not log.is_binomial and log.context is None and log.group is None
    assert log.confounders["tier"].levels == ("1", "2", "10")
    np.testing.assert_array_equal(log.confounders["tier"].values, [2, 1, 1, 0])


def test_iso_weeks_are_consecutive_across_year_boundaries():
    # 2014 has 52 ISO weeks: 201452 -> 201501 are adjacent; 2020 has a week 53.
    week = binomial(frame()).confounders["week"]
    np.testing.assert_array_equal(week.values, [0, 1, 2, 4])
    assert week.levels == ("201451", "201452", "201501", "201502", "201503")
    f = frame(week=[202052, 202053, 202101, 202102])
    week = binomial(f, confounders={"week": "time"}).confounders["week"]
    np.testing.assert_array_equal(week.values, [0, 1, 2, 3])


def test_week_00_means_strftime_weeks_and_merges_the_split_week():
    # Upworthy's test_week: 201352 (Mon 30 Dec) and 201400 (1-5 Jan) are one calendar week.
    f = frame(week=[201351, 201352, 201400, 201401])
    week = binomial(f, confounders={"week": "time"}).confounders["week"]
    np.testing.assert_array_equal(week.values, [0, 1, 1, 2])
    assert week.levels == ("201351", "201352", "201401")


def test_dates_keep_daily_gaps_and_other_units():
    f = frame(day=["2024-01-01", "2024-01-03", "2024-02-01", "2024-01-02"])
    conf = {"day": "time"}
    day = binomial(f, confounders=conf).confounders["day"]
    np.testing.assert_array_equal(day.values, [0, 2, 31, 1])
    assert len(day.levels) == 32 and day.levels[0] == "2024-01-01"
    month = binomial(f, confounders=conf, time_unit="month").confounders["day"]
    np.testing.assert_array_equal(month.values, [0, 0, 1, 0])
    assert month.levels == ("2024-01", "2024-02")
    week = binomial(f, confounders=conf, time_unit="week").confounders["day"]
    np.testing.assert_array_equal(week.values, [0, 0, 4, 0])  # 2024-01-01 is a Monday
    assert week.levels[0] == "202401"


def test_plain_int_periods_include_gaps():
    period = binomial(frame(round=[3, 7, 5, 3]), confounders={"round": "time"}).confounders["round"]
    np.testing.assert_array_equal(period.values, [0, 4, 2, 0])
    assert period.levels == ("3", "4", "5", "6", "7")


def test_derive_calendar_weekday_and_month_in_calendar_order():
    f = derive_calendar(frame(day=["2024-01-01", "2024-03-08", "2024-01-06", "2024-01-01"]), "day")
    assert list(f["day_weekday"]) == ["Mon", "Fri", "Sat", "Mon"]
    assert list(f["day_month"]) == ["Jan", "Mar", "Jan", "Jan"]
    log = binomial(f, confounders={"day_weekday": "categorical", "day_month": "categorical"})
    assert log.confounders["day_weekday"].levels == ("Mon", "Fri", "Sat")
    assert log.confounders["day_month"].levels == ("Jan", "Mar")
    assert list(derive_calendar(f, "day", parts=("year",))["day_year"]) == [2024] * 4


def test_parquet_and_csv_gz_round_trip(tmp_path):
    f = frame()
    f.to_parquet(tmp_path / "log.parquet")
    f.to_csv(tmp_path / "log.csv.gz", index=False)
    want = binomial(f)
    for name in ("log.parquet", "log.csv.gz"):
        got = binomial(read_table(tmp_path / name))
        assert list(got.content) == list(want.content)
        assert list(got.context) == list(want.context)
        np.testing.assert_array_equal(got.group, want.group)
        for k in want.confounders:
            np.testing.assert_array_equal(got.confounders[k].values, want.confounders[k].values)
            assert got.confounders[k].levels == want.confounders[k].levels


# ---------------------------------------------------------------- unreadable files

def test_missing_file(tmp_path):
    with pytest.raises(LogValidationError, match="not found") as e:
        read_table(tmp_path / "nope.csv")
    assert str(tmp_path / "nope.csv") in str(e.value)


def test_empty_file_and_header_only(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("text,clicks\n")
    for name in ("empty.csv", "header.csv"):
        with pytest.raises(LogValidationError, match="empty|no data rows") as e:
            read_table(tmp_path / name)
        assert name in str(e.value)


def test_unreadable_file(tmp_path):
    (tmp_path / "bad.csv.gz").write_bytes(b"\x1f\x8b not really gzip")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 garbage")
    (tmp_path / "log.xlsx").write_bytes(gzip.compress(b"x"))
    for name in ("bad.csv.gz", "bad.parquet", "log.xlsx"):
        with pytest.raises(LogValidationError) as e:
            read_table(tmp_path / name)
        assert name in str(e.value)


# ---------------------------------------------------------------- bad values, located

def test_unknown_column():
    with pytest.raises(LogValidationError, match="unknown column") as e:
        log_from_frame(frame(), content="headline", outcome="score", source=SRC)
    assert_located(e, None, "headline")


@pytest.mark.parametrize("bad", [None, "   "])
def test_empty_or_missing_content(bad):
    f = frame(text=["ok", "fine", bad, "also"])
    with pytest.raises(LogValidationError, match="empty or missing") as e:
        binomial(f)
    assert_located(e, 3, "text")


@pytest.mark.parametrize("column,values,row,message", [
    ("clicks", [1, None, 5, 2], 2, "missing"),
    ("views", [10, 10, None, 5], 3, "missing"),
    ("clicks", [1, 0, "lots", 2], 3, "not a finite number"),
    ("clicks", [1, 0, 5, -2], 4, "negative"),
    ("views", [10, 10.5, 20, 5], 2, "whole number"),
    ("clicks", [1, 0, 50, 2], 3, "exceeds"),
    ("views", [10, 0, 20, 5], 2, "trial count is 0"),
])
def test_bad_counts(column, values, row, message):
    with pytest.raises(LogValidationError, match=message) as e:
        binomial(frame(**{column: values}))
    assert_located(e, row, column)


@pytest.mark.parametrize("values,row", [([0.5, "n/a", 1.0, 2.0], 2), ([0.5, 1.0, 2.0, None], 4)])
def test_bad_real_outcome(values, row):
    with pytest.raises(LogValidationError) as e:
        log_from_frame(frame(score=values), content="text", outcome="score", source=SRC)
    assert_located(e, row, "score")


@pytest.mark.parametrize("values,row", [([1.0, 2.0, "big", 4.0], 3), ([None, 2.0, 3.0, 4.0], 1)])
def test_bad_numeric_confounder(values, row):
    with pytest.raises(LogValidationError) as e:
        binomial(frame(audience=values))
    assert_located(e, row, "audience")


@pytest.mark.parametrize("column,kind,values", [
    ("weekday", "categorical", ["Mon"] * 4),
    ("audience", "numeric", [5.0] * 4),
    ("week", "time", [201446] * 4),
])
def test_constant_confounder(column, kind, values):
    with pytest.raises(LogValidationError, match="constant") as e:
        binomial(frame(**{column: values}), confounders={column: kind})
    assert_located(e, None, column)  # no single row is at fault


@pytest.mark.parametrize("values,row", [
    (["2024-01-01", "2024-01-02", "someday", "2024-01-04"], 3),
    ([201451, 201452, "201x01", 201502], 3),
    ([201451, 201452, 201453, 201501], 3),  # 2014 has no ISO week 53
    ([201451, 201452, 201454, 201501], 3),  # no week 54 ever
])
def test_unparseable_time(values, row):
    with pytest.raises(LogValidationError) as e:
        binomial(frame(week=values), confounders={"week": "time"})
    assert_located(e, row, "week")


def test_row_numbers_are_data_rows_of_the_file(tmp_path):
    path = tmp_path / "log.csv"
    frame(clicks=[1, 0, 5, 99]).to_csv(path, index=False)
    with pytest.raises(LogValidationError) as e:
        log_from_frame(read_table(path), content="text", successes="clicks", trials="views",
                       source=str(path))
    assert_located(e, 4, "clicks", source=str(path))  # line 5 of the file: header + 4
