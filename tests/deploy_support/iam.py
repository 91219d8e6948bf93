"""IAM statements of the template's roles and policies, and a small evaluator for them.

The evaluator answers "does some Allow statement grant this action on this resource, and no Deny
statement refuse it?" with IAM's wildcard rules (``*`` and ``?``; actions case-insensitive, ARNs
case-sensitive). Conditions are not evaluated: a conditional Allow counts as granted, so the check is
about actions and resources only. Permission boundaries and SCPs are outside the template.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Statement:
    """One policy statement, where it came from, and its actions and resources as lists."""

    source: str
    sid: str
    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    conditional: bool

    def matches(self, action: str, resource: str) -> bool:
        """Whether this statement is about ``action`` on ``resource``."""
        action_hit = any(fnmatch.fnmatchcase(action.lower(), pattern.lower()) for pattern in self.actions)
        return action_hit and any(fnmatch.fnmatchcase(resource, pattern) for pattern in self.resources)


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, list) else (value,)


def statements_of(document: Mapping[str, Any], source: str) -> list[Statement]:
    """The statements of one resolved policy document."""
    return [
        Statement(
            source=source,
            sid=str(statement.get("Sid", "")),
            effect=statement["Effect"],
            actions=_as_tuple(statement.get("Action")),
            resources=_as_tuple(statement.get("Resource", "*")),
            conditional="Condition" in statement,
        )
        for statement in _as_tuple(document.get("Statement"))
    ]


def policy_documents(resources: Mapping[str, Mapping[str, Any]]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every policy document of the resolved template: ``(where, document)``, trust policies included."""
    for logical_id, resource in resources.items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Role":
            yield f"{logical_id} (trust)", props["AssumeRolePolicyDocument"]
            for policy in props.get("Policies", []):
                yield f"{logical_id}/{policy['PolicyName']}", policy["PolicyDocument"]
        elif "PolicyDocument" in props:
            yield logical_id, props["PolicyDocument"]
        elif resource["Type"] == "AWS::KMS::Key":
            yield logical_id, props["KeyPolicy"]


def role_statements(resources: Mapping[str, Mapping[str, Any]], name: str, physical_name: str) -> list[Statement]:
    """Identity statements that apply to the role (or managed policy) with logical id ``name``.

    A role's inline ``Policies``, the ``AWS::IAM::RolePolicy``/``AWS::IAM::Policy`` resources that
    name it (by its ``physical_name``, what ``!Ref`` of the role resolves to) and the stack's
    ``AWS::IAM::ManagedPolicy`` resources in its ``ManagedPolicyArns`` (policies from outside the
    stack are not known here); for an ``AWS::IAM::ManagedPolicy``, its document.
    """
    resource = resources[name]
    props = resource.get("Properties", {})
    if resource["Type"] == "AWS::IAM::ManagedPolicy":
        return statements_of(props["PolicyDocument"], name)
    found = [s for policy in props.get("Policies", [])
             for s in statements_of(policy["PolicyDocument"], f"{name}/{policy['PolicyName']}")]
    attached = set(props.get("ManagedPolicyArns", []))
    for logical_id, other in resources.items():
        if other["Type"] == "AWS::IAM::ManagedPolicy" and any(arn.endswith(f":policy/{physical}")
                                                             for arn in attached
                                                             for physical in (logical_id, _policy_name(logical_id))):
            found += statements_of(other["Properties"]["PolicyDocument"], logical_id)
    for logical_id, other in resources.items():
        other_props = other.get("Properties", {})
        if other["Type"] == "AWS::IAM::RolePolicy" and other_props.get("RoleName") == physical_name:
            found += statements_of(other_props["PolicyDocument"], logical_id)
        if other["Type"] == "AWS::IAM::Policy" and physical_name in other_props.get("Roles", []):
            found += statements_of(other_props["PolicyDocument"], logical_id)
    return found


def _policy_name(logical_id: str) -> str:
    """The physical name tests/deploy_support/template.py gives an unnamed resource."""
    from tests.deploy_support.template import STACK

    return f"{STACK}-{logical_id}-0ABC1DEF2GHI"


def allowed(statements: Iterable[Statement], action: str, resource: str) -> bool:
    """IAM's answer for one request, conditions aside: some Allow matches and no Deny does."""
    statements = list(statements)
    denied = any(s.effect == "Deny" and s.matches(action, resource) for s in statements)
    return not denied and any(s.effect == "Allow" and s.matches(action, resource) for s in statements)


def wildcard_actions(statements: Iterable[Statement]) -> list[str]:
    """``"*"`` or whole-service (``"s3:*"``) actions in Allow statements, as ``where sid: action``.

    Deny statements are left out: a wildcard there takes access away (a TLS-only bucket policy denies
    ``s3:*``), so it is the safe spelling rather than an excess grant.
    """
    return [
        f"{s.source} {s.sid}: {action}"
        for s in statements
        if s.effect == "Allow"
        for action in s.actions
        if action == "*" or action.endswith(":*")
    ]
