"""The ``customer-profiles`` destination: each customer's RFM attributes on their Amazon Connect profile.

Amazon Connect Customer Profiles is the successor AWS recommends for Pinpoint's segments.

How the upsert works, and why this way
--------------------------------------
The API has no "create or update the profile with my key" call: ``CreateProfile`` always creates a
new profile (it takes no idempotency token) and ``UpdateProfile`` needs the service's ``ProfileId``.
``SearchProfiles`` + ``CreateProfile``/``UpdateProfile`` would cost two or three calls per customer
and still let two concurrent runs create two profiles for one customer. The API's own upsert is a
*profile object type*, which is what this module uses:

1. ``PutProfileObjectType`` defines the object type ``RFMSegmentAssignment`` (configurable): its key
   ``_account`` is the object's ``customer_id`` with the standard identifiers ``PROFILE`` (find the
   profile whose account number is this customer id) and ``UNIQUE`` (one object per customer id);
   ``AllowProfileCreation=true`` creates the profile the first time; ``Fields`` map ``customer_id``
   to ``_profile.AccountNumber`` and the segment, cluster, scores, R/F/M values and the playbook's
   ``recommended_action`` to ``_profile.Attributes.rfm_*`` (and, with
   ``CUSTOMER_PROFILES_MAP_CONTACTS=true``, ``email`` and ``phone`` to ``_profile.EmailAddress`` /
   ``_profile.PhoneNumber``). It is read first with ``GetProfileObjectType`` and put only when
   missing or different.
2. ``PutProfileObject`` once per customer with that JSON object. The service matches (or creates)
   the profile, writes the mapped attributes onto it and, the key being ``UNIQUE``, replaces that
   customer's previous object instead of adding one: a re-run leaves one profile and one object
   per customer, with the same attributes.

Segment definitions, one per RFM segment and per cluster (``CUSTOMER_PROFILES_SEGMENT_DEFINITIONS``),
are the audiences of Amazon Connect outbound campaigns: :mod:`~lambdas.export.destinations.profile_segments`
keeps them (create when missing, delete + create when different, there is no update). A refused
definition call does not stop the profiles: they are written, then the destination fails with that
call's one line. ``GetDomain`` first gives a clear error for a missing domain.

Calls run ``concurrency`` at a time, each through the retry policy (throttling and 5xx). Customers
whose object still failed are collected and put again up to ``record_retry_rounds`` more times;
if any remain, :class:`~lambdas.export.destinations.DestinationError` reports the counts by error
code. Customer Profiles needs no contact address, so no customer is skipped here.

With a ``deadline`` (the Lambda's remaining time less a margin) every put first looks at the
clock, and a retry that would wait past the deadline is not made. When it comes, no more objects
are put and the destination fails with how many profiles were written (the segment definitions
are put first, so they are there).

Delta and departures: with ``send`` only the customers whose segment, cluster or contacts changed
since the last publish are put; customers who left (``left_ids``) are found with ``SearchProfiles``
on ``_account`` and their ``rfm_*`` attributes removed with ``UpdateProfile`` (an empty string
removes a value), so no segment definition selects them any more.

At scale: the puts run in chunks of ``checkpoint_every`` and, with a :class:`Checkpoint`, after each
chunk the position is saved (with the customers still to put again). A later invocation of the same
export (same objects: a fingerprint of them is saved too) resumes there, so a large audience
completes across invocations instead of restarting from its first customer. Customer ids longer
than 255 characters (the service's limit for a key) are found before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from lambdas.export.audience import Audience, audience_of
from lambdas.export.batches import MAX_KEY, Population
from lambdas.export.config import CustomerProfilesSettings
from lambdas.export.destinations import DestinationError, same_as_sent
from lambdas.export.destinations.profile_segments import (
    CLUSTER_ATTRIBUTE,
    MAX_ATTRIBUTE_VALUE,
    SEGMENT_ATTRIBUTE,
    DefinitionsFailed,
    SegmentDefinitions,
    segment_definitions,
)
from lambdas.export.retry import OutOfTime, RetryPolicy, error_code
from lambdas.export.storage import Storage
from steps.columns import (
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
from steps.playbook import RECOMMENDED_ACTION

logger = Logger(service="rfm-export", child=True)

PROFILE_KEY = "_account"
ATTRIBUTE_PREFIX = "rfm_"
MAX_VALUE = MAX_ATTRIBUTE_VALUE  # profile attribute values: 1..255 characters
# object field -> profile attribute (``_profile.Attributes.<name>``)
ATTRIBUTE_FIELDS: dict[str, str] = {
    RFM_SEGMENT: SEGMENT_ATTRIBUTE,  # what the segment definitions filter on
    CLUSTER: CLUSTER_ATTRIBUTE,
    CLUSTER_NAME: "rfm_cluster_name",
    R_SCORE: "rfm_r_score",
    F_SCORE: "rfm_f_score",
    M_SCORE: "rfm_m_score",
    RECENCY_DAYS: "rfm_recency_days",
    FREQUENCY: "rfm_frequency",
    MONETARY: "rfm_monetary",
    RECOMMENDED_ACTION: "rfm_recommended_action",  # the playbook's action; absent from older files
}
OPTIONAL_FIELDS = frozenset({RECOMMENDED_ACTION})  # mapped when the segments carry them
CONTACT_FIELDS: dict[str, tuple[str, str]] = {
    EMAIL: ("_profile.EmailAddress", "EMAIL_ADDRESS"),
    PHONE: ("_profile.PhoneNumber", "PHONE_NUMBER"),
}
_WHERE = "export to Amazon Connect Customer Profiles"
_OUT_OF_TIME = "DeadlineReached"  # what _put returns when a retry would have waited past the deadline
CHECKPOINT_EVERY = 5_000  # puts between two checkpoints


@dataclass(frozen=True)
class Progress:
    """Where an export stopped: ``fingerprint`` of its objects, ``next`` object to put, ids to put again."""

    fingerprint: str = ""
    next: int = 0
    again: tuple[str, ...] = ()
    cleared: bool = False


@dataclass(frozen=True)
class Checkpoint:
    """A JSON file (``uri``, through ``storage``) holding one export's :class:`Progress`."""

    storage: Storage
    uri: str

    def load(self, fingerprint: str) -> Progress:
        """The saved progress of the export with ``fingerprint``; a fresh start for any other."""
        try:
            saved = json.loads(self.storage.read_bytes(self.uri))
        except (FileNotFoundError, ValueError):
            return Progress(fingerprint)
        if saved.get("fingerprint") != fingerprint:
            return Progress(fingerprint)
        return Progress(fingerprint, int(saved.get("next", 0)), tuple(saved.get("again", ())),
                        bool(saved.get("cleared")))

    def save(self, progress: Progress) -> None:
        self.storage.write_bytes(self.uri, json.dumps({
            "fingerprint": progress.fingerprint, "next": progress.next, "again": list(progress.again),
            "cleared": progress.cleared}).encode())


FINGERPRINT_ROWS = 100_000  # customers hashed at a time


def fingerprint(objects: ProfileObjects, left_ids: Iterable[str]) -> str:
    """A digest of everything one export puts and clears: a checkpoint applies only to the same work.

    It hashes the values the objects are made of (vectorised), not the objects' JSON: making the
    JSON twice cost about a minute at 2M customers.
    """
    digest = hashlib.blake2b(digest_size=16)
    fields = objects.fields()
    digest.update(json.dumps(fields).encode())
    for frame in objects.audience.frames(FINGERPRINT_ROWS):
        present = frame.reindex(columns=fields)
        digest.update(pd.util.hash_pandas_object(present, index=False).to_numpy().tobytes())
    digest.update(b"\x00left")
    for customer in left_ids:
        digest.update(customer.encode())
        digest.update(b"\n")
    return digest.hexdigest()


class ProfilesOutOfTime(Exception):
    """The deadline came before every object was put; ``counts`` are :meth:`put_objects`'s so far."""

    def __init__(self, counts: dict[str, Any]) -> None:
        super().__init__(f"{counts['profiles_not_written']} profiles not written")
        self.counts = counts


def object_type_definition(settings: CustomerProfilesSettings) -> dict[str, Any]:
    """The ``PutProfileObjectType`` request (without the domain and type name)."""
    fields = {
        CUSTOMER_ID: {
            "Source": f"_source.{CUSTOMER_ID}",
            "Target": "_profile.AccountNumber",
            "ContentType": "STRING",
        }
    }
    for field, attribute in ATTRIBUTE_FIELDS.items():
        fields[field] = {
            "Source": f"_source.{field}",
            "Target": f"_profile.Attributes.{attribute}",
            "ContentType": "STRING",
        }
    if settings.map_contacts:
        for field, (target, content_type) in CONTACT_FIELDS.items():
            fields[field] = {"Source": f"_source.{field}", "Target": target, "ContentType": content_type}
    return {
        "Description": "RFM segment assignment of one customer, written by the RFM segmentation export",
        "AllowProfileCreation": True,
        "Fields": fields,
        "Keys": {PROFILE_KEY: [{"StandardIdentifiers": ["PROFILE", "UNIQUE"], "FieldNames": [CUSTOMER_ID]}]},
    }


def _text(value: Any) -> str | None:
    """A profile attribute value: text of at most 255 characters; None for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text[:MAX_VALUE] or None


def profile_objects(segments: pd.DataFrame, settings: CustomerProfilesSettings) -> list[tuple[str, str]]:
    """``(customer_id, JSON object)`` per customer, fields as :func:`object_type_definition` maps them."""
    fields = [CUSTOMER_ID, *(f for f in ATTRIBUTE_FIELDS if f not in OPTIONAL_FIELDS or f in segments)]
    if settings.map_contacts:
        fields += [field for field in CONTACT_FIELDS if field in segments]
    objects = []
    for record in segments[fields].to_dict("records"):
        body = {field: _text(record[field]) for field in fields}
        body[CUSTOMER_ID] = str(record[CUSTOMER_ID])  # exactly as in the input, never stripped
        objects.append((body[CUSTOMER_ID], json.dumps({k: v for k, v in body.items() if v is not None})))
    return objects


class ProfileObjects:
    """:func:`profile_objects` of an audience (or a DataFrame), made a slice at a time: a large
    audience's JSON is never all in memory at once.

    Example
    -------
    >>> frame = pd.DataFrame({"customer_id": ["a", "b"], "rfm_segment": ["Loyal", "At Risk"], "cluster": [0, 1],
    ...                       "cluster_name": ["x", "y"], "r_score": [3, 1], "f_score": [4, 3], "m_score": [2, 2],
    ...                       "recency_days": [5, 90], "frequency": [7, 3], "monetary": [70.5, 12.0]})
    >>> objects = ProfileObjects(frame, CustomerProfilesSettings(domain="d"))
    >>> len(objects), objects.slice(1, 2)[0][0]
    (2, 'b')
    """

    def __init__(self, segments: pd.DataFrame | Audience, settings: CustomerProfilesSettings) -> None:
        self.audience = audience_of(segments)
        self.settings = settings

    def __len__(self) -> int:
        return len(self.audience)

    def fields(self) -> list[str]:
        """The object's fields, as :func:`profile_objects` takes them."""
        fields = [CUSTOMER_ID, *ATTRIBUTE_FIELDS]
        return fields + ([*CONTACT_FIELDS] if self.settings.map_contacts else [])

    def slice(self, start: int, stop: int) -> list[tuple[str, str]]:
        return profile_objects(self.audience.frame(start, stop), self.settings)

    def among(self, customer_ids: Iterable[str], stop: int) -> list[tuple[str, str]]:
        """The objects of ``customer_ids`` among the first ``stop``."""
        wanted = set(customer_ids)
        found: list[tuple[str, str]] = []
        for frame in self.audience.frames(FINGERPRINT_ROWS, stop):
            found += profile_objects(frame[frame[CUSTOMER_ID].astype(str).isin(wanted)], self.settings)
        return found

    def chunks(self, size: int) -> Iterable[list[tuple[str, str]]]:
        for start in range(0, len(self), size):
            yield self.slice(start, start + size)


class CustomerProfilesExport:
    """One export run against one Customer Profiles domain.

    Parameters
    ----------
    client : boto3 ``customer-profiles`` client
        Created once per container, botocore retries off (the policy retries).
    settings : CustomerProfilesSettings
    retry : RetryPolicy
    record_retry_rounds : int
        Extra passes over the customers whose object still failed.
    clock : callable
        Monotonic seconds, for the deadline.
    deadline : float, optional
        ``clock()`` time at which to stop putting objects; None: no deadline.
    """

    def __init__(
        self,
        client: Any,
        settings: CustomerProfilesSettings,
        retry: RetryPolicy,
        record_retry_rounds: int = 2,
        clock: Callable[[], float] = time.monotonic,
        deadline: float | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.retry = retry
        self.record_retry_rounds = record_retry_rounds
        self.puts = retry.until(deadline, clock)  # holds the deadline (inf without one) and its clock

    def check_domain(self) -> None:
        try:
            self.retry.call(self.client.get_domain, DomainName=self.settings.domain)
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                raise PipelineError(
                    f"Customer Profiles domain {self.settings.domain!r} does not exist",
                    "CUSTOMER_PROFILES_DOMAIN",
                    "Use an existing domain (or create one)",
                ) from None
            raise

    def ensure_object_type(self) -> str:
        """Put the object type when missing or different: ``created``, ``updated`` or ``unchanged``."""
        wanted = object_type_definition(self.settings)
        names = {"DomainName": self.settings.domain, "ObjectTypeName": self.settings.object_type}
        try:
            current = self.retry.call(self.client.get_profile_object_type, **names)
        except ClientError as error:
            if error_code(error) != "ResourceNotFoundException":
                raise
            current = None
        if current is not None and all(same_as_sent(current.get(k), v) for k, v in wanted.items()):
            return "unchanged"
        self.retry.call(self.client.put_profile_object_type, **names, **wanted)
        return "created" if current is None else "updated"

    def _put(self, item: tuple[str, str]) -> str | None:
        """Put one object; None on success, else the error code (after the policy's retries)."""
        if self.puts.clock() >= self.puts.deadline:
            return _OUT_OF_TIME
        try:
            self.puts.call(
                self.client.put_profile_object,
                DomainName=self.settings.domain,
                ObjectTypeName=self.settings.object_type,
                Object=item[1],
            )
        except (ClientError, BotoCoreError) as error:
            return error_code(error)
        except OutOfTime:
            return _OUT_OF_TIME
        return None

    def _put_round(self, pool: ThreadPoolExecutor, items: list[tuple[str, str]]) -> tuple[dict[str, str], int]:
        """Put ``items``, then the failed ones again up to ``record_retry_rounds`` times: (failures, retried)."""
        pending, retried, failures = items, 0, {}
        for round_number in range(self.record_retry_rounds + 1):
            results = list(pool.map(self._put, pending))
            failures = {item[0]: code for item, code in zip(pending, results, strict=True) if code}
            if not failures or _OUT_OF_TIME in failures.values():
                break
            logger.warning("Profile objects failed", extra={
                "round": round_number, "failed": len(failures), "by_code": dict(Counter(failures.values()))})
            pending = [item for item in pending if item[0] in failures]
            if round_number < self.record_retry_rounds:
                retried += len(pending)
        return failures, retried

    def put_objects(self, objects: ProfileObjects, checkpoint: Checkpoint | None = None,
                    progress: Progress | None = None, checkpoint_every: int = CHECKPOINT_EVERY) -> dict[str, Any]:
        """Put every object (from ``progress`` on), in chunks; re-put the failed ones; counts.

        After each chunk the progress is saved to ``checkpoint`` (when given): the next object, and
        the customers whose object failed or was not reached, to put again first on a re-run.

        Raises
        ------
        ProfilesOutOfTime
            When the deadline came before every object was put (or a retry would have waited past it).
        """
        progress = progress or Progress()
        first = objects.among(progress.again, progress.next) if progress.again else []
        starts = range(progress.next, len(objects), checkpoint_every)
        chunks = ([lambda: first] if first else []) + [
            (lambda start=start: objects.slice(start, start + checkpoint_every)) for start in starts]
        already = progress.next - len(first)
        written, retried = 0, 0
        failures: dict[str, str] = {}
        position = progress.next
        with ThreadPoolExecutor(max_workers=self.settings.concurrency) as pool:
            for number, make_chunk in enumerate(chunks):
                chunk = make_chunk()
                chunk_failures, chunk_retried = self._put_round(pool, chunk)
                retried += chunk_retried
                written += len(chunk) - len(chunk_failures)
                if not (first and number == 0):
                    position += len(chunk)
                out_of_time = _OUT_OF_TIME in chunk_failures.values()
                failures.update(chunk_failures)
                for item in chunk:
                    if item[0] not in chunk_failures:
                        failures.pop(item[0], None)
                if checkpoint is not None:
                    checkpoint.save(Progress(progress.fingerprint, position, tuple(sorted(failures)), progress.cleared))
                if out_of_time:
                    not_written = len(objects) - already - written
                    raise ProfilesOutOfTime(self._counts(written, already, retried, {}, not_written))
        return self._counts(written, already, retried, failures, 0)

    @staticmethod
    def _counts(written: int, already: int, retried: int, failures: dict[str, str], not_written: int) -> dict[str, Any]:
        return {
            "profiles_upserted": written,
            "profiles_already_written": already,
            "records_retried": retried,
            "records_failed": len(failures),
            "failures_by_code": dict(Counter(failures.values())),
            "profiles_not_written": not_written,
        }

    def _clear(self, customer_id: str) -> str | None:
        """Remove one departed customer's ``rfm_*`` attributes; None, ``not_found``, or the error code."""
        try:
            found = self.puts.call(self.client.search_profiles, DomainName=self.settings.domain,
                                   KeyName=PROFILE_KEY, Values=[customer_id])
            profiles = found.get("Items", [])
            for profile in profiles:
                self.puts.call(self.client.update_profile, DomainName=self.settings.domain,
                               ProfileId=profile["ProfileId"],
                               Attributes={attribute: "" for attribute in ATTRIBUTE_FIELDS.values()})
        except (ClientError, BotoCoreError) as error:
            return error_code(error)
        except OutOfTime:
            return _OUT_OF_TIME
        return None if profiles else "not_found"

    def clear_profiles(self, customer_ids: list[str]) -> dict[str, Any]:
        """Take departed customers out of every segment: their ``rfm_*`` attributes removed."""
        with ThreadPoolExecutor(max_workers=self.settings.concurrency) as pool:
            results = list(pool.map(self._clear, customer_ids))
        failed = Counter(code for code in results if code not in (None, "not_found"))
        if _OUT_OF_TIME in failed:
            raise ProfilesOutOfTime({**self._counts(0, 0, 0, {}, 0), "profiles_not_written": len(customer_ids)})
        return {"profiles_cleared": results.count(None), "profiles_to_clear_not_found": results.count("not_found"),
                "profiles_clear_failed": sum(failed.values()), "clear_failures_by_code": dict(failed)}


def long_ids_error(population: Population | pd.DataFrame) -> DestinationError | None:
    """The error for customer ids the service cannot take as a key (over 255 characters), or None."""
    if isinstance(population, pd.DataFrame):
        population = Population.of_frame(population)
    too_long = population.ids_too_long
    if not too_long:
        return None
    longest, row = population.longest_id
    return DestinationError(
        f"{too_long} customer id(s) are longer than {MAX_KEY} characters (the longest has "
        f"{longest}, at row {row + 1} of segments.parquet), the limit of a profile key; "
        "nothing was written", _WHERE,
        "Shorten those ids in the source data (segments.parquet and the s3 files keep them), or leave "
        "customer-profiles out of EXPORT_DESTINATIONS", {"customers": population.customers,
                                                          "customer_ids_too_long": too_long})


def export(
    segments: pd.DataFrame | Audience,
    *,
    client: Any,
    settings: CustomerProfilesSettings,
    retry: RetryPolicy,
    record_retry_rounds: int = 2,
    clock: Callable[[], float] = time.monotonic,
    deadline: float | None = None,
    send: pd.Series | np.ndarray | None = None,
    left_ids: list[str] | None = None,
    checkpoint: Checkpoint | None = None,
    checkpoint_every: int = CHECKPOINT_EVERY,
) -> dict[str, Any]:
    """Upsert the segment definitions and the profile attributes of the customers to send; clear the
    departed customers'; counts or DestinationError.

    Parameters
    ----------
    segments : DataFrame or Audience
        Every customer (the segment definitions and the id check cover them all), or an
        :class:`~lambdas.export.audience.Audience` (the customers to send and what is known of all).
    send : array of bool, optional
        Aligned with a DataFrame ``segments``: whose object to put (None: everyone).
    left_ids : list of str, optional
        Customers of the last publish who are gone: their ``rfm_*`` attributes are removed.
    checkpoint : Checkpoint, optional
        Where to save and find progress, so that a re-run resumes (see the module docstring).

    With a ``deadline`` (``clock()`` time, see :class:`CustomerProfilesExport`) the puts stop there
    and the destination fails with how many profiles were written; a re-run resumes from the checkpoint.

    Returns
    -------
    dict
        ``customers``, ``customers_unchanged`` (not sent: nothing changed), ``profiles_upserted`` (in
        this invocation), ``profiles_already_written`` (by an earlier one, from the checkpoint),
        ``records_retried``, ``records_failed``, ``failures_by_code``, ``profiles_not_written`` (left
        when the deadline came), ``profiles_cleared``, ``profiles_to_clear_not_found``,
        ``profiles_clear_failed``, ``object_type`` (created/updated/unchanged) and
        ``segment_definitions`` (``kinds``, and unless none: ``created``/``replaced``/``unchanged``,
        ``left_in_place``; ``error`` when a definition call failed); with contact mapping on,
        ``customers_without_contact`` too.

    Raises
    ------
    DestinationError
        Profiles not written, not cleared, or a segment-definition call refused: one line for all.
    """
    audience = audience_of(segments, send)
    population = audience.population
    kinds = settings.segment_definitions
    definitions = segment_definitions(population.groups, kinds) if kinds else {}  # checked before anything is written
    too_long = long_ids_error(population)
    if too_long is not None:
        raise too_long
    objects = ProfileObjects(audience, settings)
    left_ids = sorted(left_ids or [])
    run = CustomerProfilesExport(client, settings, retry, record_retry_rounds, clock, deadline)
    run.check_domain()
    counts: dict[str, Any] = {"customers": population.customers,
                              "customers_unchanged": population.customers - len(objects),
                              "object_type": run.ensure_object_type()}
    if settings.map_contacts:
        counts["customers_without_contact"] = population.without_contact
    definitions_failed: DefinitionsFailed | None = None
    counts["segment_definitions"] = {"kinds": list(kinds)}
    if definitions:  # a few calls, before the puts: they select by attribute and need no finished puts
        try:
            counts["segment_definitions"].update(SegmentDefinitions(client, settings.domain, retry).keep(definitions))
        except DefinitionsFailed as failed:  # the profiles are still written; the destination fails at the end
            definitions_failed = failed
            counts["segment_definitions"].update({**failed.counts, "error": failed.what})
            logger.warning("Segment definitions failed", extra={"segment_definitions": counts["segment_definitions"]})
    progress = Progress(fingerprint(objects, left_ids))
    if checkpoint is not None:
        progress = checkpoint.load(progress.fingerprint)
    try:
        cleared = {"profiles_cleared": 0, "profiles_to_clear_not_found": 0, "profiles_clear_failed": 0,
                   "clear_failures_by_code": {}}
        if left_ids and not progress.cleared:
            cleared = run.clear_profiles(left_ids)
        # A retry of this export clears again unless every departed customer was cleared: none is left behind.
        progress = replace(progress, cleared=progress.cleared or cleared["profiles_clear_failed"] == 0)
        counts.update(cleared)
        counts.update(run.put_objects(objects, checkpoint, progress, checkpoint_every))
    except ProfilesOutOfTime as stopped:
        counts.update(stopped.counts)
        done = counts["profiles_upserted"] + counts.get("profiles_already_written", 0)
        logger.warning("Customer Profiles export stopped at the deadline", extra={"customer_profiles": counts})
        raise _failure(
            f"stopped at the deadline so that the Lambda function can finish before its timeout: "
            f"{done} of {len(objects)} customer profiles were written, "
            f"{counts['profiles_not_written']} were not",
            "Re-run the export (retry the pipeline execution): it resumes where this one stopped "
            "(a checkpoint beside segments.parquet) and writes no profile twice",
            counts, definitions_failed,
        ) from None
    logger.info("Exported to Customer Profiles", extra={"customer_profiles": counts})
    failed, clears_failed = counts["records_failed"], counts["profiles_clear_failed"]
    if failed or clears_failed:
        by_code = Counter(counts["failures_by_code"]) + Counter(counts["clear_failures_by_code"])
        text = ", ".join(f"{code}: {n}" for code, n in sorted(by_code.items()))
        puts = f"{failed} of {len(objects)} customer profiles failed after {record_retry_rounds} retry round(s)"
        clears = f"{clears_failed} of {len(left_ids)} departed customers' profiles could not be cleared"
        raise _failure(
            f"{'; '.join(part for part, n in ((puts, failed), (clears, clears_failed)) if n)} ({text})",
            "Check the function's logs and the domain's quotas; re-running is safe (it puts only those again)",
            counts, definitions_failed,
        )
    if definitions_failed is not None:
        raise _failure("", "", counts, definitions_failed)
    return counts


def _failure(what: str, fix: str, counts: dict[str, Any], definitions: DefinitionsFailed | None) -> DestinationError:
    """The destination's one error line: ``what`` (profiles), then the segment definitions' failure if any."""
    if definitions is not None:
        what = f"{what}; and {definitions.what}" if what else definitions.what
        fix = f"{fix}. {definitions.fix}" if fix else definitions.fix
    return DestinationError(what, _WHERE, fix, counts)
