"""What every command-line entrypoint shares: one-line errors, --debug, plain logs."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from steps.errors import RFMError

EXIT_USER_ERROR = 2


def setup_logging(debug: bool = False) -> None:
    """Plain ``time level message`` lines on stderr (what SageMaker and CI capture)."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
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
        print(f"error: {one_line(error)}", file=sys.stderr)
        return user_error_status if isinstance(error, RFMError) else 1
