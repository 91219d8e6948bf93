"""``rfm-plan-history``: the PlanHistory processing entrypoint.

Lists every transactions object under ``--input`` (exactly: no siblings, none of
the pipeline's own prefixes), records the list in the state as
``histories/<fingerprint>.json`` and writes ``plan.json``
(``{"fingerprint", "objects_fingerprint", "objects", "bytes", "history", "location"}``), the
property file whose fingerprint ComputeRFM takes as an argument: its cache key follows the data
(and the day, while rows the state held back as future-dated are due).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from steps import paths
from steps.cli_support import guarded, setup_logging

PLAN_FILE = "plan.json"

log = logging.getLogger("rfm.history")


def run(location: str, state: str, output: Path) -> dict:
    """Plan one run: list the history, record it in the state, write ``output/plan.json``."""
    from steps.features.fold import plan_history
    from steps.features.state import StateStore

    folder = paths.output_folder(output)
    plan = plan_history(location, StateStore(state))
    (folder / PLAN_FILE).write_text(json.dumps(plan, indent=2, sort_keys=True) + "\n")
    log.info("history of %s: %d objects, %d bytes, fingerprint %s", location, plan["objects"], plan["bytes"],
             plan["fingerprint"])
    return plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rfm-plan-history",
                                     description="List the transactions history and record it in the state.")
    parser.add_argument("--input", required=True, help="a file, a folder, or an s3:// object or prefix")
    parser.add_argument("--state", required=True, help="folder or s3:// prefix of the incremental state")
    parser.add_argument("--output", default=paths.PROCESSING_PLAN_OUT, help="folder for plan.json")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    setup_logging(args.debug)

    def plan() -> int:
        run(args.input, args.state, Path(args.output))
        return 0

    return guarded(plan, args.debug)


if __name__ == "__main__":
    sys.exit(main())
