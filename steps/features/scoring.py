"""R, F and M scores in 1..5 (5 best) that respect ties.

Customers with equal values always get equal scores. Cut points are chosen
between distinct values so the five groups are as close to equal shares as
the ties allow; with fewer than five distinct values the groups present are
spread over 1..5 (lowest 1, highest 5). Heavy ties never fail: when half of
all customers bought once, they all get F=1 and the rest share 2..5.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from steps import columns as c

N_SCORES = 5
# Feature -> +1 when larger is better, -1 when smaller is better.
SCORED_FEATURES: dict[str, tuple[str, int]] = {
    c.R_SCORE: (c.RECENCY_DAYS, -1),
    c.F_SCORE: (c.FREQUENCY, +1),
    c.M_SCORE: (c.MONETARY, +1),
}


def score_cuts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group upper bounds and the score of each group for one feature.

    Parameters
    ----------
    values : ndarray
        Feature values oriented so that larger is better; NaN is not allowed.

    Returns
    -------
    thresholds : ndarray
        Sorted upper bounds of every group but the last (values ``<= thresholds[i]``
        and ``> thresholds[i-1]`` fall in group ``i``).
    scores : ndarray of int
        The score (1..5) of each group, increasing.

    Examples
    --------
    >>> thresholds, scores = score_cuts(np.array([1, 1, 1, 1, 2, 3, 4, 5, 6, 7]))
    >>> thresholds.tolist(), scores.tolist()
    ([1, 2, 3, 5], [1, 2, 3, 4, 5])
    """
    distinct, counts = np.unique(np.asarray(values), return_counts=True)
    return score_cuts_from_counts(distinct, counts)


def score_cuts_from_counts(distinct: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`score_cuts` from a histogram: sorted distinct values and how many customers have each.

    This is what the features step uses: the histogram comes from the
    database, so the customers never have to be loaded into Python.
    """
    distinct, counts = np.asarray(distinct), np.asarray(counts)
    n_distinct = len(distinct)
    if n_distinct <= 1:
        return distinct[:0], np.array([1])
    if n_distinct <= N_SCORES:
        spread = 1 + np.rint(np.arange(n_distinct) * (N_SCORES - 1) / (n_distinct - 1)).astype(int)
        return distinct[:-1], spread
    # Shares in exact integer arithmetic: customers at or below each value, times N_SCORES, against k
    # times the total. Floating point would break exact ties (17/30 and 19/30 around 3/5) either way.
    through = np.cumsum(counts.astype(np.int64)) * N_SCORES
    total = int(counts.sum())
    cut_index: list[int] = []
    previous = -1
    for k in range(1, N_SCORES):
        target = k * total
        i = int(np.searchsorted(through, target))
        # nearest boundary to the target: i or i-1 (the lower one when equally near)
        if i > 0 and (i >= n_distinct or target - through[i - 1] <= through[i] - target):
            i -= 1
        lowest, highest = previous + 1, n_distinct - 1 - (N_SCORES - k)
        i = min(max(i, lowest), highest)
        cut_index.append(i)
        previous = i
    return distinct[cut_index], np.arange(1, N_SCORES + 1)


def apply_cuts(values: np.ndarray, thresholds: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Scores of ``values`` (oriented larger-is-better) under fitted cuts."""
    groups = np.searchsorted(thresholds, values, side="left")
    return scores[groups].astype(np.int8)


def score_sql(oriented: str, thresholds: np.ndarray, scores: np.ndarray) -> str:
    """SQL computing :func:`apply_cuts` of the (larger-is-better) expression ``oriented``.

    Thresholds are written as exact DOUBLE literals, so the database puts
    every value in the same group as NumPy would.

    Examples
    --------
    >>> score_sql("frequency", np.array([2.0]), np.array([1, 5]))
    "CAST([1, 5][1 + CAST(frequency > '2.0'::DOUBLE AS INTEGER)] AS TINYINT)"
    """
    above = "".join(f" + CAST({oriented} > '{float(t)!r}'::DOUBLE AS INTEGER)" for t in thresholds)
    return f"CAST([{', '.join(str(int(s)) for s in scores)}][1{above}] AS TINYINT)"


class RFMScorer:
    """Fit quantile-like score cuts on R, F and M and apply them.

    Parameters
    ----------
    None. Learned state: ``cuts_`` maps each score column to (thresholds, scores).

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"recency_days": [1, 30, 400], "frequency": [5, 1, 1],
    ...                       "monetary": [500.0, 20.0, 15.0]})
    >>> RFMScorer().fit(frame).transform(frame)[["r_score", "f_score", "m_score"]].values.tolist()
    [[5, 5, 5], [3, 1, 3], [1, 1, 1]]
    """

    def fit(self, frame: Any) -> RFMScorer:
        """Learn the cuts of each score from a table with the R, F and M columns."""
        self.cuts_ = {}
        for score, (feature, direction) in SCORED_FEATURES.items():
            oriented = direction * np.asarray(frame[feature], dtype=float)
            self.cuts_[score] = score_cuts(oriented)
        return self

    def scores(self, frame: Any) -> dict[str, np.ndarray]:
        """The three score arrays (int8, 1..5) of a table with the R, F and M columns."""
        return {
            score: apply_cuts(direction * np.asarray(frame[feature], dtype=float), *self.cuts_[score])
            for score, (feature, direction) in SCORED_FEATURES.items()
        }

    def transform(self, frame: Any) -> Any:
        """A copy of the DataFrame ``frame`` with ``r_score``, ``f_score``, ``m_score`` and ``rfm_score``."""
        out = frame.copy()
        for score, values in self.scores(out).items():
            out[score] = values
        out[c.RFM_SCORE] = (
            out[c.R_SCORE].astype(str) + out[c.F_SCORE].astype(str) + out[c.M_SCORE].astype(str)
        )
        return out
