"""Publishing only through approval: the approval Lambda under moto, and `rfm approve` locally."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pandas as pd
import pytest
from moto import mock_aws

from lambdas.approval.app import Settings, model_name_for, publish_approved
from pipeline.local.approval import approve_local, approve_sagemaker
from pipeline.local.registry import LocalRegistry
from pipeline.local.run_local import run_local
from pipeline.naming import MODEL_PACKAGE_GROUP_NAME, publish_pipeline_name
from steps import columns as c
from steps import package_metadata, paths
from steps.errors import PipelineError
from tests.conftest import SAMPLE

ROLE = "arn:aws:iam::123456789012:role/rfm"
GROUP = MODEL_PACKAGE_GROUP_NAME
PUBLISH = publish_pipeline_name()
SETTINGS = Settings(GROUP, PUBLISH, ROLE)


@pytest.fixture
def sagemaker(fake_aws):
    with mock_aws():
        client = boto3.client("sagemaker", region_name="us-east-1")
        client.create_model_package_group(ModelPackageGroupName=GROUP)
        client.create_pipeline(PipelineName=PUBLISH, RoleArn=ROLE, PipelineDefinition=json.dumps(
            {"Version": "2020-12-01", "Parameters": [], "Steps": []}))
        yield client


def metadata(status: str = "PendingManualApproval") -> dict[str, str]:
    return {package_metadata.FEATURES_URI: "s3://b/rfm/executions/e1/features",
            package_metadata.TRANSFORM_INPUT_URI: "s3://b/rfm/executions/e1/transform",
            package_metadata.REGISTERED_STATUS: status}


def approve(client, arn: str) -> None:
    # moto's UpdateModelPackage drops metadata that is not passed again (SageMaker keeps it).
    client.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved",
                                CustomerMetadataProperties=metadata())


def register(client, status: str = "PendingManualApproval") -> str:
    return client.create_model_package(
        ModelPackageGroupName=GROUP, ModelApprovalStatus=status, CustomerMetadataProperties=metadata(status),
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
    assert approve_sagemaker(sagemaker, None, GROUP) == newest
    assert sagemaker.describe_model_package(ModelPackageName=newest)["ModelApprovalStatus"] == "Approved"


def test_an_event_without_a_package_is_a_clear_error(sagemaker) -> None:
    with pytest.raises(PipelineError, match="ModelPackageArn"):
        publish_approved(detail(""), sagemaker, SETTINGS)


def test_missing_configuration_is_a_clear_error() -> None:
    with pytest.raises(PipelineError, match="MODEL_PACKAGE_GROUP"):
        Settings.from_env({})


@pytest.fixture(scope="module")
def pending_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("pending")
    result = run_local(str(SAMPLE), output, {})
    assert result.status == "Succeeded", result.failure
    return output


def test_local_approval_publishes_the_pending_package(pending_run: Path) -> None:
    registry = LocalRegistry(pending_run / paths.REGISTRY_FILE)
    arn = registry.packages()[-1]["ModelPackageArn"]
    with pytest.raises(PipelineError, match="only Approved"):
        registry.create_model("too-early", arn)
    assert not (pending_run / "segments" / paths.SEGMENTS_FILE).exists()
    result = approve_local(pending_run, None)
    assert result["status"] == "started" and result["model_package_arn"] == arn
    segments = pd.read_parquet(pending_run / "segments" / paths.SEGMENTS_FILE)
    features = pd.read_parquet(pending_run / "features" / paths.RFM_FILE)
    assert set(segments[c.CUSTOMER_ID]) == set(features[c.CUSTOMER_ID])
    assert registry.get(arn)["ModelApprovalStatus"] == "Approved"
    with pytest.raises(PipelineError, match="waiting for approval"):
        approve_local(pending_run, None)

