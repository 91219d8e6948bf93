"""How a fake service reads S3: through the export's own :class:`~lambdas.export.storage.Storage`.

The Pinpoint fake reads the import files the export wrote, like the real service reads them with
the import role; which S3 it reads is injected, so tests use moto and local runs a folder. Where
``s3://bucket/key`` lives in a folder (``<root>/bucket/key``) is Storage's to say, and only Storage's:
the fake reads through one, so it always finds what the export wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from lambdas.export.storage import Storage, split_s3


class S3Source(Protocol):
    """The two S3 reads an import needs."""

    def list(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        """``(key, size in bytes)`` of every object under ``prefix`` (recursively), sorted by key."""

    def read(self, bucket: str, key: str) -> bytes:
        """The object's bytes."""


class StorageS3:
    """An :class:`S3Source` reading through a :class:`Storage` (a boto3 client, or S3 mapped to a folder)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def list(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        uri = f"s3://{bucket}/{prefix}"
        if prefix and not prefix.endswith("/") and self.storage.exists(uri):
            return [(prefix, self.storage.size(uri))]
        return [(split_s3(found)[1], size) for found, size in self.storage.files(uri)]

    def read(self, bucket: str, key: str) -> bytes:
        return self.storage.read_bytes(f"s3://{bucket}/{key}")


class FolderS3(StorageS3):
    """``s3://bucket/key`` is the file ``<root>/bucket/key`` (the local runner's layout, as Storage maps it)."""

    def __init__(self, root: str | Path) -> None:
        super().__init__(Storage(s3_root=root))


class ClientS3(StorageS3):
    """S3 through a boto3 client (moto's ``ThreadedMotoServer``, or ``mock_aws`` in-process)."""

    def __init__(self, client: Any) -> None:
        super().__init__(Storage(client))


def s3_source(root_or_client: str | Path | Storage | Any) -> S3Source:
    """A :class:`FolderS3` for a path, a :class:`StorageS3` for a Storage, a :class:`ClientS3` for a
    boto3 client, or the source itself."""
    if isinstance(root_or_client, str | Path):
        return FolderS3(root_or_client)
    if isinstance(root_or_client, Storage):
        return StorageS3(root_or_client)
    if hasattr(root_or_client, "get_object"):
        return ClientS3(root_or_client)
    return root_or_client
