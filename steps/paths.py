"""Container paths and artifact names: the one place they are spelled.

Step code never hard-codes ``/opt/ml``: each path is read from the standard
SageMaker environment variable when set, else the container default.
"""

from __future__ import annotations

import os
from pathlib import Path

# Artifact file names.
RFM_FILE = "rfm.parquet"
QUALITY_FILE = "quality.json"
QUARANTINE_DIR = "quarantine"
# The batch-transform input: ComputeRFM writes it as customers-00000.csv, customers-00001.csv, ... (a fixed
# number of customers each, in customer id order; the name sorts as the ids do), because SageMaker hands each
# transform instance whole files: several files let TransformInstanceCount instances share the work.
TRANSFORM_INPUT_PREFIX = "customers-"
TRANSFORM_INPUT_SUFFIX = ".csv"
TRANSFORM_INPUT_GLOB = f"{TRANSFORM_INPUT_PREFIX}*{TRANSFORM_INPUT_SUFFIX}"
MODEL_ARCHIVE = "model.tar.gz"
MODEL_FILE = "segmenter.joblib"
MODEL_META_FILE = "model.json"
EVALUATION_FILE = "evaluation.json"
REPORT_FILE = "report.html"
SEGMENTS_FILE = "segments.parquet"
REGISTRY_FILE = "registry.json"
CHANGES_FILE = "changes.parquet"  # beside segments.parquet: who entered, left or moved since the last publish
# The last published segments (what the next publish compares with), beside executions/: never expires.
PUBLISHED_DIR = "published"
PUBLISHED_MANIFEST = "published.json"
# A local run's output folder: each registered package's report (reports/<version>.html) and the last run.
REPORTS_DIR = "reports"
LAST_RUN_FILE = "last_run.json"
# Every pipeline execution writes under s3://<bucket>/<prefix>/executions/<execution id>/ (expires after
# ExecutionRetentionDays), except what a registered model package refers to: its model.tar.gz, evaluation
# and the features and transform input that publishing it reads, under <prefix>/model/<execution id>/,
# which does not expire (a package can be approved or redeployed at any time).
EXECUTIONS_DIR = "executions"
PACKAGE_DIR = "model"
# The incremental per-customer state lives under s3://<bucket>/<prefix>/state/ (docs/history.md).
STATE_DIR = "state"

# Processing container paths (LocalPath of inputs and outputs).
PROCESSING_ROOT = "/opt/ml/processing"
PROCESSING_TRANSACTIONS = f"{PROCESSING_ROOT}/input/transactions"
PROCESSING_FEATURES_OUT = f"{PROCESSING_ROOT}/output/features"
PROCESSING_TRANSFORM_OUT = f"{PROCESSING_ROOT}/output/transform"
PROCESSING_QUARANTINE_OUT = f"{PROCESSING_ROOT}/output/quarantine"
PROCESSING_MODEL_IN = f"{PROCESSING_ROOT}/input/model"
PROCESSING_FEATURES_IN = f"{PROCESSING_ROOT}/input/features"
PROCESSING_EVALUATION_OUT = f"{PROCESSING_ROOT}/output/evaluation"
PROCESSING_PLAN_OUT = f"{PROCESSING_ROOT}/output/plan"
# Where SageMaker Processing puts the job's CreateProcessingJob request inside the container.
PROCESSING_JOB_CONFIG = "/opt/ml/config/processingjobconfig.json"

# Training container paths.
TRAINING_CHANNEL = "features"
# A failed job's one-line reason: training jobs show FAILURE_FILE as FailureReason, processing jobs
# MESSAGE_FILE as ExitMessage (the first 1 KB of each, UTF-8), both in the job output folder.
FAILURE_FILE = "failure"
MESSAGE_FILE = "message"
_DEFAULTS = {
    "SM_MODEL_DIR": "/opt/ml/model",
    "SM_OUTPUT_DIR": "/opt/ml/output",
    "SM_OUTPUT_DATA_DIR": "/opt/ml/output/data",
    "SM_INPUT_CONFIG_DIR": "/opt/ml/input/config",
    f"SM_CHANNEL_{TRAINING_CHANNEL.upper()}": f"/opt/ml/input/data/{TRAINING_CHANNEL}",
}


def transform_input_file(index: int) -> str:
    """The name of the transform input's file ``index`` (from 0): ``customers-00000.csv``, ..."""
    return f"{TRANSFORM_INPUT_PREFIX}{index:05d}{TRANSFORM_INPUT_SUFFIX}"


def output_folder(path: str | Path, option: str = "--output") -> Path:
    """``path`` as an existing folder (created when missing).

    Raises
    ------
    RFMError
        When ``path`` is a file or cannot be created.
    """
    from steps.errors import RFMError

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise RFMError("this is a file, not a folder", str(folder), f"give {option} a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RFMError(f"cannot create the folder ({error.strerror})", str(folder),
                       f"give {option} a folder you can write to") from None
    return folder


def sm_path(variable: str) -> Path:
    """Path from a standard SageMaker environment variable, else the container default."""
    value = os.environ.get(variable) or _DEFAULTS.get(variable)
    if value is None:
        raise KeyError(f"no default for {variable}")
    return Path(value)


def model_dir() -> Path:
    return sm_path("SM_MODEL_DIR")


def training_channel() -> Path:
    return sm_path(f"SM_CHANNEL_{TRAINING_CHANNEL.upper()}")


def hyperparameters_file() -> Path:
    return sm_path("SM_INPUT_CONFIG_DIR") / "hyperparameters.json"


def output_data_dir() -> Path:
    return sm_path("SM_OUTPUT_DATA_DIR")


def job_output_dir() -> Path:
    """The job output folder (``/opt/ml/output``) where SageMaker reads the failure reason."""
    return sm_path("SM_OUTPUT_DIR")
