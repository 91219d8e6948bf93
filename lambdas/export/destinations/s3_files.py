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


def to_parquet(table: pa.Table, rows: pa.Array | None = None) -> bytes:
    """Parquet bytes of ``table`` (or of its ``rows``), written a chunk at a time."""
    buffer = io.BytesIO()
    with pq.ParquetWriter(buffer, table.schema) as writer:
        for chunk in _chunks(table, rows):
            writer.write_table(chunk)
        if (table.num_rows if rows is None else len(rows)) == 0:
            writer.write_table(table.slice(0, 0))
    return buffer.getvalue()


def to_csv(table: pa.Table, rows: pa.Array | None = None) -> bytes:
    """CSV with a header; text quoted (``"007"``) and neutralised (:func:`neutralise`), numbers bare,
    nulls empty, ``\\n`` line ends; ``rows``: only those rows. Written a chunk at a time."""
    buffer = io.BytesIO()
    with pa_csv.CSVWriter(buffer, table.schema, write_options=pa_csv.WriteOptions(quoting_style="needed")) as writer:
        for chunk in _chunks(table, rows):
            writer.write_table(safe_for_spreadsheets(chunk))
    return buffer.getvalue()


def _revenue(segments: pa.Table, rows: pa.Array) -> float:
    if MONETARY not in segments.column_names:
        return 0.0
    return round(float(pc.sum(segments[MONETARY].take(rows)).as_py() or 0.0), 2)


def export(segments: pa.Table, output_uri: str, storage: Storage, changes: pa.Table | None = None) -> dict[str, Any]:
    """Write the files under ``output_uri`` and delete stale ones.

    Returns
    -------
    dict
        ``{"customers": rows, "files": [URIs written], "stale_files_deleted": n}``.
    """
    written: list[str] = []
    index: list[dict[str, Any]] = []

    def write(relative: str, data: bytes) -> str:
        uri = join(output_uri, *relative.split("/"))
        storage.write_bytes(uri, data)
        written.append(uri)
        return relative.removeprefix(f"{EXPORT_DIR}/")

    names = sorted(pc.unique(segments[RFM_SEGMENT]).to_pylist())
    slugs = segment_slugs(names)
    for name in names:
        rows = pc.indices_nonzero(pc.equal(segments[RFM_SEGMENT], name))
        index.append({"group": RFM_SEGMENT, "name": name, "customers": len(rows),
                      "revenue": _revenue(segments, rows),
                      "csv": write(f"{EXPORT_DIR}/segments/{slugs[name]}.csv", to_csv(segments, rows)),
                      "parquet": write(f"{EXPORT_DIR}/{RFM_SEGMENT}={slugs[name]}/part.parquet",
                                       to_parquet(segments, rows))})
    files = cluster_file_names(segments)
    for cluster, file_name in files.items():
        rows = pc.indices_nonzero(pc.equal(segments[CLUSTER], cluster))
        index.append({"group": CLUSTER, "name": segments[CLUSTER_NAME].take(rows.slice(0, 1))[0].as_py(),
                      "customers": len(rows), "revenue": _revenue(segments, rows),
                      "csv": write(f"{EXPORT_DIR}/clusters/{file_name}.csv", to_csv(segments, rows)),
                      "parquet": write(f"{EXPORT_DIR}/{CLUSTER}={cluster}/part.parquet", to_parquet(segments, rows))})
    if changes is not None:
        index.append({"group": "changes", "name": "since the last publish", "customers": changes.num_rows,
                      "revenue": None, "csv": write(f"{EXPORT_DIR}/{CHANGES_CSV}", to_csv(changes)), "parquet": None})
    index_table = pa.Table.from_pylist(index, schema=pa.schema([
        ("group", pa.string()), ("name", pa.string()), ("customers", pa.int64()), ("revenue", pa.float64()),
        ("csv", pa.string()), ("parquet", pa.string())]))
    write(f"{EXPORT_DIR}/{INDEX_FILE}", to_csv(index_table))
    keep = set(written)
    stale = [uri for uri in storage.list(join(output_uri, EXPORT_DIR)) if uri not in keep]
    storage.delete(stale)
    return {"customers": segments.num_rows, "files": written, "stale_files_deleted": len(stale)}
