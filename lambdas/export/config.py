"""The export Lambda's configuration: which destinations, and each one's settings.

Everything comes from the function's environment (see ``docs/export.md``); the event may override
the destinations with a ``"destinations"`` key (``"s3,pinpoint"`` or a list).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from steps.environment import env_number
from steps.errors import PipelineError

S3 = "s3"
PINPOINT = "pinpoint"
CUSTOMER_PROFILES = "customer-profiles"
DESTINATIONS: tuple[str, ...] = (S3, PINPOINT, CUSTOMER_PROFILES)  # the order they are listed and reported in
# The order they run in: pinpoint last, because it waits for import jobs up to the Lambda's deadline;
# the others (no waiting) have then already run.
RUN_ORDER: tuple[str, ...] = (S3, CUSTOMER_PROFILES, PINPOINT)
DEFAULT_DESTINATIONS: tuple[str, ...] = (S3,)

PINPOINT_MAX_FILE_BYTES = 1_000_000_000  # Pinpoint's limit per import file: 1 GB
DEFAULT_OBJECT_TYPE = "RFMSegmentAssignment"
# The Customer Profiles segment definitions the export keeps (the audiences of outbound campaigns):
# one per RFM segment, one per k-means cluster; CUSTOMER_PROFILES_SEGMENT_DEFINITIONS picks them.
SEGMENTS = "segments"
CLUSTERS = "clusters"
DEFINITION_KINDS: tuple[str, ...] = (SEGMENTS, CLUSTERS)
NO_DEFINITIONS = "none"
_WHERE = "export Lambda environment"


def is_true(value: object) -> bool:
    """``true``/``1``/``yes`` (any case) or a JSON ``true``.

    >>> is_true("True"), is_true(""), is_true(False)
    (True, False, False)
    """
    return value is True or str(value).strip().lower() in {"1", "true", "yes"}


def parse_destinations(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Destination names from ``"s3, pinpoint"`` or a list, deduplicated, in :data:`DESTINATIONS` order.

    Examples
    --------
    >>> parse_destinations("pinpoint, S3,s3")
    ('s3', 'pinpoint')
    >>> parse_destinations("")
    ('s3',)
    """
    names = value.split(",") if isinstance(value, str) else list(value or [])
    chosen = {str(name).strip().lower().replace("_", "-") for name in names if str(name).strip()}
    unknown = sorted(chosen - set(DESTINATIONS))
    if unknown:
        raise PipelineError(
            f"unknown export destination(s) {', '.join(unknown)}",
            "EXPORT_DESTINATIONS or the event's destinations",
            f"Use a comma-separated subset of {', '.join(DESTINATIONS)}",
        )
    return tuple(name for name in DESTINATIONS if name in chosen) or DEFAULT_DESTINATIONS


def parse_definition_kinds(value: str | None) -> tuple[str, ...]:
    """Which segment definitions to keep, from ``CUSTOMER_PROFILES_SEGMENT_DEFINITIONS``.

    Empty means both kinds (the default); ``none`` means none (no segment-definition call at all).

    Examples
    --------
    >>> parse_definition_kinds(""), parse_definition_kinds("Clusters, segments"), parse_definition_kinds("none")
    (('segments', 'clusters'), ('segments', 'clusters'), ())
    >>> parse_definition_kinds("segments")
    ('segments',)
    """
    text = (value or "").strip().lower()
    if not text:
        return DEFINITION_KINDS
    chosen = {part.strip() for part in text.split(",") if part.strip()}
    if chosen == {NO_DEFINITIONS}:
        return ()
    unknown = sorted(chosen - set(DEFINITION_KINDS))
    if unknown:
        raise PipelineError(
            f"CUSTOMER_PROFILES_SEGMENT_DEFINITIONS has {', '.join(map(repr, unknown))}",
            _WHERE,
            f"Use {SEGMENTS}, {CLUSTERS}, {SEGMENTS},{CLUSTERS} (the default) or {NO_DEFINITIONS}",
        )
    return tuple(kind for kind in DEFINITION_KINDS if kind in chosen)


@dataclass(frozen=True)
class PinpointSettings:
    """``PINPOINT_*`` settings; ``import_prefix`` None means ``<output_uri>/pinpoint-import``."""

    application_id: str = ""
    role_arn: str = ""
    import_prefix: str | None = None
    max_file_bytes: int = PINPOINT_MAX_FILE_BYTES
    poll_seconds: float = 5.0
    timeout_seconds: float = 600.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> PinpointSettings:
        return cls(
            application_id=environ.get("PINPOINT_APPLICATION_ID", "").strip(),
            role_arn=environ.get("PINPOINT_IMPORT_ROLE_ARN", "").strip(),
            import_prefix=environ.get("PINPOINT_IMPORT_PREFIX", "").strip() or None,
            max_file_bytes=env_number(
                environ, "PINPOINT_MAX_FILE_BYTES", PINPOINT_MAX_FILE_BYTES, int, minimum=1
            ),
            poll_seconds=env_number(environ, "PINPOINT_POLL_SECONDS", 5.0),
            timeout_seconds=env_number(environ, "PINPOINT_IMPORT_TIMEOUT_SECONDS", 600.0),
        )

    def check(self) -> None:
        missing = [
            name
            for name, value in (
                ("PINPOINT_APPLICATION_ID", self.application_id),
                ("PINPOINT_IMPORT_ROLE_ARN", self.role_arn),
            )
            if not value
        ]
        if missing:
            raise PipelineError(
                f"the pinpoint destination needs {' and '.join(missing)}",
                _WHERE,
                "Set the Pinpoint project id and the IAM role Pinpoint assumes to read the import "
                "files, or remove pinpoint from EXPORT_DESTINATIONS",
            )
        if self.import_prefix is not None and not self.import_prefix.startswith("s3://"):
            raise PipelineError(
                f"PINPOINT_IMPORT_PREFIX must be an s3:// URI, got {self.import_prefix!r}",
                _WHERE,
                "Pinpoint imports endpoints only from S3",
            )
        if self.max_file_bytes > PINPOINT_MAX_FILE_BYTES:
            raise PipelineError(
                f"PINPOINT_MAX_FILE_BYTES={self.max_file_bytes} is above Pinpoint's 1 GB limit",
                _WHERE,
                f"Use at most {PINPOINT_MAX_FILE_BYTES}",
            )


@dataclass(frozen=True)
class CustomerProfilesSettings:
    """``CUSTOMER_PROFILES_*`` settings; ``segment_definitions``: the kinds of segment definition to keep."""

    domain: str = ""
    object_type: str = DEFAULT_OBJECT_TYPE
    concurrency: int = 8
    map_contacts: bool = False
    segment_definitions: tuple[str, ...] = DEFINITION_KINDS

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> CustomerProfilesSettings:
        return cls(
            domain=environ.get("CUSTOMER_PROFILES_DOMAIN", "").strip(),
            object_type=environ.get("CUSTOMER_PROFILES_OBJECT_TYPE", "").strip() or DEFAULT_OBJECT_TYPE,
            concurrency=env_number(environ, "CUSTOMER_PROFILES_CONCURRENCY", 8, int, minimum=1),
            map_contacts=is_true(environ.get("CUSTOMER_PROFILES_MAP_CONTACTS", "")),
            segment_definitions=parse_definition_kinds(environ.get("CUSTOMER_PROFILES_SEGMENT_DEFINITIONS")),
        )

    def check(self) -> None:
        if not self.domain:
            raise PipelineError(
                "the customer-profiles destination needs CUSTOMER_PROFILES_DOMAIN",
                _WHERE,
                "Set it to the Customer Profiles domain name, or remove customer-profiles "
                "from EXPORT_DESTINATIONS",
            )


@dataclass(frozen=True)
class ExportSettings:
    """Everything the export reads from its environment, parsed and checked.

    ``max_attempts`` is per AWS call (throttling and 5xx); ``record_retry_rounds`` is how many more
    passes the records that still failed get before the step fails with counts.
    """

    destinations: tuple[str, ...] = DEFAULT_DESTINATIONS
    pinpoint: PinpointSettings = field(default_factory=PinpointSettings)
    customer_profiles: CustomerProfilesSettings = field(default_factory=CustomerProfilesSettings)
    max_attempts: int = 8
    record_retry_rounds: int = 2
    local_s3_root: str | None = None
    full_republish: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ExportSettings:
        return cls(
            destinations=parse_destinations(environ.get("EXPORT_DESTINATIONS", "")),
            pinpoint=PinpointSettings.from_env(environ),
            customer_profiles=CustomerProfilesSettings.from_env(environ),
            max_attempts=env_number(environ, "EXPORT_MAX_ATTEMPTS", 8, int, minimum=1),
            record_retry_rounds=env_number(environ, "EXPORT_RECORD_RETRY_ROUNDS", 2, int, minimum=0),
            local_s3_root=environ.get("EXPORT_LOCAL_S3_ROOT", "").strip() or None,
            full_republish=is_true(environ.get("EXPORT_FULL_REPUBLISH", "")),
        )

    def for_event(self, event: Mapping[str, Any]) -> ExportSettings:
        """These settings with the event's ``destinations`` (if any), checked for the chosen destinations."""
        settings = self
        if event.get("destinations"):
            settings = replace(self, destinations=parse_destinations(event["destinations"]))
        if is_true(event.get("full_republish", "")):
            settings = replace(settings, full_republish=True)
        if PINPOINT in settings.destinations:
            settings.pinpoint.check()
        if CUSTOMER_PROFILES in settings.destinations:
            settings.customer_profiles.check()
        return settings
