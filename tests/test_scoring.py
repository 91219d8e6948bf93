"""R, F and M scores (tie-aware, 1..5) and the RFM segment grid."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from steps import columns as c
from steps.features.scoring import RFMScorer, apply_cuts, score_cuts, score_cuts_from_counts, score_sql
from steps.segments import SCORE_LEVELS, SEGMENT_GRID, SEGMENT_NAMES, SEGMENT_RULES, segment_of, segments_of

# Heavy ties are the normal case: few distinct values, many repeats.
VALUES = st.one_of(
    arrays(np.int64, st.integers(1, 300), elements=st.integers(0, 12)),
    arrays(
        np.float64, st.integers(1, 300), elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
    ),
    arrays(
        np.float64, st.integers(1, 300), elements=st.sampled_from([0.0, 0.1, 0.2, 0.30000000000000004, 7.5])
    ),
)


def scores_of(values: np.ndarray) -> np.ndarray:
    return apply_cuts(values, *score_cuts(values))


@settings(max_examples=200, deadline=None)
@given(values=VALUES)
def test_scores_are_monotone_tie_equal_and_in_range(values: np.ndarray) -> None:
    scores = scores_of(values)
    assert scores.dtype == np.int8
    assert set(np.unique(scores)) <= set(SCORE_LEVELS)
    order = np.argsort(values, kind="stable")
    assert np.all(np.diff(scores[order]) >= 0)  # larger value, never a lower score
    for value in np.unique(values):
        assert len(set(scores[values == value])) == 1  # equal values, equal scores
    distinct = len(np.unique(values))
    if distinct >= len(SCORE_LEVELS):
        assert set(scores) == set(SCORE_LEVELS)  # all five used when the values allow
    elif distinct > 1:
        assert scores.min() == 1 and scores.max() == 5


@settings(max_examples=100, deadline=None)
@given(values=VALUES)
def test_cuts_from_a_histogram_equal_cuts_from_values(values: np.ndarray) -> None:
    distinct, counts = np.unique(values, return_counts=True)
    thresholds, scores = score_cuts_from_counts(distinct, counts)
    expected_thresholds, expected_scores = score_cuts(values)
    np.testing.assert_array_equal(thresholds, expected_thresholds)
    np.testing.assert_array_equal(scores, expected_scores)


@settings(max_examples=60, deadline=None)
@given(values=VALUES)
def test_sql_scores_equal_numpy_scores(values: np.ndarray) -> None:
    """The features step scores in DuckDB; it must agree with NumPy value for value."""
    thresholds, scores = score_cuts(values.astype(float))
    con = duckdb.connect()
    con.execute("CREATE TABLE v AS SELECT unnest($1::DOUBLE[]) AS x", [values.astype(float).tolist()])
    in_sql = np.array(
        [row[0] for row in con.execute(f"SELECT {score_sql('x', thresholds, scores)} FROM v").fetchall()]
    )
    np.testing.assert_array_equal(in_sql, apply_cuts(values.astype(float), thresholds, scores))


def test_heavy_ties_never_fail() -> None:
    frequency = np.array([1] * 500 + [2] * 200 + [3] * 150 + [4] * 100 + [9] * 49 + [40])
    scores = scores_of(frequency)
    assert set(scores[frequency == 1]) == {1}
    assert set(scores[frequency > 1]) == {2, 3, 4, 5}
    assert set(scores_of(np.ones(10))) == {1}  # one value: nothing to tell apart
    assert scores_of(np.array([3.0, 5.0])).tolist() == [1, 5]


def test_shares_are_as_even_as_ties_allow() -> None:
    values = np.arange(1000)
    counts = np.bincount(scores_of(values))[1:]
    assert counts.tolist() == [200, 200, 200, 200, 200]


def test_scorer_on_a_dataframe() -> None:
    frame = pd.DataFrame(
        {c.RECENCY_DAYS: [1, 30, 400, 400], c.FREQUENCY: [5, 1, 1, 2], c.MONETARY: [500.0, 20.0, 15.0, 15.0]}
    )
    scored = RFMScorer().fit(frame).transform(frame)
    assert scored[c.R_SCORE].tolist() == [5, 3, 1, 1]  # recent is better
    assert scored[c.RFM_SCORE].tolist()[0] == "555"
    assert scored[c.M_SCORE].iloc[2] == scored[c.M_SCORE].iloc[3]
    assert c.R_SCORE not in frame  # the input is not changed


def test_every_cell_has_exactly_one_segment() -> None:
    cells = [(r, f) for name, rs, fs in SEGMENT_RULES for r in rs for f in fs]
    assert sorted(cells) == [(r, f) for r in SCORE_LEVELS for f in SCORE_LEVELS]
    assert set(SEGMENT_GRID.values()) == set(SEGMENT_NAMES)
    assert segment_of(5, 5) == "Champions" and segment_of(1, 5) == "Can't Lose Them"
    assert segments_of([5, 3], [1, 3]) == ["New Customers", "Need Attention"]


@pytest.mark.parametrize(
    ("r", "f", "segment"),
    [
        (5, 4, "Champions"),
        (4, 5, "Loyal"),
        (5, 2, "Potential Loyalist"),
        (4, 1, "Promising"),
        (3, 2, "About to Sleep"),
        (2, 4, "At Risk"),
        (2, 2, "Hibernating"),
    ],
)
def test_segment_examples_from_the_design(r: int, f: int, segment: str) -> None:
    assert segment_of(r, f) == segment
