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
