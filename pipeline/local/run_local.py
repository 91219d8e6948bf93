"""``rfm run-local``: build the pipeline definition and execute it on this machine.

Artifacts of every execution stay under ``<output>/s3/<bucket>/...`` (what S3
would hold); the latest successful run's are also copied to the paths the
README documents: ``features/``, ``model/model.tar.gz``,
``evaluation/evaluation.json``, ``segments/segments.parquet``, ``export/``,
next to ``registry.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from pipeline.local.registry import LOCAL_ROLE, LocalRegistry
from pipeline.local.runner import ExecutionResult, LocalRunner, StepRun, load_definition
from pipeline.local.store import S3Store, make_store
from pipeline.naming import MAIN_PIPELINE_NAME, MODEL_PACKAGE_GROUP_NAME
from steps import paths
from steps.errors import PipelineError

BUILD_REGION = "us-east-1"  # the definition is built offline as for this region
LOCAL_BUCKET = "rfm-local"
LOCAL_KWARGS = {
    "region": BUILD_REGION,
    "role": LOCAL_ROLE,
    "default_bucket": LOCAL_BUCKET,
    "pipeline_name": MAIN_PIPELINE_NAME,
    "model_package_group_name": MODEL_PACKAGE_GROUP_NAME,
    "base_job_prefix": "rfm",
    "image_uri": "rfm-segmentation:local",  # the local runner runs the entrypoints, not an image
}
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Everything the definition JSON is built from (a change invalidates the cached definition).
DEFINITION_SOURCES = ("pipeline/definition.py", "pipeline/publish_definition.py", "pipeline/step_builders.py",
                      "pipeline/session.py", "pipeline/naming.py", "pipeline/parameters.py",
                      "pipeline/local/run_local.py", "steps/paths.py", "steps/package_metadata.py")
MAIN_PIPELINE = "pipeline.definition:get_pipeline"
PUBLISH_PIPELINE = "pipeline.publish_definition:get_publish_pipeline"
# Latest-run artifacts: (step, property holding the S3 URI, folder under --output).
PUBLISHED = (
    ("ComputeRFM", "ProcessingOutputConfig.Outputs['features'].S3Output.S3Uri", "features"),
    # Written apart on S3 (<prefix>/quarantine/<execution>/, shorter retention); shown with the features here.
    ("ComputeRFM", "ProcessingOutputConfig.Outputs['quarantine'].S3Output.S3Uri", f"features/{paths.QUARANTINE_DIR}"),
    ("TrainSegmenter", "ModelArtifacts.S3ModelArtifacts", "model"),
    ("EvaluateSegmenter", "ProcessingOutputConfig.Outputs['evaluation'].S3Output.S3Uri", "evaluation"),
)


@contextlib.contextmanager
def offline_aws() -> Iterator[None]:
    """Fake credentials and region while building the definition (nothing calls AWS)."""
    fake = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": BUILD_REGION}
    saved = {k: os.environ.get(k) for k in fake}
    for key, value in fake.items():
        os.environ.setdefault(key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)


def _definition_key(builder: str, kwargs: dict) -> str:
    """Changes whenever the definition could: builder, kwargs, SDK version, the definition's sources."""
    from importlib.metadata import version

    digest = hashlib.sha256(json.dumps([builder, kwargs], sort_keys=True).encode())
    digest.update(version("sagemaker").encode())
    for source in DEFINITION_SOURCES:
        digest.update((PROJECT_ROOT / source).read_bytes())
    return digest.hexdigest()[:16]


def build_definition(cache_dir: Path | None = None, builder: str = MAIN_PIPELINE, **overrides: object) -> dict:
    """The definition JSON ``builder`` (``module:function``) gives for local execution.

    Building it imports the SageMaker SDK and takes several seconds; with
    ``cache_dir`` the JSON and the pipeline's name are kept there, keyed on
    everything they depend on. ``definition["_cached"]`` tells whether it came
    from there.
    """
    kwargs = {**LOCAL_KWARGS, **overrides}
    cached = cache_dir / f"definition-{_definition_key(builder, kwargs)}.json" if cache_dir else None
    if cached is not None and cached.is_file():
        entry = json.loads(cached.read_text())
        return {**load_definition(entry["definition"], entry["name"]), "_cached": True}
    module, _, function = builder.partition(":")
    quiet = ("sagemaker", "sagemaker.config", "botocore", "botocore.credentials", "boto3")
    with offline_aws(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in quiet:
            logging.getLogger(name).setLevel(logging.ERROR)
        get_pipeline = getattr(importlib.import_module(module), function)  # the SDK makes clients on import
        for name in quiet:  # the SDK resets some levels on import
            logging.getLogger(name).setLevel(logging.ERROR)
        pipeline = get_pipeline(**kwargs)
        text = pipeline.definition()
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps({"name": pipeline.name, "definition": text}))
    return {**load_definition(text, pipeline.name), "_cached": False}


@contextlib.contextmanager
def export_destinations(destination: str, output: Path) -> Iterator[None]:
    """Run the in-process export against local stand-ins of ``destination`` (pinpoint, customer-profiles).

    S3 files are always written; what the stand-ins received is written as JSON to
    ``<output>/destinations/``. Plain ``s3`` needs no stand-in.
    """
    if destination in ("", "s3"):
        yield
        return
    from lambdas.fakes import local_destination_env

    output = Path(output).resolve()
    store = make_store(output / "s3")
    target = store.client if isinstance(store, S3Store) else output / "s3"
    with local_destination_env(destination, target, output / "destinations"):
        yield


def parse_params(pairs: list[str]) -> dict[str, str]:
    """``Name=Value`` options into a dict."""
    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise PipelineError(f"--param {pair!r} is not Name=Value", "--param", "write e.g. --param NumClusters=5")
        params[name] = value
    return params


def run_local(input_location: str, output: Path, params: dict[str, str],
              on_step=None, definition: dict | None = None) -> ExecutionResult:
    """Run the whole pipeline on ``input_location``; artifacts go under ``output``."""
    output = paths.output_folder(Path(output).resolve())
    if not input_location.startswith("s3://"):
        location = Path(input_location.removeprefix("file://"))
        if not location.exists():
            raise PipelineError("no such input file or folder", str(location), "check --input")
        input_location = str(location.resolve())
    if definition is None:
        definition = timed_build(output / ".cache", MAIN_PIPELINE, on_step)
    return execute(definition, {"InputDataUrl": input_location, **params}, output, on_step)


def timed_build(cache_dir: Path, builder: str, on_step=None) -> dict:
    """``build_definition``, reported to ``on_step`` like a step (it takes seconds when not cached)."""
    run = StepRun("(definition)", "SageMaker SDK", "Executing")
    if on_step:
        on_step(run)
    started = time.perf_counter()
    definition = build_definition(cache_dir=cache_dir, builder=builder)
    run.status, run.seconds = "Succeeded", time.perf_counter() - started
    run.detail = "cached" if definition["_cached"] else "built and cached"
    if on_step:
        on_step(run)
    return definition


def execute(definition: dict, params: dict[str, str], output: Path, on_step=None) -> ExecutionResult:
    """Execute ``definition`` with the local store and registry under ``output``; publish its artifacts."""
    output = paths.output_folder(Path(output).resolve())
    store = make_store(output / "s3")
    registry = LocalRegistry(output / paths.REGISTRY_FILE)
    workdir = output / ".work"
    runner = LocalRunner(definition, store, workdir, registry, on_step)
    result = runner.run(params, models=registry.models())
    logs = output / "logs" / result.execution_id
    work_logs = workdir / result.execution_id / "logs"
    if work_logs.is_dir():
        shutil.copytree(work_logs, logs, dirs_exist_ok=True)
    if result.status == "Succeeded":
        publish(result, store, output)
        shutil.rmtree(workdir / result.execution_id, ignore_errors=True)
    return result


def publish(result: ExecutionResult, store, output: Path) -> None:
    """Copy the latest run's artifacts to the documented paths under ``output``."""
    for step, prop, target in PUBLISHED:
        uri = result.properties.get(step, {}).get(prop)
        if uri is None:
            continue
        destination = output / target
        shutil.rmtree(destination, ignore_errors=True)
        store.download(uri, destination)
        destination.mkdir(parents=True, exist_ok=True)  # an output with no files is still shown
    report = output / "evaluation" / paths.REPORT_FILE
    if report.is_file():
        shutil.copy2(report, output / paths.REPORT_FILE)
    segments_uri = _segments_uri(result)
    if segments_uri:  # only a run that exported replaces the published segments
        shutil.rmtree(output / "segments", ignore_errors=True)
        shutil.rmtree(output / "export", ignore_errors=True)
        staging = output / ".segments"
        shutil.rmtree(staging, ignore_errors=True)
        store.download(segments_uri, staging)
        (output / "segments").mkdir(parents=True, exist_ok=True)
        for name in (paths.SEGMENTS_FILE, paths.CHANGES_FILE):
            if (staging / name).is_file():
                shutil.move(staging / name, output / "segments" / name)
        if (staging / "export").is_dir():
            shutil.move(staging / "export", output / "export")
        shutil.rmtree(staging, ignore_errors=True)
    (output / "last_run.json").write_text(json.dumps({
        "execution_id": result.execution_id, "status": result.status,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "steps": [{"name": s.name, "type": s.type, "status": s.status, "seconds": round(s.seconds, 2),
                   "detail": s.detail} for s in result.steps],
    }, indent=2) + "\n")


def _segments_uri(result: ExecutionResult) -> str | None:
    if result.properties.get("ExportSegments") is None:
        return None
    return result.arguments.get("ExportSegments", {}).get("output_uri")
