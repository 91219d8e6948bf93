"""The S3 trigger Lambda against moto's SageMaker, S3 and DynamoDB: one run at a time over the prefix."""

from __future__ import annotations

import http.server
import io
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import boto3
import botocore.retries.standard
import pytest
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
from botocore.exceptions import ClientError
from moto import mock_aws

from lambdas.trigger import app
from lambdas.trigger.app import PipelineStarter, Settings, parse_event, trigger
from lambdas.trigger.single_flight import CLAIM_TIMEOUT_SECONDS, SingleFlight
from steps.errors import PipelineError
from steps.features.history import fingerprint, list_history

PIPELINE = "rfm-pipeline"
BUCKET = "rfm-data"
TABLE = "rfm-idempotency"
ROLE = "arn:aws:iam::123456789012:role/SageMakerExecution"
DEFINITION = json.dumps(
    {
        "Version": "2020-12-01",
        "Parameters": [
            {"Name": "InputDataUrl", "Type": "String"},
            {"Name": "ModelApprovalStatus", "Type": "String", "DefaultValue": "PendingManualApproval"},
        ],
        "Steps": [],
    }
)
EXTRA = {"ModelApprovalStatus": "Approved"}
DISPLAY_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,81}$")
TOKEN = re.compile(r"^[a-zA-Z0-9-]{32,128}$")

# Outside the handler no Lambda context is registered, so Powertools cannot see the remaining time.
pytestmark = pytest.mark.filterwarnings("ignore:Couldn't determine the remaining time")


@dataclass
class FakeContext:
    function_name: str = "rfm-trigger"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:rfm-trigger"
    aws_request_id: str = "00000000-0000-0000-0000-000000000001"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("POWERTOOLS_IDEMPOTENCY_DISABLED", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        yield


@pytest.fixture
def s3(aws: Any) -> Any:
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


def _backend_execution(arn: str) -> Any:
    from moto.sagemaker.models import sagemaker_backends

    return sagemaker_backends["123456789012"]["us-east-1"].pipelines[PIPELINE].pipeline_executions[arn]


def end(arn: str, status: str = "Succeeded") -> dict[str, Any]:
    """Let a (moto) execution end; the EventBridge event SageMaker then sends."""
    _backend_execution(arn).pipeline_execution_status = status
    return {"version": "0", "source": "aws.sagemaker", "detail-type": app.STATUS_CHANGE,
            "detail": {"pipelineArn": arn.split("/execution/")[0], "pipelineExecutionArn": arn,
                       "currentPipelineExecutionStatus": status, "previousPipelineExecutionStatus": "Executing"}}


@pytest.fixture
def sagemaker(s3: Any) -> Any:
    client = boto3.client("sagemaker")
    client.create_pipeline(PipelineName=PIPELINE, PipelineDefinition=DEFINITION, RoleArn=ROLE)
    return keep_running(client)


def keep_running(client: Any) -> Any:
    """moto ends every execution at once; a real one runs for minutes: keep them Executing until end()."""
    client.meta.events.register(
        "after-call.sagemaker.StartPipelineExecution",
        lambda parsed, **_: setattr(_backend_execution(parsed["PipelineExecutionArn"]),
                                    "pipeline_execution_status", "Executing"),
    )
    return client


@pytest.fixture
def store(aws: Any) -> DynamoDBPersistenceLayer:
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(
        TableName=TABLE,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
    )
    return DynamoDBPersistenceLayer(table_name=TABLE, boto3_client=dynamodb)


@pytest.fixture
def settings() -> Settings:
    return Settings(
        pipeline_name=PIPELINE,
        input_prefix="rfm/input/",
        pipeline_parameters=tuple(EXTRA.items()),
        idempotency_table=TABLE,
        input_bucket=BUCKET,
    )


def starter_for(settings: Settings, sagemaker: Any, store: Any = None) -> PipelineStarter:
    return PipelineStarter(settings, sagemaker, boto3.client("s3"), store)


def upload(s3: Any, key: str, body: bytes = b"customer_id,timestamp,amount\nc1,2024-01-01,5\n") -> dict[str, Any]:
    """Put an object and return the S3 notification its upload sends."""
    etag = s3.put_object(Bucket=BUCKET, Key=key, Body=body)["ETag"].strip('"')
    return s3_event(key, version=None, size=len(body), etag=etag)


def plan(s3: Any, arn: str, day_keyed: bool = False, older: bool = False) -> None:
    """What the execution's PlanHistory step writes: the history's fingerprint as it lists it now.

    ``day_keyed``: the cache key also names the day (held-back rows were due), the objects' own
    fingerprint beside it; ``older``: a plan written before ``objects_fingerprint`` existed."""
    printed = fingerprint(list_history(f"s3://{BUCKET}/rfm/input/", s3))
    body = {"fingerprint": "0123456789abcdef" if day_keyed else printed, "objects_fingerprint": printed}
    if older:
        body = {"fingerprint": printed}
    s3.put_object(Bucket=BUCKET, Key=f"rfm/executions/{arn.rsplit('/', 1)[-1]}/plan/plan.json",
                  Body=json.dumps(body).encode())


def s3_event(
    key: str,
    version: str | None = "v1",
    size: int = 100,
    etag: str = "abc123",
    event_name: str = "ObjectCreated:Put",
    bucket: str = BUCKET,
) -> dict[str, Any]:
    obj: dict[str, Any] = {"key": key, "size": size, "eTag": etag, "sequencer": "0055AED6DCD90281E5"}
    if version is not None:
        obj["versionId"] = version
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2024-01-01T00:00:00.000Z",
                "eventName": event_name,
                "userIdentity": {"principalId": "AWS:EXAMPLE"},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "FMyUVURIY8"},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "rfm-input",
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "EXAMPLE"},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": obj,
                },
            }
        ]
    }


def eventbridge_event(
    key: str,
    version: str | None = "v1",
    size: int = 100,
    etag: str = "abc123",
    detail_type: str = "Object Created",
    bucket: str = BUCKET,
) -> dict[str, Any]:
    obj: dict[str, Any] = {"key": key, "size": size, "etag": etag, "sequencer": "617f08299329d189"}
    if version is not None:
        obj["version-id"] = version
    return {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": detail_type,
        "source": "aws.s3",
        "account": "123456789012",
        "time": "2024-01-01T00:00:00Z",
        "region": "us-east-1",
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": obj,
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": "123456789012",
            "source-ip-address": "127.0.0.1",
            "reason": "PutObject",
        },
    }


SHAPES = pytest.mark.parametrize("make_event", [s3_event, eventbridge_event], ids=["s3", "eventbridge"])


def executions(sagemaker: Any) -> list[dict[str, Any]]:
    return sagemaker.list_pipeline_executions(PipelineName=PIPELINE)["PipelineExecutionSummaries"]


def parameters(sagemaker: Any, arn: str) -> dict[str, str]:
    found = sagemaker.list_pipeline_parameters_for_execution(PipelineExecutionArn=arn)["PipelineParameters"]
    return {p["Name"]: p["Value"] for p in found}


def capture_starts(sagemaker: Any) -> list[dict[str, Any]]:
    """Record the parameters of every StartPipelineExecution call made with ``sagemaker``."""
    calls: list[dict[str, Any]] = []
    sagemaker.meta.events.register(
        "provide-client-params.sagemaker.StartPipelineExecution",
        lambda params, **_: calls.append(dict(params)),
    )
    return calls


@SHAPES
def test_created_object_starts_one_execution_with_parameters(make_event, sagemaker, store, settings) -> None:
    calls = capture_starts(sagemaker)
    summary = trigger(
        parse_event(make_event("rfm/input/2024/orders.csv.gz")),
        settings,
        starter_for(settings, sagemaker, store),
    )

    assert summary == {
        "started": [executions(sagemaker)[0]["PipelineExecutionArn"]],
        "deferred": 0,
        "ignored": [],
        "duplicates": 0,
    }
    arn = summary["started"][0]
    assert parameters(sagemaker, arn) == {"InputDataUrl": f"s3://{BUCKET}/rfm/input/", **EXTRA}  # the history
    described = sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)
    assert DISPLAY_NAME.match(described["PipelineExecutionDisplayName"])
    assert f"s3://{BUCKET}/rfm/input/2024/orders.csv.gz arrived" in described["PipelineExecutionDescription"]
    assert TOKEN.match(calls[0]["ClientRequestToken"])
    json.dumps(summary)


@SHAPES
def test_duplicate_delivery_starts_nothing_new(make_event, sagemaker, store, settings) -> None:
    starter = starter_for(settings, sagemaker, store)
    first = trigger(parse_event(make_event("rfm/input/orders.csv")), settings, starter)
    end(first["started"][0])  # even with nothing running, a repeated delivery starts nothing
    again = trigger(parse_event(make_event("rfm/input/orders.csv")), settings, starter)

    assert len(first["started"]) == 1 and first["duplicates"] == 0
    assert again == {"started": [], "deferred": 0, "ignored": [], "duplicates": 1}
    assert len(executions(sagemaker)) == 1


@pytest.mark.parametrize("change", [{"version": "v2"}, {"etag": "def456"}, {"version": None, "etag": "x"}])
def test_new_version_of_same_key_is_not_a_duplicate(change, sagemaker, store, settings) -> None:
    starter = starter_for(settings, sagemaker, store)
    first = trigger(parse_event(s3_event("rfm/input/orders.csv")), settings, starter)
    during = trigger(parse_event(s3_event("rfm/input/orders.csv", **change)), settings, starter)
    assert during["deferred"] == 1 and during["duplicates"] == 0  # left to the run in progress
    end(first["started"][0])
    after = trigger(parse_event(s3_event("rfm/input/orders.csv", version="v3", etag="e3")), settings, starter)
    assert len(after["started"]) == 1 and len(executions(sagemaker)) == 2


def test_without_idempotency_table_the_claim_still_elects_one_start(sagemaker, settings) -> None:
    calls = capture_starts(sagemaker)
    starter = starter_for(settings, sagemaker)
    for event in (s3_event("rfm/input/a.csv"), eventbridge_event("rfm/input/a.csv"),
                  s3_event("rfm/input/a.csv", version="v2")):
        trigger(parse_event(event), settings, starter)

    assert len(calls) == 1 and TOKEN.match(calls[0]["ClientRequestToken"])
    assert len(executions(sagemaker)) == 1


def test_object_repeated_within_one_event_counts_as_duplicate(sagemaker, settings) -> None:
    event = s3_event("rfm/input/a.csv")
    event["Records"] += s3_event("rfm/input/a.csv")["Records"] + s3_event("rfm/input/b.parquet")["Records"]
    summary = trigger(parse_event(event), settings, starter_for(settings, sagemaker))

    assert len(summary["started"]) == 1 and summary["deferred"] == 1 and summary["duplicates"] == 1
    assert len(executions(sagemaker)) == 1


def test_a_burst_of_50_part_files_is_one_execution_and_none_is_lost(s3, sagemaker, store, settings) -> None:
    starter = starter_for(settings, sagemaker, store)
    events = [upload(s3, f"rfm/input/2024-06-01/part-{n:05d}.csv") for n in range(50)]
    summaries = [trigger(parse_event(event), settings, starter) for event in events]
    started = [arn for summary in summaries for arn in summary["started"]]
    assert len(started) == 1 and sum(s["deferred"] for s in summaries) == 49
    plan(s3, started[0])  # its PlanHistory listed all 50: the end starts nothing more
    assert "nothing_pending" in starter.on_status_change(end(started[0]))
    assert len(executions(sagemaker)) == 1
    history = list_history(f"s3://{BUCKET}/rfm/input/", s3)
    assert len(history) == 50  # and that run's listing held every part


def test_a_drop_during_a_run_is_taken_by_the_next(s3, sagemaker, store, settings) -> None:
    starter = starter_for(settings, sagemaker, store)
    first = trigger(parse_event(upload(s3, "rfm/input/day-1.csv")), settings, starter)["started"][0]
    plan(s3, first)  # PlanHistory listed day-1 only
    during = trigger(parse_event(upload(s3, "rfm/input/day-2.csv")), settings, starter)
    assert during["deferred"] == 1 and len(executions(sagemaker)) == 1  # never two at once
    follow = starter.on_status_change(end(first, "Failed"))
    second = follow["execution_arn"]
    assert parameters(sagemaker, second)["InputDataUrl"] == f"s3://{BUCKET}/rfm/input/"
    assert starter.on_status_change(end(first, "Failed")) == {
        "deferred_to": second}  # a repeated status event starts nothing more
    plan(s3, second)
    assert "nothing_pending" in starter.on_status_change(end(second))
    assert len(executions(sagemaker)) == 2


@pytest.mark.parametrize(("day_keyed", "older"), [(True, False), (False, True)])
def test_a_run_keyed_by_the_day_or_planned_by_an_older_version_is_not_followed_up_for_nothing(
        s3, sagemaker, store, settings, day_keyed: bool, older: bool) -> None:
    """The trigger compares the objects' own fingerprint (a day-keyed cache key is not a change of the data)."""
    starter = starter_for(settings, sagemaker, store)
    first = trigger(parse_event(upload(s3, "rfm/input/day-1.csv")), settings, starter)["started"][0]
    assert trigger(parse_event(upload(s3, "rfm/input/day-2.csv")), settings, starter)["deferred"] == 1
    plan(s3, first, day_keyed=day_keyed, older=older)  # its PlanHistory listed day-2 too
    assert starter.on_status_change(end(first)).get("reason") == "every object was in its plan"
    assert len(executions(sagemaker)) == 1


def test_a_run_that_ends_while_an_object_defers_is_followed_up(s3, sagemaker, settings, monkeypatch) -> None:
    starter = starter_for(settings, sagemaker)
    first = trigger(parse_event(upload(s3, "rfm/input/day-1.csv")), settings, starter)["started"][0]
    plan(s3, first)
    # The run ends (and its status event finds no marker) between this object's two status checks.
    original = SingleFlight._mark_pending

    def mark_then_end(self, ended: str, rebuild: bool) -> None:  # noqa: ANN001
        assert "nothing_pending" in starter.on_status_change(end(first))
        original(self, ended, rebuild)

    monkeypatch.setattr(SingleFlight, "_mark_pending", mark_then_end)
    summary = trigger(parse_event(upload(s3, "rfm/input/day-2.csv")), settings, starter)
    assert len(summary["started"]) == 1 and len(executions(sagemaker)) == 2


def test_concurrent_invocations_start_one_run_and_a_dead_claim_is_taken_over(s3, sagemaker, settings) -> None:
    now = [1_000_000.0]
    flight = SingleFlight(settings.flight(BUCKET), sagemaker, s3, clock=lambda: now[0])
    s3.put_object(Bucket=BUCKET, Key="rfm/state/trigger/claims/after-none.json",
                  Body=json.dumps({"at": now[0]}).encode())  # another invocation is starting the run
    assert "deferred_to" in flight.request("a.csv arrived")
    assert executions(sagemaker) == []
    now[0] += CLAIM_TIMEOUT_SECONDS + 1  # ... and died before it could
    assert "execution_arn" in flight.request("b.csv arrived")
    assert len(executions(sagemaker)) == 1


def test_the_scheduled_rebuild_starts_a_rebuild_run(monkeypatch, s3, sagemaker) -> None:
    monkeypatch.setenv("PIPELINE_NAME", PIPELINE)
    monkeypatch.setenv("INPUT_BUCKET", BUCKET)
    monkeypatch.setenv("INPUT_PREFIX", "rfm/input/")
    monkeypatch.delenv("IDEMPOTENCY_TABLE", raising=False)
    app._runtime.cache_clear()
    scheduled = {"version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}
    keep_running(app._runtime()[1].sagemaker)
    try:
        started = app.handler(scheduled, FakeContext())
        again = app.handler(scheduled, FakeContext())  # while it runs: after it, not beside it
        follow = app.handler(end(started["execution_arn"]), FakeContext())
        other = app.handler({**end(follow["execution_arn"]), "detail": {
            "pipelineArn": "arn:aws:sagemaker:us-east-1:123456789012:pipeline/other",
            "currentPipelineExecutionStatus": "Succeeded"}}, FakeContext())
    finally:
        app._runtime.cache_clear()
    assert parameters(sagemaker, started["execution_arn"])["Rebuild"] == "true"
    assert "deferred_to" in again
    assert parameters(sagemaker, follow["execution_arn"])["Rebuild"] == "true"
    assert "not an end of" in other["ignored"][0]["reason"]


@SHAPES
@pytest.mark.parametrize(
    ("raw_key", "key"),
    [
        ("rfm/input/my+orders+2024.csv", "rfm/input/my orders 2024.csv"),
        ("rfm/input/caf%C3%A9%2B1.csv", "rfm/input/café+1.csv"),
        ("rfm/input/a%2Fb%20c.parquet", "rfm/input/a/b c.parquet"),
    ],
)
def test_keys_are_url_decoded(make_event, raw_key, key, sagemaker, settings) -> None:
    assert parse_event(make_event(raw_key))[0].key == key
    summary = trigger(parse_event(make_event(raw_key)), settings, starter_for(settings, sagemaker))
    assert len(summary["started"]) == 1
    assert DISPLAY_NAME.match(executions(sagemaker)[0]["PipelineExecutionDisplayName"])


@SHAPES
@pytest.mark.parametrize(
    ("key", "size", "input_prefix", "reason"),
    [
        ("other/orders.csv", 10, "rfm/input/", "outside the input prefix"),
        ("rfm/executions/abc/features/rfm.parquet", 10, "rfm/", "own output prefix"),
        ("rfm/input/2024/", 0, "rfm/input/", "folder marker"),
        ("rfm/input/2024/", 10, "rfm/input/", "folder marker"),
        ("rfm/input/empty.csv", 0, "rfm/input/", "zero-byte"),
        ("rfm/input/orders.json", 10, "rfm/input/", "unsupported suffix"),
        ("rfm/input/orders.csv.tmp", 10, "rfm/input/", "unsupported suffix"),
        ("rfm/state/histories/x.csv", 10, "rfm/", "own state prefix"),
    ],
)
def test_ignored_objects_start_nothing(
    make_event, key, size, input_prefix, reason, sagemaker, settings
) -> None:
    settings = Settings(pipeline_name=PIPELINE, input_prefix=input_prefix)
    summary = trigger(parse_event(make_event(key, size=size)), settings, starter_for(settings, sagemaker))

    assert summary["started"] == [] and summary["duplicates"] == 0
    assert [item["key"] for item in summary["ignored"]] == [key]
    assert reason in summary["ignored"][0]["reason"]
    assert executions(sagemaker) == []


@pytest.mark.parametrize(
    "event",
    [
        s3_event("rfm/input/a.csv", event_name="ObjectRemoved:Delete"),
        eventbridge_event("rfm/input/a.csv", detail_type="Object Deleted"),
    ],
)
def test_other_event_types_are_ignored(event, sagemaker, settings) -> None:
    summary = trigger(parse_event(event), settings, starter_for(settings, sagemaker))
    assert summary["started"] == [] and "not an object-created event" in summary["ignored"][0]["reason"]


@pytest.mark.parametrize("suffix", [".csv", ".CSV", ".csv.gz", ".parquet"])
def test_supported_suffixes_start(suffix, sagemaker, settings) -> None:
    summary = trigger(
        parse_event(s3_event(f"rfm/input/orders{suffix}")), settings, starter_for(settings, sagemaker)
    )
    assert len(summary["started"]) == 1


@pytest.mark.parametrize("use_store", [True, False])
def test_missing_pipeline_gives_clear_error(use_store, s3, store, settings) -> None:
    settings = Settings(pipeline_name="no-such-pipeline", input_prefix="rfm/input/")
    starter = starter_for(settings, boto3.client("sagemaker"), store if use_store else None)

    with pytest.raises(PipelineError, match=r"'no-such-pipeline' does not exist.*run-pipeline"):
        trigger(parse_event(s3_event("rfm/input/a.csv")), settings, starter)
    if use_store:  # the failed attempt left no record behind: a retry may start it
        assert boto3.client("dynamodb").scan(TableName=TABLE)["Count"] == 0


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        ("ResourceNotFound", "Pipeline 'arn:...' does not exist.", "does not exist"),
        ("ValidationException", "Could not find pipeline with PipelineName p.", "does not exist"),
        ("ValidationException", "Parameter Foo is not defined in the pipeline", "rejected the start"),
    ],
)
def test_sagemaker_errors_are_explained(code, message, expected) -> None:
    error = ClientError({"Error": {"Code": code, "Message": message}}, "StartPipelineExecution")
    assert expected in str(app._pipeline_error(error, "p"))


def test_other_sagemaker_errors_pass_through() -> None:
    error = ClientError(
        {"Error": {"Code": "ThrottlingException", "Message": "slow"}}, "StartPipelineExecution"
    )
    assert app._pipeline_error(error, "p") is error


@pytest.mark.parametrize(
    ("environ", "error"),
    [
        ({}, "PIPELINE_NAME is not set"),
        ({"PIPELINE_NAME": "p", "PIPELINE_PARAMETERS": "{not json"}, "not valid JSON"),
        ({"PIPELINE_NAME": "p", "PIPELINE_PARAMETERS": "[1]"}, "must be a JSON object"),
        (
            {"PIPELINE_NAME": "p", "PIPELINE_PARAMETERS": '{"InputDataUrl": "s3://x/y"}'},
            "without InputDataUrl",
        ),
    ],
)
def test_bad_configuration_is_reported(environ, error) -> None:
    with pytest.raises(PipelineError, match=error):
        Settings.from_env(environ)


def test_settings_from_env() -> None:
    settings = Settings.from_env(
        {
            "PIPELINE_NAME": "p",
            "INPUT_PREFIX": "rfm/input/",
            "SUFFIXES": ".CSV, .txt",
            "PIPELINE_PARAMETERS": json.dumps(EXTRA),
        }
    )
    assert settings.suffixes == (".csv", ".txt")
    assert settings.pipeline_parameters == (("ModelApprovalStatus", "Approved"),)
    assert settings.output_prefix == "rfm/executions/" and settings.idempotency_table is None
    assert settings.state_prefix == "rfm/state/"
    typed = Settings.from_env({"PIPELINE_NAME": "p", "PIPELINE_PARAMETERS": '{"Flag": true, "Min": 0.5}'})
    assert typed.pipeline_parameters == (("Flag", "true"), ("Min", "0.5"))
    assert Settings.from_env({"PIPELINE_NAME": "p"}).suffixes == (".csv", ".csv.gz", ".parquet")


def test_unknown_event_shape_is_reported() -> None:
    with pytest.raises(PipelineError) as raised:
        parse_event({"hello": "world"})
    assert str(raised.value) == (
        "trigger Lambda: the event is neither an S3 notification (Records) nor an EventBridge event (detail). "
        "Route S3 ObjectCreated notifications or EventBridge events to it.")


def test_an_object_without_any_identity_is_refused_not_started_unguarded(sagemaker, store, settings) -> None:
    """The idempotency key is the object's bucket, key, version and ETag: with none of them, the starter
    refuses (it would otherwise start a run that no later delivery could be matched against)."""
    from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyKeyError

    nameless = app.S3ObjectRef(bucket=None, key=None, version_id=None, etag=None, size=None, event="")
    with pytest.raises(IdempotencyKeyError):
        starter_for(settings, sagemaker, store)(nameless)
    assert executions(sagemaker) == []


@pytest.mark.parametrize("table", [TABLE, None])
def test_handler_end_to_end(table, monkeypatch, sagemaker, store) -> None:
    monkeypatch.setenv("PIPELINE_NAME", PIPELINE)
    monkeypatch.setenv("INPUT_PREFIX", "rfm/input/")
    monkeypatch.setenv("PIPELINE_PARAMETERS", json.dumps(EXTRA))
    if table:
        monkeypatch.setenv("IDEMPOTENCY_TABLE", table)
    else:
        monkeypatch.delenv("IDEMPOTENCY_TABLE", raising=False)
    app._runtime.cache_clear()
    stream = io.StringIO()
    # Swapped, not setStream(): that flushes the old stream, which a capture may have closed already.
    previous, app.logger.registered_handler.stream = app.logger.registered_handler.stream, stream
    try:
        first = app.handler(s3_event("rfm/input/orders.csv"), FakeContext())
        again = app.handler(s3_event("rfm/input/orders.csv"), FakeContext())
    finally:
        app._runtime.cache_clear()
        app.logger.registered_handler.stream = previous

    assert len(first["started"]) == 1
    logs = [json.loads(line) for line in stream.getvalue().splitlines()]
    started = [entry for entry in logs if entry["message"] == "Pipeline execution started"]
    assert started[0]["correlation_id"] == f"s3://{BUCKET}/rfm/input/orders.csv"
    assert started[0]["function_request_id"] == FakeContext.aws_request_id
    if table:
        assert again["duplicates"] == 1 and len(executions(sagemaker)) == 1
    else:  # moto does not deduplicate ClientRequestToken; SageMaker does
        assert any("IDEMPOTENCY_TABLE is not set" in entry["message"] for entry in logs)


def test_s3_test_event_is_ignored_with_a_log_line(sagemaker, settings) -> None:
    event = {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": "2024-01-01T00:00:00.000Z",
        "Bucket": BUCKET,
        "RequestId": "5582815E1AEA5ADF",
        "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB",
    }
    stream = io.StringIO()
    # Swapped, not setStream(): that flushes the old stream, which a capture may have closed already.
    previous, app.logger.registered_handler.stream = app.logger.registered_handler.stream, stream
    try:
        summary = trigger(parse_event(event), settings, starter_for(settings, sagemaker))
    finally:
        app.logger.registered_handler.stream = previous

    assert summary["started"] == [] and "s3:TestEvent" in summary["ignored"][0]["reason"]
    assert [(obj.bucket, obj.key, obj.etag, obj.event) for obj in parse_event(event)] == [
        (BUCKET, "", "", "s3:TestEvent")]
    assert [obj.bucket for obj in parse_event({"Event": "s3:TestEvent"})] == [""]  # no Bucket: empty, not None
    assert executions(sagemaker) == []
    logs = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(entry["message"], entry["reason"]) for entry in logs] == [
        ("Object ignored", "not an object-created event (s3:TestEvent)")
    ]


def test_eventbridge_events_from_other_sources_are_ignored(sagemaker, settings) -> None:
    event = {
        **eventbridge_event("rfm/input/a.csv"),
        "source": "aws.ec2",
        "detail-type": "EC2 Instance State-change Notification",
        "detail": {"state": "running"},
    }
    parsed = parse_event(event)
    # One entry with no identity at all (no bucket, key, version or ETag): nothing of the event is taken
    # for an object, and its reason names the source.
    assert [(obj.bucket, obj.key, obj.version_id, obj.etag, obj.event) for obj in parsed] == [
        ("", "", None, "", "aws.ec2: EC2 Instance State-change Notification")]
    summary = trigger(parsed, settings, starter_for(settings, sagemaker))
    assert summary["started"] == [] and "aws.ec2" in summary["ignored"][0]["reason"]
    assert executions(sagemaker) == []


def test_records_that_are_not_s3_notifications_are_reported() -> None:
    sqs = {"Records": [{"eventSource": "aws:sqs", "body": json.dumps(s3_event("rfm/input/a.csv"))}]}
    with pytest.raises(PipelineError) as raised:
        parse_event(sqs)
    assert str(raised.value) == ("trigger Lambda: the Records are not S3 notifications (eventSource ['aws:sqs']). "
                                 "Send S3 ObjectCreated notifications directly, not via SQS/SNS.")


def test_s3_records_without_their_s3_part_are_one_line_not_a_key_error() -> None:
    """A record that says it is from S3 but carries no ``s3`` object (a hand-made or truncated event)."""
    for records in ([{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}],
                    [*s3_event("rfm/input/a.csv")["Records"], {"eventSource": "aws:s3"}]):
        with pytest.raises(PipelineError, match=r"the Records are not S3 notifications \(eventSource \['aws:s3'\]\)"):
            parse_event({"Records": records})


@SHAPES
@pytest.mark.parametrize(
    ("bucket", "key", "reason"),
    [
        ("other-bucket", "rfm/input/a.csv", "not in the input bucket 'rfm-data'"),
        (
            BUCKET,
            "rfm/input/pinpoint-import/exec-1/attempt-1/part-00000.csv",
            "ignored prefix 'rfm/input/pinpoint",
        ),
    ],
)
def test_input_bucket_and_ignored_prefixes(make_event, bucket, key, reason, sagemaker) -> None:
    settings = Settings.from_env(
        {
            "PIPELINE_NAME": PIPELINE,
            "INPUT_BUCKET": BUCKET,
            "INPUT_PREFIX": "rfm/input/",
            "IGNORE_PREFIXES": "rfm/input/pinpoint-import/, /rfm/input/tmp/",
        }
    )
    assert settings.ignore_prefixes == ("rfm/input/pinpoint-import/", "rfm/input/tmp/")
    summary = trigger(
        parse_event(make_event(key, bucket=bucket)), settings, starter_for(settings, sagemaker)
    )

    assert summary["started"] == [] and reason in summary["ignored"][0]["reason"]
    ok = trigger(parse_event(make_event("rfm/input/a.csv")), settings, starter_for(settings, sagemaker))
    assert len(ok["started"]) == 1


def test_logs_name_the_object_but_hold_no_event_details(monkeypatch, sagemaker, store) -> None:
    monkeypatch.setenv("PIPELINE_NAME", PIPELINE)
    monkeypatch.setenv("INPUT_PREFIX", "rfm/input/")
    monkeypatch.setenv("IDEMPOTENCY_TABLE", TABLE)
    app._runtime.cache_clear()
    stream = io.StringIO()
    # Swapped, not setStream(): that flushes the old stream, which a capture may have closed already.
    previous, app.logger.registered_handler.stream = app.logger.registered_handler.stream, stream
    event = s3_event("rfm/input/orders.csv")
    event["Records"][0]["userIdentity"]["principalId"] = "AWS:AIDAEXAMPLEUSER"
    event["Records"][0]["requestParameters"]["sourceIPAddress"] = "203.0.113.77"
    try:
        app.handler(event, FakeContext())
    finally:
        app._runtime.cache_clear()
        app.logger.registered_handler.stream = previous

    logs = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert logs and all(entry["level"] in {"INFO", "WARNING"} for entry in logs)
    assert "203.0.113.77" not in stream.getvalue() and "AIDAEXAMPLEUSER" not in stream.getvalue()
    assert {entry.get("s3_key") for entry in logs if "s3_key" in entry} == {"rfm/input/orders.csv"}


class ThrottlingSageMaker(http.server.BaseHTTPRequestHandler):
    """Loopback SageMaker (JSON protocol): throttles the first ``throttles`` calls, then starts executions."""

    throttles = 0
    calls: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).calls.append(self.headers["X-Amz-Target"])
        if len(type(self).calls) <= type(self).throttles:
            status, body = 400, {"__type": "ThrottlingException", "message": "Rate exceeded"}
        else:
            status, body = 200, {"PipelineExecutionArn": f"{ROLE}:execution/{len(type(self).calls)}"}
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def throttling_sagemaker(aws: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[type[ThrottlingSageMaker]]:
    # No waiting between attempts: what is checked is how many attempts the client makes.
    monkeypatch.setattr(botocore.retries.standard.ExponentialBackoff, "delay_amount", lambda self, context: 0)
    handler = type("Handler", (ThrottlingSageMaker,), {"calls": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_port}"
    yield handler
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("throttles", "started"), [(1, True), (8, True), (9, False)])
def test_throttled_starts_are_retried_eight_times(throttling_sagemaker, s3, settings, throttles, started) -> None:
    """SageMaker throttles per account; the trigger's client retries a call 8 times, then fails.

    The first call (the single-flight status check) meets the throttling; a start follows once it succeeds.
    """
    throttling_sagemaker.throttles = throttles
    client = boto3.client("sagemaker", endpoint_url=throttling_sagemaker.url, config=app.SAGEMAKER_CONFIG)
    starter = PipelineStarter(settings, client, s3)
    event = parse_event(s3_event("rfm/input/a.csv"))
    if started:
        assert len(trigger(event, settings, starter)["started"]) == 1
    else:
        with pytest.raises(ClientError, match="ThrottlingException"):
            trigger(event, settings, starter)
    assert len(throttling_sagemaker.calls) == min(throttles + 1, 9) + started


def test_a_bad_idempotency_expiry_is_a_clear_error() -> None:
    with pytest.raises(PipelineError, match="IDEMPOTENCY_EXPIRES_SECONDS"):
        Settings.from_env({"PIPELINE_NAME": "p", "IDEMPOTENCY_EXPIRES_SECONDS": "1d"})


def test_an_input_prefix_too_long_for_sagemaker_fails_loudly(settings) -> None:
    """No upload could ever start a run: a configuration error when the settings are read, not an object to
    ignore quietly."""
    long_prefix = "rfm/" + "x" * 1100 + "/"
    expected = (f"InputDataUrl s3://{BUCKET}/rfm/{'x' * 42}... is longer than SageMaker's 1024 characters",
                "INPUT_PREFIX (trigger Lambda environment)", "Use a shorter input prefix")
    with pytest.raises(PipelineError) as caught:
        Settings.from_env({"PIPELINE_NAME": PIPELINE, "INPUT_BUCKET": BUCKET, "INPUT_PREFIX": long_prefix})
    assert (caught.value.what, caught.value.where, caught.value.fix) == expected
    with pytest.raises(PipelineError) as caught:
        replace(settings, input_prefix=long_prefix)
    assert (caught.value.what, caught.value.where, caught.value.fix) == expected


def test_without_an_input_bucket_every_bucket_is_checked_before_any_object(sagemaker) -> None:
    """Any bucket: an event whose second bucket's name makes the input URL too long starts nothing at all
    (not the first object's run, then an error that loses the summary)."""
    prefix = "p" * (1024 - len(f"s3://{BUCKET}/") - 1) + "/"  # exactly 1024 characters in BUCKET
    settings = Settings(pipeline_name=PIPELINE, input_prefix=prefix)
    event = s3_event(prefix + "a.csv")
    event["Records"] += s3_event(prefix + "b.csv", bucket=BUCKET + "-longer")["Records"]
    with pytest.raises(PipelineError, match=rf"InputDataUrl s3://{BUCKET}-longer/p+\.\.\. is longer than SageMaker's"):
        trigger(parse_event(event), settings, starter_for(settings, sagemaker))
    assert executions(sagemaker) == []


# --- which objects start a run, and why the others do not: the whole reason, as the summary and the log give it ---

FULL = Settings(pipeline_name=PIPELINE, input_prefix="rfm/", input_bucket=BUCKET,
                ignore_prefixes=("rfm/input/tmp/", "rfm/input/pinpoint-import/"))


@pytest.mark.parametrize(("event", "reason"), [
    (s3_event("rfm/input/a.csv", event_name="ObjectRemoved:Delete"),
     "not an object-created event (ObjectRemoved:Delete)"),
    (eventbridge_event("rfm/input/a.csv", detail_type="Object Deleted"),
     "not an object-created event (Object Deleted)"),
    ({**eventbridge_event("rfm/input/a.csv"), "source": "aws.ec2", "detail-type": "EC2 Instance State-change"},
     "not an object-created event (aws.ec2: EC2 Instance State-change)"),
    (s3_event("rfm/input/a.csv", bucket="other-bucket"), "not in the input bucket 'rfm-data'"),
    (s3_event("other/a.csv"), "outside the input prefix 'rfm/'"),
    (s3_event("rfm/executions/x/features/rfm.parquet"), "under the pipeline's own output prefix 'rfm/executions/'"),
    (s3_event("rfm/state/histories/x.csv"), "under the pipeline's own state prefix 'rfm/state/'"),
    (s3_event("rfm/input/tmp/a.csv"), "under the ignored prefix 'rfm/input/tmp/'"),
    (s3_event("rfm/input/pinpoint-import/part-00000.csv"), "under the ignored prefix 'rfm/input/pinpoint-import/'"),
    (s3_event("rfm/input/2024/"), "folder marker"),
    (s3_event("rfm/input/a.json"), "unsupported suffix (expected one of .csv, .csv.gz, .parquet)"),
    (s3_event("rfm/input/a.csv", size=0), "zero-byte object"),
], ids=["deleted", "eventbridge-deleted", "other-source", "other-bucket", "outside-prefix", "output", "state",
        "ignored", "second-ignored", "folder", "suffix", "empty"])
def test_each_ignored_object_gets_its_whole_reason(event: dict[str, Any], reason: str) -> None:
    def never(obj: Any) -> dict[str, Any]:
        raise AssertionError(f"{obj} started a run")

    summary = trigger(parse_event(event), FULL, never)
    assert summary == {"started": [], "deferred": 0, "ignored": [{"key": parse_event(event)[0].key, "reason": reason}],
                       "duplicates": 0}


def started_by(settings: Settings, event: dict[str, Any]) -> list[str]:
    """The keys ``trigger`` asks to start a run for."""
    asked: list[str] = []

    def start(obj: Any) -> dict[str, Any]:
        asked.append(obj.key)
        return {"duplicate": False, "execution_arn": f"arn:{obj.key}"}

    summary = trigger(parse_event(event), settings, start)
    assert summary["ignored"] == [], summary["ignored"]
    return asked


def test_one_byte_and_unsized_objects_start_a_run() -> None:
    """Only an object known to be empty is skipped: one byte is data, and an event without a size is not empty."""
    assert started_by(FULL, s3_event("rfm/input/a.csv", size=1)) == ["rfm/input/a.csv"]
    unsized = s3_event("rfm/input/b.csv")
    del unsized["Records"][0]["s3"]["object"]["size"]
    assert parse_event(unsized)[0].size is None
    assert started_by(FULL, unsized) == ["rfm/input/b.csv"]


def test_without_an_output_prefix_or_input_bucket_nothing_is_ignored_for_them() -> None:
    """OUTPUT_PREFIX set empty and no INPUT_BUCKET: every bucket, and no key is taken for the pipeline's own output."""
    settings = Settings.from_env({"PIPELINE_NAME": PIPELINE, "OUTPUT_PREFIX": "", "STATE_PREFIX": "state/"})
    assert (settings.output_prefix, settings.input_bucket) == ("", None)
    assert started_by(settings, s3_event("rfm/executions/a.csv", bucket="any-bucket")) == ["rfm/executions/a.csv"]


def test_an_input_url_of_exactly_1024_characters_starts() -> None:
    """SageMaker takes parameter values up to 1024 characters: that long a prefix works, one more does not."""
    fixed = len(f"s3://{BUCKET}/") + len("/")
    longest = replace(FULL, input_prefix="p" * (1024 - fixed) + "/", ignore_prefixes=())
    assert len(longest.flight(BUCKET).input_url) == 1024
    key = longest.input_prefix + "a.csv"
    assert started_by(longest, s3_event(key)) == [key]
    with pytest.raises(PipelineError, match="longer than SageMaker's 1024"):
        replace(longest, input_prefix="p" + longest.input_prefix)


@pytest.mark.parametrize("make_event", [s3_event, eventbridge_event], ids=["s3", "eventbridge"])
def test_an_objects_identity_is_read_from_either_event_shape(make_event: Any) -> None:
    """Bucket, key, version id and ETag tell deliveries apart; the size and event name decide what is ignored."""
    [obj] = parse_event(make_event("rfm/input/a b.csv", version="3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY", size=2048,
                                   etag="d41d8cd98f00b204e9800998ecf8427e"))
    assert (obj.bucket, obj.key, obj.version_id, obj.etag, obj.size) == (
        BUCKET, "rfm/input/a b.csv", "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY", "d41d8cd98f00b204e9800998ecf8427e", 2048)
    assert obj.event == ("ObjectCreated:Put" if make_event is s3_event else "Object Created")
    assert obj.url == f"s3://{BUCKET}/rfm/input/a b.csv" and obj.created
    [unversioned] = parse_event(make_event("rfm/input/a.csv", version=None))
    assert unversioned.version_id is None


def test_several_records_are_each_read() -> None:
    event = s3_event("rfm/input/a.csv")
    event["Records"] += s3_event("rfm/input/b.csv", bucket="other", etag="e2", size=7)["Records"]
    assert [(o.bucket, o.key, o.etag, o.size) for o in parse_event(event)] == [
        (BUCKET, "rfm/input/a.csv", "abc123", 100), ("other", "rfm/input/b.csv", "e2", 7)]


def test_one_upload_notified_by_both_routes_is_one_delivery(sagemaker, store, settings) -> None:
    """An S3 notification and an EventBridge event of one upload name the same object: the second is a duplicate."""
    starter = starter_for(settings, sagemaker, store)
    first = trigger(parse_event(s3_event("rfm/input/a.csv")), settings, starter)
    end(first["started"][0])
    again = trigger(parse_event(eventbridge_event("rfm/input/a.csv")), settings, starter)
    assert again == {"started": [], "deferred": 0, "ignored": [], "duplicates": 1}


def test_a_delivery_is_remembered_for_idempotency_expires_seconds(sagemaker, store, settings) -> None:
    """The table's TTL attribute ``expiration`` is IDEMPOTENCY_EXPIRES_SECONDS after the delivery."""
    import time

    settings = replace(settings, idempotency_expires_seconds=600)
    before = time.time()
    trigger(parse_event(s3_event("rfm/input/a.csv")), settings, starter_for(settings, sagemaker, store))
    items = boto3.client("dynamodb").scan(TableName=TABLE)["Items"]
    assert len(items) == 1
    # Keyed by a fixed name, not the Python function's qualified name: a redeploy that moves or renames
    # the code still recognises the deliveries already recorded.
    assert items[0]["id"]["S"].startswith(f"{app.IDEMPOTENCY_KEY_PREFIX}#")
    assert before + 600 - 1 <= int(items[0]["expiration"]["N"]) <= time.time() + 600 + 1
