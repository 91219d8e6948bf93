"""Per-customer totals of classified transactions: distinct rows, then customers.

:func:`aggregate_customers` builds the table ``customer_rows``: one row per
(reason, customer) for usable rows (``reason = 0``) and one row per reason for
the others (customer NULL). It is two plain hash aggregations, the plan a
hand-written ``SELECT DISTINCT`` followed by ``GROUP BY customer`` gets, so its
cost depends on the number of rows and customers, not on how many lines an
order has:

1. usable rows by (customer, row hash): one group per distinct row, with its
   number of copies. The row hash covers every column but the customer id
   (the order id included), so two rows of one customer fall in one group
   exactly when they are identical (a false match needs a 64-bit collision
   between two rows of one customer).
2. distinct rows by customer: rows, spend, first and last purchase day,
   returns, and ``count(DISTINCT order)`` of the purchase rows.

Identical rows are exact duplicates (quarantined, counted once) only when the
rows carry an order id (``dedupe``); without one nothing tells them apart from
two equal purchases, so every copy counts and ``identical_rows`` says how many
repeated.

The function can be called on any subset of the input files (one S3 object at
a time, say): the schema of ``customer_rows`` does not depend on the input.
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
        once (``duplicate_rows``). Otherwise every copy counts
        (``identical_rows``).

    Notes
    -----
    Columns: ``reason``, ``cust`` (NULL unless reason is 0), ``n_rows`` (rows
    read, copies included), ``duplicate_rows``, ``identical_rows``,
    ``amount`` (net, in ten-thousandths), ``return_rows``,
    ``first_purchase``, ``last_purchase``, ``last_day`` (last day of any
    row), ``frequency`` (distinct orders with a purchase row),
    ``float_id_rows`` (rows whose id was written as a float, ``17850.0``),
    then the contact structs.
    """
    contact_cols = _contact_names(contacts)
    any_contacts = "".join(f", any_value({name}) AS {name}" for name in contact_cols)
    latest = "".join(f", {_latest(name)}" for name in contact_cols)
    no_contacts = "".join(f", NULL AS {name}" for name in contact_cols)
    counted = "1" if dedupe else "copies"  # how many of a group's copies are used
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {CUSTOMER_ROWS} AS
        WITH tx AS ({union_sql(selects)}),
        distinct_rows AS (
            SELECT {CUST}, count(*) AS copies, count(*) FILTER (WHERE {FLOAT_ID}) AS float_ids,
                   any_value({ORDER}) AS {ORDER}, any_value({DAY}) AS {DAY},
                   any_value({AMOUNT}) AS {AMOUNT}, any_value({IS_RETURN}) AS {IS_RETURN} {any_contacts}
            FROM tx WHERE {REASON} = 0 GROUP BY {CUST}, {ROW_HASH}
        ),
        others AS (
            SELECT {REASON}, count(*) AS n_rows, sum({AMOUNT}) AS amount, max({DAY}) AS last_day
            FROM tx WHERE {REASON} > 0 GROUP BY 1
        )
        SELECT CAST(0 AS UTINYINT) AS {REASON}, {CUST},
               CAST(sum(copies) AS BIGINT) AS n_rows,
               CAST({'sum(copies - 1)' if dedupe else '0'} AS BIGINT) AS duplicate_rows,
               CAST({'0' if dedupe else 'sum(copies - 1)'} AS BIGINT) AS identical_rows,
               CAST(sum({AMOUNT} * {counted}) AS HUGEINT) AS amount,
               CAST(coalesce(sum({counted}) FILTER (WHERE {IS_RETURN}), 0) AS BIGINT) AS return_rows,
               min({DAY}) FILTER (WHERE NOT {IS_RETURN}) AS first_purchase,
               max({DAY}) FILTER (WHERE NOT {IS_RETURN}) AS last_purchase,
               max({DAY}) AS last_day,
               count(DISTINCT {ORDER}) FILTER (WHERE NOT {IS_RETURN}) AS frequency,
               CAST(sum(float_ids) AS BIGINT) AS float_id_rows {latest}
        FROM distinct_rows GROUP BY {CUST}
        UNION ALL
        SELECT {REASON}, NULL, n_rows, 0, 0, CAST(amount AS HUGEINT), 0, NULL, NULL, last_day, 0, 0 {no_contacts}
        FROM others""")
