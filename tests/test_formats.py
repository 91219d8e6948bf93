"""Input formats: detection, column mapping, and reading every format from CSV, CSV.gz and Parquet."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steps import columns as c
from steps.errors import InputDataError
from steps.features.compute import compute_features, open_sources
from steps.features.formats import detect_format, load_mapping_file, parse_column_options, resolve_format
from steps.features.options import FeatureOptions

D = dt.date


def features_of(path: Path, **options) -> tuple[pd.DataFrame, dict]:
    """Features (indexed by customer id) and quality of one input file or folder."""
    sources, skipped = open_sources(str(path), path.parent, options.pop("encoding", None))
    result = compute_features(sources, FeatureOptions(**options), skipped_files=skipped)
    return result.to_pandas().set_index(c.CUSTOMER_ID, drop=False), result.quality


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_gzip(path: Path, text: str) -> Path:
    path = path.with_name(path.name + ".gz")
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(text)
    return path


def write_parquet(path: Path, text: str) -> Path:
    """The same table as Parquet, every column a string (as a CSV reader would give)."""
    lines = list(csv.reader(io.StringIO(text.strip())))
    header, rows = lines[0], lines[1:]
    table = pa.table({name: [row[i] or None for row in rows] for i, name in enumerate(header)})
    path = path.with_suffix(".parquet")
    pq.write_table(table, path)
    return path


WRITERS: dict[str, Callable[[Path, str], Path]] = {
    "csv": write_csv,
    "csv.gz": write_gzip,
    "parquet": write_parquet,
}

# --- detection ---------------------------------------------------------------------------------

GUIDANCE_HEADER = [
    "EventName",
    "ProductCode",
    "ProductName",
    "ProductDescription",
    "UnitPrice",
    "Quantity",
    "CustomerID",
    "Username",
    "ChannelType",
    "Address",
    "City",
    "State",
    "Country",
    "Date",
]


@pytest.mark.parametrize(
    ("header", "first_line", "expected"),
    [
        (GUIDANCE_HEADER, ",".join(GUIDANCE_HEADER), "guidance"),
        (["eventname", "customer id", "date", "quantity", "unit_price"], "", "guidance"),
        (
            [
                "Invoice",
                "StockCode",
                "Description",
                "Quantity",
                "InvoiceDate",
                "Price",
                "Customer ID",
                "Country",
            ],
            "",
            "online-retail",
        ),
        (
            [
                "InvoiceNo",
                "StockCode",
                "Description",
                "Quantity",
                "InvoiceDate",
                "UnitPrice",
                "CustomerID",
                "Country",
            ],
            "",
            "online-retail",
        ),
        ([], "00001 19970101 1 11.77", "cdnow"),
        (["line"], "   00001  19970101   2   29.33", "cdnow"),
        (
            ["customer_id", "order_id", "timestamp", "amount"],
            "customer_id,order_id,timestamp,amount",
            "generic",
        ),
        (["Customer ID", "Order Date", "Total"], "", "generic"),
    ],
)
def test_detect_format(header: list[str], first_line: str, expected: str) -> None:
    assert detect_format(header, first_line) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            ["customer_id", "order_id", "timestamp", "amount"],
            {
                c.CUSTOMER_ID: "customer_id",
                c.ORDER_ID: "order_id",
                c.TIMESTAMP: "timestamp",
                c.AMOUNT: "amount",
            },
        ),
        (
            ["Customer ID", "Invoice No", "Order Date", "Qty", "Unit Price", "E-mail"],
            {
                c.CUSTOMER_ID: "Customer ID",
                c.ORDER_ID: "Invoice No",
                c.TIMESTAMP: "Order Date",
                c.QUANTITY: "Qty",
                c.UNIT_PRICE: "Unit Price",
                c.EMAIL: "E-mail",
            },
        ),
        (
            ["user_id", "created_at", "price"],
            {c.CUSTOMER_ID: "user_id", c.TIMESTAMP: "created_at", c.AMOUNT: "price"},
        ),
    ],
)
def test_generic_columns_are_found_by_name(header: list[str], expected: dict[str, str]) -> None:
    assert resolve_format(header, "", "auto", {}, "f.csv").columns == expected


def test_mapping_overrides_and_is_checked() -> None:
    header = ["Cust", "When", "Total", "customer_id"]
    fmt = resolve_format(header, "", "generic", {c.CUSTOMER_ID: "Cust", c.TIMESTAMP: "When"}, "f.csv")
    assert fmt.columns == {c.CUSTOMER_ID: "Cust", c.TIMESTAMP: "When", c.AMOUNT: "Total"}
    with pytest.raises(InputDataError, match=r"f\.csv: the column mapping names column\(s\) 'cust'.*'Cust'"):
        resolve_format(header, "", "generic", {c.CUSTOMER_ID: "cust"}, "f.csv")
    with pytest.raises(InputDataError, match="unknown canonical column.*revenue"):
        resolve_format(header, "", "generic", {"revenue": "Total"}, "f.csv")
    with pytest.raises(InputDataError, match="unknown format 'excel'"):
        resolve_format(header, "", "excel", {}, "f.csv")


def test_column_options_and_mapping_file(tmp_path: Path) -> None:
    assert parse_column_options(["customer_id=Cust", "amount = Total"]) == {
        "customer_id": "Cust",
        "amount": "Total",
    }
    with pytest.raises(InputDataError, match="is not canonical=source"):
        parse_column_options(["customer_id"])
    good = write_csv(tmp_path / "map.yaml", "customer_id: Cust\ntimestamp: When\n")
    assert load_mapping_file(good) == {"customer_id": "Cust", "timestamp": "When"}
    for text in ("- a\n- b\n", "customer_id: [1, 2]\n", "a: b: c: [\n"):
        with pytest.raises(InputDataError, match="map.yaml"):
            load_mapping_file(write_csv(tmp_path / "map.yaml", text))
    with pytest.raises(InputDataError, match="cannot read the mapping file"):
        load_mapping_file(tmp_path / "missing.yaml")


# --- every format from every file kind ---------------------------------------------------------

# 02:16 at +05:30 is 20:46 UTC the day before; 22:00 at -05:00 is 03:00 UTC the day after.
GUIDANCE_ROWS = [
    ("PURCHASED", "P1", "12.50", "2", "0007", "EMAIL", "u7@example.com", "Mon, 19 Sep 2022 02:16:01 +0530"),
    ("purchased", "P2", "4.00", "1", "0007", "SMS", "+15550100007", "Sun, 02 Oct 2022 22:00:00 -0500"),
    ("Purchased", "P1", "12.50", "-1", "0007", "SMS", "+15550100007", "Tue, 04 Oct 2022 10:00:00 +0000"),
    ("VIEWED", "P3", "30.00", "1", "0007", "EMAIL", "u7@example.com", "Wed, 05 Oct 2022 10:00:00 +0000"),
    ("PURCHASED", "P3", "30.00", "1", "A-9", "EMAIL", "a9@example.com", "Sat, 01 Oct 2022 12:00:00 +0200"),
]
GUIDANCE = ",".join(GUIDANCE_HEADER) + "\n" + "".join(
    f'{event},{code},Mug,d,{price},{qty},{cust},user,{channel},{address},Pune,MH,IN,"{date}"\n'
    for event, code, price, qty, cust, channel, address, date in GUIDANCE_ROWS
)

ONLINE_RETAIL_II = """Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country
489434,85048,LIGHT,12,2009-12-01 07:45:00,6.95,13085.0,United Kingdom
489434,79323P,PINK,12,2009-12-01 07:45:00,6.75,13085.0,United Kingdom
489435,22350,CAT,12,2009-12-03 07:46:00,2.55,13085.0,United Kingdom
C489449,22087,PAPER,-12,2009-12-04 10:33:00,2.95,13085.0,United Kingdom
C489450,22087,PAPER,-6,2009-12-05 10:33:00,2.95,99999.0,Germany
489436,21523,MAT,0,2009-12-05 09:06:00,5.95,12682.0,France
489437,21523,MAT,10,2009-12-05 09:06:00,5.95,12682.0,France
"""

ONLINE_RETAIL_I = """InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country
536365,85123A,HEART,6,12/1/2010 8:26,2.55,17850,United Kingdom
536366,22633,HAND,6,12/1/2010 8:28,1.85,17850,United Kingdom
536367,84879,BIRD,32,12/13/2010 8:34,1.69,13047,United Kingdom
C536379,D,Discount,-1,12/14/2010 9:41,27.5,17850,United Kingdom
536380,22961,JAM,24,12/14/2010 9:41,0.85,,United Kingdom
"""

CDNOW = """00001 19970101  1  11.77
00002 19970112  1  12.00
00002 19970112  5  77.00
00003 19970102  2  20.76
00003 19970330  2  20.76
00003 19970402  2  19.54
"""

GENERIC = """Cust,When,Total,Mail
c-1,2024-03-01,10.00,a@example.com
c-1,2024-03-05T23:30:00-02:00,5.50,b@example.com
C-1,2024-03-02,7.25,
c-2,2024-02-29,100,
"""


def test_guidance(tmp_path: Path) -> None:
    for kind, writer in WRITERS.items():
        features, quality = features_of(writer(tmp_path / f"guidance_{kind.replace('.', '_')}.csv", GUIDANCE))
        assert quality["input_format"] == "guidance"
        assert quality["quarantined_by_reason"] == {}
        assert quality["excluded_by_reason"] == {"not_a_purchase_event": 1}
        assert quality["returns_netted"] == 1
        row = features.loc["0007"]
        assert (row[c.FIRST_PURCHASE], row[c.LAST_PURCHASE]) == (D(2022, 9, 18), D(2022, 10, 3))
        assert row[c.FREQUENCY] == 2  # two purchase days (no order id): 18 Sep and 3 Oct (UTC)
        assert row[c.MONETARY] == pytest.approx(25.0 + 4.0 - 12.5)
        assert quality["as_of_date"] == "2022-10-05"  # the day after the return (the last transaction)
        assert row[c.RECENCY_DAYS] == 2
        assert (row["channel"], row["address"]) == ("SMS", "+15550100007")  # the latest contact
        assert features.loc["A-9", c.FIRST_PURCHASE] == D(2022, 10, 1)


@pytest.mark.parametrize("kind", list(WRITERS))
def test_online_retail_ii(tmp_path: Path, kind: str) -> None:
    features, quality = features_of(WRITERS[kind](tmp_path / "retail.csv", ONLINE_RETAIL_II))
    assert quality["input_format"] == "online-retail"
    assert list(features.index) == ["12682", "13085"]  # whole floats read as integers, as from Parquet
    assert quality["customer_id_note"].startswith("6 rows had a customer id written as a whole float")
    row = features.loc["13085"]
    assert row[c.FREQUENCY] == 2  # invoices 489434 and 489435; the cancellation is not an order
    assert row[c.MONETARY] == pytest.approx(12 * 6.95 + 12 * 6.75 + 12 * 2.55 - 12 * 2.95)
    assert row[c.AVG_ORDER_VALUE] == pytest.approx(row[c.MONETARY] / 2, abs=1e-4)
    assert quality["returns_netted"] == 1
    assert quality["customers_with_only_returns"] == 1  # 99999.0 only cancelled
    assert quality["quarantined_by_reason"] == {"zero_quantity": 1, "return_without_purchase": 1}
    assert quality["rows_read"] == 7 == quality["rows_used"] + quality["rows_quarantined"]


def test_online_retail_i_month_first_dates(tmp_path: Path) -> None:
    features, quality = features_of(write_csv(tmp_path / "retail.csv", ONLINE_RETAIL_I))
    row = features.loc["17850"]
    assert (row[c.FIRST_PURCHASE], row[c.LAST_PURCHASE]) == (D(2010, 12, 1), D(2010, 12, 1))
    assert row[c.FREQUENCY] == 2
    assert row[c.MONETARY] == pytest.approx(6 * 2.55 + 6 * 1.85 - 27.5)
    assert features.loc["13047", c.LAST_PURCHASE] == D(2010, 12, 13)
    assert quality["quarantined_by_reason"] == {"missing_customer_id": 1}
    assert quality["as_of_date"] == "2010-12-15"


SLASHED_HEADER = "customer_id,order_id,timestamp,amount\n"


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_day_first_slashed_dates_are_read_day_first(tmp_path: Path, kind: str) -> None:
    # Rows 1-3 are ambiguous on their own; row 4 (13 January) shows the file is day first.
    text = SLASHED_HEADER + "a,1,01/02/2011,5\na,2,02/03/2011 10:00,6\nb,3,12/01/2011,7\nb,4,13/01/2011,8\n"
    features, quality = features_of(WRITERS[kind](tmp_path / "tx.csv", text))
    assert (features.loc["a", c.FIRST_PURCHASE], features.loc["a", c.LAST_PURCHASE]) == (D(2011, 2, 1), D(2011, 3, 2))
    assert (features.loc["b", c.FIRST_PURCHASE], features.loc["b", c.LAST_PURCHASE]) == (D(2011, 1, 12), D(2011, 1, 13))
    assert quality["rows_used"] == 4 and not quality["quarantined_by_reason"]


def test_ambiguous_slashed_dates_stay_month_first(tmp_path: Path) -> None:
    features, _ = features_of(write_csv(tmp_path / "tx.csv", SLASHED_HEADER + "a,1,01/02/2011,5\n"))
    assert features.loc["a", c.LAST_PURCHASE] == D(2011, 1, 2)


def test_a_file_mixing_date_orders_is_an_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "tx.csv", SLASHED_HEADER + "a,1,13/01/2011,5\nb,2,12/25/2010,6\nc,3,2011-01-05,1\n")
    expected = (r"tx.csv: column 'timestamp' mixes day-first dates \(1 like '13/01/2011'\) "
                r"and month-first dates \(1 like '12/25/2010'\).*YYYY-MM-DD")
    with pytest.raises(InputDataError, match=expected):
        features_of(path)


@pytest.mark.parametrize("kind", ["txt", "txt.gz"])
def test_cdnow(tmp_path: Path, kind: str) -> None:
    path = (
        write_csv(tmp_path / "CDNOW_master.txt", CDNOW)
        if kind == "txt"
        else write_gzip(tmp_path / "CDNOW_master.txt", CDNOW)
    )
    features, quality = features_of(path)
    assert quality["input_format"] == "cdnow"
    assert list(features.index) == ["00001", "00002", "00003"]
    assert features.loc["00002", c.FREQUENCY] == 1  # two lines on one day: one purchase day
    assert features.loc["00002", c.MONETARY] == pytest.approx(89.0)
    assert features.loc["00003", c.FREQUENCY] == 3
    assert quality["as_of_date"] == "1997-04-03"
    assert features.loc["00001", c.RECENCY_DAYS] == (D(1997, 4, 3) - D(1997, 1, 1)).days


def test_cdnow_lines_with_wrong_field_count_are_quarantined(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "cdnow.txt", CDNOW + "00004 19970105 1\n00005 19970105 1 2.00 extra\n")
    _, quality = features_of(path)
    assert quality["quarantined_by_reason"] == {"malformed_line": 2}


@pytest.mark.parametrize("kind", list(WRITERS))
@pytest.mark.parametrize("how", ["options", "yaml"])
def test_generic_with_mapping(tmp_path: Path, kind: str, how: str) -> None:
    mapping = {c.CUSTOMER_ID: "Cust", c.TIMESTAMP: "When", c.AMOUNT: "Total", c.EMAIL: "Mail"}
    if how == "yaml":
        mapping_file = write_csv(
            tmp_path / "mapping.yaml", "\n".join(f"{k}: {v}" for k, v in mapping.items())
        )
        mapping = load_mapping_file(mapping_file)
    features, quality = features_of(WRITERS[kind](tmp_path / "sales.csv", GENERIC), mapping=mapping)
    assert list(features.index) == ["C-1", "c-1", "c-2"]  # case kept: two customers
    row = features.loc["c-1"]
    assert row[c.LAST_PURCHASE] == D(2024, 3, 6)  # 23:30 at -02:00 is 01:30 UTC the next day
    assert row[c.FREQUENCY] == 2 and row[c.MONETARY] == pytest.approx(15.5)
    assert row[c.EMAIL] == "b@example.com"
    assert pd.isna(features.loc["C-1", c.EMAIL])
    assert quality["column_mapping"] == mapping


# --- typed Parquet columns ---------------------------------------------------------------------


def test_parquet_typed_columns(tmp_path: Path) -> None:
    table = pa.table(
        {
            "customer_id": pa.array([7, 7, 12, 3_000_000_000], pa.int64()),
            "order_id": pa.array([1, 2, 1, 9], pa.int32()),
            "timestamp": pa.array(
                [pd.Timestamp("2024-01-01 23:30", tz="America/New_York")] * 2
                + [pd.Timestamp("2024-01-02 01:00", tz="Asia/Tokyo")] * 2
            ),
            "amount": pa.array([10.0, 2.5, 1.0, 4.0]),
        }
    )
    pq.write_table(table, tmp_path / "typed.parquet")
    features, _ = features_of(tmp_path / "typed.parquet")
    assert list(features.index) == ["12", "3000000000", "7"]
    assert features.loc["7", c.LAST_PURCHASE] == D(2024, 1, 2)  # 23:30 EST is 04:30 UTC next day
    assert features.loc["12", c.LAST_PURCHASE] == D(2024, 1, 1)  # 01:00 JST is 16:00 UTC the day before
    assert features.loc["7", c.FREQUENCY] == 2


def test_parquet_float_ids_and_integer_dates(tmp_path: Path) -> None:
    table = pa.table(
        {
            "CustomerID": pa.array([17850.0, 17850.0, 12.5, None]),
            "date": pa.array([20240105, 1_704_499_200, 1_704_499_200_000, 20240105], pa.int64()),
            "amount": pa.array([1.0, 2.0, 3.0, 4.0]),
        }
    )
    pq.write_table(table, tmp_path / "floats.parquet")
    features, quality = features_of(tmp_path / "floats.parquet")
    assert list(features.index) == ["12.5", "17850"]
    assert features.loc["17850", c.FIRST_PURCHASE] == D(2024, 1, 5)  # YYYYMMDD
    assert features.loc["17850", c.LAST_PURCHASE] == D(2024, 1, 6)  # epoch seconds
    assert features.loc["12.5", c.LAST_PURCHASE] == D(2024, 1, 6)  # epoch milliseconds
    assert quality["quarantined_by_reason"] == {"missing_customer_id": 1}


# --- delimiters and encodings ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "encoding"),
    [
        ("semicolon.csv", GENERIC.replace(",", ";").encode(), None),
        ("tabs.tsv", GENERIC.replace(",", "\t").encode(), None),
        ("pipes.txt", GENERIC.replace(",", "|").encode(), None),
        ("bom.csv", b"\xef\xbb\xbf" + GENERIC.encode(), None),
        ("excel_unicode.txt", GENERIC.replace(",", "\t").encode("utf-16"), None),
        ("latin1.csv", GENERIC.replace("c-2", "café").encode("latin-1"), "latin-1"),
        # a C1 byte (0x85) that DuckDB's own latin-1 reader refuses, and Excel-on-Windows text
        ("latin1_c1.csv", GENERIC.replace("c-2", "caf\u00e9\x85").encode("latin-1"), "latin-1"),
        ("windows.csv", GENERIC.replace("c-2", "caf\u00e9 \u201cVIP\u201d \u20ac").encode("cp1252"), "cp1252"),
    ],
)
def test_delimiters_and_encodings(tmp_path: Path, name: str, data: bytes, encoding: str | None) -> None:
    (tmp_path / name).write_bytes(data)
    mapping = {c.CUSTOMER_ID: "Cust", c.TIMESTAMP: "When", c.AMOUNT: "Total"}
    features, quality = features_of(tmp_path / name, mapping=mapping, encoding=encoding)
    assert quality["rows_used"] == 4
    assert len(features) == 3
    if encoding:
        assert any(name.startswith("café") for name in features.index), list(features.index)
    if name == "windows.csv":
        assert "caf\u00e9 \u201cVIP\u201d \u20ac" in features.index


def test_customer_ids_are_kept_exactly(tmp_path: Path) -> None:
    text = (
        'customer_id,timestamp,amount\n0042,2024-01-01,1\n" 0042",2024-01-01,1\n'
        "ABC,2024-01-01,1\nabc,2024-01-01,1\n"
    )
    features, _ = features_of(write_csv(tmp_path / "ids.csv", text))
    assert sorted(features.index) == [" 0042", "0042", "ABC", "abc"]
    assert features[c.CUSTOMER_ID].map(type).eq(str).all()
