"""The command line explains itself and fails with one clear line, never a traceback."""

from __future__ import annotations

import io
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
])
def test_errors_are_one_line_without_traceback(args: list[str], message: str, tmp_path: Path) -> None:
    completed = run_cli(*(arg.replace("{tmp}", str(tmp_path)) for arg in args))
    assert completed.returncode != 0
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and message in lines[-1], completed.stderr
    assert "Traceback" not in completed.stderr


def test_run_local_rejects_a_bad_approval_status_before_any_step(tmp_path: Path) -> None:
    completed = run_cli("run-local", "--input", "data/sample/transactions.csv.gz", "--output", str(tmp_path),
                        "--param", "ModelApprovalStatus=approved")
    assert completed.returncode != 0
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert lines == ["error: --param: parameter ModelApprovalStatus='approved' is not one of "
                     "PendingManualApproval, Approved, Rejected."], completed.stderr
    assert "ComputeRFM" not in completed.stdout + completed.stderr


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
