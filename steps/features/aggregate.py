"""Per-customer totals of classified transactions, in one pass over the input.

:func:`aggregate_customers` builds the table ``customer_rows``: one row per
(reason, customer) for usable rows (``reason = 0``) and one row per reason for
the others (customer NULL). It is one hash aggregation by customer with two
distinct counts, the plan DuckDB gives a hand-written ``count(DISTINCT ...)``:
distinct orders with a purchase row (``frequency``) and distinct rows (a
64-bit hash of every column but the customer id). Its cost depends on the
number of rows, orders and customers, not on how many lines an order has.

A customer whose rows are fewer than distinct is one with identical rows.
Identical rows are exact duplicates only when the rows carry an order id
(``dedupe``): those customers (few) are recounted exactly by
:func:`recount_customers` from their rows, which the quarantine read collects
anyway. Without an order id nothing tells identical rows apart from two equal
purchases: every copy counts, and ``identical_rows`` says how many repeated.

Both functions can be called on any subset of the input files (one S3 object
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
    IS_RETURN,
    ORDER,
    REASON,
    ROW_HASH,
)

CUSTOMER_ROWS = "customer_rows"


def union_sql(selects: Sequence[str]) -> str:
    """One relation of several files' canonical rows."""
    return "\nUNION ALL\n".join(f"({s})" for s in selects)


def _contact_names(contacts: Sequence[str]) -> list[str]:
    return [f"{CONTACT_PREFIX}{name}" for name in contacts]


def _latest(column: str) -> str:
    # The value of the latest day (ties: the largest value), as a struct compared field by field.
    return f"max({{'day': {DAY}, 'value': {column}}}) FILTER (WHERE {column} IS NOT NULL) AS {column}"


def _usable(aggregate: str) -> str:
    """Per-customer totals exist for usable rows only (0 for the rows of a reason)."""
    return f"CASE WHEN {REASON} = 0 THEN {aggregate} ELSE 0 END"


def aggregate_customers(
    con: duckdb.DuckDBPyConnection, selects: Sequence[str], contacts: Sequence[str], *, dedupe: bool = True
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
    dedupe : bool
        The rows carry an order id: identical rows are duplicates, counted
        once (``duplicate_rows``; such customers need :func:`recount_customers`).
        Otherwise every copy counts (``identical_rows``).

    Notes
    -----
    Columns: ``reason``, ``cust`` (NULL unless reason is 0), ``n_rows`` (rows
    read, copies included), ``duplicate_rows``, ``identical_rows``,
    ``amount`` (net, in ten-thousandths), ``return_rows``,
    ``first_purchase``, ``last_purchase``, ``last_day`` (last day of any
    row), ``frequency`` (distinct orders with a purchase row),
    ``float_id_rows`` (rows whose id was written as a float, ``17850.0``),
    then the contact structs. Until recounted, a customer with duplicates has
    its copies in ``amount`` and ``return_rows``.
    """
    latest = "".join(f", {_latest(name)}" for name in _contact_names(contacts))
    repeated = f"count(*) - count(DISTINCT {ROW_HASH})"
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {CUSTOMER_ROWS} AS
        SELECT {REASON}, CASE WHEN {REASON} = 0 THEN {CUST} END AS {CUST},
               count(*) AS n_rows,
               CAST({_usable(repeated) if dedupe else '0'} AS BIGINT) AS duplicate_rows,
               CAST({'0' if dedupe else _usable(repeated)} AS BIGINT) AS identical_rows,
               CAST({_usable(f'sum({AMOUNT})')} AS HUGEINT) AS amount,
               CAST({_usable(f'count(*) FILTER (WHERE {IS_RETURN})')} AS BIGINT) AS return_rows,
               min({DAY}) FILTER (WHERE NOT {IS_RETURN}) AS first_purchase,
               max({DAY}) FILTER (WHERE NOT {IS_RETURN}) AS last_purchase,
               max({DAY}) AS last_day,
               CAST({_usable(f'count(DISTINCT {ORDER}) FILTER (WHERE NOT {IS_RETURN})')} AS BIGINT) AS frequency,
               CAST({_usable(f'count(*) FILTER (WHERE {FLOAT_ID})')} AS BIGINT) AS float_id_rows {latest}
        FROM ({union_sql(selects)})
        GROUP BY {REASON}, 2""")


def recount_customers(con: duckdb.DuckDBPyConnection, rows: str, contacts: Sequence[str]) -> int:
    """Recount the customers with duplicate rows exactly, from ``rows``; return how many.

    Parameters
    ----------
    rows : str
        A relation with the canonical columns holding (at least) every usable
        row of the customers whose ``duplicate_rows`` is above 0.

    Each set of identical rows (same customer and row hash) counts once; the
    copies stay in ``n_rows`` and ``duplicate_rows``.
    """
    wanted = f"SELECT {CUST} FROM {CUSTOMER_ROWS} WHERE {REASON} = 0 AND duplicate_rows > 0"
    count = int(con.execute(f"SELECT count(*) FROM ({wanted})").fetchall()[0][0])
    if not count:
        return 0
    latest = "".join(f", {_latest(name)}" for name in _contact_names(contacts))
    once = "".join(f", any_value({name}) AS {name}" for name in _contact_names(contacts))
    con.execute(f"CREATE OR REPLACE TEMP TABLE recount_targets AS {wanted}")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE recounted AS
        WITH distinct_rows AS (
            SELECT {CUST}, {ROW_HASH}, count(*) AS copies, any_value({ORDER}) AS {ORDER},
                   any_value({DAY}) AS {DAY}, any_value({AMOUNT}) AS {AMOUNT},
                   any_value({IS_RETURN}) AS {IS_RETURN}, count(*) FILTER (WHERE {FLOAT_ID}) AS float_ids {once}
            FROM {rows}
            WHERE {REASON} = 0 AND {CUST} IN (SELECT {CUST} FROM recount_targets)
            GROUP BY {CUST}, {ROW_HASH}
        )
        SELECT CAST(0 AS UTINYINT) AS {REASON}, {CUST}, CAST(sum(copies) AS BIGINT) AS n_rows,
               CAST(sum(copies - 1) AS BIGINT) AS duplicate_rows, CAST(0 AS BIGINT) AS identical_rows,
               CAST(sum({AMOUNT}) AS HUGEINT) AS amount,
               CAST(count(*) FILTER (WHERE {IS_RETURN}) AS BIGINT) AS return_rows,
               min({DAY}) FILTER (WHERE NOT {IS_RETURN}) AS first_purchase,
               max({DAY}) FILTER (WHERE NOT {IS_RETURN}) AS last_purchase,
               max({DAY}) AS last_day,
               CAST(count(DISTINCT {ORDER}) FILTER (WHERE NOT {IS_RETURN}) AS BIGINT) AS frequency,
               CAST(sum(float_ids) AS BIGINT) AS float_id_rows {latest}
        FROM distinct_rows GROUP BY {CUST}""")
    con.execute(f"""
        DELETE FROM {CUSTOMER_ROWS} WHERE {REASON} = 0 AND {CUST} IN (SELECT {CUST} FROM recount_targets)""")
    con.execute(f"INSERT INTO {CUSTOMER_ROWS} BY NAME SELECT * FROM recounted")
    con.execute("DROP TABLE recounted")
    con.execute("DROP TABLE recount_targets")
    return count
