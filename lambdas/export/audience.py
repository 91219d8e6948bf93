"""The customers an API destination is sent, read a slice at a time.

Customer Profiles and Pinpoint used to get every customer as one pandas DataFrame: at millions of
customers that frame alone was more than the function's memory. Now they get an :class:`Audience`:
the customers to send (all of them, or the delta) in ``segments.parquet``'s order, as small
DataFrames (:meth:`Audience.frame`), plus the :class:`~lambdas.export.batches.Population` (what
they need to know of every customer: the segments and clusters, the longest id, ...).
:class:`FileAudience` reads ``segments.parquet`` back a row group at a time; :class:`FrameAudience`
wraps a DataFrame (tests, small calls).

Example
-------
>>> import pandas as pd
>>> frame = pd.DataFrame({"customer_id": ["a", "b", "c"], "cluster": [0, 1, 0], "cluster_name": ["x", "y", "x"],
...                       "rfm_segment": ["Loyal", "Loyal", "At Risk"]})
>>> audience = FrameAudience(frame, [True, False, True])
>>> len(audience), audience.frame(1, 2)["customer_id"].tolist(), audience.population.customers
(2, ['c'], 3)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lambdas.export.batches import Population
from lambdas.export.storage import Storage
from steps.columns import CONTACT_COLUMNS, SEGMENT_COLUMNS
from steps.playbook import RECOMMENDED_ACTION


class Audience:
    """Base: the customers to send, ``population`` of every customer; subclasses give :meth:`frame`."""

    population: Population

    def __len__(self) -> int:
        raise NotImplementedError

    def frame(self, start: int, stop: int) -> pd.DataFrame:
        """The customers to send from ``start`` to ``stop`` (positions among them), index 0..n-1."""
        raise NotImplementedError

    def frames(self, size: int, stop: int | None = None) -> Iterator[pd.DataFrame]:
        """The customers to send (up to ``stop``), ``size`` at a time."""
        end = len(self) if stop is None else min(stop, len(self))
        for start in range(0, end, size):
            yield self.frame(start, min(start + size, end))

    def whole(self) -> pd.DataFrame:
        """Every customer to send at once (Pinpoint's import; the delta is small)."""
        return self.frame(0, len(self))


class FrameAudience(Audience):
    """The customers of a DataFrame of every customer, where ``send`` is true (None: all)."""

    def __init__(self, segments: pd.DataFrame, send: Sequence[bool] | np.ndarray | None = None) -> None:
        self.population = Population.of_frame(segments)
        chosen = segments if send is None else segments[np.asarray(send, dtype=bool)]
        self.segments = chosen.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.segments)

    def frame(self, start: int, stop: int) -> pd.DataFrame:
        return self.segments.iloc[start:stop].reset_index(drop=True)


class FileAudience(Audience):
    """The customers of a ``segments.parquet`` (every customer, in order) where ``send`` is true.

    Read back a row group at a time (the last one kept), only the columns the destinations use:
    ``SEGMENT_COLUMNS``, ``recommended_action`` and the contact columns.
    """

    def __init__(self, storage: Storage, uri: str, population: Population, send: np.ndarray | None) -> None:
        self.population = population
        self.parquet = pq.ParquetFile(storage.open_read(uri))
        names = self.parquet.schema_arrow.names
        self.columns = [c for c in (*SEGMENT_COLUMNS, RECOMMENDED_ACTION, *CONTACT_COLUMNS) if c in names]
        sizes = [self.parquet.metadata.row_group(i).num_rows for i in range(self.parquet.num_row_groups)]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.rows = (np.arange(self.starts[-1], dtype=np.int64) if send is None
                     else np.flatnonzero(np.asarray(send, dtype=bool)).astype(np.int64))
        self._cached: tuple[int, pa.Table] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def _group(self, number: int) -> pa.Table:
        if self._cached is None or self._cached[0] != number:
            self._cached = (number, self.parquet.read_row_group(number, columns=self.columns))
        return self._cached[1]

    def frame(self, start: int, stop: int) -> pd.DataFrame:
        rows = self.rows[start:stop]
        parts: list[pa.Table] = []
        groups = np.searchsorted(self.starts, rows, side="right") - 1
        for number in np.unique(groups):
            local = rows[groups == number] - self.starts[number]
            parts.append(self._group(int(number)).take(pa.array(local)))
        table = pa.concat_tables(parts) if parts else self.parquet.schema_arrow.empty_table().select(self.columns)
        return table.to_pandas()


def audience_of(segments: pd.DataFrame | Audience, send: Any = None) -> Audience:
    """``segments`` itself when it is an :class:`Audience`, else a :class:`FrameAudience` of it."""
    return segments if isinstance(segments, Audience) else FrameAudience(segments, send)
