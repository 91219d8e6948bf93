"""The tree shows the architecture: no import cycle; each part of ``steps/`` imports only what its docstring allows."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("steps", "pipeline", "lambdas")
# What each part of steps/ must never import (its __init__ docstring says why).
FORBIDDEN = {
    "steps.features": ("steps.model", "steps.report", "steps.sample"),
    "steps.model": ("steps.features", "steps.sample"),
    "steps.report": ("steps.features", "steps.sample"),
    "steps.sample": ("steps.features", "steps.model", "steps.report"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """Project modules a file imports, lazily or not (``from steps.report import data`` names ``steps.report.data``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in known}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = project_modules()
    return {name: imports_of(path, known) for name, path in known.items()}


def test_no_module_imports_itself_through_others(graph: dict[str, set[str]]) -> None:
    cycles = []
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                cycles.append(" -> ".join([*trail[trail.index(target):], target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_a_part_of_steps_imports_only_what_it_may(graph: dict[str, set[str]], part: str) -> None:
    crossings = sorted(
        f"{name} imports {target}"
        for name, targets in graph.items()
        if name == part or name.startswith(f"{part}.")
        for target in targets
        if any(target == banned or target.startswith(f"{banned}.") for banned in FORBIDDEN[part])
    )
    assert crossings == []


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_each_part_says_what_it_does(part: str) -> None:
    doc = ast.get_docstring(ast.parse((ROOT / part.replace(".", "/") / "__init__.py").read_text()))
    assert doc and "import" in doc.lower(), f"{part}/__init__.py: say what the part does and what it must not import"
