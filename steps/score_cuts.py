"""Where the R, F and M scores cut a feature's sorted values: the one algorithm, no NumPy.

Customers with equal values always get equal scores. Cut points are chosen
between distinct values so the five groups are as close to equal shares as
the ties allow; with fewer than five distinct values the groups present are
spread over 1..5 (lowest 1, highest 5). Heavy ties never fail: when half of
all customers bought once, they all get F=1 and the rest share 2..5.

The algorithm only asks where the cumulative share crosses 20%, 40%, 60% and
80% (:class:`Crossing`), so the histogram can live anywhere: in NumPy arrays
(``steps.scoring``) or in the database (``steps.features``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from steps import columns as c

N_SCORES = 5
# Feature -> +1 when larger is better, -1 when smaller is better.
SCORED_FEATURES: dict[str, tuple[str, int]] = {
    c.R_SCORE: (c.RECENCY_DAYS, -1),
    c.F_SCORE: (c.FREQUENCY, +1),
    c.M_SCORE: (c.MONETARY, +1),
}
# The shares of customers at or below the cuts.
TARGETS: tuple[float, ...] = tuple(k / N_SCORES for k in range(1, N_SCORES))


class Crossing(NamedTuple):
    """Where the cumulative share first reaches a target.

    ``index`` is the first distinct value (sorted) whose share of customers at
    or below it is ``>= target``; ``share`` is that share and ``before`` the
    share at or below the value before it (0 for the first value).
    """

    index: int
    share: float
    before: float


def spread_scores(n_distinct: int) -> list[int]:
    """Scores of ``n_distinct <= N_SCORES`` groups, spread over 1..5 (one group: 1).

    >>> spread_scores(1), spread_scores(2), spread_scores(3), spread_scores(4)
    ([1], [1, 5], [1, 3, 5], [1, 2, 4, 5])
    """
    if n_distinct <= 1:
        return [1]
    return [1 + round(i * (N_SCORES - 1) / (n_distinct - 1)) for i in range(n_distinct)]


def cut_indexes(n_distinct: int, crossing: Callable[[float], Crossing]) -> list[int]:
    """Indexes (into the sorted distinct values) of the last value of groups 1..4.

    Each cut is the boundary nearest its target share (ties go to the lower
    one), kept strictly after the previous cut and early enough to leave one
    distinct value to each group still to come. Needs ``n_distinct > N_SCORES``.
    """
    cut_index: list[int] = []
    previous = -1
    for k, target in enumerate(TARGETS, start=1):
        i, share, before = crossing(target)
        if i > 0 and (i >= n_distinct or target - before <= share - target):
            i -= 1
        lowest, highest = previous + 1, n_distinct - 1 - (N_SCORES - k)
        i = min(max(i, lowest), highest)
        cut_index.append(i)
        previous = i
    return cut_index


def score_sql(oriented: str, thresholds: Sequence[float], scores: Sequence[int]) -> str:
    """SQL scoring the (larger-is-better) expression ``oriented`` under fitted cuts.

    Thresholds are written as exact DOUBLE literals, so the database puts
    every value in the same group as NumPy would.

    Examples
    --------
    >>> score_sql("frequency", [2.0], [1, 5])
    "CAST([1, 5][1 + CAST(frequency > '2.0'::DOUBLE AS INTEGER)] AS TINYINT)"
    """
    above = "".join(f" + CAST({oriented} > '{float(t)!r}'::DOUBLE AS INTEGER)" for t in thresholds)
    return f"CAST([{', '.join(str(int(s)) for s in scores)}][1{above}] AS TINYINT)"
