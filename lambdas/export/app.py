"""Join segment assignments with the RFM features and export segment files.

Called by the pipeline's ExportSegments Lambda step, or in-process by the local runner (then the
URIs may be local folders or ``file://`` URIs and ``context`` may be None).

Event contract
--------------
``{"assignments_uri": prefix of the batch transform output (``*.out`` JSON Lines, one
{"customer_id", "cluster", "cluster_name", "rfm_segment"} object per line),
"features_uri": prefix holding ``rfm.parquet`` (or the file itself),
"output_uri": prefix to write to, "execution_id": str (optional), "model_package_arn": str (optional)}``

Output layout (everything under ``output_uri``)
-----------------------------------------------
::

    segments.parquet                              one row per customer
    export/rfm_segment=<slug>/part.csv|.parquet   customers of one RFM segment
    export/cluster=<n>/part.csv|.parquet          customers of one k-means cluster

Columns everywhere are ``steps.columns.SEGMENT_COLUMNS`` then the contact columns present in
``rfm.parquet`` (email, phone, address, channel); rows are sorted by ``customer_id``. The slug is
the segment name lower-cased, apostrophes dropped, other runs of non-alphanumerics turned into
``-`` (``Can't Lose Them`` -> ``cant-lose-them``). CSVs quote every non-numeric value, so ids
such as ``007`` or ``1e3`` survive spreadsheet-like readers. Each directory is one self-contained
file set: read a single ``rfm_segment=`` or ``cluster=`` directory, not ``export/`` as one
dataset. A re-run overwrites the same files and deletes files under ``export/`` it did not write.

Return value
------------
``{"customers": n, "segments": RFM segments with customers, "clusters": clusters with customers,
"destinations": "s3", "files": [URIs written], "by_destination": {"s3": {"customers", "files"}}}``.
The scalar keys fit SageMaker ``LambdaOutput`` (String/Integer) declarations.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import boto3
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.export.storage import Storage, is_s3, join
from steps.columns import (
    ASSIGNMENT_COLUMNS,
    CLUSTER,
    CLUSTER_NAME,
    CONTACT_COLUMNS,
    CUSTOMER_ID,
    RFM_SEGMENT,
    SEGMENT_COLUMNS,
)
from steps.errors import PipelineError
from steps.paths import RFM_FILE, SEGMENTS_FILE

logger = Logger(service="rfm-export")

ASSIGNMENT_SUFFIX = ".out"
EXPORT_DIR = "export"
DESTINATION = "s3"
_FIX_ASSIGN = "Re-run AssignSegments (batch transform) on the features of the same execution"


@dataclass(frozen=True)
class ExportRequest:
    """The Lambda step's inputs."""

    assignments_uri: str
    features_uri: str
    output_uri: str
    execution_id: str = ""
    model_package_arn: str = ""

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> ExportRequest:
        missing = [k for k in ("assignments_uri", "features_uri", "output_uri") if not event.get(k)]
        if missing:
            raise PipelineError(f"the event lacks {', '.join(missing)}", "export Lambda",
                                "Pass assignments_uri, features_uri and output_uri from the pipeline")
        return cls(**{k: str(event.get(k) or "") for k in cls.__dataclass_fields__})

    @property
    def uses_s3(self) -> bool:
        return any(is_s3(uri) for uri in (self.assignments_uri, self.features_uri, self.output_uri))


def _json_values(line: str, where: str) -> list[Any]:
    """The JSON values on one line; glued values (``}{``, left when a transform without
    ``AssembleWith=Line`` concatenates responses) and arrays of objects are split up."""
    decoder, values, position, text = json.JSONDecoder(), [], 0, line.strip()
    while position < len(text):
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise PipelineError(f"not JSON ({error.msg})", where, _FIX_ASSIGN) from None
        values.extend(value if isinstance(value, list) else [value])
        while position < len(text) and text[position] in " \t,":
            position += 1
    return values


def _assignment(record: Any, where: str) -> dict[str, Any]:
    if not isinstance(record, dict) or any(k not in record for k in ASSIGNMENT_COLUMNS):
        raise PipelineError(f"expected an object with {', '.join(ASSIGNMENT_COLUMNS)}", where, _FIX_ASSIGN)
    cluster = record[CLUSTER]
    if isinstance(cluster, float) and cluster.is_integer():
        cluster = int(cluster)
    if not isinstance(record[CUSTOMER_ID], str) or not isinstance(cluster, int) or isinstance(cluster, bool):
        raise PipelineError("customer_id must be a JSON string and cluster an integer", where, _FIX_ASSIGN)
    if not isinstance(record[CLUSTER_NAME], str) or not isinstance(record[RFM_SEGMENT], str):
        raise PipelineError("cluster_name and rfm_segment must be strings", where, _FIX_ASSIGN)
    return {CUSTOMER_ID: record[CUSTOMER_ID], CLUSTER: cluster,
            CLUSTER_NAME: record[CLUSTER_NAME], RFM_SEGMENT: record[RFM_SEGMENT]}


def read_assignments(storage: Storage, uri: str) -> pd.DataFrame:
    """All assignments from the ``*.out`` files under ``uri``; customer ids stay strings."""
    files = storage.list(uri, ASSIGNMENT_SUFFIX)
    if not files:
        raise PipelineError(f"no *{ASSIGNMENT_SUFFIX} assignment files", uri, _FIX_ASSIGN)
    rows = [
        _assignment(record, f"{file} line {number}")
        for file in files
        for number, line in enumerate(storage.read_bytes(file).decode("utf-8").splitlines(), start=1)
        for record in _json_values(line, f"{file} line {number}")
    ]
    frame = pd.DataFrame(rows, columns=list(ASSIGNMENT_COLUMNS))
    return frame.astype({CUSTOMER_ID: "str", CLUSTER: "int64", CLUSTER_NAME: "str", RFM_SEGMENT: "str"})


def read_features(storage: Storage, uri: str) -> pd.DataFrame:
    """``rfm.parquet`` under ``uri`` (or ``uri`` itself), with the columns segments.parquet needs."""
    path = uri if uri.endswith(".parquet") else join(uri, RFM_FILE)
    if not storage.exists(path):
        raise PipelineError(f"{RFM_FILE} not found", path, "Run ComputeRFM first, or fix features_uri")
    table = pq.read_table(io.BytesIO(storage.read_bytes(path)))
    needed = [c for c in SEGMENT_COLUMNS if c not in ASSIGNMENT_COLUMNS or c == CUSTOMER_ID]
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise PipelineError(f"columns missing: {', '.join(missing)}", path, "Re-run ComputeRFM")
    if not pa.types.is_string(table[CUSTOMER_ID].type) and not pa.types.is_large_string(table[CUSTOMER_ID].type):
        raise PipelineError(f"customer_id is {table[CUSTOMER_ID].type}, expected string", path,
                            "Re-run ComputeRFM: customer ids must be kept as strings")
    contacts = [c for c in CONTACT_COLUMNS if c in table.column_names]
    extra = [RFM_SEGMENT] if RFM_SEGMENT in table.column_names else []
    return table.select(needed + contacts + extra).to_pandas()


def join_segments(features: pd.DataFrame, assignments: pd.DataFrame, where: str = "") -> pd.DataFrame:
    """One row per customer: features joined with exactly one assignment each.

    Raises
    ------
    PipelineError
        When some customer has no assignment, several, or an assignment names an unknown customer;
        the message gives the counts (never the ids).
    """
    feature_ids = features[CUSTOMER_ID]
    counts = assignments[CUSTOMER_ID].value_counts()
    known = feature_ids.isin(counts.index)
    several = int((counts.reindex(feature_ids[known]) > 1).sum())
    unknown = int((~assignments[CUSTOMER_ID].isin(feature_ids)).sum())
    repeated = int(feature_ids.duplicated().sum())
    if (~known).any() or several or unknown or repeated:
        raise PipelineError(
            f"{len(features)} customers in {RFM_FILE} ({repeated} repeated ids) but {len(assignments)} "
            f"assignments: {int((~known).sum())} customers without one, {several} with more than one, "
            f"{unknown} for customers not in {RFM_FILE}", where or None, _FIX_ASSIGN)
    if RFM_SEGMENT in features:
        check = features[[CUSTOMER_ID, RFM_SEGMENT]].merge(assignments, on=CUSTOMER_ID, suffixes=("", "_a"))
        differ = int((check[RFM_SEGMENT] != check[f"{RFM_SEGMENT}_a"]).sum())
        if differ:
            logger.warning("rfm_segment differs between features and assignments; using the assignments'",
                           extra={"customers": differ})
        features = features.drop(columns=[RFM_SEGMENT])
    joined = features.merge(assignments, on=CUSTOMER_ID, how="inner", validate="one_to_one")
    contacts = [c for c in CONTACT_COLUMNS if c in joined]
    return joined[[*SEGMENT_COLUMNS, *contacts]].sort_values(CUSTOMER_ID, ignore_index=True)


def slug(name: str) -> str:
    """A segment name as a safe S3 key / folder part.

    Examples
    --------
    >>> slug("Can't Lose Them")
    'cant-lose-them'
    """
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", re.sub(r"['’`]", "", ascii_name.lower())).strip("-") or "unnamed"


def partitions(segments: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``{"export/rfm_segment=<slug>": rows, "export/cluster=<n>": rows}``, sorted keys."""
    names = sorted(segments[RFM_SEGMENT].unique())
    slugs = {name: slug(name) for name in names}
    if len(set(slugs.values())) < len(slugs):
        raise PipelineError(f"segment names share a folder name: {slugs}", "export Lambda",
                            "Give segments names that differ in letters or digits")
    parts = {f"{EXPORT_DIR}/{RFM_SEGMENT}={slugs[n]}": segments[segments[RFM_SEGMENT] == n] for n in names}
    for cluster in sorted(segments[CLUSTER].unique()):
        parts[f"{EXPORT_DIR}/{CLUSTER}={int(cluster)}"] = segments[segments[CLUSTER] == cluster]
    return {key: rows.reset_index(drop=True) for key, rows in parts.items()}


def to_parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer)
    return buffer.getvalue()


def to_csv(frame: pd.DataFrame) -> bytes:
    text = frame.to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    return text.encode("utf-8")


def export_segments(request: ExportRequest, storage: Storage) -> dict[str, Any]:
    """Read, join, check and write; the plain function behind :func:`handler`."""
    assignments = read_assignments(storage, request.assignments_uri)
    features = read_features(storage, request.features_uri)
    segments = join_segments(features, assignments, request.assignments_uri)
    files = {join(request.output_uri, SEGMENTS_FILE): to_parquet(segments)}
    for folder, rows in partitions(segments).items():
        files[join(request.output_uri, *folder.split("/"), "part.csv")] = to_csv(rows)
        files[join(request.output_uri, *folder.split("/"), "part.parquet")] = to_parquet(rows)
    for uri, data in files.items():
        storage.write_bytes(uri, data)
    stale = [uri for uri in storage.list(join(request.output_uri, EXPORT_DIR)) if uri not in files]
    storage.delete(stale)
    summary = {
        "customers": len(segments),
        "segments": int(segments[RFM_SEGMENT].nunique()),
        "clusters": int(segments[CLUSTER].nunique()),
        "destinations": DESTINATION,
        "files": list(files),
        "by_destination": {DESTINATION: {"customers": len(segments), "files": len(files)}},
    }
    logger.info("Segments exported", extra={"output_uri": request.output_uri, "stale_files_deleted": len(stale),
                                            **{k: v for k, v in summary.items() if k != "files"}})
    return summary


@functools.cache
def _s3_client() -> Any:
    """The S3 client, created once per container (honours ``AWS_ENDPOINT_URL``)."""
    return boto3.client("s3")


def _handle(event: dict[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    request = ExportRequest.from_event(event)
    logger.set_correlation_id(request.execution_id or None)
    logger.append_keys(model_package_arn=request.model_package_arn or None)
    return export_segments(request, Storage(_s3_client() if request.uses_s3 else None))


_handle_in_lambda = logger.inject_lambda_context(_handle, clear_state=True)


def handler(event: dict[str, Any], context: LambdaContext | None = None) -> dict[str, Any]:
    """Lambda entry point; ``context`` may be None when the local runner calls it in-process."""
    if context is None:
        return _handle(event, None)
    return _handle_in_lambda(event, context)
