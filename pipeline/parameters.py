"""Pipeline parameters: their defaults, what each means, and the check of given values.

One place for these facts: :func:`pipeline.step_builders.make_parameters` declares the
parameters with these defaults, ``rfm run-local --help`` lists them, and
:func:`parameter_values` checks given values (type, allowed values, range, date) in the
parameter's own name, for ``run-pipeline`` (before anything is upserted) and the local
runner (before the first step), so a bad value fails in one line, not after the work.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from steps.errors import InputDataError, PipelineError
from steps.model.limits import MAX_CLUSTERS, MAX_TRAINING_CUSTOMERS, MIN_CLUSTERS, MIN_TRAINING_SAMPLE
from steps.report.money import DEFAULT_CURRENCY

# The values SageMaker accepts for a model package's approval status (ModelApprovalStatus).
APPROVAL_STATUSES = ("PendingManualApproval", "Approved", "Rejected")
# InputFormat: "auto" plus steps.features.formats.FORMAT_NAMES (a test checks they agree; the
# features readers are not imported here, so the CLIs start fast).
INPUT_FORMATS = ("auto", "guidance", "online-retail", "cdnow", "generic")
# Encoding: the features readers' text encodings (steps.features.formats.ENCODINGS; a test checks they agree).
ENCODINGS = ("utf-8", "utf-16", "latin-1", "cp1252")
# NumClusters: 0 chooses k automatically; otherwise the range the TrainSegmenter step accepts.
MAX_SEED = 2**32 - 1  # NumPy and scikit-learn seeds
MAX_TRANSFORM_INSTANCES = 100  # TransformInstanceCount: 1.. this (SageMaker's own bound is the account quota)
DEFAULT_INSTANCE_TYPE = "ml.m5.xlarge"

DEFAULTS: dict[str, Any] = {
    "InputFormat": "auto",
    "AsOfDate": "",
    "ColumnMapping": "",
    "Timezone": "",
    "Encoding": "",
    "ModelApprovalStatus": "PendingManualApproval",
    "ProcessingInstanceType": DEFAULT_INSTANCE_TYPE,
    "TrainingInstanceType": DEFAULT_INSTANCE_TYPE,
    "TransformInstanceType": DEFAULT_INSTANCE_TYPE,
    "TransformInstanceCount": 1,
    "NumClusters": 0,
    "RandomSeed": 0,
    "TrainingSampleSize": MAX_TRAINING_CUSTOMERS,
    "MinSilhouette": 0.25,
    "MinClusterShare": 0.01,
    "Currency": DEFAULT_CURRENCY,
    "Rebuild": False,
}

TYPES: dict[str, str] = {"TransformInstanceCount": "Integer", "NumClusters": "Integer", "RandomSeed": "Integer",
                         "TrainingSampleSize": "Integer", "MinSilhouette": "Float",
                         "MinClusterShare": "Float", "Rebuild": "Boolean"}  # the others are String

HELP: dict[str, str] = {
    "InputDataUrl": "transactions (CSV, CSV.gz, Parquet): a file or a prefix (run-local: --input)",
    "InputFormat": f"one of {', '.join(INPUT_FORMATS)}; auto detects it from the header",
    "AsOfDate": "reference date YYYY-MM-DD; empty = the day after the last purchase",
    "ColumnMapping": 'JSON of canonical -> source column names, e.g. {"customer_id": "Cust"} '
                     "(run-local: --column, --mapping)",
    "Timezone": "IANA time zone whose calendar days count, e.g. Europe/Paris; empty = UTC (run-local: --timezone)",
    "Encoding": f"text encoding of CSV input: {', '.join(ENCODINGS)}; empty = UTF-8 (UTF-16 by its byte-order "
                "mark) (run-local: --encoding)",
    "ModelApprovalStatus": f"{', '.join(APPROVAL_STATUSES)}; Approved publishes in the same run",
    "ProcessingInstanceType": "instance of the processing steps (ml.*)",
    "TrainingInstanceType": "instance of the training step (ml.*)",
    "TransformInstanceType": "instance of the batch transform (ml.*)",
    "TransformInstanceCount": f"instances of the batch transform, 1..{MAX_TRANSFORM_INSTANCES}",
    "NumClusters": f"0 = choose k automatically, else {MIN_CLUSTERS}..{MAX_CLUSTERS}",
    "RandomSeed": f"seed of k-means, sampling and evaluation, 0..{MAX_SEED}",
    "TrainingSampleSize": "with more customers than this, train on a fixed-seed sample of this many; "
                          f"0 = every customer, else {MIN_TRAINING_SAMPLE} or more",
    "MinSilhouette": "quality gate: lowest silhouette accepted, -1..1",
    "MinClusterShare": "quality gate: smallest cluster's lowest share of customers, 0..1",
    "Currency": "ISO 4217 code the report and console show money in, e.g. USD, EUR, GBP",
    "Rebuild": "true = recompute the per-customer state from the whole history (run-local: --rebuild)",
}


def _date(value: str) -> str | None:
    if value == "":
        return None
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return "is not a date YYYY-MM-DD (or empty: the day after the last purchase)"
    return None if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value) else "is not written YYYY-MM-DD"


def _choice(allowed: tuple[str, ...]) -> Callable[[Any], str | None]:
    return lambda value: None if value in allowed else f"is not one of {', '.join(allowed)}"


def _between(low: float, high: float, text: str) -> Callable[[Any], str | None]:
    return lambda value: None if low <= value <= high else f"is out of range: use {text}"


def _instance(value: str) -> str | None:
    return None if re.fullmatch(r"ml\.[a-z0-9]+\.[a-z0-9]+", value) else "is not an instance type like ml.m5.xlarge"


def _currency(value: str) -> str | None:
    return None if re.fullmatch(r"[A-Z]{3}", value) else "is not an ISO 4217 code of three capital letters, e.g. EUR"


def _training_sample(value: int) -> str | None:
    if value == 0 or value >= MIN_TRAINING_SAMPLE:  # the same rule as steps.model.train.check_max_customers
        return None
    return f"is out of range: use 0 (every customer) or {MIN_TRAINING_SAMPLE} or more"


def _num_clusters(value: int) -> str | None:
    if value == 0 or MIN_CLUSTERS <= value <= MAX_CLUSTERS:
        return None
    return f"is out of range: use 0 (choose automatically) or {MIN_CLUSTERS}..{MAX_CLUSTERS}"


CHECKS: dict[str, Callable[[Any], str | None]] = {
    "InputFormat": _choice(INPUT_FORMATS),
    "Encoding": lambda value: None if value.lower() in ("", *ENCODINGS) else (
        f"is not one of {', '.join(ENCODINGS)} (or empty: UTF-8, or UTF-16 by its byte-order mark)"),
    "ModelApprovalStatus": _choice(APPROVAL_STATUSES),
    "AsOfDate": _date,
    "ProcessingInstanceType": _instance,
    "TrainingInstanceType": _instance,
    "TransformInstanceType": _instance,
    "TransformInstanceCount": _between(1, MAX_TRANSFORM_INSTANCES, f"1..{MAX_TRANSFORM_INSTANCES}"),
    "NumClusters": _num_clusters,
    "RandomSeed": _between(0, MAX_SEED, f"0..{MAX_SEED}"),
    "TrainingSampleSize": _training_sample,
    "MinSilhouette": _between(-1.0, 1.0, "-1..1 (a silhouette is never above 1)"),
    "MinClusterShare": _between(0.0, 1.0, "0..1 (a share of customers)"),
    "Currency": _currency,
}


def parameter_values(declared: list[dict], overrides: dict[str, Any], where: str = "--param") -> dict[str, Any]:
    """Each declared parameter's value (from ``overrides``, else its default), typed and checked.

    ``declared`` is the definition's ``Parameters`` list (``Name``, ``Type``,
    ``DefaultValue``, ``EnumValues``); ``where`` names the option in errors.

    Raises
    ------
    PipelineError
        A name that is not declared, a value not of its type, not one of its ``EnumValues``,
        or refused by the parameter's check in :data:`CHECKS` (range, choices, date), named
        as the user wrote it: ``--param NumClusters=1: ...``.
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
        problem = CHECKS[name](value) if name in CHECKS else None
        if problem:
            raise PipelineError(f"parameter {name}={value!r} {problem}", where)
        values[name] = value
    _check_feature_parameters(values, where)
    return values


def _check_feature_parameters(values: dict[str, Any], where: str) -> None:
    """ColumnMapping (JSON) and Timezone (an IANA name) are checked before any step runs."""
    from steps.features.compute import parse_timezone
    from steps.features.formats import parse_mapping_json

    for name, check in (("ColumnMapping", lambda v: parse_mapping_json(v, "ColumnMapping")),
                        ("Timezone", parse_timezone)):
        if name not in values:
            continue
        try:
            check(values[name])
        except InputDataError as error:
            raise PipelineError(f"parameter {name}: {error.what}", where, error.fix) from None


def _typed(name: str, kind: str, raw: Any, where: str) -> Any:
    try:
        if kind == "Integer":
            return int(raw)
        if kind == "Float":
            return float(raw)
        if kind == "Boolean":
            if isinstance(raw, bool):
                return raw
            flag = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
            return flag[str(raw).strip().lower()]
        return "" if raw is None else str(raw)
    except (TypeError, ValueError, KeyError):
        fix = {"Integer": "Pass a whole number", "Float": "Pass a number",
               "Boolean": "Pass true or false"}.get(kind)
        raise PipelineError(f"parameter {name}={raw!r} is not a valid {kind}", where, fix) from None


def parameters_help() -> str:
    """The parameters, their defaults and meaning, as lines for ``--help``."""
    width = max(map(len, HELP))
    lines = []
    for name, text in HELP.items():
        default = DEFAULTS.get(name)
        shown = "" if name not in DEFAULTS else f" (default {default!r})" if default == "" else f" (default {default})"
        lines.append(f"  {name:<{width}}  {text}{shown}")
    return "\n".join(lines)


def declared_parameters() -> list[dict[str, Any]]:
    """The parameters as a definition declares them (``Name``, ``Type``, ``DefaultValue``), without building it.

    Lets the local runner check ``--param`` values before it builds the definition (seconds);
    a test checks that the definition declares exactly these.
    """
    return [{"Name": name, "Type": TYPES.get(name, "String"), "DefaultValue": DEFAULTS.get(name, "")}
            for name in HELP]
