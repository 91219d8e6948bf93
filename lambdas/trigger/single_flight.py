"""One run at a time over the whole input prefix: a burst of objects becomes one execution, none is lost.

The mechanism (docs/history.md, "Trigger"):

- **Single flight on the pipeline's execution status.** When the newest execution of the pipeline
  is ``Executing`` or ``Stopping``, a new object starts nothing: it leaves a *pending* marker
  ``<state>/trigger/pending/<execution id>`` and the run that follows takes it.
- **An S3 conditional write elects the one starter.** Otherwise the invocation creates
  ``<state>/trigger/claims/after-<newest execution id>.json`` with ``If-None-Match: *``; only the
  one that creates it starts the execution (with a ClientRequestToken derived from the claim, so a
  retried call starts nothing new). Every other invocation of the burst finds the claim and starts
  nothing: its object is listed by that execution's PlanHistory step, which runs after the start.
- **The status-change event starts the follow-up.** When an execution ends (EventBridge "SageMaker
  Model Building Pipeline Execution Status Change") and a pending marker exists for it, the trigger
  lists the history; if it differs from what the execution planned (``plan/plan.json``) it claims
  ``after-<that execution>`` and starts the next run. A deferring invocation re-checks the status
  after writing its marker, so an execution that ends in between is followed up too.
- A claim older than ``CLAIM_TIMEOUT_SECONDS`` whose execution never appeared (the starter died) is
  taken over with ``If-Match`` on its ETag, so exactly one invocation takes it.

So a burst gives one execution, plus at most one follow-up when objects arrived after its
PlanHistory listed the prefix. The state's own ``current.json`` swap is conditional too
(``steps.features.state``): even two runs started by hand never both update the state.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

RUNNING = ("Executing", "Stopping")
CLAIM_TIMEOUT_SECONDS = 900
PLAN_FILE = "plan/plan.json"
INPUT_PARAMETER, REBUILD_PARAMETER = "InputDataUrl", "Rebuild"  # the pipeline parameters a start sets
MAX_DISPLAY_NAME = 82  # SageMaker's limit on PipelineExecutionDisplayName


@dataclass(frozen=True)
class Flight:
    """Where the single-flight markers live and how a run is started."""

    pipeline_name: str
    bucket: str
    input_prefix: str
    state_prefix: str  # e.g. rfm/state/
    executions_prefix: str  # e.g. rfm/executions/
    parameters: tuple[tuple[str, str], ...] = ()

    @property
    def input_url(self) -> str:
        return f"s3://{self.bucket}/{self.input_prefix}"

    def key(self, *parts: str) -> str:
        return f"{self.state_prefix.rstrip('/')}/trigger/" + "/".join(parts)


def execution_id(arn: str) -> str:
    """The execution id SageMaker uses in S3 paths: the last part of its ARN."""
    return arn.rsplit("/", 1)[-1]


class SingleFlight:
    """Start runs over the whole prefix, one at a time (see the module docstring)."""

    def __init__(self, flight: Flight, sagemaker: Any, s3: Any, clock: Any = time.time) -> None:
        self.flight = flight
        self.sagemaker = sagemaker
        self.s3 = s3
        self.clock = clock

    # -- what the handler calls --------------------------------------------------------------------
    def request(self, why: str, rebuild: bool = False) -> dict[str, Any]:
        """A new object (or the schedule) wants a run: start one, or leave it to the running one.

        Returns ``{"execution_arn": ...}`` when this call started a run, else
        ``{"deferred_to": <arn or claim>}``.
        """
        newest = self._newest()
        if newest is not None and newest["PipelineExecutionStatus"] in RUNNING:
            arn = newest["PipelineExecutionArn"]
            self._mark_pending(execution_id(arn), rebuild)
            if self._status(arn) in RUNNING:
                return {"deferred_to": arn}
            return self.follow_up(arn)  # it ended in between: its status event may have missed the marker
        after = execution_id(newest["PipelineExecutionArn"]) if newest else "none"
        return self._claim_and_start(after, why, rebuild)

    def follow_up(self, finished_arn: str) -> dict[str, Any]:
        """An execution ended: start the next run if objects arrived during it (none is lost)."""
        ended = execution_id(finished_arn)
        pending = self._exists(self.flight.key("pending", ended))
        rebuild = self._exists(self.flight.key("pending", f"{ended}-rebuild"))
        if not pending and not rebuild:
            return {"nothing_pending": finished_arn}
        if not rebuild and self._history_fingerprint() == self._planned_fingerprint(ended):
            return {"nothing_pending": finished_arn, "reason": "every object was in its plan"}
        newest = self._newest()
        started_next = newest is not None and newest["PipelineExecutionArn"] != finished_arn
        if started_next and newest["PipelineExecutionStatus"] in RUNNING:  # type: ignore[index]
            return {"deferred_to": newest["PipelineExecutionArn"]}  # type: ignore[index]
        return self._claim_and_start(ended, f"objects that arrived during {ended}", rebuild)

    # -- the parts ---------------------------------------------------------------------------------
    def _newest(self) -> dict[str, Any] | None:
        found = self.sagemaker.list_pipeline_executions(
            PipelineName=self.flight.pipeline_name, SortBy="CreationTime", SortOrder="Descending", MaxResults=10,
        ).get("PipelineExecutionSummaries", [])
        # Sorted by SageMaker already; sorted again (stably) for stand-ins that ignore SortOrder.
        return sorted(found, key=lambda s: s.get("StartTime") or 0, reverse=True)[0] if found else None

    def _status(self, arn: str) -> str:
        return self.sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)["PipelineExecutionStatus"]

    def _exists(self, key: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.flight.bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def _mark_pending(self, ended: str, rebuild: bool) -> None:
        name = f"{ended}-rebuild" if rebuild else ended
        self.s3.put_object(Bucket=self.flight.bucket, Key=self.flight.key("pending", name), Body=b"{}")

    def _history_fingerprint(self) -> str:
        from steps.features.history import fingerprint, list_history

        return fingerprint(list_history(self.flight.input_url, self.s3))

    def _planned_fingerprint(self, ended: str) -> str | None:
        key = f"{self.flight.executions_prefix.rstrip('/')}/{ended}/{PLAN_FILE}"
        try:
            body = self.s3.get_object(Bucket=self.flight.bucket, Key=key)["Body"].read()
            plan = json.loads(body)
            return str(plan.get("objects_fingerprint") or plan["fingerprint"])  # older plans: one fingerprint
        except (ClientError, ValueError, KeyError):
            return None  # it never planned (failed or stopped first): run again

    def _claim_and_start(self, after: str, why: str, rebuild: bool) -> dict[str, Any]:
        key = self.flight.key("claims", f"after-{after}.json")
        body = json.dumps({"at": self.clock(), "why": why}).encode()
        try:
            self.s3.put_object(Bucket=self.flight.bucket, Key=key, Body=body, IfNoneMatch="*")
        except ClientError as error:
            if not _precondition_failed(error) or not self._take_over(key, body):
                return {"deferred_to": f"s3://{self.flight.bucket}/{key}"}
        parameters = [{"Name": INPUT_PARAMETER, "Value": self.flight.input_url}]
        if rebuild:
            parameters.append({"Name": REBUILD_PARAMETER, "Value": "true"})
        parameters += [{"Name": n, "Value": v} for n, v in self.flight.parameters]
        try:
            response = self.sagemaker.start_pipeline_execution(
                PipelineName=self.flight.pipeline_name,
                PipelineExecutionDisplayName=f"history-after-{after}"[:MAX_DISPLAY_NAME].rstrip("-"),
                PipelineExecutionDescription=f"RFM segmentation of {self.flight.input_url} ({why})"[:3072],
                PipelineParameters=parameters,
                ClientRequestToken="rfm-" + hashlib.sha256(f"{self.flight.pipeline_name}\n{key}".encode()).hexdigest(),
            )
        except Exception:
            self.s3.delete_object(Bucket=self.flight.bucket, Key=key)  # let the retry claim it again
            raise
        return {"execution_arn": response["PipelineExecutionArn"]}

    def _take_over(self, key: str, body: bytes) -> bool:
        """Take a claim whose starter died (older than the timeout), with If-Match: one winner."""
        try:
            found = self.s3.get_object(Bucket=self.flight.bucket, Key=key)
            claimed_at = float(json.loads(found["Body"].read()).get("at", 0))
        except (ClientError, ValueError):
            return False
        if self.clock() - claimed_at < CLAIM_TIMEOUT_SECONDS:
            return False
        try:
            self.s3.put_object(Bucket=self.flight.bucket, Key=key, Body=body, IfMatch=found["ETag"])
        except ClientError as error:
            if _precondition_failed(error):
                return False
            raise
        return True


def _precondition_failed(error: ClientError) -> bool:
    code = error.response.get("Error", {}).get("Code", "")
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412)
