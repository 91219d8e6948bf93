"""The local runner: expressions, step order, and whole runs on the bundled sample."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from pipeline.local.expressions import Context, evaluate_condition, resolve
from pipeline.local.registry import LocalRegistry
from pipeline.local.run_local import build_definition, export_destinations, run_local
from pipeline.local.runner import execution_order
from pipeline.naming import MODEL_PACKAGE_GROUP_NAME
from steps import columns as c
from steps import paths
from steps.errors import PipelineError
from steps.features.transform_input import FILE_ROWS_ENV
from tests.conftest import SAMPLE


@pytest.fixture(scope="module")
def definition(local_definition: dict) -> dict:
    return local_definition


def test_join_and_parameters_resolve() -> None:
    context = Context(parameters={"Seed": 3}, execution={"PipelineExecutionId": "abc"})
    value = {"Std:Join": {"On": "/", "Values": ["s3://b", {"Get": "Execution.PipelineExecutionId"},
                                                  {"Get": "Parameters.Seed"}]}}
    assert resolve(value, context) == "s3://b/abc/3"


def test_json_get_reads_the_property_file(tmp_path: Path) -> None:
    report = tmp_path / "evaluation.json"
    report.write_text(json.dumps({"metrics": {"silhouette": {"value": 0.4}}, "list": [{"a": 1}]}))
    context = Context(parameters={"Min": 0.3}, execution={}, property_files={"Eval": {"Report": report}})
    get = {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.Eval.PropertyFiles.Report"},
                           "Path": "metrics.silhouette.value"}}
    assert resolve(get, context) == 0.4
    assert evaluate_condition({"Type": "GreaterThanOrEqualTo", "LeftValue": get,
                               "RightValue": {"Get": "Parameters.Min"}}, context)
    assert not evaluate_condition({"Type": "Not", "Condition": {"Type": "GreaterThan", "LeftValue": get,
                                                                "RightValue": 0.1}}, context)
    indexed = {"Std:JsonGet": {"PropertyFile": "Steps.Eval.PropertyFiles.Report", "Path": "list[0].a"}}
    assert resolve(indexed, context) == 1


@pytest.mark.parametrize("reference", ["Parameters.Nope", "Steps.Never.Property", "Execution.Nope"])
def test_unknown_references_are_clear_errors(reference: str) -> None:
    with pytest.raises(PipelineError):
        resolve({"Get": reference}, Context(parameters={}, execution={}))


def test_steps_run_after_what_they_use(definition: dict) -> None:
    order, _, branch_of = execution_order(definition)
    assert order.index("ComputeRFM") < order.index("TrainSegmenter") < order.index("EvaluateSegmenter")
    assert order.index("EvaluateSegmenter") < order.index("CheckQuality") < order.index("RegisterSegmenter")
    assert order.index("RegisterSegmenter") < order.index("PublishIfApproved") < order.index("AssignSegments")
    assert order.index("AssignSegments") < order.index("ExportSegments")
    assert branch_of["QualityGateFailed"] == ("CheckQuality", False)
    assert branch_of["ExportSegments"] == ("PublishIfApproved", True)


def test_cycles_are_reported() -> None:
    cyclic = {"Steps": [
        {"Name": "A", "Type": "Fail", "Arguments": {}, "DependsOn": ["B"]},
        {"Name": "B", "Type": "Fail", "Arguments": {}, "DependsOn": ["A"]},
    ]}
    with pytest.raises(PipelineError, match="cycle"):
        execution_order(cyclic)


@pytest.fixture(scope="module")
def approved_run(tmp_path_factory: pytest.TempPathFactory, definition: dict):
    output = tmp_path_factory.mktemp("approved")
    # The sample's customers in files of 1,000: several transform input files for the two instances.
    with export_destinations("pinpoint,customer-profiles", output), pytest.MonkeyPatch.context() as patch:
        patch.setenv(FILE_ROWS_ENV, str(APPROVED_RUN_FILE_ROWS))
        # NumClusters=4, as the pending run: the k vote (about half a run's time) runs end to end in
        # test_a_run_after_a_publish_compares_with_it_as_on_sagemaker (default parameters) and test_history_local.py.
        result = run_local(str(SAMPLE), output, {"ModelApprovalStatus": "Approved", "TransformInstanceCount": "2",
                                                 "NumClusters": "4"}, definition=definition)
    return output, result


APPROVED_RUN_FILE_ROWS = 1000


def test_approved_run_gives_the_transform_its_instance_count(approved_run) -> None:
    _, result = approved_run
    assert result.status == "Succeeded", result.failure
    assert result.arguments["AssignSegments"]["TransformResources"]["InstanceCount"] == 2


def test_approved_run_spreads_the_transform_files_over_its_two_instances(approved_run) -> None:
    output, result = approved_run
    assert result.status == "Succeeded", result.failure
    customers = len(pd.read_parquet(output / "features" / paths.RFM_FILE))
    files = [paths.transform_input_file(i) for i in range(-(-customers // APPROVED_RUN_FILE_ROWS))]
    assert len(files) >= 3
    shares = result.properties["AssignSegments"]["Local.InstanceFiles"]
    assert shares == [files[0::2], files[1::2]]  # whole files, dealt in name order, every file once


def test_approved_run_publishes_one_segment_per_customer(approved_run) -> None:
    output, result = approved_run
    assert result.status == "Succeeded", result.failure
    features = pd.read_parquet(output / "features" / paths.RFM_FILE)
    segments = pd.read_parquet(output / "segments" / paths.SEGMENTS_FILE)
    assert len(segments) == len(features) > 1000
    assert segments[c.CUSTOMER_ID].is_unique
    assert set(segments[c.CUSTOMER_ID]) == set(features[c.CUSTOMER_ID])
    assert segments[c.RFM_SEGMENT].notna().all() and segments[c.CLUSTER_NAME].notna().all()
    assert segments[c.CUSTOMER_ID].str.len().eq(7).all()  # leading zeros kept


def test_approved_run_writes_every_documented_artifact(approved_run) -> None:
    output, _ = approved_run
    for relative in ("features/rfm.parquet", "features/quality.json", "features/quarantine",
                     "model/model.tar.gz", "evaluation/evaluation.json", "segments/segments.parquet",
                     "export", "registry.json"):
        assert (output / relative).exists(), relative
    quality = json.loads((output / "features" / paths.QUALITY_FILE).read_text())
    assert quality["rows_read"] == quality["rows_used"] + quality["rows_excluded"] + quality["rows_quarantined"]


def test_approved_run_exports_to_the_local_pinpoint_and_customer_profiles(approved_run) -> None:
    output, _ = approved_run
    summary = json.loads((output / "destinations" / "summary.json").read_text())
    customers = len(pd.read_parquet(output / "segments" / paths.SEGMENTS_FILE))
    assert summary["destinations"] == ["s3", "pinpoint", "customer-profiles"]
    assert summary["pinpoint"]["endpoints"] == customers  # the sample has a contact for everyone
    assert sum(n for name, n in summary["pinpoint"]["segments"].items() if name.startswith("RFM segment")) == customers


def test_approved_run_report_names_its_execution(approved_run) -> None:
    output, result = approved_run
    page = (output / paths.REPORT_FILE).read_text()
    assert f"<title>RFM segmentation report \u2013 {result.execution_id}</title>" in page


def test_a_run_after_a_publish_compares_with_it_as_on_sagemaker(approved_run, tmp_path: Path,
                                                               definition: dict) -> None:
    """The evaluation step reads the last publish itself (--published), here from the local store's published/."""
    import shutil

    first, published = approved_run
    assert "First run" in (first / paths.REPORT_FILE).read_text()  # nothing was published before it
    output = shutil.copytree(first, tmp_path / "run")
    result = run_local(str(SAMPLE), output, {}, definition=definition)
    assert result.status == "Succeeded", result.failure
    page = (output / paths.REPORT_FILE).read_text()
    changes = page[page.index('<section id="changes">'):]
    changes = changes[:changes.index("</section>")]
    assert f"Compared with the segments of execution {published.execution_id}" in changes
    assert 'id="segment-comparison"' in changes and "First run" not in changes
    evaluation = json.loads((output / "evaluation" / paths.EVALUATION_FILE).read_text())
    segments = pd.read_parquet(output / "segments" / paths.SEGMENTS_FILE)
    assert evaluation["compared_with"]["execution_id"] == published.execution_id
    assert evaluation["compared_with"]["customers_before"] == len(segments)


def test_approved_run_registers_an_approved_package(approved_run) -> None:
    output, result = approved_run
    packages = LocalRegistry(output / paths.REGISTRY_FILE).packages(MODEL_PACKAGE_GROUP_NAME)
    assert [p["ModelApprovalStatus"] for p in packages] == ["Approved"]
    statuses = {run.name: run.status for run in result.steps}
    assert statuses["QualityGateFailed"] == "Skipped"
    assert statuses["ExportSegments"] == "Succeeded"


def test_pending_run_registers_and_stops_before_export(pending_run) -> None:
    statuses = {run.name: run.status for run in pending_run.result.steps}
    assert statuses["RegisterSegmenter"] == "Succeeded"
    assert statuses["AssignSegments"] == statuses["ExportSegments"] == "Skipped"
    assert not (pending_run.output / "segments" / paths.SEGMENTS_FILE).exists()
    package = LocalRegistry(pending_run.output / paths.REGISTRY_FILE).packages()[0]
    assert package["ModelApprovalStatus"] == "PendingManualApproval"


def test_quality_gate_failure_leaves_a_report_rounded_numbers_and_fitting_advice(tmp_path: Path,
                                                                                 definition: dict) -> None:
    result = run_local(str(SAMPLE), tmp_path, {"MinSilhouette": "0.99", "NumClusters": "3"},
                       definition=definition)
    assert result.status == "Failed"
    assert result.failure.startswith("QualityGateFailed")
    assert re.search(r"silhouette 0\.\d{3} \(minimum 0\.99\)", result.failure), result.failure
    assert not re.search(r"\d\.\d{5}", result.failure), "raw floats in the message"
    assert "NumClusters=3 was set" in result.failure and "or set NumClusters" not in result.failure
    report = tmp_path / paths.REPORT_FILE
    assert result.failure.rstrip(".").endswith(f"Review the report: {report}"), result.failure
    page = report.read_text()
    assert 'id="gate-banner"' in page and result.execution_id in page
    assert not (tmp_path / ".work" / result.execution_id).exists()
    assert (tmp_path / "logs" / result.execution_id / "EvaluateSegmenter.log").is_file()


def test_bad_input_fails_in_compute_rfm_with_the_reason(tmp_path: Path, definition: dict) -> None:
    bad = tmp_path / "empty.csv"
    bad.write_text("")
    result = run_local(str(bad), tmp_path / "out", {}, definition=definition)
    assert result.status == "Failed"
    assert result.failure.startswith("ComputeRFM") and "empty" in result.failure


@pytest.mark.parametrize("param", [{"Nope": "1"}, {"NumClusters": "many"}])
def test_bad_parameters_are_clear_errors(tmp_path: Path, definition: dict, param: dict) -> None:
    with pytest.raises(PipelineError):
        run_local(str(SAMPLE), tmp_path, param, definition=definition)


def test_invalid_approval_status_is_rejected_before_any_step(tmp_path: Path, definition: dict) -> None:
    started = []
    with pytest.raises(PipelineError) as error:
        run_local(str(SAMPLE), tmp_path, {"ModelApprovalStatus": "Aproved"}, on_step=started.append,
                  definition=definition)
    assert str(error.value) == ("--param: parameter ModelApprovalStatus='Aproved' is not one of "
                                "PendingManualApproval, Approved, Rejected.")
    assert started == []
    assert not (tmp_path / paths.REGISTRY_FILE).exists() and not (tmp_path / ".work").exists()


def test_s3_store_downloads_a_prefix_but_not_its_siblings(tmp_path: Path, fake_aws) -> None:
    import boto3
    from moto import mock_aws

    from pipeline.local.store import S3Store

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="rfm-bucket")
        for key in ("data/a.csv", "data/sub/b.csv", "data-old/c.csv"):
            client.put_object(Bucket="rfm-bucket", Key=key, Body=b"x")
        S3Store(client).download("s3://rfm-bucket/data", tmp_path / "in")
    assert sorted(p.relative_to(tmp_path / "in").as_posix() for p in (tmp_path / "in").rglob("*.csv")) == [
        "a.csv", "sub/b.csv"]


def test_a_raising_lambda_is_a_failed_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.local import step_types

    def broken(event, context):
        raise ValueError("boom")

    monkeypatch.setattr(step_types, "lambda_handler", lambda arn: broken)
    env = step_types.Environment(None, tmp_path, None, "e1", {})
    env.store = type("Store", (), {"event_uri": staticmethod(lambda uri: uri)})()
    with pytest.raises(PipelineError, match="raised ValueError: boom"):
        step_types.run_lambda("ExportSegments", {"FunctionArn": "arn:x:function:rfm-export"}, {}, env)


def test_a_cached_definition_keeps_its_pipeline_name(tmp_path: Path) -> None:
    from pipeline.local.run_local import PUBLISH_PIPELINE
    from pipeline.naming import MAIN_PIPELINE_NAME, publish_pipeline_name

    built = build_definition(cache_dir=tmp_path, builder=PUBLISH_PIPELINE)
    cached = build_definition(cache_dir=tmp_path, builder=PUBLISH_PIPELINE)
    assert (built["_cached"], cached["_cached"]) == (False, True)
    assert built["_name"] == cached["_name"] == publish_pipeline_name(MAIN_PIPELINE_NAME)
    assert {k: v for k, v in built.items() if k != "_cached"} == {k: v for k, v in cached.items() if k != "_cached"}


def test_lambda_logs_go_to_the_log_file_whatever_stdout_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler bound to the current sys.stdout (a capture, a wrapper) is swapped too, and no loggers are made."""
    import io
    import logging

    from pipeline.local.step_types import capture_lambda_logs

    console = io.StringIO()
    monkeypatch.setattr("sys.stdout", console)
    logger = logging.getLogger("rfm-test-lambda")
    handler = logging.StreamHandler(console)  # bound to stdout as it is when the Lambda module is imported
    logger.addHandler(handler)
    logging.getLogger("rfm-test-parent.child")  # makes the placeholder "rfm-test-parent"
    try:
        with capture_lambda_logs(tmp_path / "logs" / "step.log"):
            logger.warning("from the lambda")
            print("printed")
    finally:
        logger.removeHandler(handler)
    assert console.getvalue() == ""
    assert (tmp_path / "logs" / "step.log").read_text() == "from the lambda\nprinted\n"
    assert isinstance(logging.Logger.manager.loggerDict["rfm-test-parent"], logging.PlaceHolder)


# --- issue 15: the report you review is the package you approve; runs clean up after themselves ----------------


def test_each_package_keeps_its_own_report(pending_run, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.local.summary import print_summary

    output, result = pending_run.output, pending_run.result
    package = LocalRegistry(output / paths.REGISTRY_FILE).packages()[-1]
    kept = output / paths.REPORTS_DIR / f"{package['ModelPackageVersion']}.html"
    page = kept.read_text()
    assert package["ModelPackageArn"] in page and 'id="model-package"' in page
    assert result.execution_id in page
    assert (output / paths.REPORT_FILE).read_text() == page  # the latest report says which package it is
    metadata = package["CustomerMetadataProperties"]
    assert metadata["report_uri"].endswith(f"/{paths.PACKAGE_DIR}/{result.execution_id}/evaluation/{paths.REPORT_FILE}")
    print_summary(output, result)
    out = capsys.readouterr().out
    assert f"Review {kept}, then publish them with:  rfm approve {package['ModelPackageArn']}" in out


def test_the_definition_declares_the_documented_parameters(definition: dict) -> None:
    from pipeline.parameters import DEFAULTS, HELP, declared_parameters

    declared = {p["Name"]: p for p in definition["Parameters"]}
    assert set(declared) == set(HELP)
    assert {p["Name"]: p["Type"] for p in declared_parameters()} == {n: p["Type"] for n, p in declared.items()}
    for name, default in DEFAULTS.items():
        assert declared[name].get("DefaultValue", "") == default, name


@pytest.mark.parametrize(("param", "message"), [
    ({"NumClusters": "1"}, "NumClusters=1 is out of range"),
    ({"InputFormat": "csv"}, "InputFormat='csv' is not one of"),
    ({"AsOfDate": "2024-13-01"}, "AsOfDate='2024-13-01' is not a date"),
    ({"MinSilhouette": "2"}, "MinSilhouette=2.0 is out of range"),
])
def test_parameter_values_are_checked_before_the_first_step(tmp_path: Path, definition: dict, param: dict,
                                                            message: str) -> None:
    started = []
    with pytest.raises(PipelineError, match=re.escape(message)) as error:
        run_local(str(SAMPLE), tmp_path, param, on_step=started.append, definition=definition)
    assert str(error.value).startswith("--param: parameter ")
    assert started == []


def test_the_definition_cache_is_shared_by_every_output_folder(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.local import run_local as module

    monkeypatch.setenv(module.CACHE_ENV, str(tmp_path / "cache"))
    used = []
    monkeypatch.setattr(module, "timed_build", lambda cache_dir, builder, on_step=None: used.append(cache_dir) or {})
    monkeypatch.setattr(module, "execute", lambda *args, **kwargs: None)
    for output in ("a", "b"):
        module.run_local(str(SAMPLE), tmp_path / output, {})
    assert used == [tmp_path / "cache", tmp_path / "cache"]


def fake_execution(output: Path, execution: str) -> tuple[Path, Path]:
    """An execution's folders as a run leaves them: ``executions/<id>/`` and ``model/<id>/`` (what a package needs)."""
    root = output / "s3" / "rfm-local" / "rfm"
    for kind, parts in ((paths.EXECUTIONS_DIR, ("assignments", "segments")),
                        (paths.PACKAGE_DIR, ("features", "transform", "model", "evaluation"))):
        for part in parts:
            (root / kind / execution / part).mkdir(parents=True)
            (root / kind / execution / part / "data").write_bytes(b"x" * 10)
    (root / paths.QUARANTINE_DIR / execution).mkdir(parents=True)
    (output / "logs" / execution).mkdir(parents=True)
    return root / paths.EXECUTIONS_DIR / execution, root / paths.PACKAGE_DIR / execution


def test_keep_prunes_old_executions_but_not_what_packages_need(tmp_path: Path) -> None:
    from pipeline.local.run_local import prune_executions

    ids = [f"local-2026010{i}T000000-abc" for i in range(1, 8)]
    folders = [fake_execution(tmp_path, execution) for execution in ids]
    registry = LocalRegistry(tmp_path / paths.REGISTRY_FILE)
    registered = ids[1]
    uri = f"s3://rfm-local/rfm/{paths.PACKAGE_DIR}/{registered}"
    registry.create_package({
        "ModelPackageGroupName": MODEL_PACKAGE_GROUP_NAME, "ModelApprovalStatus": "PendingManualApproval",
        "InferenceSpecification": {"Containers": [{"ModelDataUrl": f"{uri}/model/model.tar.gz"}]},
        "CustomerMetadataProperties": {"pipeline_execution_id": registered, "features_uri": f"{uri}/features",
                                       "transform_input_uri": f"{uri}/transform"}})
    pruned = prune_executions(tmp_path, 3, registry)
    assert pruned == ids[:4]
    for number in (0, 2, 3):  # unregistered: nothing of them is left
        assert not folders[number][0].exists() and not folders[number][1].exists()
    assert not folders[1][0].exists()
    assert sorted(p.name for p in folders[1][1].iterdir()) == ["evaluation", "features", "model", "transform"]
    assert all(run.exists() and package.exists() for run, package in folders[4:])
    assert not (tmp_path / "logs" / ids[0]).exists() and (tmp_path / "logs" / ids[6]).exists()
    assert not (tmp_path / "s3" / "rfm-local" / "rfm" / paths.QUARANTINE_DIR / ids[0]).exists()
    assert prune_executions(tmp_path, 3, registry) == [registered]  # again: the package's parts stay
    assert sorted(p.name for p in folders[1][1].iterdir()) == ["evaluation", "features", "model", "transform"]


def test_an_interrupted_run_cleans_up_and_its_approved_package_is_offered(tmp_path: Path, definition: dict) -> None:
    from pipeline.local.approval import approve_local, waiting_packages

    def interrupt_after_registration(run) -> None:
        if run.name == "RegisterSegmenter" and run.status == "Succeeded":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_local(str(SAMPLE), tmp_path, {"ModelApprovalStatus": "Approved", "NumClusters": "4"},
                  on_step=interrupt_after_registration, definition=definition)
    assert not any((tmp_path / ".work").glob("*")), "the interrupted execution's scratch folder was left"
    registry = LocalRegistry(tmp_path / paths.REGISTRY_FILE)
    [package] = registry.unpublished_approved()
    assert [p["ModelPackageArn"] for p in waiting_packages(registry)] == [package["ModelPackageArn"]]
    kept = tmp_path / paths.REPORTS_DIR / f"{package['ModelPackageVersion']}.html"
    assert not kept.exists()  # the run stopped before keeping it
    result = approve_local(tmp_path, None)
    assert result["status"] == "started" and result["model_package_arn"] == package["ModelPackageArn"]
    assert result["report"] == str(kept)  # a file here, not the s3:// URI of the run's local store
    assert f"This report belongs to model package {package['ModelPackageArn']}" in kept.read_text()
    assert (tmp_path / "segments" / paths.SEGMENTS_FILE).is_file()
    assert registry.unpublished_approved() == [] and waiting_packages(registry) == []


def test_publishing_a_run_copies_each_output_and_the_report(tmp_path: Path) -> None:
    """Every published output lands in its folder of the output, and the evaluation's report.html in report.html."""
    from pipeline.local.run_local import PUBLISHED, publish
    from pipeline.local.runner import ExecutionResult
    from pipeline.local.store import FolderStore

    store = FolderStore(tmp_path / "s3")
    properties: dict[str, dict[str, str]] = {}
    for step, prop, target in PUBLISHED:
        uri = f"s3://bucket/rfm/executions/e1/{target}"
        properties.setdefault(step, {})[prop] = uri
        store.local_path(uri).mkdir(parents=True, exist_ok=True)
        (store.local_path(uri) / "out.txt").write_text(target)
    (store.local_path(properties["EvaluateSegmenter"][PUBLISHED[-1][1]]) / paths.REPORT_FILE).write_text("<p>r</p>")
    output = tmp_path / "out"
    (output / "evaluation").mkdir(parents=True)
    (output / "evaluation" / "stale.txt").write_text("an earlier run's")
    publish(ExecutionResult("e1", "Succeeded", [], properties), store, output)
    for _, _, target in PUBLISHED:
        assert (output / target / "out.txt").read_text() == target
    assert not (output / "evaluation" / "stale.txt").exists()  # replaced, not merged
    assert (output / paths.REPORT_FILE).read_text() == "<p>r</p>"


def test_a_failed_step_names_its_log_where_the_run_keeps_it(tmp_path: Path, definition: dict) -> None:
    """The scratch folder goes when the run ends; the one-line failure names the log kept in ``logs/<id>``."""
    transactions = tmp_path / "unnamed.csv"
    transactions.write_text("cust,when,paid\nk1,2024-02-01,5\n")
    result = run_local(str(transactions), tmp_path / "out", {}, definition=definition)
    assert result.status == "Failed"
    match = re.search(r"Step log: (\S+\.log)", result.failure)
    assert match, result.failure
    log = Path(match.group(1))
    assert log.is_file() and log.parent == tmp_path / "out" / "logs" / result.execution_id, result.failure
    assert "no date / amount" in log.read_text()
    assert not (tmp_path / "out" / ".work").exists()



def test_the_encoding_parameter_reaches_compute_rfm(tmp_path: Path, definition: dict) -> None:
    """A Windows-1252 export: refused by line with the parameter to set, then read with Encoding=cp1252."""
    sample = pd.read_csv(SAMPLE, nrows=3000, dtype=str)
    sample["note"] = "caf\u00e9 \u201cVIP\u201d \u20ac"
    windows = tmp_path / "windows.csv"
    windows.write_bytes(sample.to_csv(index=False).encode("cp1252"))
    refused = run_local(str(windows), tmp_path / "out", {"NumClusters": "4"}, definition=definition)
    assert refused.status == "Failed" and "ComputeRFM" in refused.failure
    assert "not utf-8 text (line 2" in refused.failure and "the Encoding parameter" in refused.failure
    result = run_local(str(windows), tmp_path / "out", {"NumClusters": "4", "Encoding": "cp1252"},
                       definition=definition)
    statuses = {run.name: run.status for run in result.steps}
    assert statuses["ComputeRFM"] == "Succeeded", result.failure
    quality = json.loads((tmp_path / "out" / "features" / paths.QUALITY_FILE).read_text())
    assert quality["rows_read"] == 3000


def test_a_broken_playbook_stops_run_local_before_any_step(tmp_path: Path, definition: dict,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from steps.errors import RFMError

    book = tmp_path / "book.yaml"
    book.write_text("segments:\n  Champs: Send a card.\n")
    monkeypatch.setenv("RFM_PLAYBOOK", str(book))
    with pytest.raises(RFMError, match=r"book.yaml: unknown RFM segment\(s\) Champs in 'segments'. Use the names"):
        run_local(str(SAMPLE), tmp_path / "out", {}, definition=definition)
    assert not (tmp_path / "out" / "logs").exists()  # no step ran
