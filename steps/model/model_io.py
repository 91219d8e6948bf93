"""The model artifact: what ``train`` writes and ``serve`` / ``evaluate`` read.

``model.tar.gz`` (SageMaker packs ``SM_MODEL_DIR``) holds:

- ``model.json``: everything needed to assign segments with NumPy alone:
  the feature transform, scaler mean and scale, cluster centres, k, names,
  dominant RFM segments, cluster profiles, feature statistics and the
  k-selection curve. No pickle, no private classes.
- ``segmenter.joblib``: the fitted scikit-learn ``StandardScaler`` and
  ``KMeans`` (plain scikit-learn objects) for users who want them.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from steps import columns as c
from steps import paths
from steps.errors import ModelError
from steps.segments import SEGMENT_NAME_ARRAY, segment_codes

FORMAT_VERSION = 1


def log_transform(values: np.ndarray) -> np.ndarray:
    """``sign(x) * log1p(|x|)``: compresses heavy tails, defined for negative spend (the model's first step)."""
    return np.sign(values) * np.log1p(np.abs(values))


def save_model(segmenter, model_dir: Path, feature_stats: dict, hyperparameters: dict) -> dict:
    """Write ``model.json`` and ``segmenter.joblib`` for a fitted ``Segmenter``."""
    import joblib

    model_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "format_version": FORMAT_VERSION,
        "features": list(c.MODEL_FEATURES),
        "transform": "signed_log1p",
        "scaler_mean": segmenter.scaler_.mean_.tolist(),
        "scaler_scale": segmenter.scaler_.scale_.tolist(),
        "centers": segmenter.kmeans_.cluster_centers_.tolist(),
        "k": int(segmenter.k_),
        "names": list(segmenter.names_),
        "dominant_segments": list(segmenter.dominant_segments_),
        "profiles": segmenter.profiles_,
        "k_selection": segmenter.k_selection_,
        "k_votes": {str(k): n for k, n in getattr(segmenter, "k_votes_", {}).items()},
        "inertia": float(segmenter.kmeans_.inertia_),
        # Customers given and customers fitted on (fewer above the segmenter's max_customers).
        "training_sample": {"customers": int(getattr(segmenter, "customers_", 0)),
                            "fitted_on": int(getattr(segmenter, "sample_size_", 0)),
                            "max_customers": int(getattr(segmenter, "max_customers", 0))},
        "feature_stats": feature_stats,
        "hyperparameters": hyperparameters,
    }
    (model_dir / paths.MODEL_META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    joblib.dump({"scaler": segmenter.scaler_, "kmeans": segmenter.kmeans_}, model_dir / paths.MODEL_FILE)
    return meta


@dataclass(frozen=True)
class SegmentModel:
    """A loaded segmenter: assigns clusters with NumPy only."""

    meta: dict

    @property
    def k(self) -> int:
        return int(self.meta["k"])

    @property
    def names(self) -> list[str]:
        return list(self.meta["names"])

    def scaled(self, features: np.ndarray) -> np.ndarray:
        """``features`` (columns ``MODEL_FEATURES``) in the space the centres live in."""
        return (log_transform(features) - np.asarray(self.meta["scaler_mean"])) / np.asarray(self.meta["scaler_scale"])

    def clusters(self, features: np.ndarray) -> np.ndarray:
        """Nearest cluster of each row of ``features`` (columns ``MODEL_FEATURES``).

        Column-wise NumPy (no BLAS call): with three features and k <= 10 this is
        memory-bound and several times faster than a matrix product on a busy machine.
        """
        columns = self.scaled(features).T.copy()
        best = np.zeros(len(features), dtype=np.int64)
        best_distance = np.full(len(features), np.inf)
        for cluster, center in enumerate(np.asarray(self.meta["centers"])):
            distance = np.zeros(len(features))
            for column, value in zip(columns, center, strict=True):
                distance += np.square(column - value)
            closer = distance < best_distance
            best[closer] = cluster
            best_distance = np.where(closer, distance, best_distance)
        return best

    def assign(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``customer_id, cluster, cluster_name, rfm_segment`` for each row of ``frame``.

        ``frame`` needs ``customer_id``, the model features and ``r_score``, ``f_score``.
        """
        clusters = self.clusters(frame[list(c.MODEL_FEATURES)].to_numpy(dtype=float))
        names = np.asarray(self.meta["names"], dtype=object)
        return pd.DataFrame(
            {
                c.CUSTOMER_ID: frame[c.CUSTOMER_ID].to_numpy(),
                c.CLUSTER: clusters.astype(int),
                c.CLUSTER_NAME: names[clusters],
                c.RFM_SEGMENT: SEGMENT_NAME_ARRAY[segment_codes(frame[c.R_SCORE], frame[c.F_SCORE])],
            }
        )


def load_model(location: Path) -> SegmentModel:
    """Load from a model folder or a ``model.tar.gz`` (SageMaker's packed ``SM_MODEL_DIR``).

    Raises
    ------
    ModelError
        Nothing usable at ``location``.
    """
    location = Path(location)
    archive = location if location.is_file() else location / paths.MODEL_ARCHIVE
    meta_path = location / paths.MODEL_META_FILE
    try:
        if location.is_dir() and meta_path.is_file():
            meta = json.loads(meta_path.read_text())
        elif archive.is_file():
            with tarfile.open(archive) as tar:
                member = tar.extractfile(paths.MODEL_META_FILE)
                if member is None:
                    raise KeyError(paths.MODEL_META_FILE)
                meta = json.loads(member.read())
        else:
            raise FileNotFoundError(location)
    except (OSError, KeyError, tarfile.TarError, json.JSONDecodeError) as error:
        raise ModelError(
            f"no readable {paths.MODEL_META_FILE} or {paths.MODEL_ARCHIVE} ({type(error).__name__}: {error})",
            str(location),
            "point at the output of the TrainSegmenter step",
        ) from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"model format {meta.get('format_version')!r} is not {FORMAT_VERSION}", str(location), "retrain"
        )
    return SegmentModel(meta)
