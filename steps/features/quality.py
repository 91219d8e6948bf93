"""``quality.json``: where every input row went.

``rows_read = rows_used + rows_excluded + rows_quarantined`` always holds:
excluded rows are fine but not purchases (``EXCLUSION_REASONS``), quarantined
rows are wrong (``QUARANTINE_REASONS``); both are counted by reason.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import duckdb

from steps.errors import RFMError
from steps.features.aggregate import CUSTOMER_ROWS
from steps.features.formats import InputFormat
from steps.features.transactions import (
    CUST,
    DUPLICATE_ROW,
    EXCLUSION_REASONS,
    MALFORMED_LINE,
    QUARANTINE_REASONS,
    REASON,
    RETURN_WITHOUT_PURCHASE,
    ROW_REASONS,
)


def quality_report(
    con: duckdb.DuckDBPyConnection,
    *,
    files: Sequence[str],
    skipped_files: dict[str, str],
    fmt: InputFormat,
    as_of: dt.date,
    malformed_lines: int,
    rows_in_files: int | None = None,
    warnings: Sequence[str] = (),
    timezone: str | None = None,
) -> dict:
    """The accounting of every input row, from ``customer_rows``.

    Returns
    -------
    dict
        ``rows_read``, ``rows_used``, ``rows_excluded``, ``excluded_by_reason``,
        ``rows_quarantined``, ``quarantined_by_reason`` (only reasons that
        occurred), ``identical_rows_kept`` (copies of identical rows counted
        as purchases because the rows carry no order id),
        ``customers_with_net_monetary_le_0``, ``warnings`` (surprises
        worth a look), ``customer_id_note`` (when ids written as floats,
        ``17850.0``, were read as integers),
        ``returns_netted`` (return and cancellation rows subtracted from a
        customer's spend), ``customers``, ``customers_with_only_returns``
        (their rows are quarantined as ``return_without_purchase``), and
        what was read: files, format, column mapping, as-of date, and ``timezone`` when days
        are taken in a business time zone.

    Raises
    ------
    RFMError
        When the rows read (counted apart: every row the reader returned, every
        line it rejected, and ``rows_in_files`` when the files say it, as
        Parquet metadata does) are not the rows used, excluded and quarantined.
    """
    by_code = dict(
        con.execute(
            f"SELECT {REASON}, sum(n_rows) FROM {CUSTOMER_ROWS} WHERE {REASON} > 0 GROUP BY 1"
        ).fetchall()
    )
    returned = int(con.execute(f"SELECT coalesce(sum(n_rows), 0) FROM {CUSTOMER_ROWS}").fetchall()[0][0])
    duplicates, only_return_rows, used, netted, customers, only_returns, identical, not_positive, float_ids = (
        int(v or 0)
        for v in con.execute(f"""
            SELECT sum(duplicate_rows),
                   sum(n_rows - duplicate_rows) FILTER (WHERE frequency = 0),
                   sum(n_rows - duplicate_rows) FILTER (WHERE frequency > 0),
                   sum(return_rows) FILTER (WHERE frequency > 0),
                   count({CUST}) FILTER (WHERE frequency > 0),
                   count({CUST}) FILTER (WHERE frequency = 0),
                   sum(identical_rows) FILTER (WHERE frequency > 0),
                   count({CUST}) FILTER (WHERE frequency > 0 AND amount <= 0),
                   sum(float_id_rows)
            FROM {CUSTOMER_ROWS} WHERE {REASON} = 0""").fetchall()[0]
    )
    by_reason = {reason: int(by_code.get(code, 0)) for code, reason in enumerate(ROW_REASONS, start=1)}
    by_reason[MALFORMED_LINE] += malformed_lines
    by_reason[DUPLICATE_ROW] = duplicates
    by_reason[RETURN_WITHOUT_PURCHASE] = only_return_rows
    excluded_by = {r: by_reason.pop(r) for r in EXCLUSION_REASONS}
    excluded = sum(excluded_by.values())
    quarantined = sum(by_reason.values())
    rows_read = returned + malformed_lines
    if rows_read != used + excluded + quarantined or rows_in_files not in (None, rows_read):
        raise RFMError(
            f"{rows_read} rows read ({rows_in_files} in the files' metadata) but {used} used, "
            f"{excluded} excluded and {quarantined} quarantined", ", ".join(files),
            "Report this as a bug, with the input if you can",
        )
    report = {
        "input_files": list(files),
        "input_format": fmt.name,
        "column_mapping": dict(fmt.columns),
        "as_of_date": as_of.isoformat(),
        "rows_read": rows_read,
        "rows_used": used,
        "rows_excluded": excluded,
        "excluded_by_reason": {r: n for r, n in excluded_by.items() if n},
        "rows_quarantined": quarantined,
        "quarantined_by_reason": {r: by_reason[r] for r in QUARANTINE_REASONS if by_reason.get(r)},
        "identical_rows_kept": identical,
        "returns_netted": netted,
        "customers": customers,
        "customers_with_only_returns": only_returns,
        "customers_with_net_monetary_le_0": not_positive,
        "warnings": list(warnings),
    }
    if float_ids:
        report["customer_id_note"] = (
            f"{float_ids} rows had a customer id written as a whole float (like 17850.0); "
            "it is read as the integer (17850), as a typed float column is"
        )
    if skipped_files:
        report["skipped_files"] = dict(skipped_files)
    if timezone:
        report["timezone"] = timezone
    return report
