"""An offline-capable ``PipelineSession`` for building the pipeline definition.

Building the definition must not touch AWS: no S3 bucket check, no IAM role
validation, no telemetry. ``get-pipeline-definition`` then works with fake
credentials and no network, and produces the same JSON on every run.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import boto3
from sagemaker.core.config import config_manager
from sagemaker.core.workflow.pipeline_context import PipelineSession

# Session defaults passed as the SDK's ``sagemaker_config``: passing a config also
# stops the session from reading ~/.config/sagemaker/config.yaml (or S3) behind our back.
SDK_CONFIG: dict[str, Any] = {
    "SchemaVersion": "1.0",
    "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}},
}

VALIDATE_ROLE_ENV = "SAGEMAKER_VALIDATE_ROLE"


def _validate_against_a_checked_schema() -> None:
    """Make the SDK check its config schema once per process, not on every config lookup.

    A session given a ``sagemaker_config`` (``SDK_CONFIG``) has it validated by
    ``SageMakerConfig.validate_sagemaker_config`` on each of the ~90 config lookups of a
    definition build, and ``jsonschema.validate`` first checks the SDK's constant schema
    against the JSON Schema meta-schema each time: about 9 of the 11 CPU seconds a build
    took. The config itself is still validated on every call, with the same error
    (``jsonschema.validate``'s ``best_match``).
    """
    from jsonschema.exceptions import best_match
    from jsonschema.validators import validator_for

    schema = config_manager.SAGEMAKER_PYTHON_SDK_CONFIG_SCHEMA
    checker = validator_for(schema)
    checker.check_schema(schema)
    validator = checker(schema)

    def validate_sagemaker_config(sagemaker_config: dict | None = None) -> None:
        error = best_match(validator.iter_errors(sagemaker_config))
        if error is not None:
            raise error

    config_manager.SageMakerConfig.validate_sagemaker_config = staticmethod(validate_sagemaker_config)


_validate_against_a_checked_schema()


class OfflinePipelineSession(PipelineSession):
    """A ``PipelineSession`` whose default bucket is the bucket it was given.

    The SDK's ``Session.default_bucket()`` lists S3 buckets to check (and create)
    the bucket. The pipeline's bucket is provisioned with the project, so this
    session returns the configured name without any S3 call.
    """

    def __init__(self, *, default_bucket: str, **kwargs: Any) -> None:
        super().__init__(default_bucket=default_bucket, **kwargs)
        self._bucket = default_bucket

    def default_bucket(self) -> str:
        """Return the configured bucket name, without calling S3.

        Returns
        -------
        str
            The bucket given at construction.
        """
        return self._bucket


def make_session(
    region: str,
    default_bucket: str,
    boto_session: boto3.Session | None = None,
) -> OfflinePipelineSession:
    """Build the session the pipeline definition is built with.

    Parameters
    ----------
    region : str
        AWS region of the pipeline.
    default_bucket : str
        S3 bucket for every artifact of the pipeline.
    boto_session : boto3.Session, optional
        Session to use; by default one for ``region`` from the usual credential chain
        (credentials are only needed when calling AWS, not to build the definition).

    Returns
    -------
    OfflinePipelineSession
        A session with telemetry opted out and a fixed default bucket.
    """
    return OfflinePipelineSession(
        boto_session=boto_session or boto3.Session(region_name=region),
        default_bucket=default_bucket,
        sagemaker_config=SDK_CONFIG,
    )


@contextlib.contextmanager
def no_role_validation() -> Iterator[None]:
    """Skip the SDK's IAM role validation while building step arguments.

    ``ModelTrainer`` and ``ModelBuilder`` validate the role with IAM calls unless
    ``SAGEMAKER_VALIDATE_ROLE=false``; there is no argument to turn it off, so the
    variable is set for the duration of the block and restored afterwards.

    Yields
    ------
    None
    """
    previous = os.environ.get(VALIDATE_ROLE_ENV)
    os.environ[VALIDATE_ROLE_ENV] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(VALIDATE_ROLE_ENV, None)
        else:
            os.environ[VALIDATE_ROLE_ENV] = previous
