"""``rfm-evaluate``: the EvaluateSegmenter entrypoint.

Writes ``evaluation.json`` in the model-quality layout SageMaker's model
registry shows (``{"segmentation_metrics": {name: {"value": v}}}``) plus
cluster sizes, shares, names and the k-selection curve.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import (
    adjusted_rand_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_samples,
)

from steps import columns as c
from steps import paths
from steps.cli_support import guarded, setup_logging
from steps.model.model_io import SegmentModel, load_model
from steps.model.quality_gate import gate_verdict
from steps.model.segmenter import feature_matrix
from steps.model.train import read_features
from steps.published import CHANGE_ORDER
from steps.report import data as report_data
from steps.report.baseline import Baseline, compare_segments, read_baseline
from steps.report.money import DEFAULT_CURRENCY

log = logging.getLogger("rfm.evaluate")

# Above this many customers, the metrics that compare customers with each other (silhouette, per cluster
# too, Davies-Bouldin, Calinski-Harabasz, stability) are computed on a sample of this many, drawn with
# the evaluation's random state; sizes and shares always count every customer. evaluation.json's
# "metric_sample" and the report say which.
METRIC_SAMPLE = 20_000
SAMPLED_METRICS = ("silhouette", "davies_bouldin", "calinski_harabasz", "stability_ari", "cluster silhouette")
STABILITY_SEEDS = 3


def evaluate(model: SegmentModel, features: pd.DataFrame, random_state: int = 0,
             labels: np.ndarray | None = None) -> dict:
    """Quality metrics of ``model`` on ``features``.

    Silhouette (overall and per cluster), Davies-Bouldin, Calinski-Harabasz and stability
    are computed on a sample of at most ``METRIC_SAMPLE`` customers drawn with
    ``random_state`` (every customer when fewer), described in ``metric_sample``; stability
    is the mean adjusted Rand index between the model's clusters and k-means refits with
    other seeds. Sizes, shares and ``min_cluster_share`` count every customer.
    ``labels`` are the customers' clusters when already assigned
    (``model.clusters``); without them they are assigned here.
    """
    rng = np.random.default_rng(random_state)
    matrix = feature_matrix(features)
    labels = model.clusters(matrix) if labels is None else labels
    sizes = np.bincount(labels, minlength=model.k)
    shares = sizes / max(len(features), 1)
    index = np.arange(len(features))
    if len(index) > METRIC_SAMPLE:
        index = np.sort(rng.choice(len(index), METRIC_SAMPLE, replace=False))
    x, y = model.scaled(matrix[index]), labels[index]
    separable = len(np.unique(y)) > 1
    per_customer = silhouette_samples(x, y) if separable else np.full(len(y), -1.0)
    per_cluster = [float(per_customer[y == i].mean()) if (y == i).any() else None for i in range(model.k)]
    stability = []
    for offset in range(1, STABILITY_SEEDS + 1):
        refit = KMeans(n_clusters=model.k, n_init=4, random_state=random_state + offset).fit(x)
        stability.append(adjusted_rand_score(y, refit.labels_))
    metrics = {
        "silhouette": float(per_customer.mean()) if separable else -1.0,
        "davies_bouldin": float(davies_bouldin_score(x, y)) if separable else float("inf"),
        "calinski_harabasz": float(calinski_harabasz_score(x, y)) if separable else 0.0,
        "min_cluster_share": float(shares.min()) if len(shares) else 0.0,
        "stability_ari": float(np.mean(stability)),
        "k": model.k,
        "customers": int(len(features)),
    }
    segment_counts = features.groupby(c.RFM_SEGMENT).size() if c.RFM_SEGMENT in features else pd.Series()
    return {
        "segmentation_metrics": {
            name: ({"value": value, "standard_deviation": float(np.std(stability))}
                   if name == "stability_ari" else {"value": value})
            for name, value in metrics.items()
        },
        "clusters": [
            {"cluster": i, "name": model.names[i], "dominant_segment": model.meta["dominant_segments"][i],
             "size": int(sizes[i]), "share": float(shares[i]), "silhouette": per_cluster[i]}
            for i in range(model.k)
        ],
        "rfm_segments": {str(k): int(v) for k, v in segment_counts.items()},
        "k_selection": model.meta.get("k_selection", []),
        "metric_sample_size": int(len(index)),
        "metric_sample": {"customers": int(len(features)), "sampled": int(len(index)),
                          "is_sample": bool(len(index) < len(features)), "seed": int(random_state),
                          "metrics": list(SAMPLED_METRICS)},
    }


def execution_id_from_job_config(job_config: Path | None) -> str:
    """The pipeline execution id in this job's output URIs (``.../model/<id>/...`` or ``executions/<id>``), or ``""``.

    SageMaker Processing writes the job's CreateProcessingJob request to
    ``processingjobconfig.json``. Output URIs are not part of a processing step's
    cache key (its arguments, environment and inputs are), so the report can name
    its run without an execution-id argument that would defeat the step cache.
    """
    if job_config is None:
        return ""
    try:
        request = json.loads(Path(job_config).read_text())
    except (OSError, json.JSONDecodeError) as error:
        log.warning("report.html names no execution: cannot read %s (%s)", job_config, error)
        return ""
    outputs = request.get("ProcessingOutputConfig", {}).get("Outputs", []) if isinstance(request, dict) else []
    for output in outputs:
        parts = str(output.get("S3Output", {}).get("S3Uri", "")).split("/")
        for folder in (paths.PACKAGE_DIR, paths.EXECUTIONS_DIR):
            if folder in parts[3:-1]:  # after "s3:", "" and the bucket
                return parts[parts.index(folder, 3) + 1]
    return ""


def gate_of(report: dict, model: SegmentModel, min_silhouette: float | None,
            min_share: float | None) -> dict:
    """``report['quality_gate']``: the verdict of the thresholds the pipeline's CheckQuality applies."""
    metrics = report["segmentation_metrics"]
    num_clusters = int(model.meta.get("hyperparameters", {}).get("num_clusters", 0))
    return gate_verdict(metrics["silhouette"]["value"], metrics["min_cluster_share"]["value"], model.k,
                        num_clusters, min_silhouette, min_share)


def compare_with_baseline(baseline: Baseline, features: pd.DataFrame, model: SegmentModel,
                          labels: np.ndarray) -> pd.DataFrame | None:
    """This run's segments against the last publish (``changes.parquet``'s rows), or None when nothing was."""
    if not baseline.found:
        return None
    current = pd.DataFrame({c.CUSTOMER_ID: features[c.CUSTOMER_ID],
                            c.RFM_SEGMENT: report_data.segments(features).to_numpy(),
                            c.CLUSTER_NAME: np.asarray(model.names, dtype=object)[labels]})
    return compare_segments(baseline.segments, current)


def baseline_summary(baseline: Baseline, changes: pd.DataFrame | None) -> dict:
    """``evaluation.json``'s ``compared_with``: the last publish and how many customers left, moved or entered."""
    if changes is None:
        return {"found": False, "problem": baseline.problem or None}
    counts = changes[c.CHANGE].value_counts()
    return {"found": True, "execution_id": baseline.execution_id or None, "published": baseline.published_at or None,
            "customers_before": int(len(baseline.segments)),
            **{kind: int(counts.get(kind, 0)) for kind in CHANGE_ORDER}}


def _write_html_report(output: Path, features: pd.DataFrame, model: SegmentModel, evaluation: dict,
                       features_location: Path, execution_id: str, labels: np.ndarray,
                       args: argparse.Namespace, baseline: Baseline, changes: pd.DataFrame | None) -> Path:
    """``report.html`` next to ``evaluation.json``, with ``quality.json`` from the features folder if present."""
    from steps.report.render import read_quality, write_report

    quality = read_quality(features_location)
    hyperparameters = model.meta.get("hyperparameters", {})
    parameters = {"InputDataUrl": args.input_location or None, "InputFormat": (quality or {}).get("input_format"),
                  "NumClusters": hyperparameters.get("num_clusters"),
                  "RandomSeed": hyperparameters.get("random_state"),
                  "TrainingSampleSize": hyperparameters.get("max_customers"),
                  "MinSilhouette": args.min_silhouette, "MinClusterShare": args.min_cluster_share,
                  "Currency": args.currency}
    run_info = {
        "execution_id": execution_id,
        "parameters": {k: v for k, v in parameters.items() if v is not None},
        "input_location": args.input_location,
        "as_of_date": (quality or {}).get("as_of_date"),
        "input_format": (quality or {}).get("input_format"),
        "hyperparameters": hyperparameters,
        "currency": args.currency,
    }
    path = write_report(output, features, model.meta, evaluation, quality, run_info, cluster_of=labels,
                        previous=baseline.segments, changes=changes, baseline_note=baseline.note())
    log.info("report: %s", path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rfm-evaluate", description="Evaluate the segmenter.")
    parser.add_argument("--model", default=paths.PROCESSING_MODEL_IN, help="model folder or model.tar.gz")
    parser.add_argument("--features", default=paths.PROCESSING_FEATURES_IN, help="folder with rfm.parquet")
    parser.add_argument("--output", default=paths.PROCESSING_EVALUATION_OUT, help="folder for evaluation.json")
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument("--job-config", default=None,
                        help="SageMaker's processingjobconfig.json; report.html names the execution in its output URI")
    parser.add_argument("--execution-id", default="", help="execution id shown in report.html (overrides --job-config)")
    parser.add_argument("--min-silhouette", type=float, default=None, help="the quality gate's MinSilhouette")
    parser.add_argument("--min-cluster-share", type=float, default=None, help="the quality gate's MinClusterShare")
    parser.add_argument("--currency", default=DEFAULT_CURRENCY, help="ISO 4217 code money is shown in")
    parser.add_argument("--input-location", default="", help="where the transactions came from (InputDataUrl)")
    parser.add_argument("--published", default="",
                        help="the last publish's folder (s3://bucket/<prefix>/published or a folder): the report "
                             "compares this run with it when something was published")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.debug)

    def run() -> int:
        model = load_model(Path(args.model))
        features = read_features(Path(args.features))
        labels = model.clusters(feature_matrix(features))  # once, for the metrics and the report
        report = evaluate(model, features, args.random_state, labels)
        report["quality_gate"] = gate_of(report, model, args.min_silhouette, args.min_cluster_share)
        baseline = read_baseline(args.published)
        changes = compare_with_baseline(baseline, features, model, labels)
        report["compared_with"] = baseline_summary(baseline, changes)
        output = Path(args.output)
        output.mkdir(parents=True, exist_ok=True)
        (output / paths.EVALUATION_FILE).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        execution_id = args.execution_id or execution_id_from_job_config(args.job_config)
        _write_html_report(output, features, model, report, Path(args.features), execution_id, labels, args,
                           baseline, changes)
        metrics = report["segmentation_metrics"]
        sample = report["metric_sample"]
        if sample["is_sample"]:
            log.info("silhouette, Davies-Bouldin, Calinski-Harabasz and stability on a sample of %d of %d customers "
                     "(seed %d)", sample["sampled"], sample["customers"], sample["seed"])
        log.info("k=%d silhouette=%.3f davies_bouldin=%.3f min_cluster_share=%.3f stability_ari=%.3f",
                 metrics["k"]["value"], metrics["silhouette"]["value"], metrics["davies_bouldin"]["value"],
                 metrics["min_cluster_share"]["value"], metrics["stability_ari"]["value"])
        return 0

    return guarded(run, args.debug)


if __name__ == "__main__":
    sys.exit(main())
