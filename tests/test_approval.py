"""Publishing only through approval: the approval Lambda under moto, and `rfm approve` locally."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pandas as pd
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from lambdas.approval import app as approval_app
from lambdas.approval.app import Settings, ignore_reason, model_name_for, publish_approved
from pipeline.local.approval import approve_local, approve_sagemaker
from pipeline.local.registry import LocalRegistry
from pipeline.naming import MODEL_PACKAGE_GROUP_NAME, publish_pipeline_name
from steps import columns as c
from steps import package_metadata, paths
from steps.errors import PipelineError

ROLE = "arn:aws:iam::123456789012:role/rfm"
GROUP = MODEL_PACKAGE_GROUP_NAME
PUBLISH = publish_pipeline_name()
SETTINGS = Settings(GROUP, PUBLISH, ROLE)
T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def sagemaker(fake_aws):
    with mock_aws():
        client = boto3.client("sagemaker", region_name="us-east-1")
        client.create_model_package_group(ModelPackageGroupName=GROUP)
        client.create_pipeline(PipelineName=PUBLISH, RoleArn=ROLE, PipelineDefinition=json.dumps(
            {"Version": "2020-12-01", "Parameters": [], "Steps": []}))
        yield client


def metadata(status: str = "PendingManualApproval", **extra: str) -> dict[str, str]:
    return {package_metadata.FEATURES_URI: "s3://b/rfm/executions/e1/features",
            package_metadata.TRANSFORM_INPUT_URI: "s3://b/rfm/executions/e1/transform",
            package_metadata.REGISTERED_STATUS: status, **extra}


def approve(client, arn: str, **extra: str) -> None:
    # moto's UpdateModelPackage drops metadata that is not passed again (SageMaker keeps it).
    client.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved",
                                CustomerMetadataProperties=metadata(**extra))


def register(client, status: str = "PendingManualApproval", **extra: str) -> str:
    return client.create_model_package(
        ModelPackageGroupName=GROUP, ModelApprovalStatus=status, CustomerMetadataProperties=metadata(status, **extra),
        InferenceSpecification={"Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/rfm:1",
                                                "ModelDataUrl": "s3://b/model.tar.gz"}],
                                "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["text/csv"]},
    )["ModelPackageArn"]


def detail(arn: str, status: str = "Approved", group: str = GROUP) -> dict:
    return {"ModelPackageArn": arn, "ModelPackageGroupName": group, "ModelApprovalStatus": status}


def test_approving_a_pending_package_starts_the_publish_pipeline(sagemaker) -> None:
    arn = register(sagemaker)
    approve(sagemaker, arn)
    result = publish_approved(detail(arn), sagemaker, SETTINGS)
    assert result["status"] == "started"
    parameters = sagemaker.list_pipeline_parameters_for_execution(PipelineExecutionArn=result["execution_arn"])
    values = {p["Name"]: p["Value"] for p in parameters["PipelineParameters"]}
    assert values == {"ModelName": result["model_name"], "ModelPackageArn": arn,
                      "FeaturesUrl": "s3://b/rfm/executions/e1/features",
                      "TransformInputUrl": "s3://b/rfm/executions/e1/transform"}
    model = sagemaker.describe_model(ModelName=result["model_name"])
    assert model["ExecutionRoleArn"] == ROLE
    assert [c["ModelPackageName"] for c in model["Containers"]] == [arn]  # the model serves the approved package


def test_an_approval_publishes_with_the_registering_runs_transform_instance_count(sagemaker) -> None:
    count = {package_metadata.TRANSFORM_INSTANCE_COUNT: "3"}
    arn = register(sagemaker, **count)
    approve(sagemaker, arn, **count)
    result = publish_approved(detail(arn), sagemaker, SETTINGS)
    parameters = sagemaker.list_pipeline_parameters_for_execution(PipelineExecutionArn=result["execution_arn"])
    values = {p["Name"]: p["Value"] for p in parameters["PipelineParameters"]}
    assert values["TransformInstanceCount"] == "3"
    assert values["TransformInputUrl"] == "s3://b/rfm/executions/e1/transform"


@pytest.mark.parametrize("recorded", ["0", "two", "-1", "1.5"])
def test_a_bad_recorded_transform_instance_count_is_a_clear_error_and_starts_nothing(sagemaker, recorded: str) -> None:
    count = {package_metadata.TRANSFORM_INSTANCE_COUNT: recorded}
    arn = register(sagemaker, **count)
    approve(sagemaker, arn, **count)
    with pytest.raises(PipelineError, match=rf"transform_instance_count='{re.escape(recorded)}' .* not a count"):
        publish_approved(detail(arn), sagemaker, SETTINGS)
    assert sagemaker.list_pipeline_executions(PipelineName=PUBLISH)["PipelineExecutionSummaries"] == []


def test_a_repeated_event_reuses_the_model(sagemaker) -> None:
    arn = register(sagemaker)
    approve(sagemaker, arn)
    first = publish_approved(detail(arn), sagemaker, SETTINGS)
    second = publish_approved(detail(arn), sagemaker, SETTINGS)
    assert first["model_name"] == second["model_name"]


@pytest.mark.parametrize(("event", "reason"), [
    ({"ModelApprovalStatus": "Rejected"}, "not Approved"),
    ({"ModelApprovalStatus": "PendingManualApproval"}, "not Approved"),
    ({"ModelPackageGroupName": "Other"}, "is not"),
])
def test_other_events_publish_nothing(sagemaker, event: dict, reason: str) -> None:
    arn = register(sagemaker)
    result = publish_approved({**detail(arn), **event}, sagemaker, SETTINGS)
    assert result["status"] == "ignored" and reason in result["reason"]
    assert sagemaker.list_pipeline_executions(PipelineName=PUBLISH)["PipelineExecutionSummaries"] == []


def test_a_package_registered_approved_is_published_by_its_own_run(sagemaker) -> None:
    arn = register(sagemaker, status="Approved")
    result = publish_approved(detail(arn), sagemaker, SETTINGS)
    assert result["status"] == "ignored" and "registered Approved" in result["reason"]


def test_model_names_are_valid_and_stable() -> None:
    arn = "arn:aws:sagemaker:us-east-1:123456789012:model-package/" + "g" * 80 + "/12"
    name = model_name_for(arn, "rfm")
    assert name == model_name_for(arn, "rfm") and len(name) <= 63
    assert all(ch.isalnum() or ch == "-" for ch in name)


def test_rfm_approve_sagemaker_picks_the_newest_pending_package(sagemaker) -> None:
    register(sagemaker)
    newest = register(sagemaker)
    assert approve_sagemaker(sagemaker, None, GROUP)["model_package_arn"] == newest
    assert sagemaker.describe_model_package(ModelPackageName=newest)["ModelApprovalStatus"] == "Approved"


def register_with_report(client, report: str) -> str:
    return client.create_model_package(
        ModelPackageGroupName=GROUP, ModelApprovalStatus="PendingManualApproval",
        CustomerMetadataProperties={**metadata(), package_metadata.REPORT_URI: report},
        InferenceSpecification={"Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/rfm:1",
                                                "ModelDataUrl": "s3://b/model.tar.gz"}],
                                "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["text/csv"]},
    )["ModelPackageArn"]


def test_rfm_approve_sagemaker_names_the_packages_own_report(sagemaker) -> None:
    older = register_with_report(sagemaker, "s3://b/rfm/model/e1/evaluation/report.html")
    newest = register_with_report(sagemaker, "s3://b/rfm/model/e2/evaluation/report.html")
    assert approve_sagemaker(sagemaker, None, GROUP) == {
        "model_package_arn": newest, "report": "s3://b/rfm/model/e2/evaluation/report.html"}
    assert approve_sagemaker(sagemaker, older, GROUP, "Rejected")["report"] == (
        "s3://b/rfm/model/e1/evaluation/report.html")
    assert approve_sagemaker(sagemaker, register(sagemaker), GROUP)["report"] == ""  # registered without one


def test_rfm_approve_sagemaker_prints_the_report_uri(sagemaker, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    arn = register_with_report(sagemaker, "s3://b/rfm/model/e7/evaluation/report.html")
    assert main(["approve", "--sagemaker", "--region", "us-east-1", arn]) == 0
    out = capsys.readouterr().out
    assert f"{arn} is Approved" in out
    assert "its report (the one to review): s3://b/rfm/model/e7/evaluation/report.html" in out


def test_an_event_without_a_package_is_a_clear_error(sagemaker) -> None:
    with pytest.raises(PipelineError, match="ModelPackageArn"):
        publish_approved(detail(""), sagemaker, SETTINGS)


def test_missing_configuration_is_a_clear_error() -> None:
    with pytest.raises(PipelineError, match="MODEL_PACKAGE_GROUP"):
        Settings.from_env({})


def test_local_approval_publishes_the_pending_package(pending_run, tmp_path: Path) -> None:
    run = pending_run.copy_to(tmp_path / "run")
    registry = LocalRegistry(run / paths.REGISTRY_FILE)
    arn = registry.packages()[-1]["ModelPackageArn"]
    with pytest.raises(PipelineError, match="only Approved"):
        registry.create_model("too-early", arn)
    assert not (run / "segments" / paths.SEGMENTS_FILE).exists()
    result = approve_local(run, None)
    assert result["status"] == "started" and result["model_package_arn"] == arn
    segments = pd.read_parquet(run / "segments" / paths.SEGMENTS_FILE)
    features = pd.read_parquet(run / "features" / paths.RFM_FILE)
    assert set(segments[c.CUSTOMER_ID]) == set(features[c.CUSTOMER_ID])
    assert registry.get(arn)["ModelApprovalStatus"] == "Approved"
    with pytest.raises(PipelineError, match="waiting for approval"):
        approve_local(run, None)


class SageMakerRefusingDuplicates:
    """The moto client, but CreateModel refuses an existing name as SageMaker does (moto accepts it)."""

    def __init__(self, client) -> None:
        self._client = client
        self.create_model_calls = 0

    def __getattr__(self, name: str):
        return getattr(self._client, name)

    def create_model(self, **kwargs):
        self.create_model_calls += 1
        try:
            self._client.describe_model(ModelName=kwargs["ModelName"])
        except ClientError:
            return self._client.create_model(**kwargs)
        raise ClientError({"Error": {"Code": "ValidationException", "Message":
                                     f'Cannot create already existing model "{kwargs["ModelName"]}".'}},
                          "CreateModel")


def test_a_repeated_event_reuses_the_model_sagemaker_refuses_to_create_twice(sagemaker) -> None:
    arn = register(sagemaker)
    approve(sagemaker, arn)
    refusing = SageMakerRefusingDuplicates(sagemaker)
    first = publish_approved(detail(arn), refusing, SETTINGS)
    second = publish_approved(detail(arn), refusing, SETTINGS)
    assert first["status"] == second["status"] == "started"
    assert first["model_name"] == second["model_name"] and refusing.create_model_calls == 2
    assert len(sagemaker.list_models()["Models"]) == 1


def test_another_create_model_failure_is_a_clear_error(sagemaker) -> None:
    arn = register(sagemaker)
    approve(sagemaker, arn)

    class Refusing(SageMakerRefusingDuplicates):
        def create_model(self, **kwargs):
            raise ClientError({"Error": {"Code": "ValidationException",
                                         "Message": "Model package is not Approved"}}, "CreateModel")

    with pytest.raises(PipelineError) as caught:
        publish_approved(detail(arn), Refusing(sagemaker), SETTINGS)
    assert (caught.value.what, caught.value.where, caught.value.fix) == (
        "cannot create a model from the package (Model package is not Approved)", arn,
        "check that it is Approved and the role may read its artifacts")
    assert sagemaker.list_pipeline_executions(PipelineName=PUBLISH)["PipelineExecutionSummaries"] == []


def test_a_create_model_failure_without_a_message_is_still_one_line(sagemaker) -> None:
    arn = register(sagemaker)
    approve(sagemaker, arn)

    class Refusing(SageMakerRefusingDuplicates):
        def create_model(self, **kwargs):
            raise ClientError({"Error": {"Code": "InternalFailure"}}, "CreateModel")

    with pytest.raises(PipelineError) as caught:
        publish_approved(detail(arn), Refusing(sagemaker), SETTINGS)
    assert (caught.value.what, caught.value.where) == ("cannot create a model from the package ()", arn)


def test_a_package_registered_approved_and_approved_again_later_is_published(sagemaker) -> None:
    """Registered Approved, later Rejected and re-approved: the re-approval publishes."""
    arn = register(sagemaker, status="Approved")
    for status in ("Rejected", "Approved"):  # SageMaker keeps the metadata; moto needs it passed again
        sagemaker.update_model_package(ModelPackageArn=arn, ModelApprovalStatus=status,
                                       CustomerMetadataProperties=metadata("Approved"))
    result = publish_approved(detail(arn), sagemaker, SETTINGS)
    assert result["status"] == "started"
    assert sagemaker.list_pipeline_executions(PipelineName=PUBLISH)["PipelineExecutionSummaries"]


@pytest.mark.parametrize(("registered", "created", "modified", "ignored"), [
    ("Approved", T0, None, True),  # the creation event of a package registered Approved
    ("Approved", T0, T0, True),  # SageMaker reports the creation time as the last change
    ("Approved", T0, T0 + timedelta(minutes=5), False),  # changed after registration: a new approval
    ("PendingManualApproval", T0, T0 + timedelta(minutes=5), False),
    ("PendingManualApproval", T0, None, False),
])
def test_which_approved_packages_publish(registered, created, modified, ignored) -> None:
    package = {"ModelApprovalStatus": "Approved", "CustomerMetadataProperties": metadata(registered),
               "CreationTime": created, "LastModifiedTime": modified}
    reason = ignore_reason(detail("arn:x"), package, SETTINGS)
    assert (reason is not None) == ignored
    if ignored:
        assert "registered Approved" in reason


def test_an_approved_package_of_another_group_or_status_is_ignored_before_reading_it() -> None:
    class NoCalls:
        def __getattr__(self, name: str):
            raise AssertionError(f"unexpected call {name}")

    for event in (detail("arn:x", status="Rejected"), detail("arn:x", group="Other")):
        assert publish_approved(event, NoCalls(), SETTINGS)["status"] == "ignored"


@dataclass
class LambdaContext:
    function_name: str = "rfm-approval"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:rfm-approval"
    aws_request_id: str = "00000000-0000-0000-0000-000000000002"


def state_change_event(arn: str) -> dict:
    return {"version": "0", "id": "e1", "detail-type": "SageMaker Model Package State Change",
            "source": "aws.sagemaker", "account": "123456789012", "time": "2024-01-01T00:00:00Z",
            "region": "us-east-1", "resources": [arn], "detail": detail(arn)}


@pytest.fixture
def lambda_environment(sagemaker, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"MODEL_PACKAGE_GROUP": GROUP, "PUBLISH_PIPELINE_NAME": PUBLISH,
                        "MODEL_EXECUTION_ROLE_ARN": ROLE, "MODEL_NAME_PREFIX": "seg"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(approval_app, "_runtime", None)  # a cold container


def test_handler_publishes_an_approved_package_from_the_eventbridge_event(sagemaker, lambda_environment) -> None:
    arn = register(sagemaker)
    approve(sagemaker, arn)
    result = approval_app.handler(state_change_event(arn), LambdaContext())
    assert result["status"] == "started" and result["model_name"].startswith("seg-")
    [execution] = sagemaker.list_pipeline_executions(PipelineName=PUBLISH)["PipelineExecutionSummaries"]
    assert execution["PipelineExecutionArn"] == result["execution_arn"]


@pytest.mark.parametrize("event", [{}, {"detail": "not an object"}, ["not", "an", "event"]])
def test_handler_refuses_what_is_not_an_eventbridge_event(lambda_environment, event) -> None:
    with pytest.raises(PipelineError, match="not an EventBridge event"):
        approval_app.handler(event, LambdaContext())


def test_handler_without_configuration_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MODEL_PACKAGE_GROUP", "PUBLISH_PIPELINE_NAME", "MODEL_EXECUTION_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(approval_app, "_runtime", None)
    with pytest.raises(PipelineError, match="MODEL_PACKAGE_GROUP, PUBLISH_PIPELINE_NAME, MODEL_EXECUTION_ROLE_ARN"):
        approval_app.handler(state_change_event("arn:x"), LambdaContext())


def test_model_names_are_valid_readable_and_distinct() -> None:
    import re

    valid = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")  # SageMaker's ModelName pattern
    arn = "arn:aws:sagemaker:us-east-1:123456789012:model-package/{}"
    seven, eight = model_name_for(arn.format("rfm-segments/7"), "rfm"), model_name_for(arn.format("rfm-segments/8"),
                                                                                       "rfm")
    assert re.fullmatch(r"rfm-rfm-segments-7-[0-9a-f]{8}", seven) and seven != eight
    odd = model_name_for(arn.format("Xgroup_v.2/3"), "X")
    assert re.fullmatch(r"X-Xgroup-v-2-3-[0-9a-f]{8}", odd), odd
    long = model_name_for(arn.format("g" * 100 + "/3"), "rfm")
    assert len(long) == 63 and valid.fullmatch(long) and long.startswith("rfm-ggg")


@pytest.mark.parametrize(("event", "reason"), [
    (detail("arn:x", status="Rejected"), "status is 'Rejected', not Approved"),
    ({"ModelPackageArn": "arn:x", "ModelPackageGroupName": GROUP}, "status is None, not Approved"),
    (detail("arn:x", group="Other"), f"package group 'Other' is not {GROUP!r}"),
    ({"ModelPackageArn": "arn:x", "ModelApprovalStatus": "Approved"}, f"package group None is not {GROUP!r}"),
])
def test_an_ignored_event_says_why_in_full(event: dict, reason: str) -> None:
    """The result (and the log line) name the status or group that stopped the publish."""
    assert publish_approved(event, None, SETTINGS) == {"status": "ignored", "reason": reason,
                                                       "model_package_arn": "arn:x"}


def test_a_package_registered_approved_is_ignored_with_its_whole_reason(sagemaker) -> None:
    arn = register(sagemaker, status="Approved")
    assert publish_approved(detail(arn), sagemaker, SETTINGS) == {
        "status": "ignored", "model_package_arn": arn,
        "reason": "registered Approved: the run that registered it publishes its segments"}


def test_a_package_without_metadata_is_not_taken_for_one_registered_approved(sagemaker) -> None:
    """No registration metadata: not ignored, but stopped with one line naming the metadata it lacks."""
    package = {"ModelApprovalStatus": "Approved", "CreationTime": T0, "LastModifiedTime": T0}
    assert ignore_reason(detail("arn:x"), package, SETTINGS) is None
    assert ignore_reason(detail("arn:x"), {**package, "CustomerMetadataProperties": None}, SETTINGS) is None

    class WithoutMetadata:
        def describe_model_package(self, ModelPackageName: str) -> dict:  # noqa: N803 (boto3's spelling)
            return {**package, "ModelPackageArn": ModelPackageName}

    with pytest.raises(PipelineError) as caught:
        publish_approved(detail("arn:x"), WithoutMetadata(), SETTINGS)
    assert caught.value.what == (f"the package has no {package_metadata.FEATURES_URI}, "
                                 f"{package_metadata.TRANSFORM_INPUT_URI} metadata")


def test_reusing_an_existing_model_is_logged_with_its_name(sagemaker) -> None:
    """The operator sees in the log that the repeated event reused the model, and which one."""
    import io

    arn = register(sagemaker)
    approve(sagemaker, arn)
    refusing = SageMakerRefusingDuplicates(sagemaker)
    publish_approved(detail(arn), refusing, SETTINGS)
    stream = io.StringIO()
    previous, approval_app.logger.registered_handler.stream = approval_app.logger.registered_handler.stream, stream
    try:
        second = publish_approved(detail(arn), refusing, SETTINGS)
    finally:
        approval_app.logger.registered_handler.stream = previous
    logs = [json.loads(line) for line in stream.getvalue().splitlines()]
    reused = [entry for entry in logs if entry["message"] == "Model exists; reusing it"]
    assert [entry["model_name"] for entry in reused] == [second["model_name"]]


@pytest.mark.parametrize(("group", "prefix", "readable"), [
    ("rfm-model-package", "rfm", "rfm-rfm-model-package-3"),  # a group named like the ARN's resource type
    ("churn", "", "churn-3"),  # MODEL_NAME_PREFIX set empty
    ("churn", "_team", "team-churn-3"),  # a prefix that starts with what a name may not
])
def test_model_names_keep_the_group_and_start_and_end_validly(group: str, prefix: str, readable: str) -> None:
    import re

    arn = f"arn:aws:sagemaker:us-east-1:123456789012:model-package/{group}/3"
    name = model_name_for(arn, prefix)
    assert re.fullmatch(rf"{readable}-[0-9a-f]{{8}}", name), name
    assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", name)  # SageMaker's ModelName pattern
