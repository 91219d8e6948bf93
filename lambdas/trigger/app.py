"""Start the SageMaker pipeline over the whole input prefix when transactions files arrive.

A burst of objects becomes one execution over ``s3://<bucket>/<INPUT_PREFIX>`` (the history), never
two at once, and none is lost: see :mod:`lambdas.trigger.single_flight` and docs/history.md.

Event contract
--------------
``handler(event, context)`` accepts S3 ``ObjectCreated`` events in either shape:

- a direct S3 notification, ``{"Records": [{"eventName": "ObjectCreated:Put", "s3": {...}}]}``;
- an EventBridge event, ``{"detail-type": "Object Created", "source": "aws.s3",
  "detail": {"bucket": {"name": ...}, "object": {"key", "version-id", "etag", "size"}}}``.

Keys are URL-decoded (``+`` and ``%xx``). An object starts an execution when it is in
``INPUT_BUCKET`` (if set), under ``INPUT_PREFIX``, not under ``OUTPUT_PREFIX`` or any of
``IGNORE_PREFIXES``, not a folder marker, non-empty and has one of ``SUFFIXES``; anything else is
ignored with a log line and a reason in the result. S3's ``s3:TestEvent`` (sent when a
notification is configured) and EventBridge events from other sources are ignored the same way.

Configuration (environment, read once per container)
----------------------------------------------------
``PIPELINE_NAME`` (required), ``INPUT_BUCKET`` (default: any), ``INPUT_PREFIX`` (default ``""``:
the whole bucket), ``OUTPUT_PREFIX`` (default ``rfm/executions/``: the pipeline's own outputs),
``IGNORE_PREFIXES`` (comma-separated, e.g. a Pinpoint import prefix in the same bucket),
``SUFFIXES`` (default ``.csv,.csv.gz,.parquet``, matched case-insensitively),
``PIPELINE_PARAMETERS`` (JSON object of extra pipeline parameters), ``IDEMPOTENCY_TABLE``
(DynamoDB table, partition key ``id`` string, TTL on ``expiration``),
``IDEMPOTENCY_EXPIRES_SECONDS`` (default 86400), ``STATE_PREFIX`` (default ``rfm/state/``: the
single-flight markers go under its ``trigger/``).

Two more events come from EventBridge: SageMaker's "Model Building Pipeline Execution Status
Change" of this pipeline (an execution ended: start the follow-up if objects arrived during it),
and a "Scheduled Event" (the optional scheduled rebuild: a run with ``Rebuild=true``). Both need
``INPUT_BUCKET``.

Return value
------------
``{"started": [execution ARNs], "deferred": n, "ignored": [{"key": ..., "reason": ...}], "duplicates": n}``;
``deferred`` counts objects left to the run in progress (or being started).

Idempotency
-----------
An object is identified by bucket, key, version id and ETag (both: with versioning suspended every
upload has version id ``"null"``, so the ETag tells re-uploads apart). With ``IDEMPOTENCY_TABLE``
set, Powertools' idempotency utility records each identity, so a repeated delivery starts nothing
and is counted in ``duplicates``. Every start also passes a ``ClientRequestToken`` derived from
its single-flight claim, so SageMaker itself deduplicates retries of the API call.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.data_classes.s3_event import S3EventBridgeNotificationEvent
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config
from botocore.exceptions import ClientError

from lambdas.trigger.single_flight import INPUT_PARAMETER, Flight, SingleFlight
from steps.environment import env_number
from steps.errors import PipelineError

logger = Logger(service="rfm-trigger")

DEFAULT_SUFFIXES = (".csv", ".csv.gz", ".parquet")
DEFAULT_OUTPUT_PREFIX = "rfm/executions/"
DEFAULT_STATE_PREFIX = "rfm/state/"
STATUS_CHANGE = "SageMaker Model Building Pipeline Execution Status Change"
ENDED = ("Succeeded", "Failed", "Stopped")
IDEMPOTENCY_KEY_PREFIX = "rfm-trigger"
MAX_PARAMETER_VALUE = 1024  # SageMaker's limit on a pipeline parameter value
# StartPipelineExecution is throttled per account; let botocore back off with jitter.
SAGEMAKER_CONFIG = Config(retries={"mode": "standard", "max_attempts": 8})


@dataclass(frozen=True)
class Settings:
    """The trigger's configuration, read once per container from the environment."""

    pipeline_name: str
    input_prefix: str = ""
    output_prefix: str = DEFAULT_OUTPUT_PREFIX
    input_bucket: str | None = None
    ignore_prefixes: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = DEFAULT_SUFFIXES
    pipeline_parameters: tuple[tuple[str, str], ...] = ()
    idempotency_table: str | None = None
    idempotency_expires_seconds: int = 24 * 60 * 60
    state_prefix: str = DEFAULT_STATE_PREFIX

    def __post_init__(self) -> None:
        if self.input_bucket:
            self.check_input_url(self.input_bucket)

    def check_input_url(self, bucket: str) -> None:
        """Stop when the input URL a run of ``bucket`` gets is longer than SageMaker takes.

        The configuration, not an object: no upload could ever start a run. Checked when the settings
        are made (``INPUT_BUCKET`` set), else for each bucket of an event before any of its objects.
        """
        url = self.flight(bucket).input_url
        if len(url) > MAX_PARAMETER_VALUE:
            raise PipelineError(f"{INPUT_PARAMETER} {url[:60]}... is longer than SageMaker's {MAX_PARAMETER_VALUE} "
                                "characters", "INPUT_PREFIX (trigger Lambda environment)", "Use a shorter input prefix")

    def flight(self, bucket: str) -> Flight:
        """Where the single-flight markers of ``bucket`` live and how runs start."""
        return Flight(self.pipeline_name, bucket, self.input_prefix, self.state_prefix, self.output_prefix,
                      self.pipeline_parameters)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Parse the environment; raise :class:`PipelineError` on missing or malformed values."""
        pipeline_name = environ.get("PIPELINE_NAME", "").strip()
        if not pipeline_name:
            raise PipelineError("PIPELINE_NAME is not set", "trigger Lambda environment",
                                "Set it to the SageMaker pipeline to start")
        suffixes = tuple(s.strip().lower() for s in environ.get("SUFFIXES", "").split(",") if s.strip())
        return cls(
            pipeline_name=pipeline_name,
            input_prefix=environ.get("INPUT_PREFIX", "").lstrip("/"),
            output_prefix=environ.get("OUTPUT_PREFIX", DEFAULT_OUTPUT_PREFIX).lstrip("/"),
            input_bucket=environ.get("INPUT_BUCKET", "").strip() or None,
            ignore_prefixes=tuple(p.strip().lstrip("/") for p in environ.get("IGNORE_PREFIXES", "").split(",")
                                  if p.strip().lstrip("/")),
            suffixes=suffixes or DEFAULT_SUFFIXES,
            pipeline_parameters=_parse_parameters(environ.get("PIPELINE_PARAMETERS", "")),
            idempotency_table=environ.get("IDEMPOTENCY_TABLE", "").strip() or None,
            idempotency_expires_seconds=env_number(environ, "IDEMPOTENCY_EXPIRES_SECONDS", 24 * 60 * 60, int,
                                                   minimum=1, where="trigger Lambda environment"),
            state_prefix=environ.get("STATE_PREFIX", DEFAULT_STATE_PREFIX).strip().lstrip("/") or DEFAULT_STATE_PREFIX,
        )


def _parse_parameters(text: str) -> tuple[tuple[str, str], ...]:
    if not text.strip():
        return ()
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        raise PipelineError(f"PIPELINE_PARAMETERS is not valid JSON ({error})", "trigger Lambda environment",
                            'Use a JSON object such as {"ModelApprovalStatus": "PendingManualApproval"}'
                            ) from None
    if not isinstance(parsed, dict) or INPUT_PARAMETER in parsed:
        raise PipelineError(f"PIPELINE_PARAMETERS must be a JSON object without {INPUT_PARAMETER}",
                            "trigger Lambda environment", f"the trigger sets {INPUT_PARAMETER} to the input prefix")
    # JSON spelling for non-strings: true -> "true", 0.5 -> "0.5", as SageMaker parses parameter values.
    return tuple((str(name), value if isinstance(value, str) else json.dumps(value))
                 for name, value in parsed.items())


@dataclass(frozen=True)
class S3ObjectRef:
    """One object named by an event; ``event`` is the S3 event name or EventBridge detail-type."""

    bucket: str
    key: str
    version_id: str | None
    etag: str
    size: int | None
    event: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def created(self) -> bool:
        return self.event.startswith("ObjectCreated") or self.event == "Object Created"


def parse_event(event: Mapping[str, Any]) -> list[S3ObjectRef]:
    """Objects named by a direct S3 notification or an EventBridge S3 event, keys URL-decoded.

    An ``s3:TestEvent`` or an EventBridge event from another source gives one entry with an empty
    key whose ``event`` says what it was, so that :func:`ignore_reason` ignores it with a log line.
    """
    if event.get("Event") == "s3:TestEvent":
        return [S3ObjectRef(bucket=str(event.get("Bucket", "")), key="", version_id=None, etag="", size=None,
                            event="s3:TestEvent")]
    if "Records" in event:
        sources = {record.get("eventSource") for record in event["Records"] if isinstance(record, Mapping)}
        if sources - {"aws:s3"} or not all(isinstance(r, Mapping) and "s3" in r for r in event["Records"]):
            raise PipelineError(
                f"the Records are not S3 notifications (eventSource {sorted(map(str, sources))})",
                "trigger Lambda", "Send S3 ObjectCreated notifications directly, not via SQS/SNS")
        return [
            S3ObjectRef(
                bucket=record.s3.bucket.name,
                key=unquote_plus(record.s3.get_object.key),
                version_id=record.s3.get_object.version_id,
                etag=record.s3.get_object.etag,
                size=_size(record.s3.get_object.get("size")),
                event=record.event_name,
            )
            for record in S3Event(dict(event)).records
        ]
    if "detail" in event:
        if event.get("source") != "aws.s3":
            return [S3ObjectRef(bucket="", key="", version_id=None, etag="", size=None,
                                event=f"{event.get('source')}: {event.get('detail-type')}")]
        s3_event = S3EventBridgeNotificationEvent(dict(event))
        obj = s3_event.detail.object
        return [S3ObjectRef(
            bucket=s3_event.detail.bucket.name,
            key=obj.key,
            version_id=obj.get("version-id"),
            etag=obj.etag,
            size=_size(obj.size),
            event=s3_event.detail_type,
        )]
    raise PipelineError("the event is neither an S3 notification (Records) nor an EventBridge event (detail)",
                        "trigger Lambda", "Route S3 ObjectCreated notifications or EventBridge events to it")


def _size(value: Any) -> int | None:
    return None if value is None else int(value)


def ignore_reason(obj: S3ObjectRef, settings: Settings) -> str | None:
    """Why ``obj`` starts no execution, or None when it should start one."""
    if not obj.created:
        return f"not an object-created event ({obj.event})"
    if settings.input_bucket and obj.bucket != settings.input_bucket:
        return f"not in the input bucket {settings.input_bucket!r}"
    if not obj.key.startswith(settings.input_prefix):
        return f"outside the input prefix {settings.input_prefix!r}"
    if settings.output_prefix and obj.key.startswith(settings.output_prefix):
        return f"under the pipeline's own output prefix {settings.output_prefix!r}"
    if obj.key.startswith(settings.state_prefix):
        return f"under the pipeline's own state prefix {settings.state_prefix!r}"
    ignored = next((prefix for prefix in settings.ignore_prefixes if obj.key.startswith(prefix)), None)
    if ignored is not None:
        return f"under the ignored prefix {ignored!r}"
    if obj.key.endswith("/"):
        return "folder marker"
    if not obj.key.lower().endswith(settings.suffixes):
        return f"unsupported suffix (expected one of {', '.join(settings.suffixes)})"
    if obj.size is not None and obj.size <= 0:
        return "zero-byte object"
    return None


def _started(response: dict[str, Any], record: Any) -> dict[str, Any]:
    """Powertools response hook: the stored response of an already processed object."""
    return {**response, "duplicate": True}


class PipelineStarter:
    """Ask for a run over the prefix for each object; idempotent when a persistence store is given.

    Parameters
    ----------
    settings : Settings
        Pipeline name, extra parameters and idempotency expiry.
    sagemaker, s3 : boto3 clients
        Created once per container by the handler; tests pass moto-backed ones.
    persistence_store : BasePersistenceLayer, optional
        Powertools idempotency store (DynamoDB in production). Without it only the
        ClientRequestToken deduplicates.
    """

    def __init__(self, settings: Settings, sagemaker: Any, s3: Any,
                 persistence_store: BasePersistenceLayer | None = None) -> None:
        self.settings = settings
        self.sagemaker = sagemaker
        self.s3 = s3
        self.config = IdempotencyConfig(
            event_key_jmespath="[bucket, key, version_id, etag]",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=settings.idempotency_expires_seconds,
            response_hook=_started,
        )
        self._start: Callable[..., dict[str, Any]] = self._start_execution
        if persistence_store is not None:
            self._start = idempotent_function(
                self._start_execution, data_keyword_argument="obj", persistence_store=persistence_store,
                config=self.config, key_prefix=IDEMPOTENCY_KEY_PREFIX,
            )

    def register_lambda_context(self, context: LambdaContext | None) -> None:
        """Let the idempotency utility see the remaining invocation time."""
        if context is not None:
            self.config.register_lambda_context(context)

    def __call__(self, obj: S3ObjectRef) -> dict[str, Any]:
        """Ask for a run: ``{"execution_arn"}`` (started) or ``{"deferred_to"}``, plus ``duplicate``."""
        return {"duplicate": False, **self._start(obj=obj)}

    def single_flight(self, bucket: str) -> SingleFlight:
        return SingleFlight(self.settings.flight(bucket), self.sagemaker, self.s3)

    def _start_execution(self, obj: S3ObjectRef) -> dict[str, Any]:
        try:
            return self.single_flight(obj.bucket).request(why=f"{obj.url} arrived")
        except ClientError as error:
            raise _pipeline_error(error, self.settings.pipeline_name) from error

    def on_status_change(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """An execution of our pipeline ended: start the follow-up run if objects arrived during it."""
        detail = event.get("detail", {})
        arn, status = str(detail.get("pipelineExecutionArn", "")), detail.get("currentPipelineExecutionStatus")
        ours = str(detail.get("pipelineArn", "")).lower().endswith(f":pipeline/{self.settings.pipeline_name.lower()}")
        if not ours or status not in ENDED:
            return {"ignored": [{"key": arn, "reason": f"not an end of {self.settings.pipeline_name} ({status})"}]}
        try:
            return self.single_flight(self._bucket()).follow_up(arn)
        except ClientError as error:
            raise _pipeline_error(error, self.settings.pipeline_name) from error

    def on_schedule(self) -> dict[str, Any]:
        """The scheduled rebuild: a run with ``Rebuild=true`` (after the one in progress, if any)."""
        try:
            return self.single_flight(self._bucket()).request(why="the scheduled rebuild", rebuild=True)
        except ClientError as error:
            raise _pipeline_error(error, self.settings.pipeline_name) from error

    def _bucket(self) -> str:
        if not self.settings.input_bucket:
            raise PipelineError("INPUT_BUCKET is not set", "trigger Lambda environment",
                                "Set it to the data bucket: status-change and scheduled events name none")
        return self.settings.input_bucket


def _pipeline_error(error: ClientError, pipeline_name: str) -> Exception:
    code = error.response.get("Error", {}).get("Code", "")
    message = error.response.get("Error", {}).get("Message", "")
    missing = code == "ResourceNotFound" or (
        code == "ValidationException"
        and re.search(r"could not find|not found|does not exist", message, re.IGNORECASE))
    if missing:
        return PipelineError(f"SageMaker pipeline {pipeline_name!r} does not exist ({message})",
                             "trigger Lambda (PIPELINE_NAME)",
                             "Create it with run-pipeline (or fix PIPELINE_NAME / the Lambda's region)")
    if code == "ValidationException":
        return PipelineError(f"SageMaker rejected the start of {pipeline_name!r}: {message}",
                             "trigger Lambda", "Check PIPELINE_PARAMETERS against the pipeline's parameters")
    return error


def trigger(objects: list[S3ObjectRef], settings: Settings, start: Callable[[S3ObjectRef], dict[str, Any]]
            ) -> dict[str, Any]:
    """Ask for one run over the prefix per eligible object; the plain function behind :func:`handler`.

    Returns
    -------
    dict
        ``{"started": [execution ARNs], "deferred": int, "ignored": [{"key", "reason"}], "duplicates": int}``;
        an object repeated within one event counts as a duplicate too.
    """
    if not settings.input_bucket:  # any bucket: each one's input URL, before any object is handled
        for bucket in sorted({obj.bucket for obj in objects}):
            settings.check_input_url(bucket)
    summary: dict[str, Any] = {"started": [], "deferred": 0, "ignored": [], "duplicates": 0}
    seen: set[tuple[str, str, str | None, str]] = set()
    for obj in objects:
        logger.set_correlation_id(obj.url)
        logger.append_keys(s3_bucket=obj.bucket, s3_key=obj.key, s3_version_id=obj.version_id)
        reason = ignore_reason(obj, settings)
        identity = (obj.bucket, obj.key, obj.version_id, obj.etag)
        if reason is not None:
            logger.info("Object ignored", extra={"reason": reason})
            summary["ignored"].append({"key": obj.key, "reason": reason})
        elif identity in seen:
            logger.info("Object repeated within the event: nothing started")
            summary["duplicates"] += 1
        else:
            seen.add(identity)
            result = start(obj)
            if result["duplicate"]:
                logger.info("Duplicate delivery: nothing started", extra={"result": result})
                summary["duplicates"] += 1
            elif "execution_arn" in result:
                logger.info("Pipeline execution started", extra={"execution_arn": result["execution_arn"]})
                summary["started"].append(result["execution_arn"])
            else:
                logger.info("Left to the run in progress", extra={"deferred_to": result["deferred_to"]})
                summary["deferred"] += 1
    logger.remove_keys(["s3_bucket", "s3_key", "s3_version_id"])
    return summary


@functools.cache
def _runtime() -> tuple[Settings, PipelineStarter]:
    """Configuration and clients, created once per container."""
    settings = Settings.from_env(os.environ)
    store = None
    if settings.idempotency_table:
        store = DynamoDBPersistenceLayer(table_name=settings.idempotency_table,
                                         boto3_client=boto3.client("dynamodb"))
    else:
        logger.warning("IDEMPOTENCY_TABLE is not set: only SageMaker's ClientRequestToken deduplicates")
    return settings, PipelineStarter(settings, boto3.client("sagemaker", config=SAGEMAKER_CONFIG),
                                     boto3.client("s3"), store)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point: parse the event, then :func:`trigger` with the container's clients."""
    settings, starter = _runtime()
    starter.register_lambda_context(context)
    if event.get("source") == "aws.sagemaker" and event.get("detail-type") == STATUS_CHANGE:
        return starter.on_status_change(event)
    if event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event":
        return starter.on_schedule()
    return trigger(parse_event(event), settings, starter)
