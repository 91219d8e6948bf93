"""The quality gate's verdict, as ``evaluation.json`` carries it (``quality_gate``).

``CheckQuality`` compares the raw metrics with ``MinSilhouette`` and ``MinClusterShare``; when
it fails, the FailStep shows ``quality_gate.message``: the values rounded, the thresholds, and
advice that fits what was set (no "set NumClusters" to someone who just did). The report
shows the same verdict.
"""

from __future__ import annotations

from typing import Any

SILHOUETTE_CEILING = 1.0


def gate_verdict(silhouette: float, min_cluster_share: float, k: int, num_clusters: int,
                 min_silhouette: float | None, min_share: float | None) -> dict[str, Any]:
    """Whether the segmentation passes the gate, and a one-line message saying why not.

    Parameters
    ----------
    silhouette, min_cluster_share : float
        The measured silhouette (-1..1) and the smallest cluster's share of customers (0..1).
    k : int
        Clusters of the model.
    num_clusters : int
        The NumClusters parameter: 0 when k was chosen automatically.
    min_silhouette, min_share : float or None
        The thresholds (MinSilhouette, MinClusterShare); None when unknown (no gate to judge by).

    Returns
    -------
    dict
        ``min_silhouette``, ``min_cluster_share``, ``passed`` (None when the thresholds are
        unknown), ``failed`` (names of the failed checks) and ``message``.

    Examples
    --------
    >>> gate_verdict(0.3171185, 0.2, 5, 0, 0.5, 0.01)["message"]  # doctest: +NORMALIZE_WHITESPACE
    'Segmentation below the quality gate: silhouette 0.317 (minimum 0.5). k=5 was already chosen for the best
    silhouette: lower MinSilhouette to at most 0.31 to accept these segments.'
    """
    if min_silhouette is None or min_share is None:
        return {"min_silhouette": min_silhouette, "min_cluster_share": min_share, "passed": None, "failed": [],
                "message": "no quality-gate thresholds were given"}
    failed = []
    parts = []
    if silhouette < min_silhouette:
        failed.append("silhouette")
        parts.append(f"silhouette {silhouette:.3f} (minimum {min_silhouette:g})")
    if min_cluster_share < min_share:
        failed.append("min_cluster_share")
        parts.append(f"smallest cluster {min_cluster_share:.1%} of customers (minimum {min_share:.1%})")
    if not failed:
        return {"min_silhouette": min_silhouette, "min_cluster_share": min_share, "passed": True, "failed": [],
                "message": f"passed: silhouette {silhouette:.3f} >= {min_silhouette:g}, smallest cluster "
                           f"{min_cluster_share:.1%} >= {min_share:.1%}"}
    advice = []
    if "silhouette" in failed:
        if min_silhouette > SILHOUETTE_CEILING:
            advice.append(f"MinSilhouette={min_silhouette:g} can never be met (a silhouette is at most 1): "
                          "lower it")
        elif num_clusters:
            advice.append(f"NumClusters={num_clusters} was set: use NumClusters=0 to choose k for the best "
                          f"silhouette, or lower MinSilhouette to at most {_floor(silhouette)}")
        else:
            advice.append(f"k={k} was already chosen for the best silhouette: lower MinSilhouette to at most "
                          f"{_floor(silhouette)} to accept these segments")
    if "min_cluster_share" in failed:
        if num_clusters:
            advice.append(f"NumClusters={num_clusters} makes a cluster too small: use fewer clusters (or 0, "
                          "automatic), or lower MinClusterShare")
        else:
            advice.append(f"The automatic choice gave k={k} with a small cluster: set NumClusters below {k}, "
                          "or lower MinClusterShare")
    # Each piece of advice is a sentence of its own, written as it is shown (``k=5`` stays lower case).
    message = f"Segmentation below the quality gate: {'; '.join(parts)}. " + " ".join(f"{a}." for a in advice)
    return {"min_silhouette": min_silhouette, "min_cluster_share": min_share, "passed": False, "failed": failed,
            "message": message}


def _floor(value: float) -> str:
    """``value`` rounded down to two decimals, so a threshold of that size accepts it."""
    import math

    return f"{math.floor(value * 100) / 100:.2f}"
