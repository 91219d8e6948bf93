"""The Customer Profiles destination against the Customer Profiles fake."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest

from lambdas.export.config import CustomerProfilesSettings
from lambdas.export.destinations import DestinationError, customer_profiles
from lambdas.export.destinations.customer_profiles import object_type_definition, profile_objects
from lambdas.export.retry import RetryPolicy
from lambdas.export.storage import Storage
from lambdas.fakes import CustomerProfilesFake
from steps.errors import PipelineError
from steps.segments import SEGMENT_NAMES
from tests.export_support import Sleeps, fast_retry, running_customer_profiles, segments_frame

DOMAIN = "rfm-test"


@dataclass
class Env:
    fake: CustomerProfilesFake
    client: Any

    def export(self, segments: pd.DataFrame, retry: Any = None, rounds: int = 2, **overrides: Any) -> dict:
        settings = CustomerProfilesSettings(**{"domain": DOMAIN, "concurrency": 4, **overrides})
        return customer_profiles.export(
            segments,
            client=self.client,
            settings=settings,
            retry=retry or fast_retry()[0],
            record_retry_rounds=rounds,
        )


@pytest.fixture
def env() -> Iterator[Env]:
    with running_customer_profiles(DOMAIN) as (fake, profiles):
        yield Env(fake, profiles)


def expected_attributes(row: pd.Series) -> dict[str, str]:
    return {
        "rfm_segment": row["rfm_segment"],
        "rfm_cluster": str(row["cluster"]),
        "rfm_cluster_name": row["cluster_name"],
        "rfm_r_score": str(row["r_score"]),
        "rfm_f_score": str(row["f_score"]),
        "rfm_m_score": str(row["m_score"]),
        "rfm_recency_days": str(row["recency_days"]),
        "rfm_frequency": str(row["frequency"]),
        "rfm_monetary": str(row["monetary"]),
    }


def test_every_customer_gets_one_profile_with_its_attributes(env: Env) -> None:
    frame = segments_frame(120)
    counts = env.export(frame)

    assert counts["customers"] == counts["profiles_upserted"] == 120
    assert (counts["records_failed"], counts["object_type"]) == (0, "created")
    assert counts["segment_definitions"] == {"kinds": ["segments", "clusters"], "created": len(SEGMENT_NAMES) + 3,
                                             "replaced": 0, "unchanged": 0, "left_in_place": []}
    assert len(env.fake.profiles[DOMAIN]) == 120
    for _, row in frame.sample(10, random_state=0).iterrows():
        profile = env.fake.find_profile(DOMAIN, row["customer_id"])
        assert profile["AccountNumber"] == row["customer_id"]
        assert profile["Attributes"] == expected_attributes(row)
        assert "EmailAddress" not in profile  # contacts are not mapped unless asked for
    found = env.client.search_profiles(
        DomainName=DOMAIN, KeyName="_account", Values=[frame["customer_id"][3]]
    )
    assert [p["AccountNumber"] for p in found["Items"]] == [frame["customer_id"][3]]


def test_segment_definitions_select_the_segment(env: Env) -> None:
    frame = segments_frame(200)
    env.export(frame)

    champions = env.client.get_segment_definition(DomainName=DOMAIN, SegmentDefinitionName="rfm-champions")
    assert champions["DisplayName"] == "RFM segment: Champions"
    assert env.fake.segment_size(DOMAIN, champions) == int((frame["rfm_segment"] == "Champions").sum())
    cluster = env.client.get_segment_definition(DomainName=DOMAIN, SegmentDefinitionName="rfm-cluster-1")
    assert env.fake.segment_size(DOMAIN, cluster) == int((frame["cluster"] == 1).sum())
    names = {
        d["SegmentDefinitionName"] for d in env.client.list_segment_definitions(DomainName=DOMAIN)["Items"]
    }
    assert "rfm-cant-lose-them" in names and len(names) == len(SEGMENT_NAMES) + 3


def test_rerun_creates_no_duplicate_profiles_objects_or_definitions(env: Env) -> None:
    frame = segments_frame(80)
    env.export(frame)
    changed = env.fake.profiles_changed
    again = env.export(frame)

    assert again["object_type"] == "unchanged"
    assert again["segment_definitions"] == {"kinds": ["segments", "clusters"], "created": 0, "replaced": 0,
                                            "unchanged": len(SEGMENT_NAMES) + 3, "left_in_place": []}
    assert len(env.fake.profiles[DOMAIN]) == 80
    assert len(env.fake.objects[DOMAIN]["RFMSegmentAssignment"]) == 80  # UNIQUE key: replaced, not added
    assert env.fake.profiles_changed == changed
    assert env.fake.calls["PutProfileObjectType"] == 1 and env.fake.calls["CreateSegmentDefinition"] == 13


def test_an_existing_profile_is_updated_not_duplicated(env: Env) -> None:
    frame = segments_frame(10)
    customer = frame["customer_id"][4]
    env.client.create_profile(
        DomainName=DOMAIN, AccountNumber=customer, FirstName="Ada", Attributes={"loyalty_tier": "gold"}
    )
    env.export(frame)

    matches = env.client.search_profiles(DomainName=DOMAIN, KeyName="_account", Values=[customer])["Items"]
    assert len(matches) == 1 and len(env.fake.profiles[DOMAIN]) == 10
    assert matches[0]["FirstName"] == "Ada"
    assert matches[0]["Attributes"] == {"loyalty_tier": "gold", **expected_attributes(frame.iloc[4])}


def test_a_changed_customer_changes_only_its_profile(env: Env) -> None:
    frame = segments_frame(30)
    env.export(frame)
    before = env.fake.profiles_changed
    frame.loc[7, "cluster"] = 2 if frame.loc[7, "cluster"] != 2 else 0
    env.export(frame)

    assert env.fake.profiles_changed - before == 1
    assert env.fake.find_profile(DOMAIN, frame["customer_id"][7])["Attributes"]["rfm_cluster"] == str(
        frame.loc[7, "cluster"]
    )


def test_changed_definitions_are_replaced(env: Env) -> None:
    env.client.create_segment_definition(
        DomainName=DOMAIN,
        SegmentDefinitionName="rfm-champions",
        DisplayName="old name",
        SegmentGroups={
            "Groups": [
                {
                    "Dimensions": [
                        {
                            "ProfileAttributes": {
                                "Attributes": {
                                    "rfm_segment": {"DimensionType": "INCLUSIVE", "Values": ["Loyal"]}
                                }
                            }
                        }
                    ],
                    "Type": "ALL",
                }
            ],
            "Include": "ALL",
        },
    )
    counts = env.export(segments_frame(20))

    assert counts["segment_definitions"]["replaced"] == 1
    current = env.client.get_segment_definition(DomainName=DOMAIN, SegmentDefinitionName="rfm-champions")
    assert current["DisplayName"] == "RFM segment: Champions"


@pytest.mark.parametrize(
    ("fault", "code"),
    [({"throttle": 5}, "ThrottlingException"), ({"server_errors": 3}, "InternalServerException")],
)
def test_throttling_and_server_errors_are_retried(env: Env, fault: dict, code: str) -> None:
    retry, sleeps = fast_retry(max_attempts=8)
    env.fake.inject(**fault, operations=["PutProfileObject"])
    counts = env.export(segments_frame(40), retry=retry)

    assert counts["records_failed"] == 0 and counts["profiles_upserted"] == 40
    assert len(sleeps) == sum(fault.values())
    assert env.fake.calls["PutProfileObject"] == 40 + sum(fault.values())


def test_failed_records_are_collected_and_retried(env: Env) -> None:
    frame = segments_frame(50)
    failing = frame["customer_id"][[3, 9, 27]].tolist()
    env.fake.inject(fail_records=failing, times=1)  # 400: not retried per call, but in the next round
    counts = env.export(frame)

    assert counts["records_failed"] == 0 and counts["records_retried"] == 3
    assert all(env.fake.find_profile(DOMAIN, customer) for customer in failing)


def test_records_that_keep_failing_fail_the_step_with_counts(env: Env) -> None:
    env.fake.record_error = ("InternalServerException", 500)
    frame = segments_frame(50)
    failing = frame["customer_id"][[1, 2]].tolist()
    env.fake.inject(fail_records=failing, times=1_000)
    retry, sleeps = fast_retry(max_attempts=2)
    with pytest.raises(
        DestinationError,
        match=r"2 of 50 customer profiles failed after 1 retry round.*"
        r"InternalServerException: 2",
    ) as caught:
        env.export(frame, retry=retry, rounds=1)

    counts = caught.value.counts
    assert counts["records_failed"] == 2 and counts["profiles_upserted"] == 48
    assert counts["failures_by_code"] == {"InternalServerException": 2}
    assert len(sleeps) == 2 * 2  # per customer and round: one retry after the first 500
    assert counts["segment_definitions"]["created"] == len(SEGMENT_NAMES) + 3
    assert failing[0] not in str(caught.value)  # counts only, no customer ids in the message


def test_missing_domain_is_reported(env: Env) -> None:
    with pytest.raises(PipelineError, match="Customer Profiles domain 'nope' does not exist"):
        env.export(segments_frame(3), domain="nope")


def test_contacts_are_mapped_when_asked(env: Env) -> None:
    frame = segments_frame(30)
    counts = env.export(frame, map_contacts=True)

    assert (
        counts["customers_without_contact"] == int((frame["email"].isna() & frame["phone"].isna()).sum()) == 3
    )
    row = frame.iloc[1]
    profile = env.fake.find_profile(DOMAIN, row["customer_id"])
    assert (profile["EmailAddress"], profile["PhoneNumber"]) == (row["email"], row["phone"])
    assert "EmailAddress" not in env.fake.find_profile(
        DOMAIN, frame["customer_id"][0]
    )  # no contact: untouched
    fields = object_type_definition(CustomerProfilesSettings(domain=DOMAIN, map_contacts=True))["Fields"]
    assert fields["email"]["Target"] == "_profile.EmailAddress"


def test_objects_keep_ids_exactly_and_leave_out_missing_values() -> None:
    frame = segments_frame(3)
    frame["customer_id"] = [" 007", "1e3", "x" * 300]
    frame.loc[1, "cluster_name"] = None
    objects = profile_objects(frame, CustomerProfilesSettings(domain=DOMAIN))

    decoded = [json.loads(text) for _, text in objects]
    assert [key for key, _ in objects] == [" 007", "1e3", "x" * 300]
    assert decoded[0]["customer_id"] == " 007" and "cluster_name" not in decoded[1]
    assert all(len(value) <= 255 for body in decoded for key, value in body.items() if key != "customer_id")


def test_the_fake_rejects_what_the_service_rejects(env: Env) -> None:
    from botocore.exceptions import ClientError

    env.client.put_profile_object_type(
        DomainName=DOMAIN,
        ObjectTypeName="T",
        Description="d",
        **{
            k: v
            for k, v in object_type_definition(CustomerProfilesSettings(domain=DOMAIN)).items()
            if k != "Description"
        },
    )
    with pytest.raises(ClientError, match="lacks the key fields"):
        env.client.put_profile_object(
            DomainName=DOMAIN, ObjectTypeName="T", Object='{"rfm_segment": "Loyal"}'
        )
    with pytest.raises(ClientError, match="must be 1..255 characters"):
        env.client.put_profile_object(
            DomainName=DOMAIN,
            ObjectTypeName="T",
            Object=json.dumps({"customer_id": "1", "rfm_segment": "x" * 256}),
        )
    with pytest.raises(ClientError, match="not a profile field"):
        env.client.put_profile_object_type(
            DomainName=DOMAIN,
            ObjectTypeName="U",
            Description="d",
            Fields={"a": {"Source": "_source.a", "Target": "_profile.Nope"}},
        )
    with pytest.raises(ClientError, match="'segmentDefinitionName' failed to satisfy constraint: .* pattern"):
        env.client.create_segment_definition(
            DomainName=DOMAIN,
            SegmentDefinitionName="has space",
            DisplayName="x",
            SegmentGroups={"Groups": [], "Include": "ALL"},
        )
    with pytest.raises(env.client.exceptions.ResourceNotFoundException):
        env.client.get_segment_definition(DomainName=DOMAIN, SegmentDefinitionName="missing")


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["Can't Lose Them", "Cant Lose Them"], "segment names share a slug: \"Can't Lose Them\", 'Cant Lose Them'"),
        (["Loyal", "Cluster 1"], "the RFM segment 'Cluster 1' and cluster 1 share the segment definition name"),
    ],
)
def test_segment_names_that_would_share_a_definition_are_refused_before_anything_is_written(
    env: Env, names: list[str], message: str
) -> None:
    frame = segments_frame(40)
    frame["rfm_segment"] = [names[i % 2] for i in range(len(frame))]
    with pytest.raises(PipelineError, match=message.replace("(", r"\(")):
        env.export(frame)
    assert not env.fake.profiles.get(DOMAIN) and not env.fake.definitions.get(DOMAIN)


# -- the Lambda's deadline -------------------------------------------------------------------------


def test_puts_stop_at_the_deadline_and_say_how_many_profiles_were_written(env: Env) -> None:
    frame = segments_frame(50)
    settings = CustomerProfilesSettings(domain=DOMAIN, concurrency=4)
    with pytest.raises(DestinationError) as caught:
        customer_profiles.export(
            frame, client=env.client, settings=settings, retry=fast_retry()[0],
            clock=lambda: float(env.fake.calls.get("PutProfileObject", 0)),  # one second per put
            deadline=10.0,  # reached after 10 puts (a few more may be in flight on the 4 threads)
        )

    counts = caught.value.counts
    written = env.fake.calls["PutProfileObject"]
    assert 10 <= written < 10 + 4
    assert (counts["profiles_upserted"], counts["profiles_not_written"], counts["customers"]) == (
        written, 50 - written, 50)
    assert counts["segment_definitions"]["created"] == len(SEGMENT_NAMES) + 3  # put before the objects
    message = str(caught.value)
    assert "stopped at the deadline" in message and f"{written} of 50 customer profiles were written" in message
    assert "Re-run the export (retry the pipeline execution): it resumes where this one stopped" in message

    counts = env.export(frame)  # no deadline: everything, and nothing twice
    assert counts["profiles_upserted"] == 50 and counts["profiles_not_written"] == 0
    assert len(env.fake.profiles[DOMAIN]) == 50


def test_a_retry_that_would_wait_past_the_deadline_is_not_made(env: Env) -> None:
    env.fake.inject(throttle=1_000, operations=["PutProfileObject"])
    sleeps = Sleeps()
    retry = RetryPolicy(max_attempts=8, base_delay=1.0, sleep=sleeps, random=lambda: 0.5)  # waits 0.5 s, 1 s, ...
    with pytest.raises(DestinationError, match=r"0 of 20 customer profiles were written, 20 were not") as caught:
        customer_profiles.export(
            segments_frame(20), client=env.client, settings=CustomerProfilesSettings(domain=DOMAIN, concurrency=4),
            retry=retry, clock=lambda: 0.0, deadline=0.3,
        )
    assert sleeps == [] and env.fake.calls["PutProfileObject"] == 20  # one attempt each, no retry
    assert caught.value.counts["profiles_not_written"] == 20


# -- at scale: a checkpoint to resume from, ids checked up front ------------------------------------


def stop_after(env: Env, puts: int) -> dict[str, Any]:
    """Deadline options that stop the puts after about ``puts`` calls (one clock second per put)."""
    start = env.fake.calls.get("PutProfileObject", 0)
    return {"clock": lambda: float(env.fake.calls.get("PutProfileObject", 0) - start), "deadline": float(puts)}


@pytest.mark.parametrize("chunk", [7, 1000])
def test_a_large_audience_completes_across_invocations_from_the_checkpoint(env: Env, tmp_path, chunk: int) -> None:
    frame = segments_frame(60)
    settings = CustomerProfilesSettings(domain=DOMAIN, concurrency=2)
    checkpoint = customer_profiles.Checkpoint(Storage(), str(tmp_path / "checkpoints" / "customer-profiles.json"))
    invocations = 0
    while True:
        invocations += 1
        assert invocations < 20
        try:
            counts = customer_profiles.export(frame, client=env.client, settings=settings, retry=fast_retry()[0],
                                              checkpoint=checkpoint, checkpoint_every=chunk, **stop_after(env, 15))
            break
        except DestinationError as stopped:
            assert "resumes where this one stopped" in str(stopped)
    assert invocations >= 4  # 60 customers, about 15 puts per invocation
    assert len(env.fake.profiles[DOMAIN]) == 60
    # every customer put once, plus only the puts in flight when a deadline came (at most 2 threads each)
    assert env.fake.calls["PutProfileObject"] <= 60 + 2 * (invocations - 1)
    assert counts["profiles_already_written"] + counts["profiles_upserted"] == 60
    again = customer_profiles.export(frame, client=env.client, settings=settings, retry=fast_retry()[0],
                                     checkpoint=checkpoint, checkpoint_every=chunk)
    assert again["profiles_upserted"] == 0 and again["profiles_already_written"] == 60  # nothing left to do


def test_a_checkpoint_of_other_work_is_not_resumed(env: Env, tmp_path) -> None:
    checkpoint = customer_profiles.Checkpoint(Storage(), str(tmp_path / "checkpoint.json"))
    settings = CustomerProfilesSettings(domain=DOMAIN, concurrency=2)
    customer_profiles.export(segments_frame(30), client=env.client, settings=settings, retry=fast_retry()[0],
                             checkpoint=checkpoint)
    other = segments_frame(30, seed=5)  # same customers, other segments
    counts = customer_profiles.export(other, client=env.client, settings=settings, retry=fast_retry()[0],
                                      checkpoint=checkpoint)
    assert counts["profiles_upserted"] == 30 and counts["profiles_already_written"] == 0


def test_ids_too_long_for_a_profile_key_are_reported_before_anything_is_written(env: Env) -> None:
    frame = segments_frame(10)
    frame.loc[3, "customer_id"] = "x" * 256
    frame.loc[7, "customer_id"] = "y" * 300
    with pytest.raises(DestinationError, match=r"2 customer id\(s\) are longer than 255 characters \(the longest "
                                               r"has 300, at row 8 of segments.parquet\)") as caught:
        env.export(frame)
    assert "\n" not in str(caught.value)
    assert caught.value.counts["customer_ids_too_long"] == 2
    assert "PutProfileObject" not in env.fake.calls and "PutProfileObjectType" not in env.fake.calls


def test_departed_customers_lose_their_rfm_attributes_but_keep_their_profile(env: Env) -> None:
    frame = segments_frame(20)
    env.fake.op_CreateProfile({"AccountNumber": "other", "FirstName": "Kept"}, {}, DOMAIN)
    env.export(frame)
    gone = frame["customer_id"][:3].tolist()
    counts = customer_profiles.export(
        frame.iloc[3:], client=env.client, settings=CustomerProfilesSettings(domain=DOMAIN, concurrency=2),
        retry=fast_retry()[0], send=pd.Series(False, index=frame.index[3:]), left_ids=[*gone, "never-exported"])
    assert (counts["profiles_cleared"], counts["profiles_to_clear_not_found"], counts["profiles_upserted"]) == (3, 1, 0)
    for customer in gone:
        profile = env.fake.find_profile(DOMAIN, customer)
        assert profile["AccountNumber"] == customer and not profile["Attributes"]
    assert env.fake.find_profile(DOMAIN, frame["customer_id"][3])["Attributes"]["rfm_segment"]
    assert env.fake.find_profile(DOMAIN, "other")["FirstName"] == "Kept"
