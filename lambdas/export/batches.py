"""The export's one pass over the customers, a batch at a time, in customer id order.

``rfm.parquet`` is sorted by ``customer_id`` (ComputeRFM writes it so), the assignments are sorted
once (they are small: an id, a cluster and two dictionary-encoded names per customer), and the
last published ``segments.parquet`` is sorted (this export writes it). So the three line up: each
batch of :data:`~lambdas.export.changes.BATCH_ROWS` customers is joined with its assignments by
position, compared with the last publish's rows up to its last id (a sorted merge), given its
history columns, and handed to the writers (``segments.parquet``, the s3 files). What is kept for
later is small: the changes, one flag per customer (whom the API destinations get), the departed
customers' ids and, for Pinpoint, the last publish's rows of the customers who changed or left.

A features file that is not sorted by id (a hand-made one) is read whole and sorted first, as the
export did before; only sorted files are streamed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lambdas.export import changes as changes_module
from lambdas.export.changes import BATCH_ROWS, PreviousRows, is_increasing
from lambdas.export.storage import Storage, join
from steps.columns import (
    ASSIGNMENT_COLUMNS,
    CHANGE,
    CHANGE_COLUMNS,
    CLUSTER,
    CLUSTER_NAME,
    CONTACT_COLUMNS,
    CUSTOMER_ID,
    EMAIL,
    ENTERED,
    LEFT,
    MOVED,
    PHONE,
    PREVIOUS_CLUSTER_NAME,
    PREVIOUS_SEGMENT,
    RFM_SEGMENT,
    SEGMENT_COLUMNS,
)
from steps.errors import PipelineError
from steps.paths import RFM_FILE
from steps.playbook import RECOMMENDED_ACTION, Playbook
from steps.published import CHANGE_ORDER, CHANGES_SCHEMA, changes_table, compare_tables

FIX_ASSIGN = "Re-run AssignSegments (batch transform) on the features of the same execution"
MAX_KEY = 255  # a Customer Profiles key value (the customer id): at most 255 characters


def text_ids(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Customer ids as one plain string array."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return column.cast(pa.string())


def check_one_assignment_each(feature_ids: pa.Array, assigned_ids: pa.Array, where: str = "") -> None:
    """Every customer of ``rfm.parquet`` has exactly one assignment, and every assignment a customer.

    Raises
    ------
    PipelineError
        When some customer has no assignment, several, or an assignment names an unknown customer;
        the message gives the counts (never the ids).
    """
    counts = pc.value_counts(assigned_ids)
    repeated_assignments = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    known = pc.is_in(feature_ids, value_set=assigned_ids)
    missing = len(feature_ids) - pc.sum(known).as_py() if len(feature_ids) else 0
    several = pc.sum(pc.is_in(feature_ids, value_set=repeated_assignments)).as_py() or 0
    unknown = pc.sum(pc.invert(pc.is_in(assigned_ids, value_set=feature_ids))).as_py() or 0
    repeated = len(feature_ids) - len(pc.unique(feature_ids))
    if missing or several or unknown or repeated:
        raise PipelineError(
            f"{len(feature_ids)} customers in {RFM_FILE} ({repeated} repeated ids) but {len(assigned_ids)} "
            f"assignments: {missing} customers without one, {several} with more than one, "
            f"{unknown} for customers not in {RFM_FILE}", where or None, FIX_ASSIGN)


class FeatureFile:
    """``rfm.parquet`` under ``uri`` (or ``uri`` itself): read with one GET, decoded a batch at a time.

    Only the columns segments.parquet needs are decoded (``SEGMENT_COLUMNS`` from the features, the
    contact columns present, and ``rfm_segment`` to compare with the assignments').
    """

    def __init__(self, storage: Storage, uri: str) -> None:
        path = uri if uri.endswith(".parquet") else join(uri, RFM_FILE)
        try:
            data = storage.read_bytes(path)
        except (FileNotFoundError, IsADirectoryError):
            raise PipelineError(f"{RFM_FILE} not found", path, "Run ComputeRFM first, or fix features_uri") from None
        self.parquet = pq.ParquetFile(pa.BufferReader(data))
        schema = self.parquet.schema_arrow
        needed = [c for c in SEGMENT_COLUMNS if c not in ASSIGNMENT_COLUMNS or c == CUSTOMER_ID]
        missing = [c for c in needed if c not in schema.names]
        if missing:
            raise PipelineError(f"columns missing: {', '.join(missing)}", path, "Re-run ComputeRFM")
        id_type = schema.field(CUSTOMER_ID).type
        if not pa.types.is_string(id_type) and not pa.types.is_large_string(id_type):
            raise PipelineError(f"customer_id is {id_type}, expected string", path,
                                "Re-run ComputeRFM: customer ids must be kept as strings")
        self.contacts = [c for c in CONTACT_COLUMNS if c in schema.names]
        self.columns = needed + self.contacts + ([RFM_SEGMENT] if RFM_SEGMENT in schema.names else [])
        self.ids = text_ids(self.parquet.read(columns=[CUSTOMER_ID]).column(0))

    def read(self) -> pa.Table:
        """Every customer, the needed columns, in file order."""
        return self.parquet.read(columns=self.columns)

    def batches(self, size: int = BATCH_ROWS) -> Iterator[pa.Table]:
        """The customers in id order, ``size`` at a time (at most)."""
        if is_increasing(self.ids):
            for batch in self.parquet.iter_batches(size, columns=self.columns):
                yield pa.Table.from_batches([batch])
            return
        table = self.read().take(pc.sort_indices(self.ids))
        while table.num_rows:
            yield table.slice(0, size)
            table = table.slice(size)


@dataclass
class Population:
    """What the API destinations need to know of every customer, not only of those they are sent.

    ``groups``: the distinct (cluster, cluster_name, rfm_segment) combinations; ``longest_id``:
    (length, row in segments.parquet) of the longest customer id; ``ids_too_long``: ids over
    :data:`MAX_KEY` characters; ``without_contact``: customers with neither email nor phone.
    """

    customers: int
    groups: pd.DataFrame
    ids_too_long: int = 0
    longest_id: tuple[int, int] = (0, 0)
    without_contact: int = 0

    @classmethod
    def of_frame(cls, segments: pd.DataFrame) -> Population:
        """The population of a DataFrame of every customer."""
        lengths = segments[CUSTOMER_ID].astype(str).str.len().to_numpy()
        contacts = [c for c in (EMAIL, PHONE) if c in segments]
        with_contact = (segments[contacts].notna().any(axis=1).to_numpy() if contacts
                        else np.zeros(len(segments), dtype=bool))
        return cls(len(segments), segments[[CLUSTER, CLUSTER_NAME, RFM_SEGMENT]].drop_duplicates(),
                   int((lengths > MAX_KEY).sum()),
                   (int(lengths.max()), int(lengths.argmax())) if len(lengths) else (0, 0),
                   int((~with_contact).sum()))


@dataclass
class PassResult:
    """What one pass leaves for the rest of the export (see the module docstring)."""

    population: Population
    send: np.ndarray
    left_ids: pa.Array
    changes: pa.Table
    previous_changed: pa.Table | None
    segments: int
    clusters: int
    assignments_differ: int = 0
    counts: dict[str, int] = field(default_factory=dict)


def _segments_batch(features: pa.Table, assignments: pa.Table, contacts: list[str]) -> pa.Table:
    """``SEGMENT_COLUMNS`` then the contact columns present, of customers lined up row for row."""
    columns: dict[str, Any] = {CUSTOMER_ID: text_ids(features[CUSTOMER_ID])}
    for name in SEGMENT_COLUMNS[1:]:
        source = assignments if name in ASSIGNMENT_COLUMNS else features
        column = source[name].combine_chunks()
        columns[name] = column.cast(pa.string()) if pa.types.is_dictionary(column.type) else column
    for name in contacts:
        columns[name] = features[name].combine_chunks()
    return pa.table(columns)


def with_recommended_action(segments: pa.Table, playbook: Playbook) -> pa.Table:
    """``segments`` with ``recommended_action`` (the playbook's action for each customer's RFM segment)
    right after ``SEGMENT_COLUMNS``."""
    names = pc.unique(segments[RFM_SEGMENT])
    actions = pa.array([playbook.for_segment(name) for name in names.to_pylist()], pa.string())
    column = actions.take(pc.index_in(segments[RFM_SEGMENT], value_set=names))
    return segments.add_column(len(SEGMENT_COLUMNS), pa.field(RECOMMENDED_ACTION, pa.string()), column)


_COMPACT = [c for c in CHANGE_COLUMNS if c != CUSTOMER_ID]  # few distinct values: kept dictionary-encoded


def _compact(changes: pa.Table) -> pa.Table:
    for name in _COMPACT:
        changes = changes.set_column(changes.schema.get_field_index(name), name,
                                     pc.dictionary_encode(changes[name]))
    return changes


def run_pass(assignments: pa.Table, features: FeatureFile, previous: PreviousRows, playbook: Playbook,
             write: Callable[[pa.Table], None], keep_previous_rows: bool = False,
             batch_rows: int | None = None) -> PassResult:
    """Join, compare and hand each batch of customers (with its history columns) to ``write``.

    Parameters
    ----------
    assignments : pyarrow.Table
        ``ASSIGNMENT_COLUMNS``, sorted by ``customer_id``, one per customer of ``features``
        (:func:`check_one_assignment_each`).
    keep_previous_rows : bool
        Keep the last publish's rows of the customers who changed or left (Pinpoint needs them).
    batch_rows : int, optional
        Customers per batch (default :data:`~lambdas.export.changes.BATCH_ROWS`).
    """
    differ, offset, without_contact = 0, 0, 0
    sends: list[np.ndarray] = []
    left: list[pa.Array] = []
    previous_changed: list[pa.Table] = []
    changes: dict[str, list[pa.Table]] = {kind: [] for kind in CHANGE_ORDER}
    groups: list[pd.DataFrame] = []
    batches = features.batches(batch_rows or changes_module.BATCH_ROWS)
    batch = next(batches, None)
    if batch is None:  # no customers: one empty batch, so that the last publish's all leave
        batch = features.read()
    while batch is not None:
        upcoming = next(batches, None)
        part = assignments.slice(offset, batch.num_rows)
        if not pc.all(pc.equal(text_ids(batch[CUSTOMER_ID]), text_ids(part[CUSTOMER_ID]))).as_py():
            raise PipelineError("assignments and features do not line up by customer id", None, FIX_ASSIGN)
        current = _segments_batch(batch, part, features.contacts)
        if RFM_SEGMENT in batch.column_names:
            differ += pc.sum(pc.not_equal(batch[RFM_SEGMENT], current[RFM_SEGMENT])).as_py() or 0
        last = None if upcoming is None else str(current[CUSTOMER_ID][current.num_rows - 1].as_py())
        comparison = compare_tables(previous.until(last), current)
        table = with_recommended_action(current, playbook)
        table = (table.append_column(PREVIOUS_SEGMENT, comparison.previous_segment)
                 .append_column(PREVIOUS_CLUSTER_NAME, comparison.previous_cluster_name))
        write(table)
        sends.append(comparison.send)
        left.append(text_ids(comparison.left[CUSTOMER_ID]))
        if keep_previous_rows and comparison.previous_changed.num_rows:
            previous_changed.append(comparison.previous_changed)
        for kind in CHANGE_ORDER:
            chosen = comparison.changes.filter(pc.equal(comparison.changes[CHANGE], kind))
            if chosen.num_rows:
                changes[kind].append(_compact(chosen))
        groups.append(table.select([CLUSTER, CLUSTER_NAME, RFM_SEGMENT]).group_by(
            [CLUSTER, CLUSTER_NAME, RFM_SEGMENT]).aggregate([]).to_pandas())
        contacts = [c for c in (EMAIL, PHONE) if c in table.column_names]
        if contacts:
            has = pc.or_kleene(*[pc.is_valid(table[c]) for c in contacts]) if len(contacts) == 2 \
                else pc.is_valid(table[contacts[0]])
            without_contact += table.num_rows - (pc.sum(has).as_py() or 0)
        else:
            without_contact += table.num_rows
        offset += current.num_rows
        batch = upcoming
    send = np.concatenate(sends) if sends else np.zeros(0, dtype=bool)
    lengths = pc.utf8_length(features.ids)
    longest = int(pc.max(lengths).as_py() or 0)
    first_longest = pc.min(features.ids.filter(pc.equal(lengths, longest))).as_py() if len(lengths) else None
    row_of_longest = int(pc.sum(pc.less(features.ids, first_longest)).as_py() or 0) if len(lengths) else 0
    population = Population(
        customers=len(features.ids),
        groups=pd.concat(groups, ignore_index=True).drop_duplicates(ignore_index=True),
        ids_too_long=int(pc.sum(pc.greater(lengths, MAX_KEY)).as_py() or 0),
        longest_id=(longest, row_of_longest),
        without_contact=without_contact)
    all_changes = pa.concat_tables([t for kind in CHANGE_ORDER for t in changes[kind]] or
                                   [_compact(_empty_changes())])
    counts = {kind: sum(t.num_rows for t in changes[kind]) for kind in (ENTERED, LEFT, MOVED)}
    counts["customers_to_send"] = int(send.sum())
    return PassResult(
        population=population, send=send,
        left_ids=pa.concat_arrays(left) if left else pa.array([], pa.string()),
        changes=all_changes,
        previous_changed=(pa.concat_tables(previous_changed) if previous_changed else None)
        if keep_previous_rows else None,
        segments=int(population.groups[RFM_SEGMENT].nunique()),
        clusters=int(population.groups[CLUSTER].nunique()),
        assignments_differ=differ, counts=counts)


def plain_changes(changes: pa.Table) -> Iterator[pa.Table]:
    """``changes.parquet``'s rows (all text) from :attr:`PassResult.changes`, a batch at a time."""
    for start in range(0, changes.num_rows, BATCH_ROWS):
        yield changes_table(changes.slice(start, BATCH_ROWS))


def _empty_changes() -> pa.Table:
    return CHANGES_SCHEMA.empty_table()


__all__ = ["FeatureFile", "PassResult", "Population", "check_one_assignment_each", "plain_changes", "run_pass",
           "text_ids", "with_recommended_action", "FIX_ASSIGN", "MAX_KEY"]
