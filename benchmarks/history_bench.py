"""Adding one day to a year of daily files: incremental ComputeRFM against a full recompute.

Not a test: run it by hand on a quiet machine.

    .venv/bin/python benchmarks/history_bench.py                                  # 365 x 100,000 rows, 1M customers
    .venv/bin/python benchmarks/history_bench.py --rows-per-day 10000 --customers 100000   # a tenth
    RFM_SPARK_MASTER=local[2] .venv/bin/python benchmarks/history_bench.py --engine spark --days 30 \
        --rows-per-day 20000 --customers 20000 --skip-rebuild                  # the Spark engine (docs/scale.md)

It writes ``--days`` daily Parquet files of ``--rows-per-day`` rows (generic columns
``customer_id, order_id, timestamp, amount``; ~2% returns, some two-line orders; cached in
``--workdir``), folds them into a state (``rfm-features --state``: the first run), adds day
``days + 1`` and then measures, each as its own process (wall time, CPU time, peak resident
memory from ``os.wait4``):

- ``incremental``: ``rfm-features --input DIR --state STATE`` (reads only the new day);
- ``full``: ``rfm-features --input DIR`` (one pass over every file, no state);
- ``rebuild``: ``rfm-features --input DIR --state FRESH --rebuild`` (with ``--rebuild``).

It checks that ``rfm.parquet`` of the incremental run equals the full recompute's, row for row,
and prints the ratio the issue asks for (incremental <= 1/8 of the full recompute's wall time).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

GENERATOR_VERSION = 1


@dataclass
class Measure:
    name: str
    wall: float
    cpu: float
    peak_mb: float


def day_file(path: Path, day: int, rows: int, customers: int) -> None:
    """One day's transactions: ``rows`` rows of random customers, orders unique to the day."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1000 + day)
    orders = rows * 9 // 10
    order_of_row = np.sort(np.concatenate([np.arange(orders), rng.integers(0, orders, rows - orders)]))
    customer_of_order = rng.integers(0, customers, orders)
    customer = customer_of_order[order_of_row]
    amount = np.round(rng.lognormal(3.0, 1.0, rows), 2)
    amount[rng.random(rows) < 0.02] *= -1  # returns
    start = np.datetime64(dt.date(2025, 1, 1) + dt.timedelta(days=day), "s")
    seconds = rng.integers(0, 86_400, rows).astype("timedelta64[s]")
    table = pa.table({
        "customer_id": pa.array(np.char.add("C", np.char.zfill(customer.astype(str), 8))),
        "order_id": pa.array(np.char.add(f"d{day}-", order_of_row.astype(str))),
        "timestamp": pa.array(start + seconds),
        "amount": pa.array(amount),
    })
    pq.write_table(table, path)


def generate(folder: Path, days: int, rows: int, customers: int) -> None:
    stamp = folder / f".generated-v{GENERATOR_VERSION}-{days}-{rows}-{customers}"
    if stamp.exists():
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    for day in range(days):
        day_file(folder / f"day-{day:03d}.parquet", day, rows, customers)
    stamp.touch()
    print(f"generated {days} files of {rows:,} rows in {time.perf_counter() - started:.0f} s", flush=True)


def measure(name: str, command: list[str]) -> Measure:
    """Run ``command`` as its own process; its wall and CPU time and peak memory, printed as they come."""
    import tempfile

    with tempfile.TemporaryFile() as log:  # a file, not a pipe: a chatty run cannot fill it and stall
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status):
            log.seek(0)
            raise SystemExit(f"{name} failed:\n{log.read().decode(errors='replace')[-2000:]}")
    found = Measure(name, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)
    print(f"  {found.name:<30} {found.wall:>8.1f} s wall {found.cpu:>8.1f} s cpu {found.peak_mb:>8.0f} MB peak",
          flush=True)
    return found


def features(*args: str) -> list[str]:
    script = Path(sys.executable).parent / "rfm-features"
    entry = [str(script)] if script.exists() else [sys.executable, "-m", "steps.features.job"]
    return [*entry, *args]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--rows-per-day", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--workdir", default="/tmp/rfm-history-bench")
    parser.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all cores)")
    parser.add_argument("--skip-rebuild", action="store_true", help="do not time --rebuild")
    parser.add_argument("--engine", default="duckdb", choices=["duckdb", "spark"],
                        help="the engine of every run (spark: local pyspark, one JVM per run)")
    args = parser.parse_args()
    work = Path(args.workdir)
    history = work / "history"
    generate(history, args.days, args.rows_per_day, args.customers)
    common = ["--threads", str(args.threads)] if args.threads else []
    common += ["--engine", args.engine]
    new_day = history / f"day-{args.days:03d}.parquet"
    new_day.unlink(missing_ok=True)
    for name in ("state", "fresh", "out-first", "out-incremental", "out-full", "out-rebuild"):
        shutil.rmtree(work / name, ignore_errors=True)
    first = measure("first run (fold every day)",
                    features("--input", str(history), "--state", str(work / "state"),
                             "--output", str(work / "out-first"), *common))
    day_file(new_day, args.days, args.rows_per_day, args.customers)
    rows = [first,
            measure("incremental (day added)", features("--input", str(history), "--state", str(work / "state"),
                                                        "--output", str(work / "out-incremental"), *common)),
            measure("full recompute (no state)", features("--input", str(history),
                                                          "--output", str(work / "out-full"), *common))]
    if not args.skip_rebuild:
        rows.append(measure("--rebuild", features("--input", str(history), "--state", str(work / "fresh"),
                                                  "--output", str(work / "out-rebuild"), "--rebuild", *common)))
    import pandas as pd

    incremental = pd.read_parquet(work / "out-incremental" / "rfm.parquet")
    full = pd.read_parquet(work / "out-full" / "rfm.parquet")
    pd.testing.assert_frame_equal(incremental, full)
    total = (args.days + 1) * args.rows_per_day
    print(f"\nhistory of {args.days + 1} daily files, {total:,} rows, {len(full):,} customers "
          f"(engine: {args.engine}, threads: {args.threads or 'all'})")
    print(f"  {'':<30} {'wall s':>8} {'cpu s':>8} {'peak MB':>8}")
    for row in rows:
        print(f"  {row.name:<30} {row.wall:>8.1f} {row.cpu:>8.1f} {row.peak_mb:>8.0f}")
    ratio = rows[1].wall / rows[2].wall
    print(f"  incremental / full recompute wall time: {ratio:.3f} (target <= 0.125); "
          f"rfm.parquet identical: yes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
