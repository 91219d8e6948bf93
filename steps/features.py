"""RFM features: from transaction files to one row per purchasing customer.

The functional core of ``ComputeRFM``: :func:`compute_features` reads the
sources, classifies every row, aggregates with DuckDB and scores in NumPy;
:func:`write_features` writes ``rfm.parquet``, ``quality.json``,
``quarantine/`` and the batch-transform input.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from steps import columns as c
from steps import paths
from steps.errors import InputDataError
from steps.formats import InputFormat, resolve_format
from steps.scoring import RFMScorer
from steps.segments import segments_of
from steps.sources import Source, list_input_files, sniff
from steps.transactions import (
    AMOUNT, CUST, DAY, IS_RETURN, ORDER, QUARANTINE_REASONS, REASON, SRC_FILE, SRC_ROW, TS,
    connect, load_rows, malformed_lines, q, lit,
)  # fmt: skip


@dataclass
class FeatureResult:
    """What :func:`compute_features` found: features, accounting and where rows went."""

    features: pd.DataFrame
    quality: dict
    input_format: InputFormat
    original_columns: list[str]
    con: duckdb.DuckDBPyConnection
    malformed: list[tuple[str, int, str]] = field(default_factory=list)


def parse_as_of(text: str | None) -> dt.date | None:
    """``YYYY-MM-DD`` -> date; empty -> None (derive from the data)."""
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise InputDataError(f"as-of date {text!r} is not YYYY-MM-DD", "--as-of", "write e.g. 2026-11-01") from None


def open_sources(location: str, workdir: Path) -> list[Source]:
    """Sniff every input file at ``location``."""
    return [sniff(path) for path in list_input_files(location, workdir)]


def compute_features(
    sources: list[Source],
    *,
    input_format: str = "auto",
    mapping: dict[str, str] | None = None,
    as_of: dt.date | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> FeatureResult:
    """Per-customer RFM features and the accounting of every input row.

    Parameters
    ----------
    sources : list of Source
        Input files (see :func:`open_sources`); all must share one format.
    input_format : str
        ``auto`` or one of ``steps.formats.FORMAT_NAMES``.
    mapping : dict, optional
        Canonical column -> source column overrides.
    as_of : date, optional
        Reference date; default the day after the last purchase (UTC).

    Returns
    -------
    FeatureResult
        ``features`` has ``steps.columns.FEATURE_COLUMNS`` plus the contact
        columns the input has; ``quality`` satisfies
        ``rows_read == rows_used + rows_quarantined``.
    """
    if not sources:
        raise InputDataError("no input files", None, "give --input a file, folder or S3 prefix")
    first = sources[0]
    fmt = resolve_format(first.header, first.first_line, input_format, mapping or {}, first.name)
    con = con or connect()
    original = load_rows(con, sources, fmt)
    malformed = _distinct_malformed(malformed_lines(con))
    as_of = as_of or _derived_as_of(con, first.name)
    contacts = [name for name in c.CONTACT_COLUMNS if name in fmt.columns]
    _aggregate(con, fmt, as_of, contacts)
    features = _scored_features(con, as_of, contacts)
    quality = _quality(con, sources, fmt, as_of, len(malformed), len(features))
    return FeatureResult(features, quality, fmt, original, con, malformed)


def _distinct_malformed(lines: list[tuple[str, int, str]]) -> list[tuple[str, int, str]]:
    return sorted({(f, int(n), text) for f, n, text in lines})


def _derived_as_of(con: duckdb.DuckDBPyConnection, where: str) -> dt.date:
    last = con.execute(f"SELECT max({DAY}) FROM rows WHERE {REASON} IS NULL").fetchone()[0]
    if last is None:
        reasons = con.execute(
            f"SELECT {REASON}, count(*) FROM rows GROUP BY ALL ORDER BY 2 DESC LIMIT 3"
        ).fetchall()
        summary = ", ".join(f"{r}: {n}" for r, n in reasons) or "no rows"
        raise InputDataError(
            f"no usable purchase rows ({summary})",
            where,
            "check the format (--format) and column mapping (--column)",
        )
    return last + dt.timedelta(days=1)


def _aggregate(con: duckdb.DuckDBPyConnection, fmt: InputFormat, as_of: dt.date, contacts: list[str]) -> None:
    order_key = ORDER if c.ORDER_ID in fmt.columns else DAY
    purchase = f"NOT {IS_RETURN}"
    contact_aggs = "".join(
        f", arg_max({q('__' + n)}, {TS}) FILTER (WHERE {q('__' + n)} IS NOT NULL) AS {q(n)}" for n in contacts
    )
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE customers AS
        SELECT {CUST} AS {c.CUSTOMER_ID},
               min({DAY}) FILTER (WHERE {purchase}) AS {c.FIRST_PURCHASE},
               max({DAY}) FILTER (WHERE {purchase}) AS {c.LAST_PURCHASE},
               count(DISTINCT {order_key}) FILTER (WHERE {purchase}) AS {c.FREQUENCY},
               sum({AMOUNT}) AS {c.MONETARY},
               count(*) AS __rows,
               count(*) FILTER (WHERE {IS_RETURN}) AS __return_rows
               {contact_aggs}
        FROM rows
        WHERE {REASON} IS NULL AND {DAY} <= {lit(as_of.isoformat())}::DATE
        GROUP BY {CUST}""")


def _scored_features(con: duckdb.DuckDBPyConnection, as_of: dt.date, contacts: list[str]) -> pd.DataFrame:
    extra = "".join(f", {q(n)}" for n in contacts)
    frame = con.execute(f"""
        SELECT {c.CUSTOMER_ID}, {c.FIRST_PURCHASE}, {c.LAST_PURCHASE},
               date_diff('day', {c.LAST_PURCHASE}, {lit(as_of.isoformat())}::DATE) AS {c.RECENCY_DAYS},
               {c.FREQUENCY}, round({c.MONETARY}, 4) AS {c.MONETARY},
               round({c.MONETARY} / {c.FREQUENCY}, 4) AS {c.AVG_ORDER_VALUE} {extra}
        FROM customers WHERE {c.FREQUENCY} > 0
        ORDER BY {c.CUSTOMER_ID}""").df()
    frame[c.CUSTOMER_ID] = frame[c.CUSTOMER_ID].astype(object)
    if frame.empty:
        for name in (c.R_SCORE, c.F_SCORE, c.M_SCORE, c.RFM_SCORE, c.RFM_SEGMENT):
            frame[name] = pd.Series(dtype="int8" if name.endswith("_score") and name != c.RFM_SCORE else object)
    else:
        frame = RFMScorer().fit(frame).transform(frame)
        frame[c.RFM_SEGMENT] = segments_of(frame[c.R_SCORE], frame[c.F_SCORE])
    ordered = [*c.FEATURE_COLUMNS, *contacts]
    return frame[ordered]


def _quality(
    con: duckdb.DuckDBPyConnection,
    sources: list[Source],
    fmt: InputFormat,
    as_of: dt.date,
    malformed: int,
    customers: int,
) -> dict:
    as_of_sql = lit(as_of.isoformat())
    counts = dict(
        con.execute(f"""
        SELECT reason, count(*) FROM (
            SELECT CASE
                WHEN r.{REASON} IS NOT NULL THEN r.{REASON}
                WHEN r.{DAY} > {as_of_sql}::DATE THEN 'date_after_as_of'
                WHEN k.{c.FREQUENCY} = 0 THEN 'return_without_purchase'
            END AS reason
            FROM rows r LEFT JOIN customers k ON r.{CUST} = k.{c.CUSTOMER_ID}
        ) GROUP BY reason""").fetchall()
    )
    used = counts.pop(None, 0)
    by_reason = {reason: counts.get(reason, 0) for reason in QUARANTINE_REASONS}
    by_reason["malformed_line"] = malformed
    quarantined = sum(by_reason.values())
    netted = con.execute(
        f"SELECT count(*) FROM rows r JOIN customers k ON r.{CUST} = k.{c.CUSTOMER_ID} "
        f"WHERE r.{REASON} IS NULL AND r.{IS_RETURN} AND k.{c.FREQUENCY} > 0 "
        f"AND r.{DAY} <= {as_of_sql}::DATE"
    ).fetchone()[0]
    only_returns = con.execute(f"SELECT count(*) FROM customers WHERE {c.FREQUENCY} = 0").fetchone()[0]
    return {
        "input_files": [s.name for s in sources],
        "input_format": fmt.name,
        "column_mapping": fmt.columns,
        "as_of_date": as_of.isoformat(),
        "rows_read": used + quarantined,
        "rows_used": used,
        "rows_quarantined": quarantined,
        "quarantined_by_reason": {k: v for k, v in by_reason.items() if v},
        "returns_netted": netted,
        "customers": customers,
        "customers_with_only_returns": only_returns,
    }


def write_features(result: FeatureResult, output: Path, transform_output: Path | None = None) -> None:
    """Write ``rfm.parquet``, ``quality.json``, ``quarantine/`` (and the transform CSV)."""
    output.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(result.features, preserve_index=False)
    pq.write_table(table, output / paths.RFM_FILE)
    (output / paths.QUALITY_FILE).write_text(json.dumps(result.quality, indent=2, sort_keys=True) + "\n")
    _write_quarantine(result, output / paths.QUARANTINE_DIR)
    if transform_output is not None:
        transform_output.mkdir(parents=True, exist_ok=True)
        columns = list(c.TRANSFORM_INPUT_COLUMNS)
        result.features[columns].to_csv(transform_output / paths.TRANSFORM_INPUT_FILE, index=False)


def _write_quarantine(result: FeatureResult, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*"):
        old.unlink()
    if not result.quality["rows_quarantined"]:
        return
    con, as_of = result.con, lit(result.quality["as_of_date"])
    own = ", ".join(f"r.{q(n)}" for n in result.original_columns)
    con.execute(f"""
        COPY (
            SELECT {own}, CASE
                WHEN r.{REASON} IS NOT NULL THEN r.{REASON}
                WHEN r.{DAY} > {as_of}::DATE THEN 'date_after_as_of'
                ELSE 'return_without_purchase' END AS {c.QUARANTINE_REASON},
                r.{SRC_FILE} AS {c.SOURCE_FILE}, r.{SRC_ROW} AS {c.SOURCE_ROW}
            FROM rows r LEFT JOIN customers k ON r.{CUST} = k.{c.CUSTOMER_ID}
            WHERE r.{REASON} IS NOT NULL OR r.{DAY} > {as_of}::DATE OR k.{c.FREQUENCY} = 0
            ORDER BY {c.SOURCE_FILE}, {c.SOURCE_ROW}
        ) TO {lit(str(folder / "rows.parquet"))} (FORMAT parquet)""")
    if result.malformed:
        malformed = pd.DataFrame(result.malformed, columns=[c.SOURCE_FILE, "line", "text"])
        malformed[c.QUARANTINE_REASON] = "malformed_line"
        malformed.to_parquet(folder / "malformed_lines.parquet", index=False)


def run(
    location: str,
    output: Path,
    *,
    transform_output: Path | None = None,
    input_format: str = "auto",
    mapping: dict[str, str] | None = None,
    as_of: dt.date | None = None,
) -> FeatureResult:
    """Read ``location``, compute the features and write every artifact under ``output``."""
    with tempfile.TemporaryDirectory(prefix="rfm-features-") as workdir:
        sources = open_sources(location, Path(workdir))
        con = connect(temp_directory=str(Path(workdir) / "spill"))
        result = compute_features(sources, input_format=input_format, mapping=mapping, as_of=as_of, con=con)
        write_features(result, output, transform_output)
    return result
