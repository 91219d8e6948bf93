"""R, F and M scores in 1..5 (5 best) that respect ties, on NumPy arrays.

The cut algorithm is ``steps.score_cuts`` (shared with the features step,
which runs it on histograms in the database); this module fits it on arrays
and applies it (:class:`RFMScorer`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from steps import columns as c
from steps.score_cuts import N_SCORES, SCORED_FEATURES, Crossing, cut_indexes, score_sql, spread_scores

__all__ = ["N_SCORES", "SCORED_FEATURES", "RFMScorer", "apply_cuts", "score_cuts", "score_cuts_from_counts",
           "score_sql"]


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
    """:func:`score_cuts` from a histogram: sorted distinct values and how many customers have each."""
    distinct, counts = np.asarray(distinct), np.asarray(counts)
    n_distinct = len(distinct)
    if n_distinct <= N_SCORES:
        return distinct[:-1], np.array(spread_scores(n_distinct))
    share_through = np.cumsum(counts) / counts.sum()  # share of customers at or below each value

    def crossing(target: float) -> Crossing:
        i = int(np.searchsorted(share_through, target))
        share = float(share_through[i]) if i < n_distinct else math.inf
        return Crossing(i, share, float(share_through[i - 1]) if i > 0 else 0.0)

    return distinct[cut_indexes(n_distinct, crossing)], np.arange(1, N_SCORES + 1)


def apply_cuts(values: np.ndarray, thresholds: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Scores of ``values`` (oriented larger-is-better) under fitted cuts."""
    groups = np.searchsorted(thresholds, values, side="left")
    return scores[groups].astype(np.int8)


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
