"""Read, write and list files under an S3 URI or a local folder, with one interface.

URIs are ``s3://bucket/prefix``, ``file:///abs/path`` or a plain path. S3 goes through the boto3
client handed in (created once per container by the handler; moto-backed in tests), local paths
through :mod:`pathlib`, so the local runner can call the export Lambda in-process. With
``s3_root`` set, ``s3://bucket/key`` is the file ``<s3_root>/bucket/key`` instead (the local
runner's folder layout), so a local run can write the Pinpoint import files a local fake reads.

Example
-------
>>> import tempfile
>>> storage = Storage()
>>> root = tempfile.mkdtemp()
>>> storage.write_bytes(join(root, "a", "b.txt"), b"hi")
>>> [uri.endswith("b.txt") for uri in storage.list(root, ".txt")]
[True]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from botocore.exceptions import ClientError


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``."""
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


def local_path(uri: str) -> Path:
    """A plain path or a ``file://`` URI as a :class:`Path`."""
    if uri.startswith("file://"):
        return Path(url2pathname(unquote(urlparse(uri).path)))
    return Path(uri)


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI with ``/`` (S3 and ``file://``) or the OS separator."""
    if is_s3(uri) or uri.startswith("file://"):
        return "/".join([uri.rstrip("/"), *parts])
    return str(Path(uri, *parts))


class Storage:
    """Files under S3 URIs or local paths.

    Parameters
    ----------
    s3 : boto3 S3 client, optional
        Needed only for ``s3://`` URIs (unless ``s3_root`` is given).
    s3_root : str or Path, optional
        Map ``s3://bucket/key`` to the file ``<s3_root>/bucket/key`` (local runs without S3).
    """

    def __init__(self, s3: Any | None = None, s3_root: str | Path | None = None) -> None:
        self.s3 = s3
        self.s3_root = Path(s3_root) if s3_root else None

    def _local(self, uri: str) -> str:
        """``uri`` itself, or its file under ``s3_root`` when S3 is mapped to a folder."""
        if self.s3_root is None or not is_s3(uri):
            return uri
        bucket, key = split_s3(uri)
        return str(self.s3_root.joinpath(bucket, *[part for part in key.split("/") if part]))

    def _client(self, uri: str) -> Any:
        if self.s3 is None:
            raise ValueError(f"an S3 client is needed for {uri}")
        return self.s3

    def exists(self, uri: str) -> bool:
        if not is_s3(self._local(uri)):
            return local_path(self._local(uri)).is_file()
        bucket, key = split_s3(uri)
        response = self._client(uri).list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        return any(item["Key"] == key for item in response.get("Contents", []))

    def files(self, uri: str, suffix: str = "") -> list[tuple[str, int]]:
        """``(URI, size in bytes)`` of all files under the folder ``uri`` (recursively) ending with ``suffix``."""
        if not is_s3(self._local(uri)):
            root = local_path(self._local(uri))
            if not root.is_dir():
                return []
            found = sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(suffix))
            return [(join(uri, *p.relative_to(root).parts), p.stat().st_size) for p in found]
        bucket, prefix = split_s3(uri)
        prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
        pages = self._client(uri).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        items = [item for page in pages for item in page.get("Contents", [])]
        wanted = (item for item in items if item["Key"].endswith(suffix) and not item["Key"].endswith("/"))
        return sorted((f"s3://{bucket}/{item['Key']}", int(item["Size"])) for item in wanted)

    def list(self, uri: str, suffix: str = "") -> list[str]:
        """URIs of all files under the folder ``uri`` (recursively) ending with ``suffix``, sorted."""
        return [found for found, _size in self.files(uri, suffix)]

    def size(self, uri: str) -> int:
        """Bytes in one file."""
        if not is_s3(self._local(uri)):
            return local_path(self._local(uri)).stat().st_size
        bucket, key = split_s3(uri)
        return int(self._client(uri).head_object(Bucket=bucket, Key=key)["ContentLength"])

    def read_bytes(self, uri: str) -> bytes:
        """One file's bytes (one GET on S3); FileNotFoundError when it does not exist, wherever it is."""
        if not is_s3(self._local(uri)):
            return local_path(self._local(uri)).read_bytes()
        bucket, key = split_s3(uri)
        try:
            return self._client(uri).get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(uri) from None
            raise

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Write (overwrite) one file, creating local parent folders."""
        if not is_s3(self._local(uri)):
            path = local_path(self._local(uri))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            return
        bucket, key = split_s3(uri)
        self._client(uri).put_object(Bucket=bucket, Key=key, Body=data)

    def delete(self, uris: list[str]) -> None:
        """Delete files; local folders left empty are removed too."""
        for uri in uris:
            if not is_s3(self._local(uri)):
                path = local_path(self._local(uri))
                path.unlink(missing_ok=True)
                if path.parent.is_dir() and not any(path.parent.iterdir()):
                    path.parent.rmdir()
                continue
            bucket, key = split_s3(uri)
            self._client(uri).delete_object(Bucket=bucket, Key=key)
