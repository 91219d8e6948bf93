"""End to end, locally: a second ``rfm run-local`` on a folder folds in only the file added, and equals --rebuild."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest

from pipeline.cli import main
from steps import columns as c

GATE = ["--param", "MinSilhouette=0", "--param", "MinClusterShare=0", "--param", "ModelApprovalStatus=Approved"]


def _day_file(path: Path, day: int, seed: int) -> int:
    """One day's orders of ~120 of 400 customers; returns the number of rows."""
    rng = random.Random(seed)
    lines = ["customer_id,order_id,timestamp,amount"]
    for n, customer in enumerate(rng.sample(range(400), 120)):
        for line in range(rng.choice([1, 1, 2])):
            lines.append(f"{customer:04d},d{day}-{n},2024-05-{day:02d}T1{line}:00:00Z,{rng.uniform(2, 300):.2f}")
    path.write_text("\n".join(lines) + "\n")
    return len(lines) - 1


def _run(*args: str) -> None:
    assert main(["run-local", *args, *GATE]) == 0


@pytest.mark.slow
def test_a_second_run_reads_only_the_added_file_and_equals_a_rebuild(tmp_path: Path) -> None:
    folder, out = tmp_path / "history", tmp_path / "out"
    folder.mkdir()
    for day in range(1, 6):
        _day_file(folder / f"day-{day:02d}.csv", day, day)
    _run("--input", str(folder), "--output", str(out))
    first = json.loads((out / "features" / "quality.json").read_text())
    assert first["increment"]["objects_added"] == 5

    added = _day_file(folder / "day-06.csv", 6, 6)
    _run("--input", str(folder), "--output", str(out))
    second = json.loads((out / "features" / "quality.json").read_text())
    assert second["rows_read"] == added == second["increment"]["rows_read"]
    assert second["increment"]["objects_added"] == 1 and second["increment"]["objects_unchanged"] == 5
    assert second["input_files"] == [str((folder / "day-06.csv").resolve())]
    incremental = pd.read_parquet(out / "features" / "rfm.parquet")
    segments = pd.read_parquet(out / "segments" / "segments.parquet")

    _run("--input", str(folder), "--output", str(out), "--rebuild")
    rebuilt = json.loads((out / "features" / "quality.json").read_text())
    assert rebuilt["increment"]["rebuild"] and rebuilt["increment"]["orders_spanning_objects"] == 0
    assert rebuilt["rows_read"] == second["history"]["rows_read"]
    pd.testing.assert_frame_equal(incremental, pd.read_parquet(out / "features" / "rfm.parquet"))
    # Same segments; the previous segment of each customer is, by design, the publish before (the second run's).
    current = list(c.SEGMENT_COLUMNS)
    pd.testing.assert_frame_equal(segments[current], pd.read_parquet(out / "segments" / "segments.parquet")[current])
    state = out / "s3" / "rfm-local" / "rfm" / "state"
    # Three writes, three manifests: a rebuild never rewrites the manifest that was current.
    assert (state / "current.json").is_file() and len(list((state / "manifests").glob("*.json"))) == 3
