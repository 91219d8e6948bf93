"""Where the local runner keeps what SageMaker would keep in S3.

``FolderStore`` maps ``s3://bucket/key`` to ``<root>/bucket/key`` on disk;
``S3Store`` talks to a real S3 API (an S3-compatible endpoint such as moto's
when ``AWS_ENDPOINT_URL`` is set). Plain paths and ``file://`` URIs are read
from disk in both.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from steps.errors import PipelineError

if TYPE_CHECKING:
    from lambdas.export.storage import Storage


def split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def _copy(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True)
    elif source.is_file():
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / source.name)
    else:
        raise PipelineError("nothing at this location", str(source), "check the input URI")


class FolderStore:
    """S3 URIs as folders under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def local_path(self, uri: str) -> Path:
        if uri.startswith("s3://"):
            bucket, key = split_s3(uri)
            return self.root / bucket / key
        return Path(uri.removeprefix("file://"))

    def download(self, uri: str, target: Path) -> None:
        """Copy the object or prefix at ``uri`` into the folder ``target``."""
        _copy(self.local_path(uri), target)

    def upload(self, source: Path, uri: str) -> None:
        """Copy the folder ``source`` to the prefix ``uri``."""
        _copy(source, self.local_path(uri))

    def upload_file(self, source: Path, uri: str) -> None:
        target = self.local_path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)

    def event_uri(self, uri: str) -> str:
        """How an in-process Lambda should see ``uri`` (a local path here)."""
        return str(self.local_path(uri)) if uri.startswith("s3://") else uri


class S3Store:
    """A real S3 API (an endpoint from ``AWS_ENDPOINT_URL``, e.g. moto on loopback)."""

    def __init__(self, client=None) -> None:
        import boto3

        self.client = client or boto3.client("s3")

    def download(self, uri: str, target: Path) -> None:
        if not uri.startswith("s3://"):
            return _copy(Path(uri.removeprefix("file://")), target)
        bucket, key = split_s3(uri)
        target.mkdir(parents=True, exist_ok=True)
        paginator = self.client.get_paginator("list_objects_v2")
        found = False
        folder = key if key.endswith("/") or not key else key + "/"
        for page in paginator.paginate(Bucket=bucket, Prefix=key):
            for obj in page.get("Contents", []):
                if obj["Key"] != key and not obj["Key"].startswith(folder):
                    continue  # a sibling such as key-old/...
                relative = obj["Key"][len(key):].lstrip("/") or Path(obj["Key"]).name
                if obj["Key"].endswith("/"):
                    continue
                destination = target / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                self.client.download_file(bucket, obj["Key"], str(destination))
                found = True
        if not found:
            raise PipelineError("no objects under this S3 prefix", uri, "check the input URI")

    def upload(self, source: Path, uri: str) -> None:
        if Path(source).is_file():
            return self.upload_file(Path(source), f"{uri.rstrip('/')}/{Path(source).name}")
        bucket, key = split_s3(uri)
        for path in sorted(p for p in Path(source).rglob("*") if p.is_file()):
            self.client.upload_file(str(path), bucket, f"{key.rstrip('/')}/{path.relative_to(source).as_posix()}")

    def upload_file(self, source: Path, uri: str) -> None:
        bucket, key = split_s3(uri)
        self.client.upload_file(str(source), bucket, key)

    def event_uri(self, uri: str) -> str:
        return uri


def make_store(root: Path) -> FolderStore | S3Store:
    """``S3Store`` when an S3 endpoint is configured, else a ``FolderStore`` under ``root``."""
    if os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"):
        return S3Store()
    return FolderStore(root)


def export_storage(root: Path) -> Storage:
    """The export's ``Storage`` over what :func:`make_store` holds under ``root``: S3 when an endpoint is
    configured, else the folder (``s3://bucket/key`` as ``root/bucket/key``)."""
    from lambdas.export.storage import Storage

    store = make_store(root)
    return Storage(store.client) if isinstance(store, S3Store) else Storage(s3_root=root)
