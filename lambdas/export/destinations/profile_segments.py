"""Customer Profiles segment definitions per RFM segment and per cluster: outbound campaign audiences.

An Amazon Connect outbound campaign (v2) sends to a Customer Profiles *segment*: its source is the
segment definition's ARN (``Source.customerProfilesSegmentArn``,
https://docs.aws.amazon.com/connect/latest/APIReference/API_connect-outbound-campaigns-v2_Source.html;
"a Customer Profiles segment ARN for your campaign recipients" is a prerequisite in
https://docs.aws.amazon.com/connect/latest/adminguide/create-campaigns-api-cli.html). The
``customer-profiles`` destination writes each customer's RFM segment and cluster as the profile
attributes ``rfm_segment`` / ``rfm_cluster``; each definition here selects the profiles whose
attribute equals one value (``ProfileAttributes.Attributes.<attribute>``, ``INCLUSIVE``). Which
kinds are kept is ``CustomerProfilesSettings.segment_definitions`` (``segments``, ``clusters``,
both by default, or none: then no call is made).

Names: ``rfm-<slug of the segment>`` (``rfm-champions``, ``rfm-cant-lose-them``) and
``rfm-cluster-<n>``, within the model's ``^[a-zA-Z0-9_-]+$``, 1..64 characters. The slugs come
from :func:`~lambdas.export.names.segment_slugs`, as the S3 folder names do, so two segment names
with one slug are the same clear error everywhere.

Create or update. The API (customer-profiles 2020-08-15) has Create, Get, List and Delete, and no
update:

1. ``ListSegmentDefinitions`` (every page) says which exist.
2. A wanted definition that does not exist is created. One that exists is read
   (``GetSegmentDefinition``) and compared with what would be sent: equal, it is left alone;
   different (a display name, a description or a filter that changed, or one edited by hand), it is
   deleted and created again under the same name. The name makes the ARN, so a campaign that uses
   it still points at it, and membership is computed when a campaign runs ("Segments are
   recalculated on demand, such as during campaign execution",
   https://docs.aws.amazon.com/connect/latest/adminguide/customer-segments-building-segments.html):
   only a campaign run that starts between the delete and the create can miss it.
3. Definitions this export made (an ``rfm-`` name and one of its descriptions) that are no longer
   wanted (a segment renamed in ``steps/segments.py``, a cluster gone after retraining, a kind
   turned off) are left in place and listed in ``left_in_place``: deleting one would break the
   campaigns that use it. A gone cluster's or segment's definition selects nobody once its customers
   were sent again (their attributes then hold their new segment and cluster).

A call refused or failed after the retry policy's attempts stops the definitions with
:class:`DefinitionsFailed`, whose message is one line: which call, which definition, which domain,
the error code, and what to do.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd
from botocore.exceptions import BotoCoreError, ClientError

from lambdas.export.config import CLUSTERS, DEFINITION_KINDS, SEGMENTS
from lambdas.export.destinations import same_as_sent
from lambdas.export.names import cluster_display_name, segment_display_name, segment_names, segment_slugs
from lambdas.export.retry import RetryPolicy, error_code
from steps.columns import CLUSTER, RFM_SEGMENT
from steps.errors import PipelineError

MAX_DEFINITION_NAME = 64  # SegmentDefinitionName: 1..64 of [a-zA-Z0-9_-] (botocore's model)
MAX_DISPLAY_NAME = 255  # DisplayName: 1..255 characters
MAX_DESCRIPTION = 1000  # Description: 1..1000 in the API reference (the model allows 4000)
MAX_ATTRIBUTE_VALUE = 255  # a profile attribute's value, and each of a dimension's Values: 1..255
DEFINITION_PREFIX = "rfm-"
SEGMENT_ATTRIBUTE = "rfm_segment"  # the profile attributes the customer-profiles destination writes
CLUSTER_ATTRIBUTE = "rfm_cluster"
SEGMENT_DESCRIPTION = "Customers in the RFM segment "
CLUSTER_DESCRIPTION = "Customers in k-means cluster "
LIST_PAGE = 100  # ListSegmentDefinitions' MaxResults (the model allows 1..500)
_WHERE = "export to Amazon Connect Customer Profiles"


def segment_definition_name(rfm_segment: str) -> str:
    """The definition name of one RFM segment (what a marketer picks in an outbound campaign).

    >>> segment_definition_name("Can't Lose Them")
    'rfm-cant-lose-them'
    """
    return wanted_names([rfm_segment])[rfm_segment]


def cluster_definition_name(cluster: int) -> str:
    """The definition name of one k-means cluster.

    >>> cluster_definition_name(2)
    'rfm-cluster-2'
    """
    return f"{DEFINITION_PREFIX}cluster-{int(cluster)}"


def wanted_names(rfm_segments: Iterable[str]) -> dict[str, str]:
    """RFM segment -> definition name; two segments with one slug are refused (:func:`segment_slugs`)."""
    slugs = segment_slugs(rfm_segments, MAX_DEFINITION_NAME - len(DEFINITION_PREFIX))
    return {name: f"{DEFINITION_PREFIX}{slug}" for name, slug in slugs.items()}


def segment_definitions(segments: pd.DataFrame,
                        kinds: Iterable[str] = DEFINITION_KINDS) -> dict[str, dict[str, Any]]:
    """Definition name -> ``CreateSegmentDefinition`` request body, per RFM segment and/or per cluster.

    Parameters
    ----------
    segments : DataFrame
        With ``rfm_segment`` and ``cluster`` (every customer, or one row per segment and cluster).
    kinds : iterable of str
        ``segments`` (every segment of the grid in ``steps/segments.py``, plus any other name in
        the data) and/or ``clusters`` (each cluster in the data).

    Raises
    ------
    PipelineError
        When two segment names share a slug (as for the S3 folders), or, with both kinds, a
        segment's definition name is a cluster's (``rfm-cluster-<n>``): one definition would
        silently stand for both.
    """
    kinds = set(kinds)
    wanted: dict[str, dict[str, Any]] = {}
    segment_of: dict[str, str] = {}
    if SEGMENTS in kinds:
        for name, definition in wanted_names(segment_names(segments[RFM_SEGMENT].astype(str))).items():
            segment_of[definition] = name
            wanted[definition] = _definition(segment_display_name(name), f"{SEGMENT_DESCRIPTION}{name}",
                                             SEGMENT_ATTRIBUTE, name)
    if CLUSTERS in kinds:
        for cluster in sorted(set(segments[CLUSTER].astype(int))):
            definition = cluster_definition_name(cluster)
            if definition in segment_of:
                raise PipelineError(
                    f"the RFM segment {segment_of[definition]!r} and cluster {cluster} share the segment "
                    f"definition name {definition!r}",
                    _WHERE,
                    "Give that RFM segment another name, or keep only one kind of definition "
                    "(CUSTOMER_PROFILES_SEGMENT_DEFINITIONS=segments or clusters)",
                )
            wanted[definition] = _definition(cluster_display_name(cluster), f"{CLUSTER_DESCRIPTION}{cluster}",
                                             CLUSTER_ATTRIBUTE, str(cluster))
    return wanted


def _definition(display_name: str, description: str, attribute: str, value: str) -> dict[str, Any]:
    """One group, one dimension: ``attribute`` is ``value`` (cut to 255 characters, as the profile's value is)."""
    dimension = {"ProfileAttributes": {"Attributes": {
        attribute: {"DimensionType": "INCLUSIVE", "Values": [value[:MAX_ATTRIBUTE_VALUE]]}}}}
    return {
        "DisplayName": display_name[:MAX_DISPLAY_NAME],
        "Description": description[:MAX_DESCRIPTION],
        "SegmentGroups": {"Groups": [{"Dimensions": [dimension], "Type": "ALL"}], "Include": "ALL"},
    }


def made_by_export(item: dict[str, Any]) -> bool:
    """Whether a listed definition is one this export makes (its name prefix and description)."""
    return str(item.get("SegmentDefinitionName", "")).startswith(DEFINITION_PREFIX) and str(
        item.get("Description", "")).startswith((SEGMENT_DESCRIPTION, CLUSTER_DESCRIPTION))


class DefinitionsFailed(PipelineError):
    """A segment-definition call was refused or failed; ``counts`` are what was done before it."""

    def __init__(self, what: str, fix: str, counts: dict[str, Any]) -> None:
        super().__init__(what, _WHERE, fix)
        self.counts = counts


def empty_counts() -> dict[str, Any]:
    return {"created": 0, "replaced": 0, "unchanged": 0, "left_in_place": []}


class SegmentDefinitions:
    """Keeps one domain's segment definitions equal to the wanted ones (see the module docstring).

    Parameters
    ----------
    client : boto3 ``customer-profiles`` client
    domain : str
        The Customer Profiles domain.
    retry : RetryPolicy
        Throttling and 5xx are retried by it; anything else fails at once.
    """

    def __init__(self, client: Any, domain: str, retry: RetryPolicy) -> None:
        self.client = client
        self.domain = domain
        self.retry = retry
        self.counts = empty_counts()

    def _call(self, operation: str, method: Any, definition: str | None, deleted: bool = False,
              **request: Any) -> Any:
        """``method`` (the client's, named in the code so the IAM coverage test sees it) through the retry policy."""
        try:
            return self.retry.call(method, DomainName=self.domain, **request)
        except (ClientError, BotoCoreError) as error:
            raise self._failed(operation, definition, error, deleted) from None

    def _failed(self, operation: str, definition: str | None, error: BaseException, deleted: bool) -> DefinitionsFailed:
        code = error_code(error)
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?") \
            if isinstance(error, ClientError) else "no response"
        subject = f" of the segment definition {definition!r}" if definition else ""
        what = f"{operation}{subject} in domain {self.domain!r} failed: {code} (HTTP {status})"
        if deleted:
            what += "; it was deleted to be replaced and is missing until a re-run creates it"
        if code in ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation"):
            fix = (f"Grant the export function's role profile:{operation} on the domain and its "
                   f"segment-definitions/{DEFINITION_PREFIX}* (template.yaml does unless "
                   "CustomerProfilesSegmentDefinitions is none), or set CUSTOMER_PROFILES_SEGMENT_DEFINITIONS=none "
                   "to keep no segment definitions; the profiles are written either way")
        else:
            fix = ("Look the definition up in the Amazon Connect admin website (Customer segments) or with "
                   "aws customer-profiles list-segment-definitions, then re-run the export: it creates what "
                   "is missing and leaves what is right")
        return DefinitionsFailed(what, fix, self.counts)

    def existing(self) -> dict[str, dict[str, Any]]:
        """Every definition of the domain (all pages of ``ListSegmentDefinitions``), by name."""
        found: dict[str, dict[str, Any]] = {}
        token: str | None = None
        while True:
            page = self._call("ListSegmentDefinitions", self.client.list_segment_definitions, None,
                              MaxResults=LIST_PAGE,
                              **({"NextToken": token} if token else {}))
            for item in page.get("Items", []):
                if item.get("SegmentDefinitionName"):
                    found[item["SegmentDefinitionName"]] = item
            token = page.get("NextToken")
            if not token:
                return found

    def keep(self, wanted: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Create the missing, replace the different, leave the equal; counts (``left_in_place`` too).

        Raises
        ------
        DefinitionsFailed
            At the first call refused or failed after the retries (its ``counts`` say what was done).
        """
        self.counts = empty_counts()
        if not wanted:
            return self.counts
        existing = self.existing()
        for name, definition in wanted.items():
            names = {"SegmentDefinitionName": name}
            deleted = False
            if name in existing:
                current = self._call("GetSegmentDefinition", self.client.get_segment_definition, name, **names)
                if all(same_as_sent(current.get(key), value) for key, value in definition.items()):
                    self.counts["unchanged"] += 1
                    continue
                self._call("DeleteSegmentDefinition", self.client.delete_segment_definition, name, **names)
                deleted = True
            self._call("CreateSegmentDefinition", self.client.create_segment_definition, name, deleted,
                       **names, **definition)
            self.counts["replaced" if deleted else "created"] += 1
        self.counts["left_in_place"] = sorted(
            name for name, item in existing.items() if name not in wanted and made_by_export(item))
        return self.counts

