"""Input formats: detect which one a table is, and map its columns to ours.

A format is a mapping from canonical columns (``steps.columns``) to the
table's own column names, plus how purchases, returns and orders are told
apart. Detection looks only at the header; ``--format`` overrides it and
``--column canonical=source`` (or a YAML mapping file) covers any other table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from steps import columns as c
from steps.errors import InputDataError

FORMAT_NAMES = ("guidance", "online-retail", "cdnow", "generic")
CANONICAL_COLUMNS = (
    c.CUSTOMER_ID,
    c.ORDER_ID,
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
CDNOW_COLUMNS = ("customer_id", "date", "quantity", "amount")


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _find(header: list[str], *candidates: str) -> str | None:
    by_norm = {_normalise(h): h for h in header}
    for candidate in candidates:
        if _normalise(candidate) in by_norm:
            return by_norm[_normalise(candidate)]
    return None


def guidance_format(header: list[str]) -> InputFormat:
    cols = {
        c.CUSTOMER_ID: _find(header, "CustomerID"),
        c.TIMESTAMP: _find(header, "Date"),
        c.QUANTITY: _find(header, "Quantity"),
        c.UNIT_PRICE: _find(header, "UnitPrice"),
        c.EVENT: _find(header, "EventName"),
        c.CHANNEL: _find(header, "ChannelType"),
        c.ADDRESS: _find(header, "Address"),
    }
    return InputFormat("guidance", {k: v for k, v in cols.items() if v}, purchase_event="PURCHASED")


def online_retail_format(header: list[str]) -> InputFormat:
    cols = {
        c.CUSTOMER_ID: _find(header, "Customer ID", "CustomerID"),
        c.ORDER_ID: _find(header, "Invoice", "InvoiceNo"),
        c.TIMESTAMP: _find(header, "InvoiceDate"),
        c.QUANTITY: _find(header, "Quantity"),
        c.UNIT_PRICE: _find(header, "Price", "UnitPrice"),
    }
    return InputFormat("online-retail", {k: v for k, v in cols.items() if v}, cancellation_prefix="C")


def cdnow_format(header: list[str] | None = None) -> InputFormat:
    cols = {c.CUSTOMER_ID: "customer_id", c.TIMESTAMP: "date", c.QUANTITY: "quantity", c.AMOUNT: "amount"}
    return InputFormat("cdnow", cols, headerless=True)


GENERIC_ALIASES: dict[str, tuple[str, ...]] = {
    c.CUSTOMER_ID: ("customer_id", "customer", "client_id", "user_id"),
    c.ORDER_ID: ("order_id", "order", "transaction_id", "invoice_id"),
    c.TIMESTAMP: ("timestamp", "order_date", "date", "datetime", "purchase_date", "created_at"),
    c.AMOUNT: ("amount", "total", "revenue", "order_total"),
    c.QUANTITY: ("quantity", "qty"),
    c.UNIT_PRICE: ("unit_price", "price"),
    c.EMAIL: ("email",),
    c.PHONE: ("phone",),
    c.CHANNEL: ("channel",),
    c.ADDRESS: ("address",),
}


def generic_format(header: list[str]) -> InputFormat:
    cols = {canonical: _find(header, *aliases) for canonical, aliases in GENERIC_ALIASES.items()}
    return InputFormat("generic", {k: v for k, v in cols.items() if v})


_BUILDERS = {
    "guidance": guidance_format,
    "online-retail": online_retail_format,
    "cdnow": cdnow_format,
    "generic": generic_format,
}

CDNOW_LINE = re.compile(r"^\s*\S+\s+\d{8}\s+-?\d+\s+-?[\d.]+\s*$")


def detect_format(header: list[str], first_line: str, where: str) -> str:
    """Name of the format whose columns the header carries.

    ``first_line`` is the raw first line, used to recognise headerless CDNOW.
    """
    names = {_normalise(h) for h in header}
    if {_normalise(h) for h in GUIDANCE_HEADER} <= names:
        return "guidance"
    if {"invoicedate", "quantity", "stockcode"} <= names:
        return "online-retail"
    if CDNOW_LINE.match(first_line):
        return "cdnow"
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
            f"unknown format {name!r}", where, f"use one of: auto, {', '.join(FORMAT_NAMES)}"
        )
    fmt = _BUILDERS[name](header)
    unknown_targets = sorted(set(mapping) - set(CANONICAL_COLUMNS))
    if unknown_targets:
        raise InputDataError(
            f"--column names unknown column(s) {', '.join(unknown_targets)}",
            where,
            f"map one of: {', '.join(CANONICAL_COLUMNS)}",
        )
    if not fmt.headerless:
        missing = sorted(v for v in mapping.values() if v not in header)
        if missing:
            raise InputDataError(
                f"the column mapping names column(s) {', '.join(map(repr, missing))} that the file "
                f"does not have (it has: {', '.join(header[:20])})",
                where,
                "fix the --column / mapping file names (they are case-sensitive)",
            )
    fmt = fmt.with_mapping(mapping)
    _require_columns(fmt, header, where)
    return fmt


def _require_columns(fmt: InputFormat, header: list[str], where: str) -> None:
    cols = fmt.columns
    needs = {
        "customer id": c.CUSTOMER_ID in cols,
        "date": c.TIMESTAMP in cols,
        "amount (or quantity and unit price)": c.AMOUNT in cols
        or (c.QUANTITY in cols and c.UNIT_PRICE in cols),
    }
    missing = [what for what, ok in needs.items() if not ok]
    if missing:
        shown = ", ".join(header[:12]) + (", ..." if len(header) > 12 else "")
        hint = ""
        if len(header) == 1 and re.search(r"[;\t|]", header[0]):
            hint = " (the header is one column: is the delimiter unusual?)"
        raise InputDataError(
            f"no {' / '.join(missing)} column found as {fmt.name} format; columns are: {shown}{hint}",
            where,
            "name the columns with --column customer_id=..., --column timestamp=..., "
            "--column amount=... or pick a --format",
        )


def load_mapping_file(path: str | Path) -> dict[str, str]:
    """Read a YAML mapping file ``{canonical: source column}``."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise InputDataError(f"cannot read the mapping file: {error}", str(path)) from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise InputDataError(
            "a mapping file must be a YAML mapping of canonical column to source column",
            str(path),
            "write lines like 'customer_id: Cust'",
        )
    return {str(k): v for k, v in data.items()}


def parse_column_options(options: list[str]) -> dict[str, str]:
    """Parse ``--column canonical=source`` options into a mapping."""
    mapping: dict[str, str] = {}
    for option in options:
        canonical, sep, source = option.partition("=")
        if not sep or not canonical.strip() or not source:
            raise InputDataError(
                f"--column {option!r} is not canonical=source", None, "write e.g. --column customer_id=Cust"
            )
        mapping[canonical.strip()] = source
    return mapping
