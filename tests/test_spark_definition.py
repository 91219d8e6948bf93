"""``get_pipeline(feature_engine="spark")``: ComputeRFM as a Spark processing step, offline and stable."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.test_definition import KWARGS, REGION, Offline, join, offline, output_uri  # noqa: F401  (fixture)

INSTANCES = 4


@pytest.fixture(scope="module")
def spark_pipeline(offline: Offline) -> Any:  # noqa: F811
    from pipeline.definition import get_pipeline

    return get_pipeline(**KWARGS, feature_engine="spark", processing_instance_count=INSTANCES)


@pytest.fixture(scope="module")
def steps(spark_pipeline: Any) -> dict[str, dict[str, Any]]:
    definition = json.loads(spark_pipeline.definition())
    return {step["Name"]: step for step in definition["Steps"]}


@pytest.fixture(scope="module")
def duckdb_steps(offline: Offline) -> dict[str, dict[str, Any]]:  # noqa: F811
    from pipeline.definition import get_pipeline

    return {step["Name"]: step for step in json.loads(get_pipeline(**KWARGS).definition())["Steps"]}


def test_compute_rfm_is_a_spark_processing_step(steps: dict[str, dict[str, Any]],
                                                duckdb_steps: dict[str, dict[str, Any]]) -> None:
    from pipeline.step_builders import SPARK_APP_KEY

    step = steps["ComputeRFM"]
    args = step["Arguments"]
    assert step["Type"] == "Processing"
    app = args["AppSpecification"]
    # The SDK's image lookup: the AWS Spark 3.5 processing image of the region's ECR account.
    assert app["ImageUri"] == (f"173754725891.dkr.ecr.{REGION}.amazonaws.com/sagemaker-spark-processing:"
                               "3.5-cpu-py312")
    assert app["ContainerEntrypoint"] == ["smspark-submit", "/opt/ml/processing/input/code/app.py"]
    assert args["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == INSTANCES
    assert args["ProcessingResources"]["ClusterConfig"]["InstanceType"] == {"Get": "Parameters.ProcessingInstanceType"}
    code = [i for i in args["ProcessingInputs"] if i["InputName"] == "code"]
    assert code[0]["S3Input"]["S3Uri"] == f"s3://{KWARGS['default_bucket']}/rfm/{SPARK_APP_KEY}"
    arguments = app["ContainerArguments"]
    # The DuckDB step's state arguments: the Spark engine folds into the same incremental state.
    duckdb_arguments = duckdb_steps["ComputeRFM"]["Arguments"]["AppSpecification"]["ContainerArguments"]
    state = f"s3://{KWARGS['default_bucket']}/rfm/state"
    assert arguments[arguments.index("--state") + 1] == duckdb_arguments[duckdb_arguments.index("--state") + 1] == state
    assert join("--rebuild=", {"Get": "Parameters.Rebuild"}) in arguments
    fingerprint = [a for a in arguments if isinstance(a, dict) and "--history-fingerprint=" in json.dumps(a)]
    assert len(fingerprint) == 1 and fingerprint[0] in duckdb_arguments  # the plan's fingerprint keys the run
    assert arguments == duckdb_arguments  # the whole command line, as the DuckDB step's
    for option in ("--output", "--transform-output", "--quarantine-output"):
        assert option in arguments
    for option, parameter in (("--format=", "InputFormat"), ("--as-of=", "AsOfDate"),
                              ("--column-mapping=", "ColumnMapping"), ("--timezone=", "Timezone")):
        assert join(option, {"Get": f"Parameters.{parameter}"}) in arguments
    assert set(args["Environment"]) == {"RFM_SPARK_WORKDIR"}


def test_downstream_steps_are_unchanged(steps: dict[str, dict[str, Any]],
                                        duckdb_steps: dict[str, dict[str, Any]]) -> None:
    assert set(duckdb_steps) == set(steps)
    for name in set(steps) - {"ComputeRFM"}:
        assert steps[name] == duckdb_steps[name], name
    outputs = [o["OutputName"] for o in steps["ComputeRFM"]["Arguments"]["ProcessingOutputConfig"]["Outputs"]]
    duckdb_outputs = duckdb_steps["ComputeRFM"]["Arguments"]["ProcessingOutputConfig"]["Outputs"]
    assert outputs == [o["OutputName"] for o in duckdb_outputs]
    assert json.dumps(output_uri("ComputeRFM", "features")) in json.dumps(steps["TrainSegmenter"])


def test_spark_definition_is_byte_identical_across_builds(offline: Offline, spark_pipeline: Any) -> None:  # noqa: F811
    from pipeline.definition import get_pipeline
    from pipeline.driver import render_definition

    first = render_definition(spark_pipeline)
    again = get_pipeline(**KWARGS, feature_engine="spark", processing_instance_count=INSTANCES)
    assert render_definition(again) == first
    assert offline.connections == []


def test_bad_engine_and_instance_count_are_one_line_errors(offline: Offline) -> None:  # noqa: F811
    from pipeline.definition import get_pipeline
    from steps.errors import PipelineError

    with pytest.raises(PipelineError, match="feature_engine 'polars' is not one of duckdb, spark"):
        get_pipeline(**KWARGS, feature_engine="polars")
    with pytest.raises(PipelineError, match="processing_instance_count 0"):
        get_pipeline(**KWARGS, feature_engine="spark", processing_instance_count=0)
