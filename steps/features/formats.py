"""Input formats: detect which one a table is, and map its columns to ours.

A format is a mapping from canonical columns (``steps.columns``) to the
table's own column names, plus how purchases, returns and orders are told
apart. Detection looks only at the header (and, for headerless CDNOW files, at
the first line); ``--format`` overrides it and ``--column canonical=source``
(or a YAML mapping file) covers any other table. Column names match without
regard to case, spaces and punctuation (``Customer ID`` = ``customer_id``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from steps import columns as c
from steps.errors import InputDataError, first_line

log = logging.getLogger("rfm.features")

FORMAT_NAMES = ("guidance", "online-retail", "cdnow", "generic")
ENCODINGS = ("utf-8", "utf-16", "latin-1", "cp1252")  # the last two read through a UTF-8 copy (sources.py)
CANONICAL_COLUMNS = (
    c.CUSTOMER_ID,
    c.ORDER_ID,
    c.EVENT_ID,
    c.LINE_ID,
    c.TIMESTAMP,
    c.AMOUNT,
    c.QUANTITY,
    c.UNIT_PRICE,
    c.EVENT,
    *c.CONTACT_COLUMNS,
)


@dataclass(frozen=True)
class InputFormat:
    """How one kind of transaction table maps to the canonical columns.

    Parameters
    ----------
    name : str
        One of ``FORMAT_NAMES``.
    columns : dict
        Canonical column -> the table's column name.
    purchase_event : str or None
        When set, only rows whose event equals it (any case) are purchases.
    cancellation_prefix : str or None
        Orders whose id starts with it are cancellations (netted as returns).
    headerless : bool
        The file has no header (CDNOW: whitespace-separated fields).
    """

    name: str
    columns: dict[str, str]
    purchase_event: str | None = None
    cancellation_prefix: str | None = None
    headerless: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    def with_mapping(self, mapping: dict[str, str]) -> InputFormat:
        """This format with some canonical columns mapped to other source columns."""
        return replace(self, columns={**self.columns, **mapping})


GUIDANCE_HEADER = (
    "EventName", "ProductCode", "ProductName", "ProductDescription", "UnitPrice", "Quantity",
    "CustomerID", "Username", "ChannelType", "Address", "City", "State", "Country", "Date",
)  # fmt: skip
# A headerless CDNOW line: customer id, YYYYMMDD date, quantity, amount, separated by blanks.
CDNOW_LINE = re.compile(r"^\s*\S+\s+\d{8}\s+-?\d+\s+-?\d*\.?\d+\s*$")
CDNOW_COLUMNS = ("customer_id", "date", "quantity", "amount")
# The header line lifetimes and btyd ship (``customer_id date number_of_cds dollar_value``): four names.
CDNOW_HEADER = re.compile(r"^\s*[A-Za-z_]\w*(\s+[A-Za-z_]\w*){3}\s*$")


def normalise(name: str) -> str:
    """A column name for matching: lower case, letters and digits only.

    Examples
    --------
    >>> normalise(" Customer ID ")
    'customerid'
    """
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _find(header: list[str], *candidates: str) -> str | None:
    by_norm: dict[str, str] = {}
    for name in header:
        by_norm.setdefault(normalise(name), name)
    for candidate in candidates:
        if normalise(candidate) in by_norm:
            return by_norm[normalise(candidate)]
    return None


def _present(cols: dict[str, str | None]) -> dict[str, str]:
    return {k: v for k, v in cols.items() if v}


def guidance_format(header: list[str]) -> InputFormat:
    cols = {
        c.CUSTOMER_ID: _find(header, "CustomerID", "Customer ID"),
        c.TIMESTAMP: _find(header, "Date"),
        c.QUANTITY: _find(header, "Quantity"),
        c.UNIT_PRICE: _find(header, "UnitPrice"),
        c.EVENT: _find(header, "EventName"),
        c.CHANNEL: _find(header, "ChannelType"),
        c.ADDRESS: _find(header, "Address"),
    }
    return InputFormat("guidance", _present(cols), purchase_event="PURCHASED")


def online_retail_format(header: list[str]) -> InputFormat:
    cols = {
        c.CUSTOMER_ID: _find(header, "Customer ID", "CustomerID"),
        c.ORDER_ID: _find(header, "Invoice", "InvoiceNo"),
        c.TIMESTAMP: _find(header, "InvoiceDate"),
        c.QUANTITY: _find(header, "Quantity"),
        c.UNIT_PRICE: _find(header, "Price", "UnitPrice"),
    }
    return InputFormat("online-retail", _present(cols), cancellation_prefix="C")


def cdnow_format(header: list[str] | None = None) -> InputFormat:
    cols = {c.CUSTOMER_ID: "customer_id", c.TIMESTAMP: "date", c.QUANTITY: "quantity", c.AMOUNT: "amount"}
    return InputFormat("cdnow", cols, headerless=True)


GENERIC_ALIASES: dict[str, tuple[str, ...]] = {
    c.CUSTOMER_ID: ("customer_id", "customer", "cust", "client_id", "user_id", "cust_id", "customer_number",
                    "member_id", "account_id", "household_id", "household_key"),
    c.ORDER_ID: ("order_id", "order", "transaction_id", "invoice_id", "invoice", "invoice_no",
                 "order_number", "basket_id", "receipt_id"),
    # Ids of one event or one order line: they tell identical-looking purchases apart too.
    c.EVENT_ID: ("event_id",),
    c.LINE_ID: ("line_id", "line_item_id", "order_line_id", "order_item_id"),
    c.TIMESTAMP: ("timestamp", "order_date", "date", "datetime", "purchase_date", "created_at",
                  "transaction_date", "invoice_date", "order_timestamp", "transaction_timestamp", "time"),
    c.AMOUNT: ("amount", "total", "revenue", "order_total", "total_amount", "sales", "order_value", "spend",
               "sales_value"),
    c.QUANTITY: ("quantity", "qty", "units"),
    c.UNIT_PRICE: ("unit_price", "price", "unitprice"),
    c.EMAIL: ("email", "email_address"),
    c.PHONE: ("phone", "phone_number", "mobile"),
    c.CHANNEL: ("channel", "channel_type"),
    c.ADDRESS: ("address",),
}  # fmt: skip


def generic_format(header: list[str]) -> InputFormat:
    cols = _present({canonical: _find(header, *aliases) for canonical, aliases in GENERIC_ALIASES.items()})
    return InputFormat("generic", cols)


_BUILDERS = {
    "guidance": guidance_format,
    "online-retail": online_retail_format,
    "cdnow": cdnow_format,
    "generic": generic_format,
}


def detect_format(header: list[str], first_line: str, where: str | None = None) -> str:
    """Name of the format whose columns the header carries.

    ``first_line`` is the raw first line, used to recognise headerless CDNOW
    (an empty ``header`` means the file has none).

    Examples
    --------
    >>> detect_format(["Invoice", "StockCode", "Quantity", "InvoiceDate", "Price", "Customer ID"], "")
    'online-retail'
    >>> detect_format([], "00001 19970101 1 11.77")
    'cdnow'
    """
    names = {normalise(h) for h in header}
    if not header or CDNOW_LINE.match(first_line):
        return "cdnow"
    if {"eventname", "customerid", "date", "quantity", "unitprice"} <= names:
        return "guidance"
    if {"invoicedate", "quantity", "stockcode"} <= names and names & {"invoice", "invoiceno"}:
        return "online-retail"
    return "generic"


def resolve_format(
    header: list[str], first_line: str, requested: str, mapping: dict[str, str], where: str
) -> InputFormat:
    """The format to read a table with: requested or detected, plus the user's mapping.

    Raises
    ------
    InputDataError
        Unknown format, a mapping naming a missing column, or no customer,
        date or amount column.
    """
    name = requested if requested and requested != "auto" else detect_format(header, first_line, where)
    if name not in _BUILDERS:
        raise InputDataError(
            f"unknown format {name!r}", where, f"Use one of: auto, {', '.join(FORMAT_NAMES)}"
        )
    fmt = _BUILDERS[name](header)
    unknown_targets = sorted(set(mapping) - set(CANONICAL_COLUMNS))
    if unknown_targets:
        raise InputDataError(
            f"the column mapping names unknown canonical column(s) {', '.join(unknown_targets)}",
            where,
            f"Map one of: {', '.join(CANONICAL_COLUMNS)}",
        )
    available = list(CDNOW_COLUMNS) if fmt.headerless else header
    missing = [v for v in mapping.values() if v not in available]
    if missing:
        close = [found for found in (_find(available, v) for v in missing) if found]
        fix = f"Did you mean {', '.join(map(repr, close))}? " if close else ""
        raise InputDataError(
            f"the column mapping names column(s) {', '.join(map(repr, missing))} that the file does not "
            f"have (it has: {_shown(available)})",
            where,
            fix + "Fix the --column / mapping file names (they are case-sensitive)",
        )
    fmt = fmt.with_mapping(mapping)
    cols = fmt.columns
    if c.AMOUNT in mapping and c.QUANTITY in cols and c.QUANTITY not in mapping:
        log.info(
            "%s: the mapped amount is %r; column %r was also picked up as the quantity (rows with quantity 0 "
            "are quarantined as zero_quantity). Map --column quantity=... to choose another.",
            where, cols[c.AMOUNT], cols[c.QUANTITY],
        )
    if c.AMOUNT not in cols and c.QUANTITY not in cols and c.UNIT_PRICE in cols:
        # A lone price column is the amount paid.
        price = cols[c.UNIT_PRICE]
        fmt = replace(fmt, columns={**{k: v for k, v in cols.items() if k != c.UNIT_PRICE}, c.AMOUNT: price})
    _require_columns(fmt, header, where)
    return fmt


def _shown(header: list[str], limit: int = 12) -> str:
    return ", ".join(header[:limit]) + (", ..." if len(header) > limit else "")


def _require_columns(fmt: InputFormat, header: list[str], where: str) -> None:
    cols = fmt.columns
    needs = {
        "customer id": c.CUSTOMER_ID in cols,
        "date": c.TIMESTAMP in cols,
        "amount (or quantity and unit price)": (
            c.AMOUNT in cols or (c.QUANTITY in cols and c.UNIT_PRICE in cols)
        ),
        "event name": fmt.purchase_event is None or c.EVENT in cols,
    }
    missing = [what for what, ok in needs.items() if not ok]
    if missing:
        hint = ""
        if len(header) == 1:
            hint = (
                " (the header is a single column: is the file delimited by something other than "
                ", ; tab or |?)"
            )
        raise InputDataError(
            f"no {' / '.join(missing)} column found as {fmt.name} format; "
            f"columns are: {_shown(header)}{hint}",
            where,
            "Name the columns with --column customer_id=..., --column timestamp=..., "
            "--column amount=... (a pipeline run: the ColumnMapping parameter) or pick the format "
            "(--format; a pipeline run: InputFormat)",
        )


def load_mapping_file(path: str | Path) -> dict[str, str]:
    """Read a YAML mapping file ``{canonical: source column}``.

    Examples
    --------
    A file with the lines ``customer_id: Cust`` and ``amount: Total`` maps
    the table's ``Cust`` and ``Total`` columns.
    """
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise InputDataError(
            f"cannot read the mapping file: {first_line(error)}", str(path), "Check the --mapping path"
        ) from None
    if not isinstance(data, dict) or not data or not all(isinstance(v, str) for v in data.values()):
        raise InputDataError(
            "a mapping file must be a YAML mapping of canonical column to source column",
            str(path),
            "Write lines like 'customer_id: Cust'",
        )
    return {str(k): v for k, v in data.items()}


def parse_column_options(options: list[str]) -> dict[str, str]:
    """Parse ``--column canonical=source`` options into a mapping.

    Examples
    --------
    >>> parse_column_options(["customer_id=Cust", "amount = Total "])
    {'customer_id': 'Cust', 'amount': 'Total'}
    """
    mapping: dict[str, str] = {}
    for option in options:
        canonical, sep, source = option.partition("=")
        if not sep or not canonical.strip() or not source.strip():
            raise InputDataError(
                f"--column {option!r} is not canonical=source", None, "Write e.g. --column customer_id=Cust"
            )
        mapping[canonical.strip()] = source.strip()
    return mapping


def parse_mapping_json(text: str | None, where: str = "ColumnMapping") -> dict[str, str]:
    """Read a column mapping given as JSON (the ``ColumnMapping`` pipeline parameter).

    Empty text means no mapping. Canonical names are checked here, so a bad
    mapping fails before any step runs; source names are checked against
    each file's header when it is read.

    Examples
    --------
    >>> parse_mapping_json('{"customer_id": "Cust", "amount": "Total"}')
    {'customer_id': 'Cust', 'amount': 'Total'}
    >>> parse_mapping_json("")
    {}
    """
    import json

    if not text or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputDataError(
            f"the column mapping is not JSON ({error.msg}, at character {error.pos})", where,
            'Write e.g. {"customer_id": "Cust", "amount": "Total"}',
        ) from None
    if not isinstance(data, dict) or not all(isinstance(v, str) and v for v in data.values()):
        raise InputDataError(
            "the column mapping must be a JSON object of canonical column to source column", where,
            'Write e.g. {"customer_id": "Cust", "amount": "Total"}',
        )
    unknown = sorted(set(data) - set(CANONICAL_COLUMNS))
    if unknown:
        raise InputDataError(
            f"the column mapping names unknown canonical column(s) {', '.join(unknown)}", where,
            f"Map one of: {', '.join(CANONICAL_COLUMNS)}",
        )
    return {str(k): v for k, v in data.items()}
