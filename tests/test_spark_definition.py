"""``get_pipeline(feature_engine="spark")``: ComputeRFM as a Spark processing step, offline and stable."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from tests.test_definition import KWARGS, REPO, Offline, join, offline, output_uri  # noqa: F401  (fixture)

INSTANCES = 4
# The project's Spark image, as buildspec.yml pushes it (FEATURE_ENGINE=spark): never AWS's own image.
SPARK_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/rfm-segmentation:spark-src-0a1b2c3d4e5f6a7b"
SPARK_KWARGS = {**KWARGS, "feature_engine": "spark", "spark_image_uri": SPARK_IMAGE}


@pytest.fixture(scope="module")
def spark_pipeline(offline: Offline) -> Any:  # noqa: F811
    from pipeline.definition import get_pipeline

    # The count as text, as buildspec.yml's shell-built --kwargs carries it.
    return get_pipeline(**SPARK_KWARGS, processing_instance_count=str(INSTANCES))


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
    # The project's Spark image (containers/Dockerfile.spark): AWS's lacks DuckDB, pyarrow and `steps`.
    assert app["ImageUri"] == SPARK_IMAGE
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
                              ("--column-mapping=", "ColumnMapping"), ("--timezone=", "Timezone"),
                              ("--encoding=", "Encoding")):
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
    again = get_pipeline(**SPARK_KWARGS, processing_instance_count=INSTANCES)
    assert render_definition(again) == first  # the count as a number or as text: the same definition
    assert offline.connections == []


def test_bad_engine_and_instance_count_are_one_line_errors(offline: Offline) -> None:  # noqa: F811
    from pipeline.definition import get_pipeline
    from steps.errors import PipelineError

    with pytest.raises(PipelineError, match="feature_engine 'polars' is not one of duckdb, spark"):
        get_pipeline(**KWARGS, feature_engine="polars")
    with pytest.raises(PipelineError, match="processing_instance_count 0"):
        get_pipeline(**SPARK_KWARGS, processing_instance_count=0)
    for count in ("four", "2.5", True):
        with pytest.raises(PipelineError, match=f"processing_instance_count {count!r} is not a whole number"):
            get_pipeline(**SPARK_KWARGS, processing_instance_count=count)


def test_no_spark_image_is_a_one_line_error_naming_what_to_pass(offline: Offline) -> None:  # noqa: F811
    """AWS's Spark image lacks the project's package: no silent fallback to it, as for image_uri."""
    from pipeline.definition import get_pipeline
    from steps.errors import PipelineError

    for missing in (None, ""):  # "" is what buildspec.yml passes when it built no Spark image
        with pytest.raises(PipelineError) as raised:
            get_pipeline(**KWARGS, feature_engine="spark", spark_image_uri=missing)
        message = str(raised.value)
        assert len(message.splitlines()) == 1
        assert "no spark_image_uri given" in message
        assert "aws ssm get-parameter --name /rfm-segmentation/spark-image-uri" in message
    assert offline.connections == []


def _buildspec_commands() -> list[str]:
    buildspec = yaml.safe_load((REPO / "buildspec.yml").read_text())
    return [command for phase in buildspec["phases"].values() for command in phase.get("commands", [])]


def _shell_value(text: str, variables: dict[str, str]) -> str:
    """``text`` with buildspec.yml's ``${NAME}`` references replaced by ``variables``."""
    return re.sub(r"\$\{([A-Z_]+)\}", lambda match: variables[match.group(1)], text)


def test_the_build_uploads_the_submit_app_the_step_reads(steps: dict[str, dict[str, Any]]) -> None:
    """buildspec.yml copies steps/features/spark/app.py to the key the definition's code input names.

    The definition is built with the bucket and prefix buildspec.yml passes in --kwargs
    (default_bucket=${DATA_BUCKET}, base_job_prefix=${BASE_JOB_PREFIX}).
    """
    from pipeline.step_builders import SPARK_APP

    commands = _buildspec_commands()
    uploads = re.findall(r'aws s3 cp (\S+) "([^"]+)"', "\n".join(commands))
    assert len(uploads) == 1, uploads
    [(source, destination)] = uploads
    assert source == SPARK_APP and (REPO / source).is_file()
    [kwargs_line] = [c for c in commands if c.startswith("KWARGS=")]
    kwargs = json.loads(re.match(r'KWARGS="(.*)"$', kwargs_line).group(1).replace('\\"', '"'))
    assert kwargs["default_bucket"] == "${DATA_BUCKET}" and kwargs["base_job_prefix"] == "${BASE_JOB_PREFIX}"
    assert kwargs["spark_image_uri"] == "${SPARK_IMAGE_URI}" and kwargs["feature_engine"] == "${FEATURE_ENGINE}"
    uploaded = _shell_value(destination, {"DATA_BUCKET": KWARGS["default_bucket"], "BASE_JOB_PREFIX": "rfm"})
    code = [i for i in steps["ComputeRFM"]["Arguments"]["ProcessingInputs"] if i["InputName"] == "code"]
    assert code[0]["S3Input"]["S3Uri"] == uploaded
    # After the stack's outputs name the bucket, before anything runs the pipeline.
    text = "\n".join(commands)
    assert text.index("DATA_BUCKET=$(stack_output DataBucketName)") < text.index("aws s3 cp") < text.index(
        "run-pipeline")
