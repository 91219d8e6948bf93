"""The history: every transactions object under the input location, exactly, and what changed.

:func:`list_history` lists a local file or folder, or an S3 object or prefix,
as :class:`HistoryObject` entries (key, version, ETag, size). ``s3://b/data``
means the object ``data`` when it exists, else the folder ``data/``: never
the siblings ``data.gz`` or ``data-old/``, and never the pipeline's own
prefixes (``state/``, ``executions/``, ``quarantine/``, ``model/``) when they
sit under the input. :func:`fingerprint` names a history in 16 hex digits;
:func:`diff` says which objects a state must fold in or drop to match it.

Locally a file's version is its modification time and size (``mtime_ns-size``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from steps.errors import InputDataError

# What a transactions file is called (``steps.features.sources`` reads the same).
SUFFIXES = (".csv", ".csv.gz", ".txt", ".txt.gz", ".parquet", ".tsv", ".tsv.gz")
# Prefixes the pipeline writes under <prefix>/: never part of the history.
OWN_PREFIXES = ("state/", "executions/", "quarantine/", "model/", "published/")
# Notes shipped beside data files (README.txt, LICENSE.csv, notes.md ...): never transactions. Only the bare
# name with extensions: manifest_2024.csv or notes-q1.csv may well be data, and are read.
NOT_DATA_NAMES = re.compile(r"^(readme|license|licence|changelog|manifest|notes?)(\.[a-z0-9]+)*$", re.IGNORECASE)


def is_supported(relative: Path) -> bool:
    """A transactions file by its path inside the input folder or prefix: a data suffix, not hidden (``.x``,
    ``_SUCCESS``), not a note (``README``), not in one of the pipeline's own folders (``state/`` ...)."""
    name = relative.name.lower()
    hidden = any(part.startswith((".", "_")) for part in relative.parts)
    return (name.endswith(SUFFIXES) and not hidden and not NOT_DATA_NAMES.match(name)
            and not is_own(relative.as_posix()))


@dataclass(frozen=True, order=True)
class HistoryObject:
    """One transactions object as the state records it.

    Attributes
    ----------
    key : str
        Its S3 URI, or its absolute local path.
    version_id : str
        The S3 version id (``"null"`` without versioning), or ``mtime_ns-size`` locally.
    etag : str
        The S3 ETag (empty locally).
    size : int
        Bytes.
    """

    key: str
    version_id: str = ""
    etag: str = ""
    size: int = 0

    @property
    def identity(self) -> str:
        """What tells two versions of the same key apart."""
        return f"{self.version_id}|{self.etag}|{self.size}"

    @property
    def object_id(self) -> str:
        """A file-name-safe id of this exact version (names its contribution in the state)."""
        return hashlib.sha256(f"{self.key}\n{self.identity}".encode()).hexdigest()[:24]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Increment:
    """What a state must do to match a history."""

    added: list[HistoryObject] = field(default_factory=list)
    replaced: list[HistoryObject] = field(default_factory=list)  # the new versions
    removed: list[str] = field(default_factory=list)  # keys
    unchanged: list[HistoryObject] = field(default_factory=list)
    # Unchanged objects read again: rows they hold dated after an earlier run's "today" may count now.
    redated: list[HistoryObject] = field(default_factory=list)

    @property
    def to_read(self) -> list[HistoryObject]:
        """The objects whose rows this run reads: added, replaced and redated, sorted by key."""
        return sorted(self.added + self.replaced + self.redated)

    def counts(self) -> dict[str, int]:
        return {"objects_added": len(self.added), "objects_replaced": len(self.replaced),
                "objects_removed": len(self.removed), "objects_unchanged": len(self.unchanged),
                "objects_redated": len(self.redated)}

    def redate(self, keys: set[str]) -> Increment:
        """The same increment with the unchanged objects under ``keys`` read again."""
        return Increment(self.added, self.replaced, self.removed,
                         [o for o in self.unchanged if o.key not in keys],
                         [o for o in self.unchanged if o.key in keys])


def fingerprint(objects: list[HistoryObject]) -> str:
    """16 hex digits that change when any object is added, removed or replaced."""
    text = json.dumps([o.to_dict() for o in sorted(objects)], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def diff(history: list[HistoryObject], folded: dict[str, HistoryObject]) -> Increment:
    """What to fold in and drop so that a state holding ``folded`` (key -> object) holds ``history``."""
    increment = Increment()
    keys = set()
    for obj in sorted(history):
        keys.add(obj.key)
        before = folded.get(obj.key)
        if before is None:
            increment.added.append(obj)
        elif before.identity != obj.identity:
            increment.replaced.append(obj)
        else:
            increment.unchanged.append(before)
    increment.removed = sorted(k for k in folded if k not in keys)
    return increment


def list_history(location: str, client=None) -> list[HistoryObject]:  # noqa: ANN001
    """Every transactions object at ``location`` (a file, a folder, ``s3://bucket/key`` or ``.../prefix/``).

    ``client`` is the S3 client for an ``s3://`` location (default: one from the environment).

    Raises
    ------
    InputDataError
        The location does not exist or cannot be listed.
    """
    if location.startswith("s3://"):
        return _list_s3(location, client)
    path = Path(location.removeprefix("file://")).resolve()
    if path.is_file():
        return [_local_object(path)]
    if path.is_dir():
        files = (p for p in path.rglob("*") if p.is_file() and is_supported(p.relative_to(path)))
        return sorted(_local_object(p) for p in files)
    raise InputDataError("no such file or folder", str(path), "Check the --input path")


def _local_object(path: Path) -> HistoryObject:
    stat = path.stat()
    return HistoryObject(str(path), f"{stat.st_mtime_ns}-{stat.st_size}", "", stat.st_size)


def is_own(relative: str) -> bool:
    """A path the pipeline writes, relative to the input location: only its own folders right under it
    (``state/``, ``executions/`` ...), never a customer's folder of that name deeper down (``by/state/CA.csv``)."""
    return relative.startswith(OWN_PREFIXES)


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def s3_client():  # noqa: ANN201 (boto3 clients have no public type)
    """One S3 client for the history and the state (``AWS_ENDPOINT_URL`` is honoured by boto3)."""
    import boto3

    return boto3.client("s3")


def _list_s3(uri: str, client=None) -> list[HistoryObject]:  # noqa: ANN001
    from botocore.exceptions import BotoCoreError, ClientError

    client = client or s3_client()
    bucket, key = split_s3(uri)
    try:
        if key and not key.endswith("/"):
            exact = _head(client, bucket, key)
            if exact is not None:
                return [exact]
            key += "/"
        return _list_prefix(client, bucket, key)
    except (BotoCoreError, ClientError) as error:
        raise InputDataError(f"cannot list S3 objects: {error}", uri,
                             "Check the URI, the region and the credentials") from None


def _head(client, bucket: str, key: str) -> HistoryObject | None:  # noqa: ANN001
    from botocore.exceptions import ClientError

    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return HistoryObject(f"s3://{bucket}/{key}", head.get("VersionId") or "null", head.get("ETag", ""),
                         int(head.get("ContentLength", 0)))


def _list_prefix(client, bucket: str, prefix: str) -> list[HistoryObject]:  # noqa: ANN001
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            relative = item["Key"][len(prefix):]
            if item["Key"].endswith("/") or not is_supported(Path(relative)):
                continue
            found.append(HistoryObject(f"s3://{bucket}/{item['Key']}", "", item.get("ETag", ""),
                                       int(item.get("Size", 0))))
    if not found:
        return []
    versions = _versions(client, bucket, prefix)
    return sorted(HistoryObject(o.key, versions.get(o.key, "null"), o.etag, o.size) for o in found)


def _versions(client, bucket: str, prefix: str) -> dict[str, str]:  # noqa: ANN001
    """Key -> the current version id (``null`` when the bucket is not versioned)."""
    from botocore.exceptions import ClientError

    current: dict[str, str] = {}
    try:
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            for version in page.get("Versions", []):
                if version.get("IsLatest"):
                    current[f"s3://{bucket}/{version['Key']}"] = version.get("VersionId") or "null"
    except ClientError:  # no permission to list versions: ETag and size still tell versions apart
        return {}
    return current


def fetch(obj: HistoryObject, workdir: Path, client=None) -> Path:  # noqa: ANN001
    """A local file holding exactly the version ``obj`` names (S3 objects are downloaded to ``workdir``).

    Raises
    ------
    InputDataError
        The object is gone, changed since it was listed, or cannot be read; the
        message names it and says the next run tries it again.
    """
    if not obj.key.startswith("s3://"):
        path = Path(obj.key)
        if not path.is_file() or _local_object(path).identity != obj.identity:
            raise InputDataError("the file changed or went away while this run read the history", obj.key,
                                 "Run again: the next run reads it as it is then")
        return path
    from botocore.exceptions import BotoCoreError, ClientError

    client = client or s3_client()
    bucket, key = split_s3(obj.key)
    name = Path(key).name
    target = workdir / obj.object_id / name
    target.parent.mkdir(parents=True, exist_ok=True)
    extra = {"VersionId": obj.version_id} if obj.version_id not in ("", "null") else {}
    if obj.etag:
        extra["IfMatch"] = obj.etag
    try:
        client.download_file(bucket, key, str(target), ExtraArgs=extra or None)
    except (BotoCoreError, ClientError) as error:
        raise InputDataError(f"cannot read this object ({error})", obj.key,
                             "Check that it exists and can be read; the state is unchanged and the next run "
                             "tries it again") from None
    return target
