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
>>> result.changes[["customer_id", "change"]].values.tolist()
[['a', 'moved'], ['b', 'left'], ['d', 'entered']]
>>> result.send.tolist()
[True, False, True]
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
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
)
from steps.errors import PipelineError
from steps.paths import EXECUTIONS_DIR, PUBLISHED_DIR, PUBLISHED_MANIFEST, SEGMENTS_FILE

CHANGE_ORDER = (LEFT, MOVED, ENTERED)  # how changes.parquet is sorted: who to act on first
_CHANGES_SCHEMA = pa.schema([(CUSTOMER_ID, pa.string()), (PREVIOUS_SEGMENT, pa.string()), (SEGMENT, pa.string()),
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
    """The last publish: its segments (None: nothing published yet) and the destinations it reached."""

    segments: pd.DataFrame | None = None
    destinations: tuple[str, ...] = ()
    execution_id: str = ""

    def reached(self, destination: str) -> bool:
        """Whether the last publish sent to ``destination`` (else this one sends every customer)."""
        return self.segments is not None and destination in self.destinations


PREVIOUS_SEGMENTS = "previous-segments.parquet"  # the publish before the last: for re-runs of the last one


def _read_segments(storage: Storage, uri: str) -> pd.DataFrame:
    try:
        table = pq.read_table(pa.BufferReader(storage.read_bytes(uri)))
    except FileNotFoundError:
        raise PipelineError(f"{uri.rsplit('/', 1)[-1]} is missing beside {PUBLISHED_MANIFEST}", uri, _FIX) from None
    except (pa.ArrowInvalid, OSError):
        raise PipelineError("not a Parquet file", uri, _FIX) from None
    missing = [c for c in (CUSTOMER_ID, CLUSTER, CLUSTER_NAME, RFM_SEGMENT) if c not in table.column_names]
    if missing:
        raise PipelineError(f"columns missing: {', '.join(missing)}", uri, _FIX)
    return table.to_pandas()


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

    Raises
    ------
    PipelineError
        When the manifest or the segments file is there but cannot be read.
    """
    manifest = _manifest(storage, uri)
    if manifest is None:
        return Published()
    if execution_id and manifest.get("execution_id") == execution_id:
        before = manifest.get("previous")
        if not isinstance(before, dict):
            return Published()
        return Published(_read_segments(storage, join(uri, PREVIOUS_SEGMENTS)),
                         tuple(before.get("destinations", ())), str(before.get("execution_id", "")))
    return Published(_read_segments(storage, join(uri, SEGMENTS_FILE)), tuple(manifest.get("destinations", ())),
                     str(manifest.get("execution_id", "")))


def write_published(storage: Storage, uri: str, segments_file: bytes, execution_id: str,
                    model_package_arn: str, destinations: tuple[str, ...], customers: int) -> None:
    """Make this publish the last one: the segments first, then the manifest that points at them.

    The publish it replaces is kept as ``previous-segments.parquet`` (and ``previous`` in the
    manifest), for re-runs of this one; a re-run of the last publish keeps the one before it.
    """
    current = _manifest(storage, uri)
    previous = current.get("previous") if current and current.get("execution_id") == execution_id else current
    if current is not None and previous is current:
        storage.write_bytes(join(uri, PREVIOUS_SEGMENTS), storage.read_bytes(join(uri, SEGMENTS_FILE)))
    storage.write_bytes(join(uri, SEGMENTS_FILE), segments_file)
    manifest = {"execution_id": execution_id, "model_package_arn": model_package_arn,
                "destinations": list(destinations), "customers": customers,
                "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "previous": ({k: v for k, v in previous.items() if k != "previous"}
                             if isinstance(previous, dict) else None)}
    storage.write_bytes(join(uri, PUBLISHED_MANIFEST), (json.dumps(manifest, indent=2) + "\n").encode())


@dataclass(frozen=True)
class Comparison:
    """What :func:`compare` finds; see the module docstring."""

    previous_segment: pd.Series
    previous_cluster_name: pd.Series
    changes: pd.DataFrame
    send: pd.Series
    left: pd.DataFrame

    @property
    def counts(self) -> dict[str, int]:
        """Customers per kind of change, and how many the API destinations are sent."""
        found = self.changes[CHANGE].value_counts()
        return {**{kind: int(found.get(kind, 0)) for kind in (ENTERED, LEFT, MOVED)},
                "customers_to_send": int(self.send.sum())}


_MISSING_HASH = pd.util.hash_array(np.array([None], dtype=object))[0]


def _row_hashes(frame: pd.DataFrame, keys: tuple[str, ...]) -> np.ndarray:
    """One 64-bit hash per row of the ``keys`` columns (absent columns count as missing values).

    Hashes, not text copies: comparing 2M customers on eight columns this way takes 16 MB, where
    the columns as Python strings would take gigabytes.
    """
    combined = np.zeros(len(frame), dtype=np.uint64)
    for key in keys:
        if key not in frame:
            hashed = np.full(len(frame), _MISSING_HASH, dtype=np.uint64)
        elif key == CLUSTER:
            hashed = pd.util.hash_array(frame[key].to_numpy(dtype=np.int64))
        else:
            values = frame[key]
            hashed = pd.util.hash_array(values.astype(object).where(values.notna(), None).to_numpy(dtype=object))
        combined = combined * np.uint64(1_000_003) ^ hashed
    return combined


_KEYS = (CLUSTER, CLUSTER_NAME, RFM_SEGMENT, *CONTACT_COLUMNS)


def compare(previous: pd.DataFrame | None, current: pd.DataFrame) -> Comparison:
    """Compare the current segments (one row per customer) with the last published ones (None: none).

    Returns
    -------
    Comparison
        ``previous_segment`` / ``previous_cluster_name`` aligned with ``current`` (None for new
        customers); ``changes`` sorted left, moved, entered, then by ``customer_id``; ``send`` a
        boolean Series aligned with ``current``; ``left`` the previous rows of departed customers.
    """
    if previous is None:
        previous = current.iloc[0:0]
    before = pd.DataFrame({CUSTOMER_ID: previous[CUSTOMER_ID].to_numpy(), "_hash": _row_hashes(previous, _KEYS),
                           "_segment": previous[RFM_SEGMENT].to_numpy(), "_cluster": previous[CLUSTER_NAME].to_numpy(),
                           "_known": True})
    joined = pd.DataFrame({CUSTOMER_ID: current[CUSTOMER_ID].to_numpy()}).merge(
        before, on=CUSTOMER_ID, how="left", sort=False, validate="one_to_one")
    joined.index = current.index
    known = joined["_known"].eq(True)
    send = ~known | joined["_hash"].ne(pd.Series(_row_hashes(current, _KEYS), index=current.index))
    moved = known & (joined["_segment"].ne(current[RFM_SEGMENT]) | joined["_cluster"].ne(current[CLUSTER_NAME]))
    previous_segment = joined["_segment"].where(known, None)
    previous_cluster = joined["_cluster"].where(known, None)
    del joined, before

    gone = ~previous[CUSTOMER_ID].isin(current[CUSTOMER_ID])
    left = previous[gone.to_numpy()]
    listed = ~known | moved
    rows = [
        pd.DataFrame({
            CUSTOMER_ID: current[CUSTOMER_ID][listed].astype(str).to_numpy(),
            PREVIOUS_SEGMENT: previous_segment[listed].to_numpy(),
            SEGMENT: current[RFM_SEGMENT][listed].astype(str).to_numpy(),
            PREVIOUS_CLUSTER_NAME: previous_cluster[listed].to_numpy(),
            CLUSTER_NAME: current[CLUSTER_NAME][listed].astype(str).to_numpy(),
            CHANGE: known[listed].map({True: MOVED, False: ENTERED}).to_numpy(),
        }),
        pd.DataFrame({
            CUSTOMER_ID: left[CUSTOMER_ID].astype(str).to_numpy(),
            PREVIOUS_SEGMENT: left[RFM_SEGMENT].astype(str).to_numpy(),
            SEGMENT: None,
            PREVIOUS_CLUSTER_NAME: left[CLUSTER_NAME].astype(str).to_numpy(),
            CLUSTER_NAME: None,
            CHANGE: LEFT,
        }),
    ]
    changes = pd.concat([r for r in rows if len(r)] or [rows[0]], ignore_index=True)
    order = changes[CHANGE].map({kind: i for i, kind in enumerate(CHANGE_ORDER)})
    changes = changes.assign(_order=order).sort_values(["_order", CUSTOMER_ID]).drop(columns="_order")
    return Comparison(previous_segment, previous_cluster, changes.reset_index(drop=True)[list(CHANGE_COLUMNS)],
                      send, left.reset_index(drop=True))


def changes_table(changes: pd.DataFrame) -> pa.Table:
    """``changes.parquet``'s table: :data:`~steps.columns.CHANGE_COLUMNS`, all text, empty where unknown."""
    return pa.Table.from_pandas(changes, schema=_CHANGES_SCHEMA, preserve_index=False)


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


def summary_counts(result: Comparison, published: Published) -> dict[str, Any]:
    """The ``changes`` entry of the export's result."""
    return {**result.counts, "compared_with": published.execution_id or None}
