"""``rfm``: the project's command line (sample data, features, local pipeline runs, results)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from pipeline.naming import MODEL_PACKAGE_GROUP_NAME
from pipeline.parameters import parameters_help
from steps import package_metadata
from steps.cli_support import guarded, setup_logging
from steps.errors import PipelineError, first_line

# Options other commands have that run-local takes as pipeline parameters: the hint names the parameter.
RUN_LOCAL_HINTS = {"--as-of": "AsOfDate=YYYY-MM-DD", "--format": "InputFormat=guidance",
                   "--num-clusters": "NumClusters=5", "--seed": "RandomSeed=3", "--random-seed": "RandomSeed=3",
                   "--random-state": "RandomSeed=3", "--currency": "Currency=EUR",
                   "--approval-status": "ModelApprovalStatus=Approved", "--min-silhouette": "MinSilhouette=0.2"}

EPILOG = """examples:
  rfm sample --customers 5000 --seed 42 --output transactions.csv.gz
  rfm features --input transactions.csv.gz --output output/features
  rfm run-local --input data/sample/transactions.csv.gz --param ModelApprovalStatus=Approved
  rfm run-local --input data/sample/transactions.csv.gz   # registers, waits for approval
  rfm approve                       # approve the pending package: publishes its segments
  rfm run-local --input data/sample/transactions.csv.gz --param ModelApprovalStatus=Approved \\
      --destination pinpoint,customer-profiles   # export to local stand-ins of those APIs
  rfm segments                      # the segment table of the last local run
  rfm segments --changes            # who entered, left or moved segment since the last publish
  rfm show 0000123                  # one customer's scores, segment and cluster
"""


def _cmd_sample(args: argparse.Namespace) -> int:
    from steps.sample.generate import write_sample

    started = time.perf_counter()
    rows = write_sample(args.output, args.customers, args.seed)
    print(f"wrote {rows} transactions of {args.customers} customers to "
          f"{args.output} ({time.perf_counter() - started:.1f} s)")
    return 0


def _cmd_features(args: argparse.Namespace) -> int:
    from steps.features.job import run_from_args

    return run_from_args(args)


def check_destination(value: str) -> str:
    """``--destination`` checked by the export's own rule, in the option's name (not EXPORT_DESTINATIONS)."""
    from lambdas.export.config import DESTINATIONS, parse_destinations

    try:
        parse_destinations(value)
    except PipelineError as error:
        raise PipelineError(error.what, "--destination",
                            f"use {', '.join(DESTINATIONS)} or a comma-separated mix, e.g. s3,pinpoint") from None
    return value


def _cmd_run_local(args: argparse.Namespace) -> int:
    from pipeline.local.progress import StepReporter
    from pipeline.local.run_local import export_destinations, parse_params, run_local
    from pipeline.local.summary import print_summary

    params = parse_params(args.param)
    check_destination(args.destination)
    if args.keep < 1:
        raise PipelineError(f"--keep {args.keep} keeps nothing", "--keep", "keep at least 1 execution (default 5)")
    params.update(_feature_params(args))
    if args.rebuild:
        params["Rebuild"] = "true"
    print(f"running the pipeline locally on {args.input} -> {args.output}", flush=True)
    started = time.perf_counter()
    reporter = StepReporter()
    try:
        with export_destinations(args.destination, Path(args.output)):
            result = run_local(args.input, Path(args.output), params, on_step=reporter, keep=args.keep,
                               feature_engine=args.engine)
    finally:
        reporter.stop()
    elapsed = time.perf_counter() - started
    if result.status != "Succeeded":
        print(f"execution {result.execution_id} failed after {elapsed:.1f} s", file=sys.stderr)
        print(f"error: {result.failure}", file=sys.stderr)
        return 1
    print(f"execution {result.execution_id} succeeded in {elapsed:.1f} s")
    print_summary(Path(args.output), result)
    return 0


def _feature_params(args: argparse.Namespace) -> dict[str, str]:
    """``--column`` / ``--mapping`` / ``--timezone`` / ``--encoding`` of run-local as the ColumnMapping, Timezone
    and Encoding parameters."""
    import json

    from pipeline.local.run_local import parse_params
    from steps.features.formats import load_mapping_file, parse_column_options, parse_mapping_json

    params: dict[str, str] = {}
    if args.mapping or args.column:
        mapping = parse_mapping_json(parse_params(args.param).get("ColumnMapping"), "--param ColumnMapping")
        mapping.update(load_mapping_file(args.mapping) if args.mapping else {})
        mapping.update(parse_column_options(args.column))
        params["ColumnMapping"] = json.dumps(mapping, sort_keys=True)
    if args.timezone:
        params["Timezone"] = args.timezone
    if args.encoding:
        params["Encoding"] = args.encoding
    return params


def _cmd_approve(args: argparse.Namespace) -> int:
    status = "Rejected" if args.reject else "Approved"
    if args.sagemaker:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

        from pipeline.local.approval import approve_sagemaker

        try:
            client = boto3.client("sagemaker", region_name=args.region) if args.region else boto3.client("sagemaker")
            result = approve_sagemaker(client, args.package, args.group, status)
        except NoRegionError:
            raise PipelineError("no AWS region", "rfm approve --sagemaker",
                                "Pass --region, or set AWS_REGION / a profile's region") from None
        except NoCredentialsError:
            raise PipelineError("no AWS credentials", "rfm approve --sagemaker",
                                "Configure credentials (aws configure, AWS_PROFILE, or an instance role)") from None
        except (BotoCoreError, ClientError) as error:
            raise PipelineError(f"the SageMaker call failed: {first_line(error)}", "rfm approve --sagemaker",
                                "Check the package ARN, --group, --region and your permissions") from None
        print(f"{result['model_package_arn']} is {status} in SageMaker's model registry.")
        if result["report"]:
            print(f"its report (the one to review): {result['report']}")
        else:
            print(f"its report: none named (no {package_metadata.REPORT_URI} in the package's metadata: "
                  "registered by an older version of the pipeline)")
        if status == "Approved":
            print("The approval rule starts the publish pipeline; follow it in Studio (Pipelines).")
        return 0
    from pipeline.local.approval import approve_local, newer_published, waiting_packages
    from pipeline.local.progress import StepReporter
    from pipeline.local.registry import LocalRegistry
    from pipeline.local.run_local import export_destinations
    from pipeline.local.summary import print_segment_table
    from steps import paths

    check_destination(args.destination)
    registry = LocalRegistry(Path(args.output) / paths.REGISTRY_FILE)
    if args.list:
        return _list_packages(Path(args.output), registry)
    chosen = args.package
    if chosen is None:
        waiting = waiting_packages(registry)
        chosen = waiting[-1]["ModelPackageArn"] if waiting else None
        unpublished = [p for p in waiting if p["ModelApprovalStatus"] == "Approved"]
        if unpublished:
            print("approved but never published (a run stopped after RegisterSegmenter):")
            for package in unpublished:
                print(f"  {package['ModelPackageArn']}  registered {package['CreationTime']}")
        if waiting:
            print(f"{'rejecting' if args.reject else 'approving'} the newest: {chosen}")
    newer = newer_published(Path(args.output), registry, chosen) if chosen and not args.reject else None
    if newer:
        print(f"note: {newer['ModelPackageArn']}, a newer package, is published now; approving this one replaces "
              "its segments with this older model's")
    reporter = StepReporter()
    try:
        with export_destinations(args.destination, Path(args.output)):
            result = approve_local(Path(args.output), args.package, reporter, status)
    finally:
        reporter.stop()
    print(f"{result['model_package_arn']} is {status} in {Path(args.output) / 'registry.json'}.")
    if result.get("report"):
        print(f"its report (the one to review): {result['report']}")
    if result["status"] == "started":
        print(f"published its segments ({result['execution_arn'].rsplit('/', 1)[-1]})")
        print_segment_table(Path(args.output))
    else:
        print(f"nothing published: {result['reason']}")
    return 0


def _list_packages(output: Path, registry) -> int:
    from pipeline.local.approval import report_of
    from pipeline.local.registry import PUBLISHED

    packages = registry.packages()
    if not packages:
        print(f"no model packages in {registry.path}")
        return 0
    for package in packages:
        published = package.get(PUBLISHED)
        state = "published" if published else "not published" if published is False else ""
        print(f"{package['ModelPackageArn']}  {package['ModelApprovalStatus']:<21} {state:<13}  "
              f"{report_of(output, package) or '-'}")
    return 0


def _cmd_segments(args: argparse.Namespace) -> int:
    if args.changes:
        from lambdas.export.changes import describe, read_changes
        from lambdas.export.storage import Storage
        from steps import paths

        print(describe(read_changes(Storage(), str(Path(args.output) / "segments" / paths.CHANGES_FILE))))
        return 0
    from pipeline.local.summary import print_segment_table

    print_segment_table(Path(args.output))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from pipeline.local.summary import print_customer

    print_customer(Path(args.output), args.customer_id)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from steps.features.job import add_arguments as add_feature_arguments

    parser = argparse.ArgumentParser(
        prog="rfm", description="RFM customer segmentation: the SageMaker pipeline, runnable on this machine.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    raw = argparse.RawDescriptionHelpFormatter

    sample = commands.add_parser("sample", help="generate deterministic sample transactions",
                                 epilog="example:\n  rfm sample --customers 5000 --seed 42 --output tx.csv.gz",
                                 formatter_class=raw)
    sample.add_argument("--customers", type=int, default=5000, help="number of customers (default 5000)")
    sample.add_argument("--seed", type=int, default=42,
                        help="random seed: the same seed and customers give the same file (default 42)")
    sample.add_argument("--output", required=True, help="CSV file to write (.csv, or .csv.gz to compress)")
    sample.set_defaults(handler=_cmd_sample)

    features = commands.add_parser("features", help="compute RFM features from transactions",
                                   epilog="example:\n  rfm features --input tx.csv.gz --output output/features",
                                   formatter_class=raw)
    add_feature_arguments(features)
    for action in features._actions:  # outside the container there is no /opt/ml default to fall back on
        if action.dest == "input":
            action.required, action.default = True, None
        elif action.dest == "output":
            action.default, action.help = "output/features", f"{action.help} (default output/features)"
    features.set_defaults(handler=_cmd_features)

    run = commands.add_parser(
        "run-local", help="run the whole pipeline on this machine (no AWS, no Docker)",
        epilog="example:\n  rfm run-local --input data/sample/transactions.csv.gz "
               "--param ModelApprovalStatus=Approved --param NumClusters=0\n\n"
               f"pipeline parameters (--param NAME=VALUE):\n{parameters_help()}", formatter_class=raw)
    run.add_argument("--input", required=True, help="transactions: a file, a folder or an s3:// prefix")
    run.add_argument("--output", default="output", help="folder for every artifact (default ./output)")
    run.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help="a pipeline parameter, e.g. ModelApprovalStatus=Approved; repeatable")
    run.add_argument("--rebuild", action="store_true",
                     help="recompute the per-customer state from the whole history (Rebuild=true); "
                          "otherwise a run folds in only the files added, replaced or removed since the last "
                          "run with the same --output (docs/history.md)")
    run.add_argument("--destination", default="s3", metavar="DEST",
                     help="where ExportSegments publishes: s3 (files), pinpoint, customer-profiles, or a "
                          "comma-separated mix; pinpoint and customer-profiles go to local stand-ins of "
                          "those APIs, whose contents land in OUTPUT/destinations/")
    run.add_argument("--keep", type=int, default=5, metavar="N",
                     help="keep the newest N executions under OUTPUT/s3 (default 5); older ones are deleted, "
                          "except what registered packages need")
    run.add_argument("--column", action="append", default=[], metavar="CANONICAL=SOURCE",
                     help="map a canonical column to the file's column (the ColumnMapping parameter); repeatable")
    run.add_argument("--mapping", default=None, help="YAML file of canonical: source column names")
    run.add_argument("--engine", default="duckdb", choices=["duckdb", "spark"],
                     help="ComputeRFM's engine: duckdb, or spark (the Spark step, run on local pyspark; "
                          "docs/scale.md)")
    run.add_argument("--timezone", default="", metavar="ZONE",
                     help="IANA time zone whose calendar days count (the Timezone parameter; default UTC)")
    run.add_argument("--encoding", default="", metavar="ENCODING",
                     help="text encoding of CSV input: utf-8, utf-16, latin-1 or cp1252 (the Encoding parameter; "
                          "default UTF-8, or UTF-16 by its byte-order mark)")
    run.set_defaults(handler=_cmd_run_local)

    approve = commands.add_parser(
        "approve", help="approve a registered model package, which publishes its segments",
        epilog="examples:\n  rfm approve                      # the newest pending package of the local run\n"
               "  rfm approve arn:aws:sagemaker:local:000000000000:model-package/rfm-segmenter/1\n"
               "  rfm approve --sagemaker --region eu-west-1   # the newest pending package in SageMaker",
        formatter_class=raw)
    approve.add_argument("package", nargs="?",
                         help="model package ARN (default: the newest pending one, or approved but never published)")
    approve.add_argument("--list", action="store_true",
                         help="list the local packages: status, published or not, and their report")
    approve.add_argument("--output", default="output", help="the local run's folder (registry.json)")
    approve.add_argument("--reject", action="store_true", help="reject instead of approve")
    approve.add_argument("--sagemaker", action="store_true",
                         help="use SageMaker's model registry (AWS credentials) instead of the local one")
    approve.add_argument("--group", default=MODEL_PACKAGE_GROUP_NAME, help="model package group (with --sagemaker)")
    approve.add_argument("--region", default=None, help="AWS region (with --sagemaker)")
    approve.add_argument("--destination", default="s3", metavar="DEST",
                         help="as for run-local (local registry only)")
    approve.set_defaults(handler=_cmd_approve)

    segments = commands.add_parser("segments", help="print the segment table of the last local run",
                                   epilog="example:\n  rfm segments --output output", formatter_class=raw)
    segments.add_argument("--output", default="output")
    segments.add_argument("--changes", action="store_true",
                          help="print who entered, left or moved segment since the last publish (changes.parquet)")
    segments.set_defaults(handler=_cmd_segments)

    show = commands.add_parser("show", help="print one customer's scores, segment and cluster",
                               epilog="example:\n  rfm show 0000123", formatter_class=raw)
    show.add_argument("customer_id")
    show.add_argument("--output", default="output")
    show.set_defaults(handler=_cmd_show)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``; an option of another command given to run-local gets a hint at its parameter."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command == "run-local":
            for option in extra:
                name = option.split("=", 1)[0]
                if name in RUN_LOCAL_HINTS:
                    parser.error(f"run-local has no {name}: pipeline settings are parameters, "
                                 f"e.g. --param {RUN_LOCAL_HINTS[name]} (rfm run-local --help lists them)")
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(build_parser(), argv)
    setup_logging(getattr(args, "debug", False), plain=True)

    def run() -> int:
        try:
            status = args.handler(args)
            sys.stdout.flush()
        except BrokenPipeError:  # `rfm segments | head`: the reader left; stop quietly as other tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        return status

    return guarded(run, args.debug)


if __name__ == "__main__":
    sys.exit(main())
