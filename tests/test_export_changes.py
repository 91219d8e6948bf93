"""Segments over time: changes.parquet, delta publishing, departures leaving every destination."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
import pyarrow.parquet as pq
import pytest

from lambdas.export.app import Clients, ExportFailed, ExportRequest, export_segments
from lambdas.export.changes import describe, published_uri
from lambdas.export.config import CustomerProfilesSettings, ExportSettings, PinpointSettings
from lambdas.export.destinations.customer_profiles import segment_definitions
from lambdas.export.destinations.pinpoint import RETIRED_VALUE, desired_segments, endpoint_id
from lambdas.export.retry import NO_SDK_RETRIES, RetryPolicy
from lambdas.export.storage import Storage, join
from lambdas.fakes import running_fakes
from steps.columns import CHANGE_COLUMNS, HISTORY_COLUMNS, SEGMENT_COLUMNS
from steps.published import changes_table, compare
from steps.segments import SEGMENT_NAMES
from tests.export_support import read_csv_rows, segments_frame, write_inputs

CUSTOMERS = 60
DOMAIN = "d"


def frame(**columns: list[Any]) -> pd.DataFrame:
    return pd.DataFrame(columns)


# -- compare -------------------------------------------------------------------------------------


def test_first_publish_has_every_customer_entered_and_sends_everyone() -> None:
    current = segments_frame(5)
    result = compare(None, current)
    changes = result.changes.to_pandas()
    assert changes["change"].tolist() == ["entered"] * 5
    assert changes["previous_segment"].isna().all()
    assert result.send.all() and result.left.empty
    assert tuple(changes.columns) == CHANGE_COLUMNS


@pytest.mark.parametrize(
    ("change", "kind", "sent"),
    [
        ({"rfm_segment": "At Risk"}, "moved", True),
        ({"cluster_name": "Other"}, "moved", True),
        ({"cluster": 9}, None, True),  # renumbered, same name: not a change people see, but sent
        ({"email": "new@example.com"}, None, True),  # contact data changed
        ({"phone": None}, None, True),
        ({"monetary": 1.0, "recency_days": 3}, None, False),  # scores move every day: not sent
        ({}, None, False),
    ],
)
def test_what_counts_as_a_change_and_what_is_sent(change: dict[str, Any], kind: str | None, sent: bool) -> None:
    before = frame(customer_id=["a", "b"], cluster=[0, 1], cluster_name=["Big", "Small"],
                   rfm_segment=["Loyal", "Hibernating"], email=["a@x.io", "b@x.io"], phone=["+15550001", None],
                   monetary=[10.0, 20.0], recency_days=[1, 2])
    after = before.copy()
    for column, value in change.items():
        after.loc[0, column] = value
    result = compare(before, after)
    assert result.changes["change"].to_pylist() == ([kind] if kind else [])
    assert result.send.tolist() == [sent, False]
    assert result.previous_segment.to_pylist() == ["Loyal", "Hibernating"]
    assert result.previous_changed["customer_id"].tolist() == (["a"] if sent else [])


def test_departed_customers_are_left_with_their_previous_segment() -> None:
    before = frame(customer_id=["a", "b", "c"], cluster=[0, 0, 1], cluster_name=["Big", "Big", "Small"],
                   rfm_segment=["Loyal", "Champions", "At Risk"])
    after = frame(customer_id=["c", "d"], cluster=[1, 0], cluster_name=["Small", "Big"],
                  rfm_segment=["At Risk", "Promising"])
    result = compare(before, after)
    rows = result.changes.to_pandas().fillna("").values.tolist()
    assert rows == [["a", "Loyal", "", "Big", "", "left"], ["b", "Champions", "", "Big", "", "left"],
                    ["d", "", "Promising", "", "Big", "entered"]]
    assert result.left["customer_id"].tolist() == ["a", "b"]
    assert result.counts == {"entered": 1, "left": 2, "moved": 0, "customers_to_send": 1}


@pytest.mark.parametrize(("output_uri", "expected"), [
    ("s3://b/rfm/executions/x/segments", "s3://b/rfm/published"),
    ("s3://b/executions/x/segments/", "s3://b/published"),
    ("/out/s3/b/rfm/executions/x/segments", "/out/s3/b/rfm/published"),
    ("/tmp/run/segments", "/tmp/run/published"),
])
def test_the_last_publish_lives_beside_the_executions(output_uri: str, expected: str) -> None:
    assert published_uri(output_uri) == expected


def test_describe_counts_and_moves() -> None:
    changes = compare(frame(customer_id=["a", "b"], cluster=[0, 0], cluster_name=["B", "B"],
                            rfm_segment=["Loyal", "Loyal"]),
                      frame(customer_id=["a"], cluster=[0], cluster_name=["B"], rfm_segment=["At Risk"])).changes
    text = describe(changes)
    assert text.splitlines()[0] == "2 customers changed since the last publish: 1 left, 1 moved, 0 entered"
    assert "Loyal -> At Risk: 1" in text and "Loyal -> (none): 1" in text


# -- publishing that matches the segments ----------------------------------------------------------


@pytest.fixture
def fakes(tmp_path: Path, fake_aws: None) -> Any:
    with running_fakes(tmp_path / "s3") as running:
        running.customer_profiles.create_domain(DOMAIN)
        yield running


def settings_for(app_id: str, **options: Any) -> ExportSettings:
    return ExportSettings(
        destinations=("s3", "pinpoint", "customer-profiles"),
        pinpoint=PinpointSettings(application_id=app_id, role_arn="arn:aws:iam::123456789012:role/import",
                                  import_prefix="s3://local/imports", poll_seconds=0.01),
        customer_profiles=CustomerProfilesSettings(domain=DOMAIN, concurrency=2),
        **options,
    )


def clients(fakes: Any) -> Clients:
    options = {"region_name": "us-east-1", "config": NO_SDK_RETRIES}
    return Clients(pinpoint=boto3.client("pinpoint", endpoint_url=fakes.pinpoint.url, **options),
                   customer_profiles=boto3.client("customer-profiles", endpoint_url=fakes.customer_profiles.url,
                                                  **options))


def publish(tmp_path: Path, fakes: Any, segments: pd.DataFrame, execution: str, settings: ExportSettings
            ) -> tuple[ExportRequest, dict[str, Any]]:
    storage = Storage(s3_root=tmp_path / "s3")
    request = write_inputs(storage, str(tmp_path / "rfm" / "executions" / execution), segments, execution)
    fakes.customer_profiles.calls.clear()
    fakes.pinpoint.calls.clear()
    summary = export_segments(request, storage, settings, clients(fakes), RetryPolicy(sleep=lambda s: None))
    fakes.pinpoint.wait_for_jobs()
    return request, summary


def members_of_every_destination(fakes: Any, app: str, segments: pd.DataFrame) -> dict[str, int]:
    """How many profiles / endpoints each destination's segments select, by segment name."""
    sizes = {}
    for name, definition in segment_definitions(segments).items():
        sizes[f"cp:{name}"] = fakes.customer_profiles.segment_size(DOMAIN, definition)
    for name, dimensions in desired_segments(segments).items():
        sizes[f"pinpoint:{name}"] = fakes.pinpoint.store.segment_size(app, dimensions)
    return sizes


def test_a_deleted_customer_leaves_the_segments_the_changes_and_every_destination(tmp_path: Path, fakes: Any
                                                                                  ) -> None:
    first = segments_frame(CUSTOMERS)
    app = fakes.pinpoint.create_app("a")
    settings = settings_for(app)
    publish(tmp_path, fakes, first, "e1", settings)
    gone = first.loc[1, "customer_id"]  # has an email and a phone: two endpoints to retire
    profile = fakes.customer_profiles.find_profile(DOMAIN, gone)
    assert profile["Attributes"]["rfm_segment"] == first.loc[1, "rfm_segment"]

    second = first.drop(index=1).reset_index(drop=True)
    request, summary = publish(tmp_path, fakes, second, "e2", settings)

    storage = Storage()
    segments = pq.read_table(join(request.output_uri, "segments.parquet")).to_pandas()
    assert gone not in set(segments["customer_id"])
    assert tuple(segments.columns[: len(SEGMENT_COLUMNS)]) == SEGMENT_COLUMNS
    assert tuple(segments.columns[-2:]) == HISTORY_COLUMNS
    assert (segments["previous_segment"] == segments["rfm_segment"]).all()
    changes = pq.read_table(join(request.output_uri, "changes.parquet")).to_pandas()
    assert changes.fillna("").values.tolist() == [
        [gone, first.loc[1, "rfm_segment"], "", first.loc[1, "cluster_name"], "", "left"]]
    assert summary["changes"] == {"entered": 0, "left": 1, "moved": 0, "customers_to_send": 0,
                                  "compared_with": "e1"}

    for uri in storage.list(join(request.output_uri, "export")):
        if uri.endswith(".csv") and not uri.endswith(("index.csv", "changes.csv")):
            assert gone not in set(read_csv_rows(storage.read_bytes(uri))["customer_id"]), uri
        if uri.endswith(".parquet"):
            assert gone not in set(pq.read_table(uri)["customer_id"].to_pylist()), uri
    assert read_csv_rows(storage.read_bytes(join(request.output_uri, "export", "changes.csv")))[
        "customer_id"].tolist() == [gone]

    profile = fakes.customer_profiles.find_profile(DOMAIN, gone)
    assert not any(name.startswith("rfm_") for name in profile["Attributes"])
    for channel in ("EMAIL", "SMS"):
        endpoint = fakes.pinpoint.store.get(app, endpoint_id(gone, channel))
        assert endpoint["User.UserAttributes.RFMSegment"] == [RETIRED_VALUE]
        assert endpoint["User.UserAttributes.ClusterName"] == [RETIRED_VALUE]
    sizes = members_of_every_destination(fakes, app, second)
    for name in SEGMENT_NAMES:
        expected = int((second["rfm_segment"] == name).sum())
        slug_name = [k for k in sizes if k.startswith("cp:") and segment_definitions(second)[k[3:]]["DisplayName"]
                     == f"RFM segment: {name}"][0]
        assert sizes[slug_name] == expected, name
    by_destination = summary["by_destination"]
    assert by_destination["customer-profiles"]["profiles_cleared"] == 1
    assert by_destination["customer-profiles"]["profiles_upserted"] == 0  # nobody else changed
    assert by_destination["pinpoint"]["endpoints_retired"] == 2


def test_only_changed_customers_are_sent_and_leavers_of_a_segment_stop_matching(tmp_path: Path, fakes: Any
                                                                                ) -> None:
    first = segments_frame(CUSTOMERS)
    app = fakes.pinpoint.create_app("a")
    settings = settings_for(app)
    publish(tmp_path, fakes, first, "e1", settings)
    second = first.copy()
    moved = second.index[second["rfm_segment"] != "Champions"][:3]
    second.loc[moved, "rfm_segment"] = "Champions"
    second.loc[10, "email"] = "changed@example.com"  # contact data only: sent, not a change
    request, summary = publish(tmp_path, fakes, second, "e2", settings)

    assert summary["changes"]["moved"] == 3
    assert summary["changes"]["customers_to_send"] == 4
    assert fakes.customer_profiles.calls["PutProfileObject"] == 4
    profiles = summary["by_destination"]["customer-profiles"]
    assert (profiles["mode"], profiles["profiles_upserted"], profiles["customers_unchanged"]) == (
        "delta", 4, CUSTOMERS - 4)
    assert summary["by_destination"]["pinpoint"]["customers"] + summary["by_destination"]["pinpoint"][
        "customers_skipped_no_contact"] == 4
    sizes = members_of_every_destination(fakes, app, second)
    champions_cp = [k for k in sizes if k == "cp:rfm-champions"][0]
    assert sizes[champions_cp] == int((second["rfm_segment"] == "Champions").sum())
    with_email = second[second["email"].notna()]
    assert sizes["pinpoint:RFM segment: Champions"] >= int((with_email["rfm_segment"] == "Champions").sum())
    for customer in second.loc[moved, "customer_id"]:
        assert fakes.customer_profiles.find_profile(DOMAIN, customer)["Attributes"]["rfm_segment"] == "Champions"
    assert fakes.pinpoint.store.get(app, endpoint_id(second.loc[10, "customer_id"], "EMAIL"))[
        "Address"] == "changed@example.com"


def test_full_republish_sends_everyone(tmp_path: Path, fakes: Any) -> None:
    first = segments_frame(CUSTOMERS)
    app = fakes.pinpoint.create_app("a")
    publish(tmp_path, fakes, first, "e1", settings_for(app))
    _request, summary = publish(tmp_path, fakes, first, "e2", settings_for(app, full_republish=True))
    assert summary["by_destination"]["customer-profiles"]["mode"] == "full"
    assert fakes.customer_profiles.calls["PutProfileObject"] == CUSTOMERS


def test_a_destination_that_never_received_a_publish_gets_everyone(tmp_path: Path, fakes: Any) -> None:
    first = segments_frame(CUSTOMERS)
    app = fakes.pinpoint.create_app("a")
    publish(tmp_path, fakes, first, "e1", ExportSettings(destinations=("s3",)))
    _request, summary = publish(tmp_path, fakes, first, "e2", settings_for(app))
    assert summary["by_destination"]["customer-profiles"]["mode"] == "full"
    assert fakes.customer_profiles.calls["PutProfileObject"] == CUSTOMERS


def test_a_failed_publish_is_not_the_one_the_next_compares_with(tmp_path: Path, fakes: Any) -> None:
    first = segments_frame(CUSTOMERS)
    app = fakes.pinpoint.create_app("a")
    publish(tmp_path, fakes, first, "e1", settings_for(app))
    second = first.copy()
    second.loc[[0, 1], "rfm_segment"] = "At Risk"
    second.loc[[0, 1], "r_score"] = 1
    fakes.customer_profiles.inject(fail_records=[second.loc[0, "customer_id"]], times=100)
    with pytest.raises(ExportFailed, match="customer-profiles: 1 of 2 customer profiles failed"):
        publish(tmp_path, fakes, second, "e2", settings_for(app))
    fakes.customer_profiles.reset_faults()
    _request, summary = publish(tmp_path, fakes, second, "e3", settings_for(app))
    assert summary["changes"]["compared_with"] == "e1"
    assert fakes.customer_profiles.calls["PutProfileObject"] == 2
    manifest = json.loads((tmp_path / "rfm" / "published" / "published.json").read_text())
    assert manifest["execution_id"] == "e3" and manifest["customers"] == CUSTOMERS


def test_delta_calls_stay_within_six_percent_when_five_percent_change(tmp_path: Path, fakes: Any) -> None:
    customers = 2000
    first = segments_frame(customers, seed=3)
    app = fakes.pinpoint.create_app("a")
    publish(tmp_path, fakes, first, "e1", settings_for(app))
    second = first.copy()
    changed = second.sample(frac=0.05, random_state=1).index
    second.loc[changed, "rfm_segment"] = second.loc[changed, "rfm_segment"].map(
        lambda name: "Hibernating" if name != "Hibernating" else "Champions")
    _request, summary = publish(tmp_path, fakes, second, "e2", settings_for(app))
    profile_calls = sum(fakes.customer_profiles.calls.values())
    endpoints_sent = summary["by_destination"]["pinpoint"]["endpoints"]
    all_endpoints = int(first["email"].notna().sum() + first["phone"].notna().sum())
    assert profile_calls <= 0.06 * customers
    assert endpoints_sent <= 0.06 * all_endpoints
    assert sum(fakes.pinpoint.calls.values()) <= 0.06 * customers


# -- rfm segments --changes ---------------------------------------------------------------------------


def test_rfm_segments_changes_prints_the_changes_of_the_last_publish(tmp_path: Path, capsys) -> None:
    from pipeline.cli import main

    before = frame(customer_id=["a", "b", "c"], cluster=[0, 0, 1], cluster_name=["Big", "Big", "Small"],
                   rfm_segment=["Loyal", "Loyal", "At Risk"])
    after = frame(customer_id=["a", "c"], cluster=[0, 1], cluster_name=["Big", "Small"],
                  rfm_segment=["At Risk", "At Risk"])
    (tmp_path / "segments").mkdir()
    pq.write_table(changes_table(compare(before, after).changes), tmp_path / "segments" / "changes.parquet")

    assert main(["segments", "--changes", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "2 customers changed since the last publish: 1 left, 1 moved, 0 entered"
    assert "Loyal -> At Risk: 1" in out and "Loyal -> (none): 1" in out


def test_rfm_segments_changes_before_any_publish_says_what_to_do(tmp_path: Path, capsys) -> None:
    from pipeline.cli import main

    assert main(["segments", "--changes", "--output", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "no changes.parquet: nothing was published yet" in err and len(err.strip().splitlines()) == 1


def test_a_retry_clears_the_departed_customers_a_failed_export_could_not(tmp_path: Path, fakes: Any) -> None:
    """The checkpoint records clearing as done only when every departed customer was cleared."""
    first = segments_frame(CUSTOMERS)
    app = fakes.pinpoint.create_app("a")
    publish(tmp_path, fakes, first, "e1", settings_for(app))
    gone = first.loc[1, "customer_id"]
    second = first.drop(index=1).reset_index(drop=True)
    fakes.customer_profiles.inject(throttle=100, operations=["SearchProfiles"])
    with pytest.raises(ExportFailed, match="1 of 1 departed customers' profiles could not be cleared"):
        publish(tmp_path, fakes, second, "e2", settings_for(app))
    assert fakes.customer_profiles.find_profile(DOMAIN, gone)["Attributes"]["rfm_segment"]
    fakes.customer_profiles.reset_faults()
    _request, summary = publish(tmp_path, fakes, second, "e2", settings_for(app))  # the pipeline's retry
    assert summary["by_destination"]["customer-profiles"]["profiles_cleared"] == 1
    profile = fakes.customer_profiles.find_profile(DOMAIN, gone)
    assert not any(name.startswith("rfm_") for name in profile["Attributes"])


@pytest.mark.parametrize("ids", [["b", "a", "b"], ["a", None]])
def test_a_last_publish_with_repeated_or_empty_ids_is_one_line(tmp_path: Path, ids: list) -> None:
    """A hand-made or damaged published segments.parquet names itself instead of an Arrow index error."""
    from lambdas.export.changes import PreviousRows
    from steps.errors import PipelineError

    path = tmp_path / "segments.parquet"
    pd.DataFrame({"customer_id": ids, "cluster": [0] * len(ids), "cluster_name": ["x"] * len(ids),
                  "rfm_segment": ["Champions"] * len(ids)}).to_parquet(path, index=False)
    with pytest.raises(PipelineError, match="customer ids repeated or empty") as raised:
        PreviousRows(Storage(), str(path))
    assert "\n" not in str(raised.value)
