"""The local Pinpoint and Customer Profiles fakes, and the local-run wiring around them."""

from __future__ import annotations

import gzip
import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from lambdas.export import app
from lambdas.export.storage import Storage
from lambdas.fakes import (
    ClientS3,
    FolderS3,
    PinpointFake,
    local_destination_env,
    patched_environ,
    running_fakes,
)
from lambdas.fakes.s3_source import s3_source
from tests.export_support import (  # noqa: F401  (moto_s3 is a fixture)
    CREDENTIALS,
    ROLE_ARN,
    client,
    moto_s3,
    segments_frame,
    write_inputs,
)

HEADER = "Id,ChannelType,Address,User.UserId,Metrics.Score,User.UserAttributes.Tier"


@pytest.fixture
def folder_pinpoint(tmp_path: Path) -> Any:
    fake = PinpointFake(FolderS3(tmp_path / "s3"))
    fake.start()
    try:
        yield fake, client("pinpoint", fake.url), fake.create_app("t"), tmp_path / "s3"
    finally:
        fake.stop()


def run_import(fake: PinpointFake, pinpoint: Any, app_id: str, root: Path, files: dict[str, bytes]) -> dict:
    for name, data in files.items():
        path = root / "bucket" / "import" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    job = pinpoint.create_import_job(
        ApplicationId=app_id,
        ImportJobRequest={
            "Format": "CSV",
            "S3Url": "s3://bucket/import/",
            "RoleArn": ROLE_ARN,
            "RegisterEndpoints": True,
        },
    )
    fake.wait_for_jobs()
    for _ in range(5):
        result = pinpoint.get_import_job(ApplicationId=app_id, JobId=job["ImportJobResponse"]["Id"])
        if result["ImportJobResponse"]["JobStatus"] in ("COMPLETED", "FAILED"):
            return result["ImportJobResponse"]
    raise AssertionError("the job did not finish")


@pytest.mark.parametrize(
    ("rows", "failure"),
    [
        ("e1,EMAIL,a@example.com,u1,1,gold", None),
        ("e1,FAX,123,u1,1,gold", "unknown ChannelType"),
        ("e1,SMS,555-0100,u1,1,gold", "not an E.164 phone number"),
        ("e1,EMAIL,nobody,u1,1,gold", "not an email address"),
        ("e1,EMAIL,a@example.com,u1,high,gold", "Metrics.Score is not a number"),
        ("e1,EMAIL,a@example.com,u1,1," + "t" * 101, "longer than 100 characters"),
        ('e1,EMAIL,"a\tb@example.com",u1,1,gold', "contains a tab or line break"),
        ("e1,,,u1,1,gold", "ChannelType and Address are required for a new endpoint"),
        ("e1,EMAIL,a@example.com,u1", "expected 6 values, found 4"),
    ],
)
def test_import_rows_are_checked_like_the_service(folder_pinpoint, rows: str, failure: str | None) -> None:
    fake, pinpoint, app_id, root = folder_pinpoint
    job = run_import(fake, pinpoint, app_id, root, {"part.csv": f"{HEADER}\n{rows}\n".encode()})

    if failure is None:
        assert (job["JobStatus"], job["TotalFailures"], fake.endpoint_count(app_id)) == ("COMPLETED", 0, 1)
    else:
        assert job["JobStatus"] == "FAILED" and job["TotalFailures"] == 1 and fake.endpoint_count(app_id) == 0
        assert failure in job["Failures"][0]


def test_an_update_needs_only_the_id(folder_pinpoint) -> None:
    fake, pinpoint, app_id, root = folder_pinpoint
    run_import(
        fake, pinpoint, app_id, root, {"a.csv": f"{HEADER}\ne1,EMAIL,a@example.com,u1,1,gold\n".encode()}
    )
    job = run_import(fake, pinpoint, app_id, root, {"a.csv": f"{HEADER}\ne1,,,,2,silver\n".encode()})

    assert job["JobStatus"] == "COMPLETED"
    endpoint = pinpoint.get_endpoint(ApplicationId=app_id, EndpointId="e1")["EndpointResponse"]
    assert (endpoint["Address"], endpoint["User"]["UserId"]) == ("a@example.com", "u1")
    assert (endpoint["Metrics"]["Score"], endpoint["User"]["UserAttributes"]["Tier"]) == (2.0, ["silver"])


@pytest.mark.parametrize(
    ("files", "failure"),
    [
        ({"a.csv": b"Id,Nickname\ne1,x\n"}, "unsupported attribute 'Nickname'"),
        ({"a.csv": f"Id,User.UserAttributes.{'n' * 51}\ne1,x\n".encode()}, "over 50 chars"),
        ({"a.csv": b"Id,Id\ne1,e1\n"}, "appears twice"),
        ({"a.csv": gzip.compress(f"{HEADER}\n".encode())}, "is compressed"),
        ({"a.csv": "Id,ChannelType\n\u00e9".encode("latin-1")}, "is not UTF-8"),
        ({"a.json": b"{}"}, "No CSV files found"),
        ({"a.csv": b"x" * 2_000}, "above the 1000-byte limit"),
    ],
)
def test_bad_files_fail_the_job(folder_pinpoint, files: dict[str, bytes], failure: str) -> None:
    fake, pinpoint, app_id, root = folder_pinpoint
    fake.max_file_bytes = 1_000
    job = run_import(fake, pinpoint, app_id, root, files)
    assert job["JobStatus"] == "FAILED" and failure in job["Failures"][0]


def test_every_csv_under_the_folder_is_imported_and_other_formats_skipped(folder_pinpoint) -> None:
    fake, pinpoint, app_id, root = folder_pinpoint
    job = run_import(
        fake,
        pinpoint,
        app_id,
        root,
        {
            "one.csv": f"{HEADER}\ne1,EMAIL,a@example.com,u1,1,gold\n".encode(),
            "sub/two.CSV": f"{HEADER}\ne2,SMS,+15550100000,u2,1,gold\n".encode(),
            "notes.txt": b"ignored",
        },
    )
    assert (job["TotalPieces"], job["TotalProcessed"], fake.endpoint_count(app_id)) == (2, 2, 2)


def test_the_fake_speaks_the_api_botocore_expects(folder_pinpoint) -> None:
    fake, pinpoint, app_id, _ = folder_pinpoint
    with pytest.raises(pinpoint.exceptions.NotFoundException):
        pinpoint.get_app(ApplicationId="missing")
    with pytest.raises(pinpoint.exceptions.BadRequestException, match="RoleArn"):
        pinpoint.create_import_job(
            ApplicationId=app_id,
            ImportJobRequest={"Format": "CSV", "S3Url": "s3://b/k", "RoleArn": "not-an-arn"},
        )
    fake.inject(throttle=1)
    with pytest.raises(pinpoint.exceptions.TooManyRequestsException) as caught:
        pinpoint.get_app(ApplicationId=app_id)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    created = pinpoint.create_segment(
        ApplicationId=app_id,
        WriteSegmentRequest={"Name": "s", "Dimensions": {"UserAttributes": {"Tier": {"Values": ["gold"]}}}},
    )
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    pages = [
        pinpoint.create_segment(
            ApplicationId=app_id,
            WriteSegmentRequest={
                "Name": f"s{i}",
                "Dimensions": {"UserAttributes": {"Tier": {"Values": ["x"]}}},
            },
        )
        for i in range(4)
    ]
    first = pinpoint.get_segments(ApplicationId=app_id, PageSize="3")["SegmentsResponse"]
    rest = pinpoint.get_segments(ApplicationId=app_id, PageSize="3", Token=first["NextToken"])[
        "SegmentsResponse"
    ]
    assert len(first["Item"]) + len(rest["Item"]) == 1 + len(pages) and "NextToken" not in rest


def test_control_api_injects_faults_and_shows_state(folder_pinpoint) -> None:
    fake, pinpoint, app_id, _ = folder_pinpoint
    request = urllib.request.Request(
        f"{fake.url}/_fake/faults",
        method="POST",
        data=json.dumps({"server_errors": 1, "operations": ["GetApp"]}).encode(),
    )
    assert json.load(urllib.request.urlopen(request)) == {"ok": True}
    pinpoint.get_segments(ApplicationId=app_id)  # another operation: unaffected
    with pytest.raises(ClientError, match="InternalServerErrorException"):
        pinpoint.get_app(ApplicationId=app_id)
    state = json.load(urllib.request.urlopen(f"{fake.url}/_fake/state"))
    assert state["calls"]["GetApp"] == 1 and state["applications"][0]["Id"] == app_id


def test_unsigned_requests_are_refused(folder_pinpoint) -> None:
    fake, _, app_id, _ = folder_pinpoint
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{fake.url}/v1/apps/{app_id}")
    assert caught.value.code == 403


def test_running_fakes_points_boto3_at_them_and_restores_the_environment(tmp_path: Path) -> None:
    with patched_environ(
        {"AWS_ENDPOINT_URL_PINPOINT": "http://old", "AWS_ENDPOINT_URL_CUSTOMER_PROFILES": None}
    ):
        with running_fakes(tmp_path) as fakes:
            assert os.environ["AWS_ENDPOINT_URL_PINPOINT"] == fakes.pinpoint.url.rstrip("/")
            default_client = boto3.client("pinpoint", **CREDENTIALS)  # no endpoint_url: from the environment
            app_id = fakes.pinpoint.create_app("x")
            assert default_client.get_app(ApplicationId=app_id)["ApplicationResponse"]["Name"] == "x"
            fakes.customer_profiles.create_domain("d")
            profiles = boto3.client("customer-profiles", **CREDENTIALS)
            assert profiles.get_domain(DomainName="d")["DomainName"] == "d"
        assert os.environ["AWS_ENDPOINT_URL_PINPOINT"] == "http://old"
        assert "AWS_ENDPOINT_URL_CUSTOMER_PROFILES" not in os.environ


def test_s3_sources_list_folders_and_single_files(tmp_path: Path, moto_s3) -> None:  # noqa: F811
    bucket = moto_s3.new_bucket()
    for key in ("p/a.csv", "p/sub/b.csv", "pp/c.csv"):
        moto_s3.client.put_object(Bucket=bucket, Key=key, Body=b"12")
        (tmp_path / bucket / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / bucket / key).write_bytes(b"12")
    for source in (s3_source(tmp_path), s3_source(moto_s3.client)):
        assert source.list(bucket, "p/") == [("p/a.csv", 2), ("p/sub/b.csv", 2)]
        assert source.list(bucket, "p") == [("p/a.csv", 2), ("p/sub/b.csv", 2)]  # not pp/
        assert source.list(bucket, "p/a.csv") == [("p/a.csv", 2)]
        assert source.read(bucket, "p/sub/b.csv") == b"12"
    assert isinstance(s3_source(moto_s3.client), ClientS3)


# -- what `rfm run-local --destination ...` does ---------------------------------------------------


@pytest.mark.parametrize("destination", ["s3", "pinpoint", "customer-profiles", "pinpoint,customer-profiles"])
def test_local_destination_env_runs_the_whole_export_locally(
    tmp_path: Path, destination: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith(("EXPORT_", "PINPOINT_", "CUSTOMER_PROFILES_"))]:
        monkeypatch.delenv(name)
    frame = segments_frame(150)
    request = write_inputs(Storage(), str(tmp_path / "s3" / "bucket" / "exec"), frame)
    event = {
        key: getattr(request, key)
        for key in ("assignments_uri", "features_uri", "output_uri", "execution_id")
    }
    summary_dir = tmp_path / "destinations"
    with local_destination_env(destination, tmp_path / "s3", summary_dir) as local:
        app.handler(dict(event), None)
        result = app.handler(dict(event), None)  # a re-run against the same fakes changes nothing

    assert result["destinations"] == ",".join(local.destinations)
    assert result["destinations"].startswith("s3")
    assert (tmp_path / "s3" / "bucket" / "exec" / "segments" / "export").is_dir()
    summary = json.loads((summary_dir / "summary.json").read_text())
    if "pinpoint" in destination:
        assert summary["pinpoint"]["endpoints"] == result["by_destination"]["pinpoint"]["endpoints"]
        assert (
            sum(n for name, n in summary["pinpoint"]["segments"].items() if name.startswith("RFM segment"))
            == summary["pinpoint"]["endpoints"]
        )
        assert list((tmp_path / "s3" / "rfm-local" / "pinpoint-import" / "exec-1").rglob("*.csv"))
        assert result["by_destination"]["pinpoint"]["segments"]["created"] == 0  # second run: all unchanged
        endpoints = json.loads((summary_dir / "pinpoint" / "endpoints.json").read_text())
        assert sum(p["count"] for p in endpoints["projects"].values()) == summary["pinpoint"]["endpoints"]
    if "customer-profiles" in destination:
        assert summary["customer-profiles"]["profiles"] == len(frame)
        assert summary["customer-profiles"]["segment_definitions"]["rfm-cluster-0"] == int(
            (frame["cluster"] == 0).sum()
        )
    if destination == "s3":
        assert set(summary) == {"destinations"}
    assert not any(n.startswith(("PINPOINT_", "CUSTOMER_PROFILES_", "EXPORT_")) for n in os.environ)


def test_local_destination_env_with_an_s3_client(
    tmp_path: Path,
    moto_s3,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_s3.url)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(
            {
                "region_name": "AWS_DEFAULT_REGION",
                "aws_access_key_id": "AWS_ACCESS_KEY_ID",
                "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
            }[name],
            value,
        )
    app._client.cache_clear()
    bucket = moto_s3.new_bucket()
    request = write_inputs(Storage(moto_s3.client), f"s3://{bucket}/rfm/executions/e1", segments_frame(40))
    event = {
        key: getattr(request, key)
        for key in ("assignments_uri", "features_uri", "output_uri", "execution_id")
    }
    with local_destination_env(
        "pinpoint", moto_s3.client, tmp_path / "summary", import_prefix=f"s3://{bucket}/pinpoint-import"
    ) as local:
        result = app.handler(event, None)
        assert local.fakes.pinpoint.endpoint_count() == result["by_destination"]["pinpoint"]["endpoints"]
    app._client.cache_clear()
    keys = [
        o["Key"] for o in moto_s3.client.list_objects_v2(Bucket=bucket, Prefix="pinpoint-import/")["Contents"]
    ]
    assert keys == ["pinpoint-import/exec-1/attempt-1/part-00000.csv"]


def test_the_pinpoint_fake_reads_through_the_exports_storage(tmp_path: Path) -> None:
    storage = Storage(s3_root=tmp_path)  # where the export writes the import files in a local run
    data = f"{HEADER}\nrfm-{'0' * 32},EMAIL,a@example.com,u1,1,gold\n".encode()
    storage.write_bytes("s3://bucket/import/exec/attempt-1/part-00000.csv", data)
    storage.write_bytes("s3://bucket/import/exec/attempt-1/nested/part-00001.csv", data)

    for source in (s3_source(storage), s3_source(tmp_path)):  # the Storage itself, or a folder mapped by one
        assert source.list("bucket", "import/exec/") == [
            ("import/exec/attempt-1/nested/part-00001.csv", len(data)),
            ("import/exec/attempt-1/part-00000.csv", len(data)),
        ]
        assert source.read("bucket", "import/exec/attempt-1/part-00000.csv") == data
    assert FolderS3(tmp_path).storage.s3_root == storage.s3_root  # no mapping of its own

    fake = PinpointFake(s3_source(storage))
    fake.start()
    try:
        pinpoint = client("pinpoint", fake.url)
        app_id = fake.create_app("t")
        job = pinpoint.create_import_job(
            ApplicationId=app_id,
            ImportJobRequest={"Format": "CSV", "S3Url": "s3://bucket/import/exec/", "RoleArn": ROLE_ARN,
                              "RegisterEndpoints": True},
        )["ImportJobResponse"]
        fake.wait_for_jobs()
        for _ in range(5):
            job = pinpoint.get_import_job(ApplicationId=app_id, JobId=job["Id"])["ImportJobResponse"]
    finally:
        fake.stop()
    assert (job["JobStatus"], job["TotalPieces"], fake.endpoint_count(app_id)) == ("COMPLETED", 2, 1)
