"""The publish pipeline: assign and export the segments of an approved model package.

Approving a package (Studio, ``aws sagemaker update-model-package`` or
``rfm approve``) emits a "SageMaker Model Package State Change" event; the
approval Lambda (``lambdas/approval``) creates a SageMaker model from the
package, which SageMaker allows only for Approved packages, and starts this
pipeline with it. Its two steps are the main pipeline's AssignSegments and
ExportSegments, built by the same functions.
"""

from __future__ import annotations

from sagemaker.core.helper.session_helper import Session
from sagemaker.core.workflow import ParameterInteger, ParameterString
from sagemaker.core.workflow.pipeline_context import PipelineSession
from sagemaker.mlops.workflow.pipeline import Pipeline
from sagemaker.mlops.workflow.steps import CacheConfig

from pipeline.naming import MAIN_PIPELINE_NAME, publish_pipeline_name
from pipeline.parameters import DEFAULTS
from pipeline.session import no_role_validation
from pipeline.step_builders import (
    CACHE_EXPIRY,
    DEFAULT_INSTANCE_TYPE,
    Context,
    assign_segments_step,
    export_segments_step,
    resolve_defaults,
)

# Pipeline parameter names the approval handler fills in.
MODEL_NAME = "ModelName"
MODEL_PACKAGE_ARN = "ModelPackageArn"
FEATURES_URL = "FeaturesUrl"
TRANSFORM_INPUT_URL = "TransformInputUrl"


def get_publish_pipeline(
    region: str,
    role: str,
    default_bucket: str | None = None,
    pipeline_name: str = MAIN_PIPELINE_NAME,
    base_job_prefix: str = "rfm",
    export_function_arn: str | None = None,
    sagemaker_session: Session | PipelineSession | None = None,
    **_main_pipeline_kwargs: object,
) -> Pipeline:
    """Build the publish pipeline (AssignSegments -> ExportSegments) for an approved package.

    Takes :func:`pipeline.definition.get_pipeline`'s keyword arguments (unused ones are
    ignored), so ``run-pipeline`` builds both pipelines from the same ``--kwargs``.

    Parameters
    ----------
    region, role, default_bucket, base_job_prefix, export_function_arn, sagemaker_session
        As for :func:`pipeline.definition.get_pipeline` (same defaults).
    pipeline_name : str
        The *main* pipeline's name; this one is named :func:`publish_pipeline_name` of it.

    Returns
    -------
    Pipeline
        Parameters ``ModelName`` (a model created from the approved package),
        ``ModelPackageArn``, ``FeaturesUrl``, ``TransformInputUrl`` (the prefix of the run's transform
        input files, all of them transformed) and ``TransformInstanceType`` and ``TransformInstanceCount``
        (the approval handler passes the registering run's count, recorded in the package metadata).
    """
    role, default_bucket, session, export_function_arn = resolve_defaults(
        region, role, default_bucket, sagemaker_session, export_function_arn
    )
    model_name = ParameterString(MODEL_NAME, "")
    package_arn = ParameterString(MODEL_PACKAGE_ARN, "")
    features_url = ParameterString(FEATURES_URL, "")
    transform_input_url = ParameterString(TRANSFORM_INPUT_URL, "")
    instance_type = ParameterString("TransformInstanceType", DEFAULT_INSTANCE_TYPE)
    instance_count = ParameterInteger("TransformInstanceCount", DEFAULTS["TransformInstanceCount"])
    ctx = Context(
        session=session,
        role=role,
        image_uri="",
        data_prefix=f"s3://{default_bucket}/{base_job_prefix}",
        base_job_prefix=base_job_prefix,
        cache=CacheConfig(enable_caching=False, expire_after=CACHE_EXPIRY),
    )
    with no_role_validation():
        assign = assign_segments_step(ctx, instance_type, model_name, transform_input_url, instance_count)
        export = export_segments_step(ctx, export_function_arn, assign, features_url, package_arn)
    return Pipeline(
        name=publish_pipeline_name(pipeline_name),
        parameters=[model_name, package_arn, features_url, transform_input_url, instance_type, instance_count],
        steps=[assign, export],
        sagemaker_session=session,
        pipeline_experiment_config=None,  # as the main pipeline: no experiments, no trials
    )
