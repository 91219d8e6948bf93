"""Execute a pipeline definition (the JSON SageMaker gets) on this machine.

Steps run in dependency order; conditions pick their branch; a step whose
branch was not taken is ``Skipped``; a failing step stops the run with its
name and error. No AWS account and no Docker are needed.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.local import step_types as handlers
from pipeline.local.expressions import Context, evaluate_condition, resolve, step_references
from pipeline.local.registry import LOCAL_ACCOUNT, LOCAL_REGION, LocalRegistry
from pipeline.local.store import FolderStore, S3Store
from pipeline.parameters import parameter_values
from steps.errors import PipelineError, RFMError

LOCAL_EXECUTION_ARN_PREFIX = f"arn:aws:sagemaker:{LOCAL_REGION}:{LOCAL_ACCOUNT}:pipeline/local/execution/"


@dataclass
class StepRun:
    name: str
    type: str
    status: str = "NotStarted"  # Succeeded | Failed | Skipped
    seconds: float = 0.0
    detail: str = ""


@dataclass
class ExecutionResult:
    execution_id: str
    status: str
    steps: list[StepRun]
    properties: dict[str, dict[str, Any]] = field(default_factory=dict)
    arguments: dict[str, Any] = field(default_factory=dict)
    failure: str = ""


def flatten(steps: list[dict], branch_of: dict[str, tuple[str, bool]] | None = None,
            parent: tuple[str, bool] | None = None) -> dict[str, dict]:
    """All steps by name, condition branches included; ``branch_of`` records (condition, branch)."""
    found: dict[str, dict] = {}
    for step in steps:
        if step["Name"] in found:
            raise PipelineError(f"duplicate step name {step['Name']!r}", "pipeline definition")
        found[step["Name"]] = step
        if parent is not None and branch_of is not None:
            branch_of[step["Name"]] = parent
        if step["Type"] == "Condition":
            arguments = step["Arguments"]
            found |= flatten(arguments.get("IfSteps", []), branch_of, (step["Name"], True))
            found |= flatten(arguments.get("ElseSteps", []), branch_of, (step["Name"], False))
    return found


def dependencies(step: dict, branch_of: dict[str, tuple[str, bool]]) -> set[str]:
    """Steps that must finish before ``step``: references, DependsOn and its condition."""
    own = {k: v for k, v in step.items() if k != "Arguments"}
    arguments = dict(step.get("Arguments", {}))
    if step["Type"] == "Condition":
        arguments.pop("IfSteps", None)
        arguments.pop("ElseSteps", None)
    needed = step_references(arguments) | step_references(own) | set(step.get("DependsOn", []))
    if step["Name"] in branch_of:
        needed.add(branch_of[step["Name"]][0])
    return needed - {step["Name"]}


def execution_order(definition: dict) -> tuple[list[str], dict[str, dict], dict[str, tuple[str, bool]]]:
    """Steps in a dependency order (definition order breaks ties)."""
    branch_of: dict[str, tuple[str, bool]] = {}
    by_name = flatten(definition["Steps"], branch_of)
    needs = {name: dependencies(step, branch_of) for name, step in by_name.items()}
    for name, needed in needs.items():
        unknown = needed - set(by_name)
        if unknown:
            raise PipelineError(f"step {name} refers to unknown step(s) {', '.join(sorted(unknown))}",
                                "pipeline definition")
    order: list[str] = []
    while len(order) < len(by_name):
        ready = [n for n in by_name if n not in order and needs[n] <= set(order)]
        if not ready:
            cycle = sorted(set(by_name) - set(order))
            raise PipelineError(f"steps depend on each other in a cycle: {', '.join(cycle)}", "pipeline definition")
        order.append(ready[0])
    return order, by_name, branch_of


class LocalRunner:
    """Runs one definition; ``on_step`` is told of every step as it starts (``Executing``) and ends."""

    def __init__(self, definition: dict, store: FolderStore | S3Store, workdir: Path, registry: LocalRegistry,
                 on_step: Callable[[StepRun], None] | None = None, logs: Path | None = None) -> None:
        self.definition = definition
        self.logs = Path(logs) if logs is not None else None  # each execution's logs in logs/<id> (default: workdir)
        self.store = store
        self.workdir = Path(workdir)
        self.registry = registry
        self.on_step = on_step or (lambda run: None)

    def parameters(self, overrides: dict[str, str]) -> dict[str, Any]:
        return parameter_values(self.definition.get("Parameters", []), overrides)

    def run(self, overrides: dict[str, str] | None = None, execution_id: str | None = None,
            models: dict[str, str] | None = None) -> ExecutionResult:
        """Execute once; ``models`` are SageMaker models that exist beforehand (name -> model data URL)."""
        execution_id = execution_id or f"local-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
        context = Context(
            parameters=self.parameters(overrides or {}),
            execution={"PipelineExecutionId": execution_id, "PipelineName": self.definition.get("_name", "local"),
                       "PipelineExecutionArn": f"{LOCAL_EXECUTION_ARN_PREFIX}{execution_id}",
                       "StartDateTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "CurrentDateTime": ""},
        )
        order, by_name, branch_of = execution_order(self.definition)
        env = handlers.Environment(self.store, self.workdir / execution_id, self.registry, execution_id,
                                   dict(models or {}), self.logs / execution_id if self.logs else None)
        taken: dict[str, bool] = {}
        runs = {name: StepRun(name, by_name[name]["Type"]) for name in order}
        result = ExecutionResult(execution_id, "Executing", [runs[n] for n in order], context.properties,
                                 context.arguments)
        for name in order:
            run = runs[name]
            step = by_name[name]
            if not self._should_run(name, step, branch_of, taken, runs):
                run.status = "Skipped"
                self.on_step(run)
                continue
            started = time.perf_counter()
            run.status = "Executing"
            self.on_step(run)
            try:
                self._execute(name, step, context, env, taken, run)
                run.status = "Succeeded"
            except RFMError as error:
                run.status, run.detail = "Failed", str(error)
            run.seconds = time.perf_counter() - started
            self.on_step(run)
            if run.status == "Failed":
                prefix = "" if run.detail.startswith(f"{name}:") else f"{name}: "
                result.status, result.failure = "Failed", prefix + run.detail
                for later in order[order.index(name) + 1:]:
                    runs[later].status = "NotRun"
                return result
        result.status = "Succeeded"
        return result

    def _should_run(self, name: str, step: dict, branch_of: dict, taken: dict[str, bool],
                    runs: dict[str, StepRun]) -> bool:
        if name in branch_of:
            condition, branch = branch_of[name]
            if taken.get(condition) is not branch:
                return False
        needed = dependencies(step, branch_of)
        return all(runs[n].status == "Succeeded" for n in needed)

    def _execute(self, name: str, step: dict, context: Context, env: handlers.Environment,
                 taken: dict[str, bool], run: StepRun) -> None:
        kind = step["Type"]
        if kind == "Condition":
            conditions = step["Arguments"]["Conditions"]
            taken[name] = all(evaluate_condition(c, context) for c in conditions)
            run.detail = "true" if taken[name] else "false"
            context.properties[name] = {"Outcome": taken[name]}
            return
        if kind == "Fail":
            message = resolve(step["Arguments"].get("ErrorMessage", "the pipeline failed"), context)
            raise PipelineError(str(message), name)
        args = resolve(step.get("Arguments", {}), context)
        context.arguments[name] = args
        if kind == "Processing":
            context.properties[name] = handlers.run_processing(name, args, env)
            context.property_files[name] = handlers.processing_property_files(name, step, args, env)
        elif kind == "Training":
            context.properties[name] = handlers.run_training(name, args, env)
        elif kind == "RegisterModel":
            context.properties[name] = handlers.run_register_model(name, args, env)
            package = context.properties[name]
            run.detail = f"{package['ModelPackageArn']} ({package['ModelApprovalStatus']})"
        elif kind == "Model":
            context.properties[name] = handlers.run_create_model(name, args, env)
        elif kind == "Transform":
            context.properties[name] = handlers.run_transform(name, args, env)
        elif kind == "Lambda":
            step_with_arn = {**step, "FunctionArn": resolve(step["FunctionArn"], context)}
            context.properties[name] = handlers.run_lambda(name, step_with_arn, args, env)
        else:
            raise PipelineError(f"step type {kind!r} is not supported by the local runner", name)


def load_definition(text: str, pipeline_name: str) -> dict:
    definition = json.loads(text)
    definition["_name"] = pipeline_name
    return definition
