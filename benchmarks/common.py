"""What the benchmarks share: synthetic per-customer features and a results table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from steps import columns as c
from steps.features.scoring import RFMScorer
from steps.segments import segments_of


def customer_features(customers: int, seed: int = 0) -> pd.DataFrame:
    """Plausible heavy-tailed RFM features for ``customers`` customers, scored."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        c.CUSTOMER_ID: np.char.add("C", np.char.zfill(np.arange(customers).astype(str), 8)).astype(object),
        c.RECENCY_DAYS: rng.integers(1, 730, customers),
        c.FREQUENCY: np.maximum(1, rng.geometric(0.35, customers)),
        c.MONETARY: np.round(rng.lognormal(4.5, 1.1, customers), 2),
    })
    frame = RFMScorer().fit(frame).transform(frame)
    frame[c.RFM_SEGMENT] = segments_of(frame[c.R_SCORE], frame[c.F_SCORE])
    return frame


def print_table(title: str, rows: list[tuple[str, float, str]], baseline: str) -> None:
    """Rows of (name, seconds, note), with each row's speed relative to ``baseline``."""
    base = dict((name, seconds) for name, seconds, _ in rows)[baseline]
    print(f"\n{title}")
    print(f"  {'':<34} {'seconds':>9} {'vs ' + baseline:>22}  note")
    for name, seconds, note in rows:
        print(f"  {name:<34} {seconds:>9.2f} {base / seconds:>21.2f}x  {note}")
