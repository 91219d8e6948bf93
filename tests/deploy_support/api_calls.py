"""Find the AWS API calls a group of source files makes, by reading their syntax trees.

How it works
------------
1. The *services* a group uses are the botocore service names it creates clients for:
   ``boto3.client("sagemaker")``, ``session.client("s3")``, any call of a function whose name contains
   ``client`` with a service name as its first argument (``_client_for("pinpoint", ...)``), and
   attributes named ``<service>_client`` (the SageMaker SDK's ``session.sagemaker_client``).
2. An *API call* is any attribute whose name is an operation of one of those services in botocore's
   own service model (``start_pipeline_execution`` -> ``StartPipelineExecution``), whether it is called
   (``client.put_object(...)``) or passed on (``retry.call(client.get_domain, ...)``), plus the
   operations named in ``get_paginator("list_objects_v2")`` and ``get_waiter(...)``. Clients handed
   from function to function need no tracking: the group is the unit, not the variable.
3. Each operation maps to the IAM actions that authorize it: ``<signing name>:<Operation>`` (signing
   names: ``pinpoint`` -> ``mobiletargeting``, ``customer-profiles`` -> ``profile``), except where IAM
   names differ (S3's ``ListObjectsV2`` is ``s3:ListBucket``, ``HeadObject`` is ``s3:GetObject``).

What it cannot see
------------------
- Calls made inside libraries: the SageMaker SDK's ``Pipeline.upsert``/``start`` and its role
  validation, Powertools' DynamoDB idempotency store, awswrangler. The tests list those by hand
  (``LIBRARY_CALLS`` in ``tests/test_iam_coverage.py``) with the marker that shows the code uses them.
- Calls SageMaker Pipelines makes with the pipeline role (CreateProcessingJob, ..., InvokeFunction):
  the tests derive them from the step types of the built pipeline definitions instead.
- Permissions an API needs beyond its own action (``iam:PassRole`` for a role passed in a request).
- Service names or operation names built at run time (``getattr(client, name)``).
A method of the project's own with the same name as an operation of a service the group uses (a
stand-in class) is counted too, which errs on the side of asking for the permission; a group can
therefore name single functions of a file (``path::function``) instead of the whole file. Attributes
of imported modules (``re.search``) are never API calls.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# IAM actions whose names differ from the API operation's (S3 is the one service we use with such names).
IAM_ACTION_OVERRIDES: dict[tuple[str, str], tuple[str, ...]] = {
    ("s3", "ListObjectsV2"): ("s3:ListBucket",),
    ("s3", "ListObjects"): ("s3:ListBucket",),
    ("s3", "HeadObject"): ("s3:GetObject",),
    ("s3", "HeadBucket"): ("s3:ListBucket",),
    ("s3", "DeleteObjects"): ("s3:DeleteObject",),
    ("s3", "CopyObject"): ("s3:GetObject", "s3:PutObject"),
    ("s3", "CreateMultipartUpload"): ("s3:PutObject",),
    ("s3", "UploadPart"): ("s3:PutObject",),
    ("s3", "CompleteMultipartUpload"): ("s3:PutObject",),
}


@dataclass(frozen=True)
class ApiCall:
    """One place in the code that calls (or passes on) an AWS API operation."""

    service: str
    operation: str
    path: str
    line: int

    @property
    def actions(self) -> tuple[str, ...]:
        """The IAM actions that authorize this call."""
        return iam_actions(self.service, self.operation)


@functools.cache
def _service_model(service: str):  # noqa: ANN202 (botocore.model.ServiceModel)
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


@functools.cache
def known_services() -> frozenset[str]:
    """Every service name botocore knows."""
    import botocore.session

    return frozenset(botocore.session.get_session().get_available_services())


@functools.cache
def operations(service: str) -> dict[str, str]:
    """Python method name -> API operation name, e.g. ``put_object`` -> ``PutObject``."""
    from botocore import xform_name

    return {xform_name(name): name for name in _service_model(service).operation_names}


def iam_actions(service: str, operation: str) -> tuple[str, ...]:
    """IAM actions for one operation of one botocore service.

    Examples
    --------
    >>> iam_actions("pinpoint", "CreateImportJob")
    ('mobiletargeting:CreateImportJob',)
    >>> iam_actions("s3", "ListObjectsV2")
    ('s3:ListBucket',)
    """
    if (service, operation) in IAM_ACTION_OVERRIDES:
        return IAM_ACTION_OVERRIDES[(service, operation)]
    return (f"{_service_model(service).signing_name}:{operation}",)


def _call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _string_argument(node: ast.Call, keyword: str) -> str | None:
    if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        return node.args[0].value
    for item in node.keywords:
        if item.arg == keyword and isinstance(item.value, ast.Constant) and isinstance(item.value.value, str):
            return item.value.value
    return None


def client_services(tree: ast.AST) -> set[str]:
    """botocore services a module creates (or reaches) clients for."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and "client" in _call_name(node).lower():
            name = _string_argument(node, "service_name")
            if name in known_services():
                found.add(name)
        elif isinstance(node, ast.Attribute) and node.attr.endswith("_client"):
            name = node.attr.removesuffix("_client").replace("_", "-")
            if name in known_services():
                found.add(name)
    return found


def _named_operation(node: ast.Call, services: Iterable[str]) -> tuple[str, str] | None:
    """``(service, operation)`` for ``get_paginator("op")`` / ``get_waiter("name")``."""
    name = _call_name(node)
    argument = _string_argument(node, "operation_name" if name == "get_paginator" else "waiter_name")
    if name not in ("get_paginator", "get_waiter") or argument is None:
        return None
    for service in sorted(services):
        if name == "get_paginator" and argument in operations(service):
            return service, operations(service)[argument]
        if name == "get_waiter":
            import botocore.session

            model = botocore.session.get_session().get_waiter_model(service) if _has_waiters(service) else None
            if model is not None and _waiter_key(argument) in model.waiter_names:
                return service, model.get_waiter(_waiter_key(argument)).operation
    return None


def _has_waiters(service: str) -> bool:
    import botocore.session

    try:
        botocore.session.get_session().get_waiter_model(service)
    except Exception:  # noqa: BLE001 (botocore raises DataNotFoundError for services without waiters)
        return False
    return True


def _waiter_key(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))


def _imported_modules(tree: ast.AST) -> set[str]:
    return {(alias.asname or alias.name).split(".")[0]
            for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}


def _select(tree: ast.Module, function: str | None) -> ast.AST:
    if function is None:
        return tree
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == function:
            return node
    raise LookupError(f"no function {function!r}")


def parse_unit(unit: str, root: Path) -> tuple[str, ast.AST, set[str]]:
    """``"path"`` or ``"path::function"`` -> (unit, its syntax tree, the module names its file imports)."""
    relative, _, function = unit.partition("::")
    module = ast.parse((root / relative).read_text(), filename=relative)
    return unit, _select(module, function or None), _imported_modules(module)


def collect(units: Iterable[str], root: Path) -> list[ApiCall]:
    """The API calls made by a group of code units taken together (see the module docstring).

    Parameters
    ----------
    units : iterable of str
        ``"lambdas/trigger/app.py"`` (a file) or ``"pipeline/local/approval.py::approve_sagemaker"`` (one
        function of it), relative to ``root``.
    root : Path
        The repository.

    Returns
    -------
    list of ApiCall
        Sorted by unit and line; one entry per place.
    """
    parsed = [parse_unit(unit, root) for unit in units]
    services = set().union(*(client_services(tree) for _, tree, _ in parsed)) if parsed else set()
    calls: set[ApiCall] = set()
    for unit, tree, modules in parsed:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                named = _named_operation(node, services)
                if named:
                    calls.add(ApiCall(named[0], named[1], unit, node.lineno))
            if not isinstance(node, ast.Attribute):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in modules:
                continue
            for service in sorted(services):
                if node.attr in operations(service):
                    calls.add(ApiCall(service, operations(service)[node.attr], unit, node.lineno))
    return sorted(calls, key=lambda call: (call.path, call.line, call.service, call.operation))
