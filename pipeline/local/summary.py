"""What ``rfm run-local``, ``rfm segments`` and ``rfm show`` print about a local run's results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from pipeline.local.runner import ExecutionResult
from steps import columns as c
from steps import paths
from steps.errors import RFMError
from steps.report import data as report_data
from steps.report.money import DEFAULT_CURRENCY, money


def package_report_path(output: Path, version: int | str) -> Path:
    """Where a local run keeps the report of model package ``version``: ``<output>/reports/<version>.html``."""
    return Path(output) / paths.REPORTS_DIR / f"{version}.html"


def segments_path(output: Path) -> Path:
    return Path(output) / "segments" / paths.SEGMENTS_FILE


def read_segments(output: Path) -> pd.DataFrame:
    path = segments_path(output)
    if not path.is_file():
        raise RFMError("no published segments yet", str(path),
                       "run `rfm run-local --input ... --param ModelApprovalStatus=Approved` or approve a package")
    return pd.read_parquet(path)


def segment_table(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    """Customers, share, revenue (and share), means of R/F/M and average order value per ``by``, largest first."""
    table = report_data.segment_table(frame, frame[by], order=[])
    table.index.name = by
    return table.sort_values("customers", ascending=False, kind="stable")


# Console headers: every column says what it is (a mean, a share, money); one number format throughout.
CONSOLE_HEADERS = {"customers": "customers", "share": "share", "revenue": "revenue", "revenue_share": "rev. share",
                   c.RECENCY_DAYS: "mean recency (days)", c.FREQUENCY: "mean orders", c.MONETARY: "mean spend",
                   "avg_order_value": "avg order value"}


def format_table(table: pd.DataFrame, currency: str = DEFAULT_CURRENCY) -> str:
    """``table`` (:func:`segment_table`) as text: labelled columns, thousands separators, money in ``currency``."""
    def as_money(value: float) -> str:
        return money(value, currency)

    formatters = {"customers": "{:,.0f}".format, "share": "{:.1%}".format, "revenue_share": "{:.1%}".format,
                  c.RECENCY_DAYS: "{:,.0f}".format, c.FREQUENCY: "{:,.1f}".format, "revenue": as_money,
                  c.MONETARY: as_money, "avg_order_value": as_money}
    return table.rename(columns=CONSOLE_HEADERS).to_string(
        formatters={CONSOLE_HEADERS[k]: f for k, f in formatters.items()})


def currency_of(output: Path) -> str:
    """The currency of the last local run (``last_run.json``), else the default."""
    path = Path(output) / paths.LAST_RUN_FILE
    try:
        return json.loads(path.read_text()).get("currency") or DEFAULT_CURRENCY
    except (OSError, json.JSONDecodeError):
        return DEFAULT_CURRENCY


def print_segment_table(output: Path) -> None:
    frame = read_segments(output)
    currency = currency_of(output)
    print(f"\n{len(frame):,} customers by RFM segment:")
    print(format_table(segment_table(frame, c.RFM_SEGMENT), currency))
    print(f"\n{len(frame):,} customers by cluster:")
    print(format_table(segment_table(frame, c.CLUSTER_NAME), currency))


def print_summary(output: Path, result: ExecutionResult) -> None:
    """The end of a local run: the segment tables, or why nothing was published; the report's place."""
    register = result.properties.get("RegisterSegmenter", {})
    report = Path(output) / paths.REPORT_FILE
    if result.properties.get("ExportSegments") is not None:
        print_segment_table(output)
        print(f"\nartifacts in {output}: features/, model/, evaluation/, segments/, export/, registry.json, "
              "report.html, reports/")
        print(f"report: {report}")
        return
    arn = register.get("ModelPackageArn", "?")
    version = register.get("ModelPackageVersion")
    kept = package_report_path(Path(output), version) if version is not None else report
    print(f"\nmodel package {arn} is {register.get('ModelApprovalStatus', '?')}: segments were not published.")
    print(f"Review {kept}, then publish them with:  rfm approve {arn} --output {output}")


def print_customer(output: Path, customer_id: str) -> None:
    frame = read_segments(output)
    match = frame[frame[c.CUSTOMER_ID] == customer_id]
    if match.empty:
        raise RFMError(f"customer {customer_id!r} is not in the last run's segments", str(segments_path(output)),
                       "customer ids are matched exactly, leading zeros included")
    row = match.iloc[0].to_dict()
    values = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
    # JSON has no NaN: a value the customer does not have (no previous segment, no email) is null.
    values = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in values.items()}
    print(json.dumps(values, indent=2, default=str, allow_nan=False))
