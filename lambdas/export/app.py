"""Join segment assignments with the RFM features and export the segments to the configured destinations.

Called by the pipeline's ExportSegments Lambda step, or in-process by the local runner (then the
URIs may be local folders or ``file://`` URIs and ``context`` may be None).

Event contract
--------------
``{"assignments_uri": prefix of the batch transform output (``*.out`` JSON Lines, one
{"customer_id", "cluster", "cluster_name", "rfm_segment"} object per line),
"features_uri": prefix holding ``rfm.parquet`` (or the file itself),
"output_uri": prefix to write to, "execution_id": str (optional), "model_package_arn": str (optional),
"destinations": "s3,pinpoint" or a list (optional; overrides ``EXPORT_DESTINATIONS``),
"full_republish": true (optional; overrides ``EXPORT_FULL_REPUBLISH``),
"published_uri": where the last published segments live (optional; default ``published/``
beside ``executions/``, see :func:`lambdas.export.changes.published_uri`)}``

What is written
---------------
Always ``<output_uri>/segments.parquet``, one row per customer, columns
``steps.columns.SEGMENT_COLUMNS``, the contact columns present in ``rfm.parquet`` (email,
phone, address, channel), then ``previous_segment`` and ``previous_cluster_name`` (the customer's
at the last publish; empty for new customers), sorted by ``customer_id``; and
``<output_uri>/changes.parquet``, the customers who entered, left or moved since the last publish
(:mod:`lambdas.export.changes`). All of it is one pass over the customers in id order, a batch at a
time (:mod:`lambdas.export.batches`): memory stays bounded at millions of customers. Then each chosen
destination, in the order s3, customer-profiles, pinpoint (see :mod:`lambdas.export.destinations`
and ``docs/export.md``; the s3 files are written during the pass):

- ``s3``: files people open (``export/segments/<slug>.csv``, ``export/clusters/<slug>.csv``,
  ``export/changes.csv``, ``export/index.csv``) and Parquet partitions for machines
  (``export/rfm_segment=<slug>/part.parquet``, ``export/cluster=<n>/part.parquet``), all replaced;
- ``pinpoint``: endpoint import through S3 plus one dynamic segment per RFM segment and cluster;
- ``customer-profiles``: profile attributes per customer plus the outbound campaign audiences: a segment
  definition per RFM segment and per cluster (``CUSTOMER_PROFILES_SEGMENT_DEFINITIONS``).

The API destinations get only the customers whose segment, cluster or contacts changed since the
last publish they received (delta; ``full_republish`` sends everyone), and the customers who left
are taken out of their segments. A destination that fails does not stop the others; the step then
fails with every destination's counts. Only when every destination succeeded does this publish
become the last one (``published/``). Running the same export twice changes nothing. In Lambda,
putting Customer Profiles objects and waiting for Pinpoint import jobs stop
:data:`DEADLINE_MARGIN_SECONDS` before the function's timeout (from
``context.get_remaining_time_in_millis()``), which is why pinpoint runs last (it then fails at once
if no time is left); without a context (local runs) there is no deadline.

Return value
------------
``{"customers": n, "segments": RFM segments with customers, "clusters": clusters with customers,
"destinations": "s3,pinpoint", "files": [URIs written by the s3 destination, segments.parquet and
changes.parquet], "changes": {"entered", "left", "moved", "customers_to_send", "compared_with"},
"by_destination": {name: counts}}``. The scalar keys fit SageMaker ``LambdaOutput``
(String/Integer) declarations.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import io
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import ClientError

from lambdas.export.audience import FileAudience
from lambdas.export.batches import (
    FIX_ASSIGN,
    FeatureFile,
    PassResult,
    _segments_batch,
    check_one_assignment_each,
    plain_changes,
    run_pass,
    text_ids,
    with_recommended_action,
)
from lambdas.export.changes import PreviousRows, published_uri, write_published
from lambdas.export.config import (
    CUSTOMER_PROFILES,
    PINPOINT,
    RUN_ORDER,
    S3,
    ExportSettings,
)
from lambdas.export.destinations import DestinationError, customer_profiles, pinpoint, s3_files
from lambdas.export.names import slug
from lambdas.export.retry import NO_SDK_RETRIES, RetryPolicy, error_code
from lambdas.export.storage import Storage, is_s3, join
from steps.columns import (
    ASSIGNMENT_COLUMNS,
    CLUSTER,
    CLUSTER_NAME,
    CONTACT_COLUMNS,
    CUSTOMER_ID,
    RFM_SEGMENT,
)
from steps.errors import PipelineError, RFMError
from steps.paths import CHANGES_FILE, SEGMENTS_FILE
from steps.playbook import load_playbook
from steps.published import CHANGES_SCHEMA, Published, read_published

__all__ = ["ExportRequest", "ExportFailed", "Clients", "export_segments", "resolve_settings", "run_export",
           "deadline_of", "handler", "slug", "join_tables", "with_recommended_action"]

logger = Logger(service="rfm-export")



@functools.cache
def release_memory_promptly() -> None:
    """Arrow's memory pool set to jemalloc with decay 0 (freed memory given back at once), unless
    ``ARROW_DEFAULT_MEMORY_POOL`` chooses one; done by the first export of a process, not on import."""
    if "jemalloc" in pa.supported_memory_backends() and not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(0)

ASSIGNMENT_SUFFIX = ".out"
DEADLINE_MARGIN_SECONDS = 30.0  # left to the Lambda after waiting stops: report, write the summary, return
_ASSIGNMENT_SCHEMA = pa.schema([(CUSTOMER_ID, pa.string()), (CLUSTER, pa.int64()),
                                (CLUSTER_NAME, pa.string()), (RFM_SEGMENT, pa.string())])


@dataclass(frozen=True)
class ExportRequest:
    """The Lambda step's inputs; ``destinations`` (comma-separated) overrides the configured ones."""

    assignments_uri: str
    features_uri: str
    output_uri: str
    execution_id: str = ""
    model_package_arn: str = ""
    destinations: str = ""
    full_republish: str = ""
    published_uri: str = ""

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> ExportRequest:
        missing = [k for k in ("assignments_uri", "features_uri", "output_uri") if not event.get(k)]
        if missing:
            raise PipelineError(f"the event lacks {', '.join(missing)}", "export Lambda",
                                "Pass assignments_uri, features_uri and output_uri from the pipeline")
        values = {k: event.get(k) or "" for k in cls.__dataclass_fields__}
        if isinstance(values["destinations"], list | tuple):
            values["destinations"] = ",".join(map(str, values["destinations"]))
        if values["full_republish"] is True:
            values["full_republish"] = "true"
        return cls(**{k: str(v) for k, v in values.items()})

    @property
    def uses_s3(self) -> bool:
        return any(is_s3(uri) for uri in (self.assignments_uri, self.features_uri, self.output_uri))


@dataclass(frozen=True)
class Clients:
    """boto3 clients for the API destinations; created once per container by the handler."""

    pinpoint: Any | None = None
    customer_profiles: Any | None = None


class ExportFailed(PipelineError):
    """Some destination(s) failed; ``summary`` holds every destination's counts."""

    def __init__(self, what: str, summary: dict[str, Any]) -> None:
        super().__init__(what, "export Lambda", "segments.parquet and the other destinations were written; "
                         "re-running the export is safe")
        self.summary = summary


def _json_values(line: str, where: str) -> list[Any]:
    """The JSON values on one line; glued values (``}{``, left when a transform without
    ``AssembleWith=Line`` concatenates responses) and arrays of objects are split up."""
    decoder, values, position, text = json.JSONDecoder(), [], 0, line.strip()
    while position < len(text):
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise PipelineError(f"not JSON ({error.msg})", where, FIX_ASSIGN) from None
        values.extend(value if isinstance(value, list) else [value])
        while position < len(text) and text[position] in " \t,":
            position += 1
    return values


def _assignment(record: Any, where: str) -> dict[str, Any]:
    if not isinstance(record, dict) or any(k not in record for k in ASSIGNMENT_COLUMNS):
        raise PipelineError(f"expected an object with {', '.join(ASSIGNMENT_COLUMNS)}", where, FIX_ASSIGN)
    cluster = record[CLUSTER]
    if isinstance(cluster, float) and cluster.is_integer():
        cluster = int(cluster)
    if not isinstance(record[CUSTOMER_ID], str) or not isinstance(cluster, int) or isinstance(cluster, bool):
        raise PipelineError("customer_id must be a JSON string and cluster an integer", where, FIX_ASSIGN)
    if not isinstance(record[CLUSTER_NAME], str) or not isinstance(record[RFM_SEGMENT], str):
        raise PipelineError("cluster_name and rfm_segment must be strings", where, FIX_ASSIGN)
    return {CUSTOMER_ID: record[CUSTOMER_ID], CLUSTER: cluster,
            CLUSTER_NAME: record[CLUSTER_NAME], RFM_SEGMENT: record[RFM_SEGMENT]}


def _fast_assignments(data: bytes) -> pa.Table | None:
    """Well-formed JSON Lines parsed by Arrow (fast); None when anything needs the careful parser."""
    try:
        table = pa_json.read_json(io.BytesIO(data), parse_options=pa_json.ParseOptions(
            explicit_schema=_ASSIGNMENT_SCHEMA, unexpected_field_behavior="ignore"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    table = table.select(list(ASSIGNMENT_COLUMNS))
    return None if any(column.null_count for column in table.columns) else table


def _careful_assignments(text: str, file: str, first_line: int = 0) -> pa.Table:
    rows = [
        _assignment(record, f"{file} line {number}")
        for number, line in enumerate(text.splitlines(), start=first_line + 1)
        for record in _json_values(line, f"{file} line {number}")
    ]
    return pa.Table.from_pylist(rows, schema=_ASSIGNMENT_SCHEMA)


ASSIGNMENT_BLOCK = 16 * 1024 * 1024  # bytes of JSON Lines parsed at a time


def _blocks(storage: Storage, file: str) -> Iterator[tuple[bytes, int]]:
    """``(block, lines before it)``: the file cut at line ends into blocks of about
    :data:`ASSIGNMENT_BLOCK` bytes, read as a stream (one GET); each checked to be UTF-8 (Arrow
    would take bad bytes and fail later, unnamed)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    pending, offset, lines = b"", 0, 0

    def checked(block: bytes, final: bool) -> bytes:
        try:
            decoder.decode(block, final=final)
        except UnicodeDecodeError as error:
            raise PipelineError(f"not UTF-8 text (byte {offset + error.start})", file, FIX_ASSIGN) from None
        return block

    for chunk in storage.iter_bytes(file):
        pending += chunk
        cut = pending.rfind(b"\n") + 1 if len(pending) >= ASSIGNMENT_BLOCK else 0
        if cut:
            block, pending = checked(pending[:cut], False), pending[cut:]
            yield block, lines
            offset, lines = offset + len(block), lines + block.count(b"\n")
    yield checked(pending, True), lines


def _compact_assignments(table: pa.Table) -> pa.Table:
    """The names dictionary-encoded: a few distinct values for millions of customers."""
    for name in (CLUSTER_NAME, RFM_SEGMENT):
        table = table.set_column(table.schema.get_field_index(name), name, pc.dictionary_encode(table[name]))
    return table


def read_assignment_table(storage: Storage, uri: str) -> pa.Table:
    """All assignments from the ``*.out`` files under ``uri``, as Arrow; customer ids stay strings,
    ``cluster_name`` and ``rfm_segment`` dictionary-encoded.

    Each file is read as a stream and parsed a block of lines at a time. Well-formed JSON Lines take
    a vectorised path; anything else (glued objects, arrays, floats such as ``1.0`` for a cluster,
    wrong types) the line-by-line parser, which names the bad line.
    """
    files = storage.list(uri, ASSIGNMENT_SUFFIX)
    if not files:
        raise PipelineError(f"no *{ASSIGNMENT_SUFFIX} assignment files", uri, FIX_ASSIGN)
    tables = []
    for file in files:
        for block, lines in _blocks(storage, file):
            if not block.strip():  # Arrow would take bad bytes and fail later, unnamed: checked above
                continue
            table = _fast_assignments(block)
            if table is None:
                table = _careful_assignments(block.decode("utf-8"), file, lines)
            tables.append(_compact_assignments(table))
    if not tables:
        return _compact_assignments(_ASSIGNMENT_SCHEMA.empty_table())
    return pa.concat_tables(tables).unify_dictionaries().combine_chunks()


def join_tables(features: pa.Table, assignments: pa.Table, where: str = "") -> pa.Table:
    """One row per customer, sorted by ``customer_id``: features joined with exactly one assignment each.

    Columns ``SEGMENT_COLUMNS`` then the contact columns present (the whole audience at once: the
    export itself streams, :mod:`lambdas.export.batches`).

    Raises
    ------
    PipelineError
        When some customer has no assignment, several, or an assignment names an unknown customer;
        the message gives the counts (never the ids).
    """
    feature_ids, assigned_ids = text_ids(features[CUSTOMER_ID]), text_ids(assignments[CUSTOMER_ID])
    check_one_assignment_each(feature_ids, assigned_ids, where)
    features = features.take(pc.sort_indices(feature_ids))
    assignments = assignments.take(pc.sort_indices(assigned_ids))
    contacts = [c for c in CONTACT_COLUMNS if c in features.column_names]
    return _segments_batch(features, assignments, contacts)


def _safe_reason(error: BaseException) -> str:
    """What went wrong, without a service's message (it may quote contact data back)."""
    if isinstance(error, RFMError):
        return str(error)
    if isinstance(error, ClientError):
        operation = getattr(error, "operation_name", "call")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        return f"{operation} failed: {error_code(error)} (HTTP {status})"
    return f"{type(error).__name__}"


CHECKPOINTS_DIR = "checkpoints"  # under output_uri: where a destination saves how far it got


def _run_destination(name: str, audience: Callable[[bool], FileAudience], passed: PassResult,
                     published: Published, request: ExportRequest, storage: Storage, settings: ExportSettings,
                     clients: Clients, retry: RetryPolicy, clock: Callable[[], float],
                     deadline: float | None) -> dict[str, Any]:
    delta = not settings.full_republish and published.reached(name)
    if name == PINPOINT:
        if clients.pinpoint is None:
            raise ValueError("the pinpoint destination needs a Pinpoint client")
        previous = passed.previous_changed.to_pandas() if passed.previous_changed is not None else None
        counts = pinpoint.export(audience(delta), client=clients.pinpoint, storage=storage,
                                 settings=settings.pinpoint, output_uri=request.output_uri,
                                 run_id=request.execution_id or "manual", retry=retry,
                                 record_retry_rounds=settings.record_retry_rounds, clock=clock, deadline=deadline,
                                 previous=previous)
        return {"mode": "delta" if delta else "full", **counts}
    if name == CUSTOMER_PROFILES:
        if clients.customer_profiles is None:
            raise ValueError("the customer-profiles destination needs a Customer Profiles client")
        checkpoint = customer_profiles.Checkpoint(
            storage, join(request.output_uri, CHECKPOINTS_DIR, f"{CUSTOMER_PROFILES}.json"))
        counts = customer_profiles.export(
            audience(delta), client=clients.customer_profiles, settings=settings.customer_profiles, retry=retry,
            record_retry_rounds=settings.record_retry_rounds, clock=clock, deadline=deadline,
            left_ids=passed.left_ids.to_pylist(), checkpoint=checkpoint)
        return {"mode": "delta" if delta else "full", **counts}
    raise ValueError(f"unknown destination {name}")


class _GuardedFiles:
    """The s3 destination's :class:`~lambdas.export.destinations.s3_files.FilesWriter`, fed during
    the pass: a failure is kept (and its files dropped), never raised, so the other destinations
    still run."""

    def __init__(self, make: Callable[[], s3_files.FilesWriter]) -> None:
        self.seconds = 0.0
        self.error: BaseException | None = None
        self.writer: s3_files.FilesWriter | None = None
        self.writer = self._run(make)

    def _run(self, work: Callable[[], Any]) -> Any:
        if self.error is not None:
            return None
        started = time.monotonic()
        try:
            return work()
        except Exception as error:  # reported as the s3 destination's failure
            self.error = error
            if self.writer is not None:
                with contextlib.suppress(Exception):
                    self.writer.abort()
            return None
        finally:
            self.seconds += time.monotonic() - started

    def write(self, batch: pa.Table) -> None:
        if self.writer is not None:
            self._run(lambda: self.writer.write(batch))

    def finish(self, changes: pa.Table) -> dict[str, Any]:
        """The s3 destination's counts; its error (kept from the pass or raised now) is raised."""
        result: dict[str, Any] = {}
        if self.writer is not None:
            result = self._run(lambda: self.writer.finish(changes))
        if self.error is not None:
            raise self.error
        return result


def resolve_settings(request: ExportRequest, settings: ExportSettings | None = None) -> ExportSettings:
    """``settings`` (default: the ``s3`` destination only) with the request's destinations, checked.

    Done once per invocation; what it returns is passed down as is.
    """
    return (settings or ExportSettings()).for_event({"destinations": request.destinations,
                                                     "full_republish": request.full_republish})


def export_segments(request: ExportRequest, storage: Storage, settings: ExportSettings | None = None,
                    clients: Clients | None = None, retry: RetryPolicy | None = None,
                    clock: Callable[[], float] = time.monotonic, deadline: float | None = None) -> dict[str, Any]:
    """Read, join, check, write ``segments.parquet``, export: :func:`resolve_settings`, then :func:`run_export`.

    ``settings`` are the configured ones (default: the ``s3`` destination only); the request's
    destinations override theirs. See :func:`run_export` for the rest.
    """
    return run_export(request, storage, resolve_settings(request, settings), clients, retry, clock, deadline)


def run_export(request: ExportRequest, storage: Storage, settings: ExportSettings,
               clients: Clients | None = None, retry: RetryPolicy | None = None,
               clock: Callable[[], float] = time.monotonic, deadline: float | None = None) -> dict[str, Any]:
    """Read, join, check, write ``segments.parquet``, export; the plain function behind :func:`handler`.

    Parameters
    ----------
    request : ExportRequest
        The event's URIs.
    storage : Storage
        Reads the inputs, writes the outputs and the Pinpoint import files.
    settings : ExportSettings
        Destinations and their settings for this request, as :func:`resolve_settings` returns them
        (not parsed or checked again here).
    clients : Clients, optional
        Pinpoint / Customer Profiles clients, needed when those destinations are chosen.
    retry : RetryPolicy, optional
        Per-call retries (default: ``settings.max_attempts`` attempts, real sleeps).
    clock : callable
        Monotonic seconds, for the Pinpoint import timeout and ``deadline``.
    deadline : float, optional
        ``clock()`` time at which to stop putting Customer Profiles objects and waiting for Pinpoint
        import jobs (the handler's: the Lambda's remaining time less :data:`DEADLINE_MARGIN_SECONDS`);
        None: no deadline.

    Returns
    -------
    dict
        See the module docstring ("Return value").

    Raises
    ------
    ExportFailed
        When a destination failed or kept failed records; ``summary`` has all counts.
    """
    release_memory_promptly()
    retry = retry or RetryPolicy(max_attempts=settings.max_attempts)
    clients = clients or Clients()

    assignments = read_assignment_table(storage, request.assignments_uri)
    features = FeatureFile(storage, request.features_uri)
    check_one_assignment_each(features.ids, text_ids(assignments[CUSTOMER_ID]), request.assignments_uri)
    assignments = assignments.take(pc.sort_indices(assignments[CUSTOMER_ID]))
    published_at = request.published_uri or published_uri(request.output_uri)
    published = read_published(storage, published_at, request.execution_id)
    previous = PreviousRows(storage, published.segments_uri)
    groups = s3_files.groups_of(assignments) if S3 in settings.destinations else None
    files = (_GuardedFiles(lambda: s3_files.FilesWriter(request.output_uri, storage, *groups))
             if groups is not None else None)
    segments_uri = join(request.output_uri, SEGMENTS_FILE)
    changes_uri = join(request.output_uri, CHANGES_FILE)
    with storage.open_write(segments_uri) as sink:
        writers: list[pq.ParquetWriter] = []

        def write(batch: pa.Table) -> None:
            if not writers:
                writers.append(pq.ParquetWriter(sink, batch.schema))
            writers[0].write_table(batch)
            if files is not None:
                files.write(batch)

        passed = run_pass(assignments, features, previous, load_playbook(), write,
                          keep_previous_rows=PINPOINT in settings.destinations)
        writers[0].close()
    del assignments, features, previous
    if passed.assignments_differ:
        logger.warning("rfm_segment differs between features and assignments; using the assignments'",
                       extra={"customers": passed.assignments_differ})
    with storage.open_write(changes_uri) as sink, pq.ParquetWriter(sink, CHANGES_SCHEMA) as writer:
        for chunk in plain_changes(passed.changes):
            writer.write_table(chunk)
        if not passed.changes.num_rows:
            writer.write_table(CHANGES_SCHEMA.empty_table())

    def audience(delta: bool) -> FileAudience:
        return FileAudience(storage, segments_uri, passed.population, passed.send if delta else None)

    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in [n for n in RUN_ORDER if n in settings.destinations]:
        started = clock()
        try:
            if name == S3 and files is not None:
                results[name] = files.finish(passed.changes)
                if files.error is not None:
                    raise files.error
            else:
                results[name] = _run_destination(name, audience, passed, published, request, storage, settings,
                                                 clients, retry, clock, deadline)
        except DestinationError as error:
            results[name] = {**error.counts, "error": error.what}
            errors[name] = f"{error.what}. {error.fix}" if error.fix else error.what
        except Exception as error:  # one destination failing must not stop the others; reported below
            errors[name] = _safe_reason(error)
            results[name] = {"error": errors[name]}
        spent = clock() - started + (files.seconds if name == S3 and files is not None else 0.0)
        results[name]["seconds"] = round(spent, 2)
    by_destination = {name: results[name] for name in settings.destinations}
    failed = [f"{name}: {errors[name]}" for name in settings.destinations if name in errors]
    written = [segments_uri, changes_uri, *by_destination.get(S3, {}).get("files", [])]
    if S3 in by_destination and "files" in by_destination[S3]:
        by_destination[S3]["files"] = len(by_destination[S3]["files"])
    summary = {
        "customers": passed.population.customers,
        "segments": passed.segments,
        "clusters": passed.clusters,
        "destinations": ",".join(settings.destinations),
        "files": written,
        "changes": {**passed.counts, "compared_with": published.execution_id or None},
        "by_destination": by_destination,
    }
    log = logger.warning if failed else logger.info
    log("Export failed" if failed else "Segments exported",
        extra={"output_uri": request.output_uri, **{k: v for k, v in summary.items() if k != "files"}})
    if not failed:  # only a publish that reached every destination is the one the next compares with
        write_published(storage, published_at, segments_uri, request.execution_id,
                        request.model_package_arn, settings.destinations, passed.population.customers)
    if failed:
        raise ExportFailed(f"{len(failed)} of {len(settings.destinations)} destination(s) failed: "
                           + "; ".join(failed), summary)
    return summary


_ENDPOINT_VARIABLES = {"s3": "AWS_ENDPOINT_URL_S3", "pinpoint": "AWS_ENDPOINT_URL_PINPOINT",
                       "customer-profiles": "AWS_ENDPOINT_URL_CUSTOMER_PROFILES"}
_SETTING_PREFIXES = ("EXPORT_", "PINPOINT_", "CUSTOMER_PROFILES_")


@functools.lru_cache(maxsize=16)
def _client(service: str, endpoint_url: str | None) -> Any:
    """One boto3 client per service and endpoint, kept for the container's life.

    The endpoint is part of the cache key so that a local run that starts fakes on new ports (and
    sets ``AWS_ENDPOINT_URL_<SERVICE>``) gets a client for them. Destination API clients have
    botocore's retries off: :class:`RetryPolicy` retries them.
    """
    config = None if service == "s3" else NO_SDK_RETRIES
    return boto3.client(service, endpoint_url=endpoint_url, config=config)


def _client_for(service: str, environ: Mapping[str, str]) -> Any:
    endpoint = environ.get(_ENDPOINT_VARIABLES[service]) or environ.get("AWS_ENDPOINT_URL") or None
    return _client(service, endpoint)


@functools.lru_cache(maxsize=4)
def _settings(snapshot: tuple[tuple[str, str], ...]) -> ExportSettings:
    """Settings parsed once per container (per distinct configuration, for in-process local runs)."""
    return ExportSettings.from_env(dict(snapshot))


def _s3_client() -> Any:
    """The S3 client, created once per container (honours ``AWS_ENDPOINT_URL``)."""
    return _client_for("s3", os.environ)


def deadline_of(context: LambdaContext | None, clock: Callable[[], float] = time.monotonic) -> float | None:
    """When to stop waiting, on ``clock``: the invocation's remaining time less :data:`DEADLINE_MARGIN_SECONDS`.

    None without a context (local runs): no deadline.
    """
    if context is None:
        return None
    return clock() + context.get_remaining_time_in_millis() / 1000 - DEADLINE_MARGIN_SECONDS


def _handle(event: dict[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    deadline = deadline_of(context)
    request = ExportRequest.from_event(event)
    logger.set_correlation_id(request.execution_id or None)
    logger.append_keys(model_package_arn=request.model_package_arn or None)
    snapshot = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_SETTING_PREFIXES)))
    settings = resolve_settings(request, _settings(snapshot))
    needs_s3 = settings.local_s3_root is None and (request.uses_s3 or PINPOINT in settings.destinations)
    storage = Storage(_s3_client() if needs_s3 else None, s3_root=settings.local_s3_root)
    clients = Clients(
        pinpoint=_client_for("pinpoint", os.environ) if PINPOINT in settings.destinations else None,
        customer_profiles=(_client_for("customer-profiles", os.environ)
                           if CUSTOMER_PROFILES in settings.destinations else None),
    )
    return run_export(request, storage, settings, clients, deadline=deadline)


_handle_in_lambda = logger.inject_lambda_context(_handle, clear_state=True)


def handler(event: dict[str, Any], context: LambdaContext | None = None) -> dict[str, Any]:
    """Lambda entry point; ``context`` may be None when the local runner calls it in-process."""
    if context is None:
        return _handle(event, None)
    return _handle_in_lambda(event, context)
