"""The Spark engine folds into the DuckDB engine's incremental state (docs/scale.md, docs/history.md).

A few tiny CSV objects, changed step by step: the Spark fold, the DuckDB fold and a full recompute
must give the same ``rfm.parquet``, ``quality.json`` and quarantine, and the state files the Spark
engine writes must hold what the DuckDB engine's hold, so the engines can take turns on one state.
One local SparkSession (``local[2]``, tests/conftest.py) serves the session; each Spark fold costs seconds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from steps import paths
from steps.features.fold import plan_history, run_history
from steps.features.history import list_history
from steps.features.options import FeatureOptions
from steps.features.quarantine import MALFORMED_FILE, ROWS_FILE
from steps.features.state import CURRENT, StateStore, read_current
from steps.features.transactions import CUST, REASON

pytest.importorskip("pyspark", reason="the spark extra is not installed (pip install -e '.[spark]')")
from steps.features.spark.session import has_java  # noqa: E402  (after the skip: the spark extra is there)

if not has_java():  # the same test as the engine's: JAVA_HOME or java on the PATH
    pytest.skip("no Java runtime: install openjdk-17-jre-headless (.ci/run does)", allow_module_level=True)

from steps.features.spark.contributions import SparkObjectReader  # noqa: E402  (after the skips)

# A Spark run costs seconds (still part of make test); the session's one local Spark (tests/conftest.py).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("spark")]
HEADER = "customer_id,order_id,timestamp,amount,email\n"
# Tiny objects with every kind of row the fold accounts for: purchases, two-line orders, returns, an exact
# duplicate, contacts, quarantined rows (no customer, a bad date, only a return) and a malformed line.
OBJECTS = {
    "a": "c1,a1,2024-01-05,10.50,c1@x\nc1,a1,2024-01-05,2.25,\nc2,a2,2024-01-07,8,c2@x\nc2,a2,2024-01-07,8,c2@x\n"
         ",a3,2024-01-08,3,\n",
    "b": "c2,b1,2024-02-01,5,c2@y\nc3,b2,2024-02-03,12,\nc3,b3,2024-02-09,-4,\nc4,b4,not a date,1,\n"
         "c5,b5,2024-02-10,-6,\n",
    "c": "c1,c1,2024-03-01,20,\nc6,c2,2024-03-02,4,c6@x\nc6,c3,2024-03-02,4,5,extra\nc3,c4,2024-03-04,7,\n",
    "a2": "c1,a1,2024-01-06,11,c1@z\nc7,a4,2024-01-09,9,\n",  # a replaced version of a
}


class History:
    """A folder of objects whose every write is a new version (distinct mtimes)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.tick = folder, 0
        folder.mkdir(parents=True)

    def put(self, name: str, body: str) -> None:
        path = self.folder / f"{name}.csv"
        path.write_text(HEADER + OBJECTS[body])
        self.tick += 1
        os.utime(path, ns=(self.tick * 10**9, self.tick * 10**9))

    def delete(self, name: str) -> None:
        (self.folder / f"{name}.csv").unlink()


def fold(history: History, state: Path, out: Path, engine: str, *, rebuild: bool = False) -> dict:
    """One incremental run of ``engine`` on ``state``; returns its quality.json."""
    store = StateStore(str(state))
    reader = SparkObjectReader(store, str(out / "spark-work"), "500MB") if engine == "spark" else None
    run_history(list_history(str(history.folder)), store, out, FeatureOptions(memory_limit="500MB", threads=1),
                rebuild=rebuild, reader=reader)
    return json.loads((out / paths.QUALITY_FILE).read_text())


def recompute(history: History, out: Path) -> dict:
    """The whole history read again (DuckDB, a new state): what every fold must equal."""
    return fold(history, out / "state", out, "duckdb", rebuild=True)


def rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def assert_same_run(left: Path, right: Path) -> None:
    """``rfm.parquet`` (schema and rows, in order), ``quality.json`` and the quarantine are equal."""
    assert pq.read_schema(left / paths.RFM_FILE) == pq.read_schema(right / paths.RFM_FILE)
    assert rows(left / paths.RFM_FILE) == rows(right / paths.RFM_FILE)
    assert json.loads((left / paths.QUALITY_FILE).read_text()) == json.loads((right / paths.QUALITY_FILE).read_text())
    for name in (ROWS_FILE, MALFORMED_FILE):
        here, there = left / paths.QUARANTINE_DIR / name, right / paths.QUARANTINE_DIR / name
        assert here.exists() == there.exists(), name
        if here.exists():
            assert pq.read_schema(here) == pq.read_schema(there)
            assert rows(here) == rows(there)


def assert_same_features(fold_out: Path, full_out: Path) -> None:
    """A fold's features and history accounting equal a full recompute's (its run rows differ by design)."""
    assert rows(fold_out / paths.RFM_FILE) == rows(full_out / paths.RFM_FILE)
    folded, full = (json.loads((o / paths.QUALITY_FILE).read_text()) for o in (fold_out, full_out))
    for key in ("customers", "customers_with_only_returns", "history", "as_of_date", "input_format"):
        assert folded[key] == full[key], key


def sorted_rows(path: Path) -> list[dict]:
    return sorted(rows(path), key=lambda r: (r[REASON], r[CUST] or ""))


def assert_same_state(left: Path, right: Path) -> None:
    """Two states hold the same generation: manifest, totals and every object's contribution."""
    one, two = (read_current(StateStore(str(s))).manifest for s in (left, right))
    assert one.generation == two.generation and one.settings == two.settings
    assert one.objects.keys() == two.objects.keys()
    for key, entry in one.objects.items():
        other = two.objects[key]
        assert {k: v for k, v in entry.items() if k != "contribution"} == \
               {k: v for k, v in other.items() if k != "contribution"}, key
        if entry["contribution"]:
            assert sorted_rows(left / entry["contribution"]) == sorted_rows(right / other["contribution"]), key
            assert columns(left / entry["contribution"]) == columns(right / other["contribution"])
    assert sorted_rows(left / one.totals) == sorted_rows(right / two.totals)
    assert columns(left / one.totals) == columns(right / two.totals)


def columns(path: Path) -> list[tuple[str, str]]:
    """Names and types (a fold's totals may mark a column NOT NULL where a rebuild's do not)."""
    return [(f.name, str(f.type)) for f in pq.read_schema(path)]


def test_spark_fold_equals_duckdb_fold_and_a_full_recompute(tmp_path: Path) -> None:
    history = History(tmp_path / "in")
    history.put("a", "a")
    history.put("b", "b")
    steps = [
        ("first run", lambda: None),
        ("add c", lambda: history.put("c", "c")),
        ("replace a", lambda: history.put("a", "a2")),
        ("delete b", lambda: history.delete("b")),
    ]
    for number, (what, change) in enumerate(steps):
        change()
        spark_out, duck_out = tmp_path / f"spark-{number}", tmp_path / f"duckdb-{number}"
        quality = fold(history, tmp_path / "spark-state", spark_out, "spark")
        fold(history, tmp_path / "duckdb-state", duck_out, "duckdb")
        recompute(history, tmp_path / f"full-{number}")
        assert_same_run(spark_out, duck_out)
        assert_same_features(spark_out, tmp_path / f"full-{number}")
        assert_same_state(tmp_path / "spark-state", tmp_path / "duckdb-state")
        assert quality["increment"]["rebuild"] == (number == 0), what
    assert quality["increment"]["objects_removed"] == 1 and quality["rows_read"] == 0


def test_the_engines_take_turns_on_one_state(tmp_path: Path) -> None:
    """DuckDB, then Spark adds, then DuckDB deletes; and the other way round: always a full recompute."""
    for first, second in (("duckdb", "spark"), ("spark", "duckdb")):
        history, state = History(tmp_path / first / "in"), tmp_path / first / "state"
        history.put("a", "a")
        history.put("b", "b")
        fold(history, state, tmp_path / first / "one", first)
        history.put("c", "c")
        added = fold(history, state, tmp_path / first / "two", second)
        assert added["increment"]["objects_added"] == 1 and added["increment"]["objects_unchanged"] == 2
        recompute(history, tmp_path / first / "full-two")
        assert_same_features(tmp_path / first / "two", tmp_path / first / "full-two")
        history.delete("b")
        history.put("a", "a2")
        fold(history, state, tmp_path / first / "three", first)
        recompute(history, tmp_path / first / "full-three")
        assert_same_features(tmp_path / first / "three", tmp_path / first / "full-three")
        assert_same_state(state, tmp_path / first / "full-three" / "state")


def test_a_spark_rebuild_writes_the_duckdb_state_and_counts_spanning_orders(tmp_path: Path) -> None:
    history = History(tmp_path / "in")
    history.put("a", "a")
    history.put("c", "c")
    (tmp_path / "in" / "d.csv").write_text(HEADER + "c1,a1,2024-01-20,1,\n")  # order a1 of c1: in a and in d
    quality = fold(history, tmp_path / "spark-state", tmp_path / "spark", "spark", rebuild=True)
    full = recompute(history, tmp_path / "full")
    assert quality["increment"]["orders_spanning_objects"] == full["increment"]["orders_spanning_objects"] == 1
    assert_same_run(tmp_path / "spark", tmp_path / "full")
    assert_same_state(tmp_path / "spark-state", tmp_path / "full" / "state")


def test_rfm_features_engine_spark_folds_and_stops_on_a_bad_object_as_duckdb_does(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from steps.features.job import main

    history, state = History(tmp_path / "in"), tmp_path / "state"
    history.put("a", "a")
    command = ["--input", str(history.folder), "--state", str(state)]
    assert main(["--engine", "spark", *command, "--output", str(tmp_path / "one")]) == 0
    pointer = (state / CURRENT).read_text()
    capsys.readouterr()  # the first run's log lines
    history.put("b", "b")
    (history.folder / "bad.csv").write_text("customer_id,order_id,timestamp,amount\nc1,x,2024-01-01,1\n"
                                            'c2,"y,2024-01-02,2\nc3,z,2024-01-03,3\n')  # a quote never closed
    errors = []
    for engine in ("spark", "duckdb"):
        assert main(["--engine", engine, *command, "--output", str(tmp_path / engine)]) != 0
        errors.append(capsys.readouterr().err.strip())
    assert errors[0] == errors[1] and errors[0].count("\n") == 0 and "bad.csv" in errors[0]
    assert (state / CURRENT).read_text() == pointer  # the state is unchanged
    (history.folder / "bad.csv").unlink()
    planned = plan_history(str(history.folder), StateStore(str(state)))  # as the pipeline's PlanHistory
    assert main(["--engine", "spark", "--state", str(state), f"--history-fingerprint={planned['fingerprint']}",
                 "--rebuild=true", "--output", str(tmp_path / "two")]) == 0
    quality = json.loads((tmp_path / "two" / paths.QUALITY_FILE).read_text())
    assert quality["increment"]["rebuild"] and quality["history"]["objects"] == 2
    assert read_current(StateStore(str(state))).manifest.history == f"histories/{planned['fingerprint']}.json"
