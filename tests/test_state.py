"""The incremental state's files (``steps.features.state``): a local folder and an S3 prefix behave alike.

What a run relies on: a file written is read back with an ETag that changes with its content; a
missing file is ``None`` (or a one-line error naming the state and saying to rebuild); ``current.json``
is only swapped when it is still what the run read (else :class:`StateConflict`); a manifest that is
corrupt, of another format version, or names files that are gone is refused with the fix. The S3
cases run against moto.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from steps.features.history import HistoryObject
from steps.features.state import (
    CURRENT,
    REBUILD_FIX,
    STATE_VERSION,
    Current,
    Manifest,
    StateConflict,
    StateError,
    StateStore,
    pointer_text,
    read_current,
)

BUCKET = "rfm-state-bucket"


@pytest.fixture
def s3_client(fake_aws: None) -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> StateStore:
    """A fresh, empty state: a local folder, or an S3 prefix in moto."""
    if request.param == "local":
        return StateStore(str(tmp_path / "bucket" / "rfm" / "state"))  # folders made as needed
    client = request.getfixturevalue("s3_client")
    return StateStore(f"s3://{BUCKET}/rfm/state/", client=client)


def manifest(totals: str = "totals/g1-aaaa.parquet", **objects: str) -> Manifest:
    """A manifest folding ``objects`` (key -> contribution file)."""
    return Manifest("g1", {"input_format": "generic"},
                    {key: {"version_id": "v1", "etag": f"e-{key}", "size": 10, "contribution": name}
                     for key, name in objects.items()}, totals)


# --- files ---------------------------------------------------------------------------------------


def test_a_file_written_reads_back_with_an_etag_that_follows_its_content(store: StateStore) -> None:
    assert store.read_text("a/b.json") is None
    assert not store.exists("a/b.json")
    store.write_text("a/b.json", "one\n")
    text, first = store.read_text("a/b.json")
    assert text == "one\n" and first
    assert store.exists("a/b.json")
    assert not store.exists("a/c.json")
    store.write_text("a/b.json", "one\n")
    assert store.read_text("a/b.json")[1] == first  # the same content, the same ETag
    store.write_text("a/b.json", "two\n")
    text, second = store.read_text("a/b.json")
    assert text == "two\n" and second != first


def test_a_file_is_written_from_bytes_or_from_a_local_file(store: StateStore, tmp_path: Path) -> None:
    source = tmp_path / "local.parquet"
    source.write_bytes(b"PAR1 data")
    store.write_file("totals/t.parquet", source)
    store.write_file("objects/o.parquet", b"other")
    copy = store.download("totals/t.parquet", tmp_path / "copy" / "totals" / "t.parquet")
    assert copy.read_bytes() == b"PAR1 data"
    assert store.download("objects/o.parquet", tmp_path / "copy" / "objects" / "o.parquet").read_bytes() == b"other"


def test_a_missing_file_to_download_says_to_rebuild(store: StateStore, tmp_path: Path) -> None:
    with pytest.raises(StateError) as caught:
        store.download("totals/gone.parquet", tmp_path / "gone.parquet")
    assert "totals/gone.parquet" in caught.value.what
    assert caught.value.where == store.location
    assert caught.value.fix == REBUILD_FIX


def test_locations_name_the_state_as_users_see_it(tmp_path: Path) -> None:
    local = StateStore(f"file://{tmp_path}/state/")
    assert not local.is_s3
    assert local.uri(CURRENT) == f"file://{tmp_path}/state/current.json"
    local.write_text("x.json", "{}")
    assert (tmp_path / "state" / "x.json").read_text() == "{}"
    remote = StateStore("s3://b/p/state/", client=object())
    assert remote.is_s3 and remote.location == "s3://b/p/state"
    assert remote.uri("manifests/m.json") == "s3://b/p/state/manifests/m.json"
    assert StateStore("s3://b/p/STATEX//", client=object()).uri(CURRENT) == "s3://b/p/STATEX/current.json"


def test_the_s3_files_are_under_the_prefix(s3_client: Any) -> None:
    StateStore(f"s3://{BUCKET}/rfm/state", client=s3_client).write_text("manifests/m.json", "{}")
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert keys == ["rfm/state/manifests/m.json"]


def test_an_unreadable_s3_state_is_a_one_line_error(s3_client: Any, tmp_path: Path) -> None:
    store = StateStore("s3://no-such-bucket/rfm/state", client=s3_client)
    with pytest.raises(StateError) as caught:
        store.read_text(CURRENT)
    assert caught.value.what.startswith("cannot read the state")
    assert caught.value.where == "s3://no-such-bucket/rfm/state/current.json"
    assert caught.value.fix == "Check the permissions"
    with pytest.raises(StateError) as caught:  # a missing bucket is not a missing file
        store.exists(CURRENT)
    assert caught.value.what.startswith("cannot read the state (") and "NoSuchBucket" in caught.value.what
    assert (caught.value.where, caught.value.fix) == ("s3://no-such-bucket/rfm/state/current.json",
                                                      "Check the permissions")
    with pytest.raises(StateError, match="cannot be read"):
        store.download("totals/t.parquet", tmp_path / "t.parquet")


@pytest.mark.parametrize(("code", "status", "missing"), [
    ("NoSuchKey", 404, True), ("404", 404, True), ("NotFound", 404, True),
    ("AccessDenied", 403, False), ("403", 403, False), ("SlowDown", 503, False),
])
def test_only_a_missing_key_is_a_missing_file(code: str, status: int, missing: bool) -> None:
    # S3 names a missing key NoSuchKey on GET and, without a body, 404 on HEAD; S3-compatible stores also
    # answer NotFound. Anything else (refused, throttled) stops the run: a state file is never taken as
    # absent because it could not be read. moto gives only the first two, hence the stub.
    from botocore.stub import Stubber

    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    store = StateStore(f"s3://{BUCKET}/rfm/state", client=client)
    with Stubber(client) as stub:
        stub.add_client_error("get_object", service_error_code=code, http_status_code=status)
        stub.add_client_error("head_object", service_error_code=code, http_status_code=status)
        if missing:
            assert store.read_text(CURRENT) is None
            assert store.exists(CURRENT) is False
            return
        for read in (store.read_text, store.exists):
            with pytest.raises(StateError) as caught:
                read(CURRENT)
            assert caught.value.what.startswith("cannot read the state (") and code in caught.value.what
            assert (caught.value.where, caught.value.fix) == (store.uri(CURRENT), "Check the permissions")


# --- the swap of current.json ---------------------------------------------------------------------


def test_the_first_swap_needs_no_current_and_later_ones_the_etag_read(store: StateStore) -> None:
    store.swap_current("first\n", None)
    text, etag = store.read_text(CURRENT)
    assert text == "first\n"
    with pytest.raises(StateConflict):
        store.swap_current("second\n", None)  # another run made current.json since this one looked
    with pytest.raises(StateConflict):
        store.swap_current("second\n", "not-the-etag-read")
    assert store.read_text(CURRENT)[0] == "first\n"
    store.swap_current("second\n", etag)
    text, newer = store.read_text(CURRENT)
    assert text == "second\n" and newer != etag
    with pytest.raises(StateConflict) as caught:
        store.swap_current("third\n", etag)  # the run that read "first" lost the race
    assert (caught.value.what, caught.value.where, caught.value.fix) == (
        "another run changed the state while this one ran; this run's state did not become current",
        store.uri(CURRENT), "Nothing is lost: the next run folds what this one read")
    assert store.read_text(CURRENT)[0] == "second\n"


def test_a_conflict_is_a_state_error_that_says_nothing_is_lost() -> None:
    assert issubclass(StateConflict, StateError)
    error = StateConflict("x", "y", "z")
    assert (error.what, error.where, error.fix) == ("x", "y", "z")


# --- manifests and current ------------------------------------------------------------------------


def test_a_manifest_survives_its_json_and_is_named_like_its_totals() -> None:
    written = manifest(**{"in/a.csv": "objects/a.parquet", "in/b.csv": ""})
    written.parent, written.history, written.extra = "g0", "histories/f.json", {"format": {"name": "generic"}}
    assert written.path == "manifests/g1-aaaa.json"
    text = written.to_json()
    assert text.endswith("\n") and json.loads(text)["format"] == {"name": "generic"}
    read = Manifest.from_json(text, "where")
    assert read == written
    assert read.folded() == {"in/a.csv": HistoryObject("in/a.csv", "v1", "e-in/a.csv", 10),
                             "in/b.csv": HistoryObject("in/b.csv", "v1", "e-in/b.csv", 10)}


@pytest.mark.parametrize("damage", [
    "not json", "[]", '{"generation": "g"}',
    # an object entry without its ETag
    '{"version": 1, "generation": "g", "settings": {}, "totals": "t", '
    '"objects": {"k": {"version_id": "v", "size": 1, "contribution": "c"}}}',
    '{"version": 1, "generation": "g", "settings": {}, "totals": "t", '
    '"objects": {"k": {"version_id": "v", "etag": "e", "size": 1}}}',
])
def test_a_corrupt_manifest_says_to_rebuild(damage: str) -> None:
    with pytest.raises(StateError) as caught:
        Manifest.from_json(damage, "s3://b/state/manifests/m.json")
    assert re.match(r"the state manifest is corrupt \((JSONDecodeError|KeyError|TypeError): ", caught.value.what)
    assert caught.value.where == "s3://b/state/manifests/m.json"
    assert caught.value.fix == REBUILD_FIX


def test_a_manifest_of_another_format_version_says_to_rebuild() -> None:
    text = manifest().to_json().replace(f'"version": {STATE_VERSION}', f'"version": {STATE_VERSION + 1}')
    with pytest.raises(StateError) as caught:
        Manifest.from_json(text, "m.json")
    assert caught.value.what == (f"the state was written in format {STATE_VERSION + 1}, this code reads "
                                 f"{STATE_VERSION}")
    assert (caught.value.where, caught.value.fix) == ("m.json", REBUILD_FIX)


def test_the_current_state_is_what_current_json_points_at(store: StateStore) -> None:
    assert read_current(store) == Current(None, None)  # before the first run
    written = manifest(**{"in/a.csv": "objects/a.parquet", "in/empty.csv": ""})
    store.write_file("objects/a.parquet", b"a")
    store.write_file(written.totals, b"t")
    store.write_text(written.path, written.to_json())
    store.swap_current(pointer_text(written), None)
    assert json.loads(store.read_text(CURRENT)[0]) == {"generation": "g1", "manifest": written.path}
    current = read_current(store)
    assert current.manifest == written
    assert current.etag == store.read_text(CURRENT)[1]


@pytest.mark.parametrize(("damage", "message", "where"), [
    ("current", "current.json is corrupt", CURRENT),
    ("pointer", "current.json is corrupt", CURRENT),
    ("manifest", "the state manifest manifests/g1-aaaa.json is missing", ""),
    ("corrupt manifest", "the state manifest is corrupt (JSONDecodeError: ", "manifests/g1-aaaa.json"),
    ("totals", "1 state file(s) are missing, e.g. totals/g1-aaaa.parquet", ""),
    ("contribution", "1 state file(s) are missing, e.g. objects/a.parquet", ""),
])
def test_a_broken_current_state_says_what_is_missing_and_to_rebuild(store: StateStore, damage: str,
                                                                    message: str, where: str) -> None:
    """What is broken; where: the file (a corrupt one) or the state (missing files); and to rebuild."""
    written = manifest(**{"in/a.csv": "objects/a.parquet"})
    files = {"objects/a.parquet": b"a", written.totals: b"t", written.path: written.to_json().encode(),
             CURRENT: pointer_text(written).encode()}
    files.pop({"manifest": written.path, "totals": written.totals,
               "contribution": "objects/a.parquet"}.get(damage, ""), None)
    if damage == "current":
        files[CURRENT] = b"{not json"
    if damage == "pointer":
        files[CURRENT] = b'{"generation": "g1"}'
    if damage == "corrupt manifest":
        files[written.path] = b"{not json"
    for name, data in files.items():
        store.write_file(name, data)
    with pytest.raises(StateError) as caught:
        read_current(store)
    # a corrupt manifest's message goes on with the JSON parser's own words
    assert caught.value.what.startswith(message) if message.endswith(": ") else caught.value.what == message
    assert caught.value.where == (store.uri(where) if where else store.location)
    assert caught.value.fix == REBUILD_FIX
    if damage in ("totals", "contribution"):  # the manifest itself is fine: a reader of it alone gets it
        assert read_current(store, check_files=False).manifest == written


def test_an_s3_error_that_is_not_a_lost_race_is_not_called_one(s3_client: Any) -> None:
    from botocore.exceptions import ClientError

    store = StateStore("s3://no-such-bucket/rfm/state", client=s3_client)
    with pytest.raises(ClientError) as caught:
        store.swap_current("first\n", None)
    assert not isinstance(caught.value, StateConflict)
    assert caught.value.response["Error"]["Code"] == "NoSuchBucket"


@pytest.mark.parametrize(("code", "status"), [("PreconditionFailed", 412), ("ConditionalRequestConflict", 409),
                                              ("412", 412), ("409", 409)])
def test_every_answer_s3_gives_a_lost_conditional_write_is_a_conflict(code: str, status: int) -> None:
    # S3 answers a conditional write whose condition failed with 412 PreconditionFailed, and one that raced
    # another conditional write to the same key with 409 ConditionalRequestConflict
    # (docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html); without a body
    # botocore names the error by its status code. moto only gives the first, hence the stub.
    from botocore.stub import Stubber

    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        stub.add_client_error("put_object", service_error_code=code, http_status_code=status)
        with pytest.raises(StateConflict):
            StateStore(f"s3://{BUCKET}/rfm/state", client=client).swap_current("text\n", "etag-read")
