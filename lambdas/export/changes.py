"""Segments over time: compare this publish with the last one, and remember this one for the next.

The last published segments live beside the executions, under ``<data prefix>/published/``
(:func:`published_uri`): ``segments.parquet`` (the full table the export wrote, contacts included)
and ``published.json`` (which execution, package and destinations). They are replaced only when
every destination of a publish succeeded, so "the last publish" is the last one that reached every
destination; a failed publish is compared again, in full, by the next one.

:func:`compare` gives, for the current segments,

- ``previous_segment`` / ``previous_cluster_name`` per customer (empty for customers new since the
  last publish): the history every published run records in ``segments.parquet``;
- ``changes``: one row per customer whose RFM segment or cluster name changed
  (:data:`~steps.columns.CHANGE_COLUMNS`; ``change`` is ``entered`` (not in the last publish),
  ``left`` (in it, not in this one) or ``moved``), written as ``changes.parquet``;
- ``send``: the customers the API destinations must receive (delta): new ones, and those whose
  segment, cluster number, cluster name or contact data changed;
- ``left``: the last publish's rows of the customers who are gone, so that every destination can
  take them out of their segments.

Example
-------
>>> import pandas as pd
>>> before = pd.DataFrame({"customer_id": ["a", "b", "c"], "cluster": [0, 0, 1],
...                        "cluster_name": ["Big", "Big", "Small"], "rfm_segment": ["Loyal", "Loyal", "At Risk"]})
>>> now = pd.DataFrame({"customer_id": ["a", "c", "d"], "cluster": [0, 1, 1],
...                     "cluster_name": ["Big", "Small", "Small"], "rfm_segment": ["At Risk", "At Risk", "Promising"]})
>>> result = compare(before, now)
>>> list(zip(result.changes["customer_id"].to_pylist(), result.changes["change"].to_pylist()))
[('b', 'left'), ('a', 'moved'), ('d', 'entered')]
>>> result.send.tolist()
[True, False, True]
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lambdas.export.storage import Storage, is_s3, join
from steps.columns import (
    CHANGE,
    CHANGE_COLUMNS,
    CLUSTER,
    CLUSTER_NAME,
    CONTACT_COLUMNS,
    CUSTOMER_ID,
    ENTERED,
    LEFT,
    MOVED,
    PREVIOUS_CLUSTER_NAME,
    PREVIOUS_SEGMENT,
    RFM_SEGMENT,
    SEGMENT,
    SEGMENT_COLUMNS,
)
from steps.errors import PipelineError
from steps.paths import EXECUTIONS_DIR, PUBLISHED_DIR, PUBLISHED_MANIFEST, SEGMENTS_FILE

CHANGE_ORDER = (LEFT, MOVED, ENTERED)  # how changes.parquet is sorted: who to act on first
CHANGES_SCHEMA = pa.schema([(CUSTOMER_ID, pa.string()), (PREVIOUS_SEGMENT, pa.string()), (SEGMENT, pa.string()),
                             (PREVIOUS_CLUSTER_NAME, pa.string()), (CLUSTER_NAME, pa.string()),
                             (CHANGE, pa.string())])
_WHERE = "export Lambda: last published segments"
_FIX = "Delete that folder to publish every customer again as new (the next publish then sends everyone)"


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


@dataclass(frozen=True)
class Published:
    """The last publish: where its segments are ("": nothing published yet) and the destinations it reached."""

    segments_uri: str = ""
    destinations: tuple[str, ...] = ()
    execution_id: str = ""

    def reached(self, destination: str) -> bool:
        """Whether the last publish sent to ``destination`` (else this one sends every customer)."""
        return destination in self.destinations


PREVIOUS_SEGMENTS = "previous-segments.parquet"  # the publish before the last: for re-runs of the last one
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
        self._pending: list[pa.Table] = [_empty_previous()]
        self._batches: Iterator[pa.Table] = iter(())
        if not uri or storage is None:
            return
        try:
            parquet = pq.ParquetFile(storage.open_read(uri))
        except FileNotFoundError:
            raise PipelineError(f"{uri.rsplit('/', 1)[-1]} is missing beside {PUBLISHED_MANIFEST}", uri,
                                _FIX) from None
        except (pa.ArrowInvalid, OSError):
            raise PipelineError("not a Parquet file", uri, _FIX) from None
        schema = parquet.schema_arrow
        missing = [c for c in (CUSTOMER_ID, CLUSTER, CLUSTER_NAME, RFM_SEGMENT) if c not in schema.names]
        if missing:
            raise PipelineError(f"columns missing: {', '.join(missing)}", uri, _FIX)
        columns = [c for c in (*SEGMENT_COLUMNS, *CONTACT_COLUMNS) if c in schema.names]
        ids = parquet.read(columns=[CUSTOMER_ID]).column(0).combine_chunks().cast(pa.string())
        self._pending = [pa.schema([schema.field(c) for c in columns]).empty_table()]
        if ids.null_count or (not is_increasing(ids) and len(pc.unique(ids)) != len(ids)):
            raise PipelineError("customer ids repeated or empty (one row per customer expected)", uri, _FIX)
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


def _empty_previous() -> pa.Table:
    return pa.table({CUSTOMER_ID: pa.array([], pa.string()), CLUSTER: pa.array([], pa.int64()),
                     CLUSTER_NAME: pa.array([], pa.string()), RFM_SEGMENT: pa.array([], pa.string())})


def _manifest(storage: Storage, uri: str) -> dict[str, Any] | None:
    try:
        manifest = json.loads(storage.read_bytes(join(uri, PUBLISHED_MANIFEST)))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        raise PipelineError(f"{PUBLISHED_MANIFEST} is not JSON", join(uri, PUBLISHED_MANIFEST), _FIX) from None
    if not isinstance(manifest, dict):
        raise PipelineError(f"{PUBLISHED_MANIFEST} is not a JSON object", join(uri, PUBLISHED_MANIFEST), _FIX)
    return manifest


def read_published(storage: Storage, uri: str, execution_id: str = "") -> Published:
    """The last publish under ``uri`` (:func:`published_uri`); an empty :class:`Published` when none.

    When the last publish is ``execution_id`` itself (the same export run again), the publish before
    it is returned, so that a re-run compares with what the first run compared with.

    Its segments are read later, a batch at a time (:class:`PreviousRows`).

    Raises
    ------
    PipelineError
        When the manifest is there but cannot be read.
    """
    manifest = _manifest(storage, uri)
    if manifest is None:
        return Published()
    if execution_id and manifest.get("execution_id") == execution_id:
        before = manifest.get("previous")
        if not isinstance(before, dict):
            return Published()
        return Published(join(uri, PREVIOUS_SEGMENTS), tuple(before.get("destinations", ())),
                         str(before.get("execution_id", "")))
    return Published(join(uri, SEGMENTS_FILE), tuple(manifest.get("destinations", ())),
                     str(manifest.get("execution_id", "")))


def write_published(storage: Storage, uri: str, segments_uri: str, execution_id: str,
                    model_package_arn: str, destinations: tuple[str, ...], customers: int) -> None:
    """Make this publish the last one: the segments first (copied from ``segments_uri``, server-side
    on S3), then the manifest that points at them.

    The publish it replaces is kept as ``previous-segments.parquet`` (and ``previous`` in the
    manifest), for re-runs of this one; a re-run of the last publish keeps the one before it.
    """
    current = _manifest(storage, uri)
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


@dataclass(frozen=True)
class Comparison:
    """What :func:`compare` finds; see the module docstring.

    ``previous_segment``, ``previous_cluster_name`` and ``send`` are aligned with the current
    segments; ``left`` and ``previous_changed`` are small DataFrames: the previous rows of the
    customers who left, and of every customer who left or whose segment, cluster or contacts changed.
    """

    previous_segment: pa.Array
    previous_cluster_name: pa.Array
    changes: pa.Table
    send: np.ndarray
    left: pd.DataFrame | pa.Table
    previous_changed: pd.DataFrame | pa.Table

    @property
    def counts(self) -> dict[str, int]:
        """Customers per kind of change, and how many the API destinations are sent."""
        column = self.changes[CHANGE]
        return {**{kind: int(pc.sum(pc.equal(column, kind)).as_py() or 0) for kind in (ENTERED, LEFT, MOVED)},
                "customers_to_send": int(self.send.sum())}


_KEYS = (CLUSTER, CLUSTER_NAME, RFM_SEGMENT, *CONTACT_COLUMNS)


def _column(table: pa.Table, name: str, rows: pa.Array) -> pa.Array:
    """``table[name]`` at ``rows``, as text (int64 for the cluster); nulls where the column is absent."""
    kind = pa.int64() if name == CLUSTER else pa.string()
    if name not in table.column_names:
        return pa.nulls(len(rows), kind)
    return table[name].take(rows).combine_chunks().cast(kind)


def _differs(before: pa.Array, after: pa.Array) -> np.ndarray:
    same = pc.or_kleene(pc.equal(before, after), pc.and_(pc.is_null(before), pc.is_null(after)))
    return ~pc.fill_null(same, False).to_numpy(zero_copy_only=False)


def compare(previous: pa.Table | pd.DataFrame | None, current: pa.Table | pd.DataFrame) -> Comparison:
    """Compare the current segments (one row per customer) with the last published ones (None: none).

    :func:`compare_tables`, with ``left`` and ``previous_changed`` as DataFrames.
    """
    result = compare_tables(previous, current)
    return replace(result, left=result.left.to_pandas(), previous_changed=result.previous_changed.to_pandas())


def compare_tables(previous: pa.Table | pd.DataFrame | None, current: pa.Table | pd.DataFrame) -> Comparison:
    """Compare the current segments (one row per customer) with the last published ones (None: none).

    Arrow throughout: the customers are matched by a join on ``customer_id`` and the columns compared
    one at a time, so comparing millions of customers takes little more memory than their ids.

    Returns
    -------
    Comparison
        ``previous_segment`` / ``previous_cluster_name`` aligned with ``current`` (null for new
        customers); ``changes`` sorted left, moved, entered, then by ``customer_id``; ``send`` a
        boolean array aligned with ``current``; ``left`` the previous rows of departed customers.
    """
    if isinstance(current, pd.DataFrame):
        current = pa.Table.from_pandas(current, preserve_index=False)
    if isinstance(previous, pd.DataFrame):
        previous = pa.Table.from_pandas(previous, preserve_index=False)
    if previous is None:
        previous = _empty_previous()
    current_ids = current[CUSTOMER_ID].combine_chunks().cast(pa.string())
    previous_ids = previous[CUSTOMER_ID].combine_chunks().cast(pa.string())
    matched = pa.table({CUSTOMER_ID: current_ids, "_c": pa.array(np.arange(len(current_ids)))}).join(
        pa.table({CUSTOMER_ID: previous_ids, "_p": pa.array(np.arange(len(previous_ids)))}),
        keys=CUSTOMER_ID, join_type="left outer", use_threads=False).sort_by("_c")
    position = matched["_p"].combine_chunks()  # previous row of each current customer; null for new ones
    del matched
    known = position.is_valid().to_numpy(zero_copy_only=False)
    current_rows = pa.array(np.flatnonzero(known))
    previous_rows = position.filter(position.is_valid())
    differs = np.zeros(len(current_ids), dtype=bool)
    moved = np.zeros(len(current_ids), dtype=bool)
    for key in _KEYS:
        change = _differs(_column(previous, key, previous_rows), _column(current, key, current_rows))
        differs[known] |= change
        if key in (RFM_SEGMENT, CLUSTER_NAME):
            moved[known] |= change
    send = ~known | differs
    previous_segment = _column(previous, RFM_SEGMENT, position)
    previous_cluster = _column(previous, CLUSTER_NAME, position)

    gone = pc.invert(pc.is_in(previous_ids, value_set=current_ids))
    left = previous.filter(gone)
    changed_rows = pa.concat_arrays([previous_rows.filter(pa.array(differs[known])).cast(pa.int64()),
                                     pa.array(np.flatnonzero(gone.to_numpy(zero_copy_only=False)))])
    listed = pa.array(np.flatnonzero(~known | moved))
    left_rows = pa.array(np.arange(len(left)))
    changes = pa.concat_tables([
        pa.table({
            CUSTOMER_ID: left[CUSTOMER_ID].combine_chunks().cast(pa.string()),
            PREVIOUS_SEGMENT: _column(left, RFM_SEGMENT, left_rows),
            SEGMENT: pa.nulls(len(left), pa.string()),
            PREVIOUS_CLUSTER_NAME: _column(left, CLUSTER_NAME, left_rows),
            CLUSTER_NAME: pa.nulls(len(left), pa.string()),
            CHANGE: pa.array([LEFT] * len(left), pa.string()),
        }),
        pa.table({
            CUSTOMER_ID: current_ids.take(listed),
            PREVIOUS_SEGMENT: previous_segment.take(listed),
            SEGMENT: _column(current, RFM_SEGMENT, listed),
            PREVIOUS_CLUSTER_NAME: previous_cluster.take(listed),
            CLUSTER_NAME: _column(current, CLUSTER_NAME, listed),
            CHANGE: pa.array(np.where(known[listed.to_numpy()], MOVED, ENTERED).astype(object), pa.string()),
        }),
    ])
    order = pc.index_in(changes[CHANGE], value_set=pa.array(CHANGE_ORDER))
    changes = changes.append_column("_order", order).sort_by([("_order", "ascending"), (CUSTOMER_ID, "ascending")])
    return Comparison(previous_segment, previous_cluster, changes.drop_columns(["_order"]).combine_chunks(), send,
                      left, previous.take(changed_rows))


def changes_table(changes: pa.Table | pd.DataFrame) -> pa.Table:
    """``changes.parquet``'s table: :data:`~steps.columns.CHANGE_COLUMNS`, all text, empty where unknown."""
    if isinstance(changes, pd.DataFrame):
        return pa.Table.from_pandas(changes, schema=CHANGES_SCHEMA, preserve_index=False)
    return changes.select(list(CHANGE_COLUMNS)).cast(CHANGES_SCHEMA)


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
