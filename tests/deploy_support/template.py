"""Load ``template.yaml`` offline: parameters, conditions and intrinsic functions resolved, SAM transformed.

The resolver covers what the template uses (``Ref``, ``Fn::GetAtt``, ``Fn::Sub``, ``Fn::If``,
``Fn::Join``, ``Fn::Select``, conditions with ``Fn::Equals``/``Not``/``And``/``Or``). Physical names and
ARNs of the stack's own resources are made up the way CloudFormation makes them, so that policies can
be evaluated against concrete ARNs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"

ACCOUNT = "123456789012"
REGION = "us-east-1"
PARTITION = "aws"
STACK = "rfm"

# Every optional destination switched on, so that every conditional statement is evaluated.
# The stack in a SageMaker project, with a CloudFormation service role for the build's deploys.
TEST_PARAMETERS = {
    "PinpointApplicationId": "0123456789abcdef0123456789abcdef",
    "CustomerProfilesDomain": "rfm-customers",
    "ExportDestinations": "customer-profiles,s3,pinpoint",
    "SageMakerProjectName": "customer-segments",
    "SageMakerProjectId": "p-abc123def456",
    "CloudFormationRoleArn": f"arn:aws:iam::{ACCOUNT}:role/rfm-cloudformation",
}

PSEUDO = {
    "AWS::AccountId": ACCOUNT,
    "AWS::Region": REGION,
    "AWS::Partition": PARTITION,
    "AWS::StackName": STACK,
    "AWS::URLSuffix": "amazonaws.com",
}


class _NoValue:
    """``AWS::NoValue``: removed from the list or mapping that holds it."""


NO_VALUE = _NoValue()


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """The template as plain dicts and lists, short-form tags (``!Sub``) expanded by cfn-lint's decoder."""
    from cfnlint.decode import decode_str

    template, errors = decode_str(path.read_text())
    if errors:
        raise ValueError(f"{path} does not parse: {errors}")
    return json.loads(json.dumps(template))


def parameter_values(template: Mapping[str, Any], overrides: Mapping[str, str] = TEST_PARAMETERS) -> dict[str, Any]:
    """Defaults of the template's parameters, then ``overrides``; a parameter without either is an error."""
    values = {name: spec["Default"] for name, spec in template["Parameters"].items() if "Default" in spec}
    values.update(overrides)
    missing = sorted(set(template["Parameters"]) - set(values))
    if missing:
        raise ValueError(f"no value for the parameters {missing}")
    return {name: str(value) for name, value in values.items()}


def _physical_name(logical_id: str, props: Mapping[str, Any]) -> str:
    for key in ("BucketName", "FunctionName", "LogGroupName", "RepositoryName", "ModelPackageGroupName",
                "TableName", "RoleName", "QueueName", "LayerName"):
        if isinstance(props.get(key), str):
            return props[key]
    return f"{STACK}-{logical_id}-0ABC1DEF2GHI"


@dataclass
class Resolver:
    """Resolve intrinsic functions of one template for one set of parameter values."""

    template: Mapping[str, Any]
    parameters: Mapping[str, str]
    _conditions: dict[str, bool] = field(default_factory=dict)

    def condition(self, name: str) -> bool:
        """Value of the template condition ``name``."""
        if name not in self._conditions:
            self._conditions[name] = self._evaluate(self.template["Conditions"][name])
        return self._conditions[name]

    def _evaluate(self, expression: Any) -> bool:
        (function, args), = expression.items()
        if function == "Condition":
            return self.condition(args)
        if function == "Fn::Equals":
            left, right = (self.resolve(arg) for arg in args)
            return str(left) == str(right)
        if function == "Fn::Not":
            return not self._evaluate(args[0])
        if function == "Fn::And":
            return all(self._evaluate(arg) for arg in args)
        if function == "Fn::Or":
            return any(self._evaluate(arg) for arg in args)
        raise NotImplementedError(function)

    def exists(self, logical_id: str) -> bool:
        """Whether the resource is created for these parameters (its Condition holds)."""
        condition = self.template["Resources"][logical_id].get("Condition")
        return condition is None or self.condition(condition)

    def ref(self, name: str) -> Any:
        """``Ref`` of a parameter, pseudo parameter or resource."""
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in PSEUDO:
            return PSEUDO[name]
        if name in self.parameters:
            return self.parameters[name]
        resource = self.template["Resources"][name]
        kind = resource["Type"]
        physical = self.physical_name(name)
        if kind == "AWS::SQS::Queue":
            return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{physical}"
        if kind == "AWS::IAM::ManagedPolicy":
            return f"arn:{PARTITION}:iam::{ACCOUNT}:policy/{physical}"
        if kind == "AWS::KMS::Key":
            return "1234abcd-12ab-34cd-56ef-1234567890ab"
        return physical

    def physical_name(self, logical_id: str) -> str:
        """The name CloudFormation gives the resource (its name property, else a generated one)."""
        resource = self.template["Resources"][logical_id]
        props = {key: self.resolve(value) for key, value in resource.get("Properties", {}).items()
                 if key.endswith("Name")}
        return _physical_name(logical_id, props)

    def get_att(self, logical_id: str, attribute: str) -> str:
        """``Fn::GetAtt`` of an ARN attribute."""
        kind = self.template["Resources"][logical_id]["Type"]
        name = self.physical_name(logical_id)
        arns = {
            "AWS::S3::Bucket": f"arn:{PARTITION}:s3:::{name}",
            "AWS::IAM::Role": f"arn:{PARTITION}:iam::{ACCOUNT}:role/{name}",
            "AWS::KMS::Key": f"arn:{PARTITION}:kms:{REGION}:{ACCOUNT}:key/{self.ref(logical_id)}",
            "AWS::DynamoDB::Table": f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/{name}",
            "AWS::SQS::Queue": f"arn:{PARTITION}:sqs:{REGION}:{ACCOUNT}:{name}",
            # CloudFormation's LogGroup.Arn ends in ":*" (the group and its streams).
            "AWS::Logs::LogGroup": f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT}:log-group:{name}:*",
            "AWS::Serverless::Function": f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{name}",
            "AWS::SageMaker::ModelPackageGroup":
                f"arn:{PARTITION}:sagemaker:{REGION}:{ACCOUNT}:model-package-group/{name}",
            "AWS::ECR::Repository": f"arn:{PARTITION}:ecr:{REGION}:{ACCOUNT}:repository/{name}",
        }
        if attribute not in ("Arn", "ModelPackageGroupArn") or kind not in arns:
            raise NotImplementedError(f"Fn::GetAtt {logical_id}.{attribute} ({kind})")
        return arns[kind]

    def _sub(self, text: str, variables: Mapping[str, Any]) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name:
                return self.get_att(*name.split(".", 1))
            return str(self.ref(name))

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    def resolve(self, value: Any) -> Any:
        """``value`` with every intrinsic function replaced by its value."""
        if isinstance(value, list):
            items = [self.resolve(item) for item in value]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, args), = value.items()
            if key == "Ref":
                return self.ref(args)
            if key == "Fn::GetAtt":
                logical_id, attribute = args.split(".", 1) if isinstance(args, str) else args
                return self.get_att(logical_id, attribute)
            if key == "Fn::Sub":
                text, variables = (args, {}) if isinstance(args, str) else args
                return self._sub(text, {k: self.resolve(v) for k, v in variables.items()})
            if key == "Fn::If":
                name, if_true, if_false = args
                return self.resolve(if_true if self.condition(name) else if_false)
            if key == "Fn::Join":
                separator, items = args
                return separator.join(str(item) for item in self.resolve(items))
            if key == "Fn::Select":
                index, items = args
                return self.resolve(items)[int(self.resolve(index))]
            if key.startswith("Fn::"):
                raise NotImplementedError(key)
        items = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in items.items() if item is not NO_VALUE}


def resolved_resources(template: Mapping[str, Any], parameters: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The resources created for ``parameters``, every intrinsic function resolved."""
    resolver = Resolver(template, parameters)
    return {
        logical_id: resolver.resolve(resource)
        for logical_id, resource in template["Resources"].items()
        if resolver.exists(logical_id)
    }


def sam_transform(template: Mapping[str, Any], parameters: Mapping[str, str]) -> dict[str, Any]:
    """The plain CloudFormation template SAM makes of ``template`` (local CodeUri replaced by an S3 URI).

    Runs the AWS SAM translator offline: a boto3 session that only names the region, and no managed
    policy lookups (the template's functions use their own roles, not SAM policy templates).
    """
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    fragment = json.loads(json.dumps(template))
    for resource in fragment["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://deployment-bucket/code.zip"
        if resource["Type"] == "AWS::Serverless::LayerVersion":
            resource["Properties"]["ContentUri"] = "s3://deployment-bucket/layer.zip"
    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name=REGION))
    values = {**parameters, **PSEUDO}
    return translator.translate(fragment, parameter_values=values, get_managed_policy_map=lambda: {})
