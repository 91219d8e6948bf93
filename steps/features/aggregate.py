"""Per-customer totals of classified transactions, and the exact count of identical rows.

:func:`aggregate_customers` builds the table ``customer_rows``: one row per
(reason, customer) for usable rows (``reason = 0``) and one row per reason for
the others (customer NULL), in one hash aggregation by customer with one
distinct count (orders with a purchase row, ``frequency``). Its cost depends
on the number of rows, orders and customers, not on how many lines an order
has.

Identical rows (same customer and ``row_hash``) are found apart from it, by
one of two exact checks, so the big aggregation never carries a distinct count
of rows:

- all inputs Parquet: :func:`find_repeated_keys` reads the files again (a
  columnar read is cheap) and keeps the 64-bit keys ``hash(cust, row_hash)``
  seen more than once (``repeated_keys``, usually empty): every set of
  identical rows has its key there;
- otherwise (CSV, read once): the aggregation also counts distinct
  ``row_hash`` per customer (``repeated_rows``: rows minus distinct rows), and
  such customers are suspects.

Either way the suspects' rows come back with the quarantine read, and
:func:`correct_identical_rows` counts each set of identical rows exactly.
Identical rows are exact duplicates only when they carry an id (``has_id``: a
non-empty order, event or line id): the copies leave ``amount`` and
``return_rows`` and are counted in ``duplicate_rows``. Without one nothing tells
identical rows apart from two equal purchases: every copy counts, and
``identical_rows`` says how many repeated. The rule is per row, so a folder may
mix files with and without ids. Removing a copy never changes a customer's orders, days or
contacts (one copy stays), so the correction is a subtraction.

All functions can be called on any subset of the input files (one S3 object
at a time, say): the schema of ``customer_rows`` does not depend on the input.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from steps.features.transactions import (
    AMOUNT,
    CONTACT_PREFIX,
    CUST,
    DAY,
    FLOAT_ID,
    HAS_ID,
    IS_RETURN,
    ORDER,
    REASON,
    ROW_HASH,
)

CUSTOMER_ROWS = "customer_rows"
REPEATED_KEYS = "repeated_keys"

# The columns of ``customer_rows`` after ``reason`` and ``cust``, in order, with their DuckDB types and how two
# rows of one customer add up (:func:`aggregate_customers` makes them; the incremental state stores and merges
# them, steps.features.fold; the Spark engine loads its rows into them). The contact structs follow; the one-pass
# CSV check adds ``repeated_rows`` (see the module docstring), which nothing else keeps.
CUSTOMER_TOTALS: tuple[tuple[str, str, str], ...] = (
    ("n_rows", "BIGINT", "sum"),
    ("duplicate_rows", "BIGINT", "sum"),
    ("identical_rows", "BIGINT", "sum"),
    ("amount", "HUGEINT", "sum"),
    ("return_rows", "BIGINT", "sum"),
    ("first_purchase", "DATE", "min"),
    ("last_purchase", "DATE", "max"),
    ("last_day", "DATE", "max"),
    ("frequency", "BIGINT", "sum"),
    ("float_id_rows", "BIGINT", "sum"),
)
KEY_TYPES = ((REASON, "UTINYINT"), (CUST, "VARCHAR"))
CONTACT_TYPE = "STRUCT(day DATE, value VARCHAR)"  # a contact's value on its latest day


def contact_columns(contacts: Sequence[str]) -> list[str]:
    """The ``contact_<name>`` columns of ``customer_rows`` for these contact names."""
    return [f"{CONTACT_PREFIX}{name}" for name in contacts]


def customer_rows_columns(contacts: Sequence[str]) -> list[tuple[str, str]]:
    """``customer_rows``' columns (name, DuckDB type), ``repeated_rows`` aside, with these contacts."""
    return [*KEY_TYPES, *((name, kind) for name, kind, _ in CUSTOMER_TOTALS),
            *((name, CONTACT_TYPE) for name in contact_columns(contacts))]


def union_sql(selects: Sequence[str]) -> str:
    """One relation of several files' canonical rows."""
    return "\nUNION ALL\n".join(f"({s})" for s in selects)


def _latest(column: str) -> str:
    # The value of the latest day (ties: the largest value), as a struct compared field by field.
    return f"max({{'day': {DAY}, 'value': {column}}}) FILTER (WHERE {column} IS NOT NULL) AS {column}"


def _usable(aggregate: str) -> str:
    """Per-customer totals exist for usable rows only (0 for the rows of a reason)."""
    return f"CASE WHEN {REASON} = 0 THEN {aggregate} ELSE 0 END"


def aggregate_customers(
    con: duckdb.DuckDBPyConnection, selects: Sequence[str], contacts: Sequence[str], *, count_repeats: bool = True
) -> None:
    """Create ``customer_rows`` from the canonical rows of ``selects`` (any subset of the input files).

    Parameters
    ----------
    con : DuckDBPyConnection
        Where the table is made.
    selects : sequence of str
        :func:`~steps.features.transactions.canonical_select` of each file.
    contacts : sequence of str
        Contact column names (each becomes a ``contact_<name>`` struct ``{day, value}``).
    count_repeats : bool
        Count distinct rows per customer (``repeated_rows``); leave it to
        :func:`find_repeated_keys` when the inputs are Parquet.

    Notes
    -----
    Columns: ``reason``, ``cust`` (NULL unless reason is 0), ``n_rows`` (rows
    read, copies included), ``duplicate_rows`` and ``identical_rows`` (0 until
    :func:`correct_identical_rows`), ``repeated_rows``, ``amount`` (net, in
    ten-thousandths), ``return_rows``, ``first_purchase``,
    ``last_purchase``, ``last_day`` (last day of any row), ``frequency``
    (distinct orders with a purchase row), ``float_id_rows`` (rows whose id
    was written as a float, ``17850.0``), then the contact structs.
    """
    latest = "".join(f", {_latest(name)}" for name in contact_columns(contacts))
    repeated = _usable(f"count(*) - count(DISTINCT {ROW_HASH})") if count_repeats else "0"
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {CUSTOMER_ROWS} AS
        SELECT {REASON}, CASE WHEN {REASON} = 0 THEN {CUST} END AS {CUST},
               count(*) AS n_rows,
               CAST(0 AS BIGINT) AS duplicate_rows, CAST(0 AS BIGINT) AS identical_rows,
               CAST({repeated} AS BIGINT) AS repeated_rows,
               CAST({_usable(f'sum({AMOUNT})')} AS HUGEINT) AS amount,
               CAST({_usable(f'count(*) FILTER (WHERE {IS_RETURN})')} AS BIGINT) AS return_rows,
               min({DAY}) FILTER (WHERE NOT {IS_RETURN}) AS first_purchase,
               max({DAY}) FILTER (WHERE NOT {IS_RETURN}) AS last_purchase,
               max({DAY}) AS last_day,
               CAST({_usable(f'count(DISTINCT {ORDER}) FILTER (WHERE NOT {IS_RETURN})')} AS BIGINT) AS frequency,
               CAST({_usable(f'count(*) FILTER (WHERE {FLOAT_ID})')} AS BIGINT) AS float_id_rows {latest}
        FROM ({union_sql(selects)})
        GROUP BY {REASON}, 2""")


def find_repeated_keys(con: duckdb.DuckDBPyConnection, key_selects: Sequence[str]) -> int:
    """Create ``repeated_keys``: the row keys seen more than once in ``key_selects``; return how many.

    ``key_selects`` give one column ``row_key``
    (:func:`~steps.features.transactions.row_key_select`). Identical rows have
    equal keys, so a row outside ``repeated_keys`` has no copy; a key there
    may still be two different rows whose hashes collide, which
    :func:`correct_identical_rows` tells apart.
    """
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {REPEATED_KEYS} AS
        SELECT row_key FROM ({union_sql(key_selects)}) GROUP BY row_key HAVING count(*) > 1""")
    return int(con.execute(f"SELECT count(*) FROM {REPEATED_KEYS}").fetchall()[0][0])


def no_repeated_keys(con: duckdb.DuckDBPyConnection) -> None:
    """An empty ``repeated_keys`` (the CSV check counts ``repeated_rows`` instead)."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {REPEATED_KEYS} (row_key UBIGINT)")


def correct_identical_rows(con: duckdb.DuckDBPyConnection, rows: str) -> int:
    """Count each set of identical usable rows in ``rows`` exactly; update ``customer_rows``; return the copies.

    Identical rows that carry an id (``has_id``: a non-empty order, event or line id) are one row
    written more than once: the copies beyond the first are duplicates (``duplicate_rows``) and
    leave ``amount`` and ``return_rows``. Identical rows without one stay (``identical_rows``).
    Each set is judged by its own rows, so files with and without ids can be mixed.

    Parameters
    ----------
    rows : str
        A relation with the canonical columns holding every copy of every set
        of identical usable rows (the quarantine read of the suspects).
    """
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE identical_copies AS
        SELECT {CUST}, CAST(sum(copies - 1) AS BIGINT) AS copies,
               CAST(coalesce(sum(copies - 1) FILTER (WHERE {HAS_ID}), 0) AS BIGINT) AS duplicates,
               CAST(coalesce(sum((copies - 1) * {AMOUNT}) FILTER (WHERE {HAS_ID}), 0) AS HUGEINT) AS amount,
               CAST(coalesce(sum(copies - 1) FILTER (WHERE {HAS_ID} AND {IS_RETURN}), 0) AS BIGINT) AS return_rows
        FROM (SELECT {CUST}, count(*) AS copies, any_value({AMOUNT}) AS {AMOUNT},
                     any_value({IS_RETURN}) AS {IS_RETURN}, any_value({HAS_ID}) AS {HAS_ID}
              FROM {rows} WHERE {REASON} = 0 GROUP BY {CUST}, {ROW_HASH} HAVING count(*) > 1)
        GROUP BY {CUST}""")
    copies = int(con.execute("SELECT coalesce(sum(copies), 0) FROM identical_copies").fetchall()[0][0])
    if copies:
        con.execute(f"""
            UPDATE {CUSTOMER_ROWS} AS k
            SET duplicate_rows = i.duplicates, identical_rows = i.copies - i.duplicates,
                amount = k.amount - i.amount, return_rows = k.return_rows - i.return_rows
            FROM identical_copies i WHERE k.{REASON} = 0 AND k.{CUST} = i.{CUST}""")
    con.execute("DROP TABLE identical_copies")
    return copies
