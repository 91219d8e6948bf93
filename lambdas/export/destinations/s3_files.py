"""The ``s3`` destination: per-segment and per-cluster CSV and Parquet files under ``output_uri``.

Layout::

    export/rfm_segment=<slug>/part.csv|.parquet   customers of one RFM segment
    export/cluster=<n>/part.csv|.parquet          customers of one k-means cluster

CSVs quote every text value (numbers stay bare, missing values are empty), so ids such as
``007`` or ``1e3`` survive spreadsheet-like readers. A re-run overwrites the same files and
deletes files under ``export/`` it did not write. Works on ``s3://`` URIs or local folders.
"""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from lambdas.export.names import segment_slugs
from lambdas.export.storage import Storage, join
from steps.columns import CLUSTER, RFM_SEGMENT

EXPORT_DIR = "export"


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


def to_parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def to_csv(table: pa.Table) -> bytes:
    """CSV with a header; text quoted (``"007"``), numbers bare, nulls empty, ``\\n`` line ends."""
    buffer = io.BytesIO()
    pa_csv.write_csv(table, buffer, pa_csv.WriteOptions(quoting_style="needed"))
    return buffer.getvalue()


def export(segments: pa.Table, output_uri: str, storage: Storage) -> dict[str, Any]:
    """Write the partition files under ``output_uri`` and delete stale ones.

    Returns
    -------
    dict
        ``{"customers": rows, "files": [URIs written], "stale_files_deleted": n}``.
    """
    written: list[str] = []
    for folder, rows in partitions(segments).items():
        for name, data in (("part.csv", to_csv(rows)), ("part.parquet", to_parquet(rows))):
            uri = join(output_uri, *folder.split("/"), name)
            storage.write_bytes(uri, data)
            written.append(uri)
    keep = set(written)
    stale = [uri for uri in storage.list(join(output_uri, EXPORT_DIR)) if uri not in keep]
    storage.delete(stale)
    return {"customers": segments.num_rows, "files": written, "stale_files_deleted": len(stale)}
