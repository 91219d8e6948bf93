"""Rows that were not used, with their reason: found in a second, filtered read.

The aggregation pass only counts rows. When some are quarantined (a row-level
reason, an exact duplicate, or a customer with only returns),
:func:`read_flagged_rows` reads the inputs again and keeps the file's own
columns of just those rows and of the flagged customers' rows. Excluded rows
(not purchases) are counted, never written here. :func:`write_quarantine` then names each
quarantined row's reason and writes ``quarantine/rows.parquet`` (the file's own
columns plus ``quarantine_reason``, ``source_file``, ``source_row``) and
``quarantine/malformed_lines.parquet`` (lines the CSV reader could not split).

``source_row`` is the 1-based data row of the file: the header is not counted
(for CSV with a header, the line number in an editor is ``source_row + 1``
unless a quoted field spans lines).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import duckdb

from steps import columns as c
from steps.errors import InputDataError
from steps.features.aggregate import CUSTOMER_ROWS, REPEATED_KEYS, union_sql
from steps.features.parsing import literal
from steps.features.transactions import (
    CUST,
    DUPLICATE_ROW,
    FILE_NO,
    HAS_ID,
    MALFORMED_LINE,
    RAW_ROW,
    REASON,
    RETURN_WITHOUT_PURCHASE,
    ROW_HASH,
    ROW_NO,
    CanonicalSource,
    canonical_select,
    quarantined_sql,
    reason_name_sql,
    row_key_sql,
)

INPUT_FILES = "input_files"
REJECTED_LINES = "rejected_lines"
FLAGGED_CUSTOMERS = "flagged_customers"
DUPLICATE_COPIES = "duplicate_copies"
ROWS_FILE = "rows.parquet"
MALFORMED_FILE = "malformed_lines.parquet"


def register_files(con: duckdb.DuckDBPyConnection, sources: Sequence[CanonicalSource]) -> None:
    """Create ``input_files(file_no, path, name, header_lines)``.

    ``path`` is the local file DuckDB reads, ``name`` the one users know (an S3 URI).
    """
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {INPUT_FILES} (
            file_no INTEGER, path VARCHAR, name VARCHAR, header_lines INTEGER)""")
    if sources:
        con.executemany(
            f"INSERT INTO {INPUT_FILES} VALUES (?, ?, ?, ?)",
            [(s.file_no, str(s.source.path), s.source.name, 0 if s.fmt.headerless else 1) for s in sources],
        )


def collect_rejected_lines(con: duckdb.DuckDBPyConnection) -> int:
    """Create ``rejected_lines`` from DuckDB's CSV reject tables; return how many lines.

    Columns: ``file_no``, ``row_no`` (1-based data row), ``text``, ``error``, and
    ``rows_before`` (how many rows the reader did return before it), which
    turns the reader's row numbers back into data rows.
    """
    try:
        con.execute("SELECT count(*) FROM reject_errors").fetchall()
        errors = f"""
            SELECT f.file_no, CAST(e.line AS BIGINT) - f.header_lines AS row_no,
                   any_value(e.csv_line) AS text,
                   string_agg(DISTINCT e.error_message, '; ' ORDER BY e.error_message) AS error
            FROM reject_errors e JOIN reject_scans s USING (scan_id, file_id)
            JOIN {INPUT_FILES} f ON f.path = s.file_path
            GROUP BY ALL"""
    except duckdb.Error:  # no CSV was read with store_rejects
        errors = "SELECT 0 AS file_no, 0 AS row_no, '' AS text, '' AS error WHERE false"
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {REJECTED_LINES} AS
        SELECT *, row_no - row_number() OVER (PARTITION BY file_no ORDER BY row_no) AS rows_before
        FROM ({errors})""")
    _refuse_runaway_quotes(con)
    return int(con.execute(f"SELECT count(*) FROM {REJECTED_LINES}").fetchall()[0][0])


def _refuse_runaway_quotes(con: duckdb.DuckDBPyConnection) -> None:
    """A quote that never closes swallows every later line into one value: stop, naming its line.

    Quarantining that one rejected "line" would lose all the lines after it
    silently; an unclosed quote on the last line is an ordinary malformed line.
    """
    found = con.execute(f"""
        SELECT f.name, r.row_no + f.header_lines, left(split_part(r.text, chr(10), 1), 60)
        FROM {REJECTED_LINES} r JOIN {INPUT_FILES} f USING (file_no)
        WHERE r.error ILIKE '%unterminated quote%' AND contains(rtrim(r.text, chr(10) || chr(13)), chr(10))
        ORDER BY r.file_no, r.row_no LIMIT 1""").fetchall()
    if found:
        name, line, text = found[0]
        raise InputDataError(
            f"line {line} opens a quote that never closes ({text!r}), so every later line would be read as "
            "part of one value", name,
            'Fix that quote (a quote inside a quoted field is written twice: "") and run again',
        )


def flag_customers(con: duckdb.DuckDBPyConnection, *, suspects: bool = False) -> tuple[int, int]:
    """Create ``flagged_customers``: customers with exact duplicates or only returns.

    With ``suspects``, also the customers whose identical rows are not
    counted yet (``repeated_rows``, see ``steps.features.aggregate``).

    Returns
    -------
    tuple of int
        (rows quarantined by a row-level reason, flagged customers).
    """
    also = " OR repeated_rows > 0" if suspects else ""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {FLAGGED_CUSTOMERS} AS
        SELECT {CUST}, duplicate_rows > 0 AS has_duplicates FROM {CUSTOMER_ROWS}
        WHERE {REASON} = 0 AND (duplicate_rows > 0 OR frequency = 0{also})""")
    bad = con.execute(
        f"SELECT coalesce(sum(n_rows), 0) FROM {CUSTOMER_ROWS} WHERE {quarantined_sql(REASON)}"
    ).fetchall()[0][0]
    flagged = con.execute(f"SELECT count(*) FROM {FLAGGED_CUSTOMERS}").fetchall()[0][0]
    return int(bad), int(flagged)


def read_flagged_rows(
    con: duckdb.DuckDBPyConnection,
    sources: Sequence[CanonicalSource],
    *,
    as_of: dt.date | None,
    contacts: Sequence[str],
    timezone: str | None = None,
) -> list[str]:
    """Second read: the quarantined rows, the flagged customers' rows and the rows whose key is in
    ``repeated_keys`` (see ``steps.features.aggregate``), with their own columns.

    Files with the same columns share one table ``flagged_rows_<n>``; returns
    the table names.
    """
    groups: dict[tuple[tuple[str, str], ...], list[CanonicalSource]] = {}
    for src in sources:
        groups.setdefault(tuple(src.raw_types.items()), []).append(src)
    tables = []
    # CSV row numbers come from the order rows leave the reader: keep it for this read.
    con.execute("SET preserve_insertion_order=true")
    try:
        for number, members in enumerate(groups.values()):
            selects = [
                # store_rejects as in the first read: without it DuckDB's reader (1.x-2.0) drops every line
                # after a malformed quoted one, and the rows read here would not match the counts.
                canonical_select(s, as_of=as_of, contacts=list(contacts), keep_raw=True, store_rejects=True,
                                 timezone=timezone)
                for s in members
            ]
            table = f"flagged_rows_{number}"
            repeated = f"{row_key_sql(CUST, ROW_HASH)} IN (SELECT row_key FROM {REPEATED_KEYS})"
            con.execute(f"""
                CREATE OR REPLACE TEMP TABLE {table} AS
                SELECT * FROM ({union_sql(selects)})
                WHERE {quarantined_sql(REASON)}
                   OR ({REASON} = 0 AND ({CUST} IN (SELECT {CUST} FROM {FLAGGED_CUSTOMERS}) OR {repeated}))""")
            tables.append(table)
    finally:
        con.execute("SET preserve_insertion_order=false")
    return tables


def canonical_rows(tables: Sequence[str]) -> str:
    """The canonical columns of every flagged-rows table, as one relation."""
    return "(" + " UNION ALL ".join(f"SELECT * EXCLUDE ({RAW_ROW}) FROM {t}" for t in tables) + ")"


def _data_row(alias: str) -> str:
    # The reader's n-th row is data row n + (rejected lines before it).
    return (f"{alias}.{ROW_NO} + (SELECT count(*) FROM {REJECTED_LINES} r "
            f"WHERE r.file_no = {alias}.{FILE_NO} AND r.rows_before < {alias}.{ROW_NO})")


def write_quarantine(con: duckdb.DuckDBPyConnection, tables: Sequence[str], folder: Path) -> dict[str, int]:
    """Write the quarantine files; return the number of rows written per reason."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in (folder / ROWS_FILE, folder / MALFORMED_FILE):
        old.unlink(missing_ok=True)
    written: dict[str, int] = {}
    if tables:
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE {DUPLICATE_COPIES} AS
            SELECT {FILE_NO}, {ROW_NO} FROM (
                SELECT {FILE_NO}, {ROW_NO}, row_number() OVER (
                    PARTITION BY {CUST}, {ROW_HASH} ORDER BY {FILE_NO}, {ROW_NO}) AS copy
                FROM {canonical_rows(tables)}
                WHERE {REASON} = 0 AND {HAS_ID}
                  AND {CUST} IN (SELECT {CUST} FROM {FLAGGED_CUSTOMERS} WHERE has_duplicates)
            ) WHERE copy > 1""")
        parts = [f"""
            SELECT unnest(q.{RAW_ROW}),
                   coalesce({reason_name_sql(f'q.{REASON}')},
                            CASE WHEN d.{ROW_NO} IS NOT NULL THEN {literal(DUPLICATE_ROW)}
                                 ELSE {literal(RETURN_WITHOUT_PURCHASE)} END) AS {c.QUARANTINE_REASON},
                   f.name AS {c.SOURCE_FILE}, {_data_row('q')} AS {c.SOURCE_ROW}, q.{FILE_NO} AS __file_no
            FROM {table} q
            JOIN {INPUT_FILES} f ON f.file_no = q.{FILE_NO}
            LEFT JOIN {DUPLICATE_COPIES} d ON d.{FILE_NO} = q.{FILE_NO} AND d.{ROW_NO} = q.{ROW_NO}
            LEFT JOIN {CUSTOMER_ROWS} k ON k.{REASON} = 0 AND k.{CUST} = q.{CUST}
            WHERE {quarantined_sql(f'q.{REASON}')}
               OR (q.{REASON} = 0 AND (d.{ROW_NO} IS NOT NULL OR k.frequency = 0))"""
            for table in tables]
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE quarantined AS
            SELECT * FROM ({' UNION ALL BY NAME '.join(f'({p})' for p in parts)})""")
        counts = con.execute(f"SELECT {c.QUARANTINE_REASON}, count(*) FROM quarantined GROUP BY 1").fetchall()
        written.update({reason: int(n) for reason, n in counts})
        if written:
            con.execute(f"""
                COPY (SELECT * EXCLUDE (__file_no) FROM quarantined ORDER BY __file_no, {c.SOURCE_ROW})
                TO {literal(str(folder / ROWS_FILE))} (FORMAT parquet)""")
        con.execute("DROP TABLE quarantined")
    malformed = int(con.execute(f"SELECT count(*) FROM {REJECTED_LINES}").fetchall()[0][0])
    if malformed:
        con.execute(f"""
            COPY (
                SELECT f.name AS {c.SOURCE_FILE}, r.row_no AS {c.SOURCE_ROW}, r.text AS line_text, r.error,
                       {literal(MALFORMED_LINE)} AS {c.QUARANTINE_REASON}
                FROM {REJECTED_LINES} r JOIN {INPUT_FILES} f USING (file_no)
                ORDER BY r.file_no, r.row_no
            ) TO {literal(str(folder / MALFORMED_FILE))} (FORMAT parquet)""")
        written[MALFORMED_LINE] = written.get(MALFORMED_LINE, 0) + malformed
    return written
