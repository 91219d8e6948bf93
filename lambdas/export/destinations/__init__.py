"""Export destinations: one module each, all taking the joined segments table.

Each ``export(...)`` returns a JSON-able dict of counts for the Lambda's result and raises
:class:`DestinationError` (with those counts) when records remain failed after the retries.
"""

from __future__ import annotations

from typing import Any

from steps.errors import PipelineError


class DestinationError(PipelineError):
    """A destination finished with records it could not deliver; ``counts`` says how many."""

    def __init__(self, what: str, where: str, fix: str, counts: dict[str, Any]) -> None:
        super().__init__(what, where, fix)
        self.counts = counts


def same_as_sent(current: Any, wanted: Any) -> bool:
    """Whether what a service returns equals what we would send, ignoring the empty members it drops."""
    return _compact(current) == _compact(wanted)


def _compact(value: Any) -> Any:
    if isinstance(value, dict):
        items = {k: _compact(v) for k, v in value.items()}
        return {k: v for k, v in items.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    return value
