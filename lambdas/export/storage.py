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

import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from botocore.exceptions import ClientError

PART_BYTES = 5 * 1024 * 1024  # an S3 upload part (the least S3 takes); what one open S3 writer holds at most
READ_CHUNK = 8 * 1024 * 1024


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

    def iter_bytes(self, uri: str, chunk: int = READ_CHUNK) -> Iterator[bytes]:
        """One file's bytes, ``chunk`` at a time (one GET on S3, streamed); FileNotFoundError when missing."""
        if not is_s3(self._local(uri)):
            with local_path(self._local(uri)).open("rb") as file:
                while block := file.read(chunk):
                    yield block
            return
        bucket, key = split_s3(uri)
        try:
            body = self._client(uri).get_object(Bucket=bucket, Key=key)["Body"]
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(uri) from None
            raise
        yield from body.iter_chunks(chunk)

    def open_read(self, uri: str) -> BinaryIO:
        """A seekable reader of one file: local files opened, S3 objects read by ranges as needed;
        FileNotFoundError when it does not exist, wherever it is."""
        if not is_s3(self._local(uri)):
            return local_path(self._local(uri)).open("rb")
        try:
            size = self.size(uri)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(uri) from None
            raise
        return io.BufferedReader(_RangeReader(self._client(uri), *split_s3(uri), size), READ_CHUNK)

    def open_write(self, uri: str) -> Writer:
        """A file to write a piece at a time: a local file, or an S3 multipart upload of
        :data:`PART_BYTES` parts (one put when smaller). ``close()`` publishes it, ``abort()`` drops it."""
        if not is_s3(self._local(uri)):
            path = local_path(self._local(uri))
            path.parent.mkdir(parents=True, exist_ok=True)
            return _LocalWriter(path)
        return _S3Writer(self._client(uri), *split_s3(uri))

    def copy(self, source: str, target: str) -> None:
        """Copy one file (server-side on S3: nothing passes through the function)."""
        if not is_s3(self._local(source)) and not is_s3(self._local(target)):
            path = local_path(self._local(target))
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local_path(self._local(source)), path)
            return
        if is_s3(self._local(source)) and is_s3(self._local(target)):
            bucket, key = split_s3(target)
            from_bucket, from_key = split_s3(source)
            self._client(target).copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": from_bucket,
                                                                                    "Key": from_key})
            return
        with self.open_write(target) as writer:
            for block in self.iter_bytes(source):
                writer.write(block)


class Writer(io.RawIOBase):
    """What :meth:`Storage.open_write` returns: write, then ``close()`` (publish) or ``abort()``."""

    def writable(self) -> bool:
        return True

    def abort(self) -> None:
        """Drop what was written (the file does not appear, or stays as it was)."""

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
        if kind is not None:
            self.abort()
        self.close()


class _LocalWriter(Writer):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self.file = self.partial.open("wb")

    def write(self, data: Any) -> int:
        return self.file.write(data)

    def abort(self) -> None:
        if not self.file.closed:
            self.file.close()
        self.partial.unlink(missing_ok=True)

    def close(self) -> None:
        if not self.closed and not self.file.closed:
            self.file.close()
            self.partial.replace(self.path)
        super().close()


class _S3Writer(Writer):
    def __init__(self, s3: Any, bucket: str, key: str) -> None:
        super().__init__()
        self.s3, self.bucket, self.key = s3, bucket, key
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.aborted = False

    def write(self, data: Any) -> int:
        self.buffer += data
        if len(self.buffer) >= PART_BYTES:
            self._upload_part()
        return len(data)

    def _upload_part(self) -> None:
        if self.upload_id is None:
            self.upload_id = self.s3.create_multipart_upload(Bucket=self.bucket, Key=self.key)["UploadId"]
        number = len(self.parts) + 1
        answer = self.s3.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                     PartNumber=number, Body=bytes(self.buffer))
        self.parts.append({"PartNumber": number, "ETag": answer["ETag"]})
        self.buffer = bytearray()

    def abort(self) -> None:
        self.aborted = True
        self.buffer = bytearray()
        if self.upload_id is not None:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
            self.upload_id = None

    def close(self) -> None:
        if self.closed:
            return
        if not self.aborted:
            if self.upload_id is None:
                self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self.buffer))
            else:
                if self.buffer:
                    self._upload_part()
                self.s3.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                                  MultipartUpload={"Parts": self.parts})
        self.buffer = bytearray()
        super().close()


class _RangeReader(io.RawIOBase):
    """An S3 object read by byte ranges (one GET per read), for Parquet readers that seek."""

    def __init__(self, s3: Any, bucket: str, key: str, size: int) -> None:
        super().__init__()
        self.s3, self.bucket, self.key, self.length, self.position = s3, bucket, key, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.length}[whence]
        self.position = max(0, base + offset)
        return self.position

    def tell(self) -> int:
        return self.position

    def readinto(self, buffer: Any) -> int:
        if self.position >= self.length or not len(buffer):
            return 0
        last = min(self.length, self.position + len(buffer)) - 1
        data = self.s3.get_object(Bucket=self.bucket, Key=self.key,
                                  Range=f"bytes={self.position}-{last}")["Body"].read()
        memoryview(buffer)[: len(data)] = data
        self.position += len(data)
        return len(data)
