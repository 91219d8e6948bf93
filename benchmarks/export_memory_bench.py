"""Peak memory of the export Lambda's work for N customers (the issue's target: under 1 GB at 2M).

    python benchmarks/export_memory_bench.py [--customers 1000000 2000000] [--destinations s3,pinpoint] [--s3]

For each size the inputs (``rfm.parquet`` and the transform's JSON Lines) are written to a
temporary folder, then a fresh Python process runs ``export_segments`` on them, as the Lambda
would, and reports its peak resident memory and its wall time. The peak is the process's own
high-water mark (``VmHWM`` in ``/proc/self/status``): ``ru_maxrss`` is not, because Linux carries
it across ``exec`` from the parent, whose memory then holds the generated inputs (that inflated
the figures this benchmark printed before). ``arrow MB`` is the Arrow memory pool's peak. A second publish
of the same customers (the delta path, which also reads the last published segments) is measured
in another fresh process. With ``pinpoint`` in ``--destinations`` the Pinpoint stand-in runs in
this (parent) process, so its endpoint store is not counted. With ``--s3`` the inputs and outputs
live in a moto S3 server run by this (parent) process, so the export reads and writes through boto3
as in Lambda (its multipart uploads and ranged reads counted, moto's store not). Customer Profiles is left out: through
the HTTP stand-in a first publish of millions of profiles takes hours (it is bounded by its chunked
puts; see docs/export.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from lambdas.export.app import Clients, ExportRequest, export_segments
from lambdas.export.config import ExportSettings, PinpointSettings
from lambdas.export.retry import RetryPolicy
from lambdas.export.storage import Storage
import boto3
spec = json.loads(sys.argv[1])
request = ExportRequest(**spec["request"])
pinpoint = "pinpoint" in spec["destinations"]
settings = ExportSettings(destinations=tuple(spec["destinations"]), pinpoint=PinpointSettings(
    application_id=spec.get("app", ""), role_arn="arn:aws:iam::123456789012:role/import",
    import_prefix="s3://bench/imports", poll_seconds=0.25))
clients = Clients(pinpoint=boto3.client("pinpoint") if pinpoint else None)
started = time.perf_counter()
if spec.get("s3_endpoint"):
    storage = Storage(boto3.client("s3", endpoint_url=spec["s3_endpoint"]))
else:
    storage = Storage(s3_root=spec["s3_root"])
summary = export_segments(request, storage, settings, clients, RetryPolicy(max_attempts=3))
seconds = time.perf_counter() - started
try:
    status = open("/proc/self/status").read()
    peak_mb = int(status.split("VmHWM:")[1].split()[0]) / 1024
except (OSError, IndexError):
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
import pyarrow as pa
arrow_mb = pa.default_memory_pool().max_memory() / 2**20
print(json.dumps({{"peak_mb": round(peak_mb), "arrow_mb": round(arrow_mb), "seconds": round(seconds, 1),
                  "changes": summary["changes"]}}))
"""


def run_child(spec: dict) -> dict:
    completed = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), json.dumps(spec)],
                               capture_output=True, text=True, check=False)
    if completed.returncode:
        raise SystemExit(completed.stderr[-3000:])
    return json.loads(completed.stdout.strip().splitlines()[-1])


BUCKET = "bench"


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server on loopback with the bucket; its URL."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        boto3.client("s3", endpoint_url=url).create_bucket(Bucket=BUCKET)
        yield url
    finally:
        server.stop()


def main() -> int:
    import boto3

    from lambdas.export.storage import Storage, join
    from lambdas.fakes import patched_environ, running_fakes
    from tests.export_support import segments_frame, write_inputs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[1_000_000, 2_000_000])
    parser.add_argument("--destinations", default="s3")
    parser.add_argument("--s3", action="store_true", help="inputs and outputs in a moto S3 server")
    args = parser.parse_args()
    destinations = [d.strip() for d in args.destinations.split(",") if d.strip()]
    if args.s3 and destinations != ["s3"]:
        parser.error("--s3 measures the s3 destination only")
    credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_DEFAULT_REGION": "us-east-1"}
    where = "moto S3 server" if args.s3 else "local folders"
    print(f"export peak memory, destinations {','.join(destinations)}, {where} (a shared, loaded host)")
    print(f"  {'customers':>10} {'publish':>8} {'peak MB':>8} {'arrow MB':>9} {'seconds':>8}")
    for customers in args.customers:
        with (tempfile.TemporaryDirectory() as folder, patched_environ(credentials),
              moto_server() if args.s3 else contextlib.nullcontext() as endpoint):
            storage = (Storage(boto3.client("s3", endpoint_url=endpoint)) if endpoint
                       else Storage(s3_root=Path(folder, "s3")))
            root = f"s3://{BUCKET}" if endpoint else folder
            frame = segments_frame(customers, clusters=5)
            requests = [write_inputs(storage, join(root, "rfm", "executions", name), frame, name)
                        for name in ("first", "second")]
            del frame
            with running_fakes(Path(folder, "s3"), customer_profiles=False) as fakes:
                app = fakes.pinpoint.create_app("bench")
                for request in requests:
                    spec = {"request": request.__dict__, "destinations": destinations, "app": app,
                            "s3_root": str(Path(folder, "s3")), "s3_endpoint": endpoint}
                    with patched_environ({**credentials, **os.environ}):
                        result = run_child(spec)
                    print(f"  {customers:>10} {request.execution_id:>8} {result['peak_mb']:>8} "
                          f"{result['arrow_mb']:>9} {result['seconds']:>8}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
