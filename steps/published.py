"""The last publish: which segments it holds, and how a run's segments compare with it.

One implementation for the two places that compare: the export Lambda (``lambdas/export``), which
writes ``changes.parquet`` when it publishes, and the evaluation step (``steps/report/baseline.py``),
which shows in the report what that file will hold if this run is published. It lives in ``steps/``
because each Lambda's zip holds ``steps/`` (Makefile ``lambda_package``) while ``steps/`` never
imports ``lambdas/``.

The last published segments live under ``<data prefix>/published/``: ``segments.parquet`` and
``published.json`` (which execution, when, which destinations). :func:`read_published` reads the
manifest through any object with ``read_bytes(uri)`` (the export's ``Storage``, the evaluation's
S3 or folder reader) and says which segments file is the last publish.

:func:`compare` gives, for the current segments,

- ``previous_segment`` / ``previous_cluster_name`` per customer (empty for customers new since the
  last publish);
- ``changes``: one row per customer whose RFM segment or cluster name changed
  (:data:`~steps.columns.CHANGE_COLUMNS`; ``change`` is ``entered`` (not in the last publish),
  ``left`` (in it, not in this one) or ``moved``), written as ``changes.parquet``;
- ``send``: the customers the API destinations must receive (delta): new ones, and those whose
  segment, cluster number, cluster name or contact data changed;
- ``left``: the last publish's rows of the customers who are gone.

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
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

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
from steps.paths import PUBLISHED_MANIFEST, SEGMENTS_FILE

CHANGE_ORDER = (LEFT, MOVED, ENTERED)  # how changes.parquet is sorted: who to act on first
CHANGES_SCHEMA = pa.schema([(CUSTOMER_ID, pa.string()), (PREVIOUS_SEGMENT, pa.string()), (SEGMENT, pa.string()),
                             (PREVIOUS_CLUSTER_NAME, pa.string()), (CLUSTER_NAME, pa.string()),
                             (CHANGE, pa.string())])
PREVIOUS_SEGMENTS = "previous-segments.parquet"  # the publish before the last: for re-runs of the last one
# What to do about a last publish that cannot be read.
FIX = "Delete that folder to publish every customer again as new (the next publish then sends everyone)"


class ReadsFiles(Protocol):
    """Reads one file under a URI; FileNotFoundError when it is not there."""

    def read_bytes(self, uri: str) -> bytes: ...


def join(uri: str, name: str) -> str:
    """``name`` inside the folder or prefix ``uri``."""
    return f"{uri.rstrip('/')}/{name}"


@dataclass(frozen=True)
class Published:
    """The last publish: where its segments are ("": nothing published yet) and the destinations it reached."""

    segments_uri: str = ""
    destinations: tuple[str, ...] = ()
    execution_id: str = ""
    published_at: str = ""  # when (UTC, ISO 8601), as the manifest says

    def reached(self, destination: str) -> bool:
        """Whether the last publish sent to ``destination`` (else this one sends every customer)."""
        return destination in self.destinations


def read_manifest(storage: ReadsFiles, uri: str) -> dict[str, Any] | None:
    """``published.json`` under ``uri``; None when nothing was published.

    Raises
    ------
    PipelineError
        When it is there but is not a JSON object.
    """
    try:
        manifest = json.loads(storage.read_bytes(join(uri, PUBLISHED_MANIFEST)))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        raise PipelineError(f"{PUBLISHED_MANIFEST} is not JSON", join(uri, PUBLISHED_MANIFEST), FIX) from None
    if not isinstance(manifest, dict):
        raise PipelineError(f"{PUBLISHED_MANIFEST} is not a JSON object", join(uri, PUBLISHED_MANIFEST), FIX)
    return manifest


def read_published(storage: ReadsFiles, uri: str, execution_id: str = "") -> Published:
    """The last publish under ``uri`` (``<prefix>/published``); an empty :class:`Published` when none.

    When the last publish is ``execution_id`` itself (the same export run again), the publish before
    it is returned, so that a re-run compares with what the first run compared with.

    Its segments are read by the caller (the export a batch at a time, the evaluation at once).

    Raises
    ------
    PipelineError
        When the manifest is there but cannot be read.
    """
    manifest = read_manifest(storage, uri)
    if manifest is None:
        return Published()
    if execution_id and manifest.get("execution_id") == execution_id:
        before = manifest.get("previous")
        if not isinstance(before, dict):
            return Published()
        return Published(join(uri, PREVIOUS_SEGMENTS), tuple(before.get("destinations", ())),
                         str(before.get("execution_id", "")), str(before.get("published", "")))
    return Published(join(uri, SEGMENTS_FILE), tuple(manifest.get("destinations", ())),
                     str(manifest.get("execution_id", "")), str(manifest.get("published", "")))


def empty_previous() -> pa.Table:
    """No last publish: the columns a comparison reads, no rows."""
    return pa.table({CUSTOMER_ID: pa.array([], pa.string()), CLUSTER: pa.array([], pa.int64()),
                     CLUSTER_NAME: pa.array([], pa.string()), RFM_SEGMENT: pa.array([], pa.string())})


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
        previous = empty_previous()
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
