"""The incremental state under ``<prefix>/state/``: where it lives, how a run reads and swaps it.

Layout (every file but ``current.json`` is written once and never changed)::

    current.json                  {"generation": ..., "manifest": "manifests/<generation>-<n>.json"}
    manifests/<generation>-<n>.json  settings, the objects folded (key, version, ETag, size, contribution, rows)
    totals/<generation>-<n>.parquet  one row per customer (and per quarantine reason): the folded totals
    objects/<object id>.parquet   one object's per-customer contribution
    histories/<fingerprint>.json  a history as PlanHistory listed it

A run writes its contributions, totals and manifest first and only then swaps
``current.json``, on the condition that it still names the generation the run
started from (S3 conditional writes; a lock file locally). An interrupted or
failed run, or one that lost the race to another run, never becomes current,
and every generation stays readable.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from steps.errors import RFMError
from steps.features.history import HistoryObject, s3_client, split_s3

CURRENT = "current.json"
MANIFESTS, TOTALS, OBJECTS, HISTORIES = "manifests", "totals", "objects", "histories"
STATE_VERSION = 1
REBUILD_FIX = ("Run with Rebuild: rfm run-local --rebuild, or the pipeline parameter Rebuild=true "
               "(recomputes the state from the whole history)")


class StateError(RFMError):
    """The state is missing, corrupt, or was changed by another run."""


class StateConflict(StateError):
    """Another run swapped ``current.json`` after this run read it."""


@dataclass
class Manifest:
    """One generation of the state: the objects it folded and where their data is."""

    generation: str
    settings: dict[str, Any]
    objects: dict[str, dict[str, Any]]  # key -> {version_id, etag, size, contribution, rows_read, ...}
    totals: str
    parent: str | None = None
    history: str | None = None
    version: int = STATE_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> str:
        """Where this manifest is written: named like its totals file, so every write is a new file and a
        rebuild of an unchanged history (same generation) never rewrites the manifest that is current."""
        return f"{MANIFESTS}/{PurePosixPath(self.totals).stem}.json"

    def folded(self) -> dict[str, HistoryObject]:
        """Key -> the object version this generation holds."""
        return {key: HistoryObject(key, o["version_id"], o["etag"], o["size"]) for key, o in self.objects.items()}

    def to_json(self) -> str:
        return json.dumps({
            "version": self.version, "generation": self.generation, "parent": self.parent,
            "history": self.history, "settings": self.settings, "totals": self.totals,
            "objects": self.objects, **self.extra}, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> Manifest:
        try:
            data = json.loads(text)
            known = {"version", "generation", "parent", "history", "settings", "totals", "objects"}
            manifest = cls(data["generation"], dict(data["settings"]), dict(data["objects"]), data["totals"],
                           data.get("parent"), data.get("history"), int(data["version"]),
                           {k: v for k, v in data.items() if k not in known})
            for entry in manifest.objects.values():
                entry["version_id"], entry["etag"], entry["size"], entry["contribution"]  # noqa: B018
        except (ValueError, KeyError, TypeError) as error:
            raise StateError(f"the state manifest is corrupt ({type(error).__name__}: {error})", where,
                             REBUILD_FIX) from None
        if manifest.version != STATE_VERSION:
            raise StateError(f"the state was written in format {manifest.version}, this code reads "
                             f"{STATE_VERSION}", where, REBUILD_FIX)
        return manifest


class StateStore:
    """The state's files: a local folder, or an S3 prefix (``s3://bucket/prefix/state``)."""

    def __init__(self, location: str, client=None) -> None:  # noqa: ANN001
        self.location = location.rstrip("/")
        self.is_s3 = location.startswith("s3://")
        self._client = client
        if not self.is_s3:
            self.root = Path(self.location.removeprefix("file://"))

    @property
    def client(self):  # noqa: ANN201
        if self._client is None:
            self._client = s3_client()
        return self._client

    def uri(self, name: str) -> str:
        """Where ``name`` (relative to the state) lives, as users see it."""
        return f"{self.location}/{name}"

    # -- reading -------------------------------------------------------------------------------
    def read_text(self, name: str) -> tuple[str, str] | None:
        """(text, etag) of ``name``, or None when it does not exist."""
        if not self.is_s3:
            path = self.root / name
            if not path.is_file():
                return None
            data = path.read_bytes()
            return data.decode(), _local_etag(data)
        from botocore.exceptions import ClientError

        bucket, key = split_s3(self.uri(name))
        try:
            response = self.client.get_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if _is_missing(error):
                return None
            raise StateError(f"cannot read the state ({error})", self.uri(name), "Check the permissions") from None
        return response["Body"].read().decode(), response.get("ETag", "")

    def exists(self, name: str) -> bool:
        """Whether ``name`` exists; a refused or failed check is an error, not a missing file."""
        if not self.is_s3:
            return (self.root / name).is_file()
        from botocore.exceptions import ClientError

        bucket, key = split_s3(self.uri(name))
        try:
            self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if _is_missing(error):
                return False
            raise StateError(f"cannot read the state ({error})", self.uri(name), "Check the permissions") from None
        return True

    def download(self, name: str, target: Path) -> Path:
        """A local copy of ``name`` (the file itself for a local state)."""
        if not self.is_s3:
            path = self.root / name
            if not path.is_file():
                raise StateError(f"the state file {name} is missing", self.location, REBUILD_FIX)
            return path
        from botocore.exceptions import ClientError

        bucket, key = split_s3(self.uri(name))
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(bucket, key, str(target))
        except ClientError as error:
            raise StateError(f"the state file {name} cannot be read ({error})", self.location,
                             REBUILD_FIX) from None
        return target

    # -- writing -------------------------------------------------------------------------------
    def write_text(self, name: str, text: str) -> None:
        self.write_file(name, text.encode())

    def write_file(self, name: str, data: bytes | Path) -> None:
        """Write ``name`` (bytes, or the contents of a local file); written once, never changed."""
        payload = data.read_bytes() if isinstance(data, Path) else data
        if not self.is_s3:
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            temporary.write_bytes(payload)
            os.replace(temporary, path)
            return
        bucket, key = split_s3(self.uri(name))
        self.client.put_object(Bucket=bucket, Key=key, Body=payload)

    def swap_current(self, text: str, expected_etag: str | None) -> None:
        """Replace ``current.json`` only if it is still what this run read (absent when ``expected_etag`` is None).

        Raises
        ------
        StateConflict
            Another run swapped it first.
        """
        if not self.is_s3:
            self.root.mkdir(parents=True, exist_ok=True)
            with _locked(self.root / ".lock"):
                now = self.read_text(CURRENT)
                if (now[1] if now else None) != expected_etag:
                    raise _conflict(self.uri(CURRENT))
                self.write_text(CURRENT, text)
            return
        from botocore.exceptions import ClientError

        bucket, key = split_s3(self.uri(CURRENT))
        condition = {"IfMatch": expected_etag} if expected_etag else {"IfNoneMatch": "*"}
        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=text.encode(), **condition)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                raise _conflict(self.uri(CURRENT)) from None
            raise


def _conflict(where: str) -> StateConflict:
    return StateConflict("another run changed the state while this one ran; this run's state did not become "
                         "current", where, "Nothing is lost: the next run folds what this one read")


def _local_etag(data: bytes) -> str:
    import hashlib

    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@contextlib.contextmanager
def _locked(path: Path):  # noqa: ANN202
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class Current:
    """The state a run starts from: its manifest (None before the first run) and ``current.json``'s ETag."""

    manifest: Manifest | None
    etag: str | None


def read_current(store: StateStore, *, check_files: bool = True) -> Current:
    """The current generation's manifest, checked: every file it names must exist (``check_files``;
    a reader of the manifest alone skips that request per file).

    Raises
    ------
    StateError
        ``current.json`` names a manifest that is missing or corrupt, or files that are gone.
    """
    found = store.read_text(CURRENT)
    if found is None:
        return Current(None, None)
    text, etag = found
    try:
        pointer = json.loads(text)
        manifest_name = pointer["manifest"]
    except (ValueError, KeyError, TypeError):
        raise StateError("current.json is corrupt", store.uri(CURRENT), REBUILD_FIX) from None
    manifest_text = store.read_text(manifest_name)
    if manifest_text is None:
        raise StateError(f"the state manifest {manifest_name} is missing", store.location, REBUILD_FIX)
    manifest = Manifest.from_json(manifest_text[0], store.uri(manifest_name))
    if not check_files:
        return Current(manifest, etag)
    missing = [n for n in [manifest.totals, *(o["contribution"] for o in manifest.objects.values())]
               if n and not store.exists(n)]
    if missing:
        raise StateError(f"{len(missing)} state file(s) are missing, e.g. {missing[0]}", store.location,
                         REBUILD_FIX)
    return Current(manifest, etag)


def history_file(fingerprint: str) -> str:
    """The state's name for the history PlanHistory recorded under ``fingerprint``."""
    return f"{HISTORIES}/{fingerprint}.json"


def _is_missing(error: Exception) -> bool:
    """Whether an S3 ClientError says the key does not exist (not: access denied, throttled...)."""
    return getattr(error, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound")


def pointer_text(manifest: Manifest) -> str:
    return json.dumps({"generation": manifest.generation, "manifest": manifest.path}, sort_keys=True) + "\n"
