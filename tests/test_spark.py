"""The Spark engine gives the DuckDB engine's artifacts, row for row (docs/scale.md).

Every test runs both engines on one input and compares ``rfm.parquet`` (schema
and rows), ``quality.json`` and ``quarantine/``. One local SparkSession
(``local[2]``) serves the whole test session; inputs are small and hypothesis
draws few examples, since each Spark run costs seconds.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steps import paths
from steps.errors import RFMError
from steps.features.compute import run as run_duckdb
from steps.features.options import FeatureOptions
from steps.features.quarantine import MALFORMED_FILE, ROWS_FILE

pytest.importorskip("pyspark", reason="the spark extra is not installed (pip install -e '.[spark]')")
from steps.features.spark.session import has_java  # noqa: E402  (after the skip: the spark extra is there)

if not has_java():  # the same test as the engine's: JAVA_HOME or java on the PATH
    pytest.skip("no Java runtime: install openjdk-17-jre-headless (.ci/run does)", allow_module_level=True)

from steps.features.spark.engine import run_spark  # noqa: E402  (after the skips: needs pyspark)

# A Spark run costs seconds (still part of make test); the session's one local Spark (tests/conftest.py).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("spark")]
DATA = Path(__file__).parent / "data"
AS_OF = dt.date(2026, 11, 1)


def both(location: Path | str, out: Path, **options) -> tuple[Path, Path]:
    """Run both engines on ``location``; return their output folders (after checking they agree)."""
    duck, spark = out / "duckdb", out / "spark"
    run_duckdb(str(location), duck, FeatureOptions(transform_output=duck / "transform", **options))
    run_spark(str(location), spark, FeatureOptions(transform_output=spark / "transform", **options))
    assert_same_artifacts(duck, spark)
    return duck, spark


def assert_same_artifacts(duck: Path, spark: Path) -> None:
    """``rfm.parquet`` (types and rows, in order), ``quality.json``, quarantine and transform files are equal."""
    left, right = pq.read_table(duck / paths.RFM_FILE), pq.read_table(spark / paths.RFM_FILE)
    assert left.schema == right.schema
    assert left.to_pylist() == right.to_pylist()
    assert json.loads((duck / paths.QUALITY_FILE).read_text()) == json.loads((spark / paths.QUALITY_FILE).read_text())
    for name in (ROWS_FILE, MALFORMED_FILE):
        here, there = duck / paths.QUARANTINE_DIR / name, spark / paths.QUARANTINE_DIR / name
        assert here.exists() == there.exists(), name
        if here.exists():
            a, b = pq.read_table(here), pq.read_table(there)
            assert a.schema == b.schema
            assert a.to_pylist() == b.to_pylist()
    names = sorted(p.name for p in (duck / "transform").glob(paths.TRANSFORM_INPUT_GLOB))
    assert names and names == sorted(p.name for p in (spark / "transform").glob(paths.TRANSFORM_INPUT_GLOB))
    for name in names:
        assert (duck / "transform" / name).read_bytes() == (spark / "transform" / name).read_bytes()


# Every format fixture, with the options its regression test in test_features.py uses.
FIXTURES = {
    "cdnow_with_header.txt": {},
    "identical_rows_no_order_id.csv": {},
    "identical_rows_with_order_id.csv": {},
    "guidance_with_cart_events.csv": {},
    "grocery_utc_times.csv": {"timezone": "America/Chicago"},
    "float_ids_from_pandas.csv": {},
    "net_spend_not_positive.csv": {},
    "mapped_amount_with_quantity.csv": {
        "mapping": {"customer_id": "Cust", "order_id": "Invoice Ref", "timestamp": "When", "amount": "Total"}},
}


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_format_fixtures(tmp_path: Path, name: str) -> None:
    both(DATA / "real" / name, tmp_path, as_of=AS_OF, **FIXTURES[name])


def test_a_cp1252_file_is_read_through_its_utf8_copy_on_both_engines(tmp_path: Path) -> None:
    source = tmp_path / "windows.csv"
    source.write_bytes(("customer_id,order_id,timestamp,amount\n\u201cJos\u00e9\u201d,1,2024-01-02,10\n"
                        "\u20acuro,2,2024-01-03,5\nbad\u2019,3,never,1\n").encode("cp1252"))
    duck, _ = both(source, tmp_path / "out", as_of=AS_OF, encoding="cp1252")
    assert set(pq.read_table(duck / paths.RFM_FILE)["customer_id"].to_pylist()) == {
        "\u20acuro", "\u201cJos\u00e9\u201d"}


def test_a_folder_mixing_files_with_and_without_ids(tmp_path: Path) -> None:
    """Each set of identical rows is judged by its own id, on both engines (test_accounting.py)."""
    from tests.test_accounting import MIXED_IDS

    folder = tmp_path / "in"
    folder.mkdir()
    for name, text in MIXED_IDS.items():
        (folder / name).write_text(text)
    both(folder, tmp_path / "out", as_of=AS_OF)


def test_the_sample_and_a_folder_of_files(tmp_path: Path) -> None:
    """The bundled sample (guidance, quarantined rows) and the same rows split over CSV and Parquet files."""
    sample = Path(__file__).resolve().parents[1] / "data" / "sample" / "transactions.csv.gz"
    folder = tmp_path / "in"
    folder.mkdir()
    import duckdb

    con = duckdb.connect()
    con.execute(f"CREATE TABLE t AS SELECT * FROM read_csv('{sample}', all_varchar=true) LIMIT 6000")
    con.execute(f"COPY (SELECT * FROM t LIMIT 3000) TO '{folder / 'a.csv'}' (HEADER)")
    con.execute(f"COPY (SELECT * FROM t OFFSET 3000) TO '{folder / 'b.csv'}' (HEADER)")
    (folder / "_SUCCESS").write_text("")
    both(folder, tmp_path / "folder")


@pytest.mark.parametrize("name", sorted(p.name for p in (DATA / "bad").iterdir() if p.name != "README.md"))
def test_bad_input_is_the_same_one_line_error(tmp_path: Path, name: str) -> None:
    errors = []
    for engine in (run_duckdb, run_spark):
        with pytest.raises(RFMError) as caught:
            engine(str(DATA / "bad" / name), tmp_path / engine.__name__)
        errors.append(str(caught.value))
    assert errors[0] == errors[1]
    assert "\n" not in errors[0]


@pytest.mark.parametrize(("option", "message"), [
    (["--memory-limit", "10KB"], "DuckDB ran out of memory under the 10KB limit"),
    (["--threads", "0"], "--threads: 0 is not a number of threads"),
])
def test_memory_limit_and_threads_are_the_drivers_duckdb_settings(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str], message: str) -> None:
    """``--memory-limit`` and ``--threads`` reach the Spark engine's driver DuckDB as they reach the DuckDB engine."""
    from steps.features.job import main as features_main

    source = tmp_path / "tx.csv"
    source.write_text("customer_id,order_id,timestamp,amount\na,1,2026-01-02,10\nb,2,2026-01-03,5\n")
    for engine in ("duckdb", "spark"):
        code = features_main(["--input", str(source), "--output", str(tmp_path / engine), "--engine", engine,
                              *option])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and message in err[0], (engine, err)


def test_an_automatic_memory_limit_grows_on_the_spark_engine_too(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver DuckDB running out under the automatic limit doubles it and runs again, as on DuckDB."""
    from tests.test_features import out_of_memory_once

    limits = out_of_memory_once(monkeypatch)
    source = tmp_path / "tx.csv"
    source.write_text("customer_id,order_id,timestamp,amount\na,1,2026-01-02,10\nb,2,2026-01-03,5\na,3,2026-02-01,7\n")
    result = run_spark(str(source), tmp_path / "spark", FeatureOptions(as_of=AS_OF))
    assert len(limits) == 2 and limits[0] != limits[1]
    assert result.quality == run_duckdb(str(source), tmp_path / "duckdb", FeatureOptions(as_of=AS_OF)).quality


def test_malformed_lines_and_duplicates_are_quarantined_alike(tmp_path: Path) -> None:
    source = tmp_path / "tx.csv"
    source.write_text(
        "customer_id,order_id,timestamp,amount,email\n"
        "a,1,2026-01-02T10:00:00+02:00,10.5,a@x\n"
        "a,1,2026-01-02T10:00:00+02:00,10.5,a@x\n"   # exact duplicate: quarantined once
        "b,2,2026-01-03,5,x,extra\n"                 # malformed line (too many fields)
        "b,3,2026-01-04,-4,\n"                        # only a return: return_without_purchase
        "c,4,not a date,3,\n"
        ",5,2026-01-05,3,\n"
        "d,6,2026-01-06,7,d@x\n"
        "d,7,2026-01-07,0,d@y\n"
    )
    both(source, tmp_path / "out", as_of=AS_OF)


# Hypothesis: ties, returns, duplicates, offsets, missing values, with and without an order id.
_DAYS = st.dates(dt.date(2025, 1, 1), dt.date(2026, 10, 30))
_OFFSETS = st.sampled_from(["", "Z", "+05:30", "-08:00"])
_ROW = st.tuples(
    st.sampled_from(["c1", "c2", "c3", "c4", " ", ""]),        # customer (blank ones are quarantined)
    st.integers(1, 6),                                          # order id (few: shared orders and ties)
    _DAYS, st.sampled_from(["00:30", "12:00", "23:45"]), _OFFSETS,
    st.sampled_from(["10", "10", "5.5", "-3", "0", "abc", ""]),  # ties, returns, unparseable amounts
)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_ROW, min_size=1, max_size=25), with_order=st.booleans(), copies=st.integers(0, 3))
def test_generated_transactions(tmp_path: Path, rows: list, with_order: bool, copies: int) -> None:
    rows = rows + rows[:copies]  # exact duplicates
    out = tmp_path / f"run-{abs(hash((tuple(rows), with_order)))}"
    out.mkdir()
    source = out / "tx.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["customer_id", *(["order_id"] if with_order else []), "timestamp", "amount"])
        for customer, order, day, time, offset, amount in rows:
            writer.writerow([customer, *([order] if with_order else []), f"{day}T{time}:00{offset}", amount])
    try:
        run_duckdb(str(source), out / "probe", FeatureOptions(as_of=AS_OF))
    except RFMError as error:  # no usable purchase at all: both engines must say so alike
        with pytest.raises(RFMError) as caught:
            run_spark(str(source), out / "spark", FeatureOptions(as_of=AS_OF))
        assert str(caught.value) == str(error)
        return
    both(source, out, as_of=AS_OF, timezone="Asia/Kolkata" if copies == 2 else None)


def test_a_task_on_another_instance_downloads_its_object(tmp_path: Path, fake_aws: None) -> None:
    """The driver's download is not on the other instances: the task fetches the S3 object itself."""
    import boto3
    from moto import mock_aws

    from steps.features.formats import resolve_format
    from steps.features.sources import sniff
    from steps.features.spark.tasks import local_copy
    from steps.features.transactions import CanonicalSource

    data = DATA / "real" / "float_ids_from_pandas.csv"
    sniffed = sniff(data)
    fmt = resolve_format(sniffed.header, sniffed.first_line, "auto", {}, str(data))
    elsewhere = CanonicalSource(
        type(sniffed)(**{**sniffed.__dict__, "path": tmp_path / "gone" / data.name, "origin": "s3://bucket/in/x.csv"}),
        fmt, 0)
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="bucket")
        boto3.client("s3").put_object(Bucket="bucket", Key="in/x.csv", Body=data.read_bytes())
        with local_copy(elsewhere) as local:
            assert local.source.path.read_bytes() == data.read_bytes()
            assert local.source.name == "s3://bucket/in/x.csv"
        assert not local.source.path.exists()  # removed after the task
        # An object gone since the driver listed it: one line, carried to the driver as the file's error.
        boto3.client("s3").delete_object(Bucket="bucket", Key="in/x.csv")
        from steps.features.spark.tasks import ERROR_SENTINEL, FileTask, canonical_batches, raise_payload

        (batch,) = list(canonical_batches(FileTask(elsewhere, AS_OF, (), "x")))
        assert batch.column("reason").to_pylist() == [ERROR_SENTINEL]
        with pytest.raises(RFMError, match=r"^s3://bucket/in/x.csv: a Spark task cannot download the object"):
            raise_payload(batch.column("side")[0].as_py())
    here = CanonicalSource(sniffed, fmt, 0)
    with local_copy(here) as same:
        assert same is here


def test_a_task_on_another_instance_makes_its_own_utf8_copy(tmp_path: Path, fake_aws: None) -> None:
    """The driver's UTF-8 copy of a cp1252 object is not there either: the task downloads and decodes it."""
    import boto3
    from moto import mock_aws

    from steps.features.formats import resolve_format
    from steps.features.sources import sniff
    from steps.features.spark.tasks import local_copy
    from steps.features.transactions import CanonicalSource

    original = "customer_id,timestamp,amount\n\u20acuro,2024-01-02,10\n".encode("cp1252")
    data = tmp_path / "windows.csv.gz"
    data.write_bytes(gzip.compress(original))
    sniffed = sniff(data, "cp1252", "s3://bucket/in/windows.csv.gz", workdir=tmp_path / "driver")
    assert sniffed.transcoded_from == "cp1252" and sniffed.path.parent == tmp_path / "driver" / "utf8"
    fmt = resolve_format(sniffed.header, sniffed.first_line, "auto", {}, str(data))
    elsewhere = CanonicalSource(type(sniffed)(**{**sniffed.__dict__, "path": tmp_path / "gone" / "x.csv"}), fmt, 0)
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="bucket")
        boto3.client("s3").put_object(Bucket="bucket", Key="in/windows.csv.gz", Body=data.read_bytes())
        with local_copy(elsewhere) as local:
            assert local.source.path.read_text(encoding="utf-8") == original.decode("cp1252")
