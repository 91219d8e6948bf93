"""``get-pipeline-definition``: print or write a pipeline's JSON definition.

Same flags as the SageMaker MLOps project template::

    get-pipeline-definition --module-name pipeline.definition \\
        --kwargs '{"region": "us-east-1", "role": "arn:aws:iam::123456789012:role/R", "image_uri": "...:TAG"}' \\
        --file-name pipeline.json

The definition is built offline and written with sorted keys, so repeated runs with the
same arguments produce identical bytes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.driver import (
    add_common_arguments,
    get_pipeline_driver,
    parse_args,
    parse_kwargs,
    render_definition,
    run_cli,
)

EXAMPLE = """example:
  get-pipeline-definition --module-name pipeline.definition \\
    --kwargs '{"region": "us-east-1", "role": "arn:aws:iam::123456789012:role/R", "image_uri": "...:TAG"}' \\
    --file-name pipeline.json
"""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="get-pipeline-definition", description="Gets the pipeline definition for the pipeline script.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(parser)
    parser.add_argument(
        "-f", "--file-name", dest="file_name", default=None,
        help="File to write the definition to; standard output when omitted.",
    )  # fmt: skip
    return parser


def _write_definition(args: argparse.Namespace) -> int:
    definition = render_definition(get_pipeline_driver(args.module_name, parse_kwargs(args.kwargs)))
    if args.file_name:
        Path(args.file_name).write_text(definition, encoding="utf-8")
    else:
        sys.stdout.write(definition)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``get-pipeline-definition``.

    Parameters
    ----------
    argv : sequence of str, optional
        Command-line arguments; ``sys.argv[1:]`` by default.

    Returns
    -------
    int
        Exit status: 0, or 1 after a one-line error on stderr.
    """
    return run_cli(_write_definition, parse_args(_build_parser(), argv))


if __name__ == "__main__":
    sys.exit(main())
