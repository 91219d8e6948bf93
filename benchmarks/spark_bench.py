"""The Spark engine (local pyspark) against the DuckDB engine on the same input, side by side.

    .venv/bin/python -m benchmarks.spark_bench --rows 10000000 --files 8 --cores 2

Generates ``--rows`` transactions (``benchmarks.features_bench.generate``:
orders of 1.1 lines, 2% returns, a few missing ids, timestamps and exact
duplicates) as ``--files`` Parquet files (the Spark engine reads one file per
task), then runs each engine once on them with ``--cores`` cores: DuckDB with
that many threads, Spark as ``local[<cores>]``. Prints the wall time, the rows
per second per core (what docs/scale.md's cost model starts from) and checks
that both wrote the same ``rfm.parquet`` and ``quality.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks.features_bench import generate
from steps import paths


def split(source: Path, folder: Path, files: int) -> None:
    """``source`` as ``files`` Parquet files of consecutive rows."""
    import duckdb

    con = duckdb.connect()
    rows = con.execute(f"SELECT count(*) FROM '{source}'").fetchall()[0][0]
    per_file = -(-rows // files)
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(files):
        con.execute(f"""COPY (SELECT * FROM '{source}' LIMIT {per_file} OFFSET {number * per_file})
                        TO '{folder / f"part-{number:03d}.parquet"}' (FORMAT parquet)""")


def timed(label: str, action) -> float:
    started = time.perf_counter()
    action()
    seconds = time.perf_counter() - started
    print(f"  {label}: {seconds:.1f} s", flush=True)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--customers", type=int, default=None, help="default rows / 20")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", default=None, help="keep the generated input here (reused when present)")
    args = parser.parse_args(argv)

    from steps.features.compute import run as run_duckdb
    from steps.features.options import FeatureOptions
    from steps.features.spark.engine import run_spark
    from steps.features.spark.session import spark_session

    work = Path(args.workdir or tempfile.mkdtemp(prefix="rfm-spark-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    folder = work / f"input-{args.rows}-{args.files}"
    if not folder.is_dir():
        single = work / f"tx-{args.rows}.parquet"
        print(f"generating {args.rows:,} rows in {args.files} files under {folder}", flush=True)
        generate(single, args.rows, args.customers or max(1, args.rows // 20), messy=True)
        split(single, folder, args.files)
        single.unlink()
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    print(f"{args.rows:,} rows, {args.files} files, {args.cores} cores (a shared, loaded host: compare "
          "the two columns, not the absolute seconds)", flush=True)
    duck_s = timed("duckdb", lambda: run_duckdb(str(folder), out / "duckdb", FeatureOptions(threads=args.cores)))
    start_s = timed("spark session start", lambda: spark_session(f"local[{args.cores}]").range(1).count())
    spark_s = timed("spark", lambda: run_spark(str(folder), out / "spark"))
    same = (pq.read_table(out / "duckdb" / paths.RFM_FILE).equals(pq.read_table(out / "spark" / paths.RFM_FILE))
            and json.loads((out / "duckdb" / paths.QUALITY_FILE).read_text())
            == json.loads((out / "spark" / paths.QUALITY_FILE).read_text()))
    customers = json.loads((out / "duckdb" / paths.QUALITY_FILE).read_text())["customers"]
    print(f"\n{'':<28}{'duckdb':>14}{'spark local[' + str(args.cores) + ']':>18}")
    print(f"{'wall seconds':<28}{duck_s:>14.1f}{spark_s:>18.1f}")
    print(f"{'rows / s / core':<28}{args.rows / duck_s / args.cores:>14,.0f}{args.rows / spark_s / args.cores:>18,.0f}")
    print(f"{'spark / duckdb':<28}{'1.0x':>14}{spark_s / duck_s:>17.1f}x")
    print(f"{'session start (not counted)':<28}{'-':>14}{start_s:>18.1f}")
    print(f"{'customers':<28}{customers:>14,}{customers:>18,}")
    print(f"same rfm.parquet and quality.json: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
