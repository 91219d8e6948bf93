"""The SageMaker Pipelines definition of the RFM segmentation pipeline.

``get_pipeline`` is the MLOps-template entry point (``get-pipeline-definition`` and
``run-pipeline`` call it by module name). It builds the definition offline: pass the
role ARN and nothing here calls AWS.

Step graph::

    PlanHistory -> ComputeRFM -> TrainSegmenter -> EvaluateSegmenter -> CheckQuality
        CheckQuality true:  RegisterSegmenter -> PublishIfApproved
            PublishIfApproved true: CreateModel -> AssignSegments -> ExportSegments
        CheckQuality false: QualityGateFailed

Every execution writes under
``s3://{default_bucket}/{base_job_prefix}/executions/{PipelineExecutionId}/``.
"""

from __future__ import annotations

from sagemaker.core.helper.session_helper import Session
from sagemaker.mlops.workflow import (
    CacheConfig,
    Pipeline,
)

from pipeline.naming import MAIN_PIPELINE_NAME, MODEL_PACKAGE_GROUP_NAME
from pipeline.publish_definition import get_publish_pipeline  # noqa: F401  (run-pipeline finds it here)
from pipeline.session import no_role_validation
from pipeline.step_builders import (
    CACHE_EXPIRY,
    FEATURE_ENGINES,
    Context,
    compute_rfm_spark_step,
    compute_rfm_step,
    evaluate_step,
    make_parameters,
    plan_history_step,
    publish_step,
    quality_gate_step,
    register_step,
    require_image_uri,
    resolve_defaults,
    train_step,
    whole_number,
)
from steps.errors import PipelineError


def get_pipeline(
    region: str,
    role: str | None = None,
    default_bucket: str | None = None,
    pipeline_name: str = MAIN_PIPELINE_NAME,
    model_package_group_name: str = MODEL_PACKAGE_GROUP_NAME,
    base_job_prefix: str = "rfm",
    sagemaker_project_arn: str | None = None,
    image_uri: str | None = None,
    export_function_arn: str | None = None,
    enable_caching: bool = True,
    sagemaker_session: Session | None = None,
    feature_engine: str = "duckdb",
    processing_instance_count: int = 1,
    spark_image_uri: str | None = None,
) -> Pipeline:
    """Build the RFM segmentation pipeline.

    Parameters
    ----------
    region : str
        AWS region.
    role : str, optional
        Execution role ARN for the jobs; without it the caller's role is looked up (needs AWS).
    default_bucket : str, optional
        Artifact bucket; default the given session's bucket, else ``sagemaker-{region}-{account}``
        (derived from the role, no S3 call).
    pipeline_name : str
        Name of the pipeline.
    model_package_group_name : str
        Model package group the segmenter is registered in.
    base_job_prefix : str
        S3 key prefix and job name prefix.
    sagemaker_project_arn : str, optional
        SageMaker project ARN; used by ``run-pipeline`` for the project tags.
    image_uri : str
        The project's image as the build pushed it (tagged with its source hash; buildspec.yml writes
        the URI to the SSM parameter ``/<pipeline_name>/image-uri``). There is no default: the image
        repository's tags are immutable and nothing pushes ``latest``.
    export_function_arn : str, optional
        The export Lambda; default ``arn:aws:lambda:{region}:{account}:function:rfm-export``.
    enable_caching : bool
        Cache the processing and training steps for 30 days.
    sagemaker_session : Session, optional
        Session to build with; default an offline ``PipelineSession`` (see ``pipeline.session``).
    feature_engine : str
        ``duckdb`` (one instance, incremental state) or ``spark`` (a Spark processing job of
        ``processing_instance_count`` instances; see docs/scale.md).
    processing_instance_count : int
        Instances of the Spark ComputeRFM step (``feature_engine="spark"`` only); its decimal text
        (``"4"``) too, as buildspec.yml's ``--kwargs`` carries it.
    spark_image_uri : str, optional
        The Spark step's image, required with ``feature_engine="spark"``: containers/Dockerfile.spark
        built ``FROM`` AWS's Spark processing image (3.5, py312), which lacks the project's package
        (buildspec.yml with ``FEATURE_ENGINE=spark`` builds it and writes its URI to the SSM parameter
        ``/<pipeline_name>/spark-image-uri``).

    Returns
    -------
    Pipeline
        The pipeline; ``pipeline.definition()`` is its JSON definition.

    Raises
    ------
    PipelineError
        Without ``image_uri`` (or ``spark_image_uri`` on Spark; one line naming what to pass), with a
        role that is not a role ARN, or with a ``processing_instance_count`` that is not a whole number.
    """
    del sagemaker_project_arn  # accepted for the MLOps template's kwargs; tags are run-pipeline's job
    role, default_bucket, session, export_function_arn = resolve_defaults(
        region, role, default_bucket, sagemaker_session, export_function_arn
    )
    image_uri = require_image_uri(image_uri, pipeline_name)
    if feature_engine not in FEATURE_ENGINES:
        raise PipelineError(f"feature_engine {feature_engine!r} is not one of {', '.join(FEATURE_ENGINES)}",
                            "get_pipeline", 'Pass --kwargs \'{"feature_engine": "spark"}\' or leave it out')
    if feature_engine == "spark":
        spark_image_uri = require_image_uri(spark_image_uri, pipeline_name, "spark_image_uri")
        instance_count = whole_number(processing_instance_count, "processing_instance_count")

    params = make_parameters(default_bucket, base_job_prefix)
    ctx = Context(
        session=session,
        role=role,
        image_uri=image_uri,
        data_prefix=f"s3://{default_bucket}/{base_job_prefix}",
        base_job_prefix=base_job_prefix,
        cache=CacheConfig(enable_caching=enable_caching, expire_after=CACHE_EXPIRY),
    )
    with no_role_validation():
        plan_step, plan = plan_history_step(ctx, params)
        if feature_engine == "spark":
            compute_rfm = compute_rfm_spark_step(
                ctx, params, plan_step, plan, image_uri=spark_image_uri, instance_count=instance_count,
            )
        else:
            compute_rfm = compute_rfm_step(ctx, params, plan_step, plan)
        train = train_step(ctx, params, compute_rfm)
        evaluate, report = evaluate_step(ctx, params, compute_rfm, train)
        register = register_step(ctx, params, model_package_group_name, compute_rfm, train, evaluate)
        publish = publish_step(ctx, params, export_function_arn, compute_rfm, train, register)
        check = quality_gate_step(params, evaluate, report, if_steps=[register, publish])

    return Pipeline(
        name=pipeline_name,
        parameters=params.as_list(),
        steps=[plan_step, compute_rfm, train, evaluate, check],
        sagemaker_session=session,
        # No experiment and trial per run: SageMaker would create them with the pipeline role, which
        # is granted no sagemaker:*Experiment*/*Trial* actions (the SDK adds the config by default).
        pipeline_experiment_config=None,
    )
