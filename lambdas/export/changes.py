"""Segments over time: remember this publish for the next, and read the last one back a batch at a time.

The last published segments live beside the executions, under ``<data prefix>/published/``
(:func:`published_uri`): ``segments.parquet`` (the full table the export wrote, contacts included)
and ``published.json`` (which execution, package and destinations). They are replaced only when
every destination of a publish succeeded (:func:`write_published`), so "the last publish" is the
last one that reached every destination; a failed publish is compared again, in full, by the next one.

Which publish is the last (``read_published``) and how this one compares with it (``compare_tables``:
``changes.parquet``'s rows, the customers to send, those who left) are ``steps.published``, the one
implementation the evaluation step's report uses too. Here: :class:`PreviousRows` hands the last
publish out in customer id order, :func:`describe` and :func:`read_changes` show ``changes.parquet``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lambdas.export.storage import Storage, is_s3, join
from steps.columns import (
    CHANGE,
    CLUSTER,
    CLUSTER_NAME,
    CONTACT_COLUMNS,
    CUSTOMER_ID,
    PREVIOUS_SEGMENT,
    RFM_SEGMENT,
    SEGMENT,
    SEGMENT_COLUMNS,
)
from steps.errors import PipelineError
from steps.paths import EXECUTIONS_DIR, PUBLISHED_DIR, PUBLISHED_MANIFEST, SEGMENTS_FILE
from steps.published import CHANGE_ORDER, FIX, PREVIOUS_SEGMENTS, empty_previous, read_manifest


def published_uri(output_uri: str) -> str:
    """Where the last published segments live: ``published/`` beside ``executions/``.

    ``s3://b/rfm/executions/<id>/segments`` -> ``s3://b/rfm/published``; an ``output_uri`` outside
    ``executions/`` (a hand-made event) -> ``published`` beside it.

    Examples
    --------
    >>> published_uri("s3://bucket/rfm/executions/abc/segments")
    's3://bucket/rfm/published'
    >>> published_uri("/tmp/run/segments")
    '/tmp/run/published'
    """
    marker = f"/{EXECUTIONS_DIR}/"
    text = output_uri.rstrip("/")
    if marker in text:
        return text[: text.rindex(marker)] + "/" + PUBLISHED_DIR
    parent = text.rsplit("/", 1)[0] if "/" in text.removeprefix("s3://") else text
    return parent + "/" + PUBLISHED_DIR


BATCH_ROWS = 100_000  # customers read, compared and written at a time


def is_increasing(ids: pa.Array) -> bool:
    """Whether ``ids`` are strictly increasing (sorted, no repeats)."""
    return len(ids) < 2 or bool(pc.all(pc.greater(ids.slice(1), ids.slice(0, len(ids) - 1))).as_py())


class PreviousRows:
    """A published ``segments.parquet`` in customer id order, handed out up to a customer id at a time.

    Only the columns a comparison needs are read (not the history), a row group at a time: the file
    is opened with :meth:`Storage.open_read` (S3 byte ranges), never read whole. A file that is not
    sorted by id (not written by this export) is read whole and sorted instead.
    """

    def __init__(self, storage: Storage | None = None, uri: str = "") -> None:
        self._pending: list[pa.Table] = [empty_previous()]
        self._batches: Iterator[pa.Table] = iter(())
        if not uri or storage is None:
            return
        try:
            parquet = pq.ParquetFile(storage.open_read(uri))
        except FileNotFoundError:
            raise PipelineError(f"{uri.rsplit('/', 1)[-1]} is missing beside {PUBLISHED_MANIFEST}", uri,
                                FIX) from None
        except (pa.ArrowInvalid, OSError):
            raise PipelineError("not a Parquet file", uri, FIX) from None
        schema = parquet.schema_arrow
        missing = [c for c in (CUSTOMER_ID, CLUSTER, CLUSTER_NAME, RFM_SEGMENT) if c not in schema.names]
        if missing:
            raise PipelineError(f"columns missing: {', '.join(missing)}", uri, FIX)
        columns = [c for c in (*SEGMENT_COLUMNS, *CONTACT_COLUMNS) if c in schema.names]
        ids = parquet.read(columns=[CUSTOMER_ID]).column(0).combine_chunks().cast(pa.string())
        self._pending = [pa.schema([schema.field(c) for c in columns]).empty_table()]
        if ids.null_count or (not is_increasing(ids) and len(pc.unique(ids)) != len(ids)):
            raise PipelineError("customer ids repeated or empty (one row per customer expected)", uri, FIX)
        if is_increasing(ids):
            self._batches = (pa.Table.from_batches([b]) for b in parquet.iter_batches(BATCH_ROWS, columns=columns))
        else:
            self._batches = iter([parquet.read(columns=columns).take(pc.sort_indices(ids))])

    def until(self, last: str | None) -> pa.Table:
        """The rows not handed out yet whose id is at most ``last`` (None: all of them)."""
        while last is None or self._pending[-1].num_rows == 0 or self._last_id() <= last:
            batch = next(self._batches, None)
            if batch is None:
                break
            self._pending.append(batch)
        table = pa.concat_tables(self._pending).combine_chunks()
        ids = table[CUSTOMER_ID].cast(pa.string())
        taken = table.num_rows if last is None else int(pc.sum(pc.less_equal(ids, last)).as_py() or 0)
        self._pending = [table.slice(taken)]
        return table.slice(0, taken)

    def _last_id(self) -> str:
        tail = self._pending[-1]
        return str(tail[CUSTOMER_ID][tail.num_rows - 1].as_py())


def write_published(storage: Storage, uri: str, segments_uri: str, execution_id: str,
                    model_package_arn: str, destinations: tuple[str, ...], customers: int) -> None:
    """Make this publish the last one: the segments first (copied from ``segments_uri``, server-side
    on S3), then the manifest that points at them.

    The publish it replaces is kept as ``previous-segments.parquet`` (and ``previous`` in the
    manifest), for re-runs of this one; a re-run of the last publish keeps the one before it.
    """
    current = read_manifest(storage, uri)
    previous = current.get("previous") if current and current.get("execution_id") == execution_id else current
    if current is not None and previous is current:
        storage.copy(join(uri, SEGMENTS_FILE), join(uri, PREVIOUS_SEGMENTS))
    storage.copy(segments_uri, join(uri, SEGMENTS_FILE))
    manifest = {"execution_id": execution_id, "model_package_arn": model_package_arn,
                "destinations": list(destinations), "customers": customers,
                "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "previous": ({k: v for k, v in previous.items() if k != "previous"}
                             if isinstance(previous, dict) else None)}
    storage.write_bytes(join(uri, PUBLISHED_MANIFEST), (json.dumps(manifest, indent=2) + "\n").encode())


def describe(changes: pa.Table | pd.DataFrame, limit: int = 20) -> str:
    """``changes.parquet`` for a terminal: counts by kind, the moves between segments, the first rows.

    Examples
    --------
    >>> table = pd.DataFrame({"customer_id": ["a"], "previous_segment": ["Loyal"], "segment": ["At Risk"],
    ...                       "previous_cluster_name": ["Big"], "cluster_name": ["Big"], "change": ["moved"]})
    >>> print(describe(table).splitlines()[0])
    1 customer changed since the last publish: 0 left, 1 moved, 0 entered
    """
    frame = changes.to_pandas() if isinstance(changes, pa.Table) else changes
    counts = frame[CHANGE].value_counts()
    total = len(frame)
    lines = [f"{total} customer{'s' if total != 1 else ''} changed since the last publish: "
             + ", ".join(f"{int(counts.get(kind, 0))} {kind}" for kind in CHANGE_ORDER)]
    if total:
        moves = (frame.fillna({PREVIOUS_SEGMENT: "(none)", SEGMENT: "(none)"})
                 .groupby([PREVIOUS_SEGMENT, SEGMENT]).size().sort_values(ascending=False))
        lines += ["", "segment moves (previous -> current: customers)"]
        lines += [f"  {before} -> {after}: {n}" for (before, after), n in moves.items()]
        shown = frame.head(limit).fillna("")
        lines += ["", shown.to_string(index=False)]
        if total > limit:
            lines.append(f"... {total - limit} more rows")
    return "\n".join(lines)


def read_changes(storage: Storage, uri: str) -> pa.Table:
    """A ``changes.parquet`` file; a clear error when there is none."""
    try:
        return pq.read_table(pa.BufferReader(storage.read_bytes(uri)))
    except FileNotFoundError:
        where = uri if is_s3(uri) else str(uri)
        raise PipelineError("no changes.parquet: nothing was published yet", where,
                            "Publish segments first (run with ModelApprovalStatus=Approved, or rfm approve)") from None
