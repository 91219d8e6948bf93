"""The export Lambda on moto S3, local folders and file:// URIs."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto import mock_aws

from lambdas.export import app
from lambdas.export.app import ExportRequest, export_segments, slug
from lambdas.export.storage import Storage, join
from steps.columns import CONTACT_COLUMNS, FEATURE_COLUMNS, SEGMENT_COLUMNS
from steps.errors import PipelineError
from steps.segments import SEGMENT_NAMES, segment_of

BUCKET = "rfm-bucket"
# Ids a careless cast or CSV reader would change or merge.
IDS = ["007", "7", " A1", "A1", "a1", "1e3", "1000", "NaN", "null", "0x1F", "1,5", "é-ü", "x" * 40, "42 "]


@dataclass
class FakeContext:
    function_name: str = "rfm-export"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:rfm-export"
    aws_request_id: str = "00000000-0000-0000-0000-000000000002"


@pytest.fixture(params=["s3", "local", "file-uri"])
def base(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """(root URI, storage) for each kind of location the export must handle."""
    if request.param != "s3":
        yield (str(tmp_path) if request.param == "local" else tmp_path.as_uri()), Storage()
        return
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        yield f"s3://{BUCKET}/rfm/executions/abc", Storage(s3)


def features(ids: list[str], contacts: bool = True) -> pa.Table:
    n = len(ids)
    r_scores = [1 + i % 5 for i in range(n)]
    f_scores = [1 + (i * 3) % 5 for i in range(n)]
    columns: dict[str, Any] = {
        "customer_id": pa.array(ids, pa.string()),
        "first_purchase": pa.array([pd.Timestamp("2024-01-01")] * n, pa.timestamp("ns")),
        "last_purchase": pa.array([pd.Timestamp("2024-06-01")] * n, pa.timestamp("ns")),
        "recency_days": pa.array([10 * i for i in range(n)], pa.int64()),
        "frequency": pa.array([1 + i for i in range(n)], pa.int64()),
        "monetary": pa.array([12.5 * (i + 1) for i in range(n)], pa.float64()),
        "avg_order_value": pa.array([12.5] * n, pa.float64()),
        "r_score": pa.array(r_scores, pa.int64()),
        "f_score": pa.array(f_scores, pa.int64()),
        "m_score": pa.array([1 + i % 5 for i in range(n)], pa.int64()),
        "rfm_score": pa.array([f"{r}{f}" for r, f in zip(r_scores, f_scores, strict=True)], pa.string()),
        "rfm_segment": pa.array([segment_of(r, f) for r, f in zip(r_scores, f_scores, strict=True)]),
    }
    assert tuple(columns) == FEATURE_COLUMNS
    if contacts:
        columns["email"] = pa.array([f"person{i}@example.com" for i in range(n)])
        columns["phone"] = pa.array([f"+1555000{i:04d}" if i % 3 else None for i in range(n)])
    return pa.table(columns)


def assignment_lines(table: pa.Table) -> list[str]:
    rows = table.select(["customer_id", "rfm_segment"]).to_pylist()
    return [json.dumps({"customer_id": row["customer_id"], "cluster": i % 3, "cluster_name": f"Cluster {i % 3}",
                        "rfm_segment": row["rfm_segment"]}) for i, row in enumerate(rows)]


def write(storage: Storage, uri: str, data: bytes) -> None:
    storage.write_bytes(uri, data)


def parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def setup_inputs(root: str, storage: Storage, table: pa.Table, lines: list[str] | None = None) -> ExportRequest:
    """rfm.parquet plus assignments split over two .out files (one nested) and an ignored file."""
    lines = assignment_lines(table) if lines is None else lines
    write(storage, join(root, "features", "rfm.parquet"), parquet_bytes(table))
    half = len(lines) // 2
    write(storage, join(root, "transform", "customers.csv.out"), ("\n".join(lines[:half]) + "\n").encode())
    write(storage, join(root, "transform", "part", "more.csv.out"), ("\n\n".join(lines[half:])).encode())
    write(storage, join(root, "transform", "_manifest.json"), b"{}")
    return ExportRequest(assignments_uri=join(root, "transform"), features_uri=join(root, "features"),
                         output_uri=join(root, "segments"), execution_id="exec-1",
                         model_package_arn="arn:aws:sagemaker:us-east-1:123456789012:model-package/rfm/1")


def read_parquet(storage: Storage, uri: str) -> pd.DataFrame:
    return pq.read_table(io.BytesIO(storage.read_bytes(uri))).to_pandas()


def read_csv(storage: Storage, uri: str) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(storage.read_bytes(uri)), dtype=str, keep_default_na=False)


def snapshot(storage: Storage, root: str) -> dict[str, bytes]:
    return {uri[len(root):]: storage.read_bytes(uri) for uri in storage.list(root)}


@pytest.mark.parametrize("contacts", [True, False])
def test_segments_have_one_row_per_customer_with_exact_ids(base, contacts) -> None:
    root, storage = base
    table = features(IDS, contacts)
    request = setup_inputs(root, storage, table)

    summary = export_segments(request, storage)

    segments = read_parquet(storage, join(request.output_uri, "segments.parquet"))
    contact_columns = ["email", "phone"] if contacts else []
    assert list(segments.columns) == [*SEGMENT_COLUMNS, *contact_columns]
    assert segments["customer_id"].tolist() == sorted(IDS)
    expected = {json.loads(line)["customer_id"]: json.loads(line)["cluster"] for line in assignment_lines(table)}
    assert dict(zip(segments["customer_id"], segments["cluster"], strict=True)) == expected
    assert summary["customers"] == len(IDS)
    assert summary["segments"] == len(set(table["rfm_segment"].to_pylist()))
    assert summary["destinations"] == "s3"
    assert sorted(summary["files"]) == storage.list(request.output_uri)
    assert summary["by_destination"] == {"s3": {"customers": len(IDS), "files": len(summary["files"])}}
    json.dumps(summary)


@pytest.mark.parametrize(("column", "prefix"), [("rfm_segment", "rfm_segment="), ("cluster", "cluster=")])
def test_partitions_hold_every_customer_exactly_once(base, column, prefix) -> None:
    root, storage = base
    request = setup_inputs(root, storage, features(IDS))
    export_segments(request, storage)

    folders = sorted({uri.split("/")[-2] for uri in storage.list(join(request.output_uri, "export"))
                      if uri.split("/")[-2].startswith(prefix)})
    assert folders
    from_parquet: list[str] = []
    from_csv: list[str] = []
    for folder in folders:
        rows = read_parquet(storage, join(request.output_uri, "export", folder, "part.parquet"))
        csv_rows = read_csv(storage, join(request.output_uri, "export", folder, "part.csv"))
        values = {str(slug(v)) if column == "rfm_segment" else str(v) for v in rows[column]}
        assert values == {folder.removeprefix(prefix)}
        assert csv_rows["customer_id"].tolist() == rows["customer_id"].tolist()
        from_parquet += rows["customer_id"].tolist()
        from_csv += csv_rows["customer_id"].tolist()
    assert sorted(from_parquet) == sorted(from_csv) == sorted(IDS)


def test_csv_quotes_text_so_ids_stay_text(base) -> None:
    root, storage = base
    request = setup_inputs(root, storage, features(["007", "1e3"], contacts=False),
                           ['{"customer_id": "007", "cluster": 0, "cluster_name": "C", "rfm_segment": "Loyal"}',
                            '{"customer_id": "1e3", "cluster": 0, "cluster_name": "C", "rfm_segment": "Loyal"}'])
    export_segments(request, storage)

    text = storage.read_bytes(join(request.output_uri, "export", "cluster=0", "part.csv")).decode()
    assert text.splitlines()[1].startswith('"007",0,"C","Loyal",')
    assert text.splitlines()[2].startswith('"1e3",0,')


def test_rerun_gives_identical_files_and_removes_stale_ones(base) -> None:
    root, storage = base
    request = setup_inputs(root, storage, features(IDS))
    export_segments(request, storage)
    first = snapshot(storage, request.output_uri)
    write(storage, join(request.output_uri, "export", "rfm_segment=old", "part.csv"), b"stale")

    export_segments(request, storage)

    assert snapshot(storage, request.output_uri) == first


@pytest.mark.parametrize(("change", "message"), [
    (lambda lines: lines[1:], "14 customers in rfm.parquet (0 repeated ids) but 13 assignments: 1 customers without"),
    (lambda lines: [*lines, lines[0]], "0 customers without one, 1 with more than one"),
    (lambda lines: [*lines, lines[0].replace('"007"', '"0007"')], "1 for customers not in rfm.parquet"),
    (lambda lines: [line.replace('" A1"', '"A1 "') for line in lines], "1 customers without one, 0 with more "),
])
def test_mismatched_assignments_fail_with_counts(base, change, message) -> None:
    root, storage = base
    table = features(IDS)
    request = setup_inputs(root, storage, table, change(assignment_lines(table)))

    with pytest.raises(PipelineError, match=message.replace("(", r"\(").replace(")", r"\)")):
        export_segments(request, storage)
    assert storage.list(request.output_uri) == []


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "line 1.*not JSON"),
    ('{"customer_id": 7, "cluster": 0, "cluster_name": "C", "rfm_segment": "Loyal"}', "JSON string"),
    ('{"customer_id": "7", "cluster": "0", "cluster_name": "C", "rfm_segment": "Loyal"}', "cluster an integer"),
    ('{"customer_id": "7", "cluster_name": "C", "rfm_segment": "Loyal"}', "expected an object"),
])
def test_malformed_assignments_are_reported(base, line, message) -> None:
    root, storage = base
    request = setup_inputs(root, storage, features(["7"]), [line])
    with pytest.raises(PipelineError, match=message):
        export_segments(request, storage)


@pytest.mark.parametrize("glue", ["", " ", ","])
def test_concatenated_and_array_lines_are_split(base, glue) -> None:
    root, storage = base
    table = features(IDS)
    lines = assignment_lines(table)
    glued = [glue.join(lines[:3]), "[" + ",".join(lines[3:6]) + "]", *lines[6:]]
    request = setup_inputs(root, storage, table, glued)

    assert export_segments(request, storage)["customers"] == len(IDS)


def test_missing_inputs_are_reported(base) -> None:
    root, storage = base
    request = ExportRequest(join(root, "transform"), join(root, "features"), join(root, "segments"))
    with pytest.raises(PipelineError, match=r"no \*\.out assignment files"):
        export_segments(request, storage)
    write(storage, join(root, "transform", "a.out"), b"")
    with pytest.raises(PipelineError, match="rfm.parquet not found"):
        export_segments(request, storage)


def test_numeric_customer_ids_in_features_are_refused(base) -> None:
    root, storage = base
    table = features(["1", "2"]).set_column(0, "customer_id", pa.array([1, 2], pa.int64()))
    request = setup_inputs(root, storage, table, assignment_lines(features(["1", "2"])))
    with pytest.raises(PipelineError, match="customer_id is int64, expected string"):
        export_segments(request, storage)


def test_slugs_are_distinct_and_key_safe() -> None:
    slugs = [slug(name) for name in SEGMENT_NAMES]
    assert len(set(slugs)) == len(SEGMENT_NAMES)
    assert all(s and set(s) <= set("abcdefghijklmnopqrstuvwxyz0123456789-") for s in slugs)
    assert slug("Can't Lose Them") == "cant-lose-them"


def test_event_without_uris_is_reported() -> None:
    with pytest.raises(PipelineError, match="lacks features_uri, output_uri"):
        ExportRequest.from_event({"assignments_uri": "s3://b/t"})


@pytest.mark.parametrize("with_context", [True, False])
def test_handler_logs_no_contact_data(base, with_context) -> None:
    root, storage = base
    table = features(IDS)
    request = setup_inputs(root, storage, table)
    event = {key: getattr(request, key) for key in ExportRequest.__dataclass_fields__}
    stream = io.StringIO()
    previous = app.logger.registered_handler.setStream(stream)
    app._s3_client.cache_clear()
    try:
        summary = app.handler(event, FakeContext() if with_context else None)
    finally:
        app.logger.registered_handler.setStream(previous)
        app._s3_client.cache_clear()

    assert summary["customers"] == len(IDS)
    logs = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert logs and all(entry["correlation_id"] == "exec-1" for entry in logs)
    text = stream.getvalue()
    for column in ("email", "phone"):
        assert not any(value and value in text for value in table[column].to_pylist())
    assert set(CONTACT_COLUMNS) >= {"email", "phone"}
