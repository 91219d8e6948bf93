"""Shared helpers of the MLOps-template CLIs ``get-pipeline-definition`` and ``run-pipeline``.

Both import a pipeline module by name and call its ``get_pipeline(**kwargs)``, with
``kwargs`` given as a JSON object on the command line, as the SageMaker MLOps project
template does.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import boto3

from steps.cli_support import guarded
from steps.errors import PipelineError

EXIT_ERROR = 1


def parse_json(text: str | None, flag: str, expected: type, example: str) -> Any:
    """Parse a JSON command-line value of the expected type.

    Parameters
    ----------
    text : str or None
        The raw value; None or empty means an empty value of ``expected``.
    flag : str
        The option name, for the error message.
    expected : type
        ``dict`` or ``list``.
    example : str
        A valid value to show in the error message.

    Returns
    -------
    dict or list
        The parsed value.

    Raises
    ------
    PipelineError
        When the value is not valid JSON of the expected type.
    """
    if text is None or not text.strip():
        return expected()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise PipelineError(
            f"{flag} is not valid JSON ({error})", fix=f"Pass e.g. {flag} '{example}'"
        ) from None
    if not isinstance(value, expected):
        raise PipelineError(
            f"{flag} must be a JSON {'object' if expected is dict else 'array'}, got {type(value).__name__}",
            fix=f"Pass e.g. {flag} '{example}'",
        )
    return value


def parse_kwargs(text: str | None) -> dict[str, Any]:
    """The ``--kwargs`` JSON object (keyword arguments of ``get_pipeline``)."""
    return parse_json(text, "--kwargs", dict, '{"region": "us-east-1", "role": "arn:aws:iam::...:role/..."}')


def parse_tags(text: str | None) -> list[dict[str, str]]:
    """The ``--tags`` JSON array of ``{"Key": ..., "Value": ...}`` objects.

    Raises
    ------
    PipelineError
        When the value is not such an array.
    """
    example = '[{"Key": "team", "Value": "crm"}]'
    tags = parse_json(text, "--tags", list, example)
    for tag in tags:
        if not (
            isinstance(tag, dict)
            and set(tag) == {"Key", "Value"}
            and all(isinstance(v, str) for v in tag.values())
        ):
            raise PipelineError(
                f'--tags entry {json.dumps(tag)} is not a {{"Key": str, "Value": str}} object',
                fix=f"Pass e.g. --tags '{example}'",
            )
    return tags


def import_module(module_name: str) -> ModuleType:
    """Import the pipeline module, or explain in one line why it cannot be imported."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise PipelineError(
            f"cannot import module {module_name!r} ({error})",
            fix="Pass the dotted module name, e.g. --module-name pipeline.definition",
        ) from error


def ensure_default_region(region: Any) -> None:
    """Make ``region`` the default region when none is configured.

    Importing ``sagemaker.mlops`` creates a ``boto3.client("sagemaker")`` at import time
    (``sagemaker.ai_registry.air_hub.AIRHub``), which fails with ``NoRegionError`` unless a
    default region is configured; the region in ``--kwargs`` is the natural default.
    """
    if isinstance(region, str) and region and boto3.session.Session().region_name is None:
        os.environ["AWS_DEFAULT_REGION"] = region


def get_pipeline_driver(
    module_name: str, kwargs: dict[str, Any], defaults: dict[str, Any] | None = None
) -> Any:
    """Import ``module_name`` and return ``module.get_pipeline(**kwargs)``.

    Parameters
    ----------
    module_name : str
        Dotted module name, e.g. ``pipeline.definition``.
    kwargs : dict
        Keyword arguments of ``get_pipeline``.
    defaults : dict, optional
        Keyword arguments added when missing from ``kwargs`` and accepted by ``get_pipeline``.

    Returns
    -------
    sagemaker.mlops.workflow.Pipeline
        The pipeline.

    Raises
    ------
    PipelineError
        When the module has no ``get_pipeline`` or ``kwargs`` do not fit its signature.
    """
    ensure_default_region(kwargs.get("region"))
    module = import_module(module_name)
    get_pipeline = getattr(module, "get_pipeline", None)
    if not callable(get_pipeline):
        raise PipelineError(f"module {module_name!r} has no get_pipeline function")
    signature = inspect.signature(get_pipeline)
    kwargs = {**{k: v for k, v in (defaults or {}).items() if k in signature.parameters}, **kwargs}
    try:
        signature.bind(**kwargs)
    except TypeError as error:
        raise PipelineError(f"--kwargs do not fit {module_name}.get_pipeline ({error})") from None
    return get_pipeline(**kwargs)


def render_definition(pipeline: Any) -> str:
    """The pipeline definition as stable JSON: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(json.loads(pipeline.definition()), indent=2, sort_keys=True) + "\n"


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The template's ``--module-name`` and ``--kwargs`` flags, plus ``--debug``."""
    parser.add_argument(
        "-n", "--module-name", dest="module_name", required=True,
        help="Module with get_pipeline(), e.g. pipeline.definition.",
    )  # fmt: skip
    parser.add_argument(
        "-kwargs", "--kwargs", dest="kwargs", default=None,
        help="JSON object of keyword arguments for get_pipeline().",
    )  # fmt: skip
    parser.add_argument("--debug", action="store_true", help="Show SDK logs and tracebacks.")


def quiet_sdk(debug: bool) -> None:
    """Keep the SDK's INFO logs and UserWarnings off the console unless debugging.

    Importing the SDK configures the root logger at INFO (``sagemaker.config`` sets its
    own INFO level), and building steps under a ``PipelineSession`` warns about every job
    name it leaves out.
    """
    if debug:
        return
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    for handler in root.handlers:  # child loggers with their own level still end here
        handler.setLevel(logging.WARNING)
    for name in ("sagemaker", "sagemaker.config", "botocore", "boto3", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"sagemaker\.")


def run_cli(body: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a CLI body: errors become one line on stderr and exit status 1 (tracebacks with --debug).

    Parameters
    ----------
    body : callable
        The command, taking the parsed arguments and returning the exit status.
    args : argparse.Namespace
        Parsed arguments (``args.debug`` re-raises errors).

    Returns
    -------
    int
        The exit status.
    """
    quiet_sdk(args.debug)
    return guarded(lambda: aws_setup_errors(body, args), args.debug, user_error_status=EXIT_ERROR)


def aws_setup_errors(body: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run ``body``; a missing region or missing credentials become one line saying what to set."""
    from botocore.exceptions import NoCredentialsError, NoRegionError

    try:
        return body(args)
    except NoRegionError:
        raise PipelineError(
            "no AWS region", "--kwargs",
            'Pass it, e.g. --kwargs \'{"region": "us-east-1", ...}\', or set AWS_REGION / a profile\'s region',
        ) from None
    except NoCredentialsError:
        raise PipelineError(
            "no AWS credentials", "AWS configuration",
            "Configure credentials (aws configure, AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "or an instance role)",
        ) from None


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``)."""
    return parser.parse_args(list(argv) if argv is not None else None)
