"""The RFM segment grid: (r_score, f_score) -> segment name, every cell once."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

SCORE_LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5)

# (segment, recency scores, frequency scores); see DESIGN.md / README.
SEGMENT_RULES: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = (
    ("Champions", (5,), (4, 5)),
    ("Loyal", (3, 4), (4, 5)),
    ("Potential Loyalist", (4, 5), (2, 3)),
    ("New Customers", (5,), (1,)),
    ("Promising", (4,), (1,)),
    ("Need Attention", (3,), (3,)),
    ("About to Sleep", (3,), (1, 2)),
    ("At Risk", (1, 2), (3, 4)),
    ("Can't Lose Them", (1, 2), (5,)),
    ("Hibernating", (1, 2), (1, 2)),
)

SEGMENT_NAMES: tuple[str, ...] = tuple(name for name, _, _ in SEGMENT_RULES)


def _build_grid() -> dict[tuple[int, int], str]:
    grid: dict[tuple[int, int], str] = {}
    for name, r_scores, f_scores in SEGMENT_RULES:
        for r in r_scores:
            for f in f_scores:
                if (r, f) in grid:
                    raise AssertionError(f"cell R={r} F={f} is in {grid[(r, f)]} and {name}")
                grid[(r, f)] = name
    missing = [(r, f) for r in SCORE_LEVELS for f in SCORE_LEVELS if (r, f) not in grid]
    if missing:
        raise AssertionError(f"cells without a segment: {missing}")
    return grid


SEGMENT_GRID: dict[tuple[int, int], str] = _build_grid()
# SEGMENT_CODES[r_score, f_score] = index of the cell's segment in SEGMENT_NAMES (scores 1..5).
SEGMENT_CODES = np.zeros((len(SCORE_LEVELS) + 1,) * 2, dtype=np.int64)
for (_r, _f), _name in SEGMENT_GRID.items():
    SEGMENT_CODES[_r, _f] = SEGMENT_NAMES.index(_name)
SEGMENT_NAME_ARRAY = np.asarray(SEGMENT_NAMES, dtype=object)  # codes -> names


def segment_of(r_score: int, f_score: int) -> str:
    """Return the RFM segment of one (r_score, f_score) cell.

    Examples
    --------
    >>> segment_of(5, 5)
    'Champions'
    >>> segment_of(1, 1)
    'Hibernating'
    """
    return SEGMENT_GRID[(int(r_score), int(f_score))]


def segment_codes(r_scores: Iterable[int], f_scores: Iterable[int]) -> np.ndarray:
    """Each (r_score, f_score) cell's index in :data:`SEGMENT_NAMES`, vectorised."""
    return SEGMENT_CODES[np.asarray(r_scores, dtype=int), np.asarray(f_scores, dtype=int)]


def segments_of(r_scores: Iterable[int], f_scores: Iterable[int]) -> list[str]:
    """Vectorised :func:`segment_of` over two equally long sequences.

    >>> segments_of([5, 3], [1, 3])
    ['New Customers', 'Need Attention']
    """
    return SEGMENT_NAME_ARRAY[segment_codes(r_scores, f_scores)].tolist()
