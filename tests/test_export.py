"""The export Lambda on moto S3, local folders and file:// URIs."""

from __future__ import annotations

import io
import json
import os
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from lambdas.export import app
from lambdas.export.app import Clients, ExportFailed, ExportRequest, export_segments, slug
from lambdas.export.config import (
    CustomerProfilesSettings,
    ExportSettings,
    PinpointSettings,
    parse_destinations,
)
from lambdas.export.destinations import customer_profiles, s3_files
from lambdas.export.retry import NO_SDK_RETRIES, RetryPolicy
from lambdas.export.storage import Storage, join
from lambdas.fakes import running_fakes
from steps.columns import CONTACT_COLUMNS, FEATURE_COLUMNS, HISTORY_COLUMNS, SEGMENT_COLUMNS
from steps.errors import PipelineError
from steps.playbook import load_playbook
from steps.segments import SEGMENT_NAMES, segment_of
from tests.export_support import segments_frame

BUCKET = "rfm-bucket"
# Ids a careless cast or CSV reader would change or merge.
IDS = ["007", "7", " A1", "A1", "a1", "1e3", "1000", "NaN", "null", "0x1F", "1,5", "é-ü", "x" * 40, "42 "]


@dataclass
class FakeContext:
    function_name: str = "rfm-export"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:rfm-export"
    aws_request_id: str = "00000000-0000-0000-0000-000000000002"
    remaining_ms: int = 600_000  # when the invocation started; counts down in real time, as Lambda's

    def __post_init__(self) -> None:
        self._started = time.monotonic()

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self.remaining_ms - (time.monotonic() - self._started) * 1000))


def _moto_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and a region for moto; no endpoint override."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


@pytest.fixture(params=["s3", "local", "file-uri"])
def base(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """(root URI, storage) for each kind of location the export must handle."""
    if request.param != "s3":
        yield (str(tmp_path) if request.param == "local" else tmp_path.as_uri()), Storage()
        return
    _moto_env(monkeypatch)
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
    return [
        json.dumps(
            {
                "customer_id": row["customer_id"],
                "cluster": i % 3,
                "cluster_name": f"Cluster {i % 3}",
                "rfm_segment": row["rfm_segment"],
            }
        )
        for i, row in enumerate(rows)
    ]


def write(storage: Storage, uri: str, data: bytes) -> None:
    storage.write_bytes(uri, data)


def parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def setup_inputs(
    root: str, storage: Storage, table: pa.Table, lines: list[str] | None = None
) -> ExportRequest:
    """rfm.parquet plus assignments split over two .out files (one nested) and an ignored file."""
    lines = assignment_lines(table) if lines is None else lines
    write(storage, join(root, "features", "rfm.parquet"), parquet_bytes(table))
    half = len(lines) // 2
    write(storage, join(root, "transform", "customers.csv.out"), ("\n".join(lines[:half]) + "\n").encode())
    write(storage, join(root, "transform", "part", "more.csv.out"), ("\n\n".join(lines[half:])).encode())
    write(storage, join(root, "transform", "_manifest.json"), b"{}")
    return ExportRequest(
        assignments_uri=join(root, "transform"),
        features_uri=join(root, "features"),
        output_uri=join(root, "segments"),
        execution_id="exec-1",
        model_package_arn="arn:aws:sagemaker:us-east-1:123456789012:model-package/rfm/1",
    )


def read_parquet(storage: Storage, uri: str) -> pd.DataFrame:
    return pq.read_table(io.BytesIO(storage.read_bytes(uri))).to_pandas()


def read_csv(storage: Storage, uri: str) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(storage.read_bytes(uri)), dtype=str, keep_default_na=False)


def snapshot(storage: Storage, root: str) -> dict[str, bytes]:
    return {uri[len(root) :]: storage.read_bytes(uri) for uri in storage.list(root)}


@pytest.mark.parametrize("contacts", [True, False])
def test_segments_have_one_row_per_customer_with_exact_ids(base, contacts) -> None:
    root, storage = base
    table = features(IDS, contacts)
    request = setup_inputs(root, storage, table)

    summary = export_segments(request, storage)

    segments = read_parquet(storage, join(request.output_uri, "segments.parquet"))
    contact_columns = ["email", "phone"] if contacts else []
    assert list(segments.columns) == [*SEGMENT_COLUMNS, "recommended_action", *contact_columns, *HISTORY_COLUMNS]
    assert segments["previous_segment"].isna().all()  # the first publish: everyone is new
    assert segments["customer_id"].tolist() == sorted(IDS)
    expected = {
        json.loads(line)["customer_id"]: json.loads(line)["cluster"] for line in assignment_lines(table)
    }
    assert dict(zip(segments["customer_id"], segments["cluster"], strict=True)) == expected
    assert summary["customers"] == len(IDS)
    assert summary["segments"] == len(set(table["rfm_segment"].to_pylist()))
    assert summary["destinations"] == "s3"
    assert sorted(summary["files"]) == storage.list(request.output_uri)
    s3_counts = summary["by_destination"]["s3"]
    assert list(summary["by_destination"]) == ["s3"]
    assert (s3_counts["customers"], s3_counts["files"]) == (len(IDS), len(summary["files"]) - 2)
    assert summary["changes"]["entered"] == len(IDS)
    json.dumps(summary)


@pytest.mark.parametrize(("column", "prefix"), [("rfm_segment", "rfm_segment="), ("cluster", "cluster=")])
def test_partitions_and_named_files_hold_every_customer_exactly_once(base, column, prefix) -> None:
    root, storage = base
    request = setup_inputs(root, storage, features(IDS))
    export_segments(request, storage)

    index = read_csv(storage, join(request.output_uri, "export", "index.csv"))
    listed = index[index["group"] == column]
    assert len(listed) == len({uri.split("/")[-2] for uri in storage.list(join(request.output_uri, "export"))
                               if uri.split("/")[-2].startswith(prefix)}) > 0
    from_parquet: list[str] = []
    from_csv: list[str] = []
    for row in listed.to_dict("records"):
        folder = row["parquet"].split("/")[0]
        rows = read_parquet(storage, join(request.output_uri, "export", *row["parquet"].split("/")))
        csv_rows = read_csv(storage, join(request.output_uri, "export", *row["csv"].split("/")))
        values = {str(slug(v)) if column == "rfm_segment" else str(v) for v in rows[column]}
        assert values == {folder.removeprefix(prefix)}
        assert row["csv"] == (f"segments/{slug(row['name'])}.csv" if column == "rfm_segment"
                              else f"clusters/{slug(row['name'])}.csv")
        assert set(rows["cluster_name" if column == "cluster" else column]) == {row["name"]}
        assert int(row["customers"]) == len(rows) == len(csv_rows)
        assert float(row["revenue"]) == pytest.approx(rows["monetary"].sum())
        assert csv_rows["customer_id"].tolist() == rows["customer_id"].tolist()
        from_parquet += rows["customer_id"].tolist()
        from_csv += csv_rows["customer_id"].tolist()
    assert sorted(from_parquet) == sorted(from_csv) == sorted(IDS)


def test_csv_quotes_text_so_ids_stay_text(base) -> None:
    root, storage = base
    request = setup_inputs(
        root,
        storage,
        features(["007", "1e3"], contacts=False),
        [
            '{"customer_id": "007", "cluster": 0, "cluster_name": "C", "rfm_segment": "Loyal"}',
            '{"customer_id": "1e3", "cluster": 0, "cluster_name": "C", "rfm_segment": "Loyal"}',
        ],
    )
    export_segments(request, storage)

    text = storage.read_bytes(join(request.output_uri, "export", "clusters", "c.csv")).decode()
    assert text.splitlines()[1].startswith('"007",0,"C","Loyal",')
    assert text.splitlines()[2].startswith('"1e3",0,')


@pytest.mark.parametrize("cell", ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd"])
def test_csv_cells_that_start_like_a_formula_are_neutralised(base, cell: str) -> None:
    root, storage = base
    ids = [cell, "plain-id"]
    table = features(ids, contacts=True).set_column(
        FEATURE_COLUMNS.index("monetary"), "monetary", pa.array([-12.5, 3.0]))
    lines = [json.dumps({"customer_id": i, "cluster": 0, "cluster_name": cell, "rfm_segment": "Loyal"}) for i in ids]
    request = setup_inputs(root, storage, table, lines)
    export_segments(request, storage)

    index = read_csv(storage, join(request.output_uri, "export", "index.csv"))
    for relative in index["csv"]:
        rows = read_csv(storage, join(request.output_uri, "export", *relative.split("/")))
        for value in rows.astype(str).to_numpy().ravel():
            if re.fullmatch(r"[+-]?[0-9]+(\.[0-9]+)?", value):  # numbers stay numbers: -12.5, +15550000001
                continue
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), (relative, value)
        if "phone" in rows:
            phones = rows["phone"][rows["phone"] != ""]
            assert phones.str.startswith("+").all(), relative  # no ' in front of an E.164 phone number
    cluster_file = read_csv(storage, join(request.output_uri, "export", "clusters", f"{slug(cell)}.csv"))
    assert cluster_file["customer_id"].tolist() == sorted(["'" + cell, "plain-id"])
    assert cluster_file["cluster_name"].tolist() == ["'" + cell] * 2
    assert index[index["group"] == "cluster"]["name"].tolist() == ["'" + cell]
    parquet = read_parquet(storage, join(request.output_uri, "export", "cluster=0", "part.parquet"))
    assert sorted(parquet["customer_id"]) == sorted(ids)  # machines get the values as they are


def test_rerun_gives_identical_files_and_removes_stale_ones(base) -> None:
    root, storage = base
    request = setup_inputs(root, storage, features(IDS))
    export_segments(request, storage)
    first = snapshot(storage, request.output_uri)
    write(storage, join(request.output_uri, "export", "rfm_segment=old", "part.csv"), b"stale")

    export_segments(request, storage)

    assert snapshot(storage, request.output_uri) == first


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda lines: lines[1:],
            "14 customers in rfm.parquet (0 repeated ids) but 13 assignments: 1 customers without",
        ),
        (lambda lines: [*lines, lines[0]], "0 customers without one, 1 with more than one"),
        (lambda lines: [*lines, lines[0].replace('"007"', '"0007"')], "1 for customers not in rfm.parquet"),
        (
            lambda lines: [line.replace('" A1"', '"A1 "') for line in lines],
            "1 customers without one, 0 with more ",
        ),
    ],
)
def test_mismatched_assignments_fail_with_counts(base, change, message) -> None:
    root, storage = base
    table = features(IDS)
    request = setup_inputs(root, storage, table, change(assignment_lines(table)))

    with pytest.raises(PipelineError, match=message.replace("(", r"\(").replace(")", r"\)")):
        export_segments(request, storage)
    assert storage.list(request.output_uri) == []


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 1.*not JSON"),
        ('{"customer_id": 7, "cluster": 0, "cluster_name": "C", "rfm_segment": "Loyal"}', "JSON string"),
        (
            '{"customer_id": "7", "cluster": "0", "cluster_name": "C", "rfm_segment": "Loyal"}',
            "cluster an integer",
        ),
        ('{"customer_id": "7", "cluster_name": "C", "rfm_segment": "Loyal"}', "expected an object"),
    ],
)
def test_malformed_assignments_are_reported(base, line, message) -> None:
    root, storage = base
    request = setup_inputs(root, storage, features(["7"]), [line])
    with pytest.raises(PipelineError, match=message):
        export_segments(request, storage)


@pytest.mark.parametrize("valid_json", [True, False])
def test_assignments_that_are_not_utf8_name_the_file(base, valid_json: bool) -> None:
    root, storage = base
    request = setup_inputs(root, storage, features(["7"]), [])
    line = b'{"customer_id": "7\xff", "cluster": 0, "cluster_name": "C", "rfm_segment": "Loyal"}'
    write(storage, join(root, "transform", "customers.csv.out"), line if valid_json else line + b" {")
    with pytest.raises(PipelineError, match=r"customers.csv.out: not UTF-8 text \(byte \d+\)"):
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
    app._client.cache_clear()
    try:
        summary = app.handler(event, FakeContext() if with_context else None)
    finally:
        app.logger.registered_handler.setStream(previous)
        app._client.cache_clear()

    assert summary["customers"] == len(IDS)
    logs = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert logs and all(entry["correlation_id"] == "exec-1" for entry in logs)
    text = stream.getvalue()
    contact = [column for column in CONTACT_COLUMNS if column in table.column_names]
    assert {"email", "phone"} <= set(contact)  # the input has contact values to leak
    for column in contact:
        assert not any(value and value in text for value in table[column].to_pylist()), column


# -- destinations and configuration ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ("s3",)),
        (None, ("s3",)),
        ("s3", ("s3",)),
        ("pinpoint", ("pinpoint",)),
        ("customer_profiles, PINPOINT,s3", ("s3", "pinpoint", "customer-profiles")),
        (["customer-profiles", "s3", "s3"], ("s3", "customer-profiles")),
    ],
)
def test_destinations_are_parsed_in_a_fixed_order(value, expected) -> None:
    assert parse_destinations(value) == expected


def test_unknown_destinations_are_refused() -> None:
    with pytest.raises(PipelineError, match="unknown export destination.*sftp.*Use a comma-separated subset"):
        parse_destinations("s3,sftp")


def test_settings_from_env() -> None:
    settings = ExportSettings.from_env(
        {
            "EXPORT_DESTINATIONS": "s3,pinpoint,customer-profiles",
            "PINPOINT_APPLICATION_ID": "app",
            "PINPOINT_IMPORT_ROLE_ARN": "arn:aws:iam::1:role/r",
            "PINPOINT_IMPORT_PREFIX": "s3://b/p",
            "PINPOINT_MAX_FILE_BYTES": "1000",
            "PINPOINT_POLL_SECONDS": "0.5",
            "CUSTOMER_PROFILES_DOMAIN": "d",
            "CUSTOMER_PROFILES_CONCURRENCY": "2",
            "CUSTOMER_PROFILES_MAP_CONTACTS": "true",
            "EXPORT_MAX_ATTEMPTS": "3",
            "EXPORT_RECORD_RETRY_ROUNDS": "0",
            "EXPORT_LOCAL_S3_ROOT": "/tmp/s3",
        }
    )
    assert settings.for_event({}) == settings
    assert (settings.pinpoint.max_file_bytes, settings.pinpoint.poll_seconds) == (1000, 0.5)
    assert (settings.customer_profiles.concurrency, settings.customer_profiles.map_contacts) == (2, True)
    assert (settings.max_attempts, settings.record_retry_rounds, settings.local_s3_root) == (3, 0, "/tmp/s3")
    assert ExportSettings.from_env({}) == ExportSettings()
    assert settings.for_event({"destinations": "s3"}).destinations == ("s3",)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"EXPORT_DESTINATIONS": "pinpoint"}, "needs PINPOINT_APPLICATION_ID and PINPOINT_IMPORT_ROLE_ARN"),
        (
            {
                "EXPORT_DESTINATIONS": "pinpoint",
                "PINPOINT_APPLICATION_ID": "a",
                "PINPOINT_IMPORT_ROLE_ARN": "r",
                "PINPOINT_IMPORT_PREFIX": "/local/folder",
            },
            "must be an s3:// URI",
        ),
        (
            {
                "EXPORT_DESTINATIONS": "pinpoint",
                "PINPOINT_APPLICATION_ID": "a",
                "PINPOINT_IMPORT_ROLE_ARN": "r",
                "PINPOINT_MAX_FILE_BYTES": "2000000000",
            },
            "above Pinpoint's 1 GB limit",
        ),
        ({"EXPORT_DESTINATIONS": "customer-profiles"}, "needs CUSTOMER_PROFILES_DOMAIN"),
        ({"PINPOINT_POLL_SECONDS": "soon"}, "is not a number"),
        ({"EXPORT_MAX_ATTEMPTS": "0"}, "EXPORT_MAX_ATTEMPTS must be at least 1, got 0"),
        ({"EXPORT_RECORD_RETRY_ROUNDS": "-1"}, "is not an integer|must be at least 0"),
    ],
)
def test_bad_configuration_is_reported_before_anything_is_written(base, environ, message) -> None:
    root, storage = base
    request = setup_inputs(root, storage, features(IDS))
    with pytest.raises(PipelineError, match=message):
        export_segments(request, storage, ExportSettings.from_env(environ))
    assert storage.list(request.output_uri) == []


def destinations_env(tmp_path: Path, fakes: Any, pinpoint_app: str) -> ExportSettings:
    return ExportSettings(
        destinations=("s3", "pinpoint", "customer-profiles"),
        pinpoint=PinpointSettings(
            application_id=pinpoint_app,
            role_arn="arn:aws:iam::123456789012:role/import",
            import_prefix="s3://local/imports",
            poll_seconds=0.01,
        ),
        customer_profiles=CustomerProfilesSettings(domain="d", concurrency=2),
    )


@pytest.fixture
def fakes(tmp_path: Path, fake_aws: None) -> Any:
    with running_fakes(tmp_path / "s3") as running:
        running.customer_profiles.create_domain("d")
        yield running


def api_clients(fakes: Any) -> Clients:
    options = {"region_name": "us-east-1", "config": NO_SDK_RETRIES}
    return Clients(
        pinpoint=boto3.client("pinpoint", endpoint_url=fakes.pinpoint.url, **options),
        customer_profiles=boto3.client(
            "customer-profiles", endpoint_url=fakes.customer_profiles.url, **options
        ),
    )


def test_all_destinations_in_one_run(tmp_path: Path, fakes: Any) -> None:
    storage = Storage(s3_root=tmp_path / "s3")
    request = setup_inputs(str(tmp_path / "run"), storage, features(IDS))
    settings = destinations_env(tmp_path, fakes, fakes.pinpoint.create_app("a"))
    summary = export_segments(
        request, storage, settings, api_clients(fakes), RetryPolicy(sleep=lambda s: None)
    )

    assert summary["destinations"] == "s3,pinpoint,customer-profiles"
    assert list(summary["by_destination"]) == ["s3", "pinpoint", "customer-profiles"]
    pinpoint_counts = summary["by_destination"]["pinpoint"]
    assert pinpoint_counts["customers"] == len(IDS)  # every test customer has an email
    assert pinpoint_counts["endpoints"] == len(IDS) + sum(
        1 for i in range(len(IDS)) if i % 3
    )  # and some a phone
    assert summary["by_destination"]["customer-profiles"]["profiles_upserted"] == len(IDS)
    assert fakes.pinpoint.endpoint_count() == pinpoint_counts["endpoints"]
    assert list((tmp_path / "s3" / "local" / "imports" / "exec-1" / "attempt-1").glob("part-*.csv"))
    json.dumps(summary)


def test_each_profile_carries_its_segments_recommended_action(tmp_path: Path, fakes: Any) -> None:
    storage = Storage(s3_root=tmp_path / "s3")
    table = features(IDS)
    request = setup_inputs(str(tmp_path / "run"), storage, table)
    settings = replace(destinations_env(tmp_path, fakes, "unused"), destinations=("customer-profiles",))
    export_segments(request, storage, settings, api_clients(fakes), RetryPolicy(sleep=lambda s: None))

    book = load_playbook()
    for row in table.select(["customer_id", "rfm_segment"]).to_pylist():
        attributes = fakes.customer_profiles.find_profile("d", row["customer_id"])["Attributes"]
        assert attributes["rfm_recommended_action"] == book.for_segment(row["rfm_segment"])
        assert attributes["rfm_segment"] == row["rfm_segment"]


def test_a_failing_destination_does_not_stop_the_others(tmp_path: Path, fakes: Any) -> None:
    storage = Storage(s3_root=tmp_path / "s3")
    request = setup_inputs(str(tmp_path / "run"), storage, features(IDS))
    settings = destinations_env(tmp_path, fakes, "no-such-project")
    with pytest.raises(
        ExportFailed,
        match=r"1 of 3 destination\(s\) failed: pinpoint: PINPOINT_APPLICATION_ID: "
        r"Pinpoint project 'no-such-project' does not exist",
    ) as caught:
        export_segments(request, storage, settings, api_clients(fakes), RetryPolicy(sleep=lambda s: None))

    by_destination = caught.value.summary["by_destination"]
    assert "does not exist" in by_destination["pinpoint"]["error"]
    assert by_destination["customer-profiles"]["profiles_upserted"] == len(IDS)
    assert by_destination["s3"]["files"] > 0
    assert storage.exists(join(request.output_uri, "segments.parquet"))


def test_records_that_keep_failing_fail_the_step_with_their_counts(tmp_path: Path, fakes: Any) -> None:
    storage = Storage(s3_root=tmp_path / "s3")
    request = setup_inputs(str(tmp_path / "run"), storage, features(IDS))
    settings = destinations_env(tmp_path, fakes, fakes.pinpoint.create_app("a"))
    fakes.customer_profiles.inject(fail_records=IDS[:2], times=100)
    with pytest.raises(ExportFailed, match=r"customer-profiles: 2 of 14 customer profiles failed") as caught:
        export_segments(request, storage, settings, api_clients(fakes), RetryPolicy(sleep=lambda s: None))

    counts = caught.value.summary["by_destination"]["customer-profiles"]
    assert (counts["records_failed"], counts["profiles_upserted"]) == (2, 12)
    assert counts["failures_by_code"] == {"BadRequestException": 2}
    assert caught.value.summary["by_destination"]["pinpoint"]["endpoints_failed"] == 0


def test_service_messages_are_not_repeated_in_errors() -> None:
    error = ClientError(
        {
            "Error": {"Code": "BadRequestException", "Message": "bad email person1@example.com"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        "PutProfileObject",
    )
    assert app._safe_reason(error) == "PutProfileObject failed: BadRequestException (HTTP 400)"


def test_handler_defaults_to_s3_files_only(base, monkeypatch) -> None:
    root, storage = base
    for name in [n for n in os.environ if n.startswith(("EXPORT_", "PINPOINT_", "CUSTOMER_PROFILES_"))]:
        monkeypatch.delenv(name)
    request = setup_inputs(root, storage, features(IDS))
    created: list[str] = []
    real_client = boto3.client
    monkeypatch.setattr(
        app.boto3, "client", lambda service, **kw: created.append(service) or real_client(service, **kw)
    )
    app._client.cache_clear()
    try:
        summary = app.handler(
            {key: getattr(request, key) for key in ExportRequest.__dataclass_fields__}, None
        )
    finally:
        app._client.cache_clear()
    assert summary["destinations"] == "s3" and list(summary["by_destination"]) == ["s3"]
    assert set(created) <= {"s3"}  # no Pinpoint / Customer Profiles client without those destinations


def test_event_destinations_override_the_environment(base, monkeypatch) -> None:
    root, storage = base
    monkeypatch.setenv("EXPORT_DESTINATIONS", "pinpoint")  # not configured: would fail
    request = setup_inputs(root, storage, features(IDS))
    event = {
        **{key: getattr(request, key) for key in ExportRequest.__dataclass_fields__},
        "destinations": ["s3"],
    }
    app._client.cache_clear()
    try:
        assert app.handler(event, None)["destinations"] == "s3"
    finally:
        app._client.cache_clear()


def test_handler_with_api_destinations_logs_no_contact_data(tmp_path: Path, fakes: Any, monkeypatch) -> None:
    storage = Storage()
    table = features(IDS)
    request = setup_inputs(str(tmp_path / "run"), storage, table)
    app_id = fakes.pinpoint.create_app("a")
    for name, value in {
        "EXPORT_DESTINATIONS": "s3,pinpoint,customer-profiles",
        "PINPOINT_APPLICATION_ID": app_id,
        "PINPOINT_IMPORT_ROLE_ARN": "arn:aws:iam::123456789012:role/import",
        "PINPOINT_IMPORT_PREFIX": "s3://local/imports",
        "PINPOINT_POLL_SECONDS": "0.01",
        "CUSTOMER_PROFILES_DOMAIN": "d",
        "CUSTOMER_PROFILES_MAP_CONTACTS": "true",
        "EXPORT_LOCAL_S3_ROOT": str(tmp_path / "s3"),
    }.items():
        monkeypatch.setenv(name, value)
    fakes.customer_profiles.inject(throttle=2)  # retries log too
    stream = io.StringIO()
    previous = app.logger.registered_handler.setStream(stream)
    app._client.cache_clear()
    try:
        summary = app.handler(
            {key: getattr(request, key) for key in ExportRequest.__dataclass_fields__}, FakeContext()
        )
    finally:
        app.logger.registered_handler.setStream(previous)
        app._client.cache_clear()

    assert summary["by_destination"]["customer-profiles"]["customers"] == len(IDS)
    logs = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert any(entry["message"] == "Transient AWS error, retrying" for entry in logs)
    assert {entry["correlation_id"] for entry in logs} == {"exec-1"}
    for column in ("email", "phone"):
        assert not any(value and value in stream.getvalue() for value in table[column].to_pylist())


# -- the Lambda's deadline -------------------------------------------------------------------------


def test_the_deadline_is_the_remaining_time_less_a_margin() -> None:
    assert app.deadline_of(None) is None  # local runs: no deadline, only PINPOINT_IMPORT_TIMEOUT_SECONDS
    context = FakeContext(remaining_ms=100_000)
    assert app.deadline_of(context, clock=lambda: 1000.0) == pytest.approx(1000.0 + 100.0 - 30.0, abs=0.05)


def test_the_handler_stops_waiting_for_pinpoint_before_the_function_times_out(
    tmp_path: Path, fakes: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = Storage()
    request = setup_inputs(str(tmp_path / "run"), storage, features(IDS))
    fakes.pinpoint.polls_until_done = 10**9  # the import job never finishes
    for name, value in {
        "EXPORT_DESTINATIONS": "s3,pinpoint,customer-profiles",
        "PINPOINT_APPLICATION_ID": fakes.pinpoint.create_app("a"),
        "PINPOINT_IMPORT_ROLE_ARN": "arn:aws:iam::123456789012:role/import",
        "PINPOINT_IMPORT_PREFIX": "s3://local/imports",
        "PINPOINT_POLL_SECONDS": "0.05",
        "PINPOINT_IMPORT_TIMEOUT_SECONDS": "20",  # longer than the function has left
        "CUSTOMER_PROFILES_DOMAIN": "d",
        "EXPORT_LOCAL_S3_ROOT": str(tmp_path / "s3"),
    }.items():
        monkeypatch.setenv(name, value)
    event = {key: getattr(request, key) for key in ExportRequest.__dataclass_fields__}
    started = time.monotonic()
    app._client.cache_clear()
    try:
        with pytest.raises(ExportFailed) as caught:
            app.handler(event, FakeContext(remaining_ms=32_000))  # 2 s before the 30 s margin
    finally:
        app._client.cache_clear()

    assert time.monotonic() - started < 15  # not the 20 s PINPOINT_IMPORT_TIMEOUT_SECONDS
    by_destination = caught.value.summary["by_destination"]
    (job_id,) = by_destination["pinpoint"]["import_jobs_running"]
    message = str(caught.value)
    assert message.startswith("export Lambda: 1 of 3 destination(s) failed: pinpoint: stopped waiting for import job")
    assert job_id in message and "Pinpoint console" in message and "it is idempotent" in message
    assert by_destination["customer-profiles"]["profiles_upserted"] == len(IDS)  # the others ran, and first
    assert by_destination["s3"]["files"] > 0
    assert list(by_destination) == ["s3", "pinpoint", "customer-profiles"]  # reported in the usual order


def test_pinpoint_runs_last_so_its_wait_cannot_starve_the_others(tmp_path: Path, fakes: Any) -> None:
    storage = Storage(s3_root=tmp_path / "s3")
    request = setup_inputs(str(tmp_path / "run"), storage, features(IDS))
    settings = destinations_env(tmp_path, fakes, fakes.pinpoint.create_app("a"))
    fakes.pinpoint.polls_until_done = 10**9
    seen: list[tuple[int, int]] = []  # (Pinpoint calls, profiles put) whenever the export reads the clock

    def clock() -> float:
        seen.append((sum(fakes.pinpoint.calls.values()), fakes.customer_profiles.calls.get("PutProfileObject", 0)))
        return 1e9 if fakes.pinpoint.calls.get("CreateImportJob") else 0.0  # time is up once the import started

    with pytest.raises(ExportFailed, match="pinpoint: stopped waiting for import job"):
        export_segments(request, storage, settings, api_clients(fakes), RetryPolicy(sleep=lambda s: None),
                        clock=clock, deadline=1e6)
    assert fakes.customer_profiles.calls["PutProfileObject"] == len(IDS)
    assert all(profiles == len(IDS) for pinpoint_calls, profiles in seen if pinpoint_calls)


def test_customer_profiles_stop_at_the_deadline_and_pinpoint_then_fails_fast(tmp_path: Path, fakes: Any) -> None:
    storage = Storage(s3_root=tmp_path / "s3")
    request = setup_inputs(str(tmp_path / "run"), storage, features(IDS))
    settings = destinations_env(tmp_path, fakes, fakes.pinpoint.create_app("a"))

    def clock() -> float:  # time is up once the first profiles were put
        return 1e9 if fakes.customer_profiles.calls.get("PutProfileObject") else 0.0

    with pytest.raises(ExportFailed) as caught:
        export_segments(request, storage, settings, api_clients(fakes), RetryPolicy(sleep=lambda s: None),
                        clock=clock, deadline=1e6)

    message = str(caught.value)
    written = fakes.customer_profiles.calls["PutProfileObject"]  # the puts already in flight
    assert 1 <= written < len(IDS)
    assert "2 of 3 destination(s) failed: pinpoint: no time left to start the import" in message
    assert f"customer-profiles: stopped at the deadline so that the Lambda function can finish before its " \
           f"timeout: {written} of {len(IDS)} customer profiles were written" in message
    by_destination = caught.value.summary["by_destination"]
    profiles = by_destination["customer-profiles"]
    assert (profiles["profiles_upserted"], profiles["profiles_not_written"]) == (written, len(IDS) - written)
    assert by_destination["pinpoint"]["endpoints_unconfirmed"] == by_destination["pinpoint"]["endpoints"] > 0
    assert "CreateImportJob" not in fakes.pinpoint.calls
    assert by_destination["s3"]["files"] > 0


# -- one read of the features, one resolution of the settings ------------------------------------


@pytest.fixture
def moto_storage(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A Storage on moto S3 that records every S3 call: ``(operation, Key or Prefix)``."""
    _moto_env(monkeypatch)
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        calls: list[tuple[str, str]] = []
        s3.meta.events.register(
            "before-parameter-build.s3",
            lambda model, params, **_: calls.append((model.name, params.get("Key") or params.get("Prefix") or "")),
        )
        yield Storage(s3), calls


def test_features_are_read_with_one_s3_request(moto_storage: Any) -> None:
    storage, calls = moto_storage
    request = setup_inputs(f"s3://{BUCKET}/rfm/executions/abc", storage, features(IDS))
    calls.clear()
    export_segments(request, storage)

    features_calls = [call for call in calls if "rfm.parquet" in call[1]]
    assert features_calls == [("GetObject", "rfm/executions/abc/features/rfm.parquet")]


def test_a_missing_features_file_is_reported_after_one_s3_request(moto_storage: Any) -> None:
    storage, calls = moto_storage
    root = f"s3://{BUCKET}/rfm/executions/abc"
    write(storage, join(root, "transform", "a.out"), b"")
    calls.clear()
    with pytest.raises(PipelineError, match=r"features/rfm.parquet: rfm.parquet not found. Run ComputeRFM first"):
        export_segments(ExportRequest(join(root, "transform"), join(root, "features"), join(root, "out")), storage)
    assert [call[0] for call in calls if "rfm.parquet" in call[1]] == ["GetObject"]


def corrupt_column(data: bytes, column: str) -> bytes:
    """The Parquet file with one column's data overwritten with garbage (its metadata left intact)."""
    chunk = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0)
    index = [chunk.column(i).path_in_schema for i in range(chunk.num_columns)].index(column)
    start = chunk.column(index).dictionary_page_offset or chunk.column(index).data_page_offset
    size = chunk.column(index).total_compressed_size
    return data[:start] + b"\xff" * size + data[start + size :]


def test_only_the_feature_columns_the_export_needs_are_decoded(base) -> None:
    root, storage = base
    table = features(IDS).append_column("notes", pa.array(["free text " * 20] * len(IDS)))
    request = setup_inputs(root, storage, table)
    path = join(root, "features", "rfm.parquet")
    write(storage, path, corrupt_column(storage.read_bytes(path), "notes"))
    with pytest.raises(OSError):  # the file is really broken there: reading every column fails
        pq.read_table(io.BytesIO(storage.read_bytes(path)))

    summary = export_segments(request, storage)  # never touches "notes" (nor first_purchase, ...)

    assert summary["customers"] == len(IDS)
    segments = read_parquet(storage, join(request.output_uri, "segments.parquet"))
    assert "notes" not in segments and "first_purchase" not in segments


def test_the_handler_resolves_the_settings_once(base, monkeypatch: pytest.MonkeyPatch) -> None:
    root, storage = base
    for name in [n for n in os.environ if n.startswith(("EXPORT_", "PINPOINT_", "CUSTOMER_PROFILES_"))]:
        monkeypatch.delenv(name)
    request = setup_inputs(root, storage, features(IDS))
    event = {**{key: getattr(request, key) for key in ExportRequest.__dataclass_fields__}, "destinations": "s3"}
    resolved: list[Any] = []
    for_event = ExportSettings.for_event
    monkeypatch.setattr(ExportSettings, "for_event", lambda self, e: resolved.append(e) or for_event(self, e))
    parsed: list[Any] = []
    from_env = ExportSettings.from_env.__func__
    monkeypatch.setattr(ExportSettings, "from_env", classmethod(lambda cls, e: parsed.append(e) or from_env(cls, e)))
    app._settings.cache_clear()
    app._client.cache_clear()
    try:
        for _ in range(2):
            assert app.handler(dict(event), None)["destinations"] == "s3"
    finally:
        app._settings.cache_clear()
        app._client.cache_clear()

    assert len(parsed) == 1  # the environment: once per container
    assert len(resolved) == 2  # the event's destinations: once per invocation


# -- segment slugs: one check for every destination ------------------------------------------------


def test_a_slug_collision_is_the_same_error_for_s3_folders_and_customer_profiles() -> None:
    frame = segments_frame(20)
    frame.loc[:9, "rfm_segment"] = "Can't Lose Them"
    frame.loc[10:, "rfm_segment"] = "Cant Lose Them"
    with pytest.raises(PipelineError) as from_s3:
        s3_files.partitions(pa.Table.from_pandas(frame, preserve_index=False))
    with pytest.raises(PipelineError) as from_profiles:
        customer_profiles.segment_definitions(frame)
    assert str(from_s3.value) == str(from_profiles.value)
    assert "segment names share a slug: \"Can't Lose Them\", 'Cant Lose Them' -> 'cant-lose-them'" in str(
        from_s3.value
    )


def test_customer_profiles_alone_refuses_segment_names_sharing_a_slug(tmp_path: Path, fakes: Any) -> None:
    storage = Storage(s3_root=tmp_path / "s3")
    table = features(IDS)
    records = [json.loads(line) for line in assignment_lines(table)]
    records[0]["rfm_segment"], records[1]["rfm_segment"] = "Can't Lose Them", "Cant Lose Them"
    request = setup_inputs(str(tmp_path / "run"), storage, table, [json.dumps(r) for r in records])
    settings = replace(destinations_env(tmp_path, fakes, ""), destinations=("customer-profiles",))
    failed = r"1 of 1 destination\(s\) failed: customer-profiles: .*segment names share a slug"
    with pytest.raises(ExportFailed, match=failed):
        export_segments(request, storage, settings, api_clients(fakes), RetryPolicy(sleep=lambda s: None))
    assert fakes.customer_profiles.calls.get("PutProfileObject", 0) == 0  # found before anything was written
