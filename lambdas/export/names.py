"""Names derived from segment names: folder slugs and the names of segments in the destinations.

One place for them, so the S3 folders, the Pinpoint segments and the Customer Profiles segment
definitions of one RFM segment always correspond.
"""

from __future__ import annotations

import re
import unicodedata

SEGMENT_PREFIX = "RFM"


def slug(name: str) -> str:
    """A segment name as a safe S3 key / folder part.

    Examples
    --------
    >>> slug("Can't Lose Them")
    'cant-lose-them'
    """
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", re.sub(r"['’`]", "", ascii_name.lower())).strip("-") or "unnamed"


def segment_display_name(rfm_segment: str) -> str:
    """The name of an RFM segment's segment in Pinpoint and Customer Profiles.

    Examples
    --------
    >>> segment_display_name("Champions")
    'RFM segment: Champions'
    """
    return f"{SEGMENT_PREFIX} segment: {rfm_segment}"


def cluster_display_name(cluster: int) -> str:
    """The name of a k-means cluster's segment (the cluster's own name may change when retrained).

    Examples
    --------
    >>> cluster_display_name(3)
    'RFM cluster: 3'
    """
    return f"{SEGMENT_PREFIX} cluster: {int(cluster)}"
