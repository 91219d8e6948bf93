"""The last publish, as the evaluation step sees it: what the report's "Changes since the last published
run" section compares this run with.

The export Lambda keeps the last published segments under ``<prefix>/published/``: ``published.json``
(which execution, when) and ``segments.parquet``. The evaluation step gets that folder as
``--published`` (an ``s3://`` URI on SageMaker, a folder in local runs) and reads it with
:func:`read_baseline`. Which file is the last publish (``steps.published.read_published``) and how
this run compares with it (``steps.published.compare_tables``: the rows of the export's
``changes.parquet``) are the export's own code, so the report shows what a publish of this run writes.

On S3 a missing ``published.json`` (404, which needs ``s3:ListBucket`` on the prefix) means nothing was
published yet; a baseline that is there but cannot be read (refused, damaged) does not stop the run:
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
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from botocore.exceptions import BotoCoreError, ClientError

from steps import columns as c
from steps.errors import RFMError
from steps.paths import SEGMENTS_FILE
from steps.published import changes_table, compare_tables, read_published

log = logging.getLogger("rfm.evaluate")

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


class _Files:
    """``read_bytes`` of a file in a folder or an S3 object (FileNotFoundError when it is not there)."""

    def __init__(self, client: Any = None) -> None:
        self.client = client

    def read_bytes(self, uri: str) -> bytes:
        if not uri.startswith("s3://"):
            return Path(uri.removeprefix("file://")).read_bytes()
        if self.client is None:
            import boto3

            self.client = boto3.client("s3")
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        try:
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(uri) from None
            raise


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
    files = _Files(client)
    try:
        published = read_published(files, uri)
        if not published.segments_uri:
            return Baseline()
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(io.BytesIO(files.read_bytes(published.segments_uri)))
        present = [name for name in BASELINE_COLUMNS if name in parquet.schema_arrow.names]
        missing = {c.CUSTOMER_ID, c.RFM_SEGMENT} - set(present)
        if missing:
            raise ValueError(f"{SEGMENTS_FILE} has no {', '.join(sorted(missing))} column")
        segments = parquet.read(columns=present).to_pandas()
    except (RFMError, OSError, ValueError, KeyError, BotoCoreError, ClientError) as error:
        problem = f"the last publish at {uri} could not be read ({type(error).__name__}: {error})"
        log.warning("report: %s; the report shows no comparison", problem)
        return Baseline(problem=problem)
    segments[c.CUSTOMER_ID] = segments[c.CUSTOMER_ID].astype(str)
    return Baseline(segments, published.execution_id, published.published_at)


def compare_segments(previous: pd.DataFrame, current: pd.DataFrame) -> pd.DataFrame:
    """``changes.parquet``'s rows for ``current`` against ``previous`` (both: one row per customer), as the
    export writes them (``steps.published.compare_tables``): ``left``, ``moved`` (RFM segment or cluster
    name differs), ``entered``, then by ``customer_id``; missing values are None."""
    changes = changes_table(compare_tables(previous, current).changes).to_pandas()
    return changes.astype(object).where(changes.notna(), None)
