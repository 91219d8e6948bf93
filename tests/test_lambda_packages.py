"""Each Lambda zip holds only ``lambdas/<name>/`` and ``steps/`` (Makefile ``lambda_package``)."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPLOYED = ("trigger", "export", "approval")


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("name", DEPLOYED)
def test_a_lambda_imports_only_what_its_zip_holds(name: str) -> None:
    outside = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in (ROOT / "lambdas" / name).rglob("*.py")
        for module in _imported_modules(path)
        if module.split(".")[0] in {"lambdas", "pipeline", "tests", "benchmarks"}
        and not (module == "lambdas" or module.startswith(f"lambdas.{name}"))
    }
    assert outside == set()


@pytest.mark.parametrize(("target", "name"), [
    ("build-TriggerFunction", "trigger"), ("build-ApprovalFunction", "approval"), ("build-ExportFunction", "export")])
def test_sam_build_target_packages_the_lambda_and_steps(tmp_path: Path, target: str, name: str) -> None:
    """``make build-<Function>`` (what ``sam build`` calls) lays out exactly the Lambda, ``steps`` and its wheels."""
    artifacts = tmp_path / "artifacts"
    result = subprocess.run(  # LAMBDA_PIP=true: the wheels come from the registry; the layout is what is checked
        ["make", "--no-print-directory", "-C", str(ROOT), target, f"ARTIFACTS_DIR={artifacts}", "LAMBDA_PIP=true"],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in artifacts.iterdir()) == ["lambdas", "steps"]
    assert sorted(p.name for p in (artifacts / "lambdas").iterdir()) == ["__init__.py", name]
    packaged = {p.relative_to(artifacts / "steps") for p in (artifacts / "steps").rglob("*.py")}
    assert packaged == {p.relative_to(ROOT / "steps") for p in (ROOT / "steps").rglob("*.py")}
    assert (artifacts / "lambdas" / name / "app.py").is_file()
    assert not list(artifacts.rglob("__pycache__"))
