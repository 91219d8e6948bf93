"""What one Spark task does with one input file: the DuckDB engine's own SQL, on that file alone.

Each task opens the file with a one-thread DuckDB connection and runs
:func:`~steps.features.transactions.canonical_select` on it, so parsing,
classification and row hashes are the DuckDB engine's, by construction.

:func:`canonical_batches` (first read) streams the canonical rows as Arrow
batches of :data:`CANONICAL_SCHEMA`, then one *side* row carrying the lines
the CSV reader rejected (``rejected_lines`` of that file, as Arrow IPC). A
file that cannot be read yields one side row with the error instead, so the
driver stops with the same one-line error as the DuckDB engine.
:func:`flagged_batches` (second read, only when rows are quarantined) keeps
the quarantined rows and the flagged customers' rows with the file's own
columns, as Arrow IPC chunks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import io
import json
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from steps.errors import InputDataError, RFMError, first_line
from steps.features.quarantine import FLAGGED_CUSTOMERS, REJECTED_LINES, collect_rejected_lines, register_files
from steps.features.transactions import (
    AMOUNT,
    CONTACT_PREFIX,
    CUST,
    DAY,
    FILE_NO,
    FLOAT_ID,
    HAS_ID,
    IS_RETURN,
    ORDER,
    REASON,
    ROW_HASH,
    CanonicalSource,
    canonical_select,
    quarantined_sql,
)

SIDE = "side"
# Side rows carry a negative reason: the file's rejected lines, or why the file cannot be read.
REJECTED_SENTINEL, ERROR_SENTINEL = -1, -2
BATCH_ROWS = 128 * 1024
# DuckDB's 64-bit row hash is unsigned; Spark has no unsigned type, so it is shifted into BIGINT.
_HASH_SHIFT = 9223372036854775808


@dataclass(frozen=True)
class FileTask:
    """Everything a task needs to read one file (pickled to the executors)."""

    src: CanonicalSource
    as_of: dt.date
    contacts: tuple[str, ...]
    where: str
    timezone: str | None = None


def spark_schema(contacts: Iterable[str]) -> str:
    """The Spark DDL schema of :func:`canonical_batches`' output."""
    extra = "".join(f", {CONTACT_PREFIX}{name} string" for name in contacts)
    return (f"{REASON} tinyint, {CUST} string, {ORDER} string, {DAY} date, {AMOUNT} bigint, "
            f"{IS_RETURN} boolean, {FLOAT_ID} boolean, {HAS_ID} boolean, {ROW_HASH} bigint{extra}, {FILE_NO} int, "
            f"{SIDE} binary")


FLAGGED_SCHEMA = f"{FILE_NO} int, part int, payload binary"


def _connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.execute("SET enable_progress_bar=false")
    con.execute("SET threads=1")  # Spark runs one task per core
    return con


def to_ipc(table: pa.Table) -> bytes:
    """An Arrow table as IPC stream bytes."""
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def from_ipc(payload: bytes) -> pa.Table:
    """The table of :func:`to_ipc`."""
    return pa.ipc.open_stream(payload).read_all()


def error_payload(error: RFMError) -> bytes:
    """An error as side-row bytes (see :func:`raise_payload`)."""
    return json.dumps({"what": error.what, "where": error.where, "fix": error.fix}).encode()


def raise_payload(payload: bytes) -> None:
    """Raise the error a task reported (one line, as the DuckDB engine would)."""
    fields = json.loads(payload)
    raise InputDataError(fields["what"], fields["where"], fields["fix"])


@contextlib.contextmanager
def local_copy(src: CanonicalSource) -> Iterator[CanonicalSource]:
    """``src`` with a file this machine can read.

    The driver downloads S3 objects to its own disk to sniff them; a task on
    another instance of the cluster finds no such file there and downloads
    its object (``src.source.origin``) itself, into a folder removed after
    (and makes its UTF-8 copy there too, for a ``transcoded_from`` file).
    """
    path = src.source.path
    if path.exists() or not src.source.origin.startswith("s3://"):
        yield src
        return
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = src.source.origin.removeprefix("s3://").partition("/")
    with tempfile.TemporaryDirectory(prefix="rfm-task-") as folder:
        local = Path(folder) / path.name
        try:
            boto3.client("s3").download_file(bucket, key, str(local))
        except (BotoCoreError, ClientError) as error:
            raise InputDataError(f"a Spark task cannot download the object: {first_line(error)}",
                                 src.source.origin, "Check that it still exists and the role may read it") from None
        if src.source.transcoded_from:
            from steps.features.sources import GZIP_MAGIC, check_whole_file

            with local.open("rb") as handle:
                compressed = handle.read(2) == GZIP_MAGIC
            text = Path(folder) / "utf8.csv"
            check_whole_file(local, src.source.transcoded_from, src.source.origin, compressed=compressed,
                             copy_to=text)
            local = text
        yield dataclasses.replace(src, source=dataclasses.replace(src.source, path=local))


def canonical_batches(task: FileTask) -> Iterator[pa.RecordBatch]:
    """The file's canonical rows, then one side row (its rejected lines, or the error)."""
    try:
        with local_copy(task.src) as src:
            yield from _canonical_batches(task, src)
    except InputDataError as error:  # the download failed: nothing was yielded yet
        yield _side_batch(None, task, ERROR_SENTINEL, error_payload(error))


def _canonical_batches(task: FileTask, src: CanonicalSource) -> Iterator[pa.RecordBatch]:
    con = _connect()
    schema: pa.Schema | None = None
    try:
        register_files(con, [src])
        canonical = canonical_select(src, as_of=task.as_of, contacts=list(task.contacts), store_rejects=True,
                                     timezone=task.timezone)
        contacts = "".join(f", {CONTACT_PREFIX}{name}" for name in task.contacts)
        reader = con.sql(f"""
            SELECT CAST({REASON} AS TINYINT) AS {REASON}, {CUST}, {ORDER}, {DAY}, {AMOUNT}, {IS_RETURN}, {FLOAT_ID},
                   {HAS_ID}, CAST(CAST({ROW_HASH} AS HUGEINT) - {_HASH_SHIFT} AS BIGINT) AS {ROW_HASH}{contacts},
                   CAST({src.file_no} AS INTEGER) AS {FILE_NO}, CAST(NULL AS BLOB) AS {SIDE}
            FROM ({canonical})""").to_arrow_reader(BATCH_ROWS)
        schema = reader.schema
        yield from reader
        collect_rejected_lines(con)
        side = (REJECTED_SENTINEL, to_ipc(con.sql(f"SELECT * FROM {REJECTED_LINES}").to_arrow_table()))
    except RFMError as error:
        side = (ERROR_SENTINEL, error_payload(error))
    except duckdb.OutOfMemoryException:
        raise
    except duckdb.Error as error:
        side = (ERROR_SENTINEL, error_payload(
            InputDataError(f"cannot read the transactions: {first_line(error)}", task.where)))
    finally:
        con.close()
    yield _side_batch(schema, task, *side)


def _side_batch(schema: pa.Schema | None, task: FileTask, reason: int, payload: bytes) -> pa.RecordBatch:
    names = [REASON, CUST, ORDER, DAY, AMOUNT, IS_RETURN, FLOAT_ID, HAS_ID, ROW_HASH,
             *(f"{CONTACT_PREFIX}{n}" for n in task.contacts), FILE_NO, SIDE]
    types = [pa.int8(), pa.string(), pa.string(), pa.date32(), pa.int64(), pa.bool_(), pa.bool_(), pa.bool_(),
             pa.int64(),
             *(pa.string() for _ in task.contacts), pa.int32(), pa.binary()]
    schema = schema or pa.schema(list(zip(names, types, strict=True)))
    values = {REASON: [reason], CUST: [f"{reason}:{task.src.file_no}"], FILE_NO: [task.src.file_no],
              SIDE: [payload]}
    return pa.RecordBatch.from_arrays(
        [pa.array(values.get(f.name, [None]), type=f.type) for f in schema], schema=schema)


def flagged_batches(task: FileTask, flagged: bytes) -> Iterator[pa.RecordBatch]:
    """Second read of one file: its quarantined rows and the flagged customers' rows, own columns kept.

    Parameters
    ----------
    flagged : bytes
        Arrow IPC of the flagged customers (``flagged_customers`` on the driver).
    """
    with local_copy(task.src) as src:
        yield from _flagged_batches(task, src, flagged)


def _flagged_batches(task: FileTask, src: CanonicalSource, flagged: bytes) -> Iterator[pa.RecordBatch]:
    con = _connect()
    try:
        register_files(con, [src])
        con.register("flagged_arrow", from_ipc(flagged))
        con.execute(f"CREATE TEMP TABLE {FLAGGED_CUSTOMERS} AS SELECT * FROM flagged_arrow")
        con.execute("SET preserve_insertion_order=true")  # CSV row numbers come from the read order
        select = canonical_select(src, as_of=task.as_of, contacts=list(task.contacts), keep_raw=True,
                                  store_rejects=True, timezone=task.timezone)  # see read_flagged_rows
        reader = con.sql(f"""
            SELECT * FROM ({select})
            WHERE {quarantined_sql(REASON)}
               OR ({REASON} = 0 AND {CUST} IN (SELECT {CUST} FROM {FLAGGED_CUSTOMERS}))""").to_arrow_reader(
            BATCH_ROWS)
        part = 0
        for batch in reader:
            yield _payload_batch(src.file_no, part, to_ipc(pa.Table.from_batches([batch])))
            part += 1
        if part == 0:  # the schema even when nothing matched
            yield _payload_batch(src.file_no, 0, to_ipc(reader.schema.empty_table()))
    finally:
        con.close()


def _payload_batch(file_no: int, part: int, payload: bytes) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {FILE_NO: pa.array([file_no], pa.int32()), "part": pa.array([part], pa.int32()),
         "payload": pa.array([payload], pa.binary())})
