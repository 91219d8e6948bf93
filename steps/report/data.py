"""Aggregates behind the HTML report: small tables and bin counts, never per-customer rows.

Everything here is a pure function of the features table (``rfm.parquet``)
and the model metadata (``model.json``), vectorised so a million customers
take well under a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from steps import columns as c
from steps.model.model_io import SegmentModel
from steps.model.segmenter import feature_matrix
from steps.report.svg_charts import compact
from steps.segments import SCORE_LEVELS, SEGMENT_NAME_ARRAY, SEGMENT_NAMES, segment_codes

TABLE_COLUMNS: tuple[str, ...] = ("customers", "share", "revenue", "revenue_share", c.RECENCY_DAYS, c.FREQUENCY,
                                  c.MONETARY, "avg_order_value")
HISTOGRAM_BINS = 24
DISCRETE_LIMIT = 24  # integer features spanning at most this many values get one bin per value


@dataclass(frozen=True)
class Histogram:
    """Customers per bin, with labels at the bin edges or under each bin."""

    counts: list[int]
    edge_labels: list[str] | None = None
    bin_labels: list[str] | None = None
    log_scale: bool = False


def segments(features: pd.DataFrame) -> pd.Series:
    """``rfm_segment`` of each customer; derived from the R and F scores when the column is absent."""
    if c.RFM_SEGMENT in features:
        return features[c.RFM_SEGMENT].astype(str)
    codes = segment_codes(features[c.R_SCORE], features[c.F_SCORE])
    return pd.Series(SEGMENT_NAME_ARRAY[codes], index=features.index, dtype=str)


def clusters(features: pd.DataFrame, model_meta: dict) -> np.ndarray:
    """Cluster of each customer: the ``cluster`` column when present, else the model's nearest centre."""
    if c.CLUSTER in features:
        return features[c.CLUSTER].to_numpy(dtype=int)
    if features.empty:
        return np.zeros(0, dtype=int)
    return SegmentModel(model_meta).clusters(feature_matrix(features))


def segment_table(features: pd.DataFrame, groups: pd.Series, order: list) -> pd.DataFrame:
    """Customers, share, revenue and its share, mean recency / frequency / monetary, average order value.

    Parameters
    ----------
    features : DataFrame
        One row per customer with ``recency_days``, ``frequency``, ``monetary``.
    groups : Series
        The group of each customer (aligned with ``features``).
    order : list
        Groups in display order; groups without customers get a row of zeros
        and missing means, groups not listed are appended in sorted order.

    Returns
    -------
    DataFrame
        Indexed by group, columns ``TABLE_COLUMNS``. Revenue is the sum of
        ``monetary`` (net spend); its share is missing when total revenue is 0.
        The average order value is the group's revenue over its orders (sum of ``frequency``).
    """
    frame = pd.DataFrame({
        "group": np.asarray(groups), c.RECENCY_DAYS: features[c.RECENCY_DAYS].to_numpy(float),
        c.FREQUENCY: features[c.FREQUENCY].to_numpy(float), c.MONETARY: features[c.MONETARY].to_numpy(float),
    })
    table = frame.groupby("group", sort=True).agg(
        customers=(c.MONETARY, "size"), recency_days=(c.RECENCY_DAYS, "mean"),
        frequency=(c.FREQUENCY, "mean"), monetary=(c.MONETARY, "mean"), revenue=(c.MONETARY, "sum"),
        orders=(c.FREQUENCY, "sum"),
    )
    extra = [group for group in table.index if group not in set(order)]
    table = table.reindex(list(order) + extra)
    table["customers"] = table["customers"].fillna(0).astype(int)
    table["revenue"] = table["revenue"].fillna(0.0)
    total_customers, total_revenue = table["customers"].sum(), table["revenue"].sum()
    table["share"] = table["customers"] / total_customers if total_customers else 0.0
    table["revenue_share"] = table["revenue"] / total_revenue if total_revenue else np.nan
    table["avg_order_value"] = table["revenue"] / table["orders"].where(table["orders"] > 0)
    return table[list(TABLE_COLUMNS)]


def _rf_cells(features: pd.DataFrame, weights: np.ndarray | None) -> np.ndarray:
    """Sum of ``weights`` (None: count) per (r_score, f_score) cell: row ``r - 1``, column ``f - 1``."""
    levels = len(SCORE_LEVELS)
    r = features[c.R_SCORE].to_numpy(dtype=int) - 1
    f = features[c.F_SCORE].to_numpy(dtype=int) - 1
    valid = (r >= 0) & (r < levels) & (f >= 0) & (f < levels)
    cells = np.bincount(r[valid] * levels + f[valid], weights=None if weights is None else weights[valid],
                        minlength=levels * levels)
    return cells.reshape(levels, levels)


def rf_grid(features: pd.DataFrame) -> np.ndarray:
    """Customers per (r_score, f_score) cell: a 5x5 array, row ``r - 1``, column ``f - 1``."""
    return _rf_cells(features, None)


def rf_revenue(features: pd.DataFrame) -> np.ndarray:
    """Revenue (sum of ``monetary``) per (r_score, f_score) cell, shaped like :func:`rf_grid`."""
    return _rf_cells(features, features[c.MONETARY].to_numpy(dtype=float))


def crosstab(cluster_of: np.ndarray, segment_of: pd.Series, k: int) -> pd.DataFrame:
    """Customers per cluster (rows ``0..k-1``) and RFM segment (columns in grid order, then any others)."""
    counts = pd.crosstab(pd.Series(cluster_of, name=c.CLUSTER), pd.Series(np.asarray(segment_of), name="segment"))
    columns = list(SEGMENT_NAMES) + sorted(set(counts.columns) - set(SEGMENT_NAMES))
    rows = sorted(set(range(k)) | set(int(i) for i in counts.index))
    return counts.reindex(index=rows, columns=columns, fill_value=0).astype(int)


def histogram(values: np.ndarray, log_scale: bool, discrete: bool, bins: int = HISTOGRAM_BINS) -> Histogram:
    """Bin ``values`` for display.

    Parameters
    ----------
    values : ndarray
        One value per customer; non-finite values are ignored.
    log_scale : bool
        Geometric bins over the positive values (heavy tails); values <= 0
        (net returns) share a first bin.
    discrete : bool
        Integer values: one bin per value when they span at most
        ``DISCRETE_LIMIT`` values, else integer-aligned bins labelled by range.
    bins : int
        Number of bins for continuous values.

    Returns
    -------
    Histogram
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return Histogram(counts=[])
    low, high = float(values.min()), float(values.max())
    if discrete and high - low < DISCRETE_LIMIT:
        start = math.floor(low)
        counts = np.bincount((np.floor(values) - start).astype(np.int64), minlength=int(high) - start + 1)
        return Histogram(counts=counts.tolist(), bin_labels=[str(start + i) for i in range(len(counts))])
    edges, log_scale = _edges(values, low, high, log_scale, discrete, bins)
    counts, _ = np.histogram(values, bins=edges)
    if discrete:
        labels = []
        for first, after in zip(edges[:-1].astype(np.int64), edges[1:].astype(np.int64), strict=True):
            last = after - 1
            labels.append(compact(first) if last <= first else f"{compact(first)}\u2013{compact(last)}")
        return Histogram(counts=counts.tolist(), bin_labels=labels, log_scale=log_scale)
    return Histogram(counts=counts.tolist(), edge_labels=[compact(e) for e in edges], log_scale=log_scale)


def _edges(values: np.ndarray, low: float, high: float, log_scale: bool, discrete: bool,
           bins: int) -> tuple[np.ndarray, bool]:
    """Bin edges, and whether they are geometric (log scale)."""
    positive = values[values > 0]
    if high == low:
        edges = np.array([low - 0.5, high + 0.5]) if discrete else np.array([low, low + (abs(low) or 1.0)])
        return edges, False
    use_log = bool(log_scale and positive.size and float(positive.min()) < high)
    if use_log:
        edges = np.geomspace(float(positive.min()), high, bins + 1)
        if low <= 0:
            edges = np.concatenate([[low], edges])
    else:
        edges = np.linspace(low, high, bins + 1)
    if discrete:
        edges = np.unique(np.concatenate([np.ceil(edges[:-1]), [high + 1]]))
    return edges, use_log
