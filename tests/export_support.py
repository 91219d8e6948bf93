"""Builders and fixtures shared by the export destination tests (not a test module).

``moto_s3`` is one ``ThreadedMotoServer`` on 127.0.0.1 (free port) per test module; each test gets
its own bucket, so nothing leaks between tests. Clients are built with explicit fake credentials
and region, so no test can reach a real AWS endpoint.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer

from lambdas.export.app import ExportRequest
from lambdas.export.retry import NO_SDK_RETRIES, RetryPolicy
from lambdas.export.storage import Storage, join
from lambdas.fakes import CustomerProfilesFake
from steps.columns import FEATURE_COLUMNS, SEGMENT_COLUMNS
from steps.segments import SEGMENT_GRID

CREDENTIALS = {"region_name": "us-east-1", "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
ROLE_ARN = "arn:aws:iam::123456789012:role/pinpoint-import"


def client(service: str, endpoint_url: str) -> Any:
    """A boto3 client for a local endpoint; API clients without botocore retries, as the Lambda's."""
    config = None if service == "s3" else NO_SDK_RETRIES
    return boto3.client(service, endpoint_url=endpoint_url, config=config, **CREDENTIALS)


@contextmanager
def running_customer_profiles(domain: str) -> Iterator[tuple[CustomerProfilesFake, Any]]:
    """A started Customer Profiles stand-in holding ``domain``, and a client on it; stopped after."""
    fake = CustomerProfilesFake()
    fake.start()
    fake.create_domain(domain)
    try:
        yield fake, client("customer-profiles", fake.url)
    finally:
        fake.stop()


@dataclass
class MotoS3:
    url: str
    client: Any

    def new_bucket(self) -> str:
        bucket = f"rfm-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=bucket)
        return bucket


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[MotoS3]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        yield MotoS3(url, client("s3", url))
    finally:
        server.stop()


class Sleeps(list):
    """A ``sleep`` that records the waits instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def fast_retry(max_attempts: int = 5) -> tuple[RetryPolicy, Sleeps]:
    sleeps = Sleeps()
    return RetryPolicy(max_attempts=max_attempts, base_delay=0.1, max_delay=1.0, sleep=sleeps), sleeps


def poll_sleep(seconds: float) -> None:
    """Polling an import job in tests: a real but short wait."""
    time.sleep(min(seconds, 0.01))


def segments_frame(customers: int, seed: int = 0, clusters: int = 3) -> pd.DataFrame:
    """A joined segments table (``SEGMENT_COLUMNS`` + email, phone), vectorised, deterministic.

    Every 10th customer has no contact at all, every 3rd no phone; the rest have both.
    """
    rng = np.random.default_rng(seed)
    r_scores = rng.integers(1, 6, customers)
    f_scores = rng.integers(1, 6, customers)
    grid = np.empty((6, 6), dtype=object)
    for (r, f), name in SEGMENT_GRID.items():
        grid[r, f] = name
    numbers = np.arange(customers)
    ids = np.char.add("C", np.char.zfill(numbers.astype(str), 7)).astype(object)
    cluster = numbers % clusters
    email = np.char.add(np.char.add("person", numbers.astype(str)), "@example.com").astype(object)
    phone = np.char.add("+1555", np.char.zfill(numbers.astype(str), 7)).astype(object)
    no_contact = numbers % 10 == 0
    email[no_contact] = None
    phone[no_contact | (numbers % 3 == 0)] = None
    frame = pd.DataFrame(
        {
            "customer_id": ids,
            "cluster": cluster.astype(np.int64),
            "cluster_name": np.array([f"Cluster {c}" for c in range(clusters)], dtype=object)[cluster],
            "rfm_segment": grid[r_scores, f_scores],
            "r_score": r_scores,
            "f_score": f_scores,
            "m_score": rng.integers(1, 6, customers),
            "recency_days": rng.integers(0, 700, customers),
            "frequency": rng.integers(1, 40, customers),
            "monetary": rng.gamma(5.0, 30.0, customers).round(2),
            "email": email,
            "phone": phone,
        }
    )
    assert tuple(frame.columns[: len(SEGMENT_COLUMNS)]) == SEGMENT_COLUMNS
    return frame


def features_table(segments: pd.DataFrame) -> pa.Table:
    """``rfm.parquet`` for a segments frame (FEATURE_COLUMNS plus its contact columns)."""
    n = len(segments)
    columns: dict[str, Any] = {
        "customer_id": pa.array(segments["customer_id"].astype(object).to_numpy(), pa.string()),
        "first_purchase": pa.array(np.full(n, np.datetime64("2024-01-01", "ns"))),
        "last_purchase": pa.array(np.full(n, np.datetime64("2024-06-01", "ns"))),
        "recency_days": segments["recency_days"].to_numpy(),
        "frequency": segments["frequency"].to_numpy(),
        "monetary": segments["monetary"].to_numpy(),
        "avg_order_value": (segments["monetary"] / segments["frequency"]).to_numpy(),
        "r_score": segments["r_score"].to_numpy(),
        "f_score": segments["f_score"].to_numpy(),
        "m_score": segments["m_score"].to_numpy(),
        "rfm_score": pa.array((segments["r_score"].astype(str) + segments["f_score"].astype(str)).tolist()),
        "rfm_segment": pa.array(segments["rfm_segment"].astype(object).to_numpy(), pa.string()),
    }
    assert tuple(columns) == FEATURE_COLUMNS
    for contact in ("email", "phone", "address", "channel"):
        if contact in segments:
            columns[contact] = pa.array(
                segments[contact].to_numpy(dtype=object), pa.string(), from_pandas=True
            )
    return pa.table(columns)


def write_inputs(
    storage: Storage, root: str, segments: pd.DataFrame, execution_id: str = "exec-1", destinations: str = ""
) -> ExportRequest:
    """Write ``rfm.parquet`` and a JSON Lines ``.out`` for ``segments``; the matching request."""
    buffer = io.BytesIO()
    pq.write_table(features_table(segments), buffer)
    storage.write_bytes(join(root, "features", "rfm.parquet"), buffer.getvalue())
    assignments = segments[["customer_id", "cluster", "cluster_name", "rfm_segment"]]
    lines = assignments.to_json(orient="records", lines=True, force_ascii=False)
    storage.write_bytes(join(root, "transform", "customers.csv.out"), lines.encode())
    return ExportRequest(
        assignments_uri=join(root, "transform"),
        features_uri=join(root, "features"),
        output_uri=join(root, "segments"),
        execution_id=execution_id,
        destinations=destinations,
    )


def read_csv_rows(data: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)


def json_lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]
