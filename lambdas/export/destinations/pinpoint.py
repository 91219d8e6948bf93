"""The ``pinpoint`` destination: endpoints imported from S3, one dynamic segment per RFM segment and cluster.

AWS ended support for Amazon Pinpoint's engagement features (segments, campaigns, journeys) on
2026-10-30; this destination is kept for accounts that still have them. Amazon Connect Customer
Profiles (:mod:`lambdas.export.destinations.customer_profiles`) is the successor AWS recommends.

What it does, as in the AWS RFM guidance
-----------------------------------------
1. One endpoint per customer and channel: the ``email`` column gives an ``EMAIL`` endpoint, ``phone``
   an ``SMS`` one, and the guidance's ``channel`` + ``address`` pair an endpoint of that channel type.
   Endpoint ids are stable (``rfm-`` + a hash of customer id and channel type), so a re-import
   updates the same endpoints instead of adding new ones. Customers without any usable address are
   counted and skipped, as are endpoints with an invalid address (not E.164 for SMS/VOICE, no ``@``
   for EMAIL), an unsupported channel type, or tabs and line breaks (which the import cannot take).
2. The endpoint import CSV (:data:`IMPORT_COLUMNS`) is written under
   ``<import prefix>/<execution id>/attempt-<n>/part-<i>.csv``, split so that no file exceeds
   ``max_file_bytes`` (Pinpoint's limit is 1 GB per file). ``OptOut`` is deliberately not a column:
   an import must never undo a customer's opt-out.
3. ``GetSegments`` (all pages), then for each RFM segment and cluster ``CreateSegment`` when no
   dimensional segment of that name exists, ``UpdateSegment`` when its dimensions differ, nothing
   when it is already right. RFM segments are ``RFM segment: <name>`` and filter on the user
   attribute ``RFMSegment``; clusters are named after the cluster, ``RFM cluster: <cluster name>``,
   and filter on ``ClusterName`` (what a segment is called is what it selects). A cluster segment of
   an earlier version, ``RFM cluster: <n>``, is renamed (same segment id, so campaigns keep it).
4. ``CreateImportJob`` (``Format=CSV``, ``RegisterEndpoints=true``, ``DefineSegment=false`` so no
   import segment piles up per run) on that folder, then ``GetImportJob`` until ``COMPLETED`` or
   ``FAILED``. Endpoints the job reports as failed (their ids appear in ``Failures``; when they
   cannot all be identified, the whole attempt) are imported again, up to ``record_retry_rounds``
   more times. With a ``deadline`` (the Lambda's remaining time less a margin), waiting stops there
   (the polls' retry waits too: a retry that would wait past it is not made): the destination fails
   naming the job still running (it carries on; a re-run is safe).

Delta: with ``send`` (the customers whose segment, cluster or contacts changed since the last
publish) only their endpoints are imported; the endpoints the last publish had and this one no longer
has (customers who left, a channel that went away) are imported with :data:`RETIRED_VALUE` as
their ``RFMSegment``, ``Cluster`` and ``ClusterName``, so no dynamic segment selects them any more.

Every call goes through :class:`~lambdas.export.retry.RetryPolicy` (throttling and 5xx). The
destination raises :class:`~lambdas.export.destinations.DestinationError` with counts when endpoints
remain failed or unconfirmed, and with one line naming Pinpoint's end of support and its successor
when the service refuses the calls (:func:`end_of_support_error`).
"""

from __future__ import annotations

import hashlib
import io
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError, EndpointConnectionError

from lambdas.export.audience import Audience, audience_of
from lambdas.export.config import PinpointSettings
from lambdas.export.destinations import DestinationError, same_as_sent
from lambdas.export.names import (
    cluster_display_name,
    cluster_segment_names,
    segment_display_name,
    segment_names,
    unique_names,
)
from lambdas.export.retry import OutOfTime, RetryPolicy, error_code
from lambdas.export.storage import Storage, is_s3, join
from steps.columns import (
    ADDRESS,
    CHANNEL,
    CLUSTER,
    CLUSTER_NAME,
    CUSTOMER_ID,
    EMAIL,
    F_SCORE,
    FREQUENCY,
    M_SCORE,
    MONETARY,
    PHONE,
    R_SCORE,
    RECENCY_DAYS,
    RFM_SEGMENT,
)
from steps.errors import PipelineError

logger = Logger(service="rfm-export", child=True)

SEGMENT_ATTRIBUTE = "RFMSegment"
CLUSTER_ATTRIBUTE = "Cluster"
CLUSTER_NAME_ATTRIBUTE = "ClusterName"
IMPORT_COLUMNS: tuple[str, ...] = (
    "Id",
    "ChannelType",
    "Address",
    "User.UserId",
    f"User.UserAttributes.{SEGMENT_ATTRIBUTE}",
    f"User.UserAttributes.{CLUSTER_ATTRIBUTE}",
    f"User.UserAttributes.{CLUSTER_NAME_ATTRIBUTE}",
    "Metrics.RecencyDays",
    "Metrics.Frequency",
    "Metrics.Monetary",
    "Metrics.RScore",
    "Metrics.FScore",
    "Metrics.MScore",
)
_METRICS = {
    "Metrics.RecencyDays": RECENCY_DAYS,
    "Metrics.Frequency": FREQUENCY,
    "Metrics.Monetary": MONETARY,
    "Metrics.RScore": R_SCORE,
    "Metrics.FScore": F_SCORE,
    "Metrics.MScore": M_SCORE,
}
CHANNEL_TYPES = frozenset({"EMAIL", "SMS", "VOICE", "CUSTOM"})  # channels whose address we can know
MAX_ATTRIBUTE_VALUE = 100  # Pinpoint: an attribute value has at most 100 characters
MAX_SEGMENT_NAME = 100  # the API documents no limit for segment names: kept to an attribute value's 100
ENDPOINT_ID = re.compile(r"rfm-[0-9a-f]{32}")
_E164 = r"^\+[1-9][0-9]{1,14}$"
_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
_WHERE = "export to Amazon Pinpoint"
RETIRED_VALUE = "(none)"  # the segment attributes of an endpoint no segment may select any more
END_OF_SUPPORT_DATE = "2026-10-30"
# What the service answers an account whose engagement features are gone, or a caller it refuses.
REFUSAL_CODES = frozenset({"ForbiddenException", "AccessDeniedException", "MethodNotAllowedException",
                           "UnrecognizedClientException", "SubscriptionRequiredException"})
END_OF_SUPPORT_FIX = (
    "Use the customer-profiles destination (Amazon Connect Customer Profiles, with Amazon Connect outbound "
    "campaigns for sending; AWS's named successor) and remove pinpoint from EXPORT_DESTINATIONS; if this "
    "account still has Pinpoint, give the export function's role the pinpoint:* calls in docs/export.md"
)


def endpoint_id(customer_id: str, channel_type: str) -> str:
    """Stable endpoint id for one customer and channel (no contact data in it).

    Examples
    --------
    >>> endpoint_id("007", "EMAIL") == endpoint_id("007", "EMAIL") != endpoint_id("007", "SMS")
    True
    >>> len(endpoint_id("007", "EMAIL"))
    36
    """
    digest = hashlib.blake2b(f"{customer_id}\x1f{channel_type}".encode(), digest_size=16).hexdigest()
    return f"rfm-{digest}"


def endpoint_ids(customer_ids: pa.Array, channel_types: pa.Array, chunk: int = 50_000) -> pa.Array:
    """:func:`endpoint_id` of each (customer, channel type) pair, a chunk at a time (few Python strings
    alive at once, for millions of endpoints)."""
    parts = [
        pa.array([endpoint_id(c, t) for c, t in zip(customer_ids.slice(start, chunk).to_pylist(),
                                                    channel_types.slice(start, chunk).to_pylist(), strict=True)],
                 pa.string())
        for start in range(0, len(customer_ids), chunk)
    ]
    return pa.concat_arrays(parts) if parts else pa.array([], pa.string())


def cluster_labels(segments: pd.DataFrame) -> dict[int, str]:
    """Cluster -> its ``ClusterName`` attribute value: the cluster's name on one line, at most 100
    characters, unique (see :func:`~lambdas.export.names.unique_names`).

    Raises
    ------
    PipelineError
        When a cluster has more than one name (assignments of two models mixed).
    """
    pairs = segments[[CLUSTER, CLUSTER_NAME]].drop_duplicates()
    named_twice = sorted(set(pairs[CLUSTER][pairs[CLUSTER].duplicated()].astype(int)))
    if named_twice:
        raise PipelineError(
            f"cluster(s) {', '.join(map(str, named_twice))} have more than one cluster_name in the assignments",
            _WHERE,
            "Re-run AssignSegments with one model",
        )
    names = dict(zip(pairs[CLUSTER].astype(int), pairs[CLUSTER_NAME].astype(str), strict=True))
    return unique_names(dict(sorted(names.items())), MAX_ATTRIBUTE_VALUE)


def _text(values: pd.Series) -> pa.Array:
    return pa.array(values.astype(object).where(values.notna(), None).to_numpy(dtype=object), pa.string())


def _candidates(segments: pd.DataFrame) -> pa.Table:
    """Every (row, preference, channel type, address) the contact columns offer, blanks dropped."""
    sources: list[tuple[pa.Array, pa.Array]] = []
    rows = len(segments)
    if EMAIL in segments:
        sources.append((pa.array(["EMAIL"] * rows, pa.string()), _text(segments[EMAIL])))
    if PHONE in segments:
        sources.append((pa.array(["SMS"] * rows, pa.string()), _text(segments[PHONE])))
    if CHANNEL in segments and ADDRESS in segments:
        sources.append(
            (pc.utf8_upper(pc.utf8_trim_whitespace(_text(segments[CHANNEL]))), _text(segments[ADDRESS]))
        )
    parts = [
        pa.table(
            {
                "row": pa.array(np.arange(rows, dtype=np.int64)),
                "preference": pa.array(np.full(rows, preference, dtype=np.int64)),
                "channel_type": pc.fill_null(channel, ""),
                "address": pc.utf8_trim_whitespace(address),
            }
        )
        for preference, (channel, address) in enumerate(sources)
    ]
    if not parts:
        return pa.table(
            {
                "row": pa.array([], pa.int64()),
                "preference": pa.array([], pa.int64()),
                "channel_type": pa.array([], pa.string()),
                "address": pa.array([], pa.string()),
            }
        )
    found = pa.concat_tables(parts)
    return found.filter(pc.fill_null(pc.greater(pc.utf8_length(found["address"]), 0), False))


def _matches(values: pa.ChunkedArray | pa.Array, pattern: str) -> np.ndarray:
    return pc.fill_null(pc.match_substring_regex(values, pattern), False).to_numpy(zero_copy_only=False)


def endpoints(
    segments: pd.DataFrame, labels: Mapping[int, str] | None = None
) -> tuple[pa.Table, dict[str, Any]]:
    """The endpoint import rows (:data:`IMPORT_COLUMNS`) and the counts of what was skipped and why.

    Parameters
    ----------
    segments : DataFrame
        One row per customer: ``SEGMENT_COLUMNS`` plus whichever contact columns exist.
    labels : mapping, optional
        :func:`cluster_labels` of ``segments``, when already known.

    Returns
    -------
    (pyarrow.Table, dict)
        Rows sorted by customer then channel preference (email, phone, channel/address); counts
        ``customers`` (with at least one endpoint), ``customers_skipped_no_contact``,
        ``customers_skipped_no_valid_endpoint``, ``endpoints`` and ``endpoints_skipped`` by reason.
    """
    found = _candidates(segments)
    channel = found["channel_type"]
    phone_like = pc.is_in(channel, value_set=pa.array(["SMS", "VOICE"]))
    address = pc.if_else(
        phone_like, pc.replace_substring_regex(found["address"], r"[\s\-().]", ""), found["address"]
    )
    supported = pc.is_in(channel, value_set=pa.array(sorted(CHANNEL_TYPES))).to_numpy(zero_copy_only=False)
    is_email = pc.equal(channel, "EMAIL").to_numpy(zero_copy_only=False)
    is_phone = phone_like.to_numpy(zero_copy_only=False)
    valid = (~is_email | _matches(address, _EMAIL)) & (~is_phone | _matches(address, _E164))
    row_numbers = found["row"].to_numpy()
    customer_ids = _text(segments[CUSTOMER_ID].astype(str))
    bad_chars = _matches(address, r"[\t\r\n]") | _matches(pc.take(customer_ids, row_numbers), r"[\t\r\n]")
    keep = supported & valid & ~bad_chars

    kept = found.set_column(3, "address", address).filter(pa.array(keep))
    kept = kept.take(pc.sort_indices(kept, [("row", "ascending"), ("preference", "ascending")]))
    codes = pc.dictionary_encode(kept["channel_type"]).combine_chunks().indices.to_numpy(zero_copy_only=False)
    keys = kept["row"].to_numpy() * 64 + codes.astype(np.int64)
    first = np.zeros(len(keys), dtype=bool)
    first[np.unique(keys, return_index=True)[1]] = True
    duplicates = int((~first).sum())
    kept = kept.filter(pa.array(first))

    rows = kept["row"].to_numpy()
    chosen_ids = pc.take(customer_ids, rows)
    ids = endpoint_ids(chosen_ids, kept["channel_type"].combine_chunks())
    cluster_names = pa.array(
        segments[CLUSTER].astype(int).map(labels or cluster_labels(segments)).to_numpy(dtype=object), pa.string()
    )
    columns: dict[str, Any] = {
        "Id": ids,
        "ChannelType": kept["channel_type"],
        "Address": kept["address"],
        "User.UserId": chosen_ids,
        f"User.UserAttributes.{SEGMENT_ATTRIBUTE}": pc.take(_text(segments[RFM_SEGMENT].astype(str)), rows),
        f"User.UserAttributes.{CLUSTER_ATTRIBUTE}": pc.take(
            pa.array(segments[CLUSTER].astype(int).astype(str).to_numpy(dtype=object), pa.string()), rows
        ),
        f"User.UserAttributes.{CLUSTER_NAME_ATTRIBUTE}": pc.take(cluster_names, rows),
    }
    for column, source in _METRICS.items():
        columns[column] = pc.take(pa.array(segments[source].to_numpy()), rows)
    table = pa.table(columns)

    with_contact = np.zeros(len(segments), dtype=bool)
    with_contact[row_numbers] = True
    with_endpoint = np.zeros(len(segments), dtype=bool)
    with_endpoint[rows] = True
    counts = {
        "customers": int(with_endpoint.sum()),
        "customers_skipped_no_contact": int((~with_contact).sum()),
        "customers_skipped_no_valid_endpoint": int((with_contact & ~with_endpoint).sum()),
        "endpoints": table.num_rows,
        "endpoints_skipped": {
            "unsupported_channel": int((~supported).sum()),
            "invalid_address": int((supported & ~valid).sum()),
            "tabs_or_line_breaks": int((supported & valid & bad_chars).sum()),
            "same_channel_twice": duplicates,
        },
    }
    return table, counts


def csv_header() -> bytes:
    return (",".join(IMPORT_COLUMNS) + "\n").encode()


def csv_body(rows: pa.Table) -> bytes:
    """The rows as CSV lines without a header: text quoted, numbers bare, one ``\\n`` per row."""
    buffer = io.BytesIO()
    pa_csv.write_csv(rows, buffer, pa_csv.WriteOptions(include_header=False, quoting_style="needed"))
    return buffer.getvalue()


def split_csv(header: bytes, body: bytes, max_bytes: int) -> list[bytes]:
    """Cut ``body`` at line ends into files of at most ``max_bytes`` each, the header repeated in each.

    Examples
    --------
    >>> [len(part) for part in split_csv(b"h\\n", b"aaa\\nbbb\\nccc\\n", 10)]
    [10, 6]
    """
    if not body:
        return []
    capacity = max_bytes - len(header)
    ends = np.flatnonzero(np.frombuffer(body, dtype=np.uint8) == ord("\n")) + 1
    if len(ends) == 0 or ends[-1] != len(body):
        ends = np.append(ends, len(body))
    files, start = [], 0
    while start < len(body):
        index = int(np.searchsorted(ends, start + capacity, side="right")) - 1
        end = int(ends[index]) if index >= 0 else start
        if end <= start:
            raise PipelineError(
                f"an import row is longer than the {max_bytes}-byte file limit",
                _WHERE,
                "Raise PINPOINT_MAX_FILE_BYTES",
            )
        files.append(header + body[start:end])
        start = end
    return files


def write_import_files(rows: pa.Table, folder: str, storage: Storage, max_bytes: int) -> list[str]:
    """Write ``rows`` as ``part-<i>.csv`` files under ``folder``; returns their URIs."""
    uris = []
    for number, data in enumerate(split_csv(csv_header(), csv_body(rows), max_bytes)):
        uri = join(folder, f"part-{number:05d}.csv")
        storage.write_bytes(uri, data)
        uris.append(uri)
    return uris


def segment_dimensions(attribute: str, value: str) -> dict[str, Any]:
    return {"UserAttributes": {attribute: {"AttributeType": "INCLUSIVE", "Values": [value]}}}


def desired_segments(
    segments: pd.DataFrame, labels: Mapping[int, str] | None = None
) -> dict[str, dict[str, Any]]:
    """Segment name -> dimensions: every RFM segment of the grid (and any other present), and every
    cluster, named ``RFM cluster: <cluster name>`` and selecting that ``ClusterName`` (``labels``:
    :func:`cluster_labels` of ``segments``, when already known)."""
    names = segment_names(segments[RFM_SEGMENT].astype(str))
    wanted = {segment_display_name(name): segment_dimensions(SEGMENT_ATTRIBUTE, name) for name in names}
    labels = labels or cluster_labels(segments)
    for cluster, name in cluster_segment_names(labels, MAX_SEGMENT_NAME).items():
        wanted[name] = segment_dimensions(CLUSTER_NAME_ATTRIBUTE, labels[cluster])
    return wanted


def previous_names(labels: Mapping[int, str]) -> dict[str, str]:
    """Cluster segment name -> the name earlier versions gave that cluster's segment (``RFM cluster: <n>``).

    Examples
    --------
    >>> previous_names({0: "Champions at heart"})
    {'RFM cluster: Champions at heart': 'RFM cluster: 0'}
    """
    names = cluster_segment_names(labels, MAX_SEGMENT_NAME)
    return {name: cluster_display_name(cluster) for cluster, name in names.items()}


def _import_counts(
    jobs: list[str] | None = None,
    files: int = 0,
    retried: int = 0,
    *,
    running: str | None = None,
    failed: int = 0,
    unconfirmed: int = 0,
) -> dict[str, Any]:
    """The import's counts: jobs started (``running``: the one still running), files, endpoints."""
    still_running = [running] if running else []
    return {
        "import_jobs": [*(jobs or []), *still_running],
        "import_jobs_running": still_running,
        "import_files": files,
        "endpoints_retried": retried,
        "endpoints_failed": failed,
        "endpoints_unconfirmed": unconfirmed,
    }


class ImportOutOfTime(PipelineError):
    """The deadline came before the import finished; ``counts`` says how far it got."""

    def __init__(self, what: str, fix: str, counts: dict[str, Any]) -> None:
        super().__init__(what, _WHERE, fix)
        self.counts = counts


class _StillRunning(Exception):
    """Raised by :meth:`PinpointExport.run_import_job` at the deadline; ``job`` is the job's last state."""

    def __init__(self, job: dict[str, Any]) -> None:
        super().__init__(job["Id"])
        self.job = job


class PinpointExport:
    """One export run against one Pinpoint project.

    Parameters
    ----------
    client : boto3 Pinpoint client
        Created once per container, botocore retries off (the policy retries).
    storage : Storage
        Where the import files go (``s3://``, or a folder standing in for S3 in local runs).
    settings : PinpointSettings
    retry : RetryPolicy
        Per-call retries (throttling and 5xx).
    record_retry_rounds : int
        Extra imports of the endpoints an import job reported as failed.
    clock : callable
        Monotonic seconds, for the import timeout and the deadline.
    sleep : callable, optional
        Waits ``poll_seconds`` between ``GetImportJob`` calls; default: the policy's ``sleep``.
    deadline : float, optional
        ``clock()`` time at which to stop waiting for import jobs (the Lambda's remaining time less a
        margin); None: only ``settings.timeout_seconds`` bounds each wait.
    """

    def __init__(
        self,
        client: Any,
        storage: Storage,
        settings: PinpointSettings,
        retry: RetryPolicy,
        record_retry_rounds: int = 2,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] | None = None,
        deadline: float | None = None,
    ) -> None:
        self.client = client
        self.storage = storage
        self.settings = settings
        self.retry = retry
        self.record_retry_rounds = record_retry_rounds
        self.clock = clock
        self.sleep = sleep or retry.sleep
        self.polling = retry.until(deadline, clock)  # holds the deadline (inf without one); its retries stop there

    def check_project(self) -> None:
        """Fail early, with a clear message, when the project does not exist."""
        try:
            self.retry.call(self.client.get_app, ApplicationId=self.settings.application_id)
        except ClientError as error:
            if error_code(error) == "NotFoundException":
                raise PipelineError(
                    f"Pinpoint project {self.settings.application_id!r} does not exist",
                    "PINPOINT_APPLICATION_ID",
                    "Use the id of an existing project",
                ) from None
            raise

    def import_folder(self, output_uri: str, run_id: str) -> str:
        root = self.settings.import_prefix or join(output_uri, "pinpoint-import")
        if not is_s3(root):
            raise PipelineError(
                f"the import files need an s3:// location, got {root}",
                _WHERE,
                "Set PINPOINT_IMPORT_PREFIX to an s3:// prefix Pinpoint's import role can read",
            )
        return join(root, run_id)

    def run_import_job(self, s3_url: str) -> dict[str, Any]:
        """CreateImportJob on ``s3_url`` and poll GetImportJob until it finishes; the final job."""
        app = self.settings.application_id
        job = self.retry.call(
            self.client.create_import_job,
            ApplicationId=app,
            ImportJobRequest={
                "Format": "CSV",
                "S3Url": s3_url,
                "RoleArn": self.settings.role_arn,
                "RegisterEndpoints": True,
                "DefineSegment": False,
            },
        )["ImportJobResponse"]
        give_up = self.clock() + self.settings.timeout_seconds
        while job["JobStatus"] not in ("COMPLETED", "FAILED"):
            now = self.clock()
            if now >= self.polling.deadline:
                raise _StillRunning(job)
            if now > give_up:
                raise PipelineError(
                    f"import job {job['Id']} still {job['JobStatus']} after "
                    f"{self.settings.timeout_seconds:.0f} s",
                    _WHERE,
                    "Check it with `aws pinpoint get-import-job`, or raise PINPOINT_IMPORT_TIMEOUT_SECONDS",
                )
            self.sleep(min(self.settings.poll_seconds, self.polling.deadline - now))
            try:
                job = self.polling.call(self.client.get_import_job, ApplicationId=app, JobId=job["Id"])[
                    "ImportJobResponse"
                ]
            except OutOfTime:
                raise _StillRunning(job) from None
        logger.info(
            "Pinpoint import job finished",
            extra={
                "import_job_id": job["Id"],
                "job_status": job["JobStatus"],
                "total_processed": job.get("TotalProcessed"),
                "total_failures": job.get("TotalFailures"),
            },
        )
        return job

    def import_endpoints(self, rows: pa.Table, folder: str) -> dict[str, Any]:
        """Import ``rows``; re-import the failed ones; counts of jobs, files and what still failed.

        Raises
        ------
        ImportOutOfTime
            When the deadline comes while a job runs, or before a (retry) job could start.
        """
        self.storage.delete(self.storage.list(folder))  # each job imports everything under its folder
        pending, jobs, files, retried = rows, [], 0, 0
        for attempt in range(1, self.record_retry_rounds + 2):
            if self.clock() >= self.polling.deadline:
                raise self._no_time_to_start(attempt, pending.num_rows, jobs, files, retried)
            attempt_folder = join(folder, f"attempt-{attempt}")
            files += len(
                write_import_files(pending, attempt_folder, self.storage, self.settings.max_file_bytes)
            )
            try:
                job = self.run_import_job(attempt_folder + "/")
            except _StillRunning as running:
                raise self._stopped_waiting(running.job, pending.num_rows, jobs, files, retried) from None
            jobs.append(job["Id"])
            failed = self._failed_ids(job, pending)
            if not failed:
                pending = pending.slice(0, 0)
                break
            if attempt <= self.record_retry_rounds:
                retried += len(failed)
            pending = pending.filter(pc.is_in(pending["Id"], value_set=pa.array(sorted(failed), pa.string())))
        return _import_counts(jobs, files, retried, failed=pending.num_rows)

    def _stopped_waiting(self, job: dict[str, Any], endpoints: int, jobs: list[str], files: int,
                         retried: int) -> ImportOutOfTime:
        app, job_id = self.settings.application_id, job["Id"]
        return ImportOutOfTime(
            f"stopped waiting for import job {job_id} (still {job['JobStatus']}) so that the Lambda function "
            f"can finish before its timeout; its {endpoints} endpoints are not confirmed",
            f"The job carries on: check it in the Pinpoint console (project {app}, Imports) or with `aws "
            f"pinpoint get-import-job --application-id {app} --job-id {job_id}`; re-running the export is "
            "safe (it is idempotent). For audiences this large raise the function's timeout",
            _import_counts(jobs, files, retried, running=job_id, unconfirmed=endpoints),
        )

    @staticmethod
    def _no_time_to_start(attempt: int, endpoints: int, jobs: list[str], files: int,
                          retried: int) -> ImportOutOfTime:
        if attempt == 1:
            what = f"no time left to start the import of {endpoints} endpoints"
            counts = _import_counts(jobs, files, retried, unconfirmed=endpoints)
        else:
            failed_in = ", ".join(jobs)
            what = f"no time left to import again the {endpoints} endpoints that failed in import job(s) {failed_in}"
            counts = _import_counts(jobs, files, retried, failed=endpoints)
        return ImportOutOfTime(f"{what} before the Lambda function's timeout",
                               "Re-run the export (it is idempotent), or raise the function's timeout", counts)

    @staticmethod
    def _failed_ids(job: dict[str, Any], rows: pa.Table) -> set[str]:
        """Ids of the endpoints to import again: the ones named in ``Failures``, or all if some are not."""
        total = int(job.get("TotalFailures") or 0)
        if job["JobStatus"] == "FAILED" and total == 0:
            total = rows.num_rows
        if total == 0:
            return set()
        ids = set(rows["Id"].to_pylist())
        named = {found for text in job.get("Failures", []) for found in ENDPOINT_ID.findall(text)} & ids
        return named if len(named) >= total else ids

    def upsert_segments(
        self, wanted: dict[str, dict[str, Any]], previous: Mapping[str, str] | None = None
    ) -> dict[str, int]:
        """Create missing segments, update changed ones; counts ``created``/``updated``/``unchanged``/``renamed``.

        ``previous`` maps a wanted name to the name an earlier version used for the same segment: when
        no segment has the wanted name but one has the previous one (and no wanted segment is called
        that), that segment is renamed and updated instead of a new one being created.
        """
        app = self.settings.application_id
        existing: dict[str, list[dict[str, Any]]] = {}
        token = None
        while True:
            page = self.retry.call(
                self.client.get_segments,
                ApplicationId=app,
                PageSize="100",
                **({"Token": token} if token else {}),
            )["SegmentsResponse"]
            for segment in page.get("Item", []):
                if segment.get("SegmentType") == "DIMENSIONAL":
                    existing.setdefault(segment.get("Name", ""), []).append(segment)
            token = page.get("NextToken")
            if not token:
                break
        counts = {"created": 0, "updated": 0, "unchanged": 0, "renamed": 0, "duplicates_found": 0}
        for name, dimensions in wanted.items():
            old_name = (previous or {}).get(name)
            renaming = bool(old_name and old_name not in wanted and not existing.get(name) and existing.get(old_name))
            same_name = sorted(
                existing.get(old_name if renaming else name, []), key=lambda s: (s.get("CreationDate", ""), s["Id"])
            )
            counts["duplicates_found"] += max(0, len(same_name) - 1)
            request = {"Name": name, "Dimensions": dimensions}
            if not same_name:
                self.retry.call(self.client.create_segment, ApplicationId=app, WriteSegmentRequest=request)
                counts["created"] += 1
            elif renaming or not same_as_sent(same_name[0].get("Dimensions", {}), dimensions):
                self.retry.call(
                    self.client.update_segment,
                    ApplicationId=app,
                    SegmentId=same_name[0]["Id"],
                    WriteSegmentRequest=request,
                )
                counts["renamed" if renaming else "updated"] += 1
            else:
                counts["unchanged"] += 1
        return counts


def export(
    segments: pd.DataFrame | Audience,
    *,
    client: Any,
    storage: Storage,
    settings: PinpointSettings,
    output_uri: str,
    run_id: str,
    retry: RetryPolicy,
    record_retry_rounds: int = 2,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Any] | None = None,
    deadline: float | None = None,
    send: pd.Series | np.ndarray | None = None,
    previous: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Upsert the segments and import the endpoints; the counts, or :class:`DestinationError`.

    ``segments`` is every customer (a DataFrame) or an :class:`~lambdas.export.audience.Audience`
    (the customers to send, and what is known of all). ``send`` (booleans aligned with a DataFrame
    ``segments``; None: everyone) picks the customers whose endpoints are imported; ``previous``
    (the last publish's rows of the customers who left or changed; more rows do no harm) gives the
    endpoints to retire.

    The segments come first (they select by attribute, so they need no finished import), the import
    last: with a ``deadline`` (``clock()`` time, see :class:`PinpointExport`) waiting for it is the only
    step that is cut short.

    Returns
    -------
    dict
        The counts of :func:`endpoints` (of the customers sent), ``customers_unchanged``,
        ``endpoints_retired``, plus ``segments`` (created/updated/unchanged/renamed/
        duplicates_found), ``import_jobs``, ``import_jobs_running``, ``import_files``,
        ``endpoints_retried``, ``endpoints_failed`` and ``endpoints_unconfirmed``.
    """
    run = PinpointExport(client, storage, settings, retry, record_retry_rounds, clock, sleep, deadline)
    try:
        return _export(run, segments, output_uri, run_id, record_retry_rounds, send, previous)
    except ClientError as error:
        if error_code(error) in REFUSAL_CODES:
            raise end_of_support_error(error) from None
        raise
    except EndpointConnectionError:
        raise end_of_support_error(None) from None


def end_of_support_error(error: ClientError | None) -> DestinationError:
    """The one line for a Pinpoint API that refuses us: its end of support, and the successor."""
    if error is None:
        refused = "Amazon Pinpoint's endpoint cannot be reached"
    else:
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        refused = f"Amazon Pinpoint refused {error.operation_name} ({error_code(error)}, HTTP {status})"
    return DestinationError(
        f"{refused}: AWS ended support for Pinpoint's engagement features (endpoints, segments, campaigns, "
        f"journeys, analytics) on {END_OF_SUPPORT_DATE}", _WHERE, END_OF_SUPPORT_FIX, {"end_of_support": True})


def retired_endpoints(previous: pd.DataFrame, keep_ids: pa.Array) -> pa.Table:
    """The endpoints of ``previous`` (the last publish's rows) whose ids are not in ``keep_ids``, with
    :data:`RETIRED_VALUE` as their segment attributes: imported, they leave every dynamic segment."""
    if previous.empty:
        return pa.table({name: pa.array([], pa.float64() if name.startswith("Metrics.") else pa.string())
                         for name in IMPORT_COLUMNS})
    labels = {cluster: RETIRED_VALUE for cluster in previous[CLUSTER].astype(int).unique()}
    rows, _counts = endpoints(previous, labels)
    rows = rows.filter(pc.invert(pc.is_in(rows["Id"], value_set=keep_ids)))
    retired = pa.array([RETIRED_VALUE] * rows.num_rows, pa.string())
    for attribute in (SEGMENT_ATTRIBUTE, CLUSTER_ATTRIBUTE, CLUSTER_NAME_ATTRIBUTE):
        name = f"User.UserAttributes.{attribute}"
        rows = rows.set_column(rows.schema.get_field_index(name), name, retired)
    return rows


def _export(run: PinpointExport, segments: pd.DataFrame | Audience, output_uri: str, run_id: str,
            record_retry_rounds: int, send: pd.Series | np.ndarray | None,
            previous: pd.DataFrame | None) -> dict[str, Any]:
    run.check_project()
    audience = audience_of(segments, send)
    population = audience.population
    labels = cluster_labels(population.groups)
    chosen = audience.whole()
    rows, counts = endpoints(chosen, labels)
    counts["customers_unchanged"] = population.customers - len(chosen)
    if previous is not None and len(previous):
        affected = previous
        if isinstance(segments, pd.DataFrame) and send is not None:
            unchanged_ids = segments[CUSTOMER_ID].astype(str)[~np.asarray(send, dtype=bool)]
            affected = previous[~previous[CUSTOMER_ID].astype(str).isin(set(unchanged_ids))]
        retired = retired_endpoints(affected, rows["Id"].combine_chunks())
        # one chunk, no empty ones: Arrow's CSV writer can write a zero-row chunk as NUL bytes
        rows = pa.concat_tables([t for t in (rows, retired.cast(rows.schema)) if t.num_rows]
                                or [rows]).combine_chunks()
        counts["endpoints_retired"] = retired.num_rows
    else:
        counts["endpoints_retired"] = 0
    folder = run.import_folder(output_uri, run_id)
    counts["segments"] = run.upsert_segments(desired_segments(population.groups, labels), previous_names(labels))
    try:
        counts.update(run.import_endpoints(rows, folder) if rows.num_rows else _import_counts())
    except ImportOutOfTime as error:
        counts.update(error.counts)
        logger.warning("Pinpoint import stopped at the deadline", extra={"pinpoint": counts})
        raise DestinationError(error.what, _WHERE, error.fix or "", counts) from None
    logger.info("Exported to Pinpoint", extra={"pinpoint": counts})
    if counts["endpoints_failed"]:
        raise DestinationError(
            f"{counts['endpoints_failed']} of {counts['endpoints']} endpoints failed to import after "
            f"{record_retry_rounds} retry round(s) (import jobs {', '.join(counts['import_jobs'])})",
            _WHERE,
            "See the jobs' Failures with `aws pinpoint get-import-job`; fix the data and re-run",
            counts,
        )
    return counts
