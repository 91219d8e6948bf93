"""A local model registry in one JSON file (``registry.json``), shaped like SageMaker's.

Model package groups hold versioned packages with an approval status
(``PendingManualApproval``, ``Approved``, ``Rejected``), the model data URL,
model metrics and customer metadata, as ``CreateModelPackage`` would store them.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from pipeline.parameters import APPROVAL_STATUSES
from steps.errors import PipelineError

# Set to the publishing execution's id once a package's segments were exported; packages registered
# before this key existed lack it and count as published (nothing to offer again).
PUBLISHED = "PublishedByExecution"

# The account, region and role local ARNs name (SageMaker's own shapes, nothing in AWS).
LOCAL_ACCOUNT = "000000000000"
LOCAL_REGION = "local"
LOCAL_ROLE = f"arn:aws:iam::{LOCAL_ACCOUNT}:role/rfm-local"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def package_arn(group: str, version: int) -> str:
    return f"arn:aws:sagemaker:{LOCAL_REGION}:{LOCAL_ACCOUNT}:model-package/{group.lower()}/{version}"


class LocalRegistry:
    """Model packages in ``path`` (created on first write)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _load(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {"ModelPackageGroups": {}}
        try:
            return json.loads(self.path.read_text())
        except json.JSONDecodeError as error:
            raise PipelineError(f"the local registry is not valid JSON ({error})", str(self.path)) from None

    def _save(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        temporary.replace(self.path)

    def create_package(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Register a package from resolved RegisterModel step arguments."""
        status = arguments.get("ModelApprovalStatus", "PendingManualApproval")
        if status not in APPROVAL_STATUSES:
            raise PipelineError(
                f"ModelApprovalStatus {status!r} is not one of {', '.join(APPROVAL_STATUSES)}", "RegisterSegmenter"
            )
        data = self._load()
        group = arguments["ModelPackageGroupName"]
        packages = data["ModelPackageGroups"].setdefault(group, {"ModelPackages": []})["ModelPackages"]
        version = len(packages) + 1
        package = {
            "ModelPackageArn": package_arn(group, version),
            "ModelPackageGroupName": group,
            "ModelPackageVersion": version,
            "ModelApprovalStatus": status,
            "CreationTime": _now(),
            # Local bookkeeping (not a SageMaker field): whether this package's segments were published.
            PUBLISHED: False,
            **{k: v for k, v in arguments.items() if k not in {"ModelApprovalStatus", "ModelPackageGroupName"}},
        }
        packages.append(package)
        self._save(data)
        return package

    def packages(self, group: str | None = None) -> list[dict[str, Any]]:
        groups = self._load()["ModelPackageGroups"]
        return [p for name, g in sorted(groups.items()) if group in (None, name) for p in g["ModelPackages"]]

    def get(self, arn: str) -> dict[str, Any]:
        for package in self.packages():
            if package["ModelPackageArn"] == arn:
                return package
        raise PipelineError("no such model package in the local registry", arn, "list them with `rfm approve --list`")

    def mark_published(self, arn: str, execution_id: str) -> None:
        """Record that ``execution_id`` exported the segments of package ``arn``."""
        self._change(arn, {PUBLISHED: execution_id})

    def unpublished_approved(self, group: str | None = None) -> list[dict[str, Any]]:
        """Approved packages whose segments were never exported (a run interrupted after registration)."""
        return [p for p in self.packages(group) if p["ModelApprovalStatus"] == "Approved" and p.get(PUBLISHED) is False]

    def update_status(self, arn: str, status: str) -> dict[str, Any]:
        if status not in APPROVAL_STATUSES:
            raise PipelineError(f"status {status!r} is not one of {', '.join(APPROVAL_STATUSES)}", arn)
        return self._change(arn, {"ModelApprovalStatus": status, "LastModifiedTime": _now()})

    def _change(self, arn: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Set ``fields`` on package ``arn`` and save; the package as it is now."""
        data = self._load()
        for group in data["ModelPackageGroups"].values():
            for package in group["ModelPackages"]:
                if package["ModelPackageArn"] == arn:
                    package.update(fields)
                    self._save(data)
                    return package
        raise PipelineError("no such model package in the local registry", arn)

    def create_model(self, name: str, package_arn: str) -> dict[str, Any]:
        """A model from a package, as ``CreateModel(Containers=[{ModelPackageName}])``: Approved only."""
        package = self.get(package_arn)
        data = self._load()
        if name in data.get("Models", {}):
            raise PipelineError(f"model {name} already exists", package_arn, "a model name is used once")
        if package["ModelApprovalStatus"] != "Approved":
            raise PipelineError(
                f"model package is {package['ModelApprovalStatus']}, and only Approved packages can be deployed",
                package_arn, f"approve it: rfm approve {package_arn}",
            )
        model = {"ModelName": name, "ModelPackageName": package_arn,
                 "ModelDataUrl": package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"],
                 "CreationTime": _now()}
        data.setdefault("Models", {})[name] = model
        self._save(data)
        return model

    def models(self) -> dict[str, str]:
        """Model name -> model data URL of the models created from packages."""
        return {name: m["ModelDataUrl"] for name, m in self._load().get("Models", {}).items()}
