"""How a fake service reads S3: through a boto3 client (moto) or from a folder laid out as buckets.

The Pinpoint fake reads the import files the export wrote, like the real service reads them with
the import role; which S3 it reads is injected, so tests use moto and local runs a folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class S3Source(Protocol):
    """The two S3 reads an import needs."""

    def list(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        """``(key, size in bytes)`` of every object under ``prefix`` (recursively), sorted by key."""

    def read(self, bucket: str, key: str) -> bytes:
        """The object's bytes."""


class FolderS3:
    """``s3://bucket/key`` is the file ``<root>/bucket/key`` (the local runner's layout)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, bucket: str, key: str) -> Path:
        return self.root.joinpath(bucket, *[part for part in key.split("/") if part])

    def list(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        base = self._path(bucket, prefix)
        if base.is_file():
            return [(prefix, base.stat().st_size)]
        if not base.is_dir():
            return []
        bucket_root = self.root / bucket
        return sorted(
            (path.relative_to(bucket_root).as_posix(), path.stat().st_size)
            for path in base.rglob("*")
            if path.is_file()
        )

    def read(self, bucket: str, key: str) -> bytes:
        return self._path(bucket, key).read_bytes()


class ClientS3:
    """S3 through a boto3 client (moto's ``ThreadedMotoServer``, or ``mock_aws`` in-process)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def list(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        found = [(item["Key"], int(item["Size"])) for page in pages for item in page.get("Contents", [])]
        exact = [(key, size) for key, size in found if key == prefix]
        if exact:
            return exact
        folder = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        return sorted((key, size) for key, size in found if key.startswith(folder) and not key.endswith("/"))

    def read(self, bucket: str, key: str) -> bytes:
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()


def s3_source(root_or_client: str | Path | Any) -> S3Source:
    """A :class:`FolderS3` for a path, a :class:`ClientS3` for a boto3 client, or the source itself."""
    if isinstance(root_or_client, str | Path):
        return FolderS3(root_or_client)
    if hasattr(root_or_client, "get_object"):
        return ClientS3(root_or_client)
    return root_or_client
