"""The export in batches of customers: any batch size gives the same files, changes and deliveries.

The export reads ``rfm.parquet`` and the last published ``segments.parquet`` a batch at a time and
merges them by customer id (:mod:`lambdas.export.batches`). Here the batch size is made tiny, so
that departures, arrivals and moves fall on batch edges, before the first batch and after the last
one, and everything written is compared with a run in one batch, and with a run on unsorted input
(read whole and sorted). The storage pieces the streaming uses (multipart writes, ranged reads,
server-side copies) are checked on moto.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto import mock_aws

from lambdas.export import changes as changes_module
from lambdas.export.app import Clients, export_segments
from lambdas.export.config import CustomerProfilesSettings, ExportSettings, PinpointSettings
from lambdas.export.retry import NO_SDK_RETRIES, RetryPolicy
from lambdas.export.storage import PART_BYTES, Storage, join
from lambdas.fakes import running_fakes
from tests.export_support import features_table, segments_frame, write_inputs

DOMAIN = "d"


def histories() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two publishes: the second loses the first, last and a run of customers, gains some between
    existing ids and after the last, and moves a tenth to another segment."""
    first = segments_frame(90, clusters=3)
    second = first.drop(index=[0, 1, 40, 41, 42, 43, 89]).copy()
    arrivals = segments_frame(6, seed=3, clusters=3)
    arrivals["customer_id"] = ["A0000000", "C0000010a", "C0000036a", "C0000088z", "D0000000", "D0000001"]
    second = pd.concat([second, arrivals]).sort_values("customer_id").reset_index(drop=True)
    moved = second.index % 10 == 3
    second.loc[moved, "rfm_segment"] = np.where(second.loc[moved, "rfm_segment"] == "Hibernating",
                                                "Champions", "Hibernating")
    return first, second


def publish_both(root: Path, batch_rows: int, monkeypatch: pytest.MonkeyPatch, shuffle: bool = False,
                 destinations: tuple[str, ...] = ("s3",)) -> tuple[list[dict[str, Any]], Path]:
    """Publish the two histories under ``root`` with ``batch_rows`` customers per batch; the summaries."""
    monkeypatch.setattr(changes_module, "BATCH_ROWS", batch_rows)
    storage = Storage(s3_root=root / "s3")
    summaries = []
    with running_fakes(root / "s3") as fakes:
        fakes.customer_profiles.create_domain(DOMAIN)
        settings = ExportSettings(
            destinations=destinations,
            pinpoint=PinpointSettings(application_id=fakes.pinpoint.create_app("a"),
                                      role_arn="arn:aws:iam::123456789012:role/import",
                                      import_prefix="s3://local/imports", poll_seconds=0.01),
            customer_profiles=CustomerProfilesSettings(domain=DOMAIN, concurrency=2))
        options = {"region_name": "us-east-1", "config": NO_SDK_RETRIES}
        clients = Clients(pinpoint=boto3.client("pinpoint", endpoint_url=fakes.pinpoint.url, **options),
                          customer_profiles=boto3.client("customer-profiles", endpoint_url=fakes.customer_profiles.url,
                                                         **options))
        for execution, segments in zip(("e1", "e2"), histories(), strict=True):
            request = write_inputs(storage, str(root / "rfm" / "executions" / execution), segments, execution)
            if shuffle:  # rfm.parquet not sorted by id: read whole and sorted
                path = Path(request.features_uri, "rfm.parquet")
                order = np.random.default_rng(1).permutation(len(segments))
                pq.write_table(features_table(segments.iloc[order].reset_index(drop=True)), path)
            summary = export_segments(request, storage, settings, clients, RetryPolicy(sleep=lambda s: None))
            fakes.pinpoint.wait_for_jobs()
            for counts in summary["by_destination"].values():
                counts.pop("seconds", None)
                counts.pop("import_jobs", None)
            summary["files"] = [str(Path(uri).relative_to(root)) for uri in summary["files"]]
            summaries.append(summary)
        if "customer-profiles" in destinations:
            profiles = {customer: fakes.customer_profiles.find_profile(DOMAIN, customer)["Attributes"]
                        for customer in pd.concat(histories())["customer_id"].unique()}
            summaries.append({"profiles": profiles})
    return summaries, root


def written(root: Path) -> dict[str, Any]:
    """Every file of the second publish and the published folder: Parquet as rows, the rest as bytes
    (the manifest without its time)."""
    found: dict[str, Any] = {}
    for path in sorted([*(root / "rfm" / "executions" / "e2" / "segments").rglob("*"),
                        *(root / "rfm" / "published").rglob("*")]):
        key = str(path.relative_to(root))
        if path.suffix == ".parquet":
            found[key] = pq.read_table(path).to_pylist()
        elif path.suffix == ".json":
            manifest = json.loads(path.read_text())
            for entry in (manifest, manifest.get("previous") or {}):
                entry.pop("published", None)
            found[key] = manifest
        elif path.is_file():
            found[key] = path.read_bytes()
    return found


def expected_changes() -> dict[str, int]:
    """The second publish's changes, worked out from the two histories."""
    first, second = (frame.set_index("customer_id")["rfm_segment"] for frame in histories())
    both = first.index.intersection(second.index)
    moved = int((first[both] != second[both]).sum())
    entered = len(second.index.difference(first.index))
    return {"entered": entered, "left": len(first.index.difference(second.index)), "moved": moved,
            "customers_to_send": entered + moved, "compared_with": "e1"}


def test_tiny_batches_write_what_one_batch_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  fake_aws: None) -> None:
    one, one_root = publish_both(tmp_path / "one", 1_000, monkeypatch)
    tiny, tiny_root = publish_both(tmp_path / "tiny", 4, monkeypatch)

    assert tiny == one
    assert one[1]["changes"] == expected_changes()
    assert expected_changes()["moved"] > 5
    assert written(tiny_root) == written(one_root)
    segments = pq.ParquetFile(tiny_root / "rfm" / "executions" / "e2" / "segments" / "segments.parquet")
    assert segments.num_row_groups == -(-89 // 4)  # written a batch at a time
    rows = segments.read().to_pandas()
    assert rows["customer_id"].is_monotonic_increasing and rows["customer_id"].is_unique


def test_unsorted_features_give_the_same_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                fake_aws: None) -> None:
    sorted_run, sorted_root = publish_both(tmp_path / "sorted", 5, monkeypatch)
    shuffled, shuffled_root = publish_both(tmp_path / "shuffled", 5, monkeypatch, shuffle=True)
    assert shuffled == sorted_run
    assert written(shuffled_root) == written(sorted_root)


@pytest.mark.slow
def test_tiny_batches_deliver_what_one_batch_delivers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      fake_aws: None) -> None:
    destinations = ("s3", "customer-profiles", "pinpoint")
    one, _ = publish_both(tmp_path / "one", 1_000, monkeypatch, destinations=destinations)
    tiny, _ = publish_both(tmp_path / "tiny", 4, monkeypatch, destinations=destinations)
    assert tiny == one
    assert one[1]["by_destination"]["customer-profiles"]["profiles_upserted"] == expected_changes()["customers_to_send"]
    assert one[1]["by_destination"]["customer-profiles"]["profiles_cleared"] == expected_changes()["left"]
    assert not any(attributes.get("rfm_segment") for customer, attributes in one[2]["profiles"].items()
                   if customer in {"C0000000", "C0000001", "C0000089"})


# -- storage: what the streaming uses ---------------------------------------------------------------


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="rfm-batches")
        calls: list[str] = []
        client.meta.events.register("before-parameter-build.s3", lambda model, **_: calls.append(model.name))
        yield Storage(client), calls


def test_a_large_file_is_uploaded_in_parts_and_a_small_one_in_one_put(s3: Any) -> None:
    storage, calls = s3
    data = bytes(range(256)) * ((2 * PART_BYTES + 1000) // 256)
    with storage.open_write("s3://rfm-batches/big.bin") as sink:
        for start in range(0, len(data), 1 << 20):
            sink.write(data[start:start + (1 << 20)])
    assert storage.read_bytes("s3://rfm-batches/big.bin") == data
    assert calls.count("UploadPart") == 3 and "CompleteMultipartUpload" in calls
    calls.clear()
    with storage.open_write("s3://rfm-batches/small.txt") as sink:
        sink.write(b"hello")
    assert calls == ["PutObject"]
    assert storage.read_bytes("s3://rfm-batches/small.txt") == b"hello"


def test_an_aborted_upload_leaves_nothing(s3: Any) -> None:
    storage, _calls = s3
    with pytest.raises(RuntimeError), storage.open_write("s3://rfm-batches/x.bin") as sink:
        sink.write(b"x" * (PART_BYTES + 10))
        raise RuntimeError("stop")
    assert not storage.exists("s3://rfm-batches/x.bin")
    assert storage.s3.list_multipart_uploads(Bucket="rfm-batches").get("Uploads", []) == []


def test_parquet_is_read_back_by_ranges_and_copied_server_side(s3: Any) -> None:
    storage, calls = s3
    table = pa.table({"customer_id": [f"C{i:05d}" for i in range(5000)], "value": list(range(5000))})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=1000)
    storage.write_bytes("s3://rfm-batches/t.parquet", buffer.getvalue())
    calls.clear()
    parquet = pq.ParquetFile(storage.open_read("s3://rfm-batches/t.parquet"))
    assert parquet.read_row_group(3).column("value").to_pylist() == list(range(3000, 4000))
    assert "GetObject" in calls
    calls.clear()
    storage.copy("s3://rfm-batches/t.parquet", "s3://rfm-batches/copy/t.parquet")
    assert calls == ["CopyObject"]
    assert storage.read_bytes(join("s3://rfm-batches/copy", "t.parquet")) == buffer.getvalue()


def test_local_files_appear_only_when_closed(tmp_path: Path) -> None:
    storage = Storage()
    target = tmp_path / "out" / "f.csv"
    sink = storage.open_write(str(target))
    sink.write(b"a,b\n")
    assert not target.exists()
    sink.close()
    assert target.read_bytes() == b"a,b\n"
    with pytest.raises(RuntimeError), storage.open_write(str(tmp_path / "out" / "g.csv")) as other:
        other.write(b"partial")
        raise RuntimeError("stop")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["f.csv"]


def test_a_missing_object_is_file_not_found_for_every_kind_of_read(s3: Any) -> None:
    storage, _calls = s3
    for read in (storage.read_bytes, storage.open_read, lambda uri: list(storage.iter_bytes(uri))):
        with pytest.raises(FileNotFoundError):
            read("s3://rfm-batches/missing.parquet")
