"""``quality.json``: every input row accounted for, and the duplicate rule, checked as whole reports.

The reports are written out in full from the inputs (each row's fate is commented), so that any
change of a count, a reason, a key or a note fails. Small inputs: ``make mutation`` runs these
against the mutants of ``steps/features/quality.py`` and ``aggregate.py``.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from steps import columns as c
from steps.errors import RFMError
from steps.features.aggregate import CUSTOMER_ROWS
from steps.features.compute import compute_features, open_sources
from steps.features.formats import InputFormat
from steps.features.options import FeatureOptions
from steps.features.quality import quality_report

AS_OF = dt.date(2024, 2, 1)
FLOAT_NOTE = ("{n} rows had a customer id written as a whole float (like 17850.0); it is read as the integer "
              "(17850), as a typed float column is")

WITH_ORDER_ID = """customer_id,order_id,timestamp,amount
a,1,2024-01-01,10.00
,2,2024-01-02,5.00
a,3,yesterday,5.00
a,1,2024-01-01,10.00
b,4,2024-01-05,-3.00
a,5,2024-01-06,-2.00,x
a,5,2024-01-06,-2.00
c,6,2024-01-07,1.00
c,6,2024-01-07,1.00
c,6,2024-01-07,1.00
c,6,2024-01-07,2.00
d,7,2024-01-08,2.00
d,8,2024-01-09,-5.00
17850.0,9,2024-01-10,4.00
e,10,2024-03-01,9.00
"""
# Row by row: 1 used (a); 2 missing_customer_id; 3 unparseable_date; 4 duplicate_row (of 1);
# 5 return_without_purchase (b only returns); line 6 malformed_line; 7 used, a return netted against a;
# 8 used (c); 9 and 10 duplicate_row (three copies of 8); 11 used (same order as 8, another line);
# 12 used (d); 13 used, a return netted: d's net spend is -3; 14 used, an id written as a float;
# 15 date_after_as_of.


def features(folder: Path, **options: object) -> tuple[pd.DataFrame, dict]:
    sources, skipped = open_sources(str(folder), folder.parent / "work", None)
    result = compute_features(sources, FeatureOptions(**options), skipped_files=skipped)
    return result.to_pandas().set_index(c.CUSTOMER_ID), result.quality


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return folder / name


def test_every_row_of_a_messy_file_is_accounted_for(tmp_path: Path) -> None:
    data = write(tmp_path / "in", "a.csv", WITH_ORDER_ID)
    empty = write(tmp_path / "in", "b.csv", "customer_id,order_id,timestamp,amount\n")
    rfm, quality = features(tmp_path / "in", as_of=AS_OF)
    assert quality == {
        "input_files": [str(data)],  # the files read; the skipped one is listed apart
        "input_format": "generic",
        "column_mapping": {"customer_id": "customer_id", "order_id": "order_id", "timestamp": "timestamp",
                           "amount": "amount"},
        "as_of_date": "2024-02-01",
        "rows_read": 15,
        "rows_used": 7,
        "rows_excluded": 0,
        "excluded_by_reason": {},
        "rows_quarantined": 8,
        "quarantined_by_reason": {"malformed_line": 1, "missing_customer_id": 1, "unparseable_date": 1,
                                  "date_after_as_of": 1, "duplicate_row": 3, "return_without_purchase": 1},
        "identical_rows_kept": 0,
        "returns_netted": 2,
        "customers": 4,
        "customers_with_only_returns": 1,
        "customers_with_net_monetary_le_0": 1,
        "warnings": [],
        "customer_id_note": FLOAT_NOTE.format(n=1),
        "skipped_files": {str(empty): "the file has a header but no rows"},
    }
    assert list(quality)[:6] == ["input_files", "input_format", "column_mapping", "as_of_date", "rows_read",
                                 "rows_used"]
    assert sorted(rfm.index) == ["17850", "a", "c", "d"]
    assert rfm[c.FREQUENCY].to_dict() == {"a": 1, "c": 1, "d": 1, "17850": 1}  # a return is no order
    assert rfm[c.MONETARY].round(2).to_dict() == {"a": 8.0, "c": 3.0, "d": -3.0, "17850": 4.0}
    assert rfm.loc["a", c.FIRST_PURCHASE] == dt.date(2024, 1, 1)


def test_without_an_order_id_identical_rows_are_purchases_and_counted_as_kept(tmp_path: Path) -> None:
    write(tmp_path / "in", "a.csv", "customer_id,timestamp,amount\n"
          "a,2024-01-01,10.00\n"   # a purchase
          "a,2024-01-01,10.00\n"   # the same again: kept (nothing tells it from a second equal purchase)
          "a,2024-01-01,10.00\n"   # and a third
          "a,2024-01-03,5.00\n"
          "b,2024-01-02,7.50\n"
          "b,2024-01-02,-7.50\n")  # b's net spend is 0
    rfm, quality = features(tmp_path / "in", as_of=AS_OF)
    assert {k: quality[k] for k in ("rows_read", "rows_used", "rows_quarantined", "quarantined_by_reason",
                                    "identical_rows_kept", "returns_netted", "customers",
                                    "customers_with_net_monetary_le_0")} == {
        "rows_read": 6, "rows_used": 6, "rows_quarantined": 0, "quarantined_by_reason": {},
        "identical_rows_kept": 2, "returns_netted": 1, "customers": 2, "customers_with_net_monetary_le_0": 1}
    assert "customer_id_note" not in quality and "skipped_files" not in quality and "timezone" not in quality
    assert rfm[c.MONETARY].round(2).to_dict() == {"a": 35.0, "b": 0.0}
    assert rfm[c.FREQUENCY].to_dict() == {"a": 2, "b": 1}  # purchase days without an order id


def test_a_copy_in_another_file_is_a_duplicate_and_a_new_line_of_the_order_is_not(tmp_path: Path) -> None:
    header = "customer_id,order_id,timestamp,amount\n"
    write(tmp_path / "in", "1.csv", header + "a,1,2024-01-01,10.00\na,1,2024-01-01,3.00\n")
    write(tmp_path / "in", "2.csv", header + "a,1,2024-01-01,10.00\na,2,2024-01-02,1.00\nb,3,2024-01-02,2.00\n")
    rfm, quality = features(tmp_path / "in", as_of=AS_OF)
    assert quality["quarantined_by_reason"] == {"duplicate_row": 1}
    assert (quality["rows_read"], quality["rows_used"], quality["customers"]) == (5, 4, 2)
    assert rfm[c.MONETARY].round(2).to_dict() == {"a": 14.0, "b": 2.0}
    assert rfm[c.FREQUENCY].to_dict() == {"a": 2, "b": 1}


def test_excluded_events_are_counted_apart_from_quarantined_rows(tmp_path: Path) -> None:
    source = Path(__file__).parent / "data" / "real" / "guidance_with_cart_events.csv"
    write(tmp_path / "in", "events.csv", source.read_text())
    _, quality = features(tmp_path / "in", as_of=dt.date(2022, 10, 1), timezone="Europe/London")
    assert {k: quality[k] for k in ("rows_read", "rows_used", "rows_excluded", "excluded_by_reason",
                                    "rows_quarantined", "quarantined_by_reason", "timezone")} == {
        "rows_read": 6, "rows_used": 2, "rows_excluded": 3, "excluded_by_reason": {"not_a_purchase_event": 3},
        "rows_quarantined": 1, "quarantined_by_reason": {"unparseable_amount": 1}, "timezone": "Europe/London"}


# --- the accounting check itself -------------------------------------------------------------------


def customer_rows(rows: list[tuple]) -> duckdb.DuckDBPyConnection:
    """A connection holding ``customer_rows`` as the aggregation leaves it (reason, cust, n_rows, ...)."""
    con = duckdb.connect()
    con.execute(f"""CREATE TABLE {CUSTOMER_ROWS} (reason UTINYINT, cust VARCHAR, n_rows BIGINT,
        duplicate_rows BIGINT, identical_rows BIGINT, amount HUGEINT, return_rows BIGINT, frequency BIGINT,
        float_id_rows BIGINT)""")
    if rows:
        con.executemany(f"INSERT INTO {CUSTOMER_ROWS} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return con


def report(con: duckdb.DuckDBPyConnection, **options: object) -> dict:
    arguments = {"files": ["in/a.csv"], "skipped_files": {}, "fmt": InputFormat("generic", {}), "as_of": AS_OF,
                 "malformed_lines": 0, **options}
    return quality_report(con, **arguments)


ROWS = [  # reason, customer, rows, duplicates, identical, amount, returns, frequency, float ids
    (0, "a", 5, 1, 0, 100, 1, 2, 0),  # 4 used (one copy), one return netted
    (0, "b", 2, 0, 1, 0, 1, 1, 2),  # net 0, one identical row kept, 2 float ids
    (0, "r", 3, 1, 0, -10, 2, 0, 0),  # returns only: 2 rows return_without_purchase, 1 duplicate
    (2, None, 4, 0, 0, 0, 0, 0, 0),  # not_a_purchase_event: excluded
    (3, None, 1, 0, 0, 0, 0, 0, 0),  # missing_customer_id
]


def test_the_report_adds_up_the_aggregated_rows() -> None:
    quality = report(customer_rows(ROWS), malformed_lines=2, warnings=["look"], timezone="UTC")
    assert quality == {
        "input_files": ["in/a.csv"], "input_format": "generic", "column_mapping": {}, "as_of_date": "2024-02-01",
        "rows_read": 17, "rows_used": 6, "rows_excluded": 4, "excluded_by_reason": {"not_a_purchase_event": 4},
        "rows_quarantined": 7,
        "quarantined_by_reason": {"malformed_line": 2, "missing_customer_id": 1, "duplicate_row": 2,
                                  "return_without_purchase": 2},
        "identical_rows_kept": 1, "returns_netted": 2, "customers": 2, "customers_with_only_returns": 1,
        "customers_with_net_monetary_le_0": 1, "warnings": ["look"], "customer_id_note": FLOAT_NOTE.format(n=2),
        "timezone": "UTC",
    }


def test_an_empty_aggregation_reports_zeros() -> None:
    quality = report(customer_rows([]), skipped_files={"in/a.csv": "the file is empty"})
    assert {k: quality[k] for k in ("rows_read", "rows_used", "rows_excluded", "rows_quarantined", "customers",
                                    "quarantined_by_reason", "excluded_by_reason", "skipped_files")} == {
        "rows_read": 0, "rows_used": 0, "rows_excluded": 0, "rows_quarantined": 0, "customers": 0,
        "quarantined_by_reason": {}, "excluded_by_reason": {}, "skipped_files": {"in/a.csv": "the file is empty"}}


@pytest.mark.parametrize("rows_in_files", [16, 18])
def test_rows_the_files_say_they_hold_but_the_reader_did_not_return_are_a_bug_report(rows_in_files: int) -> None:
    with pytest.raises(RFMError) as caught:
        report(customer_rows(ROWS), malformed_lines=2, rows_in_files=rows_in_files, files=["x.parquet", "y.parquet"])
    assert caught.value.what == (f"17 rows read ({rows_in_files} in the files' metadata) but 6 used, "
                                 "4 excluded and 7 quarantined")
    assert caught.value.where == "x.parquet, y.parquet"
    assert caught.value.fix == "Report this as a bug, with the input if you can"
    assert report(customer_rows(ROWS), malformed_lines=2, rows_in_files=17)["rows_read"] == 17


def test_rows_that_fall_out_of_the_accounting_are_a_bug_report() -> None:
    broken = [*ROWS, (200, None, 3, 0, 0, 0, 0, 0, 0)]  # rows of a reason code the report does not know
    with pytest.raises(RFMError) as caught:
        report(customer_rows(broken))
    assert caught.value.what == "18 rows read (None in the files' metadata) but 6 used, 4 excluded and 5 quarantined"


# --- the duplicate rule, whatever the files and whichever id tells purchases apart ---------------------------------

TWO_FILES = (  # (customer, order, day, amount) per file; a's first line is in both files, c's line three times
    [("a", "1", "2024-01-01", 10.0), ("a", "1", "2024-01-01", 3.0), ("c", "6", "2024-01-07", 1.0),
     ("c", "6", "2024-01-07", 1.0), ("c", "6", "2024-01-07", 1.0)],
    [("a", "1", "2024-01-01", 10.0), ("a", "2", "2024-01-02", 1.0), ("b", "3", "2024-01-02", 2.0)],
)


def write_two_files(folder: Path, kind: str, id_column: str | None) -> None:
    for number, rows in enumerate(TWO_FILES, start=1):
        frame = pd.DataFrame(rows, columns=["customer_id", id_column or "order_id", "timestamp", "amount"])
        if id_column is None:
            frame = frame.drop(columns="order_id")
        folder.mkdir(parents=True, exist_ok=True)
        if kind == "parquet":
            frame["timestamp"] = pd.to_datetime(frame["timestamp"])
            frame.to_parquet(folder / f"{number}.parquet", index=False)
        else:
            frame.to_csv(folder / f"{number}.csv", index=False)


@pytest.mark.parametrize("kind", ["csv", "parquet"])
@pytest.mark.parametrize("id_column", ["order_id", "event_id", "line_id"])
def test_with_an_id_column_identical_rows_count_once_in_csv_and_parquet(tmp_path: Path, kind: str,
                                                                        id_column: str) -> None:
    """An order, event or line id tells purchases apart: identical rows are copies, counted once."""
    write_two_files(tmp_path / "in", kind, id_column)
    rfm, quality = features(tmp_path / "in", as_of=AS_OF)
    assert {k: quality[k] for k in ("rows_read", "rows_used", "quarantined_by_reason", "identical_rows_kept")} == {
        "rows_read": 8, "rows_used": 5, "quarantined_by_reason": {"duplicate_row": 3}, "identical_rows_kept": 0}
    assert rfm[c.MONETARY].round(2).to_dict() == {"a": 14.0, "b": 2.0, "c": 1.0}


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_without_an_id_column_every_identical_row_counts_in_csv_and_parquet(tmp_path: Path, kind: str) -> None:
    """Nothing tells identical rows from equal purchases: all are used, and the copies are reported as kept."""
    write_two_files(tmp_path / "in", kind, None)
    rfm, quality = features(tmp_path / "in", as_of=AS_OF)
    assert {k: quality[k] for k in ("rows_read", "rows_used", "quarantined_by_reason", "identical_rows_kept")} == {
        "rows_read": 8, "rows_used": 8, "quarantined_by_reason": {}, "identical_rows_kept": 3}
    assert rfm[c.MONETARY].round(2).to_dict() == {"a": 24.0, "b": 2.0, "c": 3.0}


def test_a_duplicate_return_is_netted_once(tmp_path: Path) -> None:
    """A return delivered twice with its order id is one return: the spend and the returns netted count it once."""
    write(tmp_path / "in", "a.csv", "customer_id,order_id,timestamp,amount\n"
          "a,1,2024-01-01,10.00\n"
          "a,2,2024-01-02,-4.00\n"
          "a,2,2024-01-02,-4.00\n")
    rfm, quality = features(tmp_path / "in", as_of=AS_OF)
    assert (quality["returns_netted"], quality["quarantined_by_reason"]) == (1, {"duplicate_row": 1})
    assert rfm[c.MONETARY].round(2).to_dict() == {"a": 6.0}


def test_a_cdnow_line_without_four_fields_is_a_malformed_line(tmp_path: Path) -> None:
    """Headerless CDNOW lines are split after reading: a short one is quarantined as malformed and still counted."""
    write(tmp_path / "in", "cdnow.txt", "00001 19970101  1  11.77\n"
          "00002 19970112  1  12.00\n"
          "00002 19970112  5\n"  # three fields: no amount
          "00003 19970102  2  20.76\n")
    _, quality = features(tmp_path / "in", as_of=dt.date(1998, 1, 1))
    assert quality["input_format"] == "cdnow"
    assert {k: quality[k] for k in ("rows_read", "rows_used", "rows_quarantined", "quarantined_by_reason")} == {
        "rows_read": 4, "rows_used": 3, "rows_quarantined": 1, "quarantined_by_reason": {"malformed_line": 1}}


MIXED_IDS = {
    "a.csv": "customer_id,order_id,timestamp,amount\n"
             "c1,o1,2024-01-01,10.00\n"  # used
             "c1,o1,2024-01-01,10.00\n"  # duplicate_row: the same order line twice
             "c2,o2,2024-01-02,5.00\n",
    "b.csv": "customer_id,timestamp,amount\n"  # no id column: identical rows are two purchases
             "c1,2024-01-01,10.00\n"
             "c1,2024-01-01,10.00\n"
             "c2,2024-01-02,5.00\n",
    "c.csv": "customer_id,order_id,timestamp,amount\n"
             "c3,,2024-01-03,4.00\n"  # an empty order id tells nothing apart either: both kept
             "c3,,2024-01-03,4.00\n"
             "c3,o9,2024-01-04,1.00\n",
}


def _state_features(folder: Path, work: Path) -> tuple[pd.DataFrame, dict]:
    from steps.features.fold import run_history
    from steps.features.history import list_history
    from steps.features.state import StateStore

    out = work / "out"
    run_history(list_history(str(folder)), StateStore(str(work / "state")), out,
                FeatureOptions(as_of=AS_OF, memory_limit="500MB", threads=1))
    frame = pd.read_parquet(out / "rfm.parquet").set_index(c.CUSTOMER_ID)
    return frame, json.loads((out / "quality.json").read_text())


@pytest.mark.parametrize("path", ["one pass", "incremental state"])
def test_each_row_is_judged_by_its_own_id_in_a_folder_mixing_files(tmp_path: Path, path: str) -> None:
    for name, text in MIXED_IDS.items():
        write(tmp_path / "in", name, text)
    if path == "one pass":
        rfm, quality = features(tmp_path / "in", as_of=AS_OF)
    else:
        rfm, quality = _state_features(tmp_path / "in", tmp_path / "work")
    assert {k: quality[k] for k in ("rows_read", "rows_used", "rows_quarantined", "quarantined_by_reason",
                                    "identical_rows_kept")} == {
        "rows_read": 9, "rows_used": 8, "rows_quarantined": 1, "quarantined_by_reason": {"duplicate_row": 1},
        "identical_rows_kept": 2}
    assert rfm[c.MONETARY].round(2).to_dict() == {"c1": 30.0, "c2": 10.0, "c3": 9.0}
    assert rfm[c.FREQUENCY].to_dict() == {"c1": 2, "c2": 2, "c3": 2}


def test_an_order_line_repeated_in_another_object_is_counted_there_by_the_incremental_state(tmp_path: Path) -> None:
    """The documented assumption (an order's lines arrive in one object): each object is judged alone,
    and the quarantine holds exactly what quality.json counts."""
    write(tmp_path / "in", "a.csv", MIXED_IDS["a.csv"])
    write(tmp_path / "in", "d.csv", "customer_id,order_id,timestamp,amount\nc1,o1,2024-01-01,10.00\n")
    rfm, quality = _state_features(tmp_path / "in", tmp_path / "work")
    assert (quality["rows_read"], quality["quarantined_by_reason"]) == (4, {"duplicate_row": 1})
    assert rfm[c.MONETARY].round(2).to_dict() == {"c1": 20.0, "c2": 5.0}
    assert len(pd.read_parquet(tmp_path / "work" / "out" / "quarantine" / "rows.parquet")) == 1


def test_any_one_of_several_ids_makes_identical_rows_duplicates(tmp_path: Path) -> None:
    write(tmp_path / "in", "lines.csv", "customer_id,order_id,line_id,timestamp,amount\n"
          "a,,L1,2024-01-01,10.00\n"   # no order id, but a line id: ...
          "a,,L1,2024-01-01,10.00\n"   # ... so this is a copy (duplicate_row)
          "b,,,2024-01-02,4.00\n"      # neither id: ...
          "b,,,2024-01-02,4.00\n")     # ... two equal purchases, both kept
    rfm, quality = features(tmp_path / "in", as_of=AS_OF)
    assert (quality["quarantined_by_reason"], quality["identical_rows_kept"]) == ({"duplicate_row": 1}, 1)
    assert rfm[c.MONETARY].round(2).to_dict() == {"a": 10.0, "b": 8.0}
