"""Outbound campaign audiences: the Customer Profiles segment definitions, against the Customer Profiles fake.

What the setting chooses (``segments``, ``clusters``, both, none), create-or-update without an update
call, definitions left in place, ``ListSegmentDefinitions`` paging, and a refused call as one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest

from lambdas.export.config import CustomerProfilesSettings, ExportSettings, parse_definition_kinds
from lambdas.export.destinations import DestinationError, customer_profiles
from lambdas.export.destinations.profile_segments import (
    CLUSTER_DESCRIPTION,
    SEGMENT_DESCRIPTION,
    cluster_definition_name,
    segment_definition_name,
    segment_definitions,
)
from lambdas.fakes import CustomerProfilesFake
from steps.errors import PipelineError
from steps.segments import SEGMENT_NAMES
from tests.export_support import fast_retry, running_customer_profiles, segments_frame

DOMAIN = "rfm-audiences"
DEFINITION_CALLS = ("ListSegmentDefinitions", "GetSegmentDefinition", "CreateSegmentDefinition",
                    "DeleteSegmentDefinition")


@dataclass
class Env:
    fake: CustomerProfilesFake
    client: Any

    def export(self, frame: pd.DataFrame, kinds: tuple[str, ...] = ("segments", "clusters"),
               retry: Any = None) -> dict[str, Any]:
        settings = CustomerProfilesSettings(domain=DOMAIN, concurrency=2, segment_definitions=kinds)
        return customer_profiles.export(frame, client=self.client, settings=settings,
                                        retry=retry or fast_retry()[0])

    def calls(self) -> dict[str, int]:
        return {name: self.fake.calls.get(name, 0) for name in DEFINITION_CALLS}

    def names(self) -> set[str]:
        return set(self.fake.definitions[DOMAIN])

    def hand_made(self, name: str, description: str = "made by a marketer", value: str = "Loyal") -> None:
        self.client.create_segment_definition(
            DomainName=DOMAIN, SegmentDefinitionName=name, DisplayName=name, Description=description,
            SegmentGroups={"Groups": [{"Dimensions": [{"ProfileAttributes": {"Attributes": {
                "rfm_segment": {"DimensionType": "INCLUSIVE", "Values": [value]}}}}], "Type": "ALL"}],
                "Include": "ALL"})


@pytest.fixture
def env() -> Iterator[Env]:
    with running_customer_profiles(DOMAIN) as (fake, profiles):
        yield Env(fake, profiles)


def test_one_definition_per_segment_selects_exactly_that_segment(env: Env) -> None:
    frame = segments_frame(150, clusters=3)
    counts = env.export(frame)["segment_definitions"]

    assert counts["created"] == len(SEGMENT_NAMES) + 3 and counts["left_in_place"] == []
    assert env.calls() == {"ListSegmentDefinitions": 1, "GetSegmentDefinition": 0,
                           "CreateSegmentDefinition": len(SEGMENT_NAMES) + 3, "DeleteSegmentDefinition": 0}
    for segment in SEGMENT_NAMES:
        definition = env.client.get_segment_definition(DomainName=DOMAIN,
                                                       SegmentDefinitionName=segment_definition_name(segment))
        assert definition["DisplayName"] == f"RFM segment: {segment}"
        assert env.fake.segment_size(DOMAIN, definition) == int((frame["rfm_segment"] == segment).sum()), segment
    for cluster in range(3):
        definition = env.client.get_segment_definition(DomainName=DOMAIN,
                                                       SegmentDefinitionName=cluster_definition_name(cluster))
        assert env.fake.segment_size(DOMAIN, definition) == int((frame["cluster"] == cluster).sum())
    # What an outbound campaign's source takes: the definition's ARN, from its name.
    champions = env.client.get_segment_definition(DomainName=DOMAIN, SegmentDefinitionName="rfm-champions")
    assert champions["SegmentDefinitionArn"].endswith(f":domains/{DOMAIN}/segment-definitions/rfm-champions")


def test_a_second_run_reads_and_leaves_every_definition_alone(env: Env) -> None:
    frame = segments_frame(60)
    env.export(frame)
    before = env.calls()
    counts = env.export(frame)["segment_definitions"]

    wanted = len(segment_definitions(frame))
    assert (counts["created"], counts["replaced"], counts["unchanged"]) == (0, 0, wanted)
    spent = {name: env.calls()[name] - before[name] for name in DEFINITION_CALLS}
    assert spent == {"ListSegmentDefinitions": 1, "GetSegmentDefinition": wanted, "CreateSegmentDefinition": 0,
                     "DeleteSegmentDefinition": 0}


@pytest.mark.parametrize("edit", ["description", "filter"])
def test_a_changed_definition_is_deleted_and_created_again_under_its_name(env: Env, edit: str) -> None:
    frame = segments_frame(60)
    env.export(frame)
    arn = env.client.get_segment_definition(DomainName=DOMAIN, SegmentDefinitionName="rfm-loyal")[
        "SegmentDefinitionArn"]
    env.client.delete_segment_definition(DomainName=DOMAIN, SegmentDefinitionName="rfm-loyal")
    if edit == "description":  # e.g. edited by hand
        env.hand_made("rfm-loyal", description=f"{SEGMENT_DESCRIPTION}Loyal (edited)")
    else:  # the filter selects another segment
        env.hand_made("rfm-loyal", description=f"{SEGMENT_DESCRIPTION}Loyal", value="Champions")
    before = env.calls()
    counts = env.export(frame)["segment_definitions"]

    assert (counts["replaced"], counts["created"]) == (1, 0)
    assert env.calls()["DeleteSegmentDefinition"] - before["DeleteSegmentDefinition"] == 1
    current = env.client.get_segment_definition(DomainName=DOMAIN, SegmentDefinitionName="rfm-loyal")
    assert current["Description"] == f"{SEGMENT_DESCRIPTION}Loyal" and current["SegmentDefinitionArn"] == arn
    assert env.fake.segment_size(DOMAIN, current) == int((frame["rfm_segment"] == "Loyal").sum())


def test_with_the_setting_off_no_definition_call_is_made_and_the_profiles_are_written(env: Env) -> None:
    frame = segments_frame(40)
    counts = env.export(frame, kinds=())

    assert counts["segment_definitions"] == {"kinds": []}
    assert env.calls() == dict.fromkeys(DEFINITION_CALLS, 0)
    assert counts["profiles_upserted"] == 40 and len(env.fake.profiles[DOMAIN]) == 40


def test_segments_only_then_clusters_only(env: Env) -> None:
    frame = segments_frame(80, clusters=3)
    env.export(frame, kinds=("segments",))
    assert env.names() == {segment_definition_name(s) for s in SEGMENT_NAMES}

    counts = env.export(frame, kinds=("clusters",))["segment_definitions"]
    assert counts["created"] == 3 and counts["unchanged"] == 0
    # The segments' definitions are not wanted any more: left in place (a campaign may use them), and listed.
    assert counts["left_in_place"] == sorted(segment_definition_name(s) for s in SEGMENT_NAMES)
    assert env.names() == {*counts["left_in_place"], "rfm-cluster-0", "rfm-cluster-1", "rfm-cluster-2"}


def test_definitions_of_segments_and_clusters_that_are_gone_are_left_and_listed(env: Env) -> None:
    env.export(segments_frame(80, clusters=4))
    env.hand_made("rfm-big-spenders", description=f"{SEGMENT_DESCRIPTION}Big Spenders")  # a renamed segment's
    env.hand_made("rfm-vip", description="a marketer's own")  # not the export's: never listed
    env.hand_made("vip-list", description=f"{SEGMENT_DESCRIPTION}VIP")
    counts = env.export(segments_frame(80, clusters=2))["segment_definitions"]  # retrained: 2 clusters

    assert counts["left_in_place"] == ["rfm-big-spenders", "rfm-cluster-2", "rfm-cluster-3"]
    assert {"rfm-big-spenders", "rfm-cluster-2", "rfm-cluster-3", "rfm-vip", "vip-list"} <= env.names()
    assert env.fake.calls.get("DeleteSegmentDefinition", 0) == 0


def test_every_page_of_existing_definitions_is_read(env: Env) -> None:
    for number in range(230):  # more than two pages of 100 before the export's own
        env.hand_made(f"campaign-{number:03d}")
    frame = segments_frame(30)
    env.export(frame)
    assert env.calls()["ListSegmentDefinitions"] == 3

    counts = env.export(frame)["segment_definitions"]  # its own definitions are on the third page now
    assert (counts["created"], counts["unchanged"]) == (0, len(segment_definitions(frame)))
    assert env.calls()["ListSegmentDefinitions"] == 6


def test_throttled_definition_calls_are_retried(env: Env) -> None:
    retry, sleeps = fast_retry(max_attempts=5)
    env.fake.inject(throttle=2, operations=["ListSegmentDefinitions", "CreateSegmentDefinition"])
    counts = env.export(segments_frame(20), retry=retry)["segment_definitions"]

    assert counts["created"] == len(SEGMENT_NAMES) + 3 and len(sleeps) == 2


@pytest.mark.parametrize(
    ("denied", "named"),
    [
        ("ListSegmentDefinitions", "ListSegmentDefinitions in domain 'rfm-audiences' failed"),
        ("CreateSegmentDefinition",
         "CreateSegmentDefinition of the segment definition 'rfm-champions' in domain 'rfm-audiences' failed"),
    ],
)
def test_a_refused_call_is_one_line_and_the_profiles_are_still_written(env: Env, denied: str, named: str) -> None:
    env.fake.inject(deny=[denied])
    frame = segments_frame(30)
    with pytest.raises(DestinationError) as caught:
        env.export(frame)

    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"export to Amazon Connect Customer Profiles: {named}: AccessDeniedException (HTTP 403)")
    assert f"Grant the export function's role profile:{denied}" in message
    assert "CUSTOMER_PROFILES_SEGMENT_DEFINITIONS=none" in message
    counts = caught.value.counts
    assert counts["profiles_upserted"] == 30 and len(env.fake.profiles[DOMAIN]) == 30
    assert counts["segment_definitions"]["error"] in message
    assert env.fake.calls[denied] == 1  # a refusal is not retried


def test_a_replacement_whose_create_fails_says_the_definition_is_missing(env: Env) -> None:
    frame = segments_frame(30)
    env.export(frame)
    env.client.delete_segment_definition(DomainName=DOMAIN, SegmentDefinitionName="rfm-champions")
    env.hand_made("rfm-champions", description=f"{SEGMENT_DESCRIPTION}Champions", value="Loyal")
    env.fake.inject(server_errors=100, operations=["CreateSegmentDefinition"])
    with pytest.raises(DestinationError, match=r"CreateSegmentDefinition of the segment definition 'rfm-champions' "
                       r"in domain 'rfm-audiences' failed: InternalServerException \(HTTP 500\); it was deleted to "
                       r"be replaced and is missing until a re-run creates it\. Look the definition up") as caught:
        env.export(frame, retry=fast_retry(max_attempts=2)[0])
    assert "rfm-champions" not in env.names()
    assert caught.value.counts["segment_definitions"]["replaced"] == 0

    env.fake.reset_faults()
    counts = env.export(frame)["segment_definitions"]  # the re-run creates it
    assert counts["created"] == 1 and "rfm-champions" in env.names()


def test_refused_definitions_and_failed_profiles_are_reported_together(env: Env) -> None:
    env.fake.record_error = ("InternalServerException", 500)
    frame = segments_frame(20)
    env.fake.inject(deny=["ListSegmentDefinitions"], fail_records=[frame["customer_id"][2]], times=100)
    with pytest.raises(DestinationError) as caught:
        customer_profiles.export(frame, client=env.client, settings=CustomerProfilesSettings(domain=DOMAIN),
                                 retry=fast_retry(max_attempts=1)[0], record_retry_rounds=0)
    message = str(caught.value)
    assert "1 of 20 customer profiles failed after 0 retry round(s)" in message
    assert "; and ListSegmentDefinitions in domain 'rfm-audiences' failed: AccessDeniedException" in message
    assert "\n" not in message


# -- names and the setting ----------------------------------------------------------------------------


def test_a_segment_name_longer_than_a_profile_value_still_selects_its_customers(env: Env) -> None:
    frame = segments_frame(40)
    long_name = "A very long segment name, longer than a profile attribute value " * 5  # 325 characters
    frame.loc[frame.index[:7], "rfm_segment"] = long_name
    counts = env.export(frame)["segment_definitions"]

    assert counts["created"] == len(SEGMENT_NAMES) + 1 + 3
    name = segment_definition_name(long_name)
    definition = env.client.get_segment_definition(DomainName=DOMAIN, SegmentDefinitionName=name)
    assert len(definition["DisplayName"]) == 255
    assert env.fake.segment_size(DOMAIN, definition) == 7


def test_definition_names_fit_the_model_and_are_deterministic() -> None:
    frame = segments_frame(50, clusters=4)
    frame.loc[0, "rfm_segment"] = "Ünïcode & a very long segment name " * 4
    first, second = segment_definitions(frame), segment_definitions(frame.sample(frac=1, random_state=1))
    assert list(first) == list(second) and first == second
    for name, definition in first.items():
        assert 1 <= len(name) <= 64 and all(c.isalnum() or c in "_-" for c in name) and name.isascii()
        assert 1 <= len(definition["DisplayName"]) <= 255
    assert "rfm-unicode-a-very-long-segment-name-unicode-a-very-long-segment" in first  # the slug cut to 60
    descriptions = {d["Description"] for d in first.values()}
    assert f"{CLUSTER_DESCRIPTION}3" in descriptions and f"{SEGMENT_DESCRIPTION}Champions" in descriptions


def test_with_segments_only_a_segment_named_like_a_cluster_is_no_clash() -> None:
    frame = segments_frame(10)
    frame["rfm_segment"] = "Cluster 1"
    with pytest.raises(PipelineError, match="share the segment definition name 'rfm-cluster-1'"):
        segment_definitions(frame)
    assert "rfm-cluster-1" in segment_definitions(frame, ["segments"])


@pytest.mark.parametrize(
    ("value", "kinds"),
    [("", ("segments", "clusters")), ("segments", ("segments",)), (" Clusters ", ("clusters",)),
     ("clusters,segments", ("segments", "clusters")), ("none", ()), ("NONE", ())],
)
def test_the_setting(value: str, kinds: tuple[str, ...]) -> None:
    assert parse_definition_kinds(value) == kinds
    settings = ExportSettings.from_env({"CUSTOMER_PROFILES_SEGMENT_DEFINITIONS": value})
    assert settings.customer_profiles.segment_definitions == kinds


@pytest.mark.parametrize("value", ["segment", "segments,none", "all"])
def test_an_unknown_setting_is_one_line_saying_what_to_use(value: str) -> None:
    with pytest.raises(PipelineError, match=r"^export Lambda environment: CUSTOMER_PROFILES_SEGMENT_DEFINITIONS has "
                       r".*Use segments, clusters, segments,clusters \(the default\) or none\.$"):
        ExportSettings.from_env({"CUSTOMER_PROFILES_SEGMENT_DEFINITIONS": value})


# -- the stack: the setting, and the export role's grants -------------------------------------------------


def _export_role(**overrides: str) -> tuple[dict[str, Any], list[Any]]:
    from tests.deploy_support.iam import role_statements
    from tests.deploy_support.template import (
        TEST_PARAMETERS,
        Resolver,
        load_template,
        parameter_values,
        resolved_resources,
    )

    template = load_template()
    parameters = parameter_values(template, {**TEST_PARAMETERS, **overrides})
    resources = resolved_resources(template, parameters)
    statements = role_statements(resources, "ExportRole", Resolver(template, parameters).physical_name("ExportRole"))
    return resources["ExportFunction"]["Properties"]["Environment"]["Variables"], statements


DOMAIN_ARN = "arn:aws:profile:us-east-1:123456789012:domains/rfm-customers"


def test_the_stack_passes_the_setting_and_grants_only_the_exports_own_definitions() -> None:
    from tests.deploy_support.iam import allowed

    variables, statements = _export_role()
    assert variables["CUSTOMER_PROFILES_SEGMENT_DEFINITIONS"] == "segments,clusters"
    assert parse_definition_kinds(variables["CUSTOMER_PROFILES_SEGMENT_DEFINITIONS"]) == ("segments", "clusters")
    assert allowed(statements, "profile:ListSegmentDefinitions", DOMAIN_ARN)
    for action in ("Get", "Create", "Delete"):
        assert allowed(statements, f"profile:{action}SegmentDefinition", f"{DOMAIN_ARN}/segment-definitions/rfm-loyal")
        # a marketer's own definitions (and other domains') are out of reach
        assert not allowed(statements, f"profile:{action}SegmentDefinition",
                           f"{DOMAIN_ARN}/segment-definitions/spring-sale")
        assert not allowed(statements, f"profile:{action}SegmentDefinition",
                           "arn:aws:profile:us-east-1:123456789012:domains/other/segment-definitions/rfm-loyal")


def test_with_none_the_stack_grants_no_segment_definition_action() -> None:
    from tests.deploy_support.iam import allowed

    variables, statements = _export_role(CustomerProfilesSegmentDefinitions="none")
    assert parse_definition_kinds(variables["CUSTOMER_PROFILES_SEGMENT_DEFINITIONS"]) == ()
    for action in DEFINITION_CALLS:
        assert not allowed(statements, f"profile:{action}", DOMAIN_ARN)
        assert not allowed(statements, f"profile:{action}", f"{DOMAIN_ARN}/segment-definitions/rfm-loyal")
    assert allowed(statements, "profile:PutProfileObject", f"{DOMAIN_ARN}/object-types/RFMSegmentAssignment")


def test_every_value_the_stack_allows_is_a_valid_setting() -> None:
    from tests.deploy_support.template import load_template

    allowed_values = load_template()["Parameters"]["CustomerProfilesSegmentDefinitions"]["AllowedValues"]
    assert sorted(parse_definition_kinds(value) for value in allowed_values) == sorted(
        [("segments", "clusters"), ("segments",), ("clusters",), ()])


def test_a_definitions_arn_is_what_an_outbound_campaign_takes_as_its_source(env: Env) -> None:
    """connectcampaignsv2's ``Source.customerProfilesSegmentArn``: 20..500 characters of its pattern."""
    import re

    import botocore.session

    model = botocore.session.get_session().get_service_model("connectcampaignsv2")
    source = model.operation_model("UpdateCampaignSource").input_shape.members["source"]
    arn_shape = source.members["customerProfilesSegmentArn"]
    env.export(segments_frame(20))
    for item in env.client.list_segment_definitions(DomainName=DOMAIN)["Items"]:
        arn = item["SegmentDefinitionArn"]
        assert arn_shape.metadata["min"] <= len(arn) <= arn_shape.metadata["max"]
        assert re.fullmatch(arn_shape.metadata["pattern"], arn), arn


# -- through the export: the environment's setting, and the step's one line ------------------------------


def _run_export(env: Env, tmp_path: Any, setting: str) -> dict[str, Any]:
    from lambdas.export.app import Clients, export_segments
    from lambdas.export.retry import RetryPolicy
    from lambdas.export.storage import Storage
    from tests.export_support import write_inputs

    storage = Storage()
    request = write_inputs(storage, str(tmp_path / "run"), segments_frame(50), destinations="s3,customer-profiles")
    settings = ExportSettings.from_env({"EXPORT_DESTINATIONS": "s3,customer-profiles",
                                        "CUSTOMER_PROFILES_DOMAIN": DOMAIN,
                                        "CUSTOMER_PROFILES_SEGMENT_DEFINITIONS": setting})
    return export_segments(request, storage, settings, Clients(customer_profiles=env.client),
                           RetryPolicy(max_attempts=2, sleep=lambda _: None))


def test_the_environment_setting_reaches_the_destination(env: Env, tmp_path: Any) -> None:
    summary = _run_export(env, tmp_path, "segments")
    counts = summary["by_destination"]["customer-profiles"]["segment_definitions"]
    assert counts["kinds"] == ["segments"] and counts["created"] == len(SEGMENT_NAMES)
    assert env.names() == {segment_definition_name(s) for s in SEGMENT_NAMES}


def test_a_refusal_fails_the_step_with_one_line_and_the_other_destinations_run(env: Env, tmp_path: Any) -> None:
    from lambdas.export.app import ExportFailed

    env.fake.inject(deny=["CreateSegmentDefinition"])
    with pytest.raises(ExportFailed) as caught:
        _run_export(env, tmp_path, "")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("export Lambda: 1 of 2 destination(s) failed: customer-profiles: CreateSegmentDefinition "
                              "of the segment definition 'rfm-champions' in domain 'rfm-audiences' failed: "
                              "AccessDeniedException (HTTP 403). Grant the export function's role "
                              "profile:CreateSegmentDefinition on the domain and its segment-definitions/rfm-*")
    summary = caught.value.summary
    assert summary["by_destination"]["s3"]["files"] > 0
    assert summary["by_destination"]["customer-profiles"]["profiles_upserted"] == 50


def test_the_fakes_refusal_is_set_and_cleared_over_its_control_api(env: Env) -> None:
    import json
    import urllib.request

    def post(action: str, body: dict[str, Any]) -> None:
        request = urllib.request.Request(f"{env.fake.url}/_fake/{action}", data=json.dumps(body).encode(),
                                         method="POST")
        with urllib.request.urlopen(request) as answer:
            assert answer.status == 200

    post("faults", {"deny": ["ListSegmentDefinitions"]})
    with pytest.raises(env.client.exceptions.AccessDeniedException):
        env.client.list_segment_definitions(DomainName=DOMAIN)
    env.client.get_domain(DomainName=DOMAIN)  # only the denied operation
    post("reset-faults", {})
    assert env.client.list_segment_definitions(DomainName=DOMAIN)["Items"] == []
