"""Step builders shared by the main pipeline (:mod:`pipeline.definition`) and the publish pipeline
(:mod:`pipeline.publish_definition`): parameters, the build context and one function per step.

Nothing here calls AWS: the role ARN, bucket and image are resolved from what the caller passes.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass, fields

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from sagemaker.core.helper.session_helper import Session, get_execution_role
from sagemaker.core.lambda_helper import Lambda
from sagemaker.core.model_metrics import MetricsSource, ModelMetrics
from sagemaker.core.processing import Processor
from sagemaker.core.shapes import ProcessingInput, ProcessingOutput, ProcessingS3Input, ProcessingS3Output
from sagemaker.core.transformer import Transformer
from sagemaker.core.workflow import (
    ConditionEquals,
    ConditionGreaterThanOrEqualTo,
    ExecutionVariables,
    Join,
    JsonGet,
    ParameterBoolean,
    ParameterFloat,
    ParameterInteger,
    ParameterString,
    PropertyFile,
)
from sagemaker.core.workflow.parameters import Parameter
from sagemaker.mlops.workflow import (
    CacheConfig,
    ConditionStep,
    FailStep,
    LambdaOutput,
    LambdaStep,
    ModelStep,
    ProcessingStep,
    TrainingStep,
    TransformStep,
)
from sagemaker.mlops.workflow.lambda_step import LambdaOutputTypeEnum
from sagemaker.serve.model_builder import ModelBuilder
from sagemaker.train import ModelTrainer
from sagemaker.train.configs import Compute, InputData, OutputDataConfig

from pipeline.parameters import APPROVAL_STATUSES, DEFAULT_INSTANCE_TYPE, DEFAULTS
from pipeline.session import SDK_CONFIG, make_session
from steps import package_metadata, paths
from steps.errors import PipelineError

INFERENCE_INSTANCE_TYPES = ["ml.m5.large", "ml.m5.xlarge"]
CACHE_EXPIRY = "P30D"
EVALUATION_REPORT = "EvaluationReport"
HISTORY_PLAN = "HistoryPlan"
SILHOUETTE_PATH = "segmentation_metrics.silhouette.value"
MIN_CLUSTER_SHARE_PATH = "segmentation_metrics.min_cluster_share.value"
GATE_MESSAGE_PATH = "quality_gate.message"  # rounded values and advice that fits the parameters (evaluate.py)
INPUT_CONTENT_TYPES = ["text/csv", "application/jsonlines"]
OUTPUT_CONTENT_TYPES = ["application/jsonlines", "text/csv"]

MODEL_BUILDER_DIR = os.path.join(tempfile.gettempdir(), "rfm-segmentation", "model-builder")

_ROLE_ARN = re.compile(r"^arn:(aws[a-z-]*):iam::(\d{12}):role/\S+$")


@dataclass(frozen=True)
class Parameters:
    """The pipeline parameters, in the order Studio shows them."""

    input_data_url: ParameterString
    input_format: ParameterString
    as_of_date: ParameterString
    column_mapping: ParameterString
    timezone: ParameterString
    encoding: ParameterString
    model_approval_status: ParameterString
    processing_instance_type: ParameterString
    training_instance_type: ParameterString
    transform_instance_type: ParameterString
    transform_instance_count: ParameterInteger
    num_clusters: ParameterInteger
    random_seed: ParameterInteger
    training_sample_size: ParameterInteger
    min_silhouette: ParameterFloat
    min_cluster_share: ParameterFloat
    currency: ParameterString
    rebuild: ParameterBoolean

    def as_list(self) -> list[Parameter]:
        """All parameters, in declaration order."""
        return [getattr(self, f.name) for f in fields(self)]


def make_parameters(default_bucket: str, base_job_prefix: str) -> Parameters:
    """Declare the pipeline parameters and their defaults."""
    return Parameters(
        input_data_url=ParameterString("InputDataUrl", f"s3://{default_bucket}/{base_job_prefix}/input/"),
        input_format=ParameterString("InputFormat", DEFAULTS["InputFormat"]),
        as_of_date=ParameterString("AsOfDate", DEFAULTS["AsOfDate"]),
        column_mapping=ParameterString("ColumnMapping", DEFAULTS["ColumnMapping"]),
        timezone=ParameterString("Timezone", DEFAULTS["Timezone"]),
        encoding=ParameterString("Encoding", DEFAULTS["Encoding"]),
        model_approval_status=ParameterString(
            "ModelApprovalStatus", DEFAULTS["ModelApprovalStatus"], enum_values=list(APPROVAL_STATUSES)
        ),
        processing_instance_type=ParameterString("ProcessingInstanceType", DEFAULTS["ProcessingInstanceType"]),
        training_instance_type=ParameterString("TrainingInstanceType", DEFAULTS["TrainingInstanceType"]),
        transform_instance_type=ParameterString("TransformInstanceType", DEFAULTS["TransformInstanceType"]),
        transform_instance_count=ParameterInteger("TransformInstanceCount", DEFAULTS["TransformInstanceCount"]),
        num_clusters=ParameterInteger("NumClusters", DEFAULTS["NumClusters"]),
        random_seed=ParameterInteger("RandomSeed", DEFAULTS["RandomSeed"]),
        training_sample_size=ParameterInteger("TrainingSampleSize", DEFAULTS["TrainingSampleSize"]),
        min_silhouette=ParameterFloat("MinSilhouette", DEFAULTS["MinSilhouette"]),
        min_cluster_share=ParameterFloat("MinClusterShare", DEFAULTS["MinClusterShare"]),
        currency=ParameterString("Currency", DEFAULTS["Currency"]),
        rebuild=ParameterBoolean(name="Rebuild", default_value=DEFAULTS["Rebuild"]),
    )


@dataclass(frozen=True)
class Context:
    """What every step helper needs besides the parameters."""

    session: Session
    role: str
    image_uri: str
    data_prefix: str  # s3://bucket/prefix: executions/, model/ and quarantine/ are under it
    base_job_prefix: str
    cache: CacheConfig

    def execution_uri(self, *parts: str) -> Join:
        """``s3://.../executions/{PipelineExecutionId}/<parts>`` for this execution."""
        prefix = f"{self.data_prefix}/{paths.EXECUTIONS_DIR}"
        return Join(on="/", values=[prefix, ExecutionVariables.PIPELINE_EXECUTION_ID, *parts])

    def package_uri(self, *parts: str) -> Join:
        """``s3://.../model/{PipelineExecutionId}/<parts>``: what a model package refers to, kept while it exists."""
        prefix = f"{self.data_prefix}/{paths.PACKAGE_DIR}"
        return Join(on="/", values=[prefix, ExecutionVariables.PIPELINE_EXECUTION_ID, *parts])

    @property
    def state_uri(self) -> str:
        """``s3://.../state``: the incremental per-customer state (docs/history.md)."""
        return f"{self.data_prefix}/{paths.STATE_DIR}"

    @property
    def published_uri(self) -> str:
        """``s3://.../published``: the last published segments (the export Lambda's baseline, docs/export.md)."""
        return f"{self.data_prefix}/{paths.PUBLISHED_DIR}"

    def quarantine_uri(self) -> Join:
        """``s3://.../quarantine/{PipelineExecutionId}``: quarantined rows, kept for a shorter time than the rest."""
        prefix = f"{self.data_prefix}/{paths.QUARANTINE_DIR}"
        return Join(on="/", values=[prefix, ExecutionVariables.PIPELINE_EXECUTION_ID])


def _processing_output(name: str, local_path: str, destination: Join) -> ProcessingOutput:
    return ProcessingOutput(
        output_name=name,
        s3_output=ProcessingS3Output(s3_uri=destination, local_path=local_path, s3_upload_mode="EndOfJob"),
    )


def _processing_input(name: str, source: object, local_path: str) -> ProcessingInput:
    return ProcessingInput(
        input_name=name,
        s3_input=ProcessingS3Input(
            s3_uri=source, local_path=local_path, s3_data_type="S3Prefix", s3_input_mode="File"
        ),
    )


def _processor(ctx: Context, params: Parameters, entrypoint: str, name: str) -> Processor:
    return Processor(
        role=ctx.role,
        image_uri=ctx.image_uri,
        entrypoint=[entrypoint],
        instance_type=params.processing_instance_type,
        instance_count=1,
        base_job_name=f"{ctx.base_job_prefix}-{name}",
        sagemaker_session=ctx.session,
    )


def _output_uri(step: ProcessingStep, output_name: str) -> object:
    """The S3 URI a processing step wrote its output ``output_name`` to (a property reference)."""
    return step.properties.ProcessingOutputConfig.Outputs[output_name].S3Output.S3Uri


def plan_history_step(ctx: Context, params: Parameters) -> tuple[ProcessingStep, PropertyFile]:
    """PlanHistory: list the objects under InputDataUrl exactly; ``plan.json`` holds the history's fingerprint.

    Never cached: it is what tells ComputeRFM (whose cache key holds the fingerprint) that the data changed.
    """
    plan = PropertyFile(name=HISTORY_PLAN, output_name="plan", path="plan.json")
    step_args = _processor(ctx, params, "rfm-plan-history", "plan").run(
        outputs=[_processing_output("plan", paths.PROCESSING_PLAN_OUT, ctx.execution_uri("plan"))],
        arguments=[
            Join(on="", values=["--input=", params.input_data_url]),
            "--state", ctx.state_uri,
            "--output", paths.PROCESSING_PLAN_OUT,
        ],
    )  # fmt: skip
    step = ProcessingStep(
        name="PlanHistory",
        display_name="Plan history",
        description=(
            "Lists every transactions object under InputDataUrl (exactly that object or folder, never "
            "siblings) and records the list and its fingerprint in the state."
        ),
        step_args=step_args,
        property_files=[plan],
    )
    return step, plan


def compute_rfm_step(
    ctx: Context, params: Parameters, plan_step: ProcessingStep, plan: PropertyFile
) -> ProcessingStep:
    """ComputeRFM: fold the objects that changed into the state -> per-customer RFM features.

    The history's fingerprint is an argument, so the step's cache key changes with any object version.
    """
    step_args = _processor(ctx, params, "rfm-features", "features").run(
        outputs=_features_outputs(ctx),
        arguments=_features_arguments(ctx, params, plan_step, plan),
    )
    return ProcessingStep(
        name="ComputeRFM",
        display_name="Compute RFM features",
        description=(
            "Folds the transactions objects added, replaced or removed since the state into it (all of "
            "them when Rebuild is true), quarantines unusable rows and scores recency, frequency and "
            "monetary value 1-5 per customer."
        ),
        step_args=step_args,
        cache_config=ctx.cache,
    )


FEATURE_ENGINES = ("duckdb", "spark")


def _features_outputs(ctx: Context) -> list[ProcessingOutput]:
    """ComputeRFM's outputs, on either engine: features, the transform input, the quarantine."""
    return [
        _processing_output("features", paths.PROCESSING_FEATURES_OUT, ctx.package_uri("features")),
        _processing_output("transform", paths.PROCESSING_TRANSFORM_OUT, ctx.package_uri("transform")),
        _processing_output("quarantine", paths.PROCESSING_QUARANTINE_OUT, ctx.quarantine_uri()),
    ]


def _features_arguments(ctx: Context, params: Parameters, plan_step: ProcessingStep,
                        plan: PropertyFile) -> list[object]:
    """ComputeRFM's arguments, on either engine: the state and the history PlanHistory recorded (its
    fingerprint also keys the step's cache), where to write, how to read."""
    fingerprint = JsonGet(step_name=plan_step.name, property_file=plan, json_path="fingerprint")
    return [
        "--state", ctx.state_uri,
        Join(on="", values=["--history-fingerprint=", fingerprint]),
        Join(on="", values=["--rebuild=", params.rebuild]),
        "--output", paths.PROCESSING_FEATURES_OUT,
        "--transform-output", paths.PROCESSING_TRANSFORM_OUT,
        "--quarantine-output", paths.PROCESSING_QUARANTINE_OUT,
        Join(on="", values=["--format=", params.input_format]),
        Join(on="", values=["--as-of=", params.as_of_date]),
        Join(on="", values=["--column-mapping=", params.column_mapping]),
        Join(on="", values=["--timezone=", params.timezone]),
        Join(on="", values=["--encoding=", params.encoding]),
    ]  # fmt: skip


SPARK_APP = "steps/features/spark/app.py"
SPARK_APP_KEY = "code/spark/app.py"
SPARK_WORK = "spark-work"


def compute_rfm_spark_step(
    ctx: Context, params: Parameters, plan_step: ProcessingStep, plan: PropertyFile, *, image_uri: str,
    instance_count: int,
) -> ProcessingStep:
    """ComputeRFM on Spark: the same outputs and the same incremental state as :func:`compute_rfm_step`.

    ``spark-submit`` runs ``steps/features/spark/app.py`` (``rfm-features --engine spark``), which
    buildspec.yml uploads to ``s3://.../code/spark/app.py``, on ``image_uri``: the project's Spark image
    (containers/Dockerfile.spark, FROM :func:`pipeline.spark_image.spark_base_image_uri`), never AWS's
    own, which lacks the package. It takes the DuckDB step's state arguments: the objects that changed
    since the state are read in Spark tasks and folded into it (all of them when Rebuild is true), so the
    engines can take turns on one state. The history's fingerprint also keys the step's cache.
    """
    from sagemaker.core.spark.processing import PySparkProcessor

    if instance_count < 1:
        raise PipelineError(f"processing_instance_count {instance_count} is not a number of instances",
                            "get_pipeline", "Pass 1 or more")
    processor = PySparkProcessor(
        role=ctx.role,
        image_uri=image_uri,
        instance_type=params.processing_instance_type,
        instance_count=instance_count,
        base_job_name=f"{ctx.base_job_prefix}-features-spark",
        sagemaker_session=ctx.session,
        env={"RFM_SPARK_WORKDIR": ctx.execution_uri(SPARK_WORK)},
    )
    step_args = processor.run(
        submit_app=f"{ctx.data_prefix}/{SPARK_APP_KEY}",
        outputs=_features_outputs(ctx),
        arguments=_features_arguments(ctx, params, plan_step, plan),
    )
    return ProcessingStep(
        name="ComputeRFM",
        display_name="Compute RFM features (Spark)",
        description=(
            f"Spark on {instance_count} instance(s): folds the transactions objects added, replaced or "
            "removed since the state into it (all of them when Rebuild is true), quarantines unusable rows "
            "and scores recency, frequency and monetary value 1-5 per customer (the same definitions, "
            "outputs and state as the DuckDB step)."
        ),
        step_args=step_args,
        cache_config=ctx.cache,
    )


def train_step(ctx: Context, params: Parameters, compute_rfm: ProcessingStep) -> TrainingStep:
    """TrainSegmenter: scaled k-means on the RFM features; the image's ``train`` runs."""
    trainer = ModelTrainer(
        training_image=ctx.image_uri,
        role=ctx.role,
        base_job_name=f"{ctx.base_job_prefix}-train",
        compute=Compute(instance_type=params.training_instance_type, instance_count=1),
        output_data_config=OutputDataConfig(s3_output_path=ctx.package_uri("model")),
        hyperparameters={
            "num_clusters": params.num_clusters.to_string(),
            "random_state": params.random_seed.to_string(),
            "max_customers": params.training_sample_size.to_string(),
        },
        sagemaker_session=ctx.session,
    )
    features = InputData(
        channel_name=paths.TRAINING_CHANNEL, data_source=_output_uri(compute_rfm, "features")
    )
    return TrainingStep(
        name="TrainSegmenter",
        display_name="Train customer segmenter",
        description=(
            "Fits k-means on scaled recency, frequency and monetary value (NumClusters=0 picks the "
            "number of clusters by a vote over seeds; above TrainingSampleSize customers, on a sample "
            "of that many) and names each cluster."
        ),
        step_args=trainer.train(input_data_config=[features]),
        cache_config=ctx.cache,
    )


def evaluate_step(
    ctx: Context, params: Parameters, compute_rfm: ProcessingStep, train: TrainingStep
) -> tuple[ProcessingStep, PropertyFile]:
    """EvaluateSegmenter: segmentation metrics as ``evaluation.json`` (a PropertyFile) and ``report.html``.

    The report compares the run with the last publish (``<prefix>/published/``), which the step reads
    when it exists (``--published``). No argument names the execution: a processing step's cache key is its arguments,
    environment and inputs, so that would make every run miss the cache. The report
    takes the execution id from the job's output URI in ``processingjobconfig.json``.
    """
    report = PropertyFile(name=EVALUATION_REPORT, output_name="evaluation", path=paths.EVALUATION_FILE)
    model_artifacts = train.properties.ModelArtifacts.S3ModelArtifacts
    evaluation = ctx.package_uri("evaluation")
    step_args = _processor(ctx, params, "rfm-evaluate", "evaluate").run(
        inputs=[
            _processing_input("model", model_artifacts, paths.PROCESSING_MODEL_IN),
            _processing_input("features", _output_uri(compute_rfm, "features"), paths.PROCESSING_FEATURES_IN),
        ],
        outputs=[_processing_output("evaluation", paths.PROCESSING_EVALUATION_OUT, evaluation)],
        arguments=[
            "--model", paths.PROCESSING_MODEL_IN,
            "--features", paths.PROCESSING_FEATURES_IN,
            "--output", paths.PROCESSING_EVALUATION_OUT,
            Join(on="", values=["--random-state=", params.random_seed]),
            "--job-config", paths.PROCESSING_JOB_CONFIG,
            # What the report shows: the quality gate it is judged by, money's currency, the input.
            Join(on="", values=["--min-silhouette=", params.min_silhouette]),
            Join(on="", values=["--min-cluster-share=", params.min_cluster_share]),
            Join(on="", values=["--currency=", params.currency]),
            Join(on="", values=["--input-location=", params.input_data_url]),
            # The last publish, read by the step itself when there is one (a ProcessingInput would fail the
            # job before anything was published). A constant string: the cache key does not change with it.
            "--published", ctx.published_uri,
        ],
    )  # fmt: skip
    step = ProcessingStep(
        name="EvaluateSegmenter",
        display_name="Evaluate segmentation",
        description=(
            "Scores the clustering (silhouette, smallest cluster share, cluster sizes) and writes "
            "evaluation.json for the quality gate and the model registry."
        ),
        step_args=step_args,
        property_files=[report],
        cache_config=ctx.cache,
    )
    return step, report


def _model_builder(ctx: Context, train: TrainingStep) -> ModelBuilder:
    # dependencies=None: the default ({"auto": True}) sends ModelBuilder down its script-mode
    # code upload path, which resolves the S3 bucket and adds SAGEMAKER_PROGRAM & co. to the
    # container environment. Our image needs neither (the same image-only path as build()'s
    # pass-through case, which sets dependencies=None itself). build() creates model_path
    # locally; a fixed folder instead of the default /tmp/sagemaker/model-builder/<uuid1>
    # keeps repeated builds from leaving a new empty folder each time.
    return ModelBuilder(
        image_uri=ctx.image_uri,
        s3_model_data_url=train.properties.ModelArtifacts.S3ModelArtifacts,
        role_arn=ctx.role,
        instance_type=DEFAULT_INSTANCE_TYPE,
        dependencies=None,
        model_path=MODEL_BUILDER_DIR,
        sagemaker_session=ctx.session,
        log_level=logging.WARNING,
    )


def register_step(
    ctx: Context,
    params: Parameters,
    model_package_group_name: str,
    compute_rfm: ProcessingStep,
    train: TrainingStep,
    evaluate: ProcessingStep,
) -> ModelStep:
    """RegisterSegmenter: a model package version with the evaluation report as model metrics."""
    evaluation_json = Join(on="/", values=[_output_uri(evaluate, "evaluation"), paths.EVALUATION_FILE])
    step_args = _model_builder(ctx, train).register(
        model_package_group_name=model_package_group_name,
        approval_status=params.model_approval_status,
        content_types=INPUT_CONTENT_TYPES,
        response_types=OUTPUT_CONTENT_TYPES,
        inference_instances=INFERENCE_INSTANCE_TYPES,
        transform_instances=[params.transform_instance_type],
        model_metrics=ModelMetrics(
            model_statistics=MetricsSource(s3_uri=evaluation_json, content_type="application/json")
        ),
        customer_metadata_properties={
            package_metadata.EXECUTION_ID: ExecutionVariables.PIPELINE_EXECUTION_ID,
            package_metadata.FEATURES_URI: _output_uri(compute_rfm, "features"),
            package_metadata.TRANSFORM_INPUT_URI: _output_uri(compute_rfm, "transform"),
            package_metadata.REPORT_URI: Join(on="/", values=[_output_uri(evaluate, "evaluation"),
                                                              paths.REPORT_FILE]),
            # The approval handler skips packages registered Approved: their own run publishes them.
            package_metadata.REGISTERED_STATUS: params.model_approval_status,
            # Metadata values are strings: the count as text, for the approval handler's publish.
            package_metadata.TRANSFORM_INSTANCE_COUNT: params.transform_instance_count.to_string(),
        },
        description="RFM customer segmenter: scaled k-means on recency, frequency and monetary value.",
    )
    return ModelStep(
        name="RegisterSegmenter",
        display_name="Register segmenter",
        description=(
            f"Adds the segmenter to the {model_package_group_name} model package group with status "
            "ModelApprovalStatus; approving a package publishes its segments."
        ),
        step_args=step_args,
    )


def create_model_step(ctx: Context, train: TrainingStep) -> ModelStep:
    """CreateModel: the SageMaker model batch transform runs."""
    return ModelStep(
        name="CreateModel",
        display_name="Create model",
        description="Creates a SageMaker model from the trained segmenter for batch transform.",
        step_args=_model_builder(ctx, train).build(),
    )


class _CountedTransformStep(TransformStep):
    """A TransformStep whose ``InstanceCount`` may be a pipeline parameter.

    The SDK's ``TransformResources`` shape takes only a plain int for the count (its instance type
    may be a parameter), so the request is built with 1 and the count set in the step's arguments.
    """

    def __init__(self, *args: object, instance_count: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._instance_count = instance_count

    @property
    def arguments(self) -> dict:
        request = super().arguments
        resources = request["TransformResources"]
        if not isinstance(resources, dict):  # a shape object: the definition serialises dicts alike
            resources = resources.model_dump(by_alias=True, exclude_unset=True)
        request["TransformResources"] = {**resources, "InstanceCount": self._instance_count}
        return request


def assign_segments_step(
    ctx: Context, transform_instance_type: object, model_name: object, transform_input: object,
    transform_instance_count: object = 1,
) -> TransformStep:
    """AssignSegments: batch transform of every customer to a cluster and an RFM segment.

    SageMaker hands each instance whole S3 objects of the input, so ``transform_instance_count``
    instances share the work only when the transform input is written in several files.
    """
    transformer = Transformer(
        model_name=model_name,
        instance_count=1,  # the step's InstanceCount is transform_instance_count (see _CountedTransformStep)
        instance_type=transform_instance_type,
        strategy="MultiRecord",
        max_payload=6,
        accept="application/jsonlines",
        assemble_with="Line",
        output_path=ctx.execution_uri("assignments"),
        base_transform_job_name=f"{ctx.base_job_prefix}-assign",
        sagemaker_session=ctx.session,
    )
    return _CountedTransformStep(
        name="AssignSegments",
        display_name="Assign segments",
        description="Batch transform: assigns every customer to a cluster and an RFM segment (JSON Lines).",
        step_args=transformer.transform(data=transform_input, content_type="text/csv", split_type="Line"),
        instance_count=transform_instance_count,
    )


def export_segments_step(
    ctx: Context,
    export_function_arn: str,
    assign: TransformStep,
    features_uri: object,
    model_package_arn: object,
) -> LambdaStep:
    """ExportSegments: the export Lambda joins assignments and features and writes the segments."""
    return LambdaStep(
        name="ExportSegments",
        display_name="Export segments",
        description=(
            "Joins the assignments with the features and contact columns and exports one file set "
            "per segment to the configured destinations."
        ),
        lambda_func=Lambda(function_arn=export_function_arn, session=ctx.session),
        inputs={
            "assignments_uri": assign.properties.TransformOutput.S3OutputPath,
            "features_uri": features_uri,
            "output_uri": ctx.execution_uri("segments"),
            "execution_id": ExecutionVariables.PIPELINE_EXECUTION_ID,
            "model_package_arn": model_package_arn,
        },
        outputs=[
            LambdaOutput("customers", LambdaOutputTypeEnum.Integer),
            LambdaOutput("segments", LambdaOutputTypeEnum.Integer),
            LambdaOutput("destinations", LambdaOutputTypeEnum.String),
        ],
    )


def publish_step(
    ctx: Context,
    params: Parameters,
    export_function_arn: str,
    compute_rfm: ProcessingStep,
    train: TrainingStep,
    register: ModelStep,
) -> ConditionStep:
    """PublishIfApproved: assign and export segments now when the package is registered Approved."""
    create_model = create_model_step(ctx, train)
    assign = assign_segments_step(
        ctx, params.transform_instance_type, create_model.properties.ModelName, _output_uri(compute_rfm, "transform"),
        params.transform_instance_count,
    )
    export = export_segments_step(
        ctx, export_function_arn, assign, _output_uri(compute_rfm, "features"), register.properties.ModelPackageArn
    )
    return ConditionStep(
        name="PublishIfApproved",
        display_name="Publish if approved",
        description=(
            "Assigns and exports segments only when ModelApprovalStatus is Approved; otherwise the run "
            "ends after registration and approving the package in the registry publishes later."
        ),
        depends_on=[register],
        conditions=[ConditionEquals(left=params.model_approval_status, right="Approved")],
        if_steps=[create_model, assign, export],
        else_steps=[],
    )


def quality_gate_step(
    params: Parameters, evaluate: ProcessingStep, report: PropertyFile, if_steps: list
) -> ConditionStep:
    """CheckQuality: continue only with a good enough segmentation, else fail with the numbers."""

    def metric(path: str) -> JsonGet:
        return JsonGet(step_name=evaluate.name, property_file=report, json_path=path)

    failed = FailStep(
        name="QualityGateFailed",
        display_name="Quality gate failed",
        description="Stops the run with the metrics and thresholds that failed.",
        # evaluation.json's quality_gate.message: the metrics rounded, the thresholds, the report's
        # place and advice that fits the parameters that were set.
        error_message=Join(on="", values=[
            metric(GATE_MESSAGE_PATH), " Review the report: ", _output_uri(evaluate, "evaluation"), "/",
            paths.REPORT_FILE,
        ]),
    )
    return ConditionStep(
        name="CheckQuality",
        display_name="Check segmentation quality",
        description="Continues if silhouette >= MinSilhouette and smallest cluster share >= MinClusterShare.",
        conditions=[
            ConditionGreaterThanOrEqualTo(left=metric(SILHOUETTE_PATH), right=params.min_silhouette),
            ConditionGreaterThanOrEqualTo(
                left=metric(MIN_CLUSTER_SHARE_PATH), right=params.min_cluster_share
            ),
        ],
        if_steps=if_steps,
        else_steps=[failed],
    )


def account_from_role(role: str) -> tuple[str, str]:
    """Partition and account id of an IAM role ARN.

    Parameters
    ----------
    role : str
        ``arn:aws:iam::ACCOUNT:role/NAME``.

    Returns
    -------
    tuple of str
        ``(partition, account)``.

    Raises
    ------
    PipelineError
        When ``role`` is not an IAM role ARN.
    """
    match = _ROLE_ARN.match(role)
    if match is None:
        raise PipelineError(
            f"role {role!r} is not an IAM role ARN", fix="Pass role=arn:aws:iam::ACCOUNT:role/NAME"
        )
    return match.group(1), match.group(2)


# get_pipeline's image kwargs -> (why it has no default, the tag buildspec.yml gives the image it pushes).
IMAGE_KWARGS = {
    "image_uri": ("the image repository is immutable and nothing pushes 'latest'", "src-TAG"),
    "spark_image_uri": ("AWS's Spark image lacks the project's package; the build makes one FROM it "
                        "when FEATURE_ENGINE=spark", "spark-src-TAG"),
}


def image_parameter_name(pipeline_name: str, kwarg: str = "image_uri") -> str:
    """The SSM parameter buildspec.yml writes an image URI to: ``/<pipeline name>/image-uri`` (``spark-image-uri``)."""
    return f"/{pipeline_name}/{kwarg.replace('_', '-')}"


def require_image_uri(image_uri: str | None, pipeline_name: str, kwarg: str = "image_uri") -> str:
    """``image_uri``, or a one-line error saying what to pass (there is no ``latest`` to fall back on).

    ``kwarg`` names the image: ``image_uri`` (every step) or ``spark_image_uri`` (the Spark ComputeRFM).

    Raises
    ------
    PipelineError
        When ``image_uri`` is empty.
    """
    if image_uri:
        return image_uri
    why, tag = IMAGE_KWARGS[kwarg]
    parameter = image_parameter_name(pipeline_name, kwarg)
    raise PipelineError(
        f"no {kwarg} given ({why})",
        fix=(f'Pass --kwargs \'{{"{kwarg}": "ACCOUNT.dkr.ecr.REGION.amazonaws.com/rfm-segmentation:{tag}"}}\'; '
             f"the build writes the URI it pushed to SSM: aws ssm get-parameter --name {parameter}"),
    )


def whole_number(value: object, name: str) -> int:
    """``value`` as an int: an int, or its decimal text (as a shell-built ``--kwargs`` may carry it).

    Raises
    ------
    PipelineError
        When ``value`` is anything else (a bool, a fraction, words).
    """
    text = str(value).strip()
    if isinstance(value, bool) or not re.fullmatch(r"[0-9]+", text):
        raise PipelineError(f"{name} {value!r} is not a whole number", "get_pipeline",
                            f"Pass e.g. --kwargs '{{\"{name}\": 4}}'")
    return int(text)


def _resolve_role(role: str | None, region: str, session: Session | None) -> str:
    """The given role, else the caller's own role (this asks AWS, as the MLOps template does)."""
    if role:
        return role
    try:
        return get_execution_role(
            session or Session(boto3.Session(region_name=region), sagemaker_config=SDK_CONFIG)
        )
    except (BotoCoreError, ClientError, ValueError) as error:
        raise PipelineError(
            f"no role given and the caller's role could not be resolved ({error})",
            fix='Pass --kwargs \'{"role": "arn:aws:iam::ACCOUNT:role/NAME"}\'',
        ) from error


def resolve_defaults(
    region: str,
    role: str | None,
    default_bucket: str | None,
    sagemaker_session: Session | None,
    export_function_arn: str | None,
) -> tuple[str, str, Session, str]:
    """``(role, default_bucket, session, export_function_arn)`` with the defaults both pipelines share.

    The bucket is the session's default bucket, else ``sagemaker-{region}-{account}``; the export
    Lambda ``rfm-export`` in the role's account.
    """
    role = _resolve_role(role, region, sagemaker_session)
    partition, account = account_from_role(role)
    if default_bucket is None:
        default_bucket = (
            sagemaker_session.default_bucket() if sagemaker_session else f"sagemaker-{region}-{account}"
        )
    session = sagemaker_session or make_session(region, default_bucket)
    export_function_arn = export_function_arn or f"arn:{partition}:lambda:{region}:{account}:function:rfm-export"
    return role, default_bucket, session, export_function_arn
