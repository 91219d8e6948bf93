"""Pipeline parameters: the allowed approval statuses and the check of given values.

Shared by ``run-pipeline`` (before anything is upserted) and the local runner
(before the first step), so a bad value fails in one line, not after the work.
"""

from __future__ import annotations

from typing import Any

from steps.errors import InputDataError, PipelineError

# The values SageMaker accepts for a model package's approval status (ModelApprovalStatus).
APPROVAL_STATUSES = ("PendingManualApproval", "Approved", "Rejected")


def parameter_values(declared: list[dict], overrides: dict[str, Any], where: str = "--param") -> dict[str, Any]:
    """Each declared parameter's value (from ``overrides``, else its default), typed.

    ``declared`` is the definition's ``Parameters`` list (``Name``, ``Type``,
    ``DefaultValue``, ``EnumValues``); ``where`` names the option in errors.

    Raises
    ------
    PipelineError
        A name that is not declared, a value not of its type or not one of its ``EnumValues``.
    """
    by_name = {p["Name"]: p for p in declared}
    unknown = sorted(set(overrides) - set(by_name))
    if unknown:
        raise PipelineError(f"unknown pipeline parameter(s) {', '.join(unknown)}", where,
                            f"known: {', '.join(by_name)}")
    values = {}
    for name, spec in by_name.items():
        value = _typed(name, spec["Type"], overrides.get(name, spec.get("DefaultValue")), where)
        allowed = spec.get("EnumValues")
        if allowed and value not in allowed:
            raise PipelineError(f"parameter {name}={value!r} is not one of {', '.join(map(str, allowed))}", where)
        values[name] = value
    _check_feature_parameters(values, where)
    return values


def _check_feature_parameters(values: dict[str, Any], where: str) -> None:
    """ColumnMapping (JSON) and Timezone (an IANA name) are checked before any step runs."""
    from steps.features.compute import parse_timezone
    from steps.features.formats import parse_mapping_json

    try:
        if "ColumnMapping" in values:
            parse_mapping_json(values["ColumnMapping"], "ColumnMapping")
        if "Timezone" in values:
            parse_timezone(values["Timezone"])
    except InputDataError as error:
        raise PipelineError(f"parameter {error.what}", where, error.fix) from None


def _typed(name: str, kind: str, raw: Any, where: str) -> Any:
    try:
        if kind == "Integer":
            return int(raw)
        if kind == "Float":
            return float(raw)
        if kind == "Boolean":
            return raw if isinstance(raw, bool) else str(raw).lower() in {"true", "1", "yes"}
        return "" if raw is None else str(raw)
    except (TypeError, ValueError):
        raise PipelineError(f"parameter {name}={raw!r} is not a valid {kind}", where) from None
