"""Tests of the sample data generator (steps/sample/generate.py) and the bundled sample file."""

from __future__ import annotations

import datetime as dt
import gzip
import re
from email.utils import parsedate_to_datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from steps.sample.catalog import BAD_DATES, BAD_PRICES, COLUMNS, PRODUCTS
from steps.sample.generate import GROUPS, MESSY_RATES, generate_transactions, write_sample

BUNDLED = Path(__file__).resolve().parents[1] / "data" / "sample" / "transactions.csv.gz"
BUNDLED_CUSTOMERS, BUNDLED_SEED = 3750, 42
END = dt.date(2026, 10, 31)


def _parse(value: str) -> dt.datetime | None:
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sample") / "transactions.csv.gz"
    write_sample(path, BUNDLED_CUSTOMERS, BUNDLED_SEED)
    return path


@pytest.fixture(scope="module")
def df(csv_path: Path) -> pd.DataFrame:
    """The sample as a pipeline would read it: every column as text."""
    return pd.read_csv(csv_path, dtype=str, keep_default_na=False, na_values=[""])


@pytest.fixture(scope="module")
def purchases(df: pd.DataFrame) -> pd.DataFrame:
    """Clean purchase rows with a parsed UTC timestamp and amount."""
    p = df[df["EventName"].str.upper().eq("PURCHASED")].copy()
    p["ts"] = pd.to_datetime(p["Date"].map(_parse), utc=True)
    p["price"] = pd.to_numeric(p["UnitPrice"], errors="coerce")
    p["qty"] = p["Quantity"].astype(int)
    p = p[p["CustomerID"].notna() & p["ts"].notna() & p["price"].notna() & (p["qty"] > 0)]
    p = p.drop_duplicates(subset=list(COLUMNS))
    p["amount"] = p["qty"] * p["price"]
    p["day"] = p["ts"].dt.floor("D")
    return p


@pytest.fixture(scope="module")
def customers(purchases: pd.DataFrame) -> pd.DataFrame:
    as_of = pd.Timestamp(END, tz="UTC") + pd.Timedelta(days=1)
    f = purchases.groupby("CustomerID").agg(first=("day", "min"), last=("day", "max"),
                                            frequency=("day", "nunique"), monetary=("amount", "sum"))
    f["recency"] = (as_of - f["last"]).dt.days
    f["age"] = (as_of - f["first"]).dt.days
    return f


def test_same_arguments_give_byte_identical_files(tmp_path: Path, csv_path: Path) -> None:
    again = tmp_path / "a" / "again.csv.gz"
    write_sample(again, BUNDLED_CUSTOMERS, BUNDLED_SEED)
    assert again.read_bytes() == csv_path.read_bytes()
    plain1, plain2 = tmp_path / "1.csv", tmp_path / "2.csv"
    write_sample(plain1, 300, seed=7)
    write_sample(plain2, 300, seed=7)
    assert plain1.read_bytes() == plain2.read_bytes()
    assert not plain1.read_bytes().startswith(b"\x1f\x8b")  # not gzip without .gz
    write_sample(plain2, 300, seed=8)
    assert plain1.read_bytes() != plain2.read_bytes()


def test_schema_and_column_order(csv_path: Path, df: pd.DataFrame) -> None:
    with gzip.open(csv_path, "rt") as f:
        assert f.readline().rstrip("\n").split(",") == list(COLUMNS)
    assert list(df.columns) == list(COLUMNS) == [
        "EventName", "ProductCode", "ProductName", "ProductDescription", "UnitPrice", "Quantity",
        "CustomerID", "Username", "ChannelType", "Address", "City", "State", "Country", "Date",
    ]
    frame = generate_transactions(50, seed=1)
    assert list(frame.columns) == list(COLUMNS)
    assert frame["Quantity"].dtype == np.int64
    assert set(df["EventName"]) == {"PURCHASED", "purchased", "Purchased", "VIEWED", "ADDED_TO_CART"}
    assert set(df["ChannelType"]) == {"EMAIL", "SMS"}


def test_dates_are_rfc2822_with_varied_offsets(df: pd.DataFrame) -> None:
    good = df[~df["Date"].isin(BAD_DATES)]
    assert good["Date"].str.fullmatch(
        r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
        r"\d{4} \d\d:\d\d:\d\d [+-]\d{4}").all()
    parsed = [parsedate_to_datetime(d) for d in good["Date"]]
    assert all(p.tzinfo is not None for p in parsed)
    utc_days = {p.astimezone(dt.UTC).date() for p in parsed}
    assert max(utc_days) <= END and (END - min(utc_days)).days in range(700, 732)
    offsets = set(good["Date"].str[-5:])
    assert {"+0530", "-0700", "+0000", "+0100"} <= offsets and len(offsets) >= 8
    # Weekday names agree with the dates.
    assert all(p.strftime("%a") == d[:3] for p, d in zip(parsed[:2000], good["Date"][:2000], strict=True))


def test_contacts_are_fictional(df: pd.DataFrame) -> None:
    emails = df.loc[df["ChannelType"] == "EMAIL", "Address"]
    assert emails.str.fullmatch(r"[a-z]+\.[a-z]+\d+@example\.com").all()
    phones = df.loc[df["ChannelType"] == "SMS", "Address"]
    assert phones.str.fullmatch(r"\+1555010\d{4}").all()
    assert not df.drop(columns="Address").apply(lambda c: c.str.contains("@", na=False)).any().any()
    per_customer = df.dropna(subset=["CustomerID"]).groupby("CustomerID")[["Username", "Address"]].nunique()
    assert (per_customer == 1).all().all()


def test_customer_ids_keep_leading_zeros(csv_path: Path, df: pd.DataFrame) -> None:
    ids = df["CustomerID"].dropna()
    assert ids.str.fullmatch(r"\d{7}").all()
    assert ids.str.startswith("000").mean() > 0.9
    assert ids.nunique() == BUNDLED_CUSTOMERS
    # The trap the ids are designed for: default type inference turns them into numbers.
    assert pd.api.types.is_numeric_dtype(pd.read_csv(csv_path, usecols=["CustomerID"])["CustomerID"])


def test_products_prices_and_quantities_are_plausible(df: pd.DataFrame, purchases: pd.DataFrame) -> None:
    catalogue = {code: f"{price:.2f}" for code, _, _, price in PRODUCTS}
    assert len(catalogue) == 50
    assert set(df["ProductCode"]) <= set(catalogue)
    good_price = ~df["UnitPrice"].isin(BAD_PRICES)
    assert (df.loc[good_price, "UnitPrice"] == df.loc[good_price, "ProductCode"].map(catalogue)).all()
    assert purchases["qty"].between(1, 5).mean() > 0.95
    assert purchases["qty"].max() <= 6


def test_group_behaviour_and_shares(customers: pd.DataFrame) -> None:
    n = len(customers)
    assert n == BUNDLED_CUSTOMERS
    assert sum(g.share for g in GROUPS.values()) == pytest.approx(1.0)
    c = customers
    share = {
        "one_time": ((c.frequency == 1) & (c.recency > 120)).mean(),
        "champions": ((c.frequency >= 12) & (c.recency <= 15)).mean(),
        "lapsed_loyal": ((c.frequency >= 6) & (c.recency > 180)).mean(),
        "new": (c.age <= 22).mean(),
        "hibernating": (c.frequency.between(2, 4) & (c.recency > 120) & (c.monetary < 300)).mean(),
    }
    assert 0.30 <= share["one_time"] <= 0.40
    assert share["champions"] == pytest.approx(0.08, abs=0.02)
    assert share["lapsed_loyal"] == pytest.approx(0.10, abs=0.02)
    assert share["new"] == pytest.approx(0.07, abs=0.03)  # plus a few recent big spenders
    assert share["hibernating"] == pytest.approx(0.20, abs=0.03)
    # The groups differ in spend, not only in timing.
    champions = c[(c.frequency >= 12) & (c.recency <= 15)].monetary.median()
    one_time = c[(c.frequency == 1) & (c.recency > 120)].monetary.median()
    big = c[(c.frequency <= 3) & (c.recency <= 46) & (c.monetary > 1000)]
    assert champions > 20 * one_time
    assert len(big) / n > 0.03


def test_messy_rows_are_present_at_a_low_rate(df: pd.DataFrame) -> None:
    n = len(df)
    bought = df["EventName"].str.upper().eq("PURCHASED")
    qty = df["Quantity"].astype(int)
    counts = {
        "missing_id": df["CustomerID"].isna().sum(),
        "bad_date": df["Date"].map(_parse).isna().sum(),
        "bad_price": pd.to_numeric(df["UnitPrice"], errors="coerce").isna().sum(),
        "zero_quantity": (qty == 0).sum(),
        "duplicate": df.duplicated().sum(),
        "return": (bought & (qty < 0)).sum(),
    }
    for kind, count in counts.items():
        expected = MESSY_RATES[kind] * n
        assert 0.5 * expected <= count <= 1.5 * expected, (kind, count)
    assert 0.002 * n < sum(counts.values()) < 0.01 * n
    assert (qty[~bought] > 0).all()  # only purchases carry the junk quantities
    # Every return follows a purchase of the same product by the same customer.
    ts = pd.to_datetime(df["Date"].map(_parse), utc=True)
    for i in np.flatnonzero(bought & (qty < 0)):
        row = df.iloc[i]
        earlier = bought & (df["CustomerID"] == row["CustomerID"]) & (df["ProductCode"] == row["ProductCode"])
        assert ((qty > 0) & earlier & (ts < ts.iloc[i])).any()


def test_small_and_custom_runs() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        generate_transactions(0)
    one = generate_transactions(1, seed=5, end_date=dt.date(2024, 1, 31))
    assert one["CustomerID"].dropna().unique().tolist() == ["0000001"]
    dates = [parsedate_to_datetime(d) for d in one["Date"] if d not in BAD_DATES]
    assert max(d.astimezone(dt.UTC).date() for d in dates) <= dt.date(2024, 1, 31)


def test_bundled_sample_matches_the_generator(csv_path: Path) -> None:
    assert BUNDLED.exists(), "run: python -m steps.sample.generate data/sample/transactions.csv.gz --customers 3750"
    assert BUNDLED.stat().st_size < 3_000_000
    bundled = gzip.decompress(BUNDLED.read_bytes())
    assert 45_000 <= bundled.count(b"\n") - 1 <= 55_000
    assert bundled == gzip.decompress(csv_path.read_bytes()), (
        "data/sample/transactions.csv.gz is stale; regenerate it with "
        "python -m steps.sample.generate data/sample/transactions.csv.gz --customers 3750 --seed 42")
    assert re.match(rb"EventName,ProductCode,", bundled)
