"""Training on the bounded sample against every customer, at 1M and 5M customers.

The customers are ``benchmarks.common.customer_features`` (as in ``train_bench.py``: independent,
heavy-tailed recency, frequency and monetary value, scored; no transactions, so 5,000,000 customers
are ready in seconds). For each size the segmenter is trained with automatic k twice, each fit in a
child process of its own (so the peaks do not mix): on the bounded sample (``TrainingSampleSize``,
default ``MAX_TRAINING_CUSTOMERS``) and on every customer (``max_customers=0``). Per fit: wall and CPU
seconds of ``train``, the peak resident memory of the process while training (sampled every 20 ms)
and its growth over the features already in memory, k and the votes of the selection seeds, and the
silhouette of the model's clusters on every customer as ``steps.model.evaluate`` computes it (on its
seeded 20,000-customer sample, the same customers for both models). "agreement" is the adjusted Rand
index between the two models' clusters over every customer.

    python benchmarks/train_scale_bench.py [--customers 1000000 5000000] [--sample 200000] [--skip-all-above N]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from steps.model.limits import MAX_TRAINING_CUSTOMERS  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024


def resident_bytes() -> int:
    """This process's resident memory now (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


class PeakSampler(threading.Thread):
    """The largest resident memory seen while running (every ``interval`` seconds)."""

    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak, self._done = interval, resident_bytes(), threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            self.peak = max(self.peak, resident_bytes())

    def stop(self) -> int:
        self._done.set()
        self.join()
        return max(self.peak, resident_bytes())


def fit_once(customers: int, bound: int, folder: str) -> dict:
    """Train on ``customers`` synthetic customers with ``max_customers=bound``; measure; save the clusters."""
    from benchmarks.common import customer_features
    from steps.model.evaluate import evaluate
    from steps.model.model_io import load_model
    from steps.model.segmenter import feature_matrix
    from steps.model.train import train

    features = customer_features(customers)
    before = resident_bytes()
    sampler = PeakSampler()
    sampler.start()
    started, cpu_started = time.perf_counter(), time.process_time()
    meta = train(features, Path(folder) / "model", num_clusters=0, random_state=0, max_customers=bound)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    peak = sampler.stop()
    model = load_model(Path(folder) / "model")
    labels = model.clusters(feature_matrix(features))
    np.save(Path(folder) / "labels.npy", labels.astype(np.int8))
    metrics = evaluate(model, features, 0, labels)["segmentation_metrics"]
    selection = {row["k"]: row["silhouette"] for row in meta.get("k_selection", [])}
    return {
        "fitted_on": meta["training_sample"]["fitted_on"], "k": meta["k"], "votes": meta["k_votes"],
        "selection": selection, "wall": wall, "cpu": cpu, "before_mib": before / MIB, "peak_mib": peak / MIB,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "silhouette": metrics["silhouette"]["value"],
    }


def in_child(customers: int, bound: int, folder: str) -> dict:
    """:func:`fit_once` in a fresh process (``spawn``: nothing inherited from this one)."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(fit_once, (customers, bound, folder))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--sample", type=int, default=MAX_TRAINING_CUSTOMERS, help="TrainingSampleSize")
    parser.add_argument("--skip-all-above", type=int, default=0,
                        help="fit on every customer only up to this many (0: always)")
    args = parser.parse_args()
    from sklearn.metrics import adjusted_rand_score

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for customers in args.customers:
            fits = [("sample", args.sample)]
            if not args.skip_all_above or customers <= args.skip_all_above:
                fits.append(("all", 0))
            labels = {}
            for name, bound in fits:
                folder = Path(tmp) / f"{customers}-{name}"
                folder.mkdir()
                result = in_child(customers, bound, str(folder))
                labels[name] = np.load(folder / "labels.npy")
                rows.append((customers, name, result))
                print(customers, name, result, flush=True)
            agreement = (adjusted_rand_score(labels["all"], labels["sample"]) if len(labels) == 2 else float("nan"))
            rows.append((customers, "agreement", {"ari": agreement}))
            print(customers, "agreement (ARI sample vs all)", f"{agreement:.3f}", flush=True)

    print(f"\n{'customers':>10} {'fit on':<8} {'fitted on':>10} {'k':>3} {'votes':<16} {'silhouette':>10} "
          f"{'wall s':>7} {'CPU s':>7} {'peak MiB':>9} {'+MiB':>6}")
    for customers, name, result in rows:
        if name == "agreement":
            print(f"{customers:>10,} agreement (adjusted Rand index, sample vs all): {result['ari']:.3f}")
            continue
        votes = ", ".join(f"{k}:{n}" for k, n in result["votes"].items())
        print(f"{customers:>10,} {name:<8} {result['fitted_on']:>10,} {result['k']:>3} {votes:<16} "
              f"{result['silhouette']:>10.3f} {result['wall']:>7.1f} {result['cpu']:>7.1f} "
              f"{result['peak_mib']:>9.0f} {result['peak_mib'] - result['before_mib']:>6.0f}")
    print("\nmean silhouette of each candidate k over the selection seeds (k vote):")
    for customers, name, result in rows:
        if name != "agreement":
            means = ", ".join(f"{k}:{s:.3f}" for k, s in result["selection"].items())
            print(f"{customers:>10,} {name:<8} {means}")


if __name__ == "__main__":
    main()
