"""Names derived from segment and cluster names: folder slugs and the names of segments in the destinations.

One place for them, so the S3 folders, the Pinpoint segments and the Customer Profiles segment
definitions of one RFM segment always correspond.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping

from steps.errors import PipelineError
from steps.segments import SEGMENT_NAMES

SEGMENT_PREFIX = "RFM"
_WHERE = "export Lambda"


def slug(name: str) -> str:
    """A segment name as a safe S3 key / folder part.

    Examples
    --------
    >>> slug("Can't Lose Them")
    'cant-lose-them'
    """
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", re.sub(r"['’`]", "", ascii_name.lower())).strip("-") or "unnamed"


def segment_slugs(names: Iterable[str], max_length: int | None = None) -> dict[str, str]:
    """Name -> :func:`slug` (cut to ``max_length``), refusing two names that would share one slug.

    The S3 folders and the Customer Profiles segment definition names both come from here, so a
    collision is the same clear error for every destination.

    Examples
    --------
    >>> segment_slugs(["Loyal", "Can't Lose Them"])
    {'Loyal': 'loyal', "Can't Lose Them": 'cant-lose-them'}
    >>> segment_slugs(["Can't Lose Them", "Cant Lose Them"])
    Traceback (most recent call last):
    ...
    steps.errors.PipelineError: export Lambda: segment names share a slug: "Can't Lose Them", 'Cant Lose Them' -> ...
    """
    slugs = {name: slug(name)[:max_length] for name in dict.fromkeys(names)}
    repeated = sorted(s for s, n in Counter(slugs.values()).items() if n > 1)
    if repeated:
        clashes = "; ".join(", ".join(repr(n) for n, v in slugs.items() if v == s) + f" -> {s!r}" for s in repeated)
        raise PipelineError(f"segment names share a slug: {clashes}", _WHERE,
                            "Give segments names that differ in letters or digits")
    return slugs


def segment_display_name(rfm_segment: str) -> str:
    """The name of an RFM segment's segment in Pinpoint and Customer Profiles.

    Examples
    --------
    >>> segment_display_name("Champions")
    'RFM segment: Champions'
    """
    return f"{SEGMENT_PREFIX} segment: {rfm_segment}"


def cluster_display_name(cluster: int) -> str:
    """A k-means cluster's segment name by number: Customer Profiles' display name, and the name
    Pinpoint cluster segments had before they were named after the cluster.

    Examples
    --------
    >>> cluster_display_name(3)
    'RFM cluster: 3'
    """
    return f"{SEGMENT_PREFIX} cluster: {int(cluster)}"


def unique_names(names: Mapping[int, str], limit: int) -> dict[int, str]:
    """Each name on one line (tabs and line breaks as spaces) and cut to ``limit`` characters;
    names that then repeat get `` #<key>`` (still within ``limit``), so every key keeps its own name.

    Examples
    --------
    >>> unique_names({0: "Big spenders, recent", 1: "Big\\tspenders", 2: "Lapsed"}, 12)
    {0: 'Big spend #0', 1: 'Big spend #1', 2: 'Lapsed'}
    """
    cut = {key: re.sub(r"[\t\r\n]", " ", str(name))[:limit] for key, name in names.items()}
    counts = Counter(cut.values())
    unique = {
        key: name if counts[name] == 1 else name[: limit - len(f" #{key}")] + f" #{key}"
        for key, name in cut.items()
    }
    if len(set(unique.values())) < len(unique):
        raise PipelineError(f"cluster names are not unique within {limit} characters: {sorted(names.values())}",
                            _WHERE, "Give clusters names that differ in their first characters")
    return unique


def cluster_segment_names(labels: Mapping[int, str], limit: int) -> dict[int, str]:
    """Cluster -> ``RFM cluster: <cluster name>``, unique and at most ``limit`` characters.

    Examples
    --------
    >>> cluster_segment_names({0: "Recent frequent high spenders", 1: "Lapsed one-time low spenders"}, 100)
    {0: 'RFM cluster: Recent frequent high spenders', 1: 'RFM cluster: Lapsed one-time low spenders'}
    """
    return unique_names({key: f"{SEGMENT_PREFIX} cluster: {label}" for key, label in labels.items()}, limit)


def segment_names(present: Iterable[str]) -> list[str]:
    """The grid's segment names, then any other name ``present`` in the data (sorted): every segment to export.

    >>> segment_names(["Loyal", "VIP"])[-2:]
    ['Hibernating', 'VIP']
    """
    return [*SEGMENT_NAMES, *sorted(set(present) - set(SEGMENT_NAMES))]
