"""One quiet SparkSession per process.

Locally (``rfm features --engine spark``, the tests) the session runs
``local[*]`` unless ``RFM_SPARK_MASTER`` says otherwise, and its driver JVM
takes the options in ``RFM_SPARK_JAVA_OPTIONS`` (e.g. ``-Xmx8g``); under
``spark-submit`` (the SageMaker Spark processing image) the master and the
executors come from the submit and this only names the application.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from steps.errors import RFMError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

MASTER_ENV = "RFM_SPARK_MASTER"
JAVA_OPTIONS_ENV = "RFM_SPARK_JAVA_OPTIONS"  # extra options of a local session's driver JVM
APP_NAME = "rfm-features"
DEFAULT_MASTER = "local[*]"
# Small local inputs: a handful of shuffle partitions, not Spark's 200 (one task each).
LOCAL_SHUFFLE_PARTITIONS = "4"
LOG_CONFIG = Path(__file__).with_name("log4j2.properties")

_session: SparkSession | None = None


def has_java() -> bool:
    """Whether a Java runtime is there for local pyspark (``JAVA_HOME``, or ``java`` on the PATH)."""
    return bool(os.environ.get("JAVA_HOME") or shutil.which("java"))


def require_java() -> None:
    """Stop with one line when no Java runtime is installed (local pyspark starts a JVM)."""
    if has_java():
        return
    raise RFMError(
        "the Spark engine needs a Java 17 runtime and none is installed", "--engine spark",
        "Install one (Debian/Ubuntu: apt-get install openjdk-17-jre-headless), or use --engine duckdb",
    )


def spark_session(master: str | None = None) -> SparkSession:
    """The process's SparkSession (created on first use, then shared).

    Parameters
    ----------
    master : str, optional
        Spark master for a new local session (default ``RFM_SPARK_MASTER`` or
        ``local[*]``); ignored once a session exists or when ``spark-submit``
        set one.
    """
    global _session
    if _session is not None and not _session.sparkContext._jsc.sc().isStopped():
        return _session
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise RFMError(
            "the Spark engine needs pyspark, which is not installed", "--engine spark",
            'Install the project with its spark extra: pip install -c constraints.txt -e ".[spark]"',
        ) from None
    builder = SparkSession.builder.appName(APP_NAME)
    # spark-submit starts Python with a JVM gateway already open: the master comes from the submit.
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        require_java()
        # The tasks run this interpreter (the project's environment), not whatever python3 is on PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        # The driver JVM starts before any builder option applies: its log configuration goes on the submit.
        options = f"-Dlog4j2.configurationFile={LOG_CONFIG.as_uri()} {os.environ.get(JAVA_OPTIONS_ENV, '')}".strip()
        os.environ.setdefault("PYSPARK_SUBMIT_ARGS", f"--driver-java-options {shlex.quote(options)} pyspark-shell")
        builder = (
            builder.master(master or os.environ.get(MASTER_ENV) or DEFAULT_MASTER)
            .config("spark.sql.shuffle.partitions", LOCAL_SHUFFLE_PARTITIONS)
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")

        )
    builder = builder.config("spark.sql.session.timeZone", "UTC").config("spark.sql.ansi.enabled", "false")
    _session = builder.getOrCreate()
    _session.sparkContext.setLogLevel("ERROR")
    for name in ("py4j", "pyspark"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return _session


def stop_spark() -> None:
    """Stop the shared session (the next :func:`spark_session` starts a new one)."""
    global _session
    if _session is not None:
        _session.stop()
        _session = None
