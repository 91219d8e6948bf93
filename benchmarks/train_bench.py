"""Training time with automatic k on 1,000,000 customers (target: under 60 s).

Side by side in one run: our ``train`` (k in 2..10 by a vote of five seeds, each
on its own 20,000-customer sample; above ``TrainingSampleSize`` customers, 200,000
by default, everything is fitted on a fixed sample of that many, then every
customer is assigned), the AWS guidance's fixed ``KMeans(n_clusters=7)`` on all
customers, and the by-hand notebook way (a full-data k-means per candidate k,
silhouette on a 10,000-customer sample).

    python benchmarks/train_bench.py [--customers 1000000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from sklearn.metrics import silhouette_score  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from benchmarks.common import customer_features, print_table  # noqa: E402
from steps import columns as c  # noqa: E402
from steps.model.train import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    args = parser.parse_args()
    features = customer_features(args.customers)
    x = features[list(c.MODEL_FEATURES)].to_numpy(dtype=float)

    cpu = {}
    with tempfile.TemporaryDirectory() as tmp:
        started, cpu_started = time.perf_counter(), time.process_time()
        meta = train(features, Path(tmp), num_clusters=0, random_state=0)
        ours, cpu["ours"] = time.perf_counter() - started, time.process_time() - cpu_started

    started, cpu_started = time.perf_counter(), time.process_time()
    KMeans(n_clusters=7, random_state=0).fit(features[[c.R_SCORE, c.F_SCORE, c.M_SCORE]].to_numpy(dtype=float))
    guidance, cpu["guidance"] = time.perf_counter() - started, time.process_time() - cpu_started

    started, cpu_started = time.perf_counter(), time.process_time()
    scaled = StandardScaler().fit_transform(np.log1p(x))
    best = max(
        (silhouette_score(scaled, KMeans(n_clusters=k, random_state=0).fit_predict(scaled),
                          sample_size=10_000, random_state=0), k)
        for k in range(2, 11)
    )
    by_hand, cpu["by hand"] = time.perf_counter() - started, time.process_time() - cpu_started

    print(f"{args.customers:,} customers")
    print_table("training", [
        ("ours: automatic k (2..10) + fit", ours,
         f"k={meta['k']}, votes {meta['k_votes']}, fitted on {meta['training_sample']['fitted_on']:,}"),
        ("AWS guidance: KMeans(k=7), no choice", guidance, "k=7 fixed, unscaled scores"),
        ("by hand: full-data k-means per k", by_hand, f"k={best[1]}"),
    ], baseline="by hand: full-data k-means per k")
    print("\nCPU seconds (this process; less sensitive to a busy host than wall time): "
          + ", ".join(f"{name} {seconds:.1f}" for name, seconds in cpu.items()))
    print(f"\ntarget: automatic k under 60 s: {'met' if ours < 60 else 'NOT met'} ({ours:.1f} s)")


if __name__ == "__main__":
    main()
