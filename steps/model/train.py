"""``train`` (``rfm-train``): the TrainSegmenter entrypoint.

SageMaker runs the image's ``train`` with no arguments: features come from the
``features`` channel (``SM_CHANNEL_FEATURES``), hyperparameters from
``hyperparameters.json`` (``SM_INPUT_CONFIG_DIR``), the model goes to
``SM_MODEL_DIR``. Options override each for local use.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import pandas as pd

from steps import columns as c
from steps import paths
from steps.cli_support import guarded, setup_logging
from steps.errors import ModelError
from steps.model.limits import MAX_CLUSTERS, MAX_TRAINING_CUSTOMERS, MIN_CLUSTERS, MIN_TRAINING_SAMPLE

log = logging.getLogger("rfm.train")


def read_hyperparameters(path: Path) -> dict[str, int]:
    """``num_clusters``, ``random_state`` and ``max_customers`` from SageMaker's hyperparameters.json (strings)."""
    raw = json.loads(path.read_text()) if path.is_file() else {}
    values = {"num_clusters": 0, "random_state": 0, "max_customers": MAX_TRAINING_CUSTOMERS}
    for name in values:
        if name in raw:
            try:
                values[name] = int(str(raw[name]).strip('"'))
            except ValueError:
                raise ModelError(f"hyperparameter {name}={raw[name]!r} is not an integer", str(path)) from None
    check_num_clusters(values["num_clusters"], str(path))
    check_max_customers(values["max_customers"], str(path))
    return values


def check_num_clusters(k: int, where: str) -> int:
    """``k`` when it is 0 (choose automatically) or MIN_CLUSTERS..MAX_CLUSTERS, else a clear error."""
    if not (k == 0 or MIN_CLUSTERS <= k <= MAX_CLUSTERS):
        raise ModelError(f"num_clusters={k} is out of range", where,
                         f"use 0 (automatic) or {MIN_CLUSTERS}..{MAX_CLUSTERS}")
    return k


def check_max_customers(n: int, where: str) -> int:
    """``n`` when it is 0 (fit on every customer) or at least MIN_TRAINING_SAMPLE, else a clear error."""
    if not (n == 0 or n >= MIN_TRAINING_SAMPLE):
        raise ModelError(f"max_customers={n} is out of range", where,
                         f"use 0 (every customer) or {MIN_TRAINING_SAMPLE} or more")
    return n


def read_features(folder: Path) -> pd.DataFrame:
    """``rfm.parquet`` from a features folder (or the file itself)."""
    path = folder if folder.is_file() else folder / paths.RFM_FILE
    if not path.is_file():
        raise ModelError(f"no {paths.RFM_FILE} found", str(folder), "run the ComputeRFM step first")
    return pd.read_parquet(path)


def feature_stats(frame: pd.DataFrame) -> dict:
    """Summary statistics of the model features (for drift checks and the report)."""
    stats = {}
    for name in c.MODEL_FEATURES:
        column = frame[name].astype(float)
        stats[name] = {
            "count": int(column.count()), "mean": float(column.mean()), "std": float(column.std(ddof=0)),
            "min": float(column.min()), "p25": float(column.quantile(0.25)), "median": float(column.median()),
            "p75": float(column.quantile(0.75)), "max": float(column.max()),
        }
    return stats


def train(features: pd.DataFrame, model_dir: Path, num_clusters: int, random_state: int,
          max_customers: int = MAX_TRAINING_CUSTOMERS) -> dict:
    """Fit the segmenter on ``features`` (on a sample of ``max_customers`` when there are more; 0: all)
    and save it to ``model_dir``; return the model metadata."""
    from steps.model.model_io import save_model
    from steps.model.segmenter import Segmenter

    segmenter = Segmenter(n_clusters=num_clusters, random_state=random_state,
                          max_customers=max_customers).fit(features)
    hyperparameters = {"num_clusters": num_clusters, "random_state": random_state, "max_customers": max_customers}
    return save_model(segmenter, model_dir, feature_stats(features), hyperparameters)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rfm-train", description="Train the k-means segmenter.")
    parser.add_argument("--features", default=None, help="folder with rfm.parquet (default: SM_CHANNEL_FEATURES)")
    parser.add_argument("--model-dir", default=None, help="where the model goes (default: SM_MODEL_DIR)")
    parser.add_argument("--num-clusters", type=int, default=None, help="k; 0 = choose automatically")
    parser.add_argument("--random-state", type=int, default=None, help="seed")
    parser.add_argument("--max-customers", type=int, default=None,
                        help=f"fit on a sample of this many when there are more (default {MAX_TRAINING_CUSTOMERS:,}); "
                             "0 = every customer")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.debug)

    def run() -> int:
        hyper = read_hyperparameters(paths.hyperparameters_file())
        num_clusters = hyper["num_clusters"] if args.num_clusters is None else check_num_clusters(
            args.num_clusters, "--num-clusters")
        seed = hyper["random_state"] if args.random_state is None else args.random_state
        max_customers = hyper["max_customers"] if args.max_customers is None else check_max_customers(
            args.max_customers, "--max-customers")
        features = read_features(Path(args.features) if args.features else paths.training_channel())
        started = time.perf_counter()
        meta = train(features, Path(args.model_dir) if args.model_dir else paths.model_dir(), num_clusters, seed,
                     max_customers)
        sample = meta["training_sample"]
        fitted = (f"fitted on a sample of {sample['fitted_on']:,}" if sample["fitted_on"] < sample["customers"]
                  else "fitted on all")
        log.info("k=%d (%s) on %d customers (%s) in %.1f s", meta["k"], "chosen" if not num_clusters else "given",
                 len(features), fitted, time.perf_counter() - started)
        for cluster, name in enumerate(meta["names"]):
            log.info("  cluster %d: %s (%d customers)", cluster, name, meta["profiles"][cluster]["size"])
        return 0

    return guarded(run, args.debug)


if __name__ == "__main__":
    sys.exit(main())
