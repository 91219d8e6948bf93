"""The settings of one ComputeRFM run, shared by both engines and the incremental history.

:class:`FeatureOptions` is what ``rfm features`` parses from its command line and what
:func:`steps.features.compute.run`, :func:`steps.features.compute.compute_features` and
:func:`steps.features.fold.run_history` take, on the DuckDB and the Spark engine alike.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

AUTO = "auto"


@dataclass(frozen=True)
class FeatureOptions:
    """How to read the transactions and where the side outputs go.

    Attributes
    ----------
    transform_output : Path, optional
        Folder for the batch-transform input CSV files (pipeline use).
    quarantine_output : Path, optional
        Folder for the quarantined rows (default ``OUTPUT/quarantine``).
    input_format : str
        ``auto`` or one of ``steps.features.formats.FORMAT_NAMES``.
    mapping : dict
        Canonical column -> source column overrides.
    as_of : date, optional
        Reference date; default the day after the last used transaction (UTC).
    encoding : str, optional
        Text encoding of CSV files (default UTF-8, or UTF-16 with a byte-order mark).
    timezone : str, optional
        IANA zone whose calendar days count; default UTC.
    memory_limit : str, optional
        DuckDB's memory limit on this machine (``2GB``); None or ``auto`` sizes it
        (see :func:`steps.features.compute.auto_memory_limit`).
    threads : int, optional
        DuckDB's threads on this machine (default all cores).
    """

    transform_output: Path | None = None
    quarantine_output: Path | None = None
    input_format: str = AUTO
    mapping: dict[str, str] = field(default_factory=dict)
    as_of: dt.date | None = None
    encoding: str | None = None
    timezone: str | None = None
    memory_limit: str | None = None
    threads: int | None = None

    @property
    def automatic_memory(self) -> bool:
        """Whether the memory limit is left to the run (not set by the user)."""
        return not self.memory_limit or self.memory_limit == AUTO

    def state_settings(self) -> dict:
        """What an incremental contribution depends on besides its object (a change rebuilds the state)."""
        return {"input_format": self.input_format, "mapping": dict(sorted(self.mapping.items())),
                "as_of": self.as_of.isoformat() if self.as_of else "", "encoding": self.encoding or "",
                "timezone": self.timezone or ""}
