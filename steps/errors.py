"""The one exception family for problems a user can act on."""

from __future__ import annotations


class RFMError(Exception):
    """A user-facing error: what was wrong, where, and what to do.

    The CLIs print ``str(error)`` as one line and exit non-zero; a traceback is
    shown only with ``--debug``.
    """

    def __init__(self, what: str, where: str | None = None, fix: str | None = None) -> None:
        self.what = what
        self.where = where
        self.fix = fix
        parts = [f"{where}: {what}" if where else what]
        if fix:
            parts.append(fix)
        super().__init__(". ".join(p.rstrip(".") for p in parts) + ".")


class InputDataError(RFMError):
    """The input transactions cannot be used at all (not a per-row problem)."""


class ModelError(RFMError):
    """A model artifact is missing, corrupt or incompatible."""


class PipelineError(RFMError):
    """The pipeline definition or a run of it failed."""


class EmptyInputError(InputDataError):
    """An input file holds no data rows (empty, blank or header only).

    Fatal for a single file; inside a folder or prefix such files are skipped
    and listed in ``quality.json``.
    """


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type when empty), at most 300 characters.

    >>> first_line(ValueError("bad value\\nmore detail")), first_line(KeyError())
    ('bad value', 'KeyError')
    """
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:300]
