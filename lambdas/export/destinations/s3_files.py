"""The ``s3`` destination: files people open, and Parquet partitions for machines, under ``output_uri``.

Layout::

    export/index.csv                      what is where: group, name, customers, revenue, csv, parquet
    export/segments/<slug>.csv            customers of one RFM segment, e.g. champions.csv
    export/clusters/<slug>.csv            customers of one k-means cluster, named after it,
                                          e.g. lapsed-one-time-low-spenders.csv
    export/changes.csv                    who entered, left or moved since the last publish
    export/rfm_segment=<slug>/part.parquet   the same rows, Hive-partitioned for Athena, Spark, pandas
    export/cluster=<n>/part.parquet

CSVs quote every text value (numbers stay bare, missing values are empty), so ids such as
``007`` or ``1e3`` survive spreadsheet-like readers. Text cells a spreadsheet would run as a
formula (starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) get a leading ``'``
(:func:`neutralise`, OWASP's advice against CSV injection); the Parquet files keep every value as
it is. A re-run overwrites the same files and deletes files under ``export/`` it did not write,
so a customer who left a segment, or the data, is in none of its files. Works on ``s3://`` URIs
or local folders.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from lambdas.export.names import segment_slugs, slug
from lambdas.export.storage import Storage, join
from steps.columns import CLUSTER, CLUSTER_NAME, MONETARY, RFM_SEGMENT

EXPORT_DIR = "export"
INDEX_FILE = "index.csv"
CHANGES_CSV = "changes.csv"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
PLAIN_NUMBER = r"^[+-]?[0-9]+(\.[0-9]+)?$"  # a number, not a formula: left as it is
INDEX_COLUMNS = ("group", "name", "customers", "revenue", "csv", "parquet")


def neutralise(values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Text values that start like a formula, with ``'`` in front so that spreadsheets show them as text.

    Plain numbers (``+14155550100``, an E.164 phone number; ``-5``) are no formula and stay as they
    are, so the files still load into SMS and e-mail tools.

    Examples
    --------
    >>> neutralise(pa.array(["=1+1", "Loyal", None, "-5", "+14155550100", "@SUM(A1)", "a=b", "+1+cmd"])).to_pylist()
    ["'=1+1", 'Loyal', None, '-5', '+14155550100', "'@SUM(A1)", 'a=b', "'+1+cmd"]
    """
    pattern = "^[" + "".join("\\" + c if c in "-+" else c for c in FORMULA_STARTS) + "]"
    number = pc.fill_null(pc.match_substring_regex(values, PLAIN_NUMBER), False)
    risky = pc.and_(pc.fill_null(pc.match_substring_regex(values, pattern), False), pc.invert(number))
    quote, empty = pa.scalar("'", values.type), pa.scalar("", values.type)
    return pc.if_else(risky, pc.binary_join_element_wise(quote, values, empty), values)


def safe_for_spreadsheets(table: pa.Table) -> pa.Table:
    """``table`` with :func:`neutralise` applied to every text column."""
    for index, field in enumerate(table.schema):
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            table = table.set_column(index, field, neutralise(table.column(index)))
    return table


def partitions(segments: pa.Table) -> dict[str, pa.Table]:
    """``{"export/rfm_segment=<slug>": rows, "export/cluster=<n>": rows}``; sorted keys, rows in order.

    Two segment names with one slug are an error (:func:`~lambdas.export.names.segment_slugs`).
    """
    names = sorted(pc.unique(segments[RFM_SEGMENT]).to_pylist())
    slugs = segment_slugs(names)
    parts = {
        f"{EXPORT_DIR}/{RFM_SEGMENT}={slugs[n]}": segments.filter(pc.equal(segments[RFM_SEGMENT], n))
        for n in names
    }
    for cluster in sorted(pc.unique(segments[CLUSTER]).to_pylist()):
        parts[f"{EXPORT_DIR}/{CLUSTER}={int(cluster)}"] = segments.filter(
            pc.equal(segments[CLUSTER], cluster)
        )
    return parts


def cluster_file_names(segments: pa.Table) -> dict[int, str]:
    """Cluster -> the slug of its name (``lapsed-one-time-low-spenders``); ``-<n>`` added when two
    clusters' names give one slug.

    Examples
    --------
    >>> table = pa.table({"cluster": [0, 1, 2], "cluster_name": ["Big spenders", "Big  Spenders", "Lapsed"]})
    >>> cluster_file_names(table)
    {0: 'big-spenders-0', 1: 'big-spenders-1', 2: 'lapsed'}
    """
    pairs = sorted(set(zip(segments[CLUSTER].to_pylist(), segments[CLUSTER_NAME].to_pylist(), strict=True)))
    names = {int(cluster): slug(str(name)) for cluster, name in pairs}
    taken = [name for name in names.values()]
    return {cluster: name if taken.count(name) == 1 else f"{name}-{cluster}" for cluster, name in names.items()}


CHUNK_ROWS = 100_000  # rows converted at a time: a large segment's file never needs a second full copy


def _chunks(table: pa.Table, rows: pa.Array | None = None) -> Iterator[pa.Table]:
    """``table`` (at ``rows``, when given) a :data:`CHUNK_ROWS` slice at a time."""
    count = table.num_rows if rows is None else len(rows)
    for start in range(0, count, CHUNK_ROWS):
        yield (table.slice(start, CHUNK_ROWS) if rows is None
               else table.take(rows.slice(start, CHUNK_ROWS)))


def _decoded(table: pa.Table) -> pa.Table:
    """``table`` with dictionary-encoded columns as their plain values."""
    return table.cast(pa.schema([pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
                                 for f in table.schema]))


def write_csv(table: pa.Table, sink: Any, rows: pa.Array | None = None) -> None:
    """CSV with a header into ``sink``; text quoted (``"007"``) and neutralised (:func:`neutralise`),
    numbers bare, nulls empty, ``\\n`` line ends; ``rows``: only those rows. Written a chunk at a time
    (dictionary-encoded columns decoded a chunk at a time)."""
    schema = _decoded(table.slice(0, 0)).schema
    with pa_csv.CSVWriter(sink, schema, write_options=pa_csv.WriteOptions(quoting_style="needed")) as writer:
        for chunk in _chunks(table, rows):
            writer.write_table(safe_for_spreadsheets(_decoded(chunk)))


def to_csv(table: pa.Table, rows: pa.Array | None = None) -> bytes:
    """:func:`write_csv` as bytes."""
    buffer = io.BytesIO()
    write_csv(table, buffer, rows)
    return buffer.getvalue()


class FilesWriter:
    """The files of :func:`export`, written a batch of customers at a time (each file streamed).

    Parameters
    ----------
    output_uri : str
        Where ``export/`` goes.
    storage : Storage
        Each file is opened with :meth:`Storage.open_write` (an S3 multipart upload).
    segment_names : list of str
        Every RFM segment with customers (their slugs are checked here, before anything is written).
    clusters : dict
        Cluster -> its name as the index shows it (the name of its first customer by id), for every
        cluster with customers; :func:`cluster_file_names` gives its file name.
    """

    def __init__(self, output_uri: str, storage: Storage, segment_names: list[str], clusters: dict[int, str],
                 file_names: dict[int, str]) -> None:
        self.output_uri, self.storage = output_uri, storage
        names = sorted(segment_names)
        slugs = segment_slugs(names)
        self.groups: list[dict[str, Any]] = [
            {"group": RFM_SEGMENT, "name": name, "column": RFM_SEGMENT, "value": name,
             "csv": f"{EXPORT_DIR}/segments/{slugs[name]}.csv",
             "parquet": f"{EXPORT_DIR}/{RFM_SEGMENT}={slugs[name]}/part.parquet"}
            for name in names
        ] + [
            {"group": CLUSTER, "name": clusters[cluster], "column": CLUSTER, "value": cluster,
             "csv": f"{EXPORT_DIR}/clusters/{file_names[cluster]}.csv",
             "parquet": f"{EXPORT_DIR}/{CLUSTER}={cluster}/part.parquet"}
            for cluster in sorted(clusters)
        ]
        self.open: list[tuple[Any, Any, Any, Any]] = []  # per group: csv sink, csv writer, parquet sink, writer
        self.customers = 0
        self.counts = [0] * len(self.groups)
        self.revenue = [0.0] * len(self.groups)

    def _uri(self, relative: str) -> str:
        return join(self.output_uri, *relative.split("/"))

    def write(self, batch: pa.Table) -> None:
        """Append ``batch`` (customers in id order) to the files of the groups its customers are in."""
        if not self.open:
            for group in self.groups:
                csv_sink = self.storage.open_write(self._uri(group["csv"]))
                parquet_sink = self.storage.open_write(self._uri(group["parquet"]))
                self.open.append((csv_sink, pa_csv.CSVWriter(csv_sink, batch.schema, write_options=pa_csv.WriteOptions(
                    quoting_style="needed")), parquet_sink, pq.ParquetWriter(parquet_sink, batch.schema)))
        self.customers += batch.num_rows
        for number, group in enumerate(self.groups):
            rows = pc.indices_nonzero(pc.equal(batch[group["column"]], group["value"]))
            if not len(rows):
                continue
            part = batch.take(rows)
            _csv_sink, csv_writer, _parquet_sink, parquet_writer = self.open[number]
            csv_writer.write_table(safe_for_spreadsheets(part))
            parquet_writer.write_table(part)
            self.counts[number] += len(rows)
            if MONETARY in part.column_names:
                self.revenue[number] += float(pc.sum(part[MONETARY]).as_py() or 0.0)

    def abort(self) -> None:
        """Drop every file not finished (S3 uploads aborted)."""
        for csv_sink, _csv, parquet_sink, _parquet in self.open:
            csv_sink.abort()
            parquet_sink.abort()
        self.open = []

    def finish(self, changes: pa.Table | None = None) -> dict[str, Any]:
        """Close the files, write ``changes.csv`` and ``index.csv``, delete stale files; :func:`export`'s counts."""
        written: list[str] = []
        index: list[dict[str, Any]] = []
        for number, group in enumerate(self.groups):
            if self.open:
                csv_sink, csv_writer, parquet_sink, parquet_writer = self.open[number]
                csv_writer.close()
                csv_sink.close()
                parquet_writer.close()
                parquet_sink.close()
            written += [self._uri(group["csv"]), self._uri(group["parquet"])]
            index.append({"group": group["group"], "name": group["name"], "customers": self.counts[number],
                          "revenue": round(self.revenue[number], 2), "csv": group["csv"].removeprefix(f"{EXPORT_DIR}/"),
                          "parquet": group["parquet"].removeprefix(f"{EXPORT_DIR}/")})
        self.open = []
        if changes is not None:
            relative = f"{EXPORT_DIR}/{CHANGES_CSV}"
            with self.storage.open_write(self._uri(relative)) as sink:
                write_csv(changes, sink)
            written.append(self._uri(relative))
            index.append({"group": "changes", "name": "since the last publish", "customers": changes.num_rows,
                          "revenue": None, "csv": CHANGES_CSV, "parquet": None})
        index_table = pa.Table.from_pylist(index, schema=pa.schema([
            ("group", pa.string()), ("name", pa.string()), ("customers", pa.int64()), ("revenue", pa.float64()),
            ("csv", pa.string()), ("parquet", pa.string())]))
        self.storage.write_bytes(self._uri(f"{EXPORT_DIR}/{INDEX_FILE}"), to_csv(index_table))
        written.append(self._uri(f"{EXPORT_DIR}/{INDEX_FILE}"))
        keep = set(written)
        stale = [uri for uri in self.storage.list(join(self.output_uri, EXPORT_DIR)) if uri not in keep]
        self.storage.delete(stale)
        return {"customers": self.customers, "files": written, "stale_files_deleted": len(stale)}


def groups_of(segments: pa.Table) -> tuple[list[str], dict[int, str], dict[int, str]]:
    """The RFM segments with customers, each cluster's name in the index (that of its first
    customer) and each cluster's file name (:func:`cluster_file_names`), of a table with
    ``rfm_segment``, ``cluster`` and ``cluster_name`` sorted by ``customer_id``."""
    table = segments.select([CLUSTER, CLUSTER_NAME, RFM_SEGMENT]).cast(pa.schema([
        (CLUSTER, pa.int64()), (CLUSTER_NAME, pa.string()), (RFM_SEGMENT, pa.string())]))
    names = sorted(pc.unique(table[RFM_SEGMENT]).to_pylist())
    clusters = {}
    for cluster in sorted(pc.unique(table[CLUSTER]).to_pylist()):
        clusters[int(cluster)] = str(table[CLUSTER_NAME][pc.index(table[CLUSTER], cluster).as_py()].as_py())
    pairs = table.select([CLUSTER, CLUSTER_NAME]).group_by([CLUSTER, CLUSTER_NAME]).aggregate([])
    return names, clusters, cluster_file_names(pairs)
