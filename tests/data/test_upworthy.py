"""dlm.data.upworthy: HTML cleaning, tiny-CSV loading and its located errors, the real file."""
import numpy as np
import pandas as pd
import pytest

from dlm.data.log import LogValidationError
from dlm.data.upworthy import clean_html, load_upworthy, nonrandomised_mask


def rows(**overrides) -> pd.DataFrame:
    base = {
        "clickability_test_id": ["007a", "007a", "b2", "c3"],
        "headline": ["NA", "Second Try", "Dogs <br>Rule", "Birds?"],
        "lede": ["<p>Cats &amp; <b>dog</b>s</p><p>play.</p>", "<p>Cats</p>", None, "<p>Birds</p>"],
        "excerpt": ["x", "x", "", "y"],
        "impressions": [100, 120, 90, 80],
        "clicks": [3, 1, 0, 2],
        "significance": [10.0, 90.0, 0.0, 0.0],
        "winner": [False, True, False, False],
        "first_place": [False, True, False, False],
        "test_week": [201452, 201452, 201500, 201502],
        "eyecatcher_id": ["e1", "e1", "e2", "e3"],
        "winner_count_anomaly": [False] * 4,
        "ctr": [0.03, 0.0083, 0.0, 0.025],
    }
    base.update(overrides)
    return pd.DataFrame(base)


def write(tmp_path, frame, name="up.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def load_error(tmp_path, **overrides) -> LogValidationError:
    path = write(tmp_path, rows(**overrides))
    with pytest.raises(LogValidationError) as e:
        load_upworthy(path)
    assert str(path) in str(e.value)
    return e.value


def test_clean_html():
    assert clean_html("<p>Cats &amp; <b>dog</b>s</p><p>play.</p>") == "Cats & dogs play."
    assert clean_html("<p>\n\t  a&nbsp;b <br>c</p>\n") == "a b c"
    assert clean_html("&lt;b&gt; is a tag") == "<b> is a tag"  # escaped text survives
    assert clean_html("<!-- note -->x<div class='y'>z</div>") == "x z"
    assert clean_html(None) == "" and clean_html(float("nan")) == ""


def test_tiny_file_loads(tmp_path):
    log = load_upworthy(write(tmp_path, rows(), "up.csv.gz"))
    assert list(log.content) == ["NA", "Second Try", "Dogs <br>Rule", "Birds?"]  # kept as written
    assert list(log.context) == ["Cats & dogs play.", "Cats", "", "Birds"]
    assert log.group_labels == ("007a", "b2", "c3")  # text ids keep leading zeros
    np.testing.assert_array_equal(log.group, [0, 0, 1, 2])
    np.testing.assert_array_equal(log.successes, [3, 1, 0, 2])
    np.testing.assert_array_equal(log.trials, [100, 120, 90, 80])
    week = log.confounders["week"]
    assert set(log.confounders) == {"week"} and week.kind == "time"
    # strftime weeks: 201452 and 201500 are the same Monday-to-Sunday week
    np.testing.assert_array_equal(week.values, [0, 0, 0, 2])
    assert week.levels == ("201452", "201501", "201502")


def test_missing_required_column(tmp_path):
    path = write(tmp_path, rows().drop(columns=["clicks"]))
    with pytest.raises(LogValidationError, match="missing required column 'clicks'") as e:
        load_upworthy(path)
    assert e.value.column == "clicks" and str(path) in str(e.value)


@pytest.mark.parametrize("column,values,row,message", [
    ("impressions", [100, "many", 90, 80], 2, "not a finite number"),
    ("clicks", [3, 1, -1, 2], 3, "negative"),
    ("clicks", [3, 1, 0, 200], 4, "exceeds"),
    ("headline", ["A", "", "C", "D"], 2, "empty or missing"),
    ("headline", ["A", "B", "   ", "D"], 3, "empty or missing"),
    ("test_week", [201452, 201452, "last week", 201502], 3, "cannot parse"),
    ("test_week", [201452, 201452, 201499, 201502], 3, "not a year-week"),
])
def test_bad_values_are_located(tmp_path, column, values, row, message):
    err = load_error(tmp_path, **{column: values})
    assert (err.row, err.column) == (row, column)
    assert f"row {row}" in str(err) and repr(column) in str(err) and message in str(err)


def test_unreadable_and_empty_files(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "broken.csv.gz").write_bytes(b"\x1f\x8b\x08 truncated")
    for name in ("empty.csv", "broken.csv.gz", "absent.csv"):
        with pytest.raises(LogValidationError) as e:
            load_upworthy(tmp_path / name)
        assert name in str(e.value)


def test_real_file(upworthy_path):
    log = load_upworthy(upworthy_path)
    assert len(log) == 18_225 and len(log.group_labels) == 3_924
    week = log.confounders["week"]
    assert week.levels[0] == "201303" and week.levels[-1] == "201517"
    assert week.n_levels == len(week.levels) == week.values.max() + 1
    assert sum(c == "" for c in log.context) == 12  # the rows without a lede
    assert not any("<p>" in c or "&nbsp;" in c for c in log.context)
    rate = log.successes.sum() / log.trials.sum()
    assert 0.005 < rate < 0.05  # Upworthy CTRs are a few percent


def test_nonrandomised_window_edges(tmp_path):
    # 201324 is before the window, 201325 and 201401 are its edge weeks, 201400 (strftime
    # week 00) is the same week as 201352, 201402 is after it.
    weeks = [201324, 201325, 201400, 201401, 201402]
    frame = pd.concat([rows().iloc[:1]] * len(weeks), ignore_index=True)
    frame["test_week"] = weeks
    frame["clickability_test_id"] = [f"t{i}" for i in range(len(weeks))]
    mask = nonrandomised_mask(load_upworthy(write(tmp_path, frame)))
    np.testing.assert_array_equal(mask, [False, True, True, True, False])


def test_real_file_nonrandomised_window(upworthy_path):
    # The shared README counts 3,477 rows of 860 tests in test_week 201325 .. 201401.
    log = load_upworthy(upworthy_path)
    mask = nonrandomised_mask(log)
    assert mask.sum() == 3_477 and len(np.unique(log.group[mask])) == 860
