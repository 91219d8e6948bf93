"""Least privilege, checked both ways: template.yaml grants what the code calls, and nothing wider.

For each role of the template, the AWS API calls of the code it runs are collected from the syntax
trees (``tests/deploy_support/api_calls.py`` says how, and what that cannot see), completed by the
calls libraries make for the code (``LIBRARY_CALLS``) and the permissions a request implies
(``IMPLIED``), and each resulting IAM action is checked against the role's policies on a concrete,
realistic ARN (``EXAMPLE_RESOURCES``). The pipeline execution role is checked against what SageMaker
Pipelines and the jobs do for every step of the built pipeline definitions.
"""

from __future__ import annotations

import fnmatch
import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy_support.api_calls import collect
from tests.deploy_support.iam import allowed, policy_documents, role_statements, statements_of, wildcard_actions
from tests.deploy_support.template import (
    ACCOUNT,
    PARTITION,
    REGION,
    ROOT,
    STACK,
    Resolver,
    load_template,
    parameter_values,
    resolved_resources,
)

# Which role runs which code. A unit is a file, a folder, or one function of a file ("path::function").
ROLE_CODE: dict[str, list[str]] = {
    "TriggerRole": ["lambdas/trigger"],
    "ExportRole": ["lambdas/export"],
    "ApprovalRole": ["lambdas/approval"],
    # buildspec.yml runs run-pipeline / get-pipeline-definition in CodeBuild.
    "BuildRole": [
        "pipeline/run_pipeline.py", "pipeline/get_pipeline_definition.py", "pipeline/driver.py",
        "pipeline/definition.py", "pipeline/publish_definition.py", "pipeline/step_builders.py", "pipeline/session.py",
        "pipeline/naming.py",
        "pipeline/parameters.py",
        "pipeline/spark_image.py",  # containers/spark_base_image.py: the Spark image's base, for the build
    ],
    # People who approve models: `rfm approve --sagemaker`.
    "ApproverPolicy": ["pipeline/cli.py::_cmd_approve", "pipeline/local/approval.py::approve_sagemaker"],
}

# Code that no deployed role runs.
NOT_DEPLOYED: dict[str, str] = {
    "lambdas/fakes": "local stand-ins for Pinpoint, Customer Profiles and S3 (tests, rfm run-local)",
    "pipeline/local": "the local runner (rfm run-local); only approve_sagemaker reaches AWS (ApproverPolicy)",
    "pipeline/cli.py": "the rfm CLI: local commands; its `approve --sagemaker` is in ApproverPolicy",
    "lambdas/__init__.py": "package marker",
    "pipeline/__init__.py": "package marker",
}

# Calls made inside libraries, invisible to the collector: (unit, marker in its source, actions, why).
LIBRARY_CALLS: dict[str, list[tuple[str, str, tuple[str, ...], str]]] = {
    "TriggerRole": [
        ("lambdas/trigger/app.py", "DynamoDBPersistenceLayer",
         ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"),
         "Powertools idempotency: reads, writes, completes and deletes the record of each object"),
        ("lambdas/trigger/single_flight.py", "list_history", ("s3:ListBucket", "s3:ListBucketVersions"),
         "steps.features.history lists the input prefix to compare it with what an execution planned"),
    ],
    "BuildRole": [
        ("pipeline/run_pipeline.py", ".upsert(",
         ("sagemaker:CreatePipeline", "sagemaker:UpdatePipeline", "sagemaker:ListTags", "sagemaker:AddTags",
          "iam:GetRole", "iam:SimulatePrincipalPolicy"),
         "SageMaker SDK Pipeline.upsert: create, else update and re-tag; validates the role with IAM first"),
        ("pipeline/run_pipeline.py", ".start(", ("sagemaker:StartPipelineExecution",),
         "SageMaker SDK Pipeline.start"),
        ("pipeline/run_pipeline.py", "execution.describe", ("sagemaker:DescribePipelineExecution",),
         "SageMaker SDK _PipelineExecution.describe, polled until the run ends"),
        ("buildspec.yml", "aws ecr get-login-password", ("ecr:GetAuthorizationToken",), "docker login to ECR"),
        ("buildspec.yml", "aws ecr describe-images", ("ecr:DescribeImages",), "skip a commit built before"),
        ("buildspec.yml", "docker push",
         ("ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart",
          "ecr:CompleteLayerUpload", "ecr:PutImage"),
         "docker push to the image repository"),
        ("buildspec.yml", "aws ssm put-parameter", ("ssm:PutParameter",), "records the image URIs it pushed"),
        ("buildspec.yml", "--build-arg SPARK_REGISTRY",
         ("ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"),
         "FEATURE_ENGINE=spark: docker build pulls AWS's Spark processing image (containers/Dockerfile.spark)"),
        ("buildspec.yml", "aws s3 cp", ("s3:PutObject", "kms:GenerateDataKey"),
         "FEATURE_ENGINE=spark: uploads the Spark step's submit app to the data bucket (SSE-KMS)"),
        ("buildspec.yml", "sam deploy",
         ("cloudformation:CreateChangeSet", "cloudformation:DescribeChangeSet", "cloudformation:ExecuteChangeSet",
          "cloudformation:DescribeStacks", "cloudformation:DescribeStackEvents", "cloudformation:GetTemplateSummary",
          "s3:ListBucket", "s3:GetObject", "s3:PutObject"),
         "sam deploy: uploads the packages, then creates and executes a change set of the stack"),
        ("buildspec.yml", "aws cloudformation describe-stacks", ("cloudformation:DescribeStacks",),
         "reads the stack's outputs (pipeline role, bucket, export function)"),
    ],
}

# Permissions a request needs besides its own action.
IMPLIED: dict[str, tuple[str, ...]] = {
    "sagemaker:CreateModel": ("iam:PassRole",),  # ExecutionRoleArn
    "sagemaker:CreatePipeline": ("iam:PassRole",),  # RoleArn
    "sagemaker:UpdatePipeline": ("iam:PassRole",),
    "mobiletargeting:CreateImportJob": ("iam:PassRole",),  # RoleArn Pinpoint reads the files with
    "cloudformation:ExecuteChangeSet": ("iam:PassRole",),  # sam deploy --role-arn: the stack's service role
}


SPARK_APP_KEY = "code/spark/app.py"  # pipeline.step_builders.SPARK_APP_KEY (checked below; no SDK import here)
SPARK_BASE_ACCOUNT = "173754725891"  # the SageMaker SDK's spark.json account for REGION (checked below)


def _sm(resource: str) -> str:
    return f"arn:{PARTITION}:sagemaker:{REGION}:{ACCOUNT}:{resource}"


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    """The resolved template, its parameters and a few names and ARNs every test needs."""
    template = load_template()
    parameters = parameter_values(template)
    resources = resolved_resources(template, parameters)
    resolver = Resolver(template, parameters)
    bucket = resolver.physical_name("DataBucket")
    return {
        "template": template,
        "parameters": parameters,
        "resources": resources,
        "resolver": resolver,
        "bucket": bucket,
        "pipeline": parameters["PipelineName"],
        "group": parameters["ModelPackageGroupName"],
        "prefix": parameters["BaseJobPrefix"],
        "pipeline_role": resolver.get_att("PipelineExecutionRole", "Arn"),
    }


def example_resources(stack: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    """A realistic ARN for every action each role's code needs (all must be allowed)."""
    p, bucket, prefix = stack["parameters"], stack["bucket"], stack["prefix"]
    pipeline, group, resolver = stack["pipeline"], stack["group"], stack["resolver"]
    execution = f"arn:{PARTITION}:s3:::{bucket}/{prefix}/executions/abc123def456"
    package_folder = f"arn:{PARTITION}:s3:::{bucket}/{prefix}/model/abc123def456"
    source = resolver.physical_name("BuildSourceBucket")
    stack_arn = f"arn:{PARTITION}:cloudformation:{REGION}:{ACCOUNT}:stack/{STACK}/0a1b2c3d-4e5f"
    app = f"arn:{PARTITION}:mobiletargeting:{REGION}:{ACCOUNT}:apps/{p['PinpointApplicationId']}"
    domain = f"arn:{PARTITION}:profile:{REGION}:{ACCOUNT}:domains/{p['CustomerProfilesDomain']}"
    package = _sm(f"model-package/{group}/3")
    main_pipeline, publish_pipeline = _sm(f"pipeline/{pipeline}"), _sm(f"pipeline/{pipeline}-publish")
    repository = f"arn:{PARTITION}:ecr:{REGION}:{ACCOUNT}:repository/{p['ImageRepositoryName']}"
    table = resolver.get_att("IdempotencyTable", "Arn")
    push = {action: [repository] for action in (
        "ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart",
        "ecr:CompleteLayerUpload", "ecr:PutImage", "ecr:DescribeImages")}
    # AWS's Spark processing image the Spark image is built FROM (its registry: the SDK's account for REGION).
    spark_base = f"arn:{PARTITION}:ecr:{REGION}:{SPARK_BASE_ACCOUNT}:repository/sagemaker-spark-processing"
    pull = {action: [spark_base] for action in (
        "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer")}
    spark_app = f"arn:{PARTITION}:s3:::{bucket}/{prefix}/{SPARK_APP_KEY}"
    return {
        "TriggerRole": {
            "sagemaker:StartPipelineExecution": [main_pipeline],
            # Single flight (docs/history.md): status, markers and claims under <prefix>/state/trigger/, plans.
            "sagemaker:ListPipelineExecutions": [main_pipeline],
            "sagemaker:DescribePipelineExecution": [f"{main_pipeline}/execution/abc123def456"],
            "s3:ListBucket": [f"arn:{PARTITION}:s3:::{bucket}"],
            "s3:ListBucketVersions": [f"arn:{PARTITION}:s3:::{bucket}"],
            "s3:GetObject": [f"arn:{PARTITION}:s3:::{bucket}/{prefix}/state/trigger/claims/after-none.json",
                             f"{execution}/plan/plan.json"],
            "s3:PutObject": [f"arn:{PARTITION}:s3:::{bucket}/{prefix}/state/trigger/pending/abc123def456"],
            "s3:DeleteObject": [f"arn:{PARTITION}:s3:::{bucket}/{prefix}/state/trigger/claims/after-none.json"],
            **{f"dynamodb:{op}": [table] for op in ("GetItem", "PutItem", "UpdateItem", "DeleteItem")},
        },
        "ExportRole": {
            "s3:ListBucket": [f"arn:{PARTITION}:s3:::{bucket}"],
            "s3:GetObject": [f"{execution}/assignments/transform.csv.out", f"{package_folder}/features/rfm.parquet",
                             execution.split("/executions/")[0] + "/published/segments.parquet"],
            "s3:PutObject": [f"{execution}/segments/segments.parquet",
                             f"{execution}/segments/pinpoint-import/champions.csv",
                             execution.split("/executions/")[0] + "/published/published.json"],
            "s3:DeleteObject": [f"{execution}/segments/pinpoint-import/champions.csv"],
            "s3:AbortMultipartUpload": [f"{execution}/segments/export/segments/champions.csv"],
            "mobiletargeting:GetApp": [app],
            "mobiletargeting:CreateImportJob": [f"{app}/jobs/import"],
            "mobiletargeting:GetImportJob": [f"{app}/jobs/import/0a1b2c"],
            "mobiletargeting:GetSegments": [f"{app}/segments"],
            "mobiletargeting:CreateSegment": [f"{app}/segments"],
            "mobiletargeting:UpdateSegment": [f"{app}/segments/0a1b2c"],
            "iam:PassRole": [resolver.get_att("PinpointImportRole", "Arn")],
            "profile:GetDomain": [domain],
            "profile:SearchProfiles": [domain],
            "profile:UpdateProfile": [domain],
            **{f"profile:{op}": [f"{domain}/object-types/RFMSegmentAssignment"]
               for op in ("GetProfileObjectType", "PutProfileObjectType", "PutProfileObject")},
            "profile:ListSegmentDefinitions": [domain],
            **{f"profile:{op}": [f"{domain}/segment-definitions/rfm-champions"]
               for op in ("GetSegmentDefinition", "CreateSegmentDefinition", "DeleteSegmentDefinition")},
        },
        "ApprovalRole": {
            "sagemaker:DescribeModelPackage": [package],
            "sagemaker:CreateModel": [_sm(f"model/{p['ModelNamePrefix']}-{group}-3-1a2b3c4d")],
            "sagemaker:StartPipelineExecution": [publish_pipeline],
            "iam:PassRole": [stack["pipeline_role"]],
        },
        "BuildRole": {
            "sagemaker:DescribeProject": [_sm(f"project/{p['SageMakerProjectName']}")],
            "ssm:PutParameter": [f"arn:{PARTITION}:ssm:{REGION}:{ACCOUNT}:parameter/{pipeline}/image-uri",
                                 f"arn:{PARTITION}:ssm:{REGION}:{ACCOUNT}:parameter/{pipeline}/spark-image-uri"],
            **{f"cloudformation:{op}": [stack_arn] for op in (
                "CreateChangeSet", "DescribeChangeSet", "ExecuteChangeSet", "DescribeStacks", "DescribeStackEvents",
                "GetTemplateSummary")},
            "s3:ListBucket": [f"arn:{PARTITION}:s3:::{source}"],
            "s3:GetObject": [f"arn:{PARTITION}:s3:::{source}/sam/0a1b2c3d.template"],
            "s3:PutObject": [f"arn:{PARTITION}:s3:::{source}/sam/0a1b2c3d.template", spark_app],
            "kms:GenerateDataKey": [resolver.get_att("DataKey", "Arn")],
            **{f"sagemaker:{op}": [main_pipeline, publish_pipeline]
               for op in ("CreatePipeline", "UpdatePipeline", "ListTags", "AddTags")},
            "sagemaker:StartPipelineExecution": [main_pipeline],
            "sagemaker:DescribePipelineExecution": [f"{main_pipeline}/execution/abc123def456"],
            "sagemaker:ListPipelineExecutionSteps": [f"{main_pipeline}/execution/abc123def456"],
            **{action: [stack["pipeline_role"]] for action in ("iam:GetRole", "iam:SimulatePrincipalPolicy")},
            "iam:PassRole": [stack["pipeline_role"], p["CloudFormationRoleArn"]],
            "ecr:GetAuthorizationToken": ["*"],
            **push,
            **{action: push.get(action, []) + arns for action, arns in pull.items()},
        },
        "ApproverPolicy": {
            "sagemaker:ListModelPackages": [_sm("model-package/*")],
            "sagemaker:DescribeModelPackage": [package],  # its report_uri: rfm approve --sagemaker prints it
            "sagemaker:UpdateModelPackage": [package],
        },
    }


def _files(unit: str) -> list[str]:
    path = ROOT / unit.split("::")[0]
    if path.is_dir():
        return [str(p.relative_to(ROOT)) for p in sorted(path.rglob("*.py"))]
    return [unit]


def code_units(role: str) -> list[str]:
    """The role's units with folders expanded to their Python files (buildspec.yml is not Python)."""
    return [file for unit in ROLE_CODE[role] for file in _files(unit) if not file.endswith(".yml")]


def needed_actions(role: str) -> Iterator[tuple[str, str]]:
    """``(action, where)`` for everything the role's code needs, library calls and implied ones included."""
    for call in collect(code_units(role), ROOT):
        for action in call.actions:
            yield action, f"{call.path}:{call.line}"
            for implied in IMPLIED.get(action, ()):
                yield implied, f"{call.path}:{call.line} ({action})"
    for unit, marker, actions, _why in LIBRARY_CALLS.get(role, []):
        for action in actions:
            yield action, f"{unit} ({marker})"
            for implied in IMPLIED.get(action, ()):
                yield implied, f"{unit} ({action})"


def test_every_module_has_an_owner() -> None:
    """A new module must be placed: under a role (and covered) or in NOT_DEPLOYED with a reason."""
    assigned = {f.split("::")[0] for units in ROLE_CODE.values() for unit in units for f in _files(unit)}
    unplaced = []
    for path in sorted([*ROOT.glob("lambdas/**/*.py"), *ROOT.glob("pipeline/**/*.py")]):
        relative = str(path.relative_to(ROOT))
        if relative not in assigned and not any(relative.startswith(prefix) for prefix in NOT_DEPLOYED):
            unplaced.append(relative)
    assert unplaced == []


def test_library_call_markers_are_still_in_the_code() -> None:
    for role, entries in LIBRARY_CALLS.items():
        for unit, marker, _actions, why in entries:
            assert unit.split("::")[0] in {f for u in ROLE_CODE[role] for f in _files(u)} | {"buildspec.yml"}
            assert marker in (ROOT / unit).read_text(), f"{role}: {why} -- marker {marker!r} is gone"


def test_the_collector_finds_the_known_calls() -> None:
    """Spot checks that the AST collector sees direct, passed-on and paginated calls."""
    trigger = {a for c in collect(code_units("TriggerRole"), ROOT) for a in c.actions}
    export = {a for c in collect(code_units("ExportRole"), ROOT) for a in c.actions}
    approval = {a for c in collect(code_units("ApprovalRole"), ROOT) for a in c.actions}
    assert "sagemaker:StartPipelineExecution" in trigger
    assert "sagemaker:Search" not in trigger  # re.search is a module function, not SageMaker's Search
    assert {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "profile:PutProfileObject",  # retry.call(client.x)
            "mobiletargeting:CreateImportJob"} <= export
    assert {"sagemaker:DescribeModelPackage", "sagemaker:CreateModel", "sagemaker:StartPipelineExecution"} <= approval
    approver = {a for c in collect(code_units("ApproverPolicy"), ROOT) for a in c.actions}
    assert approver == {"sagemaker:ListModelPackages", "sagemaker:DescribeModelPackage",  # the report's address
                        "sagemaker:UpdateModelPackage"}  # not the local stand-ins'
    build = {a for c in collect(code_units("BuildRole"), ROOT) for a in c.actions}
    assert "sagemaker:ListPipelineExecutionSteps" in build  # via session.sagemaker_client


@pytest.mark.parametrize("role", sorted(ROLE_CODE))
def test_code_calls_are_allowed_to_the_role_that_runs_them(role: str, stack: dict[str, Any]) -> None:
    resources, resolver = stack["resources"], stack["resolver"]
    statements = role_statements(resources, role, resolver.physical_name(role))
    examples = example_resources(stack)[role]
    missing, denied = [], []
    for action, where in sorted(set(needed_actions(role))):
        if action not in examples:
            missing.append(f"{action} ({where})")
            continue
        denied += [f"{action} on {arn} ({where})" for arn in examples[action]
                   if not allowed(statements, action, arn)]
    assert missing == [], f"add an example resource to example_resources()[{role!r}] and a grant to the role"
    assert denied == [], f"{role} lacks these permissions in template.yaml"
    unused = set(examples) - {action for action, _ in needed_actions(role)}
    assert unused == set(), "example resources for calls the code no longer makes"


# ------------------------------------------------------------------------------ the pipeline execution role

# What SageMaker Pipelines does with the pipeline role for each step type, and on what: it creates,
# follows, stops and tags the step's resource.
STEP_ACTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "Processing": (("sagemaker:CreateProcessingJob", "sagemaker:DescribeProcessingJob",
                    "sagemaker:StopProcessingJob", "sagemaker:AddTags"),
                   "processing-job/pipelines-a1b2c3-computerfm-d4"),
    "Training": (("sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob",
                  "sagemaker:AddTags"), "training-job/pipelines-a1b2c3-trainsegmenter-d4"),
    "Transform": (("sagemaker:CreateTransformJob", "sagemaker:DescribeTransformJob", "sagemaker:StopTransformJob",
                   "sagemaker:AddTags"), "transform-job/pipelines-a1b2c3-assignsegments-d4"),
    "Model": (("sagemaker:CreateModel", "sagemaker:DescribeModel", "sagemaker:AddTags"),
              "model/pipelines-a1b2c3-createmodel-d4"),
    "RegisterModel": (("sagemaker:CreateModelPackage", "sagemaker:DescribeModelPackage", "sagemaker:AddTags"),
                      "model-package/{group}/3"),
    "Lambda": (("lambda:InvokeFunction",), "{function}"),
    "Condition": ((), ""),
    "Fail": ((), ""),
}

# What the job a step starts does with the same role (the service, not our code): SageMaker creates the
# job's log group and streams, writes the logs, publishes the job's metrics, and (RegisterModel) checks
# the model package group.
JOB_ACTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    kind: (("logs:CreateLogGroup", "{log_group}"), ("logs:CreateLogStream", "{stream}"),
           ("logs:DescribeLogStreams", "{stream}"), ("logs:PutLogEvents", "{stream}"),
           ("cloudwatch:PutMetricData", "*"))
    for kind in ("Processing", "Training", "Transform")
}
JOB_ACTIONS["RegisterModel"] = (("sagemaker:DescribeModelPackageGroup", "model-package-group/{group}"),)

# Pipeline-level settings of a definition that make SageMaker act with the pipeline role: with
# PipelineExperimentConfig it creates an experiment and a trial per execution and adds each job to it.
PIPELINE_CONFIG_ACTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "PipelineExperimentConfig": (
        ("sagemaker:CreateExperiment", "experiment/{pipeline}"),
        ("sagemaker:DescribeExperiment", "experiment/{pipeline}"),
        ("sagemaker:CreateTrial", "experiment-trial/a1b2c3"), ("sagemaker:DescribeTrial", "experiment-trial/a1b2c3"),
        ("sagemaker:AssociateTrialComponent", "experiment-trial-component/pipelines-a1b2c3-computerfm"),
    ),
    "MlflowConfig": (("sagemaker-mlflow:CreateExperiment", "mlflow-tracking-server/x"),
                     ("sagemaker-mlflow:CreateRun", "mlflow-tracking-server/x")),
}


def _steps(steps: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for step in steps:
        yield step
        if step["Type"] == "Condition":
            yield from _steps(step["Arguments"].get("IfSteps", []) + step["Arguments"].get("ElseSteps", []))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


@pytest.fixture(scope="module")
def definitions(stack: dict[str, Any]) -> list[dict[str, Any]]:
    """Both pipeline definitions, built with the kwargs buildspec.yml passes for this stack."""
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the SDK's "no job is started" notes for offline builds
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": REGION}.items():
            patch.setenv(name, value)
        from pipeline.definition import get_pipeline, get_publish_pipeline

        p, resolver = stack["parameters"], stack["resolver"]
        kwargs = {
            "region": REGION, "role": stack["pipeline_role"], "default_bucket": stack["bucket"],
            "pipeline_name": stack["pipeline"], "model_package_group_name": stack["group"],
            "base_job_prefix": stack["prefix"],
            "image_uri": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{p['ImageRepositoryName']}:0a1b2c3",
            "export_function_arn": resolver.get_att("ExportFunction", "Arn"),
        }
        # What buildspec.yml adds with FEATURE_ENGINE=spark: the Spark image (same repository) and the count.
        spark_image = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{p['ImageRepositoryName']}:spark-src-0a1b2c3"
        spark = {**kwargs, "feature_engine": "spark", "processing_instance_count": "2", "spark_image_uri": spark_image}
        return [json.loads(get_pipeline(**kwargs).definition()),
                json.loads(get_publish_pipeline(**kwargs).definition()),
                json.loads(get_pipeline(**spark).definition())]


def pipeline_role_needs(stack: dict[str, Any], definitions: list[dict[str, Any]]) -> Iterator[tuple[str, str, str]]:
    """``(action, resource, why)`` for what Pipelines and the jobs do with the pipeline role."""
    group, bucket = stack["group"], stack["bucket"]
    key = stack["resolver"].get_att("DataKey", "Arn")
    log_group = f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT}:log-group:/aws/sagemaker"
    for definition in definitions:
        for setting, needs in PIPELINE_CONFIG_ACTIONS.items():
            if definition.get(setting):
                for action, resource in needs:
                    yield action, _sm(resource.format(pipeline=stack["pipeline"])), f"the definition's {setting}"
        for step in _steps(definition["Steps"]):
            for action, resource in JOB_ACTIONS.get(step["Type"], ()):
                kind = {"Processing": "ProcessingJobs", "Training": "TrainingJobs", "Transform": "TransformJobs"}
                group_arn = f"{log_group}/{kind.get(step['Type'], '')}"
                target = resource.format(log_group=group_arn, stream=f"{group_arn}:log-stream:pipelines-a1b2c3/algo-1",
                                         group=group)
                yield action, target if target.startswith("arn:") or target == "*" else _sm(target), \
                    f"{step['Name']} ({step['Type']} job)"
            actions, resource = STEP_ACTIONS[step["Type"]]
            arguments = step.get("Arguments", {})
            function = step.get("FunctionArn", "")
            target = function if resource == "{function}" else _sm(resource.format(group=group))
            for action in actions:
                yield action, target, f"{step['Name']} ({step['Type']})"
            for role in {s for s in _strings(arguments) if s.startswith("arn:aws:iam::")}:
                yield "iam:PassRole", role, f"{step['Name']} passes the role to its job"
            for image in {s for s in _strings(arguments) if ".dkr.ecr." in s}:
                repository = image.split("/", 1)[1].split(":")[0].split("@")[0]
                arn = f"arn:{PARTITION}:ecr:{REGION}:{ACCOUNT}:repository/{repository}"
                for action in ("ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"):
                    yield action, arn, f"{step['Name']} pulls {image}"
                yield "ecr:GetAuthorizationToken", "*", f"{step['Name']} pulls {image}"
            if step["Type"] in ("Processing", "Training", "Transform"):
                kind = {"Processing": "ProcessingJobs", "Training": "TrainingJobs", "Transform": "TransformJobs"}
                stream = f"{log_group}/{kind[step['Type']]}:log-stream:pipelines-a1b2c3/algo-1"
                for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
                    yield action, stream, f"{step['Name']} logs"
        for uri in sorted({s for s in _strings(definition) if s.startswith("s3://")}):
            bucket_name, _, key_prefix = uri[5:].partition("/")
            assert bucket_name == bucket, uri
            obj = f"arn:{PARTITION}:s3:::{bucket}/{key_prefix.rstrip('/')}/abc123def456/part-0"
            yield "s3:GetObject", obj, f"a job reads {uri}"
            if "/executions" in key_prefix or "/model" in key_prefix:
                yield "s3:PutObject", obj, f"a job writes {uri}"
            yield "s3:ListBucket", f"arn:{PARTITION}:s3:::{bucket}", f"a job lists {uri}"
            yield "kms:GenerateDataKey", key, "SSE-KMS writes"
            yield "kms:Decrypt", key, "SSE-KMS reads"
        if any(step.get("PropertyFiles") for step in _steps(definition["Steps"])):
            report = f"arn:{PARTITION}:s3:::{bucket}/{stack['prefix']}/model/x/evaluation/evaluation.json"
            yield "s3:GetObject", report, "Pipelines reads the property file (JsonGet)"
    # The approval Lambda's models run with this role (MODEL_EXECUTION_ROLE_ARN) in the publish pipeline.
    yield "sagemaker:CreateModel", _sm(f"model/{stack['parameters']['ModelNamePrefix']}-x"), "approval models"


def test_definitions_cover_every_step_type(definitions: list[dict[str, Any]]) -> None:
    types = {step["Type"] for definition in definitions for step in _steps(definition["Steps"])}
    assert types <= set(STEP_ACTIONS), f"add the new step type(s) {types - set(STEP_ACTIONS)} to STEP_ACTIONS"
    assert {"Processing", "Training", "Transform", "Model", "RegisterModel", "Lambda"} <= types


def test_pipeline_role_allows_what_pipelines_and_jobs_do(stack: dict[str, Any],
                                                         definitions: list[dict[str, Any]]) -> None:
    resolver = stack["resolver"]
    statements = role_statements(stack["resources"], "PipelineExecutionRole",
                                 resolver.physical_name("PipelineExecutionRole"))
    denied = sorted({f"{action} on {arn}: {why}" for action, arn, why in pipeline_role_needs(stack, definitions)
                     if not allowed(statements, action, arn)})
    assert denied == []


def test_pipeline_role_reads_but_never_writes_the_last_publish(stack: dict[str, Any],
                                                               definitions: list[dict[str, Any]]) -> None:
    """EvaluateSegmenter reads <prefix>/published/ (its report compares with it); only the export replaces it."""
    resolver, bucket, prefix = stack["resolver"], stack["bucket"], stack["prefix"]
    statements = role_statements(stack["resources"], "PipelineExecutionRole",
                                 resolver.physical_name("PipelineExecutionRole"))
    [evaluate] = [s for s in _steps(definitions[0]["Steps"]) if s["Name"] == "EvaluateSegmenter"]
    arguments = evaluate["Arguments"]["AppSpecification"]["ContainerArguments"]
    assert arguments[arguments.index("--published") + 1] == f"s3://{bucket}/{prefix}/published"
    for name in ("published.json", "segments.parquet"):
        assert allowed(statements, "s3:GetObject", f"arn:{PARTITION}:s3:::{bucket}/{prefix}/published/{name}")
        assert not allowed(statements, "s3:PutObject", f"arn:{PARTITION}:s3:::{bucket}/{prefix}/published/{name}")
    # Listing published/ tells "nothing published yet" from a refused read; ListData is limited by s3:prefix.
    [listing] = [statement for policy in stack["resources"]["PipelineExecutionRole"]["Properties"]["Policies"]
                 for statement in policy["PolicyDocument"]["Statement"] if statement.get("Sid") == "ListData"]
    patterns = listing["Condition"]["StringLike"]["s3:prefix"]
    assert any(fnmatch.fnmatchcase(f"{prefix}/published/published.json", pattern) for pattern in patterns)


def test_pipeline_role_reads_but_never_writes_the_spark_app(stack: dict[str, Any],
                                                            definitions: list[dict[str, Any]]) -> None:
    """The Spark step downloads the submit app the build uploaded; no job may replace the code a run submits."""
    from pipeline.spark_image import spark_base_image_uri
    from pipeline.step_builders import SPARK_APP_KEY as key

    assert key == SPARK_APP_KEY and spark_base_image_uri(REGION).startswith(f"{SPARK_BASE_ACCOUNT}.dkr.ecr.")
    resolver, bucket, prefix = stack["resolver"], stack["bucket"], stack["prefix"]
    statements = role_statements(stack["resources"], "PipelineExecutionRole",
                                 resolver.physical_name("PipelineExecutionRole"))
    [spark] = [d for d in definitions if any(s["Name"] == "ComputeRFM" and "smspark-submit" in json.dumps(s)
                                             for s in d["Steps"])]
    [compute] = [s for s in spark["Steps"] if s["Name"] == "ComputeRFM"]
    [code] = [i["S3Input"]["S3Uri"] for i in compute["Arguments"]["ProcessingInputs"] if i["InputName"] == "code"]
    assert code == f"s3://{bucket}/{prefix}/{SPARK_APP_KEY}"
    app = f"arn:{PARTITION}:s3:::{bucket}/{prefix}/{SPARK_APP_KEY}"
    assert allowed(statements, "s3:GetObject", app)
    assert not allowed(statements, "s3:PutObject", app)
    [listing] = [statement for policy in stack["resources"]["PipelineExecutionRole"]["Properties"]["Policies"]
                 for statement in policy["PolicyDocument"]["Statement"] if statement.get("Sid") == "ListData"]
    patterns = listing["Condition"]["StringLike"]["s3:prefix"]
    assert any(fnmatch.fnmatchcase(f"{prefix}/{SPARK_APP_KEY}", pattern) for pattern in patterns)


def test_pipeline_role_is_not_wider_than_its_bucket_prefixes(stack: dict[str, Any]) -> None:
    resolver = stack["resolver"]
    statements = role_statements(stack["resources"], "PipelineExecutionRole",
                                 resolver.physical_name("PipelineExecutionRole"))
    bucket, input_prefix = stack["bucket"], stack["parameters"]["InputPrefix"]
    assert not allowed(statements, "s3:PutObject", f"arn:{PARTITION}:s3:::{bucket}/{input_prefix}x.csv")
    assert not allowed(statements, "s3:GetObject", f"arn:{PARTITION}:s3:::other-bucket/x")
    assert not allowed(statements, "s3:DeleteObject", f"arn:{PARTITION}:s3:::{bucket}/{stack['prefix']}/x")
    assert not allowed(statements, "lambda:InvokeFunction", f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:other")


# ------------------------------------------------------------------------------ no wildcards


def _all_statements(stack: dict[str, Any]) -> list[Any]:
    return [s for where, document in policy_documents(stack["resources"]) for s in statements_of(document, where)]


def test_no_statement_grants_every_action_or_a_whole_service(stack: dict[str, Any]) -> None:
    assert wildcard_actions(_all_statements(stack)) == []


# Deny statements may name a whole service: there a wildcard takes access away, it grants nothing.
WHOLE_SERVICE_DENIES = {
    ("DataBucketPolicy", "DenyInsecureTransport"),
    ("BuildSourceBucketPolicy", "DenyInsecureTransport"),
    ("DeadLetterQueuePolicy", "DenyInsecureTransport"),
}


def test_whole_service_actions_only_in_tls_only_denies(stack: dict[str, Any]) -> None:
    statements = _all_statements(stack)
    wide = {(s.source, s.sid) for s in statements if any(a == "*" or a.endswith(":*") for a in s.actions)}
    assert wide == WHOLE_SERVICE_DENIES
    for statement in statements:
        if (statement.source, statement.sid) in WHOLE_SERVICE_DENIES:
            assert statement.effect == "Deny" and statement.conditional


# Actions allowed on Resource "*", and why that is the narrowest IAM permits.
WILDCARD_RESOURCE_ACTIONS = {
    "ecr:GetAuthorizationToken": "has no resource type: a registry login is account-wide",
    "cloudwatch:PutMetricData": "metric namespaces are not resources; narrowed by a cloudwatch:namespace condition",
    "sagemaker:ListModelPackages": "a list call names no package (justified in ApproverPolicy's Metadata)",
}


def test_wildcard_resources_only_where_iam_allows_nothing_narrower(stack: dict[str, Any]) -> None:
    offenders = []
    for where, document in policy_documents(stack["resources"]):
        key_policy = stack["resources"].get(where, {}).get("Type") == "AWS::KMS::Key"  # "*" = this key
        for statement in statements_of(document, where):
            if statement.effect != "Allow" or "*" not in statement.resources or key_policy or "(trust)" in where:
                continue
            offenders += [f"{where} {statement.sid}: {a}" for a in statement.actions
                          if a not in WILDCARD_RESOURCE_ACTIONS]
    assert offenders == []


def test_every_action_exists_in_iam() -> None:
    """Action names against cfn-lint's IAM catalogue (its own W3037 check is off for SAM templates)."""
    from cfnlint.data import AdditionalSpecs
    from cfnlint.helpers import load_resource

    catalogue = load_resource(AdditionalSpecs, "Policies.json")
    template = load_template()
    resources = resolved_resources(template, parameter_values(template))
    unknown = []
    for where, document in policy_documents(resources):
        for statement in statements_of(document, where):
            for action in statement.actions:
                service, _, name = action.partition(":")
                known = catalogue.get(service, {}).get("Actions", {})
                if not any(re.fullmatch(re.escape(name.lower()).replace(r"\*", ".*"), k) for k in known):
                    unknown.append(f"{where}: {action}")
    assert unknown == []


def test_sagemaker_names_are_lower_case(stack: dict[str, Any]) -> None:
    """SageMaker lower-cases names in ARNs; IAM compares them case-sensitively."""
    for name in ("PipelineName", "ModelPackageGroupName", "BaseJobPrefix", "ModelNamePrefix"):
        assert stack["parameters"][name] == stack["parameters"][name].lower(), name


def test_role_scoping_excludes_other_pipelines(stack: dict[str, Any]) -> None:
    resolver = stack["resolver"]
    for role in ("TriggerRole", "ApprovalRole", "BuildRole"):
        statements = role_statements(stack["resources"], role, resolver.physical_name(role))
        assert not allowed(statements, "sagemaker:StartPipelineExecution", _sm("pipeline/someone-elses")), role
    trigger = role_statements(stack["resources"], "TriggerRole", resolver.physical_name("TriggerRole"))
    assert not allowed(trigger, "sagemaker:StartPipelineExecution", _sm(f"pipeline/{stack['pipeline']}-publish"))


def test_example_arns_are_well_formed(stack: dict[str, Any]) -> None:
    for role, actions in example_resources(stack).items():
        for action, arns in actions.items():
            for arn in arns:
                assert arn == "*" or re.match(r"^arn:aws:[a-z0-9-]+:[a-z0-9-]*:\d{0,12}:", arn), (role, action, arn)


def test_module_paths_exist() -> None:
    for units in ROLE_CODE.values():
        for unit in units:
            assert (ROOT / unit.split("::")[0]).exists(), unit
    for prefix in NOT_DEPLOYED:
        assert (ROOT / prefix).exists() or Path(ROOT / prefix).with_suffix(".py").exists(), prefix


# ------------------------------------------------------------------------------ tightened grants


def test_every_list_bucket_grant_is_limited_to_prefixes(stack: dict[str, Any]) -> None:
    """An s3:ListBucket Allow without an s3:prefix condition would list every key of the bucket."""
    unlimited = []
    for where, document in policy_documents(stack["resources"]):
        for statement in document.get("Statement", []):
            actions = statement.get("Action", [])
            actions = [actions] if isinstance(actions, str) else actions
            if statement["Effect"] == "Allow" and "s3:ListBucket" in actions:
                prefixes = statement.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
                if not prefixes:
                    unlimited.append(f"{where} {statement.get('Sid', '')}")
    assert unlimited == []


def test_pinpoint_reads_only_the_import_files(stack: dict[str, Any]) -> None:
    resolver = stack["resolver"]
    statements = role_statements(stack["resources"], "PinpointImportRole", resolver.physical_name("PinpointImportRole"))
    run = f"arn:{PARTITION}:s3:::{stack['bucket']}/{stack['prefix']}/executions/abc123"
    assert allowed(statements, "s3:GetObject", f"{run}/segments/pinpoint-import/run-1/champions.csv")
    for other in (f"{run}/segments/segments.parquet", f"{run}/assignments/customers.csv.out",
                  f"arn:{PARTITION}:s3:::{stack['bucket']}/{stack['prefix']}/model/abc123/features/rfm.parquet"):
        assert not allowed(statements, "s3:GetObject", other), other


def test_only_people_write_the_build_source(stack: dict[str, Any]) -> None:
    """The source bucket is apart from the data: no role of the stack can change the code the build runs."""
    resolver, resources = stack["resolver"], stack["resources"]
    source = resolver.physical_name("BuildSourceBucket")
    key = f"arn:{PARTITION}:s3:::{source}/{stack['parameters']['BuildSourceKey']}"
    assert resources["BuildProject"]["Properties"]["Source"]["Location"].startswith(f"{source}/")
    assert source != stack["bucket"]
    for logical_id, resource in resources.items():
        if resource["Type"] in ("AWS::IAM::Role", "AWS::IAM::ManagedPolicy"):
            statements = role_statements(resources, logical_id, resolver.physical_name(logical_id))
            assert not allowed(statements, "s3:PutObject", key), logical_id


def test_describe_project_names_this_stacks_project(stack: dict[str, Any]) -> None:
    resolver = stack["resolver"]
    statements = role_statements(stack["resources"], "BuildRole", resolver.physical_name("BuildRole"))
    project = stack["parameters"]["SageMakerProjectName"]
    assert allowed(statements, "sagemaker:DescribeProject", _sm(f"project/{project}"))
    assert not allowed(statements, "sagemaker:DescribeProject", _sm("project/someone-elses"))


def test_definitions_carry_no_pipeline_level_config_the_role_lacks(definitions: list[dict[str, Any]]) -> None:
    """No experiments and trials (the SDK adds PipelineExperimentConfig by default in most regions)."""
    for definition in definitions:
        assert not definition.get("PipelineExperimentConfig")
        assert not definition.get("MlflowConfig")
