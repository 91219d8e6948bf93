"""Read transaction files into DuckDB as canonical, classified rows.

Every row read gets either no ``quarantine_reason`` (it is used) or exactly
one, checked in the order of ``QUARANTINE_REASONS``. Nothing is dropped:
lines the CSV reader cannot split are counted as ``malformed_line``.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from steps import columns as c
from steps.errors import InputDataError
from steps.formats import InputFormat
from steps.sources import Source

# Internal column names (prefixed so they never collide with the input's own).
SRC_FILE, SRC_ROW = "__source_file", "__source_row"
CUST, ORDER, TS, DAY, AMOUNT, QTY = "__customer_id", "__order_id", "__ts", "__day", "__amount", "__quantity"
IS_RETURN, REASON = "__is_return", "__reason"

QUARANTINE_REASONS = (
    "malformed_line",
    "missing_customer_id",
    "not_a_purchase_event",
    "unparseable_date",
    "unparseable_amount",
    "zero_quantity",
    "duplicate_row",
    "date_after_as_of",
    "return_without_purchase",
)

TEXT_TIMESTAMP_FORMATS = (
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y",
    "%Y%m%d",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y",
)
OFFSET_TIMESTAMP_FORMATS = ("%a, %d %b %Y %H:%M:%S %z", "%d %b %Y %H:%M:%S %z", "%a, %d %b %Y %H:%M %z")


def q(name: str) -> str:
    """Quote an identifier for DuckDB."""
    return '"' + name.replace('"', '""') + '"'


def lit(value: str) -> str:
    """Quote a string literal for DuckDB."""
    return "'" + value.replace("'", "''") + "'"


def connect(memory_limit: str | None = None, temp_directory: str | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection in UTC, spilling to ``temp_directory`` past ``memory_limit``."""
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    if memory_limit:
        con.execute(f"SET memory_limit={lit(memory_limit)}")
    if temp_directory:
        con.execute(f"SET temp_directory={lit(temp_directory)}")
    return con


def _reader_sql(source: Source, fmt: InputFormat) -> str:
    path = lit(str(source.path))
    if source.kind == "parquet":
        return f"read_parquet({path})"
    if fmt.headerless:
        return (
            f"(SELECT {_cdnow_fields()} FROM read_csv({path}, columns={{'line': 'VARCHAR'}}, "
            "header=false, delim='\\x01', quote='', escape='', store_rejects=true))"
        )
    return f"read_csv({path}, all_varchar=true, header=true, ignore_errors=true, store_rejects=true)"


def _cdnow_fields() -> str:
    parts = "string_split_regex(trim(line), '\\s+')"
    names = ("customer_id", "date", "quantity", "amount")
    return ", ".join(f"{parts}[{i + 1}] AS {q(n)}" for i, n in enumerate(names))


def _column_types(con: duckdb.DuckDBPyConnection, reader: str) -> dict[str, str]:
    rows = con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()
    return {row[0]: row[1] for row in rows}


def _timestamp_expr(column: str, dtype: str) -> str:
    col = q(column)
    if dtype.startswith("TIMESTAMP WITH TIME ZONE"):
        return col
    if dtype.startswith(("TIMESTAMP", "DATE")):
        return f"CAST({col} AS TIMESTAMPTZ)"
    text = f"trim(CAST({col} AS VARCHAR))"
    offsets = ", ".join(f"try_strptime({text}, {lit(f)})" for f in OFFSET_TIMESTAMP_FORMATS)
    naive = "[" + ", ".join(lit(f) for f in TEXT_TIMESTAMP_FORMATS) + "]"
    return (
        f"COALESCE(TRY_CAST({text} AS TIMESTAMPTZ), {offsets}, "
        f"CAST(try_strptime({text}, {naive}) AS TIMESTAMPTZ))"
    )


def _number_expr(column: str, dtype: str) -> str:
    if dtype in {"VARCHAR", "BLOB"}:
        return f"TRY_CAST(trim({q(column)}) AS DOUBLE)"
    return f"TRY_CAST({q(column)} AS DOUBLE)"


def _text_expr(column: str | None, dtype: str = "VARCHAR") -> str:
    if column is None:
        return "CAST(NULL AS VARCHAR)"
    return q(column) if dtype == "VARCHAR" else f"CAST({q(column)} AS VARCHAR)"


def canonical_select(source: Source, fmt: InputFormat, types: dict[str, str]) -> str:
    """SELECT of one file: its own columns, where they came from, and the canonical values."""
    cols = fmt.columns
    reader = _reader_sql(source, fmt)
    cust = _text_expr(cols[c.CUSTOMER_ID], types[cols[c.CUSTOMER_ID]])
    ts = _timestamp_expr(cols[c.TIMESTAMP], types[cols[c.TIMESTAMP]])
    qty = _number_expr(cols[c.QUANTITY], types[cols[c.QUANTITY]]) if c.QUANTITY in cols else "NULL"
    if c.AMOUNT in cols:
        amount = _number_expr(cols[c.AMOUNT], types[cols[c.AMOUNT]])
    else:
        amount = f"{qty} * {_number_expr(cols[c.UNIT_PRICE], types[cols[c.UNIT_PRICE]])}"
    order = _text_expr(cols.get(c.ORDER_ID), types.get(cols.get(c.ORDER_ID, ""), "VARCHAR"))
    if fmt.purchase_event:
        event_col = q(cols[c.EVENT])
        is_purchase = f"coalesce(upper(trim({event_col})) = {lit(fmt.purchase_event.upper())}, false)"
    else:
        is_purchase = "true"
    cancelled = f"starts_with({order}, {lit(fmt.cancellation_prefix)})" if fmt.cancellation_prefix else "false"
    contacts = ", ".join(
        f"{_text_expr(cols.get(name), types.get(cols.get(name, ''), 'VARCHAR'))} AS {q('__' + name)}"
        for name in c.CONTACT_COLUMNS
    )
    return f"""
        SELECT raw.*, {lit(source.name)} AS {SRC_FILE}, row_number() OVER () AS {SRC_ROW},
               {cust} AS {CUST}, {order} AS {ORDER}, {ts} AS {TS}, {amount} AS __amount_raw,
               {qty} AS {QTY}, {is_purchase} AS __is_purchase, coalesce({cancelled}, false) AS __cancelled,
               {contacts}
        FROM {reader} AS raw"""


def load_rows(
    con: duckdb.DuckDBPyConnection, sources: Sequence[Source], fmt: InputFormat
) -> list[str]:
    """Create the table ``rows``: every readable row, canonical columns and basic reason.

    Returns the input's own column names (what the quarantine files keep).
    """
    selects = []
    original: list[str] = []
    for source in sources:
        reader = _reader_sql(source, fmt)
        try:
            types = _column_types(con, reader)
        except duckdb.Error as error:
            raise InputDataError(f"cannot read the file: {_first_line(error)}", source.name) from None
        missing = [v for v in fmt.columns.values() if v not in types]
        if missing:
            raise InputDataError(
                f"the file lacks column(s) {', '.join(missing)} that the {fmt.name} format needs",
                source.name,
                "give all files of one input the same columns",
            )
        for name in types:
            if name not in original:
                original.append(name)
        selects.append(canonical_select(source, fmt, types))
    union = "\nUNION ALL BY NAME\n".join(f"({s})" for s in selects)
    own = ", ".join(q(n) for n in original)
    sql = f"""
        CREATE OR REPLACE TEMP TABLE rows AS
        WITH parsed AS ({union}),
        typed AS (
            SELECT *, CAST({TS} AS DATE) AS {DAY},
                   CASE WHEN __cancelled OR __amount_raw < 0 THEN -abs(__amount_raw)
                        ELSE __amount_raw END AS {AMOUNT},
                   (__cancelled OR __amount_raw < 0) AS {IS_RETURN},
                   row_number() OVER (PARTITION BY {own} ORDER BY {SRC_FILE}, {SRC_ROW}) AS __copy
            FROM parsed
        )
        SELECT * EXCLUDE (__copy, __amount_raw, __cancelled), CASE
            WHEN {CUST} IS NULL OR trim({CUST}) = '' THEN 'missing_customer_id'
            WHEN NOT __is_purchase THEN 'not_a_purchase_event'
            WHEN {TS} IS NULL THEN 'unparseable_date'
            WHEN {AMOUNT} IS NULL OR NOT isfinite({AMOUNT}) THEN 'unparseable_amount'
            WHEN {QTY} = 0 THEN 'zero_quantity'
            WHEN __copy > 1 THEN 'duplicate_row'
        END AS {REASON}
        FROM typed"""
    try:
        con.execute(sql)
    except duckdb.Error as error:
        where = sources[0].name if len(sources) == 1 else f"{len(sources)} files"
        raise InputDataError(f"cannot read the transactions: {_first_line(error)}", where) from None
    return original


def malformed_lines(con: duckdb.DuckDBPyConnection) -> list[tuple[str, int, str]]:
    """(file, line, raw text) of every line the CSV reader rejected."""
    try:
        return con.execute(
            "SELECT s.file_path, e.line, e.csv_line FROM reject_errors e "
            "JOIN reject_scans s USING (scan_id) ORDER BY s.file_path, e.line"
        ).fetchall()
    except duckdb.Error:
        return []


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0][:300]
