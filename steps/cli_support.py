"""What every command-line entrypoint shares: one-line errors, --debug, plain logs."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from steps import paths
from steps.errors import RFMError

EXIT_USER_ERROR = 2


def setup_logging(debug: bool = False, plain: bool = False) -> None:
    """``time level message`` lines on stderr (what SageMaker and CI capture); ``plain``: messages only
    (what the rfm commands print), with the time and level back under ``debug``."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(message)s" if plain and not debug else "%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
        force=True,
    )


def one_line(error: BaseException) -> str:
    """The error as one line; the exception type is named unless it is one of ours."""
    message = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, RFMError):
        return message
    return f"unexpected {type(error).__name__}: {message}. Run again with --debug for details."


def guarded(main: Callable[[], int | None], debug: bool, user_error_status: int = EXIT_USER_ERROR) -> int:
    """Run ``main``; print any error as one line on stderr and return non-zero.

    Our errors (``RFMError``) exit with ``user_error_status``, anything unexpected with 1;
    with ``debug`` the traceback is shown instead.
    """
    try:
        return int(main() or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # the CLI boundary: one line instead of a traceback
        if debug:
            raise
        message = f"error: {one_line(error)}"
        print(message, file=sys.stderr)
        record_failure(message)
        return user_error_status if isinstance(error, RFMError) else 1


def record_failure(message: str) -> list[Path]:
    """Write ``message`` where SageMaker shows why a job failed; return the files written.

    Training jobs report ``<job output>/failure`` as ``FailureReason``, processing jobs
    ``<job output>/message`` as ``ExitMessage`` (the first 1 KB of each). Both are written, inside a
    container only: when the job output folder or its parent (``/opt/ml``) exists. Elsewhere
    (a workstation, the rfm CLI) nothing is written.
    """
    folder = paths.job_output_dir()
    if not folder.parent.is_dir():
        return []
    text = message.encode("utf-8")[:1024].decode("utf-8", errors="ignore")
    written = []
    try:
        folder.mkdir(exist_ok=True)
        for name in (paths.FAILURE_FILE, paths.MESSAGE_FILE):
            (folder / name).write_text(text + "\n", encoding="utf-8")
            written.append(folder / name)
    except OSError as error:  # the message is on stderr already; a read-only folder must not hide it
        print(f"note: could not write the failure reason to {folder} ({error.strerror})", file=sys.stderr)
    return written
