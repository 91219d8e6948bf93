"""Incremental ``--engine spark``: each object that changed is read into its contribution in a Spark task.

The incremental run is :func:`steps.features.fold.run_history`, the DuckDB engine's own fold, with
:class:`SparkObjectReader` as its reader. Reading an object is the part proportional to rows: a
task per object runs :func:`~steps.features.fold.read_object` (the DuckDB engine's code, on a
one-thread DuckDB connection), writes the contribution straight into the state (``objects/``) and
hands back to the driver only what is small or customer-sized: the manifest entry, the object's
rejected lines, flagged customers and quarantined rows. The driver then folds as the DuckDB engine
does (old totals, removed and replaced objects subtracted exactly, manifest, ``current.json``).
A rebuild's check for orders that span objects runs in Spark over the orders each task wrote.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from steps.errors import InputDataError, RFMError, first_line
from steps.features.compute import connect, set_memory_limit
from steps.features.fold import ObjectJob, ObjectRead, ObjectReader, contribution_name, read_object, warn_spanning
from steps.features.formats import InputFormat
from steps.features.history import split_s3
from steps.features.quarantine import FLAGGED_CUSTOMERS, INPUT_FILES, REJECTED_LINES
from steps.features.spark.tasks import error_payload, from_ipc, raise_payload, to_ipc
from steps.features.state import StateStore
from steps.features.transactions import CUST, ORDER

# Where a run's Spark tasks put files the driver reads with Spark (an s3:// prefix on a cluster).
WORKDIR_ENV = "RFM_SPARK_WORKDIR"
# An object's tables the fold collects (see steps.features.fold._read_objects).
_OBJECT_TABLES = (INPUT_FILES, REJECTED_LINES, FLAGGED_CUSTOMERS)


@dataclass
class TaskResult:
    """What one task hands back for one object (pickled to the driver)."""

    file_no: int
    error: bytes | None = None
    entry: dict = field(default_factory=dict)
    fmt: InputFormat | None = None
    tables: dict[str, bytes] = field(default_factory=dict)  # table name -> Arrow IPC
    flagged: list[tuple[str, bytes]] = field(default_factory=list)  # flagged-rows tables, in order


def contribute(job: ObjectJob, state: str, orders: str, memory_limit: str) -> TaskResult:
    """One Spark task: read ``job``'s object into its contribution, written into the ``state``.

    Parameters
    ----------
    state : str
        The state's location (a folder, or an ``s3://`` prefix).
    orders : str
        Folder or ``s3://`` prefix for a rebuild's (customer, order) file of the object.
    memory_limit : str
        The task's DuckDB memory limit (past it, DuckDB spills to the task's disk).
    """
    with tempfile.TemporaryDirectory(prefix="rfm-contribution-") as folder:
        work = Path(folder)
        con = connect(str(work / "spill"), threads=1)  # Spark runs one task per core
        try:
            set_memory_limit(con, memory_limit)
            read = read_object(con, job, work)
            result = TaskResult(job.file_no, entry=read.entry, fmt=read.fmt)
            if read.fmt is None:  # no data rows: nothing to write
                return result
            name = contribution_name(job.obj)
            StateStore(state).write_file(name, Path(read.entry.pop("_local")))
            read.entry["contribution"] = name
            if job.spanning:
                put_file(work / "orders" / f"{job.file_no}.parquet", f"{orders}/{job.file_no}.parquet")
            result.tables = {t: to_ipc(con.sql(f"SELECT * FROM {t}").to_arrow_table()) for t in _OBJECT_TABLES}
            result.flagged = [(t, to_ipc(con.sql(f"SELECT * FROM {t}").to_arrow_table())) for t in read.tables]
            return result
        except RFMError as error:
            return TaskResult(job.file_no, error=error_payload(error))
        except duckdb.OutOfMemoryException:
            raise
        except duckdb.Error as error:  # as the DuckDB engine reports it (steps.features.compute)
            return TaskResult(job.file_no, error=error_payload(
                InputDataError(f"cannot read the transactions: {first_line(error)}", job.obj.key)))
        finally:
            con.close()


def put_file(local: Path, target: str) -> None:
    """Copy ``local`` to ``target``: a local path, or an ``s3://`` URI."""
    if target.startswith("s3://"):
        from steps.features.history import s3_client

        bucket, key = split_s3(target)
        s3_client().upload_file(str(local), bucket, key)
        return
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(local, target)


class SparkObjectReader(ObjectReader):
    """The objects of a run read in Spark tasks, one object a task (see the module docstring).

    Parameters
    ----------
    store : StateStore
        The run's state (tasks write the contributions into it).
    workdir : str
        Folder or ``s3://`` prefix for the files the tasks leave for the driver's Spark.
    memory_limit : str
        Each task's DuckDB memory limit.
    """

    def __init__(self, store: StateStore, workdir: str, memory_limit: str) -> None:
        self.state = store.location if store.is_s3 else str(store.root.resolve())  # tasks may run elsewhere
        self.store = store
        workdir = workdir if workdir.startswith("s3://") else str(Path(workdir).resolve())
        self.orders = f"{workdir.rstrip('/')}/orders-{uuid.uuid4().hex[:12]}"
        self.memory_limit = memory_limit
        self.wrote_orders = False

    def read(self, con: duckdb.DuckDBPyConnection, jobs: list[ObjectJob], work: Path) -> Iterator[ObjectRead]:
        """Every object in its own task; the results in ``jobs`` order, each with its tables in ``con``."""
        if not jobs:
            return
        from steps.features.spark.session import spark_session

        spark = spark_session()
        state, orders, limit = self.state, self.orders, self.memory_limit
        results = (spark.sparkContext.parallelize(jobs, len(jobs))
                   .map(lambda job: contribute(job, state, orders, limit)).collect())
        for result in sorted(results, key=lambda r: r.file_no):
            if result.error is not None:
                raise_payload(result.error)
            self.wrote_orders = self.wrote_orders or (result.fmt is not None and jobs[0].spanning)
            yield self._load(con, jobs[result.file_no], result, work)

    def _load(self, con: duckdb.DuckDBPyConnection, job: ObjectJob, result: TaskResult, work: Path) -> ObjectRead:
        """A task's result as :func:`~steps.features.fold.read_object` leaves it in the driver's ``con``."""
        entry = dict(result.entry)
        if result.fmt is None:
            return ObjectRead(job.obj, entry, [], None)
        local = work / "contributions" / f"{job.file_no}.parquet"
        entry["_local"] = str(self.store.download(entry["contribution"], local))
        for name, payload in [*result.tables.items(), *result.flagged]:
            _create_table(con, name, from_ipc(payload))
        return ObjectRead(job.obj, entry, [name for name, _ in result.flagged], result.fmt)

    def spanning_orders(self, con: duckdb.DuckDBPyConnection, work: Path) -> int:
        """Orders whose lines are in more than one object, counted in Spark over the tasks' order files."""
        if not self.wrote_orders:
            return 0
        from pyspark.sql import functions as F

        from steps.features.spark.session import spark_session

        orders = spark_session().read.parquet(self.orders)
        spans = orders.groupBy(CUST, ORDER).agg(F.countDistinct("file_no").alias("objects")).where("objects > 1")
        count, customer, order = spans.agg(F.count(F.lit(1)), F.min(CUST), F.min_by(ORDER, CUST)).first()
        return warn_spanning(int(count), customer, order)


def _create_table(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> None:
    con.register("spark_task_table", table)
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM spark_task_table")
    finally:
        con.unregister("spark_task_table")


@contextlib.contextmanager
def spark_reader(store: StateStore, memory_limit: str) -> Iterator[SparkObjectReader]:
    """A :class:`SparkObjectReader` working in ``RFM_SPARK_WORKDIR``, else in a local folder removed after."""
    with tempfile.TemporaryDirectory(prefix="rfm-features-spark-") as local:
        yield SparkObjectReader(store, os.environ.get(WORKDIR_ENV) or local, memory_limit)
