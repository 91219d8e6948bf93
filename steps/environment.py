"""Numbers from environment variables, checked (shared by the Lambdas, which each ship ``steps/``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from steps.errors import PipelineError


def env_number(
    environ: Mapping[str, str], name: str, default: float, kind: type = float, minimum: float = 1e-9,
    where: str = "Lambda environment",
) -> Any:
    """``environ[name]`` as a finite ``kind`` (at least ``minimum``); ``default`` when unset; PipelineError if bad.

    >>> env_number({"N": " 3 "}, "N", 1, int), env_number({}, "N", 2.5)
    (3, 2.5)
    """
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise PipelineError(f"{name}={text!r} is not {noun}", where, "Fix or unset it") from None
    if not math.isfinite(value) or value < minimum:
        raise PipelineError(
            f"{name} must be at least {minimum if kind is float else int(minimum)}, got {text} (finite numbers only)",
            where,
            "Fix or unset it",
        )
    return value
