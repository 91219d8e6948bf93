"""Speed and memory of the RFM features step against plain pandas, polars and DuckDB.

Not a test: run it by hand on a quiet machine.

    .venv/bin/python benchmarks/features_bench.py                   # 10M rows, three order shapes
    .venv/bin/python benchmarks/features_bench.py --shapes 2.5      # one shape (lines per order)
    .venv/bin/python benchmarks/features_bench.py --messy           # with 0.15% rows to quarantine
    .venv/bin/python benchmarks/features_bench.py --rows 100000000 --shapes 1.1 --tools ours

For each shape (about 1.1, 2.5 and 20 lines per order) it generates ``--rows``
transactions as Parquet (generic columns ``customer_id, order_id, timestamp,
amount``; cached in ``--workdir``) of ``--rows / 10`` customers, or
``--rows / 40`` for 20 lines per order (which leaves 1 order in 20 rows), then
runs each tool as its own process and measures that process's wall time, CPU
time and peak resident memory (``os.wait4``):

- ``ours``: the ``rfm-features`` entrypoint (classification, quarantine,
  quality.json, scores, segments, sorted rfm.parquet);
- ``pandas``, ``polars``, ``duckdb``: what one would write by hand for the
  same work: exact-duplicate removal, then first and last purchase day,
  distinct purchase orders, net spend, recency, average order value, 1-5
  scores by rank (``ceil(5 * cume_dist)``: equal values get equal scores, as
  ours do), sorted by customer id (as ``rfm.parquet`` is), written to
  Parquet. ``--references aggregate`` leaves out the average, the scores and
  the sort (the references of the first measurements).

The results are checked to agree (customers, total frequency, total spend).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

GENERATOR_VERSION = 4
SHAPES = (1.1, 2.5, 20.0)  # lines per order

PANDAS = """
import sys, numpy as np, pandas as pd
source, target, scores = sys.argv[1], sys.argv[2], sys.argv[3] == "scores"
frame = pd.read_parquet(source, columns=["customer_id", "order_id", "timestamp", "amount"]).drop_duplicates()
frame["day"] = frame["timestamp"].dt.normalize()
purchases = frame[frame["amount"] >= 0]
customers = purchases.groupby("customer_id").agg(
    first_purchase=("day", "min"), last_purchase=("day", "max"), frequency=("order_id", "nunique"))
customers["monetary"] = frame.groupby("customer_id")["amount"].sum()
as_of = frame["day"].max() + pd.Timedelta(days=1)
customers["recency_days"] = (as_of - customers["last_purchase"]).dt.days
if scores:
    customers["avg_order_value"] = (customers["monetary"] / customers["frequency"]).round(4)
    for score, column, ascending in (("r_score", "recency_days", False), ("f_score", "frequency", True),
                                     ("m_score", "monetary", True)):
        ranks = customers[column].rank(method="max", ascending=ascending, pct=True)
        customers[score] = np.ceil(ranks * 5).astype("int8")
    customers = customers.sort_index()
customers.reset_index().to_parquet(target, index=False)
"""

POLARS = """
import sys, polars as pl
source, target, scores = sys.argv[1], sys.argv[2], sys.argv[3] == "scores"
day, purchase = pl.col("timestamp").dt.date(), pl.col("amount") >= 0
customers = (
    pl.scan_parquet(source)
    .unique()
    .group_by("customer_id")
    .agg(first_purchase=day.filter(purchase).min(), last_purchase=day.filter(purchase).max(),
         frequency=pl.col("order_id").filter(purchase).n_unique(), monetary=pl.col("amount").sum(),
         last_day=day.max())
    .with_columns(recency_days=(pl.col("last_day").max() + pl.duration(days=1)
                                - pl.col("last_purchase")).dt.total_days())
    .drop("last_day"))
if scores:
    def score(column, descending=False):
        return (pl.col(column).rank("max", descending=descending) * 5 / pl.len()).ceil().cast(pl.Int8)
    customers = (customers
                 .with_columns(avg_order_value=(pl.col("monetary") / pl.col("frequency")).round(4),
                               r_score=score("recency_days", descending=True), f_score=score("frequency"),
                               m_score=score("monetary"))
                 .sort("customer_id"))
customers.sink_parquet(target)
"""

DUCKDB = """
import sys, duckdb
source, target, scores = sys.argv[1], sys.argv[2], sys.argv[3] == "scores"
features = f'''
    WITH customers AS (
        SELECT customer_id,
               min(CAST(timestamp AS DATE)) FILTER (WHERE amount >= 0) AS first_purchase,
               max(CAST(timestamp AS DATE)) FILTER (WHERE amount >= 0) AS last_purchase,
               count(DISTINCT order_id) FILTER (WHERE amount >= 0) AS frequency,
               sum(amount) AS monetary, max(CAST(timestamp AS DATE)) AS last_day
        FROM (SELECT DISTINCT * FROM read_parquet('{source}')) GROUP BY customer_id)
    SELECT * EXCLUDE (last_day),
           date_diff('day', last_purchase, (SELECT max(last_day) FROM customers) + 1) AS recency_days
    FROM customers'''
if scores:
    features = f'''
        SELECT *, round(monetary / frequency, 4) AS avg_order_value,
               CAST(ceil(5 * cume_dist() OVER (ORDER BY recency_days DESC)) AS TINYINT) AS r_score,
               CAST(ceil(5 * cume_dist() OVER (ORDER BY frequency)) AS TINYINT) AS f_score,
               CAST(ceil(5 * cume_dist() OVER (ORDER BY monetary)) AS TINYINT) AS m_score
        FROM ({features}) ORDER BY customer_id'''
duckdb.sql(f"COPY ({features}) TO '{target}' (FORMAT parquet)")
"""

PLAIN = {"pandas": PANDAS, "polars": POLARS, "duckdb": DUCKDB}
TOOLS = ("ours", "duckdb", "polars", "pandas")


@dataclass
class Measure:
    """One process: wall and CPU seconds, peak resident memory in MB."""

    tool: str
    wall: float
    cpu: float
    peak_mb: float


def generate(path: Path, rows: int, customers: int, messy: bool, lines_per_order: float = 1.1) -> None:
    """Write ``rows`` transactions of ``customers`` customers to ``path`` (Parquet), in time order.

    Orders have ``lines_per_order`` rows on average (at 1.1 about 10% of
    orders have two rows; the lines of an order have different amounts, so no
    row is an exact duplicate) and 2% of orders are returns (negative
    amounts). Every customer has at least one purchase. With ``messy``, 0.05%
    of rows lack a customer id, 0.05% have no timestamp and 0.05% are exact
    duplicates of another row.
    """
    import duckdb

    con = duckdb.connect()
    con.execute("SET enable_progress_bar=false")
    ratio = round(1 / lines_per_order, 6)  # orders per row
    orders = int(rows * ratio) + 1
    messy_cols = (
        "CASE WHEN hash(i, 'noid') % 2000 = 0 THEN NULL ELSE customer_id END AS customer_id, order_id, "
        "CASE WHEN hash(i, 'nots') % 2000 = 0 THEN NULL ELSE timestamp END AS timestamp, amount"
    )
    tmp = path.with_suffix(".tmp")
    con.execute(f"""
        COPY (
            WITH base AS (
                SELECT i, CAST(floor(i * {ratio}) AS BIGINT) AS o FROM range({rows}) t(i)
            ),
            tx AS (
                SELECT i, o,
                       'C' || lpad(CAST(CASE WHEN o < {customers} THEN o ELSE CAST(floor(
                           {customers} * pow((hash(o, 'c') % 1000003) / 1000003.0, 1.6)) AS BIGINT)
                       END AS VARCHAR), 8, '0') AS customer_id,
                       'O' || lpad(CAST(o AS VARCHAR), 10, '0') AS order_id,
                       TIMESTAMP '2023-01-01' + to_microseconds(CAST(o * (730.0 * 86400e6 / {orders})
                           + hash(o, 't') % 3600000000 AS BIGINT)) AS timestamp,
                       CASE WHEN o >= {customers} AND hash(o, 'r') % 50 = 0 THEN -1 ELSE 1 END
                           * (1 + ((hash(o, 'a') % 15000) * 2 + i - CAST(ceil(o / {ratio}) AS BIGINT)) / 100.0)
                           AS amount
                FROM base
            )
            SELECT {messy_cols if messy else "customer_id, order_id, timestamp, amount"} FROM (
                SELECT * FROM tx
                {"UNION ALL SELECT * FROM tx WHERE hash(i, 'dup') % 2000 = 0" if messy else ""}
            ) ORDER BY i
        ) TO '{tmp}' (FORMAT parquet)""")
    tmp.rename(path)


def run_measured(tool: str, command: list[str]) -> Measure:
    """Run ``command`` as its own process; its wall time, CPU time and peak RSS."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{tool} failed ({process.returncode}):\n{stderr[-2000:]}")
    return Measure(tool, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def command_for(
    tool: str, source: Path, out: Path, ours_args: list[str], references: str = "scores"
) -> list[str]:
    if tool == "ours":
        script = Path(sys.executable).parent / "rfm-features"
        entry = [str(script)] if script.exists() else [sys.executable, "-m", "steps.features.job"]
        return [*entry, "--input", str(source), "--output", str(out / "ours"), *ours_args]
    return [sys.executable, "-c", PLAIN[tool], str(source), str(out / f"{tool}.parquet"), references]


def check_agreement(out: Path, tools: list[str]) -> list[str]:
    """Customers, total frequency and total spend of every tool's output (one line each)."""
    import duckdb

    lines = []
    for tool in tools:
        target = out / "ours" / "rfm.parquet" if tool == "ours" else out / f"{tool}.parquet"
        customers, frequency, monetary, recency = (
            duckdb.connect()
            .execute(
                f"SELECT count(*), sum(frequency), round(sum(monetary), 2), sum(recency_days) FROM '{target}'"
            )
            .fetchone()
        )
        lines.append(
            f"{tool:>7}: {customers:,} customers, frequency {frequency:,}, monetary {monetary:,.2f}, "
            f"recency {recency:,}"
        )
    return lines


def report(measures: dict[str, list[Measure]]) -> str:
    """The side-by-side table, with ratios and the targets."""
    best = {tool: min(m.wall for m in ms) for tool, ms in measures.items()}
    plain_fast = min((best[t] for t in ("polars", "duckdb") if t in best), default=None)
    header = (f"{'tool':>7} {'wall s':>8} {'(median)':>9} {'CPU s':>7} {'peak MB':>8} "
              f"{'vs polars/duckdb':>17} {'vs pandas':>10}")
    lines = [header, "-" * len(header)]
    for tool, ms in measures.items():
        wall = best[tool]
        median = statistics.median(m.wall for m in ms)
        cpu = min(m.cpu for m in ms)
        peak = max(m.peak_mb for m in ms)
        ratio = f"{wall / plain_fast:.2f}x" if plain_fast else "-"
        faster = f"{best['pandas'] / wall:.1f}x faster" if "pandas" in best else "-"
        lines.append(f"{tool:>7} {wall:8.2f} {median:9.2f} {cpu:7.2f} {peak:8.0f} {ratio:>17} {faster:>10}")
    if "ours" in best:
        lines.append("")
        ours_peak = max(m.peak_mb for m in measures["ours"])
        if plain_fast:
            lines.append(
                f"target: ours <= 1.2x the faster of polars/duckdb: {best['ours'] / plain_fast:.2f}x"
            )
        if "pandas" in best:
            lines.append(f"target: ours >= 3x faster than pandas: {best['pandas'] / best['ours']:.1f}x")
        lines.append(f"target: peak memory of ours: {ours_peak:.0f} MB")
    return "\n".join(lines)


def customers_for(rows: int, lines_per_order: float, given: int | None) -> int:
    """Customers of a shape: ``rows / 10``, or ``rows / 40`` at 20 lines per order (2 orders each)."""
    if given:
        return given
    return max(1, rows // 40) if lines_per_order >= 10 else max(1, rows // 10)


def run_shape(args: argparse.Namespace, tools: list[str], lines_per_order: float) -> None:
    """Generate (or reuse) one shape's data, run every tool ``--repeat`` times interleaved, print the table."""
    customers = customers_for(args.rows, lines_per_order, args.customers)
    source = args.workdir / (
        f"tx-{args.rows}-{customers}-{lines_per_order:g}lpo{'-messy' if args.messy else ''}"
        f"-v{GENERATOR_VERSION}.parquet"
    )
    if not source.exists():
        # In a child process: a forked child's peak memory starts at its parent's.
        print(f"generating {args.rows:,} transactions of {customers:,} customers, {lines_per_order:g} lines "
              f"per order -> {source}", flush=True)
        started = time.perf_counter()
        generate_args = ["--rows", str(args.rows), "--customers", str(customers), "--workdir", str(args.workdir),
                         "--shapes", f"{lines_per_order:g}", *(["--messy"] if args.messy else [])]
        subprocess.run([sys.executable, __file__, *generate_args, "--generate-only"], check=True)
        print(f"  {time.perf_counter() - started:.1f} s, {source.stat().st_size / 1e6:.0f} MB", flush=True)
    out = args.workdir / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    ours_args = args.ours_args.split()
    measures: dict[str, list[Measure]] = {tool: [] for tool in tools}
    for round_no in range(args.repeat):
        for tool in tools:
            measure = run_measured(tool, command_for(tool, source, out, ours_args, args.references))
            measures[tool].append(measure)
            print(
                f"  run {round_no + 1}: {tool:>7} {measure.wall:7.2f} s wall {measure.cpu:7.2f} s CPU "
                f"{measure.peak_mb:7.0f} MB",
                flush=True,
            )
    print(
        f"\n{args.rows:,} transactions, {customers:,} customers, about {lines_per_order:g} lines per order, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, references: {args.references}\n"
    )
    print(report(measures))
    print("\nresults:")
    print("\n".join(check_agreement(out, tools)))
    print(flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--customers", type=int, default=None,
                        help="default rows / 10 (rows / 40 at 20 lines per order)")
    parser.add_argument("--shapes", default=",".join(f"{s:g}" for s in SHAPES),
                        help="comma-separated lines per order (default 1.1,2.5,20)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/rfm-features-bench"))
    parser.add_argument("--messy", action="store_true", help="add rows to quarantine and duplicates")
    parser.add_argument(
        "--tools",
        default=None,
        help="comma-separated subset of ours,duckdb,polars,pandas (default: all; only ours above 20M rows)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per tool, interleaved; the best is reported"
    )
    parser.add_argument(
        "--references", choices=["scores", "aggregate"], default="scores",
        help="what the plain references do: the same work as ours (average order value, scores, output "
             "sorted by customer; default) or only the aggregation",
    )
    parser.add_argument("--ours-args", default="", help="extra rfm-features options, e.g. --memory-limit=3GB")
    parser.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    shapes = [float(s) for s in args.shapes.split(",")]
    default_tools = TOOLS if args.rows <= 20_000_000 else ("ours",)
    tools = [t.strip() for t in args.tools.split(",")] if args.tools else list(default_tools)
    unknown = set(tools) - set(TOOLS)
    if unknown:
        parser.error(f"unknown tools: {', '.join(sorted(unknown))}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.generate_only:
        shape = shapes[0]
        customers = customers_for(args.rows, shape, args.customers)
        source = args.workdir / (
            f"tx-{args.rows}-{customers}-{shape:g}lpo{'-messy' if args.messy else ''}-v{GENERATOR_VERSION}.parquet"
        )
        generate(source, args.rows, customers, args.messy, shape)
        return 0
    for shape in shapes:
        run_shape(args, tools, shape)
    return 0


if __name__ == "__main__":
    sys.exit(main())
