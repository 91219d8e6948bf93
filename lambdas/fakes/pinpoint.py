"""A local stand-in for the Amazon Pinpoint API calls the export makes (moto lacks them).

It speaks Pinpoint's REST-JSON protocol as botocore sends it (paths, methods, status codes and
error shapes from botocore's ``pinpoint/2016-12-01`` service model), so a boto3 client reaches it
through ``AWS_ENDPOINT_URL_PINPOINT``. Operations: CreateApp, GetApp, CreateImportJob,
GetImportJob, GetImportJobs, GetEndpoint, GetSegments, GetSegment, CreateSegment, UpdateSegment.

Import jobs run in a background thread, reading the files under ``S3Url`` from the injected S3
(:mod:`lambdas.fakes.s3_source`) and checking them as the service documents:

- only files of the job's format (``.csv``), not compressed, UTF-8, each at most ``max_file_bytes``
  (1 GB) - otherwise the job FAILS;
- a header of supported attributes (``Id``, ``ChannelType``, ``Address``, ``User.UserId``,
  ``Demographic.*``, ``Location.*``, ``OptOut``, ...) or custom ones under ``Attributes.``,
  ``Metrics.`` and ``User.UserAttributes.`` with names of at most 50 characters - otherwise FAILED;
- per row: a new endpoint needs ``ChannelType`` and ``Address``; the channel type must be one of the
  service's; SMS/VOICE addresses E.164, EMAIL addresses with an ``@``; metrics numeric; attribute
  values at most 100 characters; no tabs or line breaks. A bad row is counted in ``TotalFailures``
  with a ``Failures`` message naming its endpoint id (the first 100 are kept); the job still
  COMPLETES unless every row failed.

Endpoints are stored by application and ``Id`` (Arrow tables, see
:mod:`lambdas.fakes.pinpoint_endpoints`, so a million endpoints import in seconds): importing an
existing ``Id`` updates it, which is why stable ids make re-imports idempotent.
``GetImportJob`` reports ``PROCESSING`` until the job is done and has been polled ``polls_until_done``
times. Throttling (429 ``TooManyRequestsException``), 5xx and per-record failures (an endpoint
``Id`` or ``User.UserId`` in ``fail_records``) can be injected (see :mod:`lambdas.fakes._server`).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from lambdas.fakes._server import FakeService, Faults, ServiceError, require
from lambdas.fakes.pinpoint_endpoints import (
    CREATED,
    MAX_FAILURE_MESSAGES,
    MAX_NAME,
    MODIFIED,
    EndpointStore,
    parse_import_file,
)
from lambdas.fakes.s3_source import S3Source

# From the docs, not the model: "Each import job can transfer up to 1 GB of data",
# https://docs.aws.amazon.com/pinpoint/latest/developerguide/audience-define-import.html
MAX_FILE_BYTES = 1_000_000_000
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class PinpointFake(FakeService):
    """Pinpoint endpoints, import jobs and segments, in memory.

    Parameters
    ----------
    s3 : S3Source, optional
        Where import jobs read ``S3Url`` from (``FolderS3``, ``ClientS3`` or ``StorageS3``); without it every
        import job fails as if the role could not read the bucket.
    max_file_bytes : int
        Largest import file (the service's limit is 1 GB); tests lower it.
    polls_until_done : int
        ``GetImportJob`` calls answered ``PROCESSING`` before the final status.
    faults : Faults, optional
        Faults to start with (``inject`` adds more).
    end_of_support : bool
        Answer every call as an account whose Pinpoint engagement features are gone (AWS ended
        them on 2026-10-30): 403 ``ForbiddenException``. Settable later (``fake.end_of_support = True``).
    region, account : str
        For ARNs.
    """

    service = "pinpoint"
    model_name = "pinpoint"  # requests are checked against botocore's model of it
    not_found = ("NotFoundException", 404)
    throttle_error = ("TooManyRequestsException", 429)
    server_error = ("InternalServerErrorException", 500)
    access_denied = ("ForbiddenException", 403)
    routes = (
        ("/v1/apps", "POST", "CreateApp"),
        ("/v1/apps/<app>", "GET", "GetApp"),
        ("/v1/apps/<app>/jobs/import", "POST", "CreateImportJob"),
        ("/v1/apps/<app>/jobs/import", "GET", "GetImportJobs"),
        ("/v1/apps/<app>/jobs/import/<job>", "GET", "GetImportJob"),
        ("/v1/apps/<app>/endpoints/<endpoint>", "GET", "GetEndpoint"),
        ("/v1/apps/<app>/segments", "GET", "GetSegments"),
        ("/v1/apps/<app>/segments", "POST", "CreateSegment"),
        ("/v1/apps/<app>/segments/<segment>", "GET", "GetSegment"),
        ("/v1/apps/<app>/segments/<segment>", "PUT", "UpdateSegment"),
    )

    def __init__(
        self,
        s3: S3Source | None = None,
        *,
        max_file_bytes: int = MAX_FILE_BYTES,
        polls_until_done: int = 1,
        faults: Faults | None = None,
        end_of_support: bool = False,
        region: str = "us-east-1",
        account: str = "123456789012",
    ) -> None:
        super().__init__(faults)
        self.end_of_support = end_of_support
        self.s3 = s3
        self.max_file_bytes = max_file_bytes
        self.polls_until_done = polls_until_done
        self.region = region
        self.account = account
        self.apps: dict[str, dict[str, Any]] = {}
        self.segments: dict[str, dict[str, dict[str, Any]]] = {}
        self.jobs: dict[str, dict[str, dict[str, Any]]] = {}
        self._job_state: dict[str, dict[str, Any]] = {}
        self._workers: list[threading.Thread] = []
        self.endpoints_changed = 0  # endpoints created or changed by imports (0 for a repeated import)
        self.store = EndpointStore()

    def _request_fault(self, operation: str) -> ServiceError | None:
        if self.end_of_support:
            return ServiceError("ForbiddenException", 403, "Amazon Pinpoint engagement features are no longer "
                                "available to this account (end of support, 2026-10-30)")
        return super()._request_fault(operation)

    # -- applications --------------------------------------------------------------------------
    def create_app(self, name: str) -> str:
        """Create a project directly (no HTTP); returns its id."""
        return self.op_CreateApp({"Name": name}, {})[1]["Id"]

    def op_CreateApp(self, body: dict[str, Any], query: Any) -> tuple[int, Any]:
        require(bool(body.get("Name")), "Name is required")
        app = uuid.uuid4().hex
        with self.lock:
            self.apps[app] = {
                "Id": app,
                "Name": body["Name"],
                "tags": body.get("tags", {}),
                "CreationDate": _now(),
                "Arn": f"arn:aws:mobiletargeting:{self.region}:{self.account}:apps/{app}",
            }
            self.segments[app], self.jobs[app] = {}, {}
        return 201, self.apps[app]

    def _app(self, app: str) -> dict[str, Any]:
        require(app in self.apps, "Resource not found", self.not_found)
        return self.apps[app]

    def op_GetApp(self, body: Any, query: Any, app: str) -> tuple[int, Any]:
        return 200, self._app(app)

    # -- import jobs ---------------------------------------------------------------------------
    def op_CreateImportJob(self, body: dict[str, Any], query: Any, app: str) -> tuple[int, Any]:
        self._app(app)
        require(body.get("Format") in ("CSV", "JSON"), "Format must be CSV or JSON")
        require(str(body.get("S3Url", "")).startswith("s3://"), "S3Url must be an s3:// URL")
        require(bool(_ROLE_ARN.match(str(body.get("RoleArn", "")))), "RoleArn must be an IAM role ARN")
        job_id = uuid.uuid4().hex
        definition = {
            k: body[k]
            for k in (
                "DefineSegment",
                "ExternalId",
                "Format",
                "RegisterEndpoints",
                "RoleArn",
                "S3Url",
                "SegmentId",
                "SegmentName",
            )
            if k in body
        }
        job = {
            "ApplicationId": app,
            "Id": job_id,
            "JobStatus": "CREATED",
            "CreationDate": _now(),
            "Type": "IMPORT",
            "Definition": definition,
            "TotalPieces": 0,
            "CompletedPieces": 0,
            "FailedPieces": 0,
            "TotalProcessed": 0,
            "TotalFailures": 0,
            "Failures": [],
        }
        with self.lock:
            self.jobs[app][job_id] = job
            self._job_state[job_id] = {"done": False, "polls": 0, "result": None}
        worker = threading.Thread(
            target=self._run_job,
            args=(app, job_id, definition),
            daemon=True,
            name=f"fake-pinpoint-import-{job_id[:8]}",
        )
        self._workers.append(worker)
        worker.start()
        return 201, job

    def op_GetImportJob(self, body: Any, query: Any, app: str, job: str) -> tuple[int, Any]:
        self._app(app)
        require(job in self.jobs[app], "Resource not found", self.not_found)
        with self.lock:
            state = self._job_state[job]
            state["polls"] += 1
            if state["done"] and state["polls"] >= self.polls_until_done:
                return 200, state["result"]
            return 200, {**self.jobs[app][job], "JobStatus": "PROCESSING"}

    def op_GetImportJobs(self, body: Any, query: Any, app: str) -> tuple[int, Any]:
        self._app(app)
        with self.lock:
            return 200, {"Item": [self._job_state[j]["result"] or job for j, job in self.jobs[app].items()]}

    def wait_for_jobs(self, timeout: float = 60) -> None:
        """Block until every import job started so far has finished (tests)."""
        for worker in list(self._workers):
            worker.join(timeout)

    def _run_job(self, app: str, job_id: str, definition: dict[str, Any]) -> None:
        job = dict(self.jobs[app][job_id])
        try:
            self._import(app, job, definition)
        except ServiceError as error:
            job.update(JobStatus="FAILED", Failures=[error.message], FailedPieces=job["TotalPieces"] or 1)
        except Exception as error:  # a bug in the fake must not leave the job hanging
            job.update(JobStatus="FAILED", Failures=[f"Internal error: {type(error).__name__}: {error}"])
        job["CompletionDate"] = _now()
        with self.lock:
            self.jobs[app][job_id] = job
            self._job_state[job_id].update(done=True, result=job)

    def _files(self, s3_url: str, fmt: str) -> list[tuple[str, str, int]]:
        if self.s3 is None:
            raise ServiceError("ImportFailed", 400, f"Unable to access {s3_url} with the role")
        bucket, _, prefix = s3_url[len("s3://") :].partition("/")
        try:
            listed = self.s3.list(bucket, prefix)
        except Exception as error:
            raise ServiceError(
                "ImportFailed", 400, f"Unable to access {s3_url}: {type(error).__name__}"
            ) from None
        suffix = ".csv" if fmt == "CSV" else ".json"
        files = [(bucket, key, size) for key, size in listed if key.lower().endswith(suffix)]
        if not files:
            raise ServiceError("ImportFailed", 400, f"No {fmt} files found under {s3_url}")
        return files

    def _import(self, app: str, job: dict[str, Any], definition: dict[str, Any]) -> None:
        if definition["Format"] != "CSV":
            raise ServiceError("ImportFailed", 400, "This fake imports CSV files only")
        files = self._files(definition["S3Url"], definition["Format"])
        job["TotalPieces"] = len(files)
        for bucket, key, size in files:
            if size > self.max_file_bytes:
                raise ServiceError(
                    "ImportFailed",
                    400,
                    f"s3://{bucket}/{key} is {size} bytes, above the {self.max_file_bytes}-byte limit",
                )
        failures: list[str] = []
        total_failures = processed = 0
        for bucket, key, _size in files:
            data = self.s3.read(bucket, key) if self.s3 else b""
            if data[:2] == b"\x1f\x8b":
                raise ServiceError(
                    "ImportFailed", 400, f"s3://{bucket}/{key} is compressed; import plain files"
                )
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                raise ServiceError("ImportFailed", 400, f"s3://{bucket}/{key} is not UTF-8") from None
            rows, failed, file_failures = self._import_file(app, data, f"s3://{bucket}/{key}")
            processed += rows
            total_failures += failed
            failures.extend(file_failures[: MAX_FAILURE_MESSAGES - len(failures)])
            job["CompletedPieces"] += 1
        status = "FAILED" if processed and total_failures == processed else "COMPLETED"
        job.update(
            JobStatus=status, TotalProcessed=processed, TotalFailures=total_failures, Failures=failures
        )

    def _import_file(self, app: str, data: bytes, where: str) -> tuple[int, int, list[str]]:
        """Check and store one file: rows processed, rows failed, the first failure messages."""
        injected = self._injected if self.faults.failing_records else None
        rows, failures, failed, processed = parse_import_file(data, where, self._exists_in(app), injected)
        with self.lock:
            self.endpoints_changed += self.store.upsert(app, rows, _now())
        return processed, failed, failures

    def _exists_in(self, app: str) -> Any:
        def exists(ids: Any) -> np.ndarray:
            with self.lock:
                return self.store.exists(app, ids)

        return exists

    def _injected(self, ids: list[str], user_ids: list[str | None]) -> np.ndarray:
        keys = set(self.faults.failing_records)
        return np.fromiter(
            (
                (i in keys or u in keys) and self.record_fails(i, u)
                for i, u in zip(ids, user_ids, strict=True)
            ),
            dtype=bool,
            count=len(ids),
        )

    # -- endpoints -----------------------------------------------------------------------------
    def endpoint_count(self, app: str | None = None) -> int:
        with self.lock:
            return self.store.count(app)

    def endpoints(self, app: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Stored endpoints as ``EndpointResponse`` objects, ordered by id."""
        with self.lock:
            rows = self.store.rows(app, limit)
        return [self._endpoint_response(app, row) for row in rows]

    @staticmethod
    def _endpoint_response(app: str, row: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = {
            "ApplicationId": app, "Id": row["Id"], "ChannelType": row["ChannelType"],
            "Address": row["Address"], "CreationDate": row[CREATED], "EffectiveDate": row[MODIFIED],
            "EndpointStatus": "ACTIVE", "OptOut": "NONE", "User": {"UserAttributes": {}}, "Attributes": {},
            "Metrics": {},
        }  # fmt: skip
        if row.get("User.UserId") is not None:
            response["User"]["UserId"] = row["User.UserId"]
        for name, value in row.items():
            if value is None or name in ("Id", "ChannelType", "Address", "User.UserId", CREATED, MODIFIED):
                continue
            group, _, key = name.partition(".")
            if name.startswith("User.UserAttributes."):
                response["User"]["UserAttributes"][name[len("User.UserAttributes.") :]] = value
            elif group in ("Attributes", "Metrics", "Demographic", "Location"):
                response.setdefault(group, {})[key] = value
            else:
                response[name] = value
        return response

    def op_GetEndpoint(self, body: Any, query: Any, app: str, endpoint: str) -> tuple[int, Any]:
        self._app(app)
        with self.lock:
            row = self.store.get(app, endpoint)
        require(row is not None, "Resource not found", self.not_found)
        return 200, self._endpoint_response(app, row)

    # -- segments ------------------------------------------------------------------------------
    def _segment(self, app: str, segment: str) -> dict[str, Any]:
        self._app(app)
        require(segment in self.segments[app], "Resource not found", self.not_found)
        return self.segments[app][segment]

    def op_GetSegments(self, body: Any, query: Any, app: str) -> tuple[int, Any]:
        self._app(app)
        size = int(query.get("page-size") or 50)
        start = int(query.get("token") or 0)
        with self.lock:
            items = sorted(self.segments[app].values(), key=lambda s: (s["CreationDate"], s["Id"]))
        page: dict[str, Any] = {"Item": items[start : start + size]}
        if start + size < len(items):
            page["NextToken"] = str(start + size)
        return 200, page

    def op_GetSegment(self, body: Any, query: Any, app: str, segment: str) -> tuple[int, Any]:
        return 200, self._segment(app, segment)

    @staticmethod
    def _check_segment(body: dict[str, Any]) -> None:
        require(
            bool(body.get("Dimensions") or body.get("SegmentGroups")),
            "Dimensions or SegmentGroups is required",
        )
        for kind in ("UserAttributes", "Attributes"):
            for name, dimension in (body.get("Dimensions", {}).get(kind) or {}).items():
                require(len(name) <= MAX_NAME, f"attribute name {name!r} is over {MAX_NAME} characters")
                require(bool(dimension.get("Values")), f"{kind}.{name} needs Values")

    def op_CreateSegment(self, body: dict[str, Any], query: Any, app: str) -> tuple[int, Any]:
        self._app(app)
        self._check_segment(body)
        segment = uuid.uuid4().hex
        now = _now()
        response = {
            "ApplicationId": app,
            "Id": segment,
            "Name": body.get("Name", ""),
            "SegmentType": "DIMENSIONAL",
            "Arn": f"{self.apps[app]['Arn']}/segments/{segment}",
            "CreationDate": now,
            "LastModifiedDate": now,
            "Version": 1,
            "tags": body.get("tags", {}),
            **{k: body[k] for k in ("Dimensions", "SegmentGroups") if k in body},
        }
        with self.lock:
            self.segments[app][segment] = response
        return 201, response

    def op_UpdateSegment(self, body: dict[str, Any], query: Any, app: str, segment: str) -> tuple[int, Any]:
        current = self._segment(app, segment)
        self._check_segment(body)
        with self.lock:
            updated = {
                **current,
                **{k: body[k] for k in ("Name", "Dimensions", "SegmentGroups") if k in body},
                "Version": current["Version"] + 1,
                "LastModifiedDate": _now(),
            }
            self.segments[app][segment] = updated
        return 200, updated

    def segment_size(self, app: str, segment: dict[str, Any]) -> int | None:
        """Endpoints a dimensional segment selects (INCLUSIVE/EXCLUSIVE attribute dimensions only)."""
        with self.lock:
            return self.store.segment_size(app, segment.get("Dimensions") or {})

    # -- state ---------------------------------------------------------------------------------
    def state(self, endpoint_limit: int = 1000) -> dict[str, Any]:
        with self.lock:
            apps = list(self.apps.values())
        return {
            **super().state(),
            "applications": [
                {
                    **app,
                    "endpoint_count": self.endpoint_count(app["Id"]),
                    "endpoints": self.endpoints(app["Id"], endpoint_limit),
                    "segments": [
                        {**segment, "EndpointCount": self.segment_size(app["Id"], segment)}
                        for segment in self.segments[app["Id"]].values()
                    ],
                    "import_jobs": [
                        self._job_state[j]["result"] or job for j, job in self.jobs[app["Id"]].items()
                    ],
                }
                for app in apps
            ],
        }

    def dump(self, folder: str | Path, endpoint_limit: int = 10_000) -> list[Path]:
        """Write ``endpoints.json``, ``segments.json`` and ``import_jobs.json`` (all projects) to a folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = self.state(endpoint_limit)
        apps = state["applications"]
        contents = {
            "endpoints.json": {
                "note": f"first {endpoint_limit} endpoints per project, ordered by id",
                "projects": {
                    a["Id"]: {"count": a["endpoint_count"], "endpoints": a["endpoints"]} for a in apps
                },
            },
            "segments.json": {a["Id"]: a["segments"] for a in apps},
            "import_jobs.json": {a["Id"]: a["import_jobs"] for a in apps},
        }
        written = []
        for name, content in contents.items():
            (folder / name).write_text(json.dumps(content, indent=2, default=str) + "\n")
            written.append(folder / name)
        return written
