"""``rfm-features``: the ComputeRFM processing entrypoint (and ``rfm features``)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from pathlib import Path

from steps import paths
from steps.cli_support import guarded, setup_logging
from steps.features.formats import (
    ENCODINGS,
    FORMAT_NAMES,
    load_mapping_file,
    parse_column_options,
    parse_mapping_json,
)
from steps.features.options import AUTO, FeatureOptions

DEFAULT_MEMORY_LIMIT = AUTO

log = logging.getLogger("rfm.features")

EXAMPLE = """example:
  rfm features --input data/sample/transactions.csv.gz --output output/features
  rfm features --input sales.csv --output out --column customer_id=Cust --column amount=Total
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``rfm features`` / ``rfm-features``."""
    parser.add_argument("--input", default=paths.PROCESSING_TRANSACTIONS,
                        help="a file, a folder, or an s3:// prefix of CSV, CSV.gz or Parquet files")
    parser.add_argument("--output", default=paths.PROCESSING_FEATURES_OUT,
                        help="folder for rfm.parquet, quality.json and quarantine/")
    parser.add_argument("--transform-output", default=None,
                        help="folder for the batch-transform input CSV (pipeline use)")
    parser.add_argument("--quarantine-output", default=None,
                        help="folder for the quarantined rows (default: OUTPUT/quarantine)")
    parser.add_argument("--format", default="auto", choices=["auto", *FORMAT_NAMES],
                        help="input format; detected from the header by default")
    parser.add_argument("--as-of", default="",
                        help="reference date YYYY-MM-DD (default: the day after the last transaction)")
    parser.add_argument("--column", action="append", default=[], metavar="CANONICAL=SOURCE",
                        help="map a canonical column (customer_id, order_id, event_id, line_id, timestamp, amount, "
                             "quantity, unit_price, email, phone, address, channel) to the file's column; repeatable")
    parser.add_argument("--mapping", default=None, help="YAML file of canonical: source column names")
    parser.add_argument("--column-mapping", default="", metavar="JSON",
                        help='the mapping as JSON, e.g. \'{"customer_id": "Cust"}\' (the ColumnMapping parameter)')
    parser.add_argument("--timezone", default="", metavar="ZONE",
                        help="IANA time zone whose calendar days count, e.g. America/New_York (default UTC)")
    parser.add_argument("--encoding", default=None, type=_encoding, metavar="|".join(ENCODINGS),
                        help="text encoding of CSV files (default UTF-8, or UTF-16 with a byte-order mark; "
                             "the Encoding parameter)")
    parser.add_argument("--memory-limit", default=DEFAULT_MEMORY_LIMIT,
                        help="DuckDB memory limit, e.g. 2GB; past it work spills to disk (default: auto, "
                             "30 bytes an input row, at least 800MB, at most half the memory; with --state "
                             "1GB). With --engine spark: the driver's DuckDB, and with --state also each task's")
    parser.add_argument("--threads", type=int, default=None,
                        help="DuckDB threads (default: all cores). With --engine spark: the driver's DuckDB; "
                             "Spark's own parallelism comes from its master (RFM_SPARK_MASTER or spark-submit)")
    parser.add_argument("--engine", default="duckdb", choices=["duckdb", "spark"],
                        help="duckdb (one machine) or spark (local pyspark, or the cluster of a Spark "
                             "processing job; needs Java 17 and the spark extra; see docs/scale.md)")
    parser.add_argument("--state", default=None,
                        help="folder or s3:// prefix of the incremental state: fold only the files added, "
                             "replaced or removed since it (see docs/history.md)")
    parser.add_argument("--history-fingerprint", default=None,
                        help="with --state: the history PlanHistory recorded (default: list --input now)")
    parser.add_argument("--rebuild", nargs="?", const="true", default="false", type=parse_flag,
                        help="with --state: recompute the state from the whole history")


def _encoding(text: str) -> str | None:
    """``--encoding``: one of :data:`ENCODINGS`; empty (the Encoding parameter's default) means detect."""
    if text == "":
        return None
    if text.lower() not in ENCODINGS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(ENCODINGS)}")
    return text.lower()


def parse_flag(text: str) -> bool:
    """``true``/``false`` (any case; also 1/0, yes/no) as a pipeline Boolean parameter renders it."""
    value = str(text).strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def options_from_args(args: argparse.Namespace) -> FeatureOptions:
    """The run's settings from the command line (the column mapping merged from its three options)."""
    from steps.features.compute import parse_as_of, parse_timezone

    mapping = parse_mapping_json(args.column_mapping, "--column-mapping")
    mapping.update(load_mapping_file(args.mapping) if args.mapping else {})
    mapping.update(parse_column_options(args.column))
    return FeatureOptions(
        transform_output=Path(args.transform_output) if args.transform_output else None,
        quarantine_output=Path(args.quarantine_output) if args.quarantine_output else None,
        input_format=args.format, mapping=mapping, as_of=parse_as_of(args.as_of), encoding=args.encoding,
        timezone=parse_timezone(args.timezone), memory_limit=args.memory_limit, threads=args.threads,
    )


def run_from_args(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    started = time.perf_counter()
    if args.state:
        return _run_incremental(args, options, started)
    with contextlib.ExitStack() as stack:
        aggregate = None
        if getattr(args, "engine", "duckdb") == "spark":  # each file read in a Spark task; the rest is the same
            from steps.features.spark.engine import spark_aggregation

            aggregate = stack.enter_context(spark_aggregation())
        from steps.features.compute import run

        result = run(args.input, Path(args.output), options, aggregate=aggregate)
    quality = result.quality
    log.info(
        "%s format, as of %s: %s rows read, %s used, %s quarantined; %s customers -> %s (%.1f s)",
        quality["input_format"], quality["as_of_date"], f"{quality['rows_read']:,}", f"{quality['rows_used']:,}",
        f"{quality['rows_quarantined']:,}", f"{quality['customers']:,}", args.output, time.perf_counter() - started,
    )
    for reason, count in quality["excluded_by_reason"].items():
        log.info("  excluded    %-24s %s", reason, f"{count:,}")
    for reason, count in quality["quarantined_by_reason"].items():
        log.info("  quarantined %-24s %s", reason, f"{count:,}")
    return 0


def _run_incremental(args: argparse.Namespace, options: FeatureOptions, started: float) -> int:
    from steps.features.fold import incremental_memory_limit, load_history, run_history
    from steps.features.history import list_history
    from steps.features.state import StateStore, history_file

    store = StateStore(args.state)
    if args.history_fingerprint:
        location, objects = load_history(store, args.history_fingerprint)
        history_name = history_file(args.history_fingerprint)
    else:
        location, objects, history_name = args.input, list_history(args.input), None
    with contextlib.ExitStack() as stack:
        reader = None
        if getattr(args, "engine", "duckdb") == "spark":  # each object read in a Spark task; the fold is the same
            from steps.features.spark.contributions import spark_reader

            reader = stack.enter_context(spark_reader(store, incremental_memory_limit(options)))
        folded = run_history(objects, store, Path(args.output), options, location=location, rebuild=args.rebuild,
                             history_name=history_name, reader=reader)
    quality, increment = folded.result.quality, folded.result.quality["increment"]
    log.info(
        "%s: %s objects added, %s replaced, %s removed, %s unchanged; %s rows read; %s customers, state %s "
        "(%.1f s)", "rebuilt" if folded.rebuilt else "folded",
        *(f"{increment[k]:,}" for k in ("objects_added", "objects_replaced", "objects_removed", "objects_unchanged")),
        f"{quality['rows_read']:,}", f"{quality['customers']:,}", folded.generation, time.perf_counter() - started,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rfm-features", description="Compute per-customer RFM features from transactions.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    setup_logging(args.debug)
    return guarded(lambda: run_from_args(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
