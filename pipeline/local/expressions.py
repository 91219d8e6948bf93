"""Resolve pipeline-definition expressions from the JSON itself.

Handles ``{"Get": "Parameters.X"}``, ``{"Get": "Execution.Y"}``,
``{"Get": "Steps.S.<property path>"}``, ``{"Std:Join": ...}``,
``{"Std:JsonGet": ...}`` and the condition types SageMaker Pipelines defines.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steps.errors import PipelineError

STEP_REF = re.compile(r"^Steps\.([A-Za-z0-9_-]+)(?:\.(.*))?$")


@dataclass
class Context:
    """What expressions are resolved against during one local execution."""

    parameters: dict[str, Any]
    execution: dict[str, str]
    properties: dict[str, dict[str, Any]] = field(default_factory=dict)  # step -> property path -> value
    property_files: dict[str, dict[str, Path]] = field(default_factory=dict)  # step -> name -> local file
    arguments: dict[str, Any] = field(default_factory=dict)  # step -> its resolved arguments

    def get(self, reference: str) -> Any:
        kind, _, rest = reference.partition(".")
        if kind == "Parameters":
            if rest not in self.parameters:
                raise PipelineError(f"unknown parameter {rest!r}", reference)
            return self.parameters[rest]
        if kind == "Execution":
            if rest not in self.execution:
                raise PipelineError(f"unknown execution variable {rest!r}", reference)
            return self.execution[rest]
        match = STEP_REF.match(reference)
        if match:
            step, path = match.group(1), match.group(2) or ""
            values = self.properties.get(step)
            if values is None:
                raise PipelineError(f"step {step!r} has not run (or was skipped)", reference)
            if path not in values:
                raise PipelineError(f"step {step!r} has no property {path!r}", reference)
            return values[path]
        raise PipelineError(f"cannot resolve {reference!r}", "pipeline definition")


def step_references(value: Any) -> set[str]:
    """Names of the steps an expression (or any JSON value) refers to."""
    found: set[str] = set()
    if isinstance(value, dict):
        get = value.get("Get")
        if isinstance(get, str) and (match := STEP_REF.match(get)):
            found.add(match.group(1))
        for item in value.values():
            found |= step_references(item)
    elif isinstance(value, list):
        for item in value:
            found |= step_references(item)
    return found


def resolve(value: Any, context: Context) -> Any:
    """The concrete value of a definition fragment (recursively)."""
    if isinstance(value, list):
        return [resolve(item, context) for item in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Get"}:
        return context.get(value["Get"])
    if set(value) == {"Std:Join"}:
        join = value["Std:Join"]
        return str(join["On"]).join(_to_text(resolve(v, context)) for v in join["Values"])
    if set(value) == {"Std:JsonGet"}:
        return json_get(value["Std:JsonGet"], context)
    return {key: resolve(item, context) for key, item in value.items()}


def _to_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def json_get(spec: dict, context: Context) -> Any:
    """``Std:JsonGet``: a dotted/indexed path into a step's property file."""
    reference = spec["PropertyFile"]["Get"] if isinstance(spec["PropertyFile"], dict) else spec["PropertyFile"]
    match = re.match(r"^Steps\.([^.]+)\.PropertyFiles\.(.+)$", reference)
    if not match:
        raise PipelineError(f"bad property file reference {reference!r}", "Std:JsonGet")
    step, name = match.groups()
    path = context.property_files.get(step, {}).get(name)
    if path is None or not path.is_file():
        raise PipelineError(f"property file {name} of step {step} was not written", str(path))
    data = json.loads(path.read_text())
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", resolve(spec["Path"], context)):
        try:
            data = data[int(part[1:-1])] if part.startswith("[") else data[part]
        except (KeyError, IndexError, TypeError):
            raise PipelineError(f"path {spec['Path']!r} not found in property file {name}", str(path)) from None
    return data


_COMPARE = {
    "Equals": lambda a, b: a == b,
    "GreaterThan": lambda a, b: a > b,
    "GreaterThanOrEqualTo": lambda a, b: a >= b,
    "LessThan": lambda a, b: a < b,
    "LessThanOrEqualTo": lambda a, b: a <= b,
}


def evaluate_condition(condition: dict, context: Context) -> bool:
    """One condition of a Condition step."""
    kind = condition["Type"]
    if kind in _COMPARE:
        left, right = resolve(condition["LeftValue"], context), resolve(condition["RightValue"], context)
        if kind != "Equals":
            left, right = float(left), float(right)
        return bool(_COMPARE[kind](left, right))
    if kind == "Not":
        return not evaluate_condition(condition["Condition"], context)
    if kind == "Or":
        return any(evaluate_condition(c, context) for c in condition["Conditions"])
    if kind == "In":
        value = resolve(condition["QueryValue"], context)
        return value in [resolve(v, context) for v in condition["Values"]]
    raise PipelineError(f"condition type {kind!r} is not supported by the local runner", "Condition")
