"""Synthetic web-shop transactions in the AWS RFM guidance CSV format.

Every customer belongs to one behaviour group, so that segments found by the
pipeline mean something (``days`` are days before ``end_date``):

- ``champions`` (8%): 12-40 orders over the last 1-2 years, the latest in the last 2 weeks.
- ``loyal`` (15%): 5-20 orders over the last 7-21 months, the latest in the last 2 months.
- ``recent_big_spenders`` (5%): 1-3 large orders of premium products (unit price >= 100)
  in the last 6 weeks.
- ``new`` (7%): 1-2 orders, the first of them in the last 3 weeks.
- ``one_time`` (35%): a single order 4-24 months ago.
- ``lapsed_loyal`` (10%): 6-25 orders, but none in the last 6 months (190-420 days).
- ``hibernating`` (20%): 2-4 small orders of cheap products (unit price <= 30), the latest
  4-18 months ago.

Each order has one or more lines (one row per product, all with the same
``Date``); ``EventName`` is ``PURCHASED`` for them, with about 2% written
``purchased`` or ``Purchased``. ``VIEWED`` and ``ADDED_TO_CART`` rows are not
purchases. ``Date`` is RFC 2822 in the customer's local UTC offset (a simplified
DST rule), e.g. ``Mon, 19 Sep 2022 12:16:01 +0530``. ``CustomerID`` is
zero-padded digits (``"0004213"``). Contacts are fictional: e-mails at
``example.com`` and phone numbers ``+1555010xxxx`` (unique up to 10,000 customers).

Messy rows, about 0.5% of all rows in total, are *added* copies of purchase
rows, so the clean data is unchanged: a missing ``CustomerID``, an unparseable
``Date``, a non-numeric ``UnitPrice``, a zero ``Quantity``, exact duplicates, and
returns (``PURCHASED`` with a negative ``Quantity`` 1-20 days after buying the
product).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv

from steps.errors import RFMError
from steps.sample.catalog import COLUMNS, DAY, FIRST_NAMES, LAST_NAMES, LOCATIONS, PRODUCTS, to_frame


class Group(NamedTuple):
    """Behaviour of one customer group; days count back from ``end_date`` (0 = that day)."""

    share: float  # share of all customers
    orders: tuple[int, float, int]  # number of orders: minimum, extra Poisson mean, maximum
    last: tuple[int, int]  # days back of the latest order (inclusive range)
    first_max: int  # the first order is at most this many days back
    span: tuple[int, int]  # days between the first and the latest order
    lines: tuple[int, float]  # products per order: minimum, extra Poisson mean (at most +3)
    qty: tuple[float, int]  # quantity per line: Poisson mean of quantity - 1, maximum
    prices: tuple[float, float]  # unit price range of the products bought
    views: float  # mean number of VIEWED / ADDED_TO_CART events at any time


ANY = (0.0, 1e9)
GROUPS: dict[str, Group] = {
    "champions": Group(0.08, (12, 10, 40), (0, 14), 729, (300, 700), (1, 0.7), (1.5, 5), ANY, 8),
    "loyal": Group(0.15, (5, 5, 20), (0, 60), 729, (200, 650), (1, 0.5), (0.8, 5), ANY, 5),
    "recent_big_spenders": Group(0.05, (1, 1, 3), (0, 45), 729, (0, 60), (2, 1), (1.0, 6), (100, 1e9), 3),
    "new": Group(0.07, (1, 0.3, 2), (0, 21), 21, (0, 21), (1, 0.5), (0.6, 5), ANY, 2),
    "one_time": Group(0.35, (1, 0, 1), (120, 729), 729, (0, 0), (1, 0.4), (0.5, 5), ANY, 1),
    "lapsed_loyal": Group(0.10, (6, 6, 25), (190, 420), 729, (200, 500), (1, 0.5), (0.8, 5), ANY, 1),
    "hibernating": Group(0.20, (2, 0.8, 4), (120, 540), 729, (30, 200), (1, 0.2), (0.2, 3), (0, 30), 0.5),
}
# Messy rows, added as altered copies of purchase rows: kind -> share of all rows. The order
# matters: to_frame() spoils CustomerID for kind 0, Date for kind 1 and UnitPrice for kind 2.
MESSY_RATES = {"missing_id": 0.0008, "bad_date": 0.0008, "bad_price": 0.0008,
               "zero_quantity": 0.0008, "duplicate": 0.001, "return": 0.0008}
_HOUR_WEIGHTS = np.array([1, .5, .3, .2, .2, .3, .8, 1.5, 2.5, 3, 3.5, 3.5,
                          4, 3.5, 3.2, 3, 3.2, 3.8, 4.5, 5.5, 6, 5.5, 4, 2.5])


def _param(field: str, group: np.ndarray) -> np.ndarray:
    """Return one :class:`Group` field for each group index in ``group``."""
    return np.array([getattr(g, field) for g in GROUPS.values()])[group]


def _pick(rng: np.random.Generator, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Draw integers uniformly from ``[low, high]`` element-wise."""
    return low + np.floor(rng.random(np.shape(high)) * (high - low + 1)).astype(np.int64)


def _times(rng: np.random.Generator, end_s: int, days: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """UTC seconds of local times (busier in the evening) ``days`` before the last day, not after it."""
    hours = rng.choice(24, size=len(days), p=_HOUR_WEIGHTS / _HOUR_WEIGHTS.sum())
    utc = end_s + 1 - (days + 1) * DAY + hours * 3600 + rng.integers(0, 3600, len(days)) - offset * 60
    return np.where(utc > end_s, utc - DAY, utc)


def _customers(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Draw each customer's group (exact shares), orders, timing, location, channel and name."""
    bounds = np.round(np.cumsum([g.share for g in GROUPS.values()]) * n).astype(np.int64)
    group = rng.permutation(np.repeat(np.arange(len(GROUPS)), np.diff(bounds, prepend=0)))
    o_min, o_mean, o_max = _param("orders", group).T
    last = _pick(rng, *_param("last", group).T)
    span = np.minimum(_pick(rng, *_param("span", group).T), _param("first_max", group) - last)
    weights = np.array([x[5] for x in LOCATIONS])
    return {"group": group, "n_orders": np.minimum(o_min + rng.poisson(o_mean), o_max).astype(np.int64),
            "last": last, "span": np.maximum(span, 0),
            "loc": rng.choice(len(LOCATIONS), size=n, p=weights / weights.sum()),
            "sms": rng.random(n) < 0.3, "first": rng.integers(0, len(FIRST_NAMES), n),
            "surname": rng.integers(0, len(LAST_NAMES), n)}


def _products(rng: np.random.Generator, group: np.ndarray) -> np.ndarray:
    """Pick a product per row: cheaper ones sell more; each group buys within its price range."""
    price = np.array([p[3] for p in PRODUCTS])
    out = np.empty(len(group), dtype=np.int64)
    for g, spec in enumerate(GROUPS.values()):
        rows = np.flatnonzero(group == g)
        w = np.where((price >= spec.prices[0]) & (price <= spec.prices[1]), price**-0.5, 0.0)
        out[rows] = np.searchsorted(np.cumsum(w / w.sum()), rng.random(len(rows)), side="right")
    return np.minimum(out, len(PRODUCTS) - 1)


def generate_transactions(customers: int, seed: int = 0,
                          end_date: dt.date = dt.date(2026, 10, 31)) -> pd.DataFrame:
    """Generate about two years of web-shop events in the guidance format.

    Parameters
    ----------
    customers : int
        Number of customers, each with at least one purchase; about 13.5 rows per customer.
    seed : int, default 0
        Seed of the numpy random generator: the same arguments give the same rows.
    end_date : datetime.date, default 2026-10-31
        Last day of the history; the first is 729 days earlier.

    Returns
    -------
    pandas.DataFrame
        :data:`~steps.sample.catalog.COLUMNS` in order, rows sorted by time; ``Quantity`` is
        int64, every other column is a string column (``UnitPrice`` can hold non-numeric junk).
    """
    if customers < 1:
        raise ValueError(f"customers must be at least 1, got {customers}")
    rng = np.random.default_rng(seed)
    c = _customers(rng, customers)
    end_s = (end_date - dt.date(1970, 1, 1)).days * DAY + DAY - 1
    base_offset = np.array([x[3] for x in LOCATIONS])[c["loc"]]
    # Orders: each customer's first order row is the latest, the others fall within the span.
    o_cust = np.repeat(np.arange(customers), c["n_orders"])
    is_latest = np.r_[True, o_cust[1:] != o_cust[:-1]]
    o_days = c["last"][o_cust] + np.where(is_latest, 0, _pick(rng, 0, c["span"][o_cust]))
    o_utc = _times(rng, end_s, o_days, base_offset[o_cust])
    # Order lines: one PURCHASED row per product.
    l_min, l_mean = _param("lines", c["group"][o_cust]).T
    n_lines = (l_min + np.minimum(rng.poisson(l_mean), 3)).astype(np.int64)
    order_no = np.repeat(np.arange(len(o_cust)), n_lines)
    prod = _products(rng, c["group"][o_cust[order_no]])
    again = np.zeros(len(prod), dtype=bool)  # a product already in the order: drop the line
    for k in range(1, 5):
        again[k:] |= (order_no[k:] == order_no[:-k]) & (prod[k:] == prod[:-k])
    order_no, prod = order_no[~again], prod[~again]
    cust, utc = o_cust[order_no], o_utc[order_no]
    q_mean, q_max = _param("qty", c["group"][cust]).T
    qty = 1 + np.minimum(rng.poisson(q_mean), q_max - 1).astype(np.int64)
    event = rng.choice(3, size=len(cust), p=[0.98, 0.01, 0.01])
    # Not purchases: carts shortly before 30% of the lines, and views/carts between first order and end.
    cart = np.flatnonzero(rng.random(len(cust)) < 0.3)
    v_cust = np.repeat(np.arange(customers), rng.poisson(_param("views", c["group"])))
    v_days = _pick(rng, 0, c["last"][v_cust] + c["span"][v_cust])
    cust = np.r_[cust, cust[cart], v_cust]
    prod = np.r_[prod, prod[cart], _products(rng, c["group"][v_cust])]
    qty = np.r_[qty, qty[cart], np.ones(len(v_cust), np.int64)]
    utc = np.r_[utc, utc[cart] - rng.integers(60, 1800, len(cart)),
                _times(rng, end_s, v_days, base_offset[v_cust])]
    event = np.r_[event, np.full(len(cart), 4), rng.choice([3, 4], len(v_cust), p=[0.8, 0.2])]
    rows = _add_messy(rng, {"cust": cust, "prod": prod, "qty": qty, "utc": utc, "event": event}, end_s)
    return to_frame(c, rows)


def _add_messy(rng: np.random.Generator, rows: dict[str, np.ndarray], end_s: int) -> dict[str, np.ndarray]:
    """Append altered copies of random purchase rows, sort all rows by time and add a ``flag`` column.

    ``flag`` is -1 for clean rows, else the index of the kind in :data:`MESSY_RATES`.
    """
    bought = np.flatnonzero(rows["event"] < 3)
    counts = [max(1, round(rate * len(rows["cust"]))) for rate in MESSY_RATES.values()]
    src = rng.choice(bought, size=sum(counts), replace=sum(counts) > len(bought))
    kind = np.repeat(np.arange(len(counts)), counts)
    add = {k: v[src].copy() for k, v in rows.items()}
    add["qty"][kind == 3] = 0
    ret = kind == 5  # a return: same product, 1-20 days later, part or all of the quantity
    later = add["utc"][ret] + rng.integers(1, 21, ret.sum()) * DAY + rng.integers(-3600, 3600, ret.sum())
    add["utc"][ret] = np.minimum(later, end_s)
    add["qty"][ret] = -rng.integers(1, add["qty"][ret] + 1)
    add["event"][ret] = 0
    out = {k: np.r_[rows[k], add[k]] for k in rows}
    out["flag"] = np.r_[np.full(len(rows["cust"]), -1), kind]
    order = np.argsort(out["utc"], kind="stable")
    return {k: v[order] for k, v in out.items()}


def write_sample(path: str | Path, customers: int, seed: int = 0) -> int:
    """Write :func:`generate_transactions` as CSV, gzip-compressed if ``path`` ends in ``.gz``.

    Parameters
    ----------
    path : str or Path
        Output file; missing parent folders are created.
    customers : int
        Number of customers.
    seed : int, default 0
        Random seed; the same ``(customers, seed)`` gives a byte-identical file.

    Returns
    -------
    int
        Number of data rows written.
    """
    path = Path(path)
    if not path.name.endswith((".csv", ".csv.gz")):
        raise RFMError("the sample is written as CSV", str(path), "name the output .csv or .csv.gz")
    if customers < 1:
        raise RFMError(f"--customers must be at least 1, got {customers}", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(generate_transactions(customers, seed), preserve_index=False)
    with open(path, "wb") as raw:
        out = gzip.GzipFile("", "wb", 6, raw, mtime=0) if path.suffix == ".gz" else raw
        out.write((",".join(COLUMNS) + "\n").encode())
        pcsv.write_csv(table, out, pcsv.WriteOptions(include_header=False, quoting_style="needed"))
        out.close()
    return table.num_rows


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m steps.sample.generate PATH [--customers N] [--seed S]``."""
    parser = argparse.ArgumentParser(description="Write synthetic transactions (AWS RFM guidance format).")
    parser.add_argument("path", help="output .csv or .csv.gz")
    parser.add_argument("--customers", type=int, default=3750, help="number of customers (default 3750)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    args = parser.parse_args(argv)
    print(f"{write_sample(args.path, args.customers, args.seed)} rows written to {args.path}")


if __name__ == "__main__":
    main()
