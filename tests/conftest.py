"""Shared fixtures: a trained model, the bundled sample, fake AWS credentials."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from steps import columns as c
from steps.features.scoring import RFMScorer
from steps.segments import segments_of

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "transactions.csv.gz"


def synthetic_features(customers: int = 600, seed: int = 0) -> pd.DataFrame:
    """Per-customer features with three clearly different groups, scored like the features step."""
    rng = np.random.default_rng(seed)
    third = customers // 3
    recency = np.concatenate([rng.integers(1, 20, third), rng.integers(150, 300, third),
                              rng.integers(400, 700, customers - 2 * third)])
    frequency = np.concatenate([rng.integers(10, 30, third), rng.integers(3, 8, third),
                                np.ones(customers - 2 * third, dtype=int)])
    monetary = np.concatenate([rng.gamma(20, 100, third), rng.gamma(10, 30, third),
                               rng.gamma(5, 5, customers - 2 * third)])
    frame = pd.DataFrame({
        c.CUSTOMER_ID: [f"{i:07d}" for i in range(customers)],
        c.RECENCY_DAYS: recency, c.FREQUENCY: frequency, c.MONETARY: monetary.round(2),
    })
    frame = RFMScorer().fit(frame).transform(frame)
    frame[c.RFM_SEGMENT] = segments_of(frame[c.R_SCORE], frame[c.F_SCORE])
    return frame


@pytest.fixture(scope="session")
def features_frame() -> pd.DataFrame:
    return synthetic_features()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, features_frame: pd.DataFrame) -> Path:
    from steps.model.train import train

    folder = tmp_path_factory.mktemp("model")
    train(features_frame, folder, num_clusters=3, random_state=0)
    return folder


@pytest.fixture
def fake_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and region; nothing may reach a real AWS endpoint."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_SECURITY_TOKEN": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
