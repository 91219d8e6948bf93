"""``--engine spark``: the DuckDB engine's artifacts, with the per-customer aggregation in Spark.

The driver finds, sniffs and plans the files exactly as the DuckDB engine does
(``steps.features.compute``: formats, column mapping, date orders). Spark
then reads every file in its own task (``steps.features.spark.tasks``: the
DuckDB engine's SQL on one file) and aggregates per customer into the rows of
``customer_rows``, exactly: identical rows are counted once per (customer,
row hash) before the per-customer totals, so no recount is needed. The driver
loads that table into DuckDB and the DuckDB engine's own code scores the
customers and writes ``rfm.parquet``, ``quality.json`` and ``quarantine/``: the run is
:func:`steps.features.compute.run` with :class:`SparkAggregation` as its aggregation, so the
memory limit, threads and memory retry are the driver DuckDB's, as on the DuckDB engine.

With ``--state`` the run is incremental: see ``steps.features.spark.contributions``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa

from steps.features.aggregate import CUSTOMER_ROWS, customer_rows_columns
from steps.features.compute import FeatureResult, run
from steps.features.options import FeatureOptions
from steps.features.quarantine import FLAGGED_CUSTOMERS, REJECTED_LINES, flag_customers, register_files
from steps.features.spark.aggregate import customer_rows_frame
from steps.features.spark.contributions import WORKDIR_ENV
from steps.features.spark.tasks import (
    ERROR_SENTINEL,
    FLAGGED_SCHEMA,
    REJECTED_SENTINEL,
    SIDE,
    FileTask,
    canonical_batches,
    flagged_batches,
    from_ipc,
    raise_payload,
    spark_schema,
    to_ipc,
)
from steps.features.transactions import CUST, FILE_NO, REASON, CanonicalSource

log = logging.getLogger("rfm.features")


class SparkAggregation:
    """The Spark engine's per-customer aggregation: the hook of :func:`steps.features.compute.compute_features`.

    Parameters
    ----------
    workdir : str
        Where Spark writes the per-customer rows (a local folder, or an ``s3://`` prefix
        on a cluster); the driver reads them back.
    """

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir

    def __call__(self, con: duckdb.DuckDBPyConnection, planned: list[CanonicalSource], *, cutoff: dt.date,
                 contacts: list[str], where: str, timezone: str | None = None) -> tuple[int, list[str]]:
        tasks = [FileTask(p, cutoff, tuple(contacts), where, timezone) for p in planned]
        return aggregate_in_spark(con, planned, tasks, contacts, self.workdir)


@contextlib.contextmanager
def spark_aggregation(workdir: str | None = None) -> Iterator[SparkAggregation]:
    """A :class:`SparkAggregation` working in ``workdir``, else ``RFM_SPARK_WORKDIR``, else a local
    folder removed after."""
    with tempfile.TemporaryDirectory(prefix="rfm-features-spark-") as local:
        yield SparkAggregation(workdir or os.environ.get(WORKDIR_ENV) or os.path.join(local, "spark"))


def aggregate_in_spark(
    con: duckdb.DuckDBPyConnection,
    planned: list[CanonicalSource],
    tasks: list[FileTask],
    contacts: list[str],
    workdir: str,
) -> tuple[int, list[str]]:
    """Create ``customer_rows``, ``rejected_lines``, ``flagged_customers`` and the flagged-rows tables.

    Returns what :func:`steps.features.compute.aggregate_sources` returns.
    """
    from steps.features.spark.session import spark_session

    spark = spark_session()
    register_files(con, planned)
    by_number = {t.src.file_no: t for t in tasks}

    def read(batches):  # one partition holds one file number
        for numbers in batches:
            for number in numbers.column(0).to_pylist():
                yield from canonical_batches(by_number[number])

    files = spark.range(len(tasks), numPartitions=max(1, len(tasks))).withColumnRenamed("id", FILE_NO)
    rows = files.mapInArrow(read, spark_schema(contacts))
    target = f"{workdir.rstrip('/')}/customer_rows"
    customer_rows_frame(rows, contacts).write.mode("overwrite").parquet(target)
    _load_customer_rows(con, target, contacts)
    malformed = _load_side_rows(con)
    bad_rows, flagged = flag_customers(con)
    log.debug("quarantined %d rows by row reason, %d customers flagged", bad_rows, flagged)
    tables = _read_flagged_rows(con, spark, tasks) if bad_rows or flagged else []
    return malformed, tables


def _load_customer_rows(con: duckdb.DuckDBPyConnection, target: str, contacts: list[str]) -> None:
    """``customer_rows`` (and ``spark_side_rows``) in DuckDB, with the DuckDB engine's column types."""
    import pyarrow.dataset as ds

    dataset = ds.dataset(target, format="parquet", exclude_invalid_files=True)
    typed = customer_rows_columns(contacts)
    columns = [name for name, _ in typed]
    con.execute(f"CREATE OR REPLACE TEMP TABLE {CUSTOMER_ROWS} ({', '.join(f'{n} {k}' for n, k in typed)})")
    con.execute(f"CREATE OR REPLACE TEMP TABLE spark_side_rows ({REASON} TINYINT, {FILE_NO} INTEGER, {SIDE} BLOB)")
    if not dataset.files:
        return
    con.register("spark_customer_rows", dataset)
    try:
        con.execute(f"""
            INSERT INTO {CUSTOMER_ROWS} BY NAME
            SELECT {', '.join(columns)} FROM spark_customer_rows WHERE {REASON} >= 0""")
        con.execute(f"""
            INSERT INTO spark_side_rows
            SELECT {REASON}, CAST(split_part({CUST}, ':', 2) AS INTEGER), {SIDE}
            FROM spark_customer_rows WHERE {REASON} < 0""")
    finally:
        con.unregister("spark_customer_rows")


def _load_side_rows(con: duckdb.DuckDBPyConnection) -> int:
    """Stop on the first file a task could not read; else create ``rejected_lines`` and count them."""
    sides = con.execute(f"SELECT {REASON}, {SIDE} FROM spark_side_rows ORDER BY {FILE_NO}").fetchall()
    for reason, payload in sides:
        if reason == ERROR_SENTINEL:
            raise_payload(payload)
    rejected = [from_ipc(payload) for reason, payload in sides if reason == REJECTED_SENTINEL]
    columns = "file_no INTEGER, row_no BIGINT, text VARCHAR, error VARCHAR, rows_before BIGINT"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {REJECTED_LINES} ({columns})")
    for number, table in enumerate(t for t in rejected if t.num_rows):
        con.register(f"rejected_{number}", table)
        con.execute(f"INSERT INTO {REJECTED_LINES} BY NAME SELECT * FROM rejected_{number}")
        con.unregister(f"rejected_{number}")
    return int(con.execute(f"SELECT count(*) FROM {REJECTED_LINES}").fetchall()[0][0])


def _read_flagged_rows(con: duckdb.DuckDBPyConnection, spark, tasks: list[FileTask]) -> list[str]:
    """Second read in Spark; the rows land in ``flagged_rows_<n>``, one table per set of file columns."""
    flagged = to_ipc(con.sql(f"SELECT * FROM {FLAGGED_CUSTOMERS}").to_arrow_table())
    shared = spark.sparkContext.broadcast(flagged)
    by_number = {t.src.file_no: t for t in tasks}

    def read(batches):
        for numbers in batches:
            for number in numbers.column(0).to_pylist():
                yield from flagged_batches(by_number[number], shared.value)

    files = spark.range(len(tasks), numPartitions=max(1, len(tasks))).withColumnRenamed("id", FILE_NO)
    parts = sorted(files.mapInArrow(read, FLAGGED_SCHEMA).collect(), key=lambda r: (r[FILE_NO], r["part"]))
    shared.unpersist()
    pieces: dict[int, list[pa.Table]] = {}
    for row in parts:
        pieces.setdefault(row[FILE_NO], []).append(from_ipc(row["payload"]))
    groups: dict[tuple, list[pa.Table]] = {}
    for task in tasks:  # the DuckDB engine's grouping: files with the same columns share a table
        groups.setdefault(tuple(task.src.raw_types.items()), []).extend(pieces.get(task.src.file_no, []))
    tables = []
    for number, group in enumerate(groups.values()):
        table = f"flagged_rows_{number}"
        con.register("flagged_arrow", pa.concat_tables(group))
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM flagged_arrow")
        con.unregister("flagged_arrow")
        tables.append(table)
    return tables


def run_spark(location: str, output: Path, options: FeatureOptions | None = None, *,
              workdir: str | None = None) -> FeatureResult:
    """:func:`steps.features.compute.run` on the Spark engine (same options, same artifacts).

    Parameters
    ----------
    workdir : str, optional
        Where Spark writes intermediate rows: an ``s3://`` prefix on a cluster
        (``RFM_SPARK_WORKDIR``); default a local temporary folder.
    """
    with spark_aggregation(workdir) as aggregate:
        return run(location, output, options, aggregate=aggregate)
