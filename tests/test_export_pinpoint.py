"""The Pinpoint destination against the Pinpoint fake, which reads the import files from moto S3."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
from botocore.exceptions import ClientError

from lambdas.export.config import PinpointSettings
from lambdas.export.destinations import DestinationError, pinpoint
from lambdas.export.destinations.pinpoint import (
    IMPORT_COLUMNS,
    desired_segments,
    endpoint_id,
    endpoints,
    split_csv,
)
from lambdas.export.retry import RetryPolicy
from lambdas.export.storage import Storage
from lambdas.fakes import ClientS3, PinpointFake
from steps.errors import PipelineError
from steps.segments import SEGMENT_NAMES
from tests.export_support import (  # noqa: F401  (moto_s3 is a fixture)
    ROLE_ARN,
    client,
    fast_retry,
    moto_s3,
    poll_sleep,
    read_csv_rows,
    segments_frame,
)


@dataclass
class Env:
    fake: PinpointFake
    client: Any
    app: str
    bucket: str
    storage: Storage

    def settings(self, **overrides: Any) -> PinpointSettings:
        values = {
            "application_id": self.app,
            "role_arn": ROLE_ARN,
            "poll_seconds": 0.01,
            "import_prefix": f"s3://{self.bucket}/pinpoint-import",
            **overrides,
        }
        return PinpointSettings(**values)

    def export(
        self, segments: pd.DataFrame, retry: Any = None, run_id: str = "exec-1", clock: Any = None,
        sleep: Any = poll_sleep, **overrides: Any
    ) -> dict:
        return pinpoint.export(
            segments,
            client=self.client,
            storage=self.storage,
            settings=self.settings(**overrides),
            output_uri=f"s3://{self.bucket}/out",
            run_id=run_id,
            retry=retry or fast_retry()[0],
            sleep=sleep,
            **({"clock": clock} if clock else {}),
        )


@pytest.fixture
def env(moto_s3) -> Iterator[Env]:  # noqa: F811
    fake = PinpointFake(ClientS3(moto_s3.client), polls_until_done=2)
    fake.start()
    try:
        yield Env(
            fake,
            client("pinpoint", fake.url),
            fake.create_app("rfm-test"),
            moto_s3.new_bucket(),
            Storage(moto_s3.client),
        )
    finally:
        fake.stop()


def contact_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A segments frame of ``len(rows)`` customers with the given contact columns."""
    frame = segments_frame(len(rows)).drop(columns=["email", "phone"])
    contacts = pd.DataFrame(rows, dtype=object)
    for column in contacts:
        frame[column] = contacts[column].to_numpy()
    return frame


# -- endpoint rows ---------------------------------------------------------------------------------


def test_endpoints_count_every_customer_and_every_skip() -> None:
    frame = contact_frame(
        [
            {
                "email": "a@example.com",
                "phone": "+15550100001",
                "channel": None,
                "address": None,
            },  # 2 endpoints
            {"email": None, "phone": None, "channel": None, "address": None},  # no contact
            {
                "email": "not-an-email",
                "phone": "+1 (555) 010-0003",
                "channel": None,
                "address": None,
            },  # SMS only
            {"email": "  ", "phone": "12345", "channel": None, "address": None},  # nothing valid
            {
                "email": "e@example.com",
                "phone": None,
                "channel": "email",
                "address": "e2@example.com",
            },  # dup EMAIL
            {"email": None, "phone": None, "channel": "PUSH", "address": "device-token"},  # unsupported
            {
                "email": "g@example.com",
                "phone": None,
                "channel": "SMS",
                "address": "+15550100007",
            },  # id with a tab
        ]
    )
    frame.loc[6, "customer_id"] = "C\t6"
    rows, counts = endpoints(frame)

    assert counts == {
        "customers": 3,
        "customers_skipped_no_contact": 1,
        "customers_skipped_no_valid_endpoint": 3,
        "endpoints": 4,
        "endpoints_skipped": {
            "unsupported_channel": 1,
            "invalid_address": 2,
            "tabs_or_line_breaks": 2,
            "same_channel_twice": 1,
        },
    }
    table = rows.to_pandas()
    assert tuple(table.columns) == IMPORT_COLUMNS
    ids = frame["customer_id"].tolist()
    assert list(zip(table["User.UserId"], table["ChannelType"], table["Address"], strict=True)) == [
        (ids[0], "EMAIL", "a@example.com"),
        (ids[0], "SMS", "+15550100001"),
        (ids[2], "SMS", "+15550100003"),
        (ids[4], "EMAIL", "e@example.com"),
    ]
    assert table["Id"].tolist() == [
        endpoint_id(u, c) for u, c in zip(table["User.UserId"], table["ChannelType"], strict=True)
    ]


@pytest.mark.parametrize("seed", range(5))
def test_every_customer_is_exported_or_counted(seed: int) -> None:
    rng = np.random.default_rng(seed)
    frame = segments_frame(300, seed=seed)
    frame.loc[rng.random(300) < 0.2, "email"] = "broken"
    frame.loc[rng.random(300) < 0.2, "phone"] = None
    rows, counts = endpoints(frame)

    exported = set(rows.column("User.UserId").to_pylist())
    assert counts["customers"] == len(exported)
    assert (
        counts["customers"]
        + counts["customers_skipped_no_contact"]
        + counts["customers_skipped_no_valid_endpoint"]
    ) == len(frame)
    assert rows.num_rows == len(set(rows.column("Id").to_pylist()))  # ids unique
    contacts = frame["email"].notna() | frame["phone"].notna()
    assert counts["customers_skipped_no_contact"] == int((~contacts).sum())


def test_endpoint_ids_are_stable_and_hold_no_contact_data() -> None:
    frame = segments_frame(50)
    first, _ = endpoints(frame)
    again, _ = endpoints(frame.sample(frac=1.0, random_state=1))  # order must not matter
    assert set(first.column("Id").to_pylist()) == set(again.column("Id").to_pylist())
    addresses = set(first.column("Address").to_pylist())
    assert not any(
        address in endpoint for endpoint in first.column("Id").to_pylist() for address in addresses
    )


@pytest.mark.parametrize("max_bytes", [72, 200, 1000, 10_000])
def test_split_csv_keeps_whole_rows_under_the_limit(max_bytes: int) -> None:
    header = b"Id,Address\n"
    body = b"".join(f'"id-{i}","{"x" * (i % 37)}@example.com"\n'.encode() for i in range(200))
    files = split_csv(header, body, max_bytes)

    assert all(len(part) <= max_bytes and part.startswith(header) for part in files)
    assert b"".join(part[len(header) :] for part in files) == body
    assert all(part.endswith(b"\n") for part in files)


def test_split_csv_refuses_a_row_longer_than_the_limit() -> None:
    with pytest.raises(PipelineError, match="longer than the 30-byte file limit"):
        split_csv(b"Id\n", b"short\n" + b"x" * 40 + b"\n", 30)


# -- against the fake ----------------------------------------------------------------------------


def test_export_imports_endpoints_and_creates_one_segment_per_segment_and_cluster(env: Env) -> None:
    frame = segments_frame(400)
    counts = env.export(frame)

    rows, expected = endpoints(frame)
    assert counts["endpoints"] == rows.num_rows == env.fake.endpoint_count(env.app)
    assert counts["customers_skipped_no_contact"] == expected["customers_skipped_no_contact"] == 40
    assert (counts["import_files"], len(counts["import_jobs"]), counts["endpoints_failed"]) == (1, 1, 0)
    assert counts["segments"] == {
        "created": len(SEGMENT_NAMES) + 3,
        "updated": 0,
        "unchanged": 0,
        "renamed": 0,
        "duplicates_found": 0,
    }
    job = env.client.get_import_job(ApplicationId=env.app, JobId=counts["import_jobs"][0])[
        "ImportJobResponse"
    ]
    assert job["Definition"]["RegisterEndpoints"] is True and job["Definition"]["DefineSegment"] is False
    assert job["Definition"]["S3Url"] == f"s3://{env.bucket}/pinpoint-import/exec-1/attempt-1/"

    first = rows.slice(0, 1).to_pylist()[0]
    stored = env.client.get_endpoint(ApplicationId=env.app, EndpointId=first["Id"])["EndpointResponse"]
    assert stored["User"]["UserId"] == first["User.UserId"]
    assert stored["User"]["UserAttributes"]["RFMSegment"] == [first["User.UserAttributes.RFMSegment"]]
    assert stored["Metrics"]["Monetary"] == pytest.approx(first["Metrics.Monetary"])

    segments = {
        s["Name"]: s for s in env.client.get_segments(ApplicationId=env.app)["SegmentsResponse"]["Item"]
    }
    champions = segments["RFM segment: Champions"]
    assert champions["Dimensions"]["UserAttributes"]["RFMSegment"]["Values"] == ["Champions"]
    per_segment = rows.to_pandas().groupby("User.UserAttributes.RFMSegment").size()
    assert env.fake.segment_size(env.app, champions) == per_segment.get("Champions", 0)
    cluster = segments["RFM cluster: Cluster 2"]  # named after the cluster, selecting that name
    assert cluster["Dimensions"]["UserAttributes"] == {
        "ClusterName": {"AttributeType": "INCLUSIVE", "Values": ["Cluster 2"]}
    }
    assert env.fake.segment_size(env.app, cluster) == int(
        (rows.column("User.UserAttributes.Cluster").to_numpy(zero_copy_only=False) == "2").sum()
    )


def test_the_import_file_is_what_pinpoint_documents(env: Env) -> None:
    frame = segments_frame(30)
    env.export(frame)
    files = env.storage.list(f"s3://{env.bucket}/pinpoint-import/exec-1", ".csv")
    text = env.storage.read_bytes(files[0]).decode("utf-8")

    assert text.splitlines()[0] == ",".join(IMPORT_COLUMNS)  # plain header, no quotes
    table = read_csv_rows(text.encode())
    assert set(table["ChannelType"]) == {"EMAIL", "SMS"}
    assert table["Metrics.Frequency"].str.fullmatch(r"\d+").all()
    assert "\t" not in text and "OptOut" not in text


def test_rerun_creates_no_duplicate_endpoints_or_segments(env: Env) -> None:
    frame = segments_frame(200)
    first = env.export(frame)
    changed_after_first = env.fake.endpoints_changed
    again = env.export(frame)

    assert again["segments"] == {
        "created": 0,
        "updated": 0,
        "unchanged": first["segments"]["created"],
        "renamed": 0,
        "duplicates_found": 0,
    }
    assert env.fake.endpoint_count(env.app) == first["endpoints"]
    assert env.fake.endpoints_changed == changed_after_first  # the second import changed no endpoint
    assert len(env.fake.segments[env.app]) == first["segments"]["created"]
    assert env.fake.calls["CreateSegment"] == first["segments"]["created"]


def test_a_changed_customer_updates_its_endpoints_in_place(env: Env) -> None:
    frame = segments_frame(60)
    env.export(frame)
    before = env.fake.endpoints_changed
    customer = frame.index[1]
    new_segment = "Hibernating" if frame.loc[customer, "rfm_segment"] != "Hibernating" else "Champions"
    frame.loc[customer, "rfm_segment"] = new_segment
    env.export(frame, run_id="exec-2")

    endpoint = endpoint_id(frame.loc[customer, "customer_id"], "EMAIL")
    stored = env.client.get_endpoint(ApplicationId=env.app, EndpointId=endpoint)["EndpointResponse"]
    assert stored["User"]["UserAttributes"]["RFMSegment"] == [new_segment]
    assert env.fake.endpoints_changed - before == 2  # that customer's EMAIL and SMS endpoints, nothing else
    assert env.fake.endpoint_count(env.app) == endpoints(frame)[0].num_rows


def test_existing_segments_are_found_by_name_and_fixed(env: Env) -> None:
    wrong = {"UserAttributes": {"RFMSegment": {"AttributeType": "INCLUSIVE", "Values": ["Loyal"]}}}
    env.client.create_segment(
        ApplicationId=env.app, WriteSegmentRequest={"Name": "RFM segment: Champions", "Dimensions": wrong}
    )
    for _ in range(2):
        env.client.create_segment(
            ApplicationId=env.app, WriteSegmentRequest={"Name": "RFM cluster: Cluster 0", "Dimensions": wrong}
        )
    counts = env.export(segments_frame(50))

    assert counts["segments"]["updated"] == 2 and counts["segments"]["duplicates_found"] == 1
    assert (
        len(env.fake.segments[env.app]) == len(SEGMENT_NAMES) + 3 + 1
    )  # only the pre-existing duplicate extra
    champions = [s for s in env.fake.segments[env.app].values() if s["Name"] == "RFM segment: Champions"]
    assert len(champions) == 1 and champions[0]["Version"] == 2
    assert champions[0]["Dimensions"]["UserAttributes"]["RFMSegment"]["Values"] == ["Champions"]


@pytest.mark.parametrize(
    ("fault", "code"),
    [({"throttle": 4}, "TooManyRequestsException"), ({"server_errors": 3}, "InternalServerErrorException")],
)
def test_throttling_and_server_errors_are_retried_with_backoff(
    env: Env, fault: dict, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    retry, sleeps = fast_retry(max_attempts=6)
    env.fake.inject(**fault)
    counts = env.export(segments_frame(40), retry=retry)

    failures = sum(fault.values())
    assert counts["endpoints_failed"] == 0
    assert len(sleeps) == failures
    assert all(0 <= wait <= retry.max_delay for wait in sleeps)
    assert env.fake.calls["GetApp"] == failures + 1  # the first call(s) failed and were repeated


def test_throttling_beyond_the_attempts_fails_the_call(env: Env) -> None:
    retry, sleeps = fast_retry(max_attempts=3)
    env.fake.inject(throttle=10, operations=["GetSegments"])
    with pytest.raises(ClientError, match="TooManyRequestsException"):
        env.export(segments_frame(20), retry=retry)
    assert len(sleeps) == 2 and env.fake.calls["GetSegments"] == 3


def test_failed_endpoints_are_imported_again(env: Env) -> None:
    frame = segments_frame(100)
    rows, _ = endpoints(frame)
    customers = set(frame["customer_id"].iloc[[1, 2, 5]])  # customers with email and phone
    failing = [row["Id"] for row in rows.to_pylist() if row["User.UserId"] in customers]
    env.fake.inject(fail_records=failing, times=1)  # each endpoint's row fails once
    counts = env.export(frame)

    failed_once = int(frame.iloc[[1, 2, 5]][["email", "phone"]].notna().sum().sum())
    assert failed_once == 6
    assert counts["endpoints_failed"] == 0
    assert counts["endpoints_retried"] == failed_once
    assert len(counts["import_jobs"]) == 2
    assert env.fake.endpoint_count(env.app) == counts["endpoints"]


def test_endpoints_that_keep_failing_fail_the_step_with_counts(env: Env) -> None:
    frame = segments_frame(100)
    failing = frame["customer_id"].iloc[[1, 2]].tolist()
    env.fake.inject(fail_records=failing, times=99)  # by User.UserId: every row of these customers fails
    with pytest.raises(DestinationError, match=r"endpoints failed to import after 2 retry round") as caught:
        env.export(frame)

    counts = caught.value.counts
    failed = int(frame.iloc[[1, 2]][["email", "phone"]].notna().sum().sum())
    assert counts["endpoints_failed"] == failed
    assert len(counts["import_jobs"]) == 3  # the first import and two retry rounds
    assert counts["segments"]["created"] == len(SEGMENT_NAMES) + 3  # the segments were still upserted
    assert env.fake.endpoint_count(env.app) == counts["endpoints"] - failed


def test_large_exports_are_split_into_files_under_the_limit(env: Env) -> None:
    env.fake.max_file_bytes = 20_000
    frame = segments_frame(600)
    counts = env.export(frame, max_file_bytes=20_000)

    sizes = [size for _, size in ClientS3(env.storage.s3).list(env.bucket, "pinpoint-import/exec-1/")]
    assert counts["import_files"] == len(sizes) > 3
    assert max(sizes) <= 20_000
    assert env.fake.endpoint_count(env.app) == counts["endpoints"]
    assert len(counts["import_jobs"]) == 1  # one job imports every file under the folder


def test_files_over_the_service_limit_fail_the_import(env: Env) -> None:
    env.fake.max_file_bytes = 5_000
    with pytest.raises(DestinationError) as caught:
        env.export(segments_frame(200), max_file_bytes=50_000)
    assert caught.value.counts["endpoints_failed"] == caught.value.counts["endpoints"]
    jobs = env.client.get_import_jobs(ApplicationId=env.app)["ImportJobsResponse"]["Item"]
    assert all(
        job["JobStatus"] == "FAILED" and "above the 5000-byte limit" in job["Failures"][0] for job in jobs
    )


def test_stale_import_files_of_an_earlier_attempt_are_removed(env: Env) -> None:
    stale = f"s3://{env.bucket}/pinpoint-import/exec-1/attempt-9/part-00000.csv"
    env.storage.write_bytes(stale, b"Id,ChannelType\nbroken,NOPE\n")
    counts = env.export(segments_frame(20))
    assert counts["endpoints_failed"] == 0 and not env.storage.exists(stale)


def test_missing_project_is_reported(env: Env) -> None:
    with pytest.raises(PipelineError, match="Pinpoint project 'nope' does not exist"):
        env.export(segments_frame(5), application_id="nope")


def test_import_folder_must_be_s3(env: Env) -> None:
    with pytest.raises(PipelineError, match="need an s3:// location"):
        pinpoint.export(
            segments_frame(5),
            client=env.client,
            storage=env.storage,
            settings=env.settings(import_prefix=None),
            output_uri="/tmp/out",
            run_id="x",
            retry=fast_retry()[0],
        )


def test_import_that_never_finishes_times_out(env: Env) -> None:
    env.fake.polls_until_done = 10_000
    ticks = iter(range(0, 10_000, 10))
    with pytest.raises(PipelineError, match=r"still PROCESSING after 30 s"):
        pinpoint.export(
            segments_frame(10),
            client=env.client,
            storage=env.storage,
            settings=env.settings(timeout_seconds=30),
            output_uri="",
            run_id="x",
            retry=fast_retry()[0],
            clock=lambda: next(ticks),
            sleep=lambda s: None,
        )


# -- the Lambda's deadline -------------------------------------------------------------------------


class ManualClock:
    """A monotonic clock that moves only when the test (or the export's ``sleep``) moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        poll_sleep(seconds)  # a little real time, so the fake's background job can run
        self.now += seconds


def test_waiting_stops_at_the_deadline_and_names_the_running_job(env: Env) -> None:
    env.fake.polls_until_done = 10_000
    clock = ManualClock()
    frame = segments_frame(40)
    with pytest.raises(DestinationError) as caught:
        pinpoint.export(
            frame,
            client=env.client,
            storage=env.storage,
            settings=env.settings(poll_seconds=5.0, timeout_seconds=600),
            output_uri="",
            run_id="x",
            retry=fast_retry()[0],
            clock=clock,
            sleep=clock.sleep,
            deadline=42.0,
        )

    counts = caught.value.counts
    (job_id,) = counts["import_jobs_running"]
    assert counts["import_jobs"] == [job_id]
    message = str(caught.value)
    assert f"stopped waiting for import job {job_id} (still PROCESSING)" in message
    assert f"--application-id {env.app} --job-id {job_id}" in message and "Pinpoint console" in message
    assert "re-running the export is safe (it is idempotent)" in message
    assert counts["endpoints_unconfirmed"] == counts["endpoints"] and counts["endpoints_failed"] == 0
    assert 42.0 <= clock.now < 42.0 + 5.0  # never slept past the deadline, and not far before it
    assert counts["segments"]["created"] == len(SEGMENT_NAMES) + 3  # segments come first: already done


class SeesImportJobs:
    """The Pinpoint client, noting when the export has seen an import job finish."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.finished = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def get_import_job(self, **kwargs: Any) -> dict:
        response = self.client.get_import_job(**kwargs)
        self.finished += response["ImportJobResponse"]["JobStatus"] in ("COMPLETED", "FAILED")
        return response


def test_no_retry_job_starts_after_the_deadline(env: Env) -> None:
    frame = segments_frame(60)
    failing = frame["customer_id"].iloc[[1, 2]].tolist()
    env.fake.inject(fail_records=failing, times=99)
    watched = SeesImportJobs(env.client)
    with pytest.raises(DestinationError, match=r"no time left to import again the 4 endpoints that failed"):
        pinpoint.export(
            frame,
            client=watched,
            storage=env.storage,
            settings=env.settings(),
            output_uri="",
            run_id="x",
            retry=fast_retry()[0],
            clock=lambda: 100.0 if watched.finished else 0.0,  # time runs out as the first job ends
            sleep=poll_sleep,
            deadline=50.0,
        )
    assert env.fake.calls["CreateImportJob"] == 1


def test_retry_waits_while_polling_stop_at_the_deadline(env: Env) -> None:
    env.fake.polls_until_done = 10_000
    env.fake.inject(throttle=1_000, operations=["GetImportJob"])
    clock = ManualClock()
    retry = RetryPolicy(max_attempts=8, base_delay=4.0, sleep=clock.sleep, random=lambda: 0.99)  # ~4, 8, 16 s
    with pytest.raises(DestinationError, match=r"stopped waiting for import job \S+ \(still [A-Z]+\)") as caught:
        pinpoint.export(
            segments_frame(10),
            client=env.client,
            storage=env.storage,
            settings=env.settings(poll_seconds=5.0, timeout_seconds=600),
            output_uri="",
            run_id="x",
            retry=retry,
            clock=clock,
            sleep=clock.sleep,
            deadline=20.0,
        )
    assert clock.now == pytest.approx(5.0 + 3.96 + 7.92)  # the 15.84 s wait would have ended past 20 s
    assert env.fake.calls["GetImportJob"] == 3
    assert caught.value.counts["endpoints_unconfirmed"] == caught.value.counts["endpoints"]


def test_without_a_deadline_only_the_import_timeout_bounds_the_wait(env: Env) -> None:
    env.fake.polls_until_done = 10_000
    clock = ManualClock()
    with pytest.raises(PipelineError, match=r"still PROCESSING after 900 s"):
        env.export(segments_frame(10), timeout_seconds=900, poll_seconds=100.0, clock=clock, sleep=clock.sleep)
    assert clock.now > 900


# -- cluster segments named after the cluster --------------------------------------------------------


def named_clusters(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    frame = frame.copy()
    frame["cluster_name"] = np.array(names, dtype=object)[frame["cluster"].to_numpy()]
    return frame


def pinpoint_segments(env: Env) -> dict[str, dict]:
    return {s["Name"]: s for s in env.fake.segments[env.app].values()}


def test_cluster_segments_are_named_after_the_cluster_and_select_it(env: Env) -> None:
    names = ["Recent frequent high spenders", "Lapsed one-time low spenders", "Recent one-time mid spenders"]
    frame = named_clusters(segments_frame(90), names)
    env.export(frame)

    segments = pinpoint_segments(env)
    rows, _ = endpoints(frame)
    for cluster, name in enumerate(names):
        segment = segments[f"RFM cluster: {name}"]
        assert segment["Dimensions"]["UserAttributes"]["ClusterName"]["Values"] == [name]
        assert env.fake.segment_size(env.app, segment) == int(
            (rows.column("User.UserAttributes.Cluster").to_numpy(zero_copy_only=False) == str(cluster)).sum()
        )
    assert not [name for name in segments if name.startswith("RFM cluster: ") and name[-1].isdigit()]


def test_long_and_clashing_cluster_names_stay_unique_and_within_pinpoints_limits(env: Env) -> None:
    long = "Recent frequent high spenders who also " + "buy a lot " * 12  # 159 characters
    frame = named_clusters(segments_frame(90), [long + "(Champions)", long + "(Loyal)", "Tab\tin name"])
    counts = env.export(frame)

    assert counts["endpoints_failed"] == 0  # the fake refuses attribute values over 100 characters
    wanted = desired_segments(frame)
    cluster_segments = {name: d for name, d in wanted.items() if name.startswith("RFM cluster: ")}
    values = [d["UserAttributes"]["ClusterName"]["Values"][0] for d in cluster_segments.values()]
    assert len(cluster_segments) == len(set(values)) == 3
    assert all(len(name) <= 100 for name in cluster_segments) and all(len(v) <= 100 for v in values)
    assert "RFM cluster: Tab in name" in cluster_segments
    rows, _ = endpoints(frame)
    assert set(rows.column("User.UserAttributes.ClusterName").to_pylist()) == set(values)
    for name in cluster_segments:  # each segment selects exactly its cluster's endpoints
        cluster = values.index(wanted[name]["UserAttributes"]["ClusterName"]["Values"][0])
        assert env.fake.segment_size(env.app, pinpoint_segments(env)[name]) == int(
            (rows.column("User.UserAttributes.Cluster").to_numpy(zero_copy_only=False) == str(cluster)).sum()
        )


def test_segments_named_by_cluster_number_by_an_earlier_version_are_renamed_once(env: Env) -> None:
    old = {"UserAttributes": {"Cluster": {"AttributeType": "INCLUSIVE", "Values": ["0"]}}}
    created = env.client.create_segment(
        ApplicationId=env.app, WriteSegmentRequest={"Name": "RFM cluster: 0", "Dimensions": old}
    )["SegmentResponse"]
    frame = segments_frame(60)
    first = env.export(frame)
    again = env.export(frame, run_id="exec-2")

    assert first["segments"]["renamed"] == 1 and first["segments"]["created"] == len(SEGMENT_NAMES) + 2
    assert again["segments"] == {
        "created": 0, "updated": 0, "unchanged": len(SEGMENT_NAMES) + 3, "renamed": 0, "duplicates_found": 0
    }
    segments = pinpoint_segments(env)
    assert len(segments) == len(SEGMENT_NAMES) + 3 and "RFM cluster: 0" not in segments
    renamed = segments["RFM cluster: Cluster 0"]
    assert renamed["Id"] == created["Id"]  # the same segment: campaigns that use it keep it
    assert renamed["Dimensions"]["UserAttributes"] == {
        "ClusterName": {"AttributeType": "INCLUSIVE", "Values": ["Cluster 0"]}
    }


def test_a_cluster_named_like_an_old_numeric_segment_does_not_take_another_clusters_segment(env: Env) -> None:
    old = {"UserAttributes": {"Cluster": {"AttributeType": "INCLUSIVE", "Values": ["0"]}}}
    env.client.create_segment(ApplicationId=env.app, WriteSegmentRequest={"Name": "RFM cluster: 0", "Dimensions": old})
    frame = named_clusters(segments_frame(60), ["Big spenders", "0", "Lapsed"])  # cluster 1 is called "0"
    counts = env.export(frame)

    assert counts["segments"]["renamed"] == 0 and counts["segments"]["updated"] == 1  # taken by its name
    segments = pinpoint_segments(env)
    assert len(segments) == len(SEGMENT_NAMES) + 3
    assert segments["RFM cluster: 0"]["Dimensions"]["UserAttributes"]["ClusterName"]["Values"] == ["0"]
    assert "RFM cluster: Big spenders" in segments


def test_a_cluster_with_two_names_is_refused_before_anything_is_written(env: Env) -> None:
    frame = segments_frame(30)
    frame.loc[0, "cluster_name"] = "Another name"
    with pytest.raises(PipelineError, match=r"cluster\(s\) 0 have more than one cluster_name"):
        env.export(frame)
    assert env.fake.calls["CreateImportJob"] == 0 and not env.fake.segments[env.app]


# -- end of support ---------------------------------------------------------------------------------


def test_a_pinpoint_that_refuses_names_its_end_of_support_and_the_successor_in_one_line(env: Env) -> None:
    env.fake.end_of_support = True
    with pytest.raises(DestinationError) as caught:
        env.export(segments_frame(5))
    message = str(caught.value)
    assert "\n" not in message
    assert "Amazon Pinpoint refused GetApp (ForbiddenException, HTTP 403)" in message
    assert "AWS ended support for Pinpoint's engagement features" in message and "2026-10-30" in message
    assert "customer-profiles destination (Amazon Connect Customer Profiles" in message
    assert "Amazon Connect outbound campaigns" in message
    assert caught.value.counts == {"end_of_support": True}
    assert sum(env.fake.calls.values()) == 1  # stops at the first refusal


def test_an_unreachable_pinpoint_endpoint_is_reported_the_same_way(env: Env) -> None:
    unreachable = client("pinpoint", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(DestinationError, match=r"Amazon Pinpoint's endpoint cannot be reached: AWS ended support"):
        pinpoint.export(segments_frame(3), client=unreachable, storage=env.storage, settings=env.settings(),
                        output_uri=f"s3://{env.bucket}/out", run_id="e", retry=fast_retry(1)[0])


def test_endpoints_of_departed_customers_and_dropped_channels_are_retired(env: Env) -> None:
    before = segments_frame(30)
    env.export(before)
    env.fake.wait_for_jobs()
    after = before.drop(index=[1]).copy()  # customer 1 (an email and a phone) left
    after.loc[2, "phone"] = None  # customer 2 dropped their phone: the SMS endpoint must stop matching
    send = pd.Series(after.index == 2, index=after.index)
    counts = pinpoint.export(after, client=env.client, storage=env.storage, settings=env.settings(),
                             output_uri=f"s3://{env.bucket}/out", run_id="exec-2", retry=fast_retry()[0],
                             sleep=poll_sleep, send=send, previous=before)
    env.fake.wait_for_jobs()
    assert (counts["customers"], counts["customers_unchanged"], counts["endpoints_retired"]) == (1, 28, 3)
    for customer, channel in ((before.loc[1, "customer_id"], "EMAIL"), (before.loc[1, "customer_id"], "SMS"),
                              (before.loc[2, "customer_id"], "SMS")):
        endpoint = env.fake.store.get(env.app, pinpoint.endpoint_id(customer, channel))
        assert endpoint["User.UserAttributes.RFMSegment"] == [pinpoint.RETIRED_VALUE], (customer, channel)
    kept = env.fake.store.get(env.app, pinpoint.endpoint_id(before.loc[2, "customer_id"], "EMAIL"))
    assert kept["User.UserAttributes.RFMSegment"] == [before.loc[2, "rfm_segment"]]
    for name, dimensions in pinpoint.desired_segments(after).items():
        if name.startswith("RFM segment: "):
            members = after[after["rfm_segment"] == name.removeprefix("RFM segment: ")]
            expected = int(members["email"].notna().sum() + members["phone"].notna().sum())
            assert env.fake.store.segment_size(env.app, dimensions) == expected, name
