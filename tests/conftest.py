"""Shared fixtures: a trained model, the bundled sample, fake AWS credentials, one local pipeline run.

Building a pipeline definition imports the SageMaker SDK and takes seconds, and a whole local run
takes tens of seconds: the session fixtures below do each once, and the tests that only read them share them.

``make test`` runs the suite on two pytest-xdist workers. Each worker gets whole test files (module
fixtures such as moto servers and the approved run stay built once), and the files that read the one
pending run (:data:`SHARED_RUN_FILES`) go to the same worker, so that it is still built once; so do the
Spark files (:data:`SPARK_FILES`, one JVM). The costliest files are handed out first
(:data:`COSTLIEST_FIRST`), so that both workers finish at about the same time.

Hypothesis draws the same examples on every run (the ``ci`` profile), so a red build is reproducible
and never a coin toss; ``make explore`` (``HYPOTHESIS_PROFILE=explore``) draws new random examples on
every run, to look for cases the fixed ones miss.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import settings

from steps import columns as c
from steps.features.scoring import RFMScorer
from steps.segments import segments_of

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "transactions.csv.gz"
# Test files that use the session's ``pending_run``: one xdist worker runs them all.
SHARED_RUN_FILES = ("tests/test_approval.py", "tests/test_local_runner.py")
# Test files that use the session's ``spark`` (one JVM, seconds to start and warm up): one worker runs them.
SPARK_FILES = ("tests/test_spark.py", "tests/test_spark_state.py")
SHARED_FILES = (SHARED_RUN_FILES, SPARK_FILES)
# Files without module fixtures whose tests are dealt out one by one (a few of their tests take tens of seconds).
SPLIT_FILES = ("tests/test_segmenter.py", "tests/test_features.py")
# The costliest units first (a node id or its start; largest first), so that no worker starts one near the
# end while the other idles; the rest follow by number of tests. Measured: docs/testing.md, "Suite time".
COSTLIEST_FIRST = (
    "tests/test_approval.py", "tests/test_spark.py", "tests/test_history_local.py",
    "tests/test_segmenter.py::test_k_does_not_change_with_the_seed", "tests/test_deploy.py",
    "tests/test_definition.py", "tests/test_history.py", "tests/test_segmenter.py::test_above_max_customers",
    "tests/test_features.py::test_definitions_match_the_reference", "tests/test_features.py::test_parquet_and_csv",
    "tests/test_trigger.py", "tests/test_export.py", "tests/test_segmenter.py::test_automatic_k",
)


# A local Spark session's driver JVM for short test jobs: the quick JIT only and one GC thread. It halves
# the JVM's CPU time on the suite's small inputs (steps/features/spark/session.py reads the variable).
TEST_SPARK_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


@functools.cache
def _cost_rank(scope: str) -> int:
    """A scheduling unit's place in :data:`COSTLIEST_FIRST` (after all of it when not there)."""
    return next((i for i, start in enumerate(COSTLIEST_FIRST) if scope.startswith(start)), len(COSTLIEST_FIRST))


def _one_botocore_loader_per_process() -> None:
    """Every botocore session of the tests reads the service models through one loader.

    moto replaces boto3's default session for each mock, so each test's clients start a new session, and
    each new session read and parsed the service models again (JSON, hundreds of kB for SageMaker):
    ``tests/test_trigger.py`` took 21.2 s alone, 6.7 s with one loader (docs/testing.md, "Suite time").
    The loader caches what it read; the clients of one session already share those read-only models,
    and now every session of the process does.
    """
    import botocore.session

    botocore.session.create_loader = functools.cache(botocore.session.create_loader)


_one_botocore_loader_per_process()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Whole files per worker (xdist's ``loadfile``), each group of :data:`SHARED_FILES` as one, the tests of
    :data:`SPLIT_FILES` one by one, the costliest (:data:`COSTLIEST_FIRST`) first."""
    from xdist.scheduler import LoadFileScheduling

    class SharedFixtureScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = super()._split_scope(nodeid)
            if module in SPLIT_FILES:
                return nodeid
            return next((group[0] for group in SHARED_FILES if module in group), module)

        def _assign_work_unit(self, node: Any) -> None:
            costliest = min(self.workqueue, key=_cost_rank)  # the first of equals: xdist's order (most tests first)
            self.workqueue.move_to_end(costliest, last=False)
            super()._assign_work_unit(node)

    return SharedFixtureScheduling(config, log)


def synthetic_features(customers: int = 600, seed: int = 0) -> pd.DataFrame:
    """Per-customer features with three clearly different groups, scored like the features step."""
    rng = np.random.default_rng(seed)
    third = customers // 3
    recency = np.concatenate([rng.integers(1, 20, third), rng.integers(150, 300, third),
                              rng.integers(400, 700, customers - 2 * third)])
    frequency = np.concatenate([rng.integers(10, 30, third), rng.integers(3, 8, third),
                                np.ones(customers - 2 * third, dtype=int)])
    monetary = np.concatenate([rng.gamma(20, 100, third), rng.gamma(10, 30, third),
                               rng.gamma(5, 5, customers - 2 * third)])
    frame = pd.DataFrame({
        c.CUSTOMER_ID: [f"{i:07d}" for i in range(customers)],
        c.RECENCY_DAYS: recency, c.FREQUENCY: frequency, c.MONETARY: monetary.round(2),
    })
    frame = RFMScorer().fit(frame).transform(frame)
    frame[c.RFM_SEGMENT] = segments_of(frame[c.R_SCORE], frame[c.F_SCORE])
    return frame


@pytest.fixture(scope="session")
def features_frame() -> pd.DataFrame:
    return synthetic_features()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, features_frame: pd.DataFrame) -> Path:
    from steps.model.train import train

    folder = tmp_path_factory.mktemp("model")
    train(features_frame, folder, num_clusters=3, random_state=0)
    return folder


@pytest.fixture
def fake_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and region; nothing may reach a real AWS endpoint."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_SECURITY_TOKEN": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """One local Spark session (``local[2]``) for the worker's Spark tests, stopped at the end of the session."""
    from steps.features.spark.session import JAVA_OPTIONS_ENV, spark_session, stop_spark

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(JAVA_OPTIONS_ENV, os.environ.get(JAVA_OPTIONS_ENV, TEST_SPARK_JAVA_OPTIONS))
        session = spark_session("local[2]")
    yield session
    stop_spark()


@pytest.fixture(scope="session")
def local_definition() -> dict[str, Any]:
    """The main pipeline's definition as ``rfm run-local`` builds it (once per session; nothing cached on disk)."""
    from pipeline.local.run_local import build_definition

    return build_definition()


@dataclass(frozen=True)
class PendingRun:
    """A finished local run whose package waits for approval: where it is and what the runner returned."""

    output: Path
    result: Any  # pipeline.local.runner.ExecutionResult

    def copy_to(self, folder: Path) -> Path:
        """A private copy of the run's output, for a test that changes it (e.g. approves the package)."""
        shutil.copytree(self.output, folder)
        return folder


@pytest.fixture(scope="session")
def pending_run(tmp_path_factory: pytest.TempPathFactory, local_definition: dict[str, Any]) -> PendingRun:
    """One run on the bundled sample with the default ModelApprovalStatus (registered, not published), k=4.

    Read-only: a test that changes the run works on ``pending_run.copy_to(tmp_path / ...)``.
    """
    from pipeline.local.run_local import run_local

    output = tmp_path_factory.mktemp("pending")
    result = run_local(str(SAMPLE), output, {"NumClusters": "4"}, definition=local_definition)
    assert result.status == "Succeeded", result.failure
    return PendingRun(output, result)
