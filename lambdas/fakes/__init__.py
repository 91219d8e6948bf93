"""Local stand-ins for the APIs moto lacks (Pinpoint endpoints/imports/segments, Customer Profiles).

- :func:`running_fakes` starts the fakes on free loopback ports and points boto3 at them
  (``AWS_ENDPOINT_URL_PINPOINT`` / ``AWS_ENDPOINT_URL_CUSTOMER_PROFILES``) for the ``with`` block.
- :func:`local_destination_env` is what ``rfm run-local --destination ...`` wraps the run in: it
  starts the fakes a destination needs, configures the export Lambda for them, and on exit writes
  what the services received (endpoints, profiles, segments) as JSON to a folder.

Example
-------
>>> from pathlib import Path
>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> with local_destination_env("customer-profiles", root / "s3", root / "destinations") as local:
...     local.environment["EXPORT_DESTINATIONS"], local.environment["CUSTOMER_PROFILES_DOMAIN"]
('s3,customer-profiles', 'rfm-local')
>>> sorted(p.name for p in (root / "destinations" / "customer-profiles").iterdir())
['object_types.json', 'profiles.json', 'segment_definitions.json']
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lambdas.fakes._server import FakeService, Faults
from lambdas.fakes.customer_profiles import CustomerProfilesFake
from lambdas.fakes.pinpoint import PinpointFake
from lambdas.fakes.s3_source import ClientS3, FolderS3, S3Source, StorageS3, s3_source

__all__ = [
    "ClientS3",
    "CustomerProfilesFake",
    "Faults",
    "FolderS3",
    "LocalDestination",
    "PinpointFake",
    "RunningFakes",
    "S3Source",
    "StorageS3",
    "local_destination_env",
    "patched_environ",
    "running_fakes",
]

PINPOINT_ENDPOINT = "AWS_ENDPOINT_URL_PINPOINT"
CUSTOMER_PROFILES_ENDPOINT = "AWS_ENDPOINT_URL_CUSTOMER_PROFILES"
LOCAL_IMPORT_PREFIX = "s3://rfm-local/pinpoint-import"
LOCAL_ROLE_ARN = "arn:aws:iam::123456789012:role/rfm-local-pinpoint-import"
LOCAL_NAME = "rfm-local"


@contextmanager
def patched_environ(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (``None``: unset) environment variables for the block, then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass
class RunningFakes:
    """The fakes started by :func:`running_fakes` (None for those not started)."""

    pinpoint: PinpointFake | None = None
    customer_profiles: CustomerProfilesFake | None = None
    environment: dict[str, str] = field(default_factory=dict)


@contextmanager
def running_fakes(
    s3: str | Path | Any | None = None,
    *,
    pinpoint: bool = True,
    customer_profiles: bool = True,
    pinpoint_options: Mapping[str, Any] | None = None,
    customer_profiles_options: Mapping[str, Any] | None = None,
) -> Iterator[RunningFakes]:
    """Start the fakes on free 127.0.0.1 ports in threads; set their endpoint variables for the block.

    Parameters
    ----------
    s3 : path, Storage, boto3 S3 client or S3Source, optional
        What the Pinpoint fake's import jobs read: a folder laid out as ``<root>/<bucket>/<key>``,
        the export's :class:`~lambdas.export.storage.Storage`, or an S3 client (e.g. for moto's
        ``ThreadedMotoServer``).
    pinpoint, customer_profiles : bool
        Which fakes to start.
    pinpoint_options, customer_profiles_options : mapping, optional
        Keyword arguments for :class:`PinpointFake` / :class:`CustomerProfilesFake`
        (``max_file_bytes``, ``polls_until_done``, ``faults``, ``record_error``, ...).
    """
    fakes = RunningFakes(
        pinpoint=PinpointFake(s3_source(s3) if s3 is not None else None, **(pinpoint_options or {}))
        if pinpoint
        else None,
        customer_profiles=CustomerProfilesFake(**(customer_profiles_options or {}))
        if customer_profiles
        else None,
    )
    started: list[FakeService] = []
    try:
        for fake, variable in (
            (fakes.pinpoint, PINPOINT_ENDPOINT),
            (fakes.customer_profiles, CUSTOMER_PROFILES_ENDPOINT),
        ):
            if fake is not None:
                fakes.environment[variable] = fake.start()
                started.append(fake)
        with patched_environ(fakes.environment):
            yield fakes
    finally:
        for fake in started:
            fake.stop()


@dataclass
class LocalDestination:
    """What :func:`local_destination_env` set up: destinations, fakes, variables, summary folder."""

    destinations: tuple[str, ...]
    fakes: RunningFakes
    environment: dict[str, str]
    summary_dir: Path | None


def _aws_defaults() -> dict[str, str]:
    """Dummy credentials and a region when none are configured: the fakes accept any signature."""
    import boto3

    with patched_environ({"AWS_EC2_METADATA_DISABLED": "true"}):  # no instance-metadata lookups here
        session = boto3.Session()
        credentials = session.get_credentials()
    values = {}
    if credentials is None:
        values.update(AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local")
    if not session.region_name:
        values["AWS_DEFAULT_REGION"] = "us-east-1"
    return values


def _ensure_bucket(client: Any, uri: str) -> None:
    bucket = uri[len("s3://") :].split("/", 1)[0]
    try:
        client.head_bucket(Bucket=bucket)
    except Exception:
        client.create_bucket(Bucket=bucket)


@contextmanager
def local_destination_env(
    destination: str,
    s3_root_or_client: str | Path | Any,
    summary_dir: str | Path | None = None,
    *,
    import_prefix: str = LOCAL_IMPORT_PREFIX,
) -> Iterator[LocalDestination]:
    """Configure an in-process export to deliver to local fakes of the chosen destination(s).

    Parameters
    ----------
    destination : str
        ``"s3"``, ``"pinpoint"``, ``"customer-profiles"`` or a comma-separated mix. The ``s3``
        files are always written too (they are the local run's ``export/`` artifacts).
    s3_root_or_client : path or boto3 S3 client
        Where "S3" is in this run: the local runner's folder (``<output>/s3``, laid out as
        ``<bucket>/<key>``) or the S3 client of an S3-compatible endpoint. The Pinpoint import
        files go to ``import_prefix`` there, and the Pinpoint fake reads them from there.
    summary_dir : path, optional
        On exit, each fake's state is written under ``<summary_dir>/<destination>/`` as JSON
        (endpoints, segments and import jobs; profiles, segment definitions and object types),
        plus ``<summary_dir>/summary.json`` with the counts.

    Yields
    ------
    LocalDestination
        Call ``lambdas.export.app.handler`` inside the block.
    """
    from lambdas.export.config import CUSTOMER_PROFILES, PINPOINT, S3, parse_destinations

    chosen = parse_destinations(f"{S3},{destination}")
    wants_pinpoint, wants_profiles = PINPOINT in chosen, CUSTOMER_PROFILES in chosen
    summary = Path(summary_dir) if summary_dir is not None else None
    folder = isinstance(s3_root_or_client, str | Path)
    environment: dict[str, str] = {"EXPORT_DESTINATIONS": ",".join(chosen)}
    if wants_pinpoint or wants_profiles:
        environment.update(_aws_defaults())
        # The stand-ins start empty on every run, so a delta (only the changed customers) would leave
        # them holding a handful: send everyone. The S3 files, changes.parquet and published/ are as on AWS.
        environment["EXPORT_FULL_REPUBLISH"] = "true"
    with running_fakes(
        s3_root_or_client if wants_pinpoint else None,
        pinpoint=wants_pinpoint,
        customer_profiles=wants_profiles,
    ) as fakes:
        environment.update(fakes.environment)
        if fakes.pinpoint is not None:
            environment.update(
                PINPOINT_APPLICATION_ID=fakes.pinpoint.create_app(LOCAL_NAME),
                PINPOINT_IMPORT_ROLE_ARN=LOCAL_ROLE_ARN,
                PINPOINT_IMPORT_PREFIX=import_prefix,
                PINPOINT_POLL_SECONDS="0.05",
            )
            if folder:
                environment["EXPORT_LOCAL_S3_ROOT"] = str(Path(s3_root_or_client).resolve())
            else:
                _ensure_bucket(s3_root_or_client, import_prefix)
        if fakes.customer_profiles is not None:
            fakes.customer_profiles.create_domain(LOCAL_NAME)
            environment["CUSTOMER_PROFILES_DOMAIN"] = LOCAL_NAME
        local = LocalDestination(chosen, fakes, environment, summary)
        try:
            with patched_environ(environment):
                yield local
        finally:
            if summary is not None:
                _write_summary(local, summary)


def _write_summary(local: LocalDestination, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    counts: dict[str, Any] = {"destinations": list(local.destinations)}
    pinpoint, profiles = local.fakes.pinpoint, local.fakes.customer_profiles
    if pinpoint is not None:
        files = pinpoint.dump(folder / "pinpoint")
        app = local.environment["PINPOINT_APPLICATION_ID"]
        counts["pinpoint"] = {
            "application_id": app,
            "endpoints": pinpoint.endpoint_count(app),
            "segments": {
                s["Name"]: pinpoint.segment_size(app, s) for s in pinpoint.segments.get(app, {}).values()
            },
            "import_jobs": len(pinpoint.jobs.get(app, {})),
            "files": [str(f) for f in files],
        }
    if profiles is not None:
        files = profiles.dump(folder / "customer-profiles")
        domain = local.environment["CUSTOMER_PROFILES_DOMAIN"]
        counts["customer-profiles"] = {
            "domain": domain,
            "profiles": len(profiles.profiles.get(domain, {})),
            "segment_definitions": {
                name: profiles.segment_size(domain, d)
                for name, d in profiles.definitions.get(domain, {}).items()
            },
            "files": [str(f) for f in files],
        }
    (folder / "summary.json").write_text(json.dumps(counts, indent=2) + "\n")
