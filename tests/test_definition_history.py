"""The definition's history steps: ComputeRFM's cache key follows the data; no step reads siblings."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline.local.expressions import Context, resolve
from pipeline.local.run_local import build_definition
from steps.features import plan as plan_job


@pytest.fixture(scope="module")
def definition() -> dict:
    return build_definition()


@pytest.fixture(scope="module")
def steps(definition: dict) -> dict[str, dict]:
    return {step["Name"]: step for step in definition["Steps"]}


def _plan(folder: Path, state: Path, out: Path) -> Path:
    plan_job.run(str(folder), str(state), out)
    return out / plan_job.PLAN_FILE


def _compute_arguments(step: dict, plan_file: Path) -> list:
    from pipeline.parameters import DEFAULTS

    context = Context(parameters={"InputDataUrl": "s3://b/rfm/input/", **DEFAULTS},
                      execution={"PipelineExecutionId": "e1"},
                      property_files={"PlanHistory": {"HistoryPlan": plan_file}})
    return resolve(step["Arguments"]["AppSpecification"]["ContainerArguments"], context)


def test_compute_rfm_arguments_change_with_one_object_version(steps: dict, tmp_path: Path) -> None:
    folder = tmp_path / "input"
    folder.mkdir()
    for name in ("a.csv", "b.csv"):
        (folder / name).write_text("customer_id,timestamp,amount\nc1,2024-01-01,5\n")
    first = _compute_arguments(steps["ComputeRFM"], _plan(folder, tmp_path / "state", tmp_path / "p1"))
    same = _compute_arguments(steps["ComputeRFM"], _plan(folder, tmp_path / "state", tmp_path / "p2"))
    os.utime(folder / "b.csv", ns=(10**18, 10**18))  # a new version of one object
    changed = _compute_arguments(steps["ComputeRFM"], _plan(folder, tmp_path / "state", tmp_path / "p3"))
    assert first == same  # an unchanged history: the same cache key
    assert first != changed
    fingerprint = json.loads((tmp_path / "p3" / "plan.json").read_text())["fingerprint"]
    assert f"--history-fingerprint={fingerprint}" in changed


def test_compute_rfm_is_cached_and_plan_history_is_not(steps: dict) -> None:
    assert steps["ComputeRFM"]["CacheConfig"]["Enabled"] is True
    assert "CacheConfig" not in steps["PlanHistory"]
    arguments = json.dumps(steps["ComputeRFM"]["Arguments"])
    assert "ExecutionVariables" not in arguments and "PipelineExecutionId" not in json.dumps(
        steps["ComputeRFM"]["Arguments"]["AppSpecification"])


def test_no_step_reads_the_input_as_an_s3_prefix(steps: dict) -> None:
    """A prefix input would also download siblings such as orders.csv.gz or orders.csv-old/."""
    for name in ("PlanHistory", "ComputeRFM"):
        inputs = steps[name]["Arguments"].get("ProcessingInputs", [])
        assert not any("InputDataUrl" in json.dumps(item) for item in inputs), name
    assert "InputDataUrl" in json.dumps(steps["PlanHistory"]["Arguments"]["AppSpecification"])


def test_rebuild_is_a_boolean_parameter_off_by_default(definition: dict) -> None:
    rebuild = next(p for p in definition["Parameters"] if p["Name"] == "Rebuild")
    assert rebuild["Type"] == "Boolean" and rebuild["DefaultValue"] is False
