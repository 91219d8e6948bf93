"""Publish the segments of a model package when it is approved.

Event contract
--------------
``handler(event, context)`` takes the EventBridge event "SageMaker Model Package State
Change" (``source: aws.sagemaker``; ``detail`` has ``ModelPackageArn``,
``ModelPackageGroupName``, ``ModelApprovalStatus``, ...). For an ``Approved`` package of
the configured group it

1. reads the package (``DescribeModelPackage``): the run's features and transform input
   URIs are in its ``CustomerMetadataProperties``;
2. creates a SageMaker model from the package (``CreateModel`` with ``ModelPackageName``;
   SageMaker refuses this for packages that are not Approved), reusing it if it exists;
3. starts the publish pipeline (``StartPipelineExecution``) with ``ModelName``,
   ``ModelPackageArn``, ``FeaturesUrl``, ``TransformInputUrl`` and ``TransformInstanceCount``
   (the registering run's count, from the package's ``transform_instance_count`` metadata; a
   package registered without it is published with the pipeline's default of 1), with a
   ``ClientRequestToken`` derived from the package and its approval time, so a repeated
   event starts nothing new.

A package registered already ``Approved`` was published by the run that registered it
(its ``approval_status_at_registration`` metadata says so); its creation event is skipped.

Configuration (environment): ``MODEL_PACKAGE_GROUP`` (required), ``PUBLISH_PIPELINE_NAME``
(required), ``MODEL_EXECUTION_ROLE_ARN`` (required: the role the model runs with),
``MODEL_NAME_PREFIX`` (default ``rfm``).

Returns ``{"status": "started" | "ignored", "reason": ..., "execution_arn": ..., "model_name": ...}``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import ClientError

from steps import package_metadata
from steps.errors import PipelineError

logger = Logger(service="rfm-approval")

MAX_MODEL_NAME = 63


@dataclass(frozen=True)
class Settings:
    """The approval handler's configuration, read once per container."""

    model_package_group: str
    publish_pipeline_name: str
    model_execution_role_arn: str
    model_name_prefix: str = "rfm"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        missing = [n for n in ("MODEL_PACKAGE_GROUP", "PUBLISH_PIPELINE_NAME", "MODEL_EXECUTION_ROLE_ARN")
                   if not environ.get(n)]
        if missing:
            raise PipelineError(f"missing configuration {', '.join(missing)}", "rfm-approval environment",
                                "set them on the function (template.yaml does)")
        return cls(environ["MODEL_PACKAGE_GROUP"], environ["PUBLISH_PIPELINE_NAME"],
                   environ["MODEL_EXECUTION_ROLE_ARN"], environ.get("MODEL_NAME_PREFIX", "rfm"))


def model_name_for(package_arn: str, prefix: str) -> str:
    """A valid, stable SageMaker model name for a package version (``[a-zA-Z0-9-]``, <= 63)."""
    # arn:aws:sagemaker:<region>:<account>:model-package/<group>/<version>; the group may end in "model-package"
    group_and_version = package_arn.split(":", 5)[-1].removeprefix("model-package/")
    readable = re.sub(r"[^a-zA-Z0-9-]+", "-", f"{prefix}-{group_and_version}").strip("-")
    digest = hashlib.sha256(package_arn.encode()).hexdigest()[:8]
    return f"{readable[: MAX_MODEL_NAME - 9]}-{digest}"


def ignore_reason(detail: Mapping[str, Any], package: Mapping[str, Any] | None, settings: Settings) -> str | None:
    """Why an event publishes nothing, or None when it should publish."""
    if detail.get("ModelApprovalStatus") != "Approved":
        return f"status is {detail.get('ModelApprovalStatus')!r}, not Approved"
    if detail.get("ModelPackageGroupName") != settings.model_package_group:
        return f"package group {detail.get('ModelPackageGroupName')!r} is not {settings.model_package_group!r}"
    if package is None:
        return None
    metadata = package.get("CustomerMetadataProperties") or {}
    created, modified = package.get("CreationTime"), package.get("LastModifiedTime")
    if metadata.get(package_metadata.REGISTERED_STATUS) == "Approved" and (modified is None or modified == created):
        return "registered Approved: the run that registered it publishes its segments"
    return None


def publish_approved(detail: Mapping[str, Any], sagemaker: Any, settings: Settings) -> dict[str, Any]:
    """Create a model from the approved package and start the publish pipeline.

    ``sagemaker`` is a boto3 SageMaker client (or the local runner's stand-in).
    """
    arn = detail.get("ModelPackageArn", "")
    reason = ignore_reason(detail, None, settings)
    if reason:
        logger.info("Ignored", extra={"model_package_arn": arn, "reason": reason})
        return {"status": "ignored", "reason": reason, "model_package_arn": arn}
    if not arn:
        raise PipelineError("the event has no detail.ModelPackageArn", "rfm-approval",
                            "route only 'SageMaker Model Package State Change' events to this function")
    package = sagemaker.describe_model_package(ModelPackageName=arn)
    reason = ignore_reason({**detail, "ModelApprovalStatus": package["ModelApprovalStatus"]}, package, settings)
    if reason:
        logger.info("Ignored", extra={"model_package_arn": arn, "reason": reason})
        return {"status": "ignored", "reason": reason, "model_package_arn": arn}
    metadata = package.get("CustomerMetadataProperties") or {}
    missing = [k for k in (package_metadata.FEATURES_URI, package_metadata.TRANSFORM_INPUT_URI) if not metadata.get(k)]
    if missing:
        raise PipelineError(f"the package has no {', '.join(missing)} metadata", arn,
                            "register packages with the rfm-segmentation pipeline")
    model_name = model_name_for(arn, settings.model_name_prefix)
    _create_model(sagemaker, model_name, arn, settings.model_execution_role_arn)
    approved_at = str(package.get("LastModifiedTime") or package.get("CreationTime") or "")
    token = "approve-" + hashlib.sha256(f"{arn}|{approved_at}".encode()).hexdigest()[:48]
    parameters = [
        {"Name": "ModelName", "Value": model_name},
        {"Name": "ModelPackageArn", "Value": arn},
        {"Name": "FeaturesUrl", "Value": metadata[package_metadata.FEATURES_URI]},
        {"Name": "TransformInputUrl", "Value": metadata[package_metadata.TRANSFORM_INPUT_URI]},
    ]
    count = transform_instance_count(metadata, arn)
    if count is None:
        logger.info("No transform instance count in the package metadata: the publish pipeline's default",
                    extra={"model_package_arn": arn})
    else:
        parameters.append({"Name": "TransformInstanceCount", "Value": str(count)})
    response = sagemaker.start_pipeline_execution(
        PipelineName=settings.publish_pipeline_name,
        PipelineExecutionDisplayName=model_name[:82],
        PipelineExecutionDescription=f"Publish the segments of approved package {arn}"[:3072],
        PipelineParameters=parameters,
        ClientRequestToken=token,
    )
    execution_arn = response["PipelineExecutionArn"]
    logger.info("Publish started", extra={"model_package_arn": arn, "execution_arn": execution_arn})
    return {"status": "started", "execution_arn": execution_arn, "model_name": model_name, "model_package_arn": arn}


def transform_instance_count(metadata: Mapping[str, str], package_arn: str) -> int | None:
    """The registering run's ``TransformInstanceCount`` from the package metadata; None when it has none
    (registered before the pipeline recorded it).

    Raises
    ------
    PipelineError
        When the recorded value is not a whole number of at least 1.
    """
    text = str(metadata.get(package_metadata.TRANSFORM_INSTANCE_COUNT, "")).strip()
    if not text:
        return None
    if not text.isdecimal() or int(text) < 1:
        raise PipelineError(f"{package_metadata.TRANSFORM_INSTANCE_COUNT}={text!r} in the package metadata is not "
                            "a count of instances", package_arn,
                            "set it to 1 or more (update-model-package --customer-metadata-properties), or remove it")
    return int(text)


def _create_model(sagemaker: Any, model_name: str, package_arn: str, role_arn: str) -> None:
    try:
        sagemaker.create_model(ModelName=model_name, ExecutionRoleArn=role_arn,
                               Containers=[{"ModelPackageName": package_arn}])
    except ClientError as error:
        message = str(error.response.get("Error", {}).get("Message", ""))
        if "already exist" in message.lower():
            logger.info("Model exists; reusing it", extra={"model_name": model_name})
            return
        raise PipelineError(f"cannot create a model from the package ({message})", package_arn,
                            "check that it is Approved and the role may read its artifacts") from error


@dataclass(frozen=True)
class _Runtime:
    settings: Settings
    sagemaker: Any


_runtime: _Runtime | None = None


def _get_runtime() -> _Runtime:
    global _runtime
    if _runtime is None:
        _runtime = _Runtime(Settings.from_env(), boto3.client("sagemaker"))
    return _runtime


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """EventBridge "SageMaker Model Package State Change" -> publish an approved package."""
    runtime = _get_runtime()
    if not isinstance(event, dict) or not isinstance(event.get("detail"), dict):
        raise PipelineError("not an EventBridge event (no detail object)", "rfm-approval",
                            "route only 'SageMaker Model Package State Change' events to this function")
    detail = EventBridgeEvent(event).detail
    logger.append_keys(correlation_id=detail.get("ModelPackageArn", ""))
    return publish_approved(detail, runtime.sagemaker, runtime.settings)
