"""``run-pipeline``: create or update a pipeline, start it and wait for the result.

Same flags as the SageMaker MLOps project template::

    run-pipeline --module-name pipeline.definition \\
        --role-arn arn:aws:iam::123456789012:role/SageMakerPipelineRole \\
        --tags '[{"Key": "team", "Value": "crm"}]' \\
        --kwargs '{"region": "us-east-1", "image_uri": "...:src-<hash>",
                  "sagemaker_project_arn": "arn:aws:sagemaker:...:project/rfm"}'

With ``sagemaker_project_arn`` in ``--kwargs`` the pipeline is tagged with
``sagemaker:project-name`` and ``sagemaker:project-id`` (unless ``--tags`` has them), which
is what ties it to the project in Studio. Without ``role`` in ``--kwargs`` the jobs run
with ``--role-arn`` too. ``--parameters '{"ModelApprovalStatus": "Approved"}'`` sets pipeline
parameters for the execution; they are checked against the pipeline's declared parameters
(name, type, allowed values) before anything is upserted. Prints each step's status at the
end and exits 1 with a one-line message when the execution does not succeed.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from botocore.exceptions import ClientError

from pipeline.driver import (
    add_common_arguments,
    get_pipeline_driver,
    import_module,
    parse_args,
    parse_json,
    parse_kwargs,
    parse_tags,
    run_cli,
)
from pipeline.parameters import declared_parameters, parameter_values
from steps.errors import PipelineError

TERMINAL_STATUSES = frozenset({"Succeeded", "Failed", "Stopped"})
PROJECT_NAME_TAG = "sagemaker:project-name"
PROJECT_ID_TAG = "sagemaker:project-id"
_PROJECT_ARN = re.compile(
    r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:project/(?P<name>[A-Za-z0-9-]{1,32})$"
)

Tags = list[dict[str, str]]


def with_project_tags(client: Any, project_arn: str, tags: Tags) -> Tags:
    """Add the ``sagemaker:project-name`` and ``sagemaker:project-id`` tags of a project.

    Parameters
    ----------
    client : botocore client
        SageMaker client, used only when the project id tag is missing.
    project_arn : str
        ``arn:aws:sagemaker:REGION:ACCOUNT:project/NAME``.
    tags : list of dict
        Tags given on the command line; tags already present are kept as given.

    Returns
    -------
    list of dict
        ``tags`` plus the missing project tags.

    Raises
    ------
    PipelineError
        When the ARN is not a project ARN or the project id cannot be read.
    """
    match = _PROJECT_ARN.match(project_arn)
    if match is None:
        raise PipelineError(
            f"sagemaker_project_arn {project_arn!r} is not a SageMaker project ARN",
            fix="Pass arn:aws:sagemaker:REGION:ACCOUNT:project/NAME",
        )
    name = match.group("name")
    present = {tag["Key"] for tag in tags}
    added = [] if PROJECT_NAME_TAG in present else [{"Key": PROJECT_NAME_TAG, "Value": name}]
    if PROJECT_ID_TAG not in present:
        try:
            project_id = client.describe_project(ProjectName=name)["ProjectId"]
        except ClientError as error:
            raise PipelineError(
                f"cannot read the id of project {name!r} ({error})",
                fix=f'Pass it with --tags \'[{{"Key": "{PROJECT_ID_TAG}", "Value": "p-..."}}]\'',
            ) from error
        added.append({"Key": PROJECT_ID_TAG, "Value": project_id})
    return [*tags, *added]


def parse_parameters(text: str | None) -> dict[str, Any]:
    """The ``--parameters`` JSON object (pipeline parameter name -> value)."""
    return parse_json(text, "--parameters", dict, '{"ModelApprovalStatus": "Approved"}')


def check_parameters(pipeline: Any, parameters: dict[str, Any]) -> None:
    """Fail in one line unless ``pipeline`` declares ``parameters`` and their values fit (type, allowed values).

    Raises
    ------
    PipelineError
        An unknown name or a bad value, e.g. a ModelApprovalStatus other than
        PendingManualApproval, Approved or Rejected.
    """
    parameter_values([p.to_request() for p in pipeline.parameters], parameters, "--parameters")


def check_parameters_before_building(module_name: str, kwargs: dict[str, Any], parameters: dict[str, Any]) -> None:
    """Refuse bad ``--parameters`` before any pipeline is built (each build takes seconds).

    This project's pipeline (``pipeline.definition``) is checked against the parameters it declares
    (:func:`pipeline.parameters.declared_parameters`, no SDK import); another module only by
    :func:`check_parameters` once built.
    """
    if parameters and module_name == "pipeline.definition":
        parameter_values(declared_parameters(), parameters, "--parameters")


def wait_for_execution(
    describe: Callable[[], dict[str, Any]],
    poll_seconds: float,
    max_wait_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll an execution until it reaches a terminal status.

    Parameters
    ----------
    describe : callable
        Returns the ``DescribePipelineExecution`` response.
    poll_seconds : float
        Pause between polls.
    max_wait_seconds : float
        Give up after this long.
    sleep, clock : callable
        Injectable for tests.

    Returns
    -------
    dict
        The last ``DescribePipelineExecution`` response (terminal status).

    Raises
    ------
    PipelineError
        When the execution is still running after ``max_wait_seconds``.
    """
    deadline = clock() + max_wait_seconds
    while True:
        response = describe()
        status = response["PipelineExecutionStatus"]
        if status in TERMINAL_STATUSES:
            return response
        if clock() >= deadline:
            raise PipelineError(
                f"execution {response['PipelineExecutionArn']} still {status} after {max_wait_seconds:.0f} s",
                fix="Follow it in Studio or with aws sagemaker describe-pipeline-execution",
            )
        sleep(poll_seconds)


def step_statuses(client: Any, execution_arn: str) -> list[dict[str, Any]]:
    """The execution's steps in the order they started (``ListPipelineExecutionSteps``)."""
    steps: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"PipelineExecutionArn": execution_arn, "SortOrder": "Ascending"}
    while True:
        response = client.list_pipeline_execution_steps(**kwargs)
        steps.extend(response.get("PipelineExecutionSteps", []))
        if not response.get("NextToken"):
            return steps
        kwargs["NextToken"] = response["NextToken"]


def format_step(step: dict[str, Any]) -> str:
    """One line per step: name, status and the failure reason if any."""
    line = f"  {step.get('StepName', '?'):<20} {step.get('StepStatus', '?')}"
    reason = " ".join(str(step.get("FailureReason") or "").split())
    return f"{line}: {reason}" if reason else line


def run(
    pipeline: Any,
    role_arn: str,
    description: str | None,
    tags: Tags,
    parameters: dict[str, Any] | None = None,
    poll_seconds: float = 30.0,
    max_wait_seconds: float = 4 * 3600.0,
    sleep: Callable[[float], None] = time.sleep,
    out: Callable[[str], None] = print,
) -> int:
    """Upsert the pipeline, start an execution, wait and report every step.

    Parameters
    ----------
    pipeline : sagemaker.mlops.workflow.Pipeline
        The pipeline.
    role_arn : str
        Role the Pipelines service assumes.
    description : str or None
        Pipeline description.
    tags : list of dict
        Pipeline tags.
    parameters : dict, optional
        Pipeline parameter values for the execution (checked with ``check_parameters``).
    poll_seconds, max_wait_seconds : float
        Polling interval and the longest wait.
    sleep, out : callable
        Injectable for tests.

    Returns
    -------
    int
        0 when the execution succeeded.

    Raises
    ------
    PipelineError
        When the execution failed, stopped or timed out.
    """
    response = pipeline.upsert(role_arn=role_arn, description=description, tags=tags)
    out(f"Upserted pipeline {pipeline.name}: {response['PipelineArn']}")
    execution = pipeline.start(parameters=parameters or None)
    out(f"Started execution {execution.arn}; waiting for it to finish")
    final = wait_for_execution(execution.describe, poll_seconds, max_wait_seconds, sleep=sleep)
    status = final["PipelineExecutionStatus"]
    out(f"Execution {status}. Steps:")
    for step in step_statuses(pipeline.sagemaker_session.sagemaker_client, execution.arn):
        out(format_step(step))
    if status != "Succeeded":
        reason = " ".join(str(final.get("FailureReason") or "see the failed step above").split())
        raise PipelineError(f"pipeline execution {execution.arn} {status}: {reason}")
    return 0


def upsert_companions(module_name: str, kwargs: dict[str, Any], role_arn: str, tags: Tags) -> None:
    """Create or update the module's publish pipeline too (it runs when a package is approved)."""
    module = import_module(module_name)
    build = getattr(module, "get_publish_pipeline", None)
    if not callable(build):
        return
    publish = build(**{"role": role_arn, **kwargs})
    response = publish.upsert(role_arn=role_arn, description="Publishes the segments of an approved package.",
                              tags=tags)
    print(f"Upserted pipeline {publish.name}: {response['PipelineArn']}")


EXAMPLE = """example:
  run-pipeline --module-name pipeline.definition \\
    --role-arn arn:aws:iam::123456789012:role/SageMakerPipelineRole \\
    --tags '[{"Key": "team", "Value": "crm"}]' \\
    --kwargs '{"region": "us-east-1", "image_uri": "ACCOUNT.dkr.ecr.us-east-1.amazonaws.com/rfm-segmentation:TAG"}' \\
    --parameters '{"ModelApprovalStatus": "Approved", "Currency": "EUR"}'
"""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run-pipeline", description="Creates or updates and runs the pipeline for the pipeline script.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(parser)
    parser.add_argument(
        "-role-arn", "--role-arn", dest="role_arn", required=True,
        help="The role ARN for the pipeline service execution role.",
    )  # fmt: skip
    parser.add_argument("-description", "--description", dest="description", default=None)
    parser.add_argument(
        "-tags", "--tags", dest="tags", default=None,
        help='JSON list of tags: \'[{"Key": "string", "Value": "string"}, ...]\'.',
    )  # fmt: skip
    parser.add_argument(
        "--parameters", dest="parameters", default=None,
        help='JSON object of pipeline parameters for the execution: \'{"ModelApprovalStatus": "Approved"}\'.',
    )  # fmt: skip
    parser.add_argument("--poll-seconds", type=float, default=30.0, help="Pause between status checks.")
    parser.add_argument(
        "--max-wait-minutes", type=float, default=240.0, help="Give up waiting after this long."
    )
    return parser


def _upsert_and_run(args: argparse.Namespace) -> int:
    kwargs = parse_kwargs(args.kwargs)
    tags = parse_tags(args.tags)
    parameters = parse_parameters(args.parameters)
    check_parameters_before_building(args.module_name, kwargs, parameters)
    _require_credentials()  # before the minute of building the pipeline, not after it
    pipeline = get_pipeline_driver(args.module_name, kwargs, defaults={"role": args.role_arn})
    check_parameters(pipeline, parameters)
    if kwargs.get("sagemaker_project_arn"):
        tags = with_project_tags(
            pipeline.sagemaker_session.sagemaker_client, kwargs["sagemaker_project_arn"], tags
        )
    upsert_companions(args.module_name, kwargs, args.role_arn, tags)
    return run(
        pipeline,
        role_arn=args.role_arn,
        description=args.description,
        tags=tags,
        parameters=parameters,
        poll_seconds=args.poll_seconds,
        max_wait_seconds=args.max_wait_minutes * 60.0,
    )


def _require_credentials() -> None:
    """Raise botocore's NoCredentialsError (one line, see ``aws_setup_errors``) when none are configured."""
    import boto3
    from botocore.exceptions import NoCredentialsError

    if boto3.Session().get_credentials() is None:
        raise NoCredentialsError()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``run-pipeline``.

    Parameters
    ----------
    argv : sequence of str, optional
        Command-line arguments; ``sys.argv[1:]`` by default.

    Returns
    -------
    int
        Exit status: 0 when the execution succeeded, else 1 after a one-line error on stderr.
    """
    return run_cli(_upsert_and_run, parse_args(_build_parser(), argv))


if __name__ == "__main__":
    sys.exit(main())
