"""Batch-transform throughput of ``serve``: customers per second per process.

Runs, side by side in one process tree: our ``serve`` over HTTP on loopback
(one gunicorn worker, 6 MB CSV mini-batches, JSON Lines answers, as batch
transform sends them), our in-process ``predict``, and the handler people
write by hand (pandas ``read_csv`` + scikit-learn ``predict`` + ``to_json``).
Target: at least 200,000 customers per second per process on the batch path.

    python benchmarks/serve_bench.py [--customers 1000000]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import joblib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks.common import customer_features, print_table  # noqa: E402
from pipeline.local.transform import mini_batches, serving, transform_file  # noqa: E402
from steps import columns as c  # noqa: E402
from steps import paths  # noqa: E402
from steps.model.model_io import load_model  # noqa: E402
from steps.model.serve import predict  # noqa: E402
from steps.model.train import train  # noqa: E402
from steps.segments import SEGMENT_GRID  # noqa: E402


def hand_written_handler(model_dir: Path, names: list[str], body: bytes) -> bytes:
    """The usual notebook-to-endpoint handler: pandas in, scikit-learn predict, pandas out."""
    fitted = joblib.load(model_dir / paths.MODEL_FILE)
    frame = pd.read_csv(io.BytesIO(body), header=None, names=list(c.TRANSFORM_INPUT_COLUMNS),
                        dtype={c.CUSTOMER_ID: str})
    x = frame[list(c.MODEL_FEATURES)].to_numpy(dtype=float)
    x = np.sign(x) * np.log1p(np.abs(x))
    frame[c.CLUSTER] = fitted["kmeans"].predict(fitted["scaler"].transform(x))
    frame[c.CLUSTER_NAME] = frame[c.CLUSTER].map(dict(enumerate(names)))
    frame[c.RFM_SEGMENT] = [SEGMENT_GRID[(r, f)] for r, f in zip(frame[c.R_SCORE], frame[c.F_SCORE], strict=True)]
    return frame[list(c.ASSIGNMENT_COLUMNS)].to_json(orient="records", lines=True).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    args = parser.parse_args()
    features = customer_features(args.customers)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        train(features.sample(min(len(features), 100_000), random_state=0), folder / "model", 6, 0)
        source = folder / paths.transform_input_file(0)
        features[list(c.TRANSFORM_INPUT_COLUMNS)].to_csv(source, index=False, header=False)
        batches = list(mini_batches(source, 6 * 1024 * 1024))
        model = load_model(folder / "model")

        started = time.perf_counter()
        for body in batches:
            predict(model, body, "text/csv", "application/jsonlines")
        in_process = time.perf_counter() - started

        started = time.perf_counter()
        for body in batches:
            hand_written_handler(folder / "model", model.names, body)
        by_hand = time.perf_counter() - started

        with serving(folder / "model", folder / "serve.log", workers=1) as port:
            started = time.perf_counter()
            transform_file(port, source, folder / "out.jsonl", "text/csv", "application/jsonlines", 6)
            over_http = time.perf_counter() - started
        answered = sum(1 for _ in (folder / "out.jsonl").open())
    assert answered == args.customers, (answered, args.customers)
    n = args.customers
    print(f"{n:,} customers in {len(batches)} mini-batches of <= 6 MB")
    print_table("serve, batch path (one process)", [
        ("ours: serve over HTTP (1 worker)", over_http, f"{n / over_http:,.0f} customers/s"),
        ("ours: predict in-process", in_process, f"{n / in_process:,.0f} customers/s"),
        ("by hand: pandas + scikit-learn", by_hand, f"{n / by_hand:,.0f} customers/s"),
    ], baseline="by hand: pandas + scikit-learn")
    print(f"\ntarget >= 200,000 customers/s over HTTP: {'met' if n / over_http >= 200_000 else 'NOT met'}")


if __name__ == "__main__":
    main()
