"""R, F and M scores (tie-aware, 1..5) and the RFM segment grid."""

from __future__ import annotations

from fractions import Fraction

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


# With fewer than five distinct values, the groups present spread over 1..5 (lowest 1, highest 5).
SPREAD = {1: [1], 2: [1, 5], 3: [1, 3, 5], 4: [1, 2, 4, 5], 5: [1, 2, 3, 4, 5]}


def nearest_cuts(counts: list[int]) -> list[set[int]]:
    """For each of the four cuts, the indices of the distinct values it may fall after, in exact arithmetic.

    Cut k is the boundary whose share of customers at or below it is nearest to k/5, among the boundaries
    that leave at least one distinct value for every group (so all five scores are used). Two boundaries
    can be exactly as near; the code must take the lower one.
    """
    total = sum(counts)
    through = [Fraction(sum(counts[: i + 1]), total) for i in range(len(counts))]
    allowed_by_cut: list[set[int]] = []
    previous = -1
    for k in range(1, 5):
        target = Fraction(k, 5)
        candidates = range(previous + 1, len(counts) - (5 - k))
        best = min(abs(through[j] - target) for j in candidates)
        allowed = {j for j in candidates if abs(through[j] - target) == best}
        allowed_by_cut.append(allowed)
        previous = min(allowed)  # the code takes the lower of two equally near boundaries
    return allowed_by_cut


HISTOGRAMS = st.lists(st.integers(1, 400), min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(counts=HISTOGRAMS, offset=st.floats(-1e6, 1e6, allow_nan=False))
def test_histogram_cuts_are_the_boundaries_nearest_to_equal_fifths(counts: list[int], offset: float) -> None:
    distinct = offset + np.arange(len(counts), dtype=float) * 1.5
    thresholds, scores = score_cuts_from_counts(distinct, np.array(counts))
    assert scores.dtype.kind == "i"  # whole scores, as documented (a float score would print as "3.0")
    if len(counts) <= 5:
        assert scores.tolist() == SPREAD[len(counts)]
        np.testing.assert_array_equal(thresholds, distinct[:-1])
        return
    assert scores.tolist() == [1, 2, 3, 4, 5]
    chosen = np.searchsorted(distinct, thresholds).tolist()
    for k, (index, allowed) in enumerate(zip(chosen, nearest_cuts(counts), strict=True), start=1):
        assert index == min(allowed), f"cut {k} after value #{index}, nearest to {k}/5 are {sorted(allowed)}"


@pytest.mark.parametrize(("counts", "cuts"), [
    ([1] * 10, [1, 3, 5, 7]),  # exact fifths
    ([30, 1, 1, 1, 1, 1, 1, 64], [0, 4, 5, 6]),  # a heavy tail: the cuts crowd below it, every group keeps a value
    ([11, 9, 10, 10, 10, 10, 10, 10, 10, 10], [1, 3, 5, 7]),  # 0.11 / 0.2 / 0.29: nearest is the upper one
    ([19, 5, 6, 10, 10, 10, 10, 10, 10, 10], [0, 3, 5, 7]),  # 0.19 / 0.2 / 0.24: the first cut snaps lower
    ([50, 10, 10, 10, 10, 10], [0, 1, 2, 3]),  # half the customers tie at the lowest value: one group
    ([2, 5, 6, 4, 2, 5, 5, 1], [1, 2, 3, 5]),  # 17/30 and 19/30 are equally near 3/5: the lower boundary wins
    # Exact ties at 1/5 and 2/5 that floating point breaks upwards (found by hypothesis on CI).
    ([200, 286, 400, 287, 1, 141, 400], [0, 1, 2, 5]),
])
def test_cut_examples(counts: list[int], cuts: list[int]) -> None:
    distinct = np.arange(len(counts)) * 10
    thresholds, _ = score_cuts_from_counts(distinct, np.array(counts))
    assert (thresholds // 10).tolist() == cuts


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


def test_scores_do_not_depend_on_the_columns_number_types() -> None:
    """Unsigned days and counts (as Arrow or a database may hand them over) score like plain numbers."""
    plain = pd.DataFrame({c.RECENCY_DAYS: [1, 30, 400, 400, 90, 7], c.FREQUENCY: [5, 1, 1, 2, 3, 9],
                          c.MONETARY: [500.0, 20.0, 15.0, 15.0, 80.0, 999.5]})
    narrow = plain.astype({c.RECENCY_DAYS: "uint32", c.FREQUENCY: "uint16", c.MONETARY: "float32"})
    expected = RFMScorer().fit(plain).transform(plain)
    for fitted_on in (plain, narrow):
        scored = RFMScorer().fit(fitted_on).transform(narrow)
        for column in (c.R_SCORE, c.F_SCORE, c.M_SCORE, c.RFM_SCORE):
            assert scored[column].tolist() == expected[column].tolist(), column
    assert expected[c.R_SCORE].tolist() == [5, 3, 1, 1, 2, 4]  # fewer days is better
