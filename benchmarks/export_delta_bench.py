"""Delta export: with 5% of customers changing segment, how many Customer Profiles and Pinpoint calls?

    python benchmarks/export_delta_bench.py [--customers 20000] [--changed 0.05]

Publishes ``--customers`` customers to the local stand-ins of Customer Profiles and Pinpoint (and the
S3 files), then the same customers with ``--changed`` of them moved to another RFM segment, and
counts the API calls each fake answered during the second publish (every operation: puts,
searches, segment definitions, GetApp, import jobs...) and the endpoints it imported. The issue's
target: at most 6% of the customers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lambdas.export.app import Clients, export_segments  # noqa: E402
from lambdas.export.config import CustomerProfilesSettings, ExportSettings, PinpointSettings  # noqa: E402
from lambdas.export.retry import NO_SDK_RETRIES, RetryPolicy  # noqa: E402
from lambdas.export.storage import Storage  # noqa: E402
from lambdas.fakes import patched_environ, running_fakes  # noqa: E402
from tests.export_support import segments_frame, write_inputs  # noqa: E402

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--changed", type=float, default=0.05, help="share of customers moving segment")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    first = segments_frame(args.customers, seed=args.seed)
    second = first.copy()
    moved = second.sample(frac=args.changed, random_state=args.seed).index
    second.loc[moved, "rfm_segment"] = second.loc[moved, "rfm_segment"].map(
        lambda name: "Hibernating" if name != "Hibernating" else "Champions")
    endpoints_total = int(first["email"].notna().sum() + first["phone"].notna().sum())

    with (tempfile.TemporaryDirectory() as folder, patched_environ(CREDENTIALS),
          running_fakes(Path(folder, "s3")) as fakes):
        fakes.customer_profiles.create_domain("bench")
        settings = ExportSettings(
            destinations=("s3", "pinpoint", "customer-profiles"),
            pinpoint=PinpointSettings(application_id=fakes.pinpoint.create_app("bench"),
                                      role_arn="arn:aws:iam::123456789012:role/import",
                                      import_prefix="s3://bench/imports", poll_seconds=0.05),
            customer_profiles=CustomerProfilesSettings(domain="bench", concurrency=8),
        )
        options = {"region_name": "us-east-1", "config": NO_SDK_RETRIES}
        clients = Clients(
            pinpoint=boto3.client("pinpoint", endpoint_url=fakes.pinpoint.url, **options),
            customer_profiles=boto3.client("customer-profiles", endpoint_url=fakes.customer_profiles.url, **options))
        storage = Storage(s3_root=Path(folder, "s3"))
        rows = []
        for execution, segments in (("first", first), ("second", second)):
            request = write_inputs(storage, str(Path(folder, "rfm", "executions", execution)), segments, execution)
            fakes.customer_profiles.calls.clear()
            fakes.pinpoint.calls.clear()
            started = time.perf_counter()
            summary = export_segments(request, storage, settings, clients, RetryPolicy(max_attempts=3))
            seconds = time.perf_counter() - started
            rows.append((execution, seconds, sum(fakes.customer_profiles.calls.values()),
                         sum(fakes.pinpoint.calls.values()), summary["by_destination"]["pinpoint"]["endpoints"]
                         + summary["by_destination"]["pinpoint"]["endpoints_retired"], summary["changes"]))

    print(f"\n{args.customers} customers, {endpoints_total} endpoints, {args.changed:.0%} moved segment "
          "(local stand-ins; a shared, loaded host)")
    print(f"  {'publish':<8} {'seconds':>8} {'CP calls':>9} {'% cust.':>8} {'PP calls':>9} {'% cust.':>8} "
          f"{'endpoints':>10} {'% endp.':>8}")
    for execution, seconds, cp_calls, pp_calls, endpoints, _changes in rows:
        print(f"  {execution:<8} {seconds:>8.1f} {cp_calls:>9} {cp_calls / args.customers:>8.2%} {pp_calls:>9} "
              f"{pp_calls / args.customers:>8.2%} {endpoints:>10} {endpoints / endpoints_total:>8.2%}")
    print(f"  changes of the second publish: {rows[1][5]}")
    _name, _seconds, cp_calls, pp_calls, endpoints, _changes = rows[1]
    within = max(cp_calls, pp_calls) <= 0.06 * args.customers and endpoints <= 0.06 * endpoints_total
    print(f"  target (calls and endpoints at most 6%): {'met' if within else 'NOT met'}")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
