"""One input file's rows as canonical, classified transactions (DuckDB SQL).

:func:`canonical_select` turns a file into rows of

``reason`` (UTINYINT)
    0 when the row is usable, else the 1-based index of its reason in
    ``ROW_REASONS``, the first that applies in that order.
``cust``, ``order_key``
    The customer id exactly as written (as text), and what makes an order:
    the order id, or the UTC day for formats without one (and for rows whose
    order id is empty).
``day``
    The calendar day in UTC, or in the business time zone when one is given.
``amount``
    Signed money in ten-thousandths (BIGINT): returns and cancellations are
    negative.
``float_id``
    The customer id was written as a float (``17850.0``), read as ``17850``.
``is_return``, ``row_hash``
    Whether the row is a return or cancellation, and a 64-bit hash of every
    column but the customer id (rows of one customer with equal hashes are
    identical).

:func:`row_key_select` reads just the key of each row (:func:`row_key_sql` of
the customer id and ``row_hash``), for the check for identical rows.

Rows are never dropped here: every row the reader returns gets a reason or 0.
Lines the CSV reader itself rejects are counted separately (``malformed_line``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from steps import columns as c
from steps.features.formats import CDNOW_COLUMNS, InputFormat
from steps.features.parsing import (
    EARLIEST_DAY,
    amount_units_expr,
    blank_expr,
    customer_id_expr,
    day_expr,
    float_id_expr,
    literal,
    number_expr,
    quote,
    text_expr,
)
from steps.features.sources import Source

# Row-level reasons, in the order they are checked; the code of a reason is its index + 1.
ROW_REASONS = (
    "malformed_line",
    "not_a_purchase_event",
    "missing_customer_id",
    "unparseable_date",
    "unparseable_amount",
    "zero_quantity",
    "date_after_as_of",
)
# Rows that are fine but not purchases: excluded (counted in quality.json), never quarantined.
EXCLUSION_REASONS = ("not_a_purchase_event",)
# Every reason quality.json and quarantine/ can name, in reporting order.
QUARANTINE_REASONS = (
    *(r for r in ROW_REASONS if r not in EXCLUSION_REASONS), "duplicate_row", "return_without_purchase",
)
MALFORMED_LINE = "malformed_line"
DUPLICATE_ROW = "duplicate_row"
RETURN_WITHOUT_PURCHASE = "return_without_purchase"

# Canonical column names (short: they never meet the input's own names, which stay in ``raw_row``).
REASON, CUST, ORDER, DAY, AMOUNT, IS_RETURN, ROW_HASH, FLOAT_ID, HAS_ID = (
    "reason", "cust", "order_key", "day", "amount", "is_return", "row_hash", "float_id", "has_id",
)  # fmt: skip
FILE_NO, ROW_NO, RAW_ROW = "file_no", "row_no", "raw_row"
CONTACT_PREFIX = "contact_"
_ROW = "__rfm_row"  # the reader's row number, before the canonical columns exist


def reason_code(reason: str) -> int:
    """The ``reason`` value of a row-level quarantine reason."""
    return ROW_REASONS.index(reason) + 1


def quarantined_sql(code: str) -> str:
    """SQL: true when a ``reason`` code means the row is quarantined (not used, not excluded)."""
    excluded = ", ".join(str(reason_code(r)) for r in EXCLUSION_REASONS)
    return f"({code} > 0 AND {code} NOT IN ({excluded}))"


def reason_name_sql(code: str) -> str:
    """SQL naming the row-level reason of a ``reason`` code (NULL for 0)."""
    names = "[" + ", ".join(literal(r) for r in ROW_REASONS) + "]"
    return f"CASE WHEN {code} > 0 THEN {names}[{code}] END"


@dataclass(frozen=True)
class CanonicalSource:
    """How to read one file as canonical transactions.

    Parameters
    ----------
    source : Source
        The sniffed file.
    fmt : InputFormat
        Its format and column mapping.
    file_no : int
        Its position among the inputs (quarantine rows are ordered by it).
    date_parsers : tuple of str
        Text date parsers in the order to try them (see ``steps.features.parsing``).
    """

    source: Source
    fmt: InputFormat
    file_no: int
    date_parsers: tuple[str, ...] = ()

    @property
    def raw_types(self) -> dict[str, str]:
        """The file's own columns (what quarantine files keep) and their types."""
        if self.fmt.headerless:
            return {**{name: "VARCHAR" for name in CDNOW_COLUMNS}, "line": "VARCHAR"}
        return dict(self.source.types)

    def raw_sql(self, *, store_rejects: bool = False, row_numbers: bool = False) -> str:
        """The file's rows with its own columns (and ``__rfm_row``, 1-based, when asked)."""
        reader = self.source.reader_sql(
            store_rejects=store_rejects, row_numbers=row_numbers, as_lines=self.fmt.headerless
        )
        if self.fmt.headerless:
            fields = "string_split_regex(regexp_replace(line, '^\\s+|\\s+$', '', 'g'), '\\s+')"
            picked = ", ".join(f"{fields}[{i + 1}] AS {quote(name)}" for i, name in enumerate(CDNOW_COLUMNS))
            inner = f"(SELECT {picked}, line, len({fields}) AS __rfm_fields FROM {reader})"
            reader = inner
        if not row_numbers:
            return reader
        if self.source.kind == "parquet":
            return f"(SELECT * EXCLUDE (file_row_number), file_row_number + 1 AS {_ROW} FROM {reader})"
        # CSV: the n-th record the reader returns; rejected lines are added back by the caller.
        return f"(SELECT *, row_number() OVER () AS {_ROW} FROM {reader})"


def row_key_sql(cust: str, row_hash: str) -> str:
    """SQL: the 64-bit key of a row, equal for identical rows (same customer id, same other columns)."""
    return f"hash({cust}, {row_hash})"


def _hashed_columns(src: CanonicalSource) -> list[str]:
    """The columns ``row_hash`` covers: every column but the customer id (the order id included)."""
    if src.fmt.headerless:
        return ["line"]
    return [n for n in src.raw_types if n != src.fmt.columns.get(c.CUSTOMER_ID)]


def row_key_select(src: CanonicalSource, *, float_ids: bool = True) -> str:
    """SELECT of one column ``row_key``, :func:`row_key_sql` of each row of the file (every row).

    Without ``float_ids`` (no usable row has a customer id written as a float,
    ``17850.0``) the id is hashed as written, which is then the same text and
    saves a test per row.
    """
    name = src.fmt.columns[c.CUSTOMER_ID]
    dtype = src.raw_types[name]
    cust = customer_id_expr(quote(name), dtype) if float_ids else text_expr(quote(name), dtype)
    row_hash = f"hash({', '.join(map(quote, _hashed_columns(src)))})"
    return f"SELECT {row_key_sql(cust, row_hash)} AS row_key FROM {src.raw_sql()}"


def has_id_sql(src: CanonicalSource) -> str:
    """SQL: true when the row's order, event or line id (those the file has) is not empty.

    An identical row that carries an id is a copy of it (a duplicate); without one nothing tells
    two equal purchases apart (``steps.features.aggregate.correct_identical_rows``).
    """
    columns = [src.fmt.columns[name] for name in c.ROW_ID_COLUMNS if name in src.fmt.columns]
    ids = [f"NULLIF({text_expr(quote(column), src.raw_types[column])}, '') IS NOT NULL" for column in columns]
    return f"coalesce({' OR '.join(ids)}, false)" if ids else "false"


def canonical_select(
    src: CanonicalSource,
    *,
    as_of: dt.date | None,
    contacts: list[str],
    keep_raw: bool = False,
    store_rejects: bool = False,
    timezone: str | None = None,
) -> str:
    """SELECT of one file's rows as canonical, classified transactions.

    Parameters
    ----------
    src : CanonicalSource
        The file and its format.
    as_of : date, optional
        Rows dated after it get ``date_after_as_of``.
    contacts : list of str
        Contact columns to carry (as ``contact_<name>``; NULL when this file lacks one).
    keep_raw : bool
        Also keep the file's own columns, ``file_no`` and ``row_no`` (for quarantine files).
    store_rejects : bool
        Record lines the CSV reader rejects (see ``Source.reader_sql``).
    timezone : str, optional
        IANA zone whose calendar days count (default UTC).
    """
    cols, types, fmt = src.fmt.columns, src.raw_types, src.fmt

    def col(name: str) -> str:
        return quote(cols[name])

    def dtype(name: str) -> str:
        return types[cols[name]]

    float_id = float_id_expr(col(c.CUSTOMER_ID), dtype(c.CUSTOMER_ID))
    # The float-id test once per row (it is the costly part of reading the customer id).
    cust = customer_id_expr(col(c.CUSTOMER_ID), dtype(c.CUSTOMER_ID), "__rfm_float_id")
    day = day_expr(col(c.TIMESTAMP), dtype(c.TIMESTAMP), list(src.date_parsers) or None, timezone)
    quantity = number_expr(col(c.QUANTITY), dtype(c.QUANTITY)) if c.QUANTITY in cols else None
    if c.AMOUNT in cols:
        amount = number_expr(col(c.AMOUNT), dtype(c.AMOUNT))
    else:
        amount = f"{quantity} * {number_expr(col(c.UNIT_PRICE), dtype(c.UNIT_PRICE))}"
    if c.ORDER_ID in cols:
        order_text = f"NULLIF({text_expr(col(c.ORDER_ID), dtype(c.ORDER_ID))}, '')"
        order = f"COALESCE({order_text}, 'day ' || CAST(__rfm_day AS VARCHAR))"
    else:
        # Same key as a row with an empty order id, so one purchase day is one order either way.
        order_text, order = None, "'day ' || CAST(__rfm_day AS VARCHAR)"
    has_id = has_id_sql(src)
    if fmt.purchase_event:
        is_purchase = f"coalesce(upper(trim({col(c.EVENT)})) = {literal(fmt.purchase_event.upper())}, false)"
    else:
        is_purchase = "true"
    if fmt.cancellation_prefix and order_text:
        cancelled = f"coalesce(starts_with({order_text}, {literal(fmt.cancellation_prefix)}), false)"
    else:
        cancelled = "false"
    own = list(types)
    hashed = _hashed_columns(src)
    contact_sql = "".join(
        f", {text_expr(col(name), dtype(name)) if name in cols else 'CAST(NULL AS VARCHAR)'} "
        f"AS {CONTACT_PREFIX}{name}"
        for name in contacts
    )
    checks = [
        ("malformed_line", "__rfm_fields <> 4" if fmt.headerless else None),
        ("not_a_purchase_event", "NOT __rfm_is_purchase" if fmt.purchase_event else None),
        ("missing_customer_id", blank_expr("__rfm_cust", dtype(c.CUSTOMER_ID))),
        ("unparseable_date", f"__rfm_day IS NULL OR __rfm_day < DATE {literal(EARLIEST_DAY)}"),
        ("unparseable_amount", "__rfm_units IS NULL"),
        ("zero_quantity", "__rfm_quantity = 0" if quantity else None),
        ("date_after_as_of", f"__rfm_day > DATE {literal(as_of.isoformat())}" if as_of else None),
    ]
    whens = " ".join(f"WHEN {sql} THEN {reason_code(name)}" for name, sql in checks if sql)
    reason = f"CASE {whens} ELSE 0 END"
    kept = ""
    if keep_raw:
        fields = ", ".join(f"{literal(n)}: {quote(n)}" for n in own)
        kept = f"{{{fields}}} AS {RAW_ROW}, {src.file_no} AS {FILE_NO}, {_ROW} AS {ROW_NO}, "
    return f"""
        SELECT {kept}CAST({reason} AS UTINYINT) AS {REASON}, __rfm_cust AS {CUST}, {order} AS {ORDER},
               __rfm_day AS {DAY},
               CASE WHEN __rfm_is_return THEN -abs(__rfm_units) ELSE __rfm_units END AS {AMOUNT},
               __rfm_is_return AS {IS_RETURN}, __rfm_float_id AS {FLOAT_ID}, {has_id} AS {HAS_ID},
               hash({', '.join(map(quote, hashed))}) AS {ROW_HASH}{contact_sql}
        FROM (
            SELECT *, {cancelled} OR coalesce(__rfm_amount < 0, false) AS __rfm_is_return
            FROM (
                SELECT raw.*, {cust} AS __rfm_cust, {day} AS __rfm_day, {amount} AS __rfm_amount,
                       {amount_units_expr(amount)} AS __rfm_units, {quantity or 'NULL'} AS __rfm_quantity,
                       {is_purchase} AS __rfm_is_purchase
                FROM (SELECT *, {float_id} AS __rfm_float_id
                      FROM {src.raw_sql(store_rejects=store_rejects, row_numbers=keep_raw)}) AS raw
            )
        )"""
