"""How the local runner executes each step type of the definition.

Each function takes the step's *resolved* arguments and an ``Environment``
and returns the step's properties, keyed by the paths a ``Get`` uses
(``ProcessingOutputConfig.Outputs['features'].S3Output.S3Uri``, ...).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import sys
import tarfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.local.containers import ContainerPaths, executable, run_command
from pipeline.local.registry import LocalRegistry
from pipeline.local.store import FolderStore, S3Store
from pipeline.local.transform import serving, transform_file
from steps import paths
from steps.errors import PipelineError, RFMError

# Lambda function name (last part of the ARN) -> "module:function" run in-process.
LOCAL_LAMBDAS = {"rfm-export": "lambdas.export.app:handler", "rfm-trigger": "lambdas.trigger.app:handler"}


@dataclass
class Environment:
    """What every step handler needs from the execution."""

    store: FolderStore | S3Store
    workdir: Path
    registry: LocalRegistry
    execution_id: str
    models: dict[str, str]  # model name -> model data URL (CreateModel results)
    logs: Path | None = None  # where the steps' logs go (default: workdir/logs)

    def log_file(self, name: str) -> Path:
        """Step ``name``'s log file."""
        return (self.logs or self.workdir / "logs") / f"{name}.log"


# A Spark processing step's entrypoint; its submit app is the project's own (steps/features/spark/app.py),
# run here on local pyspark instead of being downloaded from the code input.
SPARK_SUBMIT = "smspark-submit"
SPARK_APP_MODULE = "steps.features.spark.app"


def run_processing(name: str, args: dict, env: Environment) -> dict[str, Any]:
    container = ContainerPaths(env.workdir / name)
    write_job_config(container, {"ProcessingJobName": f"{name}-{env.execution_id}", **args})
    spark = (args["AppSpecification"].get("ContainerEntrypoint") or [""])[0] == SPARK_SUBMIT
    for item in args.get("ProcessingInputs", []):
        if spark and item["InputName"] == "code":
            continue
        s3 = item["S3Input"]
        env.store.download(s3["S3Uri"], container.local(s3["LocalPath"]))
    outputs = args.get("ProcessingOutputConfig", {}).get("Outputs", [])
    for item in outputs:
        container.local(item["S3Output"]["LocalPath"]).mkdir(parents=True, exist_ok=True)
    app = args["AppSpecification"]
    entrypoint = app.get("ContainerEntrypoint") or []
    if not entrypoint:
        raise PipelineError("processing step has no ContainerEntrypoint", name)
    # Spark: local pyspark, with a local work folder instead of the cluster's S3 one.
    command = [sys.executable, "-m", SPARK_APP_MODULE] if spark else [executable(entrypoint[0]), *entrypoint[1:]]
    command += [_store_path(container.rewrite(str(a)), env.store) for a in app.get("ContainerArguments", [])]
    environment = {k: str(v) for k, v in args.get("Environment", {}).items()
                   if not (spark and k.startswith("RFM_SPARK"))}
    run_command(command, environment, env.log_file(name), name)
    properties: dict[str, Any] = {}
    for item in outputs:
        s3 = item["S3Output"]
        env.store.upload(container.local(s3["LocalPath"]), s3["S3Uri"])
        properties[f"ProcessingOutputConfig.Outputs['{item['OutputName']}'].S3Output.S3Uri"] = s3["S3Uri"]
        properties[f"ProcessingOutputConfig.Outputs['{item['OutputName']}'].S3Output.LocalPath"] = s3["LocalPath"]
    return properties


def _store_path(argument: str, store: FolderStore | S3Store) -> str:
    """An ``s3://`` argument (also after ``--opt=``) as the step must see it here: a folder of a local store.

    Steps that read or write S3 themselves (the history and its state) then work on the same
    files a ``FolderStore`` keeps, and on the real S3 API of an ``S3Store`` unchanged.
    """
    option, sep, value = argument.partition("=")
    if sep and value.startswith("s3://"):
        return f"{option}={store.event_uri(value)}"
    return store.event_uri(argument) if argument.startswith("s3://") else argument


def write_job_config(container: ContainerPaths, request: dict) -> None:
    """The job's request as ``processingjobconfig.json``, where SageMaker Processing puts it in the container."""
    path = container.local(paths.PROCESSING_JOB_CONFIG)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(request, indent=2, sort_keys=True, default=str) + "\n")


def processing_property_files(name: str, step: dict, args: dict, env: Environment) -> dict[str, Path]:
    """Local paths of a processing step's declared property files."""
    container = ContainerPaths(env.workdir / name)
    local_by_output = {
        o["OutputName"]: o["S3Output"]["LocalPath"] for o in args.get("ProcessingOutputConfig", {}).get("Outputs", [])
    }
    return {
        pf["PropertyFileName"]: container.local(local_by_output[pf["OutputName"]]) / pf["FilePath"]
        for pf in step.get("PropertyFiles", [])
    }


def run_training(name: str, args: dict, env: Environment) -> dict[str, Any]:
    container = ContainerPaths(env.workdir / name)
    channels: dict[str, str] = {}
    for channel in args.get("InputDataConfig", []):
        local = container.local(f"/opt/ml/input/data/{channel['ChannelName']}")
        env.store.download(channel["DataSource"]["S3DataSource"]["S3Uri"], local)
        channels[f"SM_CHANNEL_{channel['ChannelName'].upper()}"] = str(local)
    config = container.local("/opt/ml/input/config")
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps(args.get("HyperParameters", {}), sort_keys=True))
    model_dir = container.local("/opt/ml/model")
    model_dir.mkdir(parents=True, exist_ok=True)
    environment = {
        **{k: str(v) for k, v in args.get("Environment", {}).items()},
        **channels,
        "SM_MODEL_DIR": str(model_dir),
        "SM_INPUT_CONFIG_DIR": str(config),
        "SM_OUTPUT_DATA_DIR": str(container.local("/opt/ml/output/data")),
    }
    run_command([executable("train")], environment, env.log_file(name), name)
    archive = env.workdir / name / paths.MODEL_ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    job_name = f"{name}-{env.execution_id}"
    uri = f"{args['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{job_name}/output/{paths.MODEL_ARCHIVE}"
    env.store.upload_file(archive, uri)
    return {"ModelArtifacts.S3ModelArtifacts": uri, "TrainingJobName": job_name}


def run_register_model(name: str, args: dict, env: Environment) -> dict[str, Any]:
    package = env.registry.create_package(args)
    return {
        "ModelPackageArn": package["ModelPackageArn"],
        "ModelApprovalStatus": package["ModelApprovalStatus"],
        "ModelPackageVersion": package["ModelPackageVersion"],
    }


def run_create_model(name: str, args: dict, env: Environment) -> dict[str, Any]:
    model_name = f"{name}-{env.execution_id}"
    env.models[model_name] = args["PrimaryContainer"]["ModelDataUrl"]
    return {"ModelName": model_name}


def run_transform(name: str, args: dict, env: Environment) -> dict[str, Any]:
    """Batch transform as SageMaker runs it on ``InstanceCount`` instances: each instance (a local ``serve``
    of its own) gets whole input files, dealt in name order (file i to instance i mod the count), and
    they run at once. Besides the SageMaker property, ``Local.InstanceFiles`` lists each instance's files."""
    instances = args.get("TransformResources", {}).get("InstanceCount", 1)
    if not isinstance(instances, int) or isinstance(instances, bool) or instances < 1:
        raise PipelineError(f"InstanceCount={instances!r} is not a count of instances", name,
                            "Set TransformInstanceCount to 1 or more")
    model_url = env.models.get(args["ModelName"])
    if model_url is None:
        raise PipelineError(f"model {args['ModelName']!r} was not created in this run", name)
    model_dir = env.workdir / name / "model"
    env.store.download(model_url, env.workdir / name / "model-archive")
    with tarfile.open(env.workdir / name / "model-archive" / paths.MODEL_ARCHIVE) as tar:
        tar.extractall(model_dir, filter="data")
    source = env.workdir / name / "input"
    env.store.download(args["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"], source)
    output = env.workdir / name / "output"
    files = [p.relative_to(source) for p in sorted(source.rglob("*")) if p.is_file()]
    shares = [files[i::instances] for i in range(min(instances, len(files)))]

    def instance(number: int, share: list[Path]) -> None:
        with serving(model_dir, env.log_file(f"{name}-serve-{number}")) as port:
            for relative in share:
                transform_file(port, source / relative, output / f"{relative}.out",
                               args["TransformInput"].get("ContentType", "text/csv"),
                               args["TransformOutput"].get("Accept", "application/jsonlines"),
                               int(args.get("MaxPayloadInMB", 6)))

    with ThreadPoolExecutor(max_workers=max(1, len(shares))) as pool:
        for running in [pool.submit(instance, number, share) for number, share in enumerate(shares)]:
            running.result()  # the first failure (a PipelineError naming its file) fails the step
    env.store.upload(output, args["TransformOutput"]["S3OutputPath"])
    return {"TransformOutput.S3OutputPath": args["TransformOutput"]["S3OutputPath"],
            "Local.InstanceFiles": [[str(path) for path in share] for share in shares]}


def lambda_handler(function_arn: str) -> Callable[[dict, Any], Any]:
    function = function_arn.rsplit(":", 1)[-1]
    target = LOCAL_LAMBDAS.get(function)
    if target is None:
        raise PipelineError(f"no local Lambda for function {function!r}", function_arn,
                            f"known: {', '.join(LOCAL_LAMBDAS)}")
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


@contextlib.contextmanager
def capture_lambda_logs(log_file: Path) -> Iterator[None]:
    """Send what in-process Lambda code logs to stdout (Powertools' JSON lines) to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    known = list(logging.Logger.manager.loggerDict.values())  # placeholders are not loggers: none created
    loggers = [logging.getLogger(), *(logger for logger in known if isinstance(logger, logging.Logger))]
    stdout = (sys.stdout, sys.__stdout__)  # before the redirect below replaces sys.stdout
    swapped = []
    with log_file.open("a") as sink, contextlib.redirect_stdout(sink):
        for logger in loggers:
            for handler in logger.handlers:
                if isinstance(handler, logging.StreamHandler) and handler.stream in stdout:
                    swapped.append((handler, handler.setStream(sink)))
        try:
            yield
        finally:
            for handler, stream in swapped:
                handler.setStream(stream)


def run_lambda(name: str, step: dict, args: dict, env: Environment) -> dict[str, Any]:
    event = {k: env.store.event_uri(v) if isinstance(v, str) else v for k, v in args.items()}
    handler = lambda_handler(step["FunctionArn"])
    with capture_lambda_logs(env.log_file(name)):
        try:
            result = handler(event, None)
        except RFMError:
            raise
        except Exception as error:  # a Lambda that raises is a failed step, as on AWS
            raise PipelineError(f"the Lambda function raised {type(error).__name__}: {error}", None) from error
    if not isinstance(result, dict):
        raise PipelineError("the Lambda function returned no JSON object", name)
    properties = {}
    for output in step.get("OutputParameters", []):
        if output["OutputName"] not in result:
            raise PipelineError(f"the Lambda function returned no output {output['OutputName']!r}", name)
        properties[f"OutputParameters['{output['OutputName']}']"] = result[output["OutputName"]]
    return properties
