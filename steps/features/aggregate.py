"""Per-customer totals of classified transactions, in one pass over the input.

:func:`aggregate_customers` builds the table ``customer_rows``: one row per
(reason, customer) for usable rows (``reason = 0``) and one row per reason for
the others (customer NULL). One read feeds the hash aggregations, the way
DuckDB runs a plain ``count(DISTINCT order)``: usable purchase rows by customer
(count, spend, first and last day: no filters, the bulk of the work), returns
and quarantined rows by reason and customer (few), and the usable rows by
order. Only orders of two or more rows
leave the second one (most orders are one row), with their row count and a
XOR of 32-bit row hashes; a customer's frequency is then its purchase rows
minus the extra rows of its multi-row purchase orders.

Exact duplicate rows share customer, order and every other column, so they
meet in one order group. An order of one row has no duplicate; an order of
two rows whose hashes differ (XOR not 0) has none either. Customers with any
other order (two rows with equal hashes, or three or more rows) are marked
``unresolved_orders > 0`` and :func:`recount_customers` recounts them exactly
from their rows (a second, filtered read), so the result is always exact and
clean data is read once. Two different rows whose 32-bit hashes collide only
cost such a recount.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from steps.features.transactions import AMOUNT, CONTACT_PREFIX, CUST, DAY, IS_RETURN, ORDER, REASON, ROW_HASH

CUSTOMER_ROWS = "customer_rows"


def union_sql(selects: Sequence[str]) -> str:
    """One relation of several files' canonical rows."""
    return "\nUNION ALL\n".join(f"({s})" for s in selects)


def _contact_names(contacts: Sequence[str]) -> list[str]:
    return [f"{CONTACT_PREFIX}{name}" for name in contacts]


def _latest(column: str) -> str:
    # The value of the latest day (ties: the largest value), as a struct compared field by field.
    return f"max({{'day': {DAY}, 'value': {column}}}) FILTER (WHERE {column} IS NOT NULL) AS {column}"


def aggregate_customers(
    con: duckdb.DuckDBPyConnection, selects: Sequence[str], contacts: Sequence[str]
) -> None:
    """Create ``customer_rows`` from the canonical rows of every input file.

    Columns: ``reason``, ``cust`` (NULL unless reason is 0), ``n_rows`` (rows
    read, duplicates included), ``duplicate_rows``, ``amount`` (net, in
    ten-thousandths), ``return_rows``, ``first_purchase``, ``last_purchase``,
    ``last_day`` (last day of any row), ``frequency`` (orders with a purchase
    row), ``unresolved_orders`` and one ``contact_<name>`` struct
    ``{day, value}`` per contact column. Customers without unresolved orders
    have no duplicate rows, so their counts are exact; the others get exact
    counts (``duplicate_rows`` included) from :func:`recount_customers`.

    Usable purchase rows, by far the most, meet the cheapest aggregation (by
    customer, no filters); returns and quarantined rows get their own.
    """
    contact_cols = _contact_names(contacts)
    latest = "".join(f", {_latest(name)}" for name in contact_cols)
    newest = "".join(f", greatest(p.{name}, r.{name}) AS {name}" for name in contact_cols)
    no_contacts = "".join(f", NULL AS {name}" for name in contact_cols)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {CUSTOMER_ROWS} AS
        WITH tx AS ({union_sql(selects)}),
        purchases AS (
            SELECT {CUST}, count(*) AS n_rows, sum({AMOUNT}) AS amount,
                   min({DAY}) AS first_purchase, max({DAY}) AS last_purchase {latest}
            FROM tx WHERE {REASON} = 0 AND NOT {IS_RETURN} GROUP BY {CUST}
        ),
        others AS (
            SELECT {REASON}, CASE WHEN {REASON} = 0 THEN {CUST} END AS {CUST}, count(*) AS n_rows,
                   sum({AMOUNT}) AS amount, max({DAY}) AS last_day {latest}
            FROM tx WHERE {REASON} > 0 OR {IS_RETURN} GROUP BY 1, 2
        ),
        multi_row_orders AS (
            SELECT {CUST}, {IS_RETURN}, count(*) AS n_rows, bit_xor(CAST({ROW_HASH} >> 32 AS UINTEGER)) AS row_xor
            FROM tx WHERE {REASON} = 0 GROUP BY {CUST}, {ORDER}, {IS_RETURN} HAVING count(*) > 1
        ),
        order_counts AS (
            SELECT {CUST}, sum(n_rows - 1) FILTER (WHERE NOT {IS_RETURN}) AS extra_purchase_rows,
                   count(*) FILTER (WHERE n_rows > 2 OR row_xor = 0) AS unresolved_orders
            FROM multi_row_orders GROUP BY 1
        )
        SELECT CAST(0 AS UTINYINT) AS {REASON}, coalesce(p.{CUST}, r.{CUST}) AS {CUST},
               coalesce(p.n_rows, 0) + coalesce(r.n_rows, 0) AS n_rows, CAST(0 AS BIGINT) AS duplicate_rows,
               coalesce(p.amount, 0) + coalesce(r.amount, 0) AS amount, coalesce(r.n_rows, 0) AS return_rows,
               p.first_purchase, p.last_purchase, greatest(p.last_purchase, r.last_day) AS last_day,
               coalesce(p.n_rows, 0) - CAST(coalesce(o.extra_purchase_rows, 0) AS BIGINT) AS frequency,
               coalesce(o.unresolved_orders, 0) AS unresolved_orders {newest}
        FROM purchases p
        FULL JOIN (SELECT * FROM others WHERE {REASON} = 0) r ON r.{CUST} = p.{CUST}
        LEFT JOIN order_counts o ON o.{CUST} = coalesce(p.{CUST}, r.{CUST})
        UNION ALL
        SELECT {REASON}, NULL, n_rows, 0, amount, 0, NULL, NULL, last_day, 0, 0 {no_contacts}
        FROM others WHERE {REASON} > 0""")


def recount_customers(
    con: duckdb.DuckDBPyConnection, rows: str, customers: str, contacts: Sequence[str]
) -> None:
    """Replace the ``customer_rows`` of ``customers`` by an exact count from ``rows``.

    Parameters
    ----------
    rows : str
        A relation with the canonical columns holding (at least) every usable
        row of those customers.
    customers : str
        A relation with one column ``cust``.
    """
    contact_cols = _contact_names(contacts)
    distinct_contacts = "".join(f", any_value({name}) AS {name}" for name in contact_cols)
    per_order = "".join(f", {_latest(name)}" for name in contact_cols)
    per_customer = "".join(f", max({name}) AS {name}" for name in contact_cols)
    con.execute(f"""
        DELETE FROM {CUSTOMER_ROWS} WHERE {REASON} = 0 AND {CUST} IN (SELECT {CUST} FROM {customers})""")
    con.execute(f"""
        INSERT INTO {CUSTOMER_ROWS} BY NAME
        WITH distinct_rows AS (
            SELECT {CUST}, {ORDER}, {IS_RETURN}, {ROW_HASH}, count(*) AS copies,
                   any_value({AMOUNT}) AS {AMOUNT}, any_value({DAY}) AS {DAY} {distinct_contacts}
            FROM {rows}
            WHERE {REASON} = 0 AND {CUST} IN (SELECT {CUST} FROM {customers})
            GROUP BY {CUST}, {ORDER}, {IS_RETURN}, {ROW_HASH}
        ),
        orders AS (
            SELECT CAST(0 AS UTINYINT) AS {REASON}, {CUST}, {ORDER}, {IS_RETURN},
                   count(*) AS distinct_rows, sum(copies) AS n_rows, sum({AMOUNT}) AS amount,
                   min({DAY}) AS first_day, max({DAY}) AS last_day
                   {per_order}
            FROM distinct_rows GROUP BY {CUST}, {ORDER}, {IS_RETURN}
        )
        SELECT {REASON}, {CUST},
               CAST(sum(n_rows) AS BIGINT) AS n_rows,
               CAST(sum(n_rows - distinct_rows) AS BIGINT) AS duplicate_rows,
               sum(amount) AS amount,
               CAST(coalesce(sum(distinct_rows) FILTER (WHERE {IS_RETURN}), 0) AS BIGINT) AS return_rows,
               min(first_day) FILTER (WHERE NOT {IS_RETURN}) AS first_purchase,
               max(last_day) FILTER (WHERE NOT {IS_RETURN}) AS last_purchase,
               max(last_day) AS last_day,
               count(*) FILTER (WHERE NOT {IS_RETURN}) AS frequency,
               CAST(0 AS BIGINT) AS unresolved_orders
               {per_customer}
        FROM orders GROUP BY 1, 2""")
