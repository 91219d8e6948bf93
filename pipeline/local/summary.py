"""What ``rfm run-local``, ``rfm segments`` and ``rfm show`` print about a local run's results."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline.local.runner import ExecutionResult
from steps import columns as c
from steps import paths
from steps.errors import RFMError
from steps.report import data as report_data


def segments_path(output: Path) -> Path:
    return Path(output) / "segments" / paths.SEGMENTS_FILE


def read_segments(output: Path) -> pd.DataFrame:
    path = segments_path(output)
    if not path.is_file():
        raise RFMError("no published segments yet", str(path),
                       "run `rfm run-local --input ... --param ModelApprovalStatus=Approved` or approve a package")
    return pd.read_parquet(path)


def segment_table(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    """Customers, share, revenue share and mean R/F/M per value of ``by``, largest first."""
    table = report_data.segment_table(frame, frame[by], order=[])
    table.index.name = by
    return table.sort_values("customers", ascending=False, kind="stable")


def _format(table: pd.DataFrame) -> str:
    return table.to_string(formatters={
        "share": "{:.1%}".format, "revenue_share": "{:.1%}".format,
        "recency_days": "{:.0f}".format, "frequency": "{:.1f}".format, "monetary": "{:,.2f}".format,
    })


def print_segment_table(output: Path) -> None:
    frame = read_segments(output)
    print(f"\n{len(frame):,} customers by RFM segment:")
    print(_format(segment_table(frame, c.RFM_SEGMENT)))
    print(f"\n{len(frame):,} customers by cluster:")
    print(_format(segment_table(frame, c.CLUSTER_NAME)))


def print_summary(output: Path, result: ExecutionResult) -> None:
    """The end of a local run: the segment tables, or why nothing was published."""
    register = result.properties.get("RegisterSegmenter", {})
    if result.properties.get("ExportSegments") is not None:
        print_segment_table(output)
        print(f"\nartifacts in {output}: features/, model/, evaluation/, segments/, export/, registry.json, "
              "report.html")
        return
    arn = register.get("ModelPackageArn", "?")
    print(f"\nmodel package {arn} is {register.get('ModelApprovalStatus', '?')}: segments were not published.")
    print(f"Review {Path(output) / paths.REPORT_FILE}, then publish them with:  rfm approve {arn} --output {output}")


def print_customer(output: Path, customer_id: str) -> None:
    frame = read_segments(output)
    match = frame[frame[c.CUSTOMER_ID] == customer_id]
    if match.empty:
        raise RFMError(f"customer {customer_id!r} is not in the last run's segments", str(segments_path(output)),
                       "customer ids are matched exactly, leading zeros included")
    row = match.iloc[0].to_dict()
    print(json.dumps({k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}, indent=2, default=str))
