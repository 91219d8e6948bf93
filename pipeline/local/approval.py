"""``rfm approve`` on this machine: the same approval rules as SageMaker's, with the local registry.

Approving a package in the local registry does what the EventBridge rule and the
approval Lambda do on AWS: :func:`lambdas.approval.app.publish_approved` runs
unchanged against :class:`LocalSageMaker`, a stand-in for the four SageMaker calls it
makes, whose ``start_pipeline_execution`` runs the publish pipeline locally.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from pipeline.local.registry import LOCAL_ACCOUNT, LOCAL_REGION, LOCAL_ROLE, LocalRegistry
from pipeline.local.runner import ExecutionResult, StepRun
from pipeline.local.step_types import capture_lambda_logs
from pipeline.naming import MODEL_PACKAGE_GROUP_NAME, publish_pipeline_name
from steps import package_metadata, paths
from steps.errors import PipelineError, RFMError


class LocalSageMaker:
    """The SageMaker calls of the approval handler, answered from the local registry."""

    def __init__(self, registry: LocalRegistry, run_publish: Callable[[dict[str, str]], ExecutionResult]) -> None:
        self.registry = registry
        self.run_publish = run_publish

    def describe_model_package(self, ModelPackageName: str) -> dict[str, Any]:  # noqa: N803 (boto3 names)
        return self.registry.get(ModelPackageName)

    def create_model(self, ModelName: str, ExecutionRoleArn: str, Containers: list[dict]) -> dict:  # noqa: N803
        try:
            self.registry.create_model(ModelName, Containers[0]["ModelPackageName"])
        except RFMError as error:
            raise ClientError({"Error": {"Code": "ValidationException", "Message": str(error)}},
                              "CreateModel") from None
        return {"ModelArn": f"arn:aws:sagemaker:{LOCAL_REGION}:{LOCAL_ACCOUNT}:model/{ModelName.lower()}"}

    def start_pipeline_execution(self, PipelineName: str, PipelineParameters: list[dict],  # noqa: N803
                                 **_options: Any) -> dict[str, str]:
        result = self.run_publish({p["Name"]: p["Value"] for p in PipelineParameters})
        if result.status != "Succeeded":
            raise PipelineError(f"publishing failed: {result.failure}", PipelineName)
        return {"PipelineExecutionArn": f"arn:aws:sagemaker:{LOCAL_REGION}:{LOCAL_ACCOUNT}:pipeline/"
                                        f"{PipelineName.lower()}/execution/{result.execution_id}"}


def waiting_packages(registry: LocalRegistry, group: str = MODEL_PACKAGE_GROUP_NAME) -> list[dict[str, Any]]:
    """Packages of ``group`` an approval would publish, oldest first: pending ones, and Approved ones whose
    segments were never published (a run interrupted or failed after RegisterSegmenter)."""
    unpublished = {p["ModelPackageArn"] for p in registry.unpublished_approved(group)}
    return [p for p in registry.packages(group)
            if p["ModelApprovalStatus"] == "PendingManualApproval" or p["ModelPackageArn"] in unpublished]


def pending_package(registry: LocalRegistry, group: str = MODEL_PACKAGE_GROUP_NAME) -> str:
    """The newest package of ``group`` waiting for approval (or approved but never published)."""
    waiting = waiting_packages(registry, group)
    if not waiting:
        raise PipelineError(f"no package of {group} is waiting for approval", str(registry.path),
                            "run `rfm run-local --input ...` first, or name a package: rfm approve ARN")
    return waiting[-1]["ModelPackageArn"]


def published_package(output: Path) -> str | None:
    """The model package whose segments are published now (the local last publish's manifest); None before
    any, or when that manifest cannot be read (the next publish says why)."""
    from pipeline.local.run_local import LOCAL_BUCKET, LOCAL_KWARGS
    from pipeline.local.store import export_storage
    from steps.published import read_manifest

    uri = f"s3://{LOCAL_BUCKET}/{LOCAL_KWARGS['base_job_prefix']}/{paths.PUBLISHED_DIR}"
    try:
        manifest = read_manifest(export_storage(Path(output) / "s3"), uri)
    except PipelineError:
        return None
    return (manifest or {}).get("model_package_arn") or None


def newer_published(output: Path, registry: LocalRegistry, package_arn: str) -> dict[str, Any] | None:
    """The published package when it is newer than ``package_arn`` (same group), else None."""
    current = published_package(output)
    if not current or current == package_arn:
        return None
    try:
        chosen, published = registry.get(package_arn), registry.get(current)
    except PipelineError:
        return None
    newer = (published["ModelPackageGroupName"] == chosen["ModelPackageGroupName"]
             and published["ModelPackageVersion"] > chosen["ModelPackageVersion"])
    return published if newer else None


def report_of(output: Path, package: dict[str, Any]) -> str:
    """Where the report of ``package`` is: ``reports/<version>.html``.

    A run stopped after RegisterSegmenter never kept that copy: it is made then from the report the
    package's metadata names (in the run's local S3 folder), stamped with the package. Only a report
    that is nowhere on this machine is given as its URI.
    """
    from pipeline.local.store import export_storage
    from pipeline.local.summary import package_report_path
    from steps.report.render import stamp_package

    local = package_report_path(output, package["ModelPackageVersion"])
    if local.is_file():
        return str(local)
    uri = (package.get("CustomerMetadataProperties") or {}).get(package_metadata.REPORT_URI, "")
    try:
        page = export_storage(Path(output) / "s3").read_bytes(uri).decode("utf-8") if uri else None
    except FileNotFoundError:
        page = None
    if page is None:
        return uri
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text(stamp_package(page, package["ModelPackageArn"], package["ModelApprovalStatus"], str(local)),
                     encoding="utf-8")
    return str(local)


def approve_local(output: Path, package_arn: str | None, on_step: Callable[[StepRun], None] | None = None,
                  status: str = "Approved") -> dict[str, Any]:
    """Set a local package's status; when Approved, publish its segments as AWS would."""
    from lambdas.approval.app import Settings, publish_approved
    from pipeline.local.run_local import PUBLISH_PIPELINE, default_cache_dir, execute, timed_build

    output = paths.output_folder(Path(output).resolve())
    registry = LocalRegistry(output / paths.REGISTRY_FILE)
    package_arn = package_arn or pending_package(registry)
    package = registry.update_status(package_arn, status)
    report = report_of(output, package)
    if status != "Approved":
        return {"status": "ignored", "reason": f"status is {status}", "model_package_arn": package_arn,
                "report": report}

    def run_publish(params: dict[str, str]) -> ExecutionResult:
        definition = timed_build(default_cache_dir(), PUBLISH_PIPELINE, on_step)
        return execute(definition, params, output, on_step)

    sagemaker = LocalSageMaker(registry, run_publish)
    settings = Settings(package["ModelPackageGroupName"], publish_pipeline_name(), LOCAL_ROLE)
    detail = {"ModelPackageArn": package_arn, "ModelPackageGroupName": package["ModelPackageGroupName"],
              "ModelApprovalStatus": "Approved"}
    with capture_lambda_logs(output / "logs" / "approval.log"):
        return {**publish_approved(detail, sagemaker, settings), "report": report}


def approve_sagemaker(client: Any, package_arn: str | None, group: str, status: str = "Approved") -> dict[str, str]:
    """Set a package's status in SageMaker's registry (the EventBridge rule publishes it) and say where its report is.

    The package is described first (``sagemaker:DescribeModelPackage``, in ApproverPolicy), so a
    package that cannot be read is refused before its status changes.

    Returns
    -------
    dict
        ``model_package_arn``, and ``report``: its metadata's ``report_uri`` (the ``report.html``
        the evaluation step wrote beside ``evaluation.json``), empty when it has none.
    """
    if package_arn is None:
        pages = client.list_model_packages(ModelPackageGroupName=group, ModelApprovalStatus="PendingManualApproval",
                                           SortBy="CreationTime", SortOrder="Descending", MaxResults=1)
        packages = pages.get("ModelPackageSummaryList", [])
        if not packages:
            raise PipelineError(f"no package of {group} is waiting for approval", "SageMaker model registry",
                                "name a package: rfm approve --sagemaker ARN")
        package_arn = packages[0]["ModelPackageArn"]
    package = client.describe_model_package(ModelPackageName=package_arn)
    report = (package.get("CustomerMetadataProperties") or {}).get(package_metadata.REPORT_URI, "")
    client.update_model_package(ModelPackageArn=package_arn, ModelApprovalStatus=status,
                                ApprovalDescription=f"{status} with rfm approve")
    return {"model_package_arn": package_arn, "report": report}
