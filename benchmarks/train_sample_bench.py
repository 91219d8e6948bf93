"""Training on a bounded sample: its effect on k and the metrics, on the sample generator's customers.

For each size, the generator's transactions (``steps/sample``, written in parts of 250,000
customers with distinct ids) go through the features step; the segmenter is then trained twice,
on every customer (``max_customers=0``) and on the bounded sample (``TrainingSampleSize``, default
``MAX_TRAINING_CUSTOMERS``), and both models are evaluated on every customer the same way
(``steps.model.evaluate``: metrics on a seeded 20,000-customer sample). ``agreement`` is the
adjusted Rand index between the two models' clusters over every customer.

    python benchmarks/train_sample_bench.py [--customers 500000 2000000] [--sample 200000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

from steps import columns as c  # noqa: E402
from steps.model.evaluate import evaluate  # noqa: E402
from steps.model.limits import MAX_TRAINING_CUSTOMERS  # noqa: E402
from steps.model.model_io import load_model  # noqa: E402
from steps.model.segmenter import feature_matrix  # noqa: E402
from steps.model.train import read_features, train  # noqa: E402

PART = 250_000  # customers per generated file (the generator holds a whole part in memory)


def write_parts(work: Path, folder: Path, customers: int) -> None:
    """The generator's transactions for ``customers`` customers in ``folder``, as Parquet parts of ``PART``
    customers with distinct ids; each part is generated once under ``work/parts`` and linked into ``folder``
    (the first parts of a larger size are those of a smaller one)."""
    from steps.sample.generate import generate_transactions

    if customers % PART:
        raise SystemExit(f"--customers must be multiples of {PART:,}")
    (work / "parts").mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    for part in range(customers // PART):
        source = work / "parts" / f"part-{part:03d}.parquet"
        if not source.is_file():
            rows = generate_transactions(PART, seed=part)
            rows["CustomerID"] = rows["CustomerID"].where(rows["CustomerID"].isna(),
                                                          f"p{part}-" + rows["CustomerID"])
            rows.to_parquet(source.with_suffix(".tmp"), index=False)
            source.with_suffix(".tmp").rename(source)
        (folder / source.name).unlink(missing_ok=True)
        (folder / source.name).symlink_to(source)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[500_000, 2_000_000])
    parser.add_argument("--sample", type=int, default=MAX_TRAINING_CUSTOMERS, help="TrainingSampleSize")
    parser.add_argument("--workdir", default=None, help="keep the generated data here (default: a temporary folder)")
    args = parser.parse_args()
    from steps.features.compute import run as compute_features

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        rows = []
        for customers in args.customers:
            started = time.perf_counter()
            transactions = work / f"transactions-{customers}"
            write_parts(work, transactions, customers)
            features_dir = work / f"features-{customers}"
            if not (features_dir / "rfm.parquet").is_file():
                compute_features(str(transactions), features_dir)
            features = read_features(features_dir)
            print(f"{len(features):,} customers ready in {time.perf_counter() - started:.0f} s", flush=True)
            labels = {}
            for name, bound in (("all", 0), ("sample", args.sample)):
                model_dir = work / f"model-{customers}-{name}"
                started = time.perf_counter()
                meta = train(features, model_dir, num_clusters=0, random_state=0, max_customers=bound)
                seconds = time.perf_counter() - started
                model = load_model(model_dir)
                labels[name] = model.clusters(feature_matrix(features))
                metrics = evaluate(model, features, 0, labels[name])["segmentation_metrics"]
                votes = ", ".join(f"{k}:{n}" for k, n in meta["k_votes"].items())
                rows.append((f"{len(features):,}", name, f"{meta['training_sample']['fitted_on']:,}", meta["k"],
                             votes, metrics["silhouette"]["value"], metrics["davies_bouldin"]["value"],
                             metrics["min_cluster_share"]["value"], seconds))
                print(rows[-1], flush=True)
            rows.append((f"{len(features):,}", "agreement (ARI all vs sample)",
                         "", "", "", adjusted_rand_score(labels["all"], labels["sample"]), np.nan, np.nan, np.nan))
            print(rows[-1], flush=True)
    print(f"\n{'customers':>10} {'fit on':<30} {'fitted on':>10} {'k':>3} {'votes':<12} {'silhouette':>10} "
          f"{'DB':>6} {'min share':>9} {'train s':>8}")
    for customers, name, fitted, k, votes, silhouette, db, share, seconds in rows:
        print(f"{customers:>10} {name:<30} {fitted:>10} {k!s:>3} {votes:<12} {silhouette:>10.3f} "
              f"{db:>6.3f} {share:>9.3f} {seconds:>8.1f}")
    print(f"\n(model features: {', '.join(c.MODEL_FEATURES)})")


if __name__ == "__main__":
    main()
