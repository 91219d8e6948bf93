"""Many customers through the export: S3 files and the Pinpoint import (through the fake).

100,000 customers by default, with the import file limit scaled down with them so that the import is
still split into several files: that proves what the million-customer run proves (every customer in
every file kind, the split, the endpoint counts) in a tenth of the time. ``make bench`` runs it with a
million (``RFM_EXPORT_SCALE_CUSTOMERS=1000000``, about 30-60 s on two cores).
The input is generated vectorised; the checks read Parquet metadata and the fake's Arrow tables
rather than a million Python objects.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from lambdas.export.app import Clients, export_segments
from lambdas.export.config import ExportSettings, PinpointSettings
from lambdas.export.destinations.pinpoint import IMPORT_COLUMNS
from lambdas.export.retry import RetryPolicy
from lambdas.export.storage import Storage
from lambdas.fakes import running_fakes
from steps.segments import SEGMENT_NAMES
from tests.export_support import ROLE_ARN, client, segments_frame, write_inputs

CUSTOMERS = int(os.environ.get("RFM_EXPORT_SCALE_CUSTOMERS", "100000"))
FILE_LIMIT = 64 * CUSTOMERS  # instead of 1 GB (64 MB for a million): the import is split at any size


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path``, emptied afterwards: pytest keeps recent runs' folders, and this one holds ~0.6 GB."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.slow
def test_many_customers_export_to_s3_files_and_a_split_pinpoint_import(
    scratch: Path, fake_aws: None
) -> None:
    tmp_path = scratch
    frame = segments_frame(CUSTOMERS, clusters=4)
    storage = Storage(s3_root=tmp_path / "s3")
    request = write_inputs(storage, str(tmp_path / "run"), frame)
    numbers = np.arange(CUSTOMERS)
    no_contact = numbers % 10 == 0
    expected_endpoints = int((~no_contact).sum() + (~no_contact & (numbers % 3 != 0)).sum())
    del frame

    with running_fakes(
        tmp_path / "s3", customer_profiles=False, pinpoint_options={"max_file_bytes": FILE_LIMIT}
    ) as fakes:
        app_id = fakes.pinpoint.create_app("scale")
        settings = ExportSettings(
            destinations=("s3", "pinpoint"),
            pinpoint=PinpointSettings(
                application_id=app_id,
                role_arn=ROLE_ARN,
                import_prefix="s3://scale/imports",
                max_file_bytes=FILE_LIMIT,
                poll_seconds=0.25,
            ),
        )
        started = time.monotonic()
        summary = export_segments(
            request,
            storage,
            settings,
            Clients(pinpoint=client("pinpoint", fakes.pinpoint.url)),
            RetryPolicy(max_attempts=3),
        )
        seconds = time.monotonic() - started
        stored = fakes.pinpoint.endpoint_count(app_id)

    assert summary["customers"] == CUSTOMERS
    files = [Path(uri) for uri in summary["files"]]
    parquet = [f for f in files if f.suffix == ".parquet" and f.name not in ("segments.parquet", "changes.parquet")]
    by_kind = {
        kind: sum(pq.read_metadata(f).num_rows for f in parquet if f.parent.name.startswith(kind))
        for kind in ("rfm_segment=", "cluster=")
    }
    assert by_kind == {"rfm_segment=": CUSTOMERS, "cluster=": CUSTOMERS}
    assert len(parquet) == len(SEGMENT_NAMES) + 4
    assert pq.read_metadata(files[0]).num_rows == CUSTOMERS  # segments.parquet

    pinpoint = summary["by_destination"]["pinpoint"]
    assert pinpoint["customers_skipped_no_contact"] == int(no_contact.sum())
    assert pinpoint["endpoints"] == expected_endpoints == stored
    assert pinpoint["endpoints_failed"] == 0 and len(pinpoint["import_jobs"]) == 1
    imports = sorted((tmp_path / "s3" / "scale" / "imports" / "exec-1" / "attempt-1").glob("part-*.csv"))
    assert pinpoint["import_files"] == len(imports) >= max(2, math.ceil(expected_endpoints * 100 / FILE_LIMIT))
    assert all(path.stat().st_size <= FILE_LIMIT for path in imports)
    header = pa_csv.read_csv(imports[-1]).column_names
    assert tuple(header) == IMPORT_COLUMNS
    print(f"\n{CUSTOMERS} customers, {expected_endpoints} endpoints, {len(imports)} files: {seconds:.1f} s")
