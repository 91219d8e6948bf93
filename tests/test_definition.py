"""The SageMaker Pipelines definition and the MLOps-template CLIs, offline.

Nothing here may reach the network: fake credentials, ``AWS_ENDPOINT_URL`` pointing at a
closed local port, and ``socket.connect`` replaced by a recorder that refuses every
connection and every name lookup (in this process, and through ``sitecustomize`` in the CLI
subprocesses).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.client
import botocore.loaders
import pytest

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
REGION = "us-east-1"
BUCKET = "rfm-test-bucket"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/rfm-segmentation:src-0a1b2c3d4e5f6a7b"
KWARGS = {"region": REGION, "role": ROLE, "default_bucket": BUCKET, "image_uri": IMAGE}
EXECUTION_PREFIX = f"s3://{BUCKET}/rfm/executions"
PACKAGE_PREFIX = f"s3://{BUCKET}/rfm/model"
EXECUTION_ID = {"Get": "Execution.PipelineExecutionId"}
REPO = Path(__file__).resolve().parents[1]

EXPECTED_TYPES = {
    "PlanHistory": "Processing",
    "ComputeRFM": "Processing",
    "TrainSegmenter": "Training",
    "EvaluateSegmenter": "Processing",
    "CheckQuality": "Condition",
    "RegisterSegmenter": "RegisterModel",
    "PublishIfApproved": "Condition",
    "CreateModel": "Model",
    "AssignSegments": "Transform",
    "ExportSegments": "Lambda",
    "QualityGateFailed": "Fail",
}

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def documented_parameters() -> list[tuple[str, str, Any]]:
    """``(name, type, default)`` of each row of the user docs' pipeline-parameter table, in order.

    The table is the one whose header starts ``| Parameter | Type | Default |`` (README or docs/);
    a row may name several parameters (``A / B``); ``<bucket>`` and ``<prefix>`` stand for this
    build's bucket and the default job prefix.
    """
    for page in DOCS:
        lines = page.read_text(encoding="utf-8").splitlines()
        header = re.compile(r"^\|\s*Parameter\s*\|\s*Type\s*\|\s*Default\s*\|")
        starts = [i for i, line in enumerate(lines) if header.match(line)]
        if not starts:
            continue
        rows: list[tuple[str, str, Any]] = []
        for line in lines[starts[0] + 2:]:
            if not line.startswith("|"):
                break
            names, kind, default = (cell.strip() for cell in line.strip("|").split("|")[:3])
            text = default.strip("`").replace("<bucket>", BUCKET).replace("<prefix>", "rfm")
            text = "" if text == '""' else text
            value = {"Integer": int, "Float": float, "Boolean": lambda v: v == "true"}.get(kind, str)(text)
            rows += [(name.strip(), kind, value) for name in names.split("/")]
        return rows
    raise AssertionError(f"no '| Parameter | Type | Default |' table in {', '.join(p.name for p in DOCS)}")


# Steps each step reads from (property references, JsonGet, DependsOn).
EXPECTED_UPSTREAM = {
    "PlanHistory": set(),
    "ComputeRFM": {"PlanHistory"},
    "TrainSegmenter": {"ComputeRFM"},
    "EvaluateSegmenter": {"ComputeRFM", "TrainSegmenter"},
    "CheckQuality": {"EvaluateSegmenter"},
    "QualityGateFailed": {"EvaluateSegmenter"},
    "RegisterSegmenter": {"ComputeRFM", "TrainSegmenter", "EvaluateSegmenter"},
    "PublishIfApproved": {"RegisterSegmenter"},
    "CreateModel": {"TrainSegmenter"},
    "AssignSegments": {"ComputeRFM", "CreateModel"},
    "ExportSegments": {"ComputeRFM", "AssignSegments", "RegisterSegmenter"},
}

# The service response shape each step type's properties come from.
PROPERTY_SHAPES = {
    "Processing": "DescribeProcessingJobResponse",
    "Training": "DescribeTrainingJobResponse",
    "Transform": "DescribeTransformJobResponse",
    "Model": "DescribeModelOutput",
    "RegisterModel": "DescribeModelPackageOutput",
}

_SITECUSTOMIZE = """
import os, socket

def _refuse(*args, **kwargs):
    with open(os.environ["RFM_TEST_NETWORK_LOG"], "a") as log:
        log.write(repr(args[-1] if args else kwargs) + "\\n")
    raise OSError("network access refused by the test")

socket.socket.connect = lambda sock, address: _refuse(address)
socket.getaddrinfo = lambda host, *args, **kwargs: _refuse(host)
"""


def offline_env(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> None:
    """Fake credentials, a fixed region, no user AWS config, a dead endpoint."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("SAGEMAKER_VALIDATE_ROLE", "false")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")


class Offline:
    """What the offline build saw: refused connections and telemetry calls."""

    def __init__(self) -> None:
        self.connections: list[Any] = []
        self.telemetry: list[Any] = []


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Offline]:
    seen = Offline()

    def refuse(address: Any) -> None:
        seen.connections.append(address)
        raise OSError(f"network access refused by the test: {address}")

    with pytest.MonkeyPatch.context() as monkeypatch:
        offline_env(monkeypatch, tmp_path_factory.mktemp("aws"))
        monkeypatch.setattr(socket.socket, "connect", lambda sock, address: refuse(address))
        monkeypatch.setattr(socket, "getaddrinfo", lambda host, *args, **kwargs: refuse(host))
        from sagemaker.core.telemetry import telemetry_logging

        monkeypatch.setattr(
            telemetry_logging, "_send_telemetry_request", lambda *a, **k: seen.telemetry.append(a)
        )
        yield seen


@pytest.fixture(scope="module")
def pipeline(offline: Offline) -> Any:
    from pipeline.definition import get_pipeline

    return get_pipeline(**KWARGS)


@pytest.fixture(scope="module")
def definition(pipeline: Any) -> dict[str, Any]:
    return json.loads(pipeline.definition())


@pytest.fixture(scope="module")
def steps(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every step, nested ones included, by name."""
    found: dict[str, dict[str, Any]] = {}

    def collect(step_list: list[dict[str, Any]]) -> None:
        for step in step_list:
            assert step["Name"] not in found, f"duplicate step {step['Name']}"
            found[step["Name"]] = step
            if step["Type"] == "Condition":
                collect(step["Arguments"]["IfSteps"])
                collect(step["Arguments"]["ElseSteps"])

    collect(definition["Steps"])
    return found


def gets(obj: Any) -> list[str]:
    """Every ``{"Get": ...}`` expression anywhere in ``obj``."""
    if isinstance(obj, dict):
        found = [obj["Get"]] if isinstance(obj.get("Get"), str) else []
        return found + [g for value in obj.values() for g in gets(value)]
    if isinstance(obj, list):
        return [g for item in obj for g in gets(item)]
    return []


def upstream(step: dict[str, Any]) -> set[str]:
    """Steps a step reads from; a condition's branches are steps of their own."""
    arguments = step["Arguments"]
    if step["Type"] == "Condition":
        arguments = {"Conditions": arguments["Conditions"]}
    referenced = {g.split(".")[1] for g in gets(arguments) if g.startswith("Steps.")}
    return referenced | set(step.get("DependsOn", []))


def names(step_list: list[dict[str, Any]]) -> list[str]:
    return [step["Name"] for step in step_list]


def join(*values: Any, on: str = "") -> dict[str, Any]:
    return {"Std:Join": {"On": on, "Values": list(values)}}


def execution_uri(suffix: str) -> dict[str, Any]:
    return join(EXECUTION_PREFIX, EXECUTION_ID, suffix, on="/")


def package_uri(suffix: str) -> dict[str, Any]:
    return join(PACKAGE_PREFIX, EXECUTION_ID, suffix, on="/")


def output_uri(step: str, output: str) -> dict[str, str]:
    return {"Get": f"Steps.{step}.ProcessingOutputConfig.Outputs['{output}'].S3Output.S3Uri"}


def json_get(path: str) -> dict[str, Any]:
    return {
        "Std:JsonGet": {
            "PropertyFile": {"Get": "Steps.EvaluateSegmenter.PropertyFiles.EvaluationReport"},
            "Path": path,
        }
    }


# --------------------------------------------------------------------------- structure


def test_step_names_types_and_nesting(definition: dict[str, Any], steps: dict[str, dict[str, Any]]) -> None:
    assert {name: step["Type"] for name, step in steps.items()} == EXPECTED_TYPES
    assert names(definition["Steps"]) == ["PlanHistory", "ComputeRFM", "TrainSegmenter", "EvaluateSegmenter",
                                          "CheckQuality"]
    check = steps["CheckQuality"]["Arguments"]
    assert names(check["IfSteps"]) == ["RegisterSegmenter", "PublishIfApproved"]
    assert names(check["ElseSteps"]) == ["QualityGateFailed"]
    publish = steps["PublishIfApproved"]["Arguments"]
    assert names(publish["IfSteps"]) == ["CreateModel", "AssignSegments", "ExportSegments"]
    assert publish["ElseSteps"] == []


def test_every_step_reads_well_in_studio(steps: dict[str, dict[str, Any]]) -> None:
    for name, step in steps.items():
        assert step.get("DisplayName"), name
        assert len(step.get("Description", "")) > 20, name


def test_parameters_and_defaults_are_the_documented_ones(definition: dict[str, Any]) -> None:
    declared = [(p["Name"], p["Type"], p["DefaultValue"]) for p in definition["Parameters"]]
    assert declared == documented_parameters()


def test_model_approval_status_declares_its_allowed_values(definition: dict[str, Any]) -> None:
    allowed = {p["Name"]: p.get("EnumValues") for p in definition["Parameters"]}
    assert allowed.pop("ModelApprovalStatus") == ["PendingManualApproval", "Approved", "Rejected"]
    assert set(allowed.values()) == {None}


def test_dependency_edges(steps: dict[str, dict[str, Any]]) -> None:
    assert {name: upstream(step) for name, step in steps.items()} == EXPECTED_UPSTREAM
    assert steps["PublishIfApproved"]["DependsOn"] == ["RegisterSegmenter"]


def _walk_shape(shapes: dict[str, Any], shape_name: str, path: str) -> None:
    """Fail unless ``path`` (``A.B['x'].C``) exists in the botocore shape ``shape_name``."""
    shape = shapes[shape_name]
    for segment in path.split("."):
        match = re.fullmatch(r"(\w+)(\[.+\])?", segment)
        assert match, f"bad property segment {segment!r} in {path}"
        member, index = match.groups()
        assert member in shape.get("members", {}), f"{shape_name} has no {member} ({path})"
        shape = shapes[shape["members"][member]["shape"]]
        if index:
            shape = shapes[shape["member"]["shape"] if shape["type"] == "list" else shape["value"]["shape"]]


def test_every_reference_resolves(definition: dict[str, Any], steps: dict[str, dict[str, Any]]) -> None:
    parameters = {p["Name"] for p in definition["Parameters"]}
    shapes = botocore.loaders.Loader().load_service_model("sagemaker", "service-2")["shapes"]
    every = gets(definition)
    assert len(every) > 30
    for expression in every:
        kind, _, rest = expression.partition(".")
        if kind == "Parameters":
            assert rest in parameters, expression
        elif kind == "Execution":
            assert rest in {"PipelineExecutionId", "PipelineName"}, expression
        else:
            assert kind == "Steps", expression
            step_name, _, path = rest.partition(".")
            assert step_name in steps, f"{expression}: no step {step_name}"
            step = steps[step_name]
            if path.startswith("PropertyFiles."):
                declared = [f["PropertyFileName"] for f in step.get("PropertyFiles", [])]
                assert path.removeprefix("PropertyFiles.") in declared, expression
            elif path.startswith("OutputParameters["):
                declared = [o["OutputName"] for o in step["OutputParameters"]]
                assert re.fullmatch(r"OutputParameters\['(\w+)'\]", path).group(1) in declared
            else:
                _walk_shape(shapes, PROPERTY_SHAPES[step["Type"]], path)
            output = re.search(r"Outputs\['(\w+)'\]", path)
            if output:
                outputs = step["Arguments"]["ProcessingOutputConfig"]["Outputs"]
                assert output.group(1) in [o["OutputName"] for o in outputs], expression


def test_property_file_on_evaluate(steps: dict[str, dict[str, Any]]) -> None:
    evaluate = steps["EvaluateSegmenter"]
    assert evaluate["PropertyFiles"] == [
        {"PropertyFileName": "EvaluationReport", "OutputName": "evaluation", "FilePath": "evaluation.json"}
    ]


# --------------------------------------------------------------------------- step arguments


def test_compute_rfm_arguments(steps: dict[str, dict[str, Any]]) -> None:
    arguments = steps["ComputeRFM"]["Arguments"]
    app = arguments["AppSpecification"]
    assert app["ImageUri"] == IMAGE
    assert app["ContainerEntrypoint"] == ["rfm-features"]
    fingerprint = {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.PlanHistory.PropertyFiles.HistoryPlan"},
                                   "Path": "fingerprint"}}
    assert app["ContainerArguments"] == [
        "--state", f"s3://{BUCKET}/rfm/state",
        join("--history-fingerprint=", fingerprint),
        join("--rebuild=", {"Get": "Parameters.Rebuild"}),
        "--output", "/opt/ml/processing/output/features",
        "--transform-output", "/opt/ml/processing/output/transform",
        "--quarantine-output", "/opt/ml/processing/output/quarantine",
        join("--format=", {"Get": "Parameters.InputFormat"}),
        join("--as-of=", {"Get": "Parameters.AsOfDate"}),
        join("--column-mapping=", {"Get": "Parameters.ColumnMapping"}),
        join("--timezone=", {"Get": "Parameters.Timezone"}),
        join("--encoding=", {"Get": "Parameters.Encoding"}),
    ]  # fmt: skip
    # It reads exactly the object versions PlanHistory listed (docs/history.md), not an S3Prefix of siblings.
    assert "ProcessingInputs" not in arguments
    outputs = {o["OutputName"]: o["S3Output"] for o in arguments["ProcessingOutputConfig"]["Outputs"]}
    assert outputs["features"]["LocalPath"] == "/opt/ml/processing/output/features"
    assert outputs["features"]["S3Uri"] == package_uri("features")
    assert outputs["transform"]["LocalPath"] == "/opt/ml/processing/output/transform"
    assert outputs["transform"]["S3Uri"] == package_uri("transform")
    # Apart from the features, so the template's shorter quarantine lifecycle rule (a key prefix) applies.
    assert outputs["quarantine"]["LocalPath"] == "/opt/ml/processing/output/quarantine"
    assert outputs["quarantine"]["S3Uri"] == join(f"s3://{BUCKET}/rfm/quarantine", EXECUTION_ID, on="/")
    cluster = arguments["ProcessingResources"]["ClusterConfig"]
    assert cluster["InstanceType"] == {"Get": "Parameters.ProcessingInstanceType"}
    assert cluster["InstanceCount"] == 1
    assert arguments["RoleArn"] == ROLE
    assert "ProcessingJobName" not in arguments


def test_evaluate_arguments(steps: dict[str, dict[str, Any]]) -> None:
    arguments = steps["EvaluateSegmenter"]["Arguments"]
    assert arguments["AppSpecification"]["ContainerEntrypoint"] == ["rfm-evaluate"]
    assert arguments["AppSpecification"]["ContainerArguments"] == [
        "--model", "/opt/ml/processing/input/model",
        "--features", "/opt/ml/processing/input/features",
        "--output", "/opt/ml/processing/output/evaluation",
        join("--random-state=", {"Get": "Parameters.RandomSeed"}),
        "--job-config", "/opt/ml/config/processingjobconfig.json",
        join("--min-silhouette=", {"Get": "Parameters.MinSilhouette"}),
        join("--min-cluster-share=", {"Get": "Parameters.MinClusterShare"}),
        join("--currency=", {"Get": "Parameters.Currency"}),
        join("--input-location=", {"Get": "Parameters.InputDataUrl"}),
        # The last publish: read by the step when there is one, so not a ProcessingInput (which fails on an
        # empty prefix), and a constant, so the step's cache key does not change with it.
        "--published", f"s3://{BUCKET}/rfm/published",
    ]  # fmt: skip
    inputs = {i["InputName"]: i["S3Input"] for i in arguments["ProcessingInputs"]}
    assert set(inputs) == {"model", "features"}
    assert inputs["model"]["S3Uri"] == {"Get": "Steps.TrainSegmenter.ModelArtifacts.S3ModelArtifacts"}
    assert inputs["model"]["LocalPath"] == "/opt/ml/processing/input/model"
    assert inputs["features"]["S3Uri"] == output_uri("ComputeRFM", "features")
    assert inputs["features"]["LocalPath"] == "/opt/ml/processing/input/features"
    [evaluation] = arguments["ProcessingOutputConfig"]["Outputs"]
    assert evaluation["OutputName"] == "evaluation"
    assert evaluation["S3Output"]["LocalPath"] == "/opt/ml/processing/output/evaluation"
    assert evaluation["S3Output"]["S3Uri"] == package_uri("evaluation")


def test_training_arguments(steps: dict[str, dict[str, Any]]) -> None:
    arguments = steps["TrainSegmenter"]["Arguments"]
    assert arguments["AlgorithmSpecification"] == {
        "TrainingImage": IMAGE,
        "TrainingInputMode": "File",
    }
    assert arguments["HyperParameters"] == {
        "num_clusters": join({"Get": "Parameters.NumClusters"}),
        "random_state": join({"Get": "Parameters.RandomSeed"}),
        "max_customers": join({"Get": "Parameters.TrainingSampleSize"}),
    }
    [channel] = arguments["InputDataConfig"]
    assert channel["ChannelName"] == "features"
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == output_uri("ComputeRFM", "features")
    assert arguments["OutputDataConfig"]["S3OutputPath"] == package_uri("model")
    assert arguments["ResourceConfig"]["InstanceType"] == {"Get": "Parameters.TrainingInstanceType"}
    assert arguments["RoleArn"] == ROLE


def test_caching(steps: dict[str, dict[str, Any]]) -> None:
    for name, step in steps.items():
        if step["Type"] in {"Processing", "Training"} and name != "PlanHistory":  # it lists the history: never cached
            assert step["CacheConfig"] == {"Enabled": True, "ExpireAfter": "P30D"}, name
        else:
            assert "CacheConfig" not in step, name


# What SageMaker Pipelines hashes into a step's cache key ("Default cache key attributes by
# pipeline step type", SageMaker developer guide); outputs are not part of it.
CACHE_KEY_ATTRIBUTES = {
    "Processing": ("AppSpecification", "Environment", "ProcessingInputs"),
    "Training": ("AlgorithmSpecification", "CheckpointConfig", "DebugHookConfig", "DebugRuleConfigurations",
                 "Environment", "HyperParameters", "InputDataConfig"),
}


def test_cache_keys_do_not_change_with_every_execution(steps: dict[str, dict[str, Any]]) -> None:
    """A cached step whose key reads an execution variable (e.g. the execution id) never hits the cache."""
    for name, step in steps.items():
        if not step.get("CacheConfig", {}).get("Enabled"):
            continue
        key = {attribute: step["Arguments"].get(attribute) for attribute in CACHE_KEY_ATTRIBUTES[step["Type"]]}
        assert [g for g in gets(key) if g.startswith("Execution.")] == [], name


def test_quality_gate(steps: dict[str, dict[str, Any]]) -> None:
    assert steps["CheckQuality"]["Arguments"]["Conditions"] == [
        {
            "Type": "GreaterThanOrEqualTo",
            "LeftValue": json_get("segmentation_metrics.silhouette.value"),
            "RightValue": {"Get": "Parameters.MinSilhouette"},
        },
        {
            "Type": "GreaterThanOrEqualTo",
            "LeftValue": json_get("segmentation_metrics.min_cluster_share.value"),
            "RightValue": {"Get": "Parameters.MinClusterShare"},
        },
    ]
    message = steps["QualityGateFailed"]["Arguments"]["ErrorMessage"]["Std:Join"]
    assert message["On"] == ""
    values = message["Values"]
    # evaluation.json's quality_gate.message: the values rounded, the thresholds, advice that fits what was set
    # (steps/model/quality_gate.py), then where the report is.
    assert values == [json_get("quality_gate.message"), " Review the report: ",
                      output_uri("EvaluateSegmenter", "evaluation"), "/", "report.html"]


def test_register_model(steps: dict[str, dict[str, Any]]) -> None:
    arguments = steps["RegisterSegmenter"]["Arguments"]
    assert arguments["ModelPackageGroupName"] == "rfm-segmenter"
    assert arguments["ModelApprovalStatus"] == {"Get": "Parameters.ModelApprovalStatus"}
    spec = arguments["InferenceSpecification"]
    [container] = spec["Containers"]
    assert container["Image"] == IMAGE
    assert container["ModelDataUrl"] == {"Get": "Steps.TrainSegmenter.ModelArtifacts.S3ModelArtifacts"}
    assert container["Environment"] == {}  # no script-mode variables: the image serves by itself
    assert spec["SupportedContentTypes"] == ["text/csv", "application/jsonlines"]
    assert spec["SupportedResponseMIMETypes"] == ["application/jsonlines", "text/csv"]
    assert spec["SupportedTransformInstanceTypes"] == [{"Get": "Parameters.TransformInstanceType"}]
    statistics = arguments["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert statistics == {
        "ContentType": "application/json",
        "S3Uri": join(output_uri("EvaluateSegmenter", "evaluation"), "evaluation.json", on="/"),
    }


def test_create_model_and_transform(steps: dict[str, dict[str, Any]]) -> None:
    model = steps["CreateModel"]["Arguments"]
    assert model["ExecutionRoleArn"] == ROLE
    assert model["PrimaryContainer"]["ModelDataUrl"] == {
        "Get": "Steps.TrainSegmenter.ModelArtifacts.S3ModelArtifacts"
    }
    assert "ModelName" not in model
    transform = steps["AssignSegments"]["Arguments"]
    assert transform["ModelName"] == {"Get": "Steps.CreateModel.ModelName"}
    assert transform["BatchStrategy"] == "MultiRecord"
    assert transform["MaxPayloadInMB"] == 6
    assert transform["TransformInput"] == {
        "ContentType": "text/csv",
        "SplitType": "Line",
        "DataSource": {
            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": output_uri("ComputeRFM", "transform")}
        },
    }
    assert transform["TransformOutput"] == {
        "Accept": "application/jsonlines",
        "AssembleWith": "Line",
        "S3OutputPath": execution_uri("assignments"),
    }
    assert transform["TransformResources"] == {
        "InstanceCount": {"Get": "Parameters.TransformInstanceCount"},
        "InstanceType": {"Get": "Parameters.TransformInstanceType"},
    }
    condition = steps["PublishIfApproved"]["Arguments"]["Conditions"]
    assert condition == [
        {"Type": "Equals", "LeftValue": {"Get": "Parameters.ModelApprovalStatus"}, "RightValue": "Approved"}
    ]


def test_export_lambda(steps: dict[str, dict[str, Any]]) -> None:
    export = steps["ExportSegments"]
    assert export["FunctionArn"] == "arn:aws:lambda:us-east-1:123456789012:function:rfm-export"
    assert export["Arguments"] == {
        "assignments_uri": {"Get": "Steps.AssignSegments.TransformOutput.S3OutputPath"},
        "features_uri": output_uri("ComputeRFM", "features"),
        "output_uri": execution_uri("segments"),
        "execution_id": EXECUTION_ID,
        "model_package_arn": {"Get": "Steps.RegisterSegmenter.ModelPackageArn"},
    }
    assert export["OutputParameters"] == [
        {"OutputName": "customers", "OutputType": "Integer"},
        {"OutputName": "segments", "OutputType": "Integer"},
        {"OutputName": "destinations", "OutputType": "String"},
    ]


def test_every_output_is_under_the_execution_quarantine_or_state_prefix(definition: dict[str, Any]) -> None:
    text = json.dumps(definition)
    s3_literals = set(re.findall(r'"(s3://[^"]*)"', text))
    assert s3_literals == {EXECUTION_PREFIX, PACKAGE_PREFIX, f"s3://{BUCKET}/rfm/quarantine", f"s3://{BUCKET}/rfm/input/",
                           f"s3://{BUCKET}/rfm/state", f"s3://{BUCKET}/rfm/published"}  # published/: read only


# --------------------------------------------------------------------------- offline and stable


def test_same_json_on_every_build_and_no_network(pipeline: Any, offline: Offline) -> None:
    from pipeline.definition import get_pipeline
    from pipeline.driver import render_definition

    first = render_definition(pipeline)
    assert render_definition(pipeline) == first  # definition() twice on one pipeline (run-pipeline does)
    assert render_definition(get_pipeline(**KWARGS)) == first
    assert offline.connections == []
    assert offline.telemetry == []


def test_defaults_follow_the_role_account(offline: Offline) -> None:
    from pipeline.definition import get_pipeline

    image = "210987654321.dkr.ecr.eu-west-1.amazonaws.com/rfm-segmentation:src-1"
    pipeline = get_pipeline("eu-west-1", role="arn:aws:iam::210987654321:role/x", image_uri=image,
                            enable_caching=False)
    text = pipeline.definition()
    assert image in text and ":latest" not in text
    assert "arn:aws:lambda:eu-west-1:210987654321:function:rfm-export" in text
    assert "s3://sagemaker-eu-west-1-210987654321/rfm/executions" in text
    assert '"Enabled": false' in text
    assert offline.connections == []


def test_no_image_is_a_one_line_error_naming_what_to_pass(offline: Offline) -> None:
    """No ``:latest`` fallback: the repository is immutable and nothing pushes that tag."""
    from pipeline.definition import get_pipeline
    from steps.errors import PipelineError

    with pytest.raises(PipelineError) as raised:
        get_pipeline(REGION, role=ROLE, default_bucket=BUCKET)
    message = str(raised.value)
    assert len(message.splitlines()) == 1
    assert "image_uri" in message and "aws ssm get-parameter --name /rfm-segmentation/image-uri" in message
    assert offline.connections == []


def test_bad_role_is_a_one_line_pipeline_error(offline: Offline) -> None:
    from pipeline.definition import get_pipeline
    from steps.errors import PipelineError

    with pytest.raises(PipelineError, match="not an IAM role ARN"):
        get_pipeline(REGION, role="SageMakerRole")


def _cli_env(tmp_path: Path, seed: str) -> dict[str, str]:
    (tmp_path / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SAGEMAKER_"))}
    env.update(
        AWS_ACCESS_KEY_ID="x",
        AWS_SECRET_ACCESS_KEY="x",
        AWS_ENDPOINT_URL="http://127.0.0.1:9",
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=str(tmp_path),
        PYTHONHASHSEED=seed,
        RFM_TEST_NETWORK_LOG=str(tmp_path / "network.log"),
    )  # no AWS_DEFAULT_REGION: the CLI takes the region from --kwargs
    return env


def _cli(name: str) -> list[str]:
    script = Path(sys.executable).parent / name
    module = {
        "get-pipeline-definition": "pipeline.get_pipeline_definition",
        "run-pipeline": "pipeline.run_pipeline",
    }
    return [str(script)] if script.exists() else [sys.executable, "-m", module[name]]


def test_cli_output_is_byte_identical_across_runs(tmp_path: Path, pipeline: Any, offline: Offline,
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    """The console script (its own process and hash seed) prints what this process writes with --file-name.

    One subprocess, not two: the second build (--file-name) runs in this process, under another hash seed,
    with the network refused here as in the subprocess; each build costs seconds.
    """
    from pipeline.driver import render_definition
    from pipeline.get_pipeline_definition import main

    command = [*_cli("get-pipeline-definition"), "--module-name", "pipeline.definition"]
    kwargs = ["--kwargs", json.dumps(KWARGS)]
    seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"  # never this process's seed
    to_stdout = subprocess.run(
        [*command, *kwargs],
        env=_cli_env(tmp_path, seed),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert to_stdout.returncode == 0, to_stdout.stderr
    assert to_stdout.stderr == ""  # SDK logs and warnings stay quiet
    capfd.readouterr()
    assert main(["--module-name", "pipeline.definition", *kwargs, "--file-name", str(tmp_path / "pipeline.json")]) == 0
    assert capfd.readouterr() == ("", "")  # nothing on stdout or stderr when writing a file
    assert (tmp_path / "pipeline.json").read_bytes() == to_stdout.stdout.encode()
    assert to_stdout.stdout == render_definition(pipeline)
    assert not (tmp_path / "network.log").exists(), (tmp_path / "network.log").read_text()
    assert offline.connections == [] and offline.telemetry == []


def test_cli_bad_kwargs_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [*_cli("get-pipeline-definition"), "--module-name", "pipeline.definition", "--kwargs", "{region: x}"],
        env=_cli_env(tmp_path, "0"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: --kwargs is not valid JSON")
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--kwargs", "[1, 2]"], "error: --kwargs must be a JSON object"),
        (["--kwargs", '{"region": "us-east-1", "colour": 1}'], "error: --kwargs do not fit"),
        (
            ["--kwargs", '{"region": "us-east-1", "role": "admin"}'],
            "error: role 'admin' is not an IAM role ARN",
        ),
    ],
)
def test_definition_cli_errors(
    argv: list[str], message: str, offline: Offline, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.get_pipeline_definition import main

    assert main(["--module-name", "pipeline.definition", *argv]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(message)
    assert len(captured.err.splitlines()) == 1
    assert "Traceback" not in captured.err


def test_definition_cli_unknown_module(offline: Offline, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.get_pipeline_definition import main

    assert main(["--module-name", "pipeline.no_such_module"]) == 1
    assert capsys.readouterr().err.startswith("error: cannot import module 'pipeline.no_such_module'")


# --------------------------------------------------------------------------- run-pipeline


@pytest.fixture
def moto_sagemaker(offline: Offline, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """In-process moto; ``overrides`` answers the calls moto does not implement."""
    from moto import mock_aws

    monkeypatch.delenv("AWS_ENDPOINT_URL")  # moto recognises the standard endpoints only
    overrides: dict[str, Any] = {
        "DescribeProject": lambda params: {"ProjectId": "p-abc123", "ProjectName": params["ProjectName"]},
        "ListPipelineExecutionSteps": lambda params: {
            "PipelineExecutionSteps": [
                {"StepName": "ComputeRFM", "StepStatus": "Succeeded"},
                {"StepName": "TrainSegmenter", "StepStatus": "Succeeded"},
            ]
        },
    }
    original = botocore.client.BaseClient._make_api_call

    def call(client: Any, operation: str, params: dict[str, Any]) -> Any:
        if operation in overrides:
            return overrides[operation](params)
        return original(client, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", call)
    with mock_aws():
        yield overrides


PROJECT_ARN = "arn:aws:sagemaker:us-east-1:123456789012:project/rfm-seg"


def _run_args(**extra: Any) -> list[str]:
    kwargs = {"region": REGION, "default_bucket": BUCKET, "image_uri": IMAGE, **extra}
    return [
        "--module-name", "pipeline.definition",
        "--role-arn", "arn:aws:iam::123456789012:role/PipelineRole",
        "--tags", '[{"Key": "team", "Value": "crm"}]',
        "--kwargs", json.dumps(kwargs),
        "--poll-seconds", "0",
    ]  # fmt: skip


def test_run_pipeline_upserts_tags_starts_and_reports(
    moto_sagemaker: dict[str, Any], offline: Offline, capsys: pytest.CaptureFixture[str]
) -> None:
    import boto3

    from pipeline.run_pipeline import main

    assert main(_run_args(sagemaker_project_arn=PROJECT_ARN)) == 0
    assert main(_run_args(sagemaker_project_arn=PROJECT_ARN)) == 0  # the update path of upsert
    out = capsys.readouterr().out
    assert "Upserted pipeline rfm-segmentation" in out
    assert "Upserted pipeline rfm-segmentation-publish" in out
    assert re.search(r"^  ComputeRFM +Succeeded$", out, re.MULTILINE)

    client = boto3.client("sagemaker", region_name=REGION)
    described = client.describe_pipeline(PipelineName="rfm-segmentation")
    assert described["RoleArn"] == "arn:aws:iam::123456789012:role/PipelineRole"
    stored = json.loads(described["PipelineDefinition"])
    assert [p["Name"] for p in stored["Parameters"]] == [name for name, _, _ in documented_parameters()]
    assert names(stored["Steps"]) == ["PlanHistory", "ComputeRFM", "TrainSegmenter", "EvaluateSegmenter",
                                      "CheckQuality"]
    # Without "role" in --kwargs the jobs run with --role-arn.
    assert stored["Steps"][0]["Arguments"]["RoleArn"] == "arn:aws:iam::123456789012:role/PipelineRole"
    tags = {t["Key"]: t["Value"] for t in client.list_tags(ResourceArn=described["PipelineArn"])["Tags"]}
    assert tags == {"team": "crm", "sagemaker:project-name": "rfm-seg", "sagemaker:project-id": "p-abc123"}
    executions = client.list_pipeline_executions(PipelineName="rfm-segmentation")["PipelineExecutionSummaries"]
    assert len(executions) == 2
    assert offline.connections == []


def test_run_pipeline_starts_with_the_given_parameters(moto_sagemaker: dict[str, Any]) -> None:
    import boto3

    from pipeline.run_pipeline import main

    assert main([*_run_args(), "--parameters", '{"ModelApprovalStatus": "Approved", "NumClusters": 4}']) == 0
    client = boto3.client("sagemaker", region_name=REGION)
    [execution] = client.list_pipeline_executions(PipelineName="rfm-segmentation")["PipelineExecutionSummaries"]
    given = client.list_pipeline_parameters_for_execution(PipelineExecutionArn=execution["PipelineExecutionArn"])
    assert {p["Name"]: p["Value"] for p in given["PipelineParameters"]} == {
        "ModelApprovalStatus": "Approved", "NumClusters": "4"}


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ('{"ModelApprovalStatus": "Aproved"}', "error: --parameters: parameter ModelApprovalStatus='Aproved' "
                                               "is not one of PendingManualApproval, Approved, Rejected.\n"),
        ('{"NumClusters": "many"}',
         "error: --parameters: parameter NumClusters='many' is not a valid Integer. Pass a whole number.\n"),
        ('{"Nope": 1}', "error: --parameters: unknown pipeline parameter(s) Nope. known: InputDataUrl"),
        ('["ModelApprovalStatus"]', "error: --parameters must be a JSON object, got list"),
    ],
)
def test_run_pipeline_rejects_bad_parameters_before_building(
    moto_sagemaker: dict[str, Any], capsys: pytest.CaptureFixture[str], parameters: str, message: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Checked against the declared parameters before either pipeline is built (each build takes seconds)."""
    import boto3

    import pipeline.definition
    from pipeline.run_pipeline import main

    def no_build(**kwargs: Any) -> None:
        raise AssertionError("a pipeline was built before the parameters were checked")

    monkeypatch.setattr(pipeline.definition, "get_pipeline", no_build)
    monkeypatch.setattr(pipeline.definition, "get_publish_pipeline", no_build)

    assert main([*_run_args(), "--parameters", parameters]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(message) and len(captured.err.splitlines()) == 1, captured.err
    assert "Upserted" not in captured.out
    assert boto3.client("sagemaker", region_name=REGION).list_pipelines()["PipelineSummaries"] == []


def test_run_pipeline_failed_execution_is_one_line(
    moto_sagemaker: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.run_pipeline import main

    moto_sagemaker["DescribePipelineExecution"] = lambda params: {
        "PipelineExecutionArn": params["PipelineExecutionArn"],
        "PipelineExecutionStatus": "Failed",
        "FailureReason": "Step QualityGateFailed failed:\nSegmentation below quality gate",
    }
    moto_sagemaker["ListPipelineExecutionSteps"] = lambda params: {
        "PipelineExecutionSteps": [
            {"StepName": "QualityGateFailed", "StepStatus": "Failed", "FailureReason": "below gate"}
        ]
    }
    assert main(_run_args()) == 1
    captured = capsys.readouterr()
    assert "  QualityGateFailed    Failed: below gate" in captured.out
    assert re.fullmatch(
        r"error: pipeline execution \S+ Failed: "
        r"Step QualityGateFailed failed: Segmentation below quality gate\.\n",
        captured.err,
    )


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ("not json", "error: --tags is not valid JSON"),
        ('{"Key": "a", "Value": "b"}', "error: --tags must be a JSON array"),
        ('[{"Key": "a"}]', "error: --tags entry"),
    ],
)
def test_run_pipeline_bad_tags_is_one_line(
    tags: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.run_pipeline import main

    argv = ["--module-name", "pipeline.definition", "--role-arn", ROLE, "--tags", tags, "--kwargs", "{}"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(message)
    assert len(err.splitlines()) == 1


def test_run_pipeline_bad_kwargs_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.run_pipeline import main

    assert main(["--module-name", "pipeline.definition", "--role-arn", ROLE, "--kwargs", "{'a': 1}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --kwargs is not valid JSON")
    assert len(err.splitlines()) == 1


def test_project_tags() -> None:
    from pipeline.run_pipeline import with_project_tags
    from steps.errors import PipelineError

    class NoCalls:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"unexpected call {name}")

    given = [{"Key": "sagemaker:project-id", "Value": "p-1"}]
    assert with_project_tags(NoCalls(), PROJECT_ARN, given) == [
        *given,
        {"Key": "sagemaker:project-name", "Value": "rfm-seg"},
    ]
    with pytest.raises(PipelineError, match="not a SageMaker project ARN"):
        with_project_tags(NoCalls(), "rfm-seg", [])


def test_wait_polls_until_terminal_and_times_out() -> None:
    from pipeline.run_pipeline import wait_for_execution
    from steps.errors import PipelineError

    statuses = iter(["Executing", "Executing", "Succeeded"])
    sleeps: list[float] = []

    def describe() -> dict[str, str]:
        return {"PipelineExecutionArn": "arn:x", "PipelineExecutionStatus": next(statuses)}

    assert wait_for_execution(describe, 5, 60, sleep=sleeps.append)["PipelineExecutionStatus"] == "Succeeded"
    assert sleeps == [5, 5]

    now = iter([0.0, 10.0, 61.0])
    with pytest.raises(PipelineError, match="still Executing after 60 s"):
        wait_for_execution(
            lambda: {"PipelineExecutionArn": "arn:x", "PipelineExecutionStatus": "Executing"},
            5,
            60,
            sleep=lambda _: None,
            clock=lambda: next(now),
        )


def test_both_pipelines_take_the_sessions_bucket(offline: Offline) -> None:
    """The publish pipeline resolves its defaults like the main one (same session -> same bucket)."""
    from pipeline.definition import get_pipeline
    from pipeline.publish_definition import get_publish_pipeline
    from pipeline.session import make_session

    session = make_session(REGION, "team-bucket")
    kwargs = {"region": REGION, "role": ROLE, "sagemaker_session": session, "image_uri": IMAGE}
    for build in (get_pipeline, get_publish_pipeline):
        text = build(**kwargs).definition()
        assert "s3://team-bucket/rfm/executions" in text and "sagemaker-us-east-1" not in text, build.__name__


def _all_steps(steps: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for step in steps:
        yield step
        for branch in ("IfSteps", "ElseSteps"):
            yield from _all_steps(step.get("Arguments", {}).get(branch, []))


def test_transform_instance_count_is_a_parameter_of_both_pipelines(offline: Offline) -> None:
    """AssignSegments runs on TransformInstanceCount instances (default 1), in the main and the publish pipeline."""
    from pipeline.definition import get_pipeline
    from pipeline.publish_definition import get_publish_pipeline

    for build in (get_pipeline, get_publish_pipeline):
        definition = json.loads(build(**KWARGS).definition())
        declared = {p["Name"]: p for p in definition["Parameters"]}
        assert declared["TransformInstanceCount"] == {"Name": "TransformInstanceCount", "Type": "Integer",
                                                      "DefaultValue": 1}, build.__name__
        [assign] = [s for s in _all_steps(definition["Steps"]) if s["Name"] == "AssignSegments"]
        assert assign["Arguments"]["TransformResources"]["InstanceCount"] == {
            "Get": "Parameters.TransformInstanceCount"}, build.__name__


def test_the_package_records_the_transform_instance_count_for_its_approval(offline: Offline) -> None:
    """RegisterSegmenter writes the run's TransformInstanceCount, as text, into the package metadata; the
    approval Lambda reads it back (tests/test_approval.py) and the publish pipeline declares the parameter."""
    from pipeline.definition import get_pipeline
    from steps import package_metadata

    definition = json.loads(get_pipeline(**KWARGS).definition())
    [register] = [s for s in _all_steps(definition["Steps"]) if s["Name"].startswith("RegisterSegmenter")]
    recorded = register["Arguments"]["CustomerMetadataProperties"][package_metadata.TRANSFORM_INSTANCE_COUNT]
    assert recorded == {"Std:Join": {"On": "", "Values": [{"Get": "Parameters.TransformInstanceCount"}]}}


def test_the_sdk_config_is_still_validated_on_every_lookup() -> None:
    """``pipeline.session`` makes the SDK check its config schema once per process (a build's lookups used to
    re-check it about 90 times); every lookup still validates the config it reads, with the SDK's error."""
    from types import SimpleNamespace

    import jsonschema
    from sagemaker.core.common_utils import get_sagemaker_config_value

    from pipeline.session import SDK_CONFIG

    key = "SageMaker.PythonSDK.Modules.TelemetryOptOut"
    assert get_sagemaker_config_value(SimpleNamespace(sagemaker_config=SDK_CONFIG), key) is True
    bad = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": "yes"}}}}
    with pytest.raises(jsonschema.ValidationError, match="'yes' is not of type 'boolean'"):
        get_sagemaker_config_value(SimpleNamespace(sagemaker_config=bad), key)
    with pytest.raises(jsonschema.ValidationError, match="SchemaVersion"):
        get_sagemaker_config_value(SimpleNamespace(sagemaker_config={"SageMaker": {}}), key)
