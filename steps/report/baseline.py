"""The last publish, as the evaluation step sees it: what the report's "Changes since the last published
run" section compares this run with.

The export Lambda keeps the last published segments under ``<prefix>/published/``
(``lambdas/export/changes.py``): ``published.json`` (which execution, when) and ``segments.parquet``.
The evaluation step gets that folder as ``--published`` (an ``s3://`` URI on SageMaker, a folder in
local runs), reads it with :func:`read_baseline` when something was published, and compares the run's
segments with it (:func:`compare_segments`): the sizes, revenue and migration matrix the export's
``changes.parquet`` will hold if this run is published.

Reading S3 lists ``published/`` first (``s3:ListBucket`` on that prefix), so "nothing published yet"
is told apart from a refused read; a baseline that is there but cannot be read does not stop the run:
the report says why the comparison is missing.

Example
-------
>>> import pandas as pd
>>> before = pd.DataFrame({"customer_id": ["a", "b"], "rfm_segment": ["Loyal", "Loyal"],
...                        "cluster_name": ["Big", "Big"]})
>>> now = pd.DataFrame({"customer_id": ["a", "c"], "rfm_segment": ["At Risk", "Promising"],
...                     "cluster_name": ["Big", "Small"]})
>>> compare_segments(before, now)[["customer_id", "change"]].values.tolist()
[['b', 'left'], ['a', 'moved'], ['c', 'entered']]
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from botocore.exceptions import BotoCoreError, ClientError

from steps import columns as c
from steps.paths import PUBLISHED_MANIFEST, SEGMENTS_FILE

log = logging.getLogger("rfm.evaluate")

CHANGE_ORDER = (c.LEFT, c.MOVED, c.ENTERED)  # as changes.parquet: who to act on first
BASELINE_COLUMNS = (c.CUSTOMER_ID, c.RFM_SEGMENT, c.CLUSTER_NAME, c.MONETARY)  # what the comparison reads


@dataclass(frozen=True)
class Baseline:
    """The last publish: its segments (None: nothing published, or unreadable) and where they came from."""

    segments: pd.DataFrame | None = None
    execution_id: str = ""
    published_at: str = ""
    problem: str = ""  # why a baseline that is there could not be read

    @property
    def found(self) -> bool:
        return self.segments is not None

    def note(self) -> str:
        """One sentence for the report: what this run is compared with, or why it is not."""
        if self.problem:
            return f"No comparison: {self.problem}."
        if not self.found:
            return ""
        when = f", published {self.published_at}" if self.published_at else ""
        which = f"execution {self.execution_id}" if self.execution_id else "the last publish"
        return f"Compared with the segments of {which}{when} ({len(self.segments):,} customers)."


def _s3_parts(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key.rstrip("/")


def _read_s3(uri: str, client: Any) -> tuple[bytes, bytes] | None:
    """``published.json`` and ``segments.parquet`` under ``uri``, or None when nothing was published."""
    if client is None:
        import boto3

        client = boto3.client("s3")
    bucket, prefix = _s3_parts(uri)
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{PUBLISHED_MANIFEST}", MaxKeys=1)
    if not any(item["Key"] == f"{prefix}/{PUBLISHED_MANIFEST}" for item in listed.get("Contents", [])):
        return None
    manifest = client.get_object(Bucket=bucket, Key=f"{prefix}/{PUBLISHED_MANIFEST}")["Body"].read()
    segments = client.get_object(Bucket=bucket, Key=f"{prefix}/{SEGMENTS_FILE}")["Body"].read()
    return manifest, segments


def _read_folder(folder: Path) -> tuple[bytes, bytes] | None:
    manifest = folder / PUBLISHED_MANIFEST
    if not manifest.is_file():
        return None
    return manifest.read_bytes(), (folder / SEGMENTS_FILE).read_bytes()


def read_baseline(uri: str, client: Any = None) -> Baseline:
    """The last publish under ``uri`` (``s3://bucket/<prefix>/published`` or a folder); empty when none.

    Parameters
    ----------
    uri : str
        The ``published/`` folder; empty: no baseline (an empty :class:`Baseline`).
    client : boto3 S3 client, optional
        For ``s3://`` URIs; default ``boto3.client("s3")`` (``AWS_ENDPOINT_URL`` is honoured).

    Returns
    -------
    Baseline
        ``segments`` holds the columns of ``BASELINE_COLUMNS`` that are present, ids as text; a
        baseline that is there but cannot be read comes back without segments and with ``problem``.
    """
    if not uri:
        return Baseline()
    try:
        found = _read_s3(uri, client) if uri.startswith("s3://") else _read_folder(Path(uri.removeprefix("file://")))
        if found is None:
            return Baseline()
        manifest = json.loads(found[0])
        if not isinstance(manifest, dict):
            raise ValueError(f"{PUBLISHED_MANIFEST} is not a JSON object")
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(io.BytesIO(found[1]))
        present = [name for name in BASELINE_COLUMNS if name in parquet.schema_arrow.names]
        missing = {c.CUSTOMER_ID, c.RFM_SEGMENT} - set(present)
        if missing:
            raise ValueError(f"{SEGMENTS_FILE} has no {', '.join(sorted(missing))} column")
        segments = parquet.read(columns=present).to_pandas()
    except (OSError, ValueError, KeyError, BotoCoreError, ClientError) as error:
        problem = f"the last publish at {uri} could not be read ({type(error).__name__}: {error})"
        log.warning("report: %s; the report shows no comparison", problem)
        return Baseline(problem=problem)
    segments[c.CUSTOMER_ID] = segments[c.CUSTOMER_ID].astype(str)
    return Baseline(segments, str(manifest.get("execution_id", "")), str(manifest.get("published", "")))


def compare_segments(previous: pd.DataFrame, current: pd.DataFrame) -> pd.DataFrame:
    """``changes.parquet``'s rows for ``current`` against ``previous`` (both: one row per customer).

    Customers only in ``previous`` have ``left``, only in ``current`` ``entered``; customers in both
    whose RFM segment or cluster name differs have ``moved``. Sorted left, moved, entered, then by
    ``customer_id``: the rows the export's comparison (``lambdas/export/changes.py``) writes.
    """
    def view(frame: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame({c.CUSTOMER_ID: frame[c.CUSTOMER_ID].astype(str).to_numpy(),
                            c.SEGMENT: frame[c.RFM_SEGMENT].astype(object).to_numpy()})
        out[c.CLUSTER_NAME] = frame[c.CLUSTER_NAME].astype(object).to_numpy() if c.CLUSTER_NAME in frame else None
        return out

    merged = view(previous).merge(view(current), on=c.CUSTOMER_ID, how="outer", suffixes=("_before", ""),
                                  indicator=True)
    merged = merged.rename(columns={f"{c.SEGMENT}_before": c.PREVIOUS_SEGMENT,
                                    f"{c.CLUSTER_NAME}_before": c.PREVIOUS_CLUSTER_NAME})

    def differs(before: str, after: str) -> pd.Series:
        return ~((merged[before] == merged[after]) | (merged[before].isna() & merged[after].isna()))

    both = merged["_merge"] == "both"
    moved = both & (differs(c.PREVIOUS_SEGMENT, c.SEGMENT) | differs(c.PREVIOUS_CLUSTER_NAME, c.CLUSTER_NAME))
    merged[c.CHANGE] = None
    merged.loc[merged["_merge"] == "left_only", c.CHANGE] = c.LEFT
    merged.loc[merged["_merge"] == "right_only", c.CHANGE] = c.ENTERED
    merged.loc[moved, c.CHANGE] = c.MOVED
    changes = merged[merged[c.CHANGE].notna()].copy()
    changes["_order"] = changes[c.CHANGE].map({kind: i for i, kind in enumerate(CHANGE_ORDER)})
    changes = changes.sort_values(["_order", c.CUSTOMER_ID], kind="stable")
    return changes[list(c.CHANGE_COLUMNS)].reset_index(drop=True)
