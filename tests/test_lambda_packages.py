"""Each Lambda zip holds only ``lambdas/<name>/`` and ``steps/`` (Makefile ``lambda_package``)."""

from __future__ import annotations

import ast
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


def test_the_makefile_packages_the_lambda_and_steps() -> None:
    recipe = (ROOT / "Makefile").read_text()
    assert 'cp -R lambdas/$(1) "$(ARTIFACTS_DIR)/lambdas/"' in recipe
    assert 'cp -R steps "$(ARTIFACTS_DIR)/"' in recipe
