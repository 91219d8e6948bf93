"""The command line explains itself and fails with one clear line, never a traceback."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline.cli import build_parser, main
from pipeline.local.progress import StepReporter, describe_step
from pipeline.local.runner import StepRun
from steps import columns as c
from steps import paths
from tests.conftest import ROOT

RFM = [str(Path(sys.executable).parent / "rfm")]
COMMANDS = ["sample", "features", "run-local", "approve", "segments", "show"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*RFM, *args], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)


def test_top_level_help_lists_every_command_with_an_example() -> None:
    text = build_parser().format_help()
    for command in COMMANDS:
        assert command in text
        assert f"rfm {command}" in text


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "example" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["features", "--input", "/no/such/file.csv", "--output", "{tmp}/out"], "no such file"),
    (["run-local", "--input", "/no/such/file.csv", "--output", "{tmp}/out"], "no such input"),
    (["run-local", "--input", "data/sample/transactions.csv.gz", "--param", "oops"], "Name=Value"),
    (["approve", "--output", "{tmp}/empty"], "waiting for approval"),
    (["segments", "--output", "{tmp}/empty"], "no published segments"),
    (["features", "--input", "data/sample/transactions.csv.gz", "--output", "README.md"], "not a folder"),
    (["run-local", "--input", "data/sample/transactions.csv.gz", "--output", "README.md"], "not a folder"),
    (["run-local", "--input", "data/sample/transactions.csv.gz", "--output", "{tmp}/o", "--param", "NumClusters=1"],
     "--param: parameter NumClusters=1 is out of range"),
    (["run-local", "--input", "data/sample/transactions.csv.gz", "--output", "{tmp}/o", "--param", "InputFormat=csv"],
     "--param: parameter InputFormat='csv' is not one of"),
    (["run-local", "--input", "data/sample/transactions.csv.gz", "--output", "{tmp}/o",
      "--param", "AsOfDate=2024-13-01"], "--param: parameter AsOfDate='2024-13-01' is not a date"),
    (["run-local", "--input", "data/sample/transactions.csv.gz", "--output", "{tmp}/o", "--destination", "pinpont"],
     "--destination: unknown export destination(s) pinpont"),
])
def test_errors_are_one_line_without_traceback(args: list[str], message: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # In-process (main() is what the console script calls; an escaping exception fails the test): the
    # real process, its exit status and its stderr are checked by test_debug_shows_the_traceback and
    # test_a_closed_pipe_ends_quietly.
    monkeypatch.chdir(ROOT)
    status = main([arg.replace("{tmp}", str(tmp_path)) for arg in args])
    out, err = capsys.readouterr()
    assert status != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and message in lines[-1], err
    assert "Traceback" not in err


def test_run_local_rejects_a_bad_approval_status_before_any_step(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    status = main(["run-local", "--input", "data/sample/transactions.csv.gz", "--output", str(tmp_path),
                   "--param", "ModelApprovalStatus=approved"])
    out, err = capsys.readouterr()
    assert status != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == ["error: --param: parameter ModelApprovalStatus='approved' is not one of "
                     "PendingManualApproval, Approved, Rejected."], err
    assert "ComputeRFM" not in out + err


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    completed = run_cli("--debug", "segments", "--output", str(tmp_path))
    assert completed.returncode != 0 and "Traceback" in completed.stderr


@pytest.fixture
def published(tmp_path: Path, features_frame: pd.DataFrame) -> Path:
    frame = features_frame.copy()
    frame[c.CLUSTER] = 0
    frame[c.CLUSTER_NAME] = "Everyone"
    (tmp_path / "segments").mkdir()
    frame.to_parquet(tmp_path / "segments" / paths.SEGMENTS_FILE)
    return tmp_path


def test_show_prints_one_customer(published: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "0000007", "--output", str(published)]) == 0
    out = capsys.readouterr().out
    assert '"customer_id": "0000007"' in out and '"rfm_segment"' in out


def test_show_prints_json_with_null_for_what_the_customer_lacks(published: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A customer new since the last publish has no previous segment: null, not NaN (which is not JSON)."""
    frame = pd.read_parquet(published / "segments" / paths.SEGMENTS_FILE)
    frame[c.PREVIOUS_SEGMENT] = pd.Series([None] * len(frame), dtype="str")  # as exports write it: NaN when read
    frame[c.MONETARY] = frame[c.MONETARY].astype(float)
    frame.to_parquet(published / "segments" / paths.SEGMENTS_FILE)
    assert main(["show", "0000007", "--output", str(published)]) == 0
    shown = json.loads(capsys.readouterr().out, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert shown[c.CUSTOMER_ID] == "0000007" and shown[c.PREVIOUS_SEGMENT] is None
    assert isinstance(shown[c.MONETARY], float)


def test_show_matches_ids_exactly(published: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "7", "--output", str(published)]) != 0
    assert "leading zeros" in capsys.readouterr().err


def test_segments_prints_both_tables(published: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["segments", "--output", str(published)]) == 0
    out = capsys.readouterr().out
    assert "by RFM segment" in out and "by cluster" in out and "Everyone" in out


def test_plain_reporter_writes_finished_steps_only() -> None:
    stream = io.StringIO()
    reporter = StepReporter(stream, live=False)
    run = StepRun("ComputeRFM", "Processing", "Executing")
    reporter(run)
    assert stream.getvalue() == ""
    run.status, run.seconds = "Succeeded", 1.25
    reporter(run)
    assert stream.getvalue() == describe_step(run) + "\n"
    assert "ComputeRFM" in stream.getvalue() and "1.2 s" in stream.getvalue()


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({}, [], "no AWS region. Pass --region"),
        ({"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}, ["--region", "us-east-1"], "no AWS credentials"),
    ],
)
def test_approve_in_sagemaker_without_region_or_credentials_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: dict, args: list, message: str
) -> None:
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr("boto3.DEFAULT_SESSION", None)  # no session (with credentials) left by another test
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    arn = "arn:aws:sagemaker:us-east-1:123456789012:model-package/rfm-segmenter/1"
    assert main(["approve", "--sagemaker", *args, arn]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


# --- issue 15: help texts and small mistakes -------------------------------------------------------------------------


def test_features_requires_input_outside_the_container(tmp_path: Path) -> None:
    completed = run_cli("features", "--output", str(tmp_path))
    assert completed.returncode == 2
    assert "the following arguments are required: --input" in completed.stderr
    assert "/opt/ml" not in completed.stderr


def test_features_prints_plain_lines_like_every_other_command(tmp_path: Path) -> None:
    completed = run_cli("features", "--input", "data/sample/transactions.csv.gz", "--output", str(tmp_path / "f"))
    assert completed.returncode == 0, completed.stderr
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert lines and not any(line[:4].isdigit() or " INFO " in line for line in lines), lines


def test_a_closed_pipe_ends_quietly(published: Path) -> None:
    process = subprocess.Popen([*RFM, "segments", "--output", str(published)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, cwd=ROOT)
    process.stdout.close()  # like `| head` exiting before rfm writes
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0, stderr
    assert "BrokenPipe" not in stderr and "Exception ignored" not in stderr, stderr


def test_sample_options_are_described(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option, description in (("--customers CUSTOMERS", "number of customers"), ("--seed SEED", "random seed"),
                                ("--output OUTPUT", "CSV file to write")):
        assert f"{option} {description}" in text, option


def test_run_local_help_lists_the_pipeline_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.parameters import HELP

    with pytest.raises(SystemExit):
        main(["run-local", "--help"])
    text = capsys.readouterr().out
    for name in HELP:
        assert name in text, name
    assert "--keep" in text


@pytest.mark.parametrize(("option", "parameter"), [("--as-of=2024-01-01", "--param AsOfDate="),
                                                   ("--format", "--param InputFormat="),
                                                   ("--num-clusters", "--param NumClusters=")])
def test_run_local_hints_at_the_parameter(option: str, parameter: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run-local", "--input", "x.csv", option, "5"] if "=" not in option else
             ["run-local", "--input", "x.csv", option])
    assert exit_info.value.code == 2
    assert parameter in capsys.readouterr().err


@pytest.mark.parametrize("module", ["pipeline.get_pipeline_definition", "pipeline.run_pipeline"])
def test_template_clis_show_an_example(module: str, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    with pytest.raises(SystemExit):
        importlib.import_module(module).main(["--help"])
    text = capsys.readouterr().out
    assert "example:" in text and "--module-name pipeline.definition" in text.split("example:", 1)[1]


def test_failed_step_lines_never_cut_a_word() -> None:
    path = "/home/analyst/projects/rfm/output/.work/local-20260101T000000-abcdef/ComputeRFM/input/transactions.csv"
    run = StepRun("ComputeRFM", "Processing", "Failed", 1.0, f"ComputeRFM: no such file {path}. Check --input.")
    line = describe_step(run)
    assert path not in line and "/home/analyst" not in line and line.endswith("no such file ...")


def no_aws_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(HOME=str(tmp_path), AWS_CONFIG_FILE="/nonexistent", AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
               AWS_EC2_METADATA_DISABLED="true")
    return env


@pytest.mark.slow
@pytest.mark.parametrize(("command", "env", "message"), [
    (["get-pipeline-definition", "--module-name", "pipeline.definition",
      "--kwargs", '{"role": "arn:aws:iam::123456789012:role/r"}'], {}, "error: --kwargs: no AWS region. Pass it"),
    (["run-pipeline", "--module-name", "pipeline.definition", "--role-arn", "arn:aws:iam::123456789012:role/r",
      "--kwargs", '{"region": "us-east-1", "role": "arn:aws:iam::123456789012:role/r", "image_uri": "i:1"}'], {},
     "error: AWS configuration: no AWS credentials. Configure credentials"),
])
def test_template_clis_say_what_to_configure(command: list[str], env: dict, message: str, tmp_path: Path) -> None:
    binary = str(Path(sys.executable).parent / command[0])
    completed = subprocess.run([binary, *command[1:]], capture_output=True, text=True, timeout=300, check=False,
                               cwd=ROOT, env={**no_aws_env(tmp_path), **env})
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert completed.returncode == 1 and lines and lines[-1].startswith(message), completed.stderr
    assert "unexpected" not in completed.stderr and "Traceback" not in completed.stderr


def test_approve_names_the_report_of_the_package_it_approves(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                             ) -> None:
    from pipeline.local.registry import LocalRegistry
    from pipeline.naming import MODEL_PACKAGE_GROUP_NAME

    registry = LocalRegistry(tmp_path / paths.REGISTRY_FILE)
    for _ in range(2):
        package = registry.create_package({"ModelPackageGroupName": MODEL_PACKAGE_GROUP_NAME,
                                           "ModelApprovalStatus": "PendingManualApproval"})
    (tmp_path / paths.REPORTS_DIR).mkdir()
    (tmp_path / paths.REPORTS_DIR / "2.html").write_text("<html></html>")
    assert main(["approve", "--reject", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"rejecting the newest: {package['ModelPackageArn']}" in out
    assert f"its report (the one to review): {tmp_path / paths.REPORTS_DIR / '2.html'}" in out
    assert main(["approve", "--list", "--output", str(tmp_path)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 2 and "Rejected" in listed[1] and "PendingManualApproval" in listed[0]


def test_console_tables_label_means_and_show_money_in_the_runs_currency(published: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    (published / paths.LAST_RUN_FILE).write_text('{"currency": "EUR"}')
    assert main(["segments", "--output", str(published)]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "customers" in line and "share" in line)
    for label in ("mean recency (days)", "mean orders", "mean spend", "avg order value", "revenue"):
        assert label in header, label
    assert "\u20ac" in out and "$" not in out


def test_approving_an_older_package_than_the_published_one_is_noted(tmp_path: Path) -> None:
    import json

    from pipeline.local.approval import newer_published
    from pipeline.local.registry import LocalRegistry
    from pipeline.naming import MODEL_PACKAGE_GROUP_NAME

    registry = LocalRegistry(tmp_path / paths.REGISTRY_FILE)
    old, new = (registry.create_package({"ModelPackageGroupName": MODEL_PACKAGE_GROUP_NAME}) for _ in range(2))
    assert newer_published(tmp_path, registry, old["ModelPackageArn"]) is None  # nothing published yet
    manifest = tmp_path / "s3" / "rfm-local" / "rfm" / paths.PUBLISHED_DIR / paths.PUBLISHED_MANIFEST
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"model_package_arn": new["ModelPackageArn"]}))
    assert newer_published(tmp_path, registry, old["ModelPackageArn"])["ModelPackageVersion"] == 2
    assert newer_published(tmp_path, registry, new["ModelPackageArn"]) is None  # the published one itself
    manifest.write_text(json.dumps({"model_package_arn": old["ModelPackageArn"]}))
    assert newer_published(tmp_path, registry, new["ModelPackageArn"]) is None  # approving a newer one
    manifest.write_text("not json")
    assert newer_published(tmp_path, registry, old["ModelPackageArn"]) is None
