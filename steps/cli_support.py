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


def guarded(main: Callable[[], int | None], debug: bool) -> int:
    """Run ``main``; print a user-facing error as one line and return non-zero.

    Unexpected exceptions also become one line (naming the exception type)
    unless ``debug`` is true, in which case the traceback is shown.
    """
    try:
        return int(main() or 0)
    except RFMError as error:
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # the last line of defence: no tracebacks for users
        if debug:
            raise
        print(
            f"error: unexpected {type(error).__name__}: {error}. Run again with --debug for details.",
            file=sys.stderr,
        )
        return 1
