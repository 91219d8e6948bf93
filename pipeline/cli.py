"""``rfm``: the project's command line (sample data, features, local pipeline runs, results)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pipeline.naming import MODEL_PACKAGE_GROUP_NAME
from steps.cli_support import guarded, setup_logging
from steps.errors import PipelineError, first_line

EPILOG = """examples:
  rfm sample --customers 5000 --seed 42 --output transactions.csv.gz
  rfm features --input transactions.csv.gz --output output/features
  rfm run-local --input data/sample/transactions.csv.gz --param ModelApprovalStatus=Approved
  rfm run-local --input data/sample/transactions.csv.gz   # registers, waits for approval
  rfm approve                       # approve the pending package: publishes its segments
  rfm run-local --input data/sample/transactions.csv.gz --param ModelApprovalStatus=Approved \\
      --destination pinpoint,customer-profiles   # export to local stand-ins of those APIs
  rfm segments                      # the segment table of the last local run
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


def _cmd_run_local(args: argparse.Namespace) -> int:
    from pipeline.local.progress import StepReporter
    from pipeline.local.run_local import export_destinations, parse_params, run_local
    from pipeline.local.summary import print_summary

    params = parse_params(args.param)
    if args.rebuild:
        params["Rebuild"] = "true"
    print(f"running the pipeline locally on {args.input} -> {args.output}", flush=True)
    started = time.perf_counter()
    reporter = StepReporter()
    try:
        with export_destinations(args.destination, Path(args.output)):
            result = run_local(args.input, Path(args.output), params, on_step=reporter)
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


def _cmd_approve(args: argparse.Namespace) -> int:
    status = "Rejected" if args.reject else "Approved"
    if args.sagemaker:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

        from pipeline.local.approval import approve_sagemaker

        try:
            client = boto3.client("sagemaker", region_name=args.region) if args.region else boto3.client("sagemaker")
            arn = approve_sagemaker(client, args.package, args.group, status)
        except NoRegionError:
            raise PipelineError("no AWS region", "rfm approve --sagemaker",
                                "Pass --region, or set AWS_REGION / a profile's region") from None
        except NoCredentialsError:
            raise PipelineError("no AWS credentials", "rfm approve --sagemaker",
                                "Configure credentials (aws configure, AWS_PROFILE, or an instance role)") from None
        except (BotoCoreError, ClientError) as error:
            raise PipelineError(f"the SageMaker call failed: {first_line(error)}", "rfm approve --sagemaker",
                                "Check the package ARN, --group, --region and your permissions") from None
        print(f"{arn} is {status} in SageMaker's model registry.")
        if status == "Approved":
            print("The approval rule starts the publish pipeline; follow it in Studio (Pipelines).")
        return 0
    from pipeline.local.approval import approve_local
    from pipeline.local.progress import StepReporter
    from pipeline.local.run_local import export_destinations
    from pipeline.local.summary import print_segment_table

    reporter = StepReporter()
    try:
        with export_destinations(args.destination, Path(args.output)):
            result = approve_local(Path(args.output), args.package, reporter, status)
    finally:
        reporter.stop()
    print(f"{result['model_package_arn']} is {status} in {Path(args.output) / 'registry.json'}.")
    if result["status"] == "started":
        print(f"published its segments ({result['execution_arn'].rsplit('/', 1)[-1]})")
        print_segment_table(Path(args.output))
    else:
        print(f"nothing published: {result['reason']}")
    return 0


def _cmd_segments(args: argparse.Namespace) -> int:
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
    sample.add_argument("--customers", type=int, default=5000)
    sample.add_argument("--seed", type=int, default=42)
    sample.add_argument("--output", required=True, help="CSV file (.csv or .csv.gz)")
    sample.set_defaults(handler=_cmd_sample)

    features = commands.add_parser("features", help="compute RFM features from transactions",
                                   epilog="example:\n  rfm features --input tx.csv.gz --output output/features",
                                   formatter_class=raw)
    add_feature_arguments(features)
    features.set_defaults(handler=_cmd_features)

    run = commands.add_parser(
        "run-local", help="run the whole pipeline on this machine (no AWS, no Docker)",
        epilog="example:\n  rfm run-local --input data/sample/transactions.csv.gz "
               "--param ModelApprovalStatus=Approved --param NumClusters=0", formatter_class=raw)
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
    run.set_defaults(handler=_cmd_run_local)

    approve = commands.add_parser(
        "approve", help="approve a registered model package, which publishes its segments",
        epilog="examples:\n  rfm approve                      # the newest pending package of the local run\n"
               "  rfm approve arn:aws:sagemaker:local:000000000000:model-package/rfm-segmenter/1\n"
               "  rfm approve --sagemaker --region eu-west-1   # the newest pending package in SageMaker",
        formatter_class=raw)
    approve.add_argument("package", nargs="?", help="model package ARN (default: the newest pending one)")
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
    segments.set_defaults(handler=_cmd_segments)

    show = commands.add_parser("show", help="print one customer's scores, segment and cluster",
                               epilog="example:\n  rfm show 0000123", formatter_class=raw)
    show.add_argument("customer_id")
    show.add_argument("--output", default="output")
    show.set_defaults(handler=_cmd_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(getattr(args, "debug", False))
    return guarded(lambda: args.handler(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
