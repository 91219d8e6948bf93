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
import secrets
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from pipeline.local.registry import LOCAL_ROLE, LocalRegistry
from pipeline.local.runner import ExecutionResult, LocalRunner, StepRun, load_definition
from pipeline.local.store import S3Store, make_store
from pipeline.naming import MAIN_PIPELINE_NAME, MODEL_PACKAGE_GROUP_NAME
from pipeline.parameters import declared_parameters, parameter_values
from steps import package_metadata, paths
from steps.errors import PipelineError
from steps.playbook import load_playbook

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
    "spark_image_uri": "rfm-segmentation:spark-local",  # nor the Spark image (local pyspark instead)
}
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Everything the definition JSON is built from (a change invalidates the cached definition).
DEFINITION_SOURCES = ("pipeline/definition.py", "pipeline/publish_definition.py", "pipeline/step_builders.py",
                      "pipeline/session.py", "pipeline/naming.py", "pipeline/parameters.py",
                      "pipeline/local/run_local.py", "steps/paths.py", "steps/package_metadata.py")
DEFAULT_KEEP = 5  # executions kept under <output>/s3 (registered packages' artifacts always stay)
CACHE_ENV = "RFM_CACHE_DIR"
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


def default_cache_dir() -> Path:
    """Where built definitions are cached: ``$RFM_CACHE_DIR``, else ``$XDG_CACHE_HOME`` (or ~/.cache)/rfm-segmentation.

    One cache for every output folder: entries are keyed on their content's inputs, so a new
    ``--output`` reuses what another folder built.
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rfm-segmentation"


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
              on_step=None, definition: dict | None = None, keep: int = DEFAULT_KEEP,
              feature_engine: str = "duckdb") -> ExecutionResult:
    """Run the whole pipeline on ``input_location``; artifacts go under ``output``; keep ``keep`` executions.

    ``feature_engine="spark"`` builds the definition with the Spark ComputeRFM step (run on local pyspark).
    """
    output = paths.output_folder(Path(output).resolve())
    if not input_location.startswith("s3://"):
        location = Path(input_location.removeprefix("file://"))
        if not location.exists():
            raise PipelineError("no such input file or folder", str(location), "check --input")
        input_location = str(location.resolve())
    parameter_values(declared_parameters(), {"InputDataUrl": input_location, **params})  # before the slow build
    load_playbook()  # the evaluation and the export read it (RFM_PLAYBOOK): a broken one fails here, not in a step
    if definition is None:
        overrides = {"feature_engine": feature_engine} if feature_engine != "duckdb" else {}
        definition = timed_build(default_cache_dir(), MAIN_PIPELINE, on_step, **overrides)
    return execute(definition, {"InputDataUrl": input_location, **params}, output, on_step, keep)


def timed_build(cache_dir: Path, builder: str, on_step=None, **overrides: object) -> dict:
    """``build_definition``, reported to ``on_step`` like a step (it takes seconds when not cached)."""
    run = StepRun("(definition)", "SageMaker SDK", "Executing")
    if on_step:
        on_step(run)
    started = time.perf_counter()
    definition = build_definition(cache_dir=cache_dir, builder=builder, **overrides)
    run.status, run.seconds = "Succeeded", time.perf_counter() - started
    run.detail = "cached" if definition["_cached"] else "built and cached"
    if on_step:
        on_step(run)
    return definition


def execute(definition: dict, params: dict[str, str], output: Path, on_step=None,
            keep: int | None = DEFAULT_KEEP) -> ExecutionResult:
    """Execute ``definition`` with the local store and registry under ``output``; publish its artifacts.

    The execution's scratch folder (``.work/<id>``) is removed however the run ends (success,
    failure, Ctrl-C); its logs are kept in ``logs/<id>``. A run that evaluated the model leaves a
    report even when it fails later (the quality gate): ``report.html``, named in the failure.
    Then only the newest ``keep`` executions stay under ``s3/`` (None keeps all).
    """
    output = paths.output_folder(Path(output).resolve())
    store = make_store(output / "s3")
    registry = LocalRegistry(output / paths.REGISTRY_FILE)
    workdir = output / ".work"
    runner = LocalRunner(definition, store, workdir, registry, on_step, logs=output / "logs")  # logs/<id> stays
    execution_id = f"local-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
    try:
        result = runner.run(params, execution_id=execution_id, models=registry.models())
    finally:
        shutil.rmtree(workdir / execution_id, ignore_errors=True)
        with contextlib.suppress(OSError):
            workdir.rmdir()  # only when empty: another run may be using it
    if result.status == "Succeeded":
        publish(result, store, output, registry)
    else:
        evaluation = _evaluation_uri(result)
        if evaluation is not None:
            _download(store, evaluation, output / "evaluation")
        report = _publish_report(result, output)
        if report is not None:
            uri = _evaluation_uri(result)
            shown = f"{uri.rstrip('/')}/{paths.REPORT_FILE}"
            result.failure = (result.failure.replace(shown, str(report)) if shown in result.failure
                              else f"{result.failure.rstrip('.')}. The report: {report}")
    _write_last_run(result, output, params)
    if keep is not None and not isinstance(store, S3Store):
        prune_executions(output, keep, registry)
    return result


def _evaluation_uri(result: ExecutionResult) -> str | None:
    return result.properties.get("EvaluateSegmenter", {}).get(
        "ProcessingOutputConfig.Outputs['evaluation'].S3Output.S3Uri")


def _download(store, uri: str, destination: Path) -> None:
    """``uri``'s files in ``destination``, replacing what was there (the folder exists even when empty)."""
    shutil.rmtree(destination, ignore_errors=True)
    store.download(uri, destination)
    destination.mkdir(parents=True, exist_ok=True)  # an output with no files is still shown


def _publish_report(result: ExecutionResult, output: Path) -> Path | None:
    """Copy the run's report (downloaded to ``evaluation/``) to ``report.html``, stamped with its package, and
    keep it as ``reports/<version>.html``.

    Its comparison with the last publish is the evaluation step's own (``--published``, as on SageMaker).
    """
    from pipeline.local.summary import package_report_path
    from steps.report.render import stamp_package

    if _evaluation_uri(result) is None:
        return None
    source = output / "evaluation" / paths.REPORT_FILE
    if not source.is_file():
        return None
    page = source.read_text(encoding="utf-8")
    latest = output / paths.REPORT_FILE
    package = result.properties.get("RegisterSegmenter")
    if package:
        kept = package_report_path(output, package["ModelPackageVersion"])
        kept.parent.mkdir(parents=True, exist_ok=True)
        page = stamp_package(page, package["ModelPackageArn"], package["ModelApprovalStatus"], str(kept))
        kept.write_text(page, encoding="utf-8")
    latest.write_text(page, encoding="utf-8")
    return latest


def publish(result: ExecutionResult, store, output: Path, registry: LocalRegistry | None = None) -> None:
    """Copy the latest run's artifacts to the documented paths under ``output``."""
    registry = registry or LocalRegistry(output / paths.REGISTRY_FILE)
    for step, prop, target in PUBLISHED:
        uri = result.properties.get(step, {}).get(prop)
        if uri is None:
            continue
        _download(store, uri, output / target)
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
        package_arn = result.arguments.get("ExportSegments", {}).get("model_package_arn")
        if package_arn:
            registry.mark_published(package_arn, result.execution_id)
    _publish_report(result, output)  # the evaluation was downloaded above (PUBLISHED)


def _write_last_run(result: ExecutionResult, output: Path, params: dict[str, str]) -> None:
    (output / paths.LAST_RUN_FILE).write_text(json.dumps({
        "execution_id": result.execution_id, "status": result.status,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "currency": params.get("Currency") or None,
        "steps": [{"name": s.name, "type": s.type, "status": s.status, "seconds": round(s.seconds, 2),
                   "detail": s.detail} for s in result.steps],
    }, indent=2) + "\n")


def prune_executions(output: Path, keep: int, registry: LocalRegistry) -> list[str]:
    """Delete all but the newest ``keep`` executions under ``output/s3`` (and their quarantine and logs).

    An execution writes ``executions/<id>/`` (assignments, segments) and ``model/<id>/`` (what a model
    package refers to: features, transform input, model, evaluation). An older execution loses both,
    except the ``model/<id>/`` of one that registered a package, which can still be approved later.
    Returns the ids of the executions that were pruned.
    """
    registered = {(package.get("CustomerMetadataProperties") or {}).get(package_metadata.EXECUTION_ID)
                  for package in registry.packages()}
    folders: dict[str, list[Path]] = {}
    for kind in (paths.EXECUTIONS_DIR, paths.PACKAGE_DIR):
        for folder in (output / "s3").glob(f"*/*/{kind}/*"):
            if folder.is_dir():
                folders.setdefault(folder.name, []).append(folder)
    ids = sorted(folders)  # local execution ids start with their UTC start time
    pruned = []
    for execution in ids[:max(len(ids) - max(keep, 0), 0)]:
        for folder in folders[execution]:
            if not (folder.parent.name == paths.PACKAGE_DIR and execution in registered):
                shutil.rmtree(folder, ignore_errors=True)
        prefixes = {folder.parent.parent for folder in folders[execution]}
        for extra in (*(prefix / paths.QUARANTINE_DIR / execution for prefix in prefixes), output / "logs" / execution):
            shutil.rmtree(extra, ignore_errors=True)
        pruned.append(execution)
    return pruned


def _segments_uri(result: ExecutionResult) -> str | None:
    if result.properties.get("ExportSegments") is None:
        return None
    return result.arguments.get("ExportSegments", {}).get("output_uri")
