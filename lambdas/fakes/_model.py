"""Request checks from botocore's service model: what the service refuses before it looks at anything else.

The model says, for every input member, whether it is required and its length, range, pattern and
allowed values; the service answers a request that breaks one with a 400 validation error. The
fakes check every request they route against it (``FakeService.model_name``), so a caller that
sends what the real service would refuse fails here too.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from typing import Any

import botocore.session
from botocore.model import OperationModel, Shape


@functools.cache
def operation_model(service: str, operation: str) -> OperationModel:
    """The botocore model of ``service``'s ``operation`` (loaded once per process)."""
    return botocore.session.get_session().get_service_model(service).operation_model(operation)


def request_params(model: OperationModel, raw_path: str, query: Any, body: Any) -> dict[str, Any]:
    """A REST-JSON request as the operation's input members (URI labels, query string, body or payload).

    ``raw_path`` is the path as sent (percent-encoded), so that a label may hold an encoded ``/``.
    """
    shape = model.input_shape
    if shape is None:
        return {}
    parts = re.split(r"\{([^}]+)\}", model.http["requestUri"].split("?")[0])  # literal, label, literal, ...
    pattern = "".join("([^/]+)" if i % 2 else re.escape(part) for i, part in enumerate(parts))
    match = re.fullmatch(pattern + "/?", raw_path)
    labels = [label.rstrip("+") for label in parts[1::2]]
    values = dict(zip(labels, (urllib.parse.unquote(v) for v in match.groups()), strict=True)) if match else {}
    payload = shape.serialization.get("payload")
    params: dict[str, Any] = {}
    for name, member in shape.members.items():
        location, wire_name = member.serialization.get("location"), member.serialization.get("name", name)
        if location == "uri" and wire_name in values:
            params[name] = values[wire_name]
        elif location == "querystring" and wire_name in query:
            text = query.get(wire_name)
            params[name] = _number(text) if member.type_name in ("integer", "long") else text
        elif name == payload and body:
            params[name] = body
        elif location is None and payload is None and isinstance(body, dict) and wire_name in body:
            params[name] = body[wire_name]
    return params


def _number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return text


def first_violation(shape: Shape | None, value: Any, where: str = "") -> str | None:
    """The first broken constraint of ``value`` (required, length, range, pattern, enum), in the service's words."""
    if shape is None or value is None:
        return None
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        for name in shape.required_members:
            if value.get(name) is None:
                return f"Value null at '{_at(where, name)}' failed to satisfy constraint: Member must not be null"
        for name, member in shape.members.items():
            found = first_violation(member, value.get(name), _at(where, name))
            if found:
                return found
        return None
    if kind in ("list", "map") and isinstance(value, list | dict):
        found = _bounds(shape, len(value), where, "have length")
        items = value.values() if isinstance(value, dict) else value
        inner = shape.value if kind == "map" else shape.member
        return found or next((f for item in items if (f := first_violation(inner, item, where))), None)
    if kind == "string" and isinstance(value, str):
        pattern = shape.metadata.get("pattern")
        if shape.enum and value not in shape.enum:
            return (f"Value '{value[:100]}' at '{where}' failed to satisfy constraint: "
                    f"Member must satisfy enum value set: [{', '.join(shape.enum)}]")
        if pattern and re.fullmatch(pattern, value) is None:
            return (f"Value '{value[:100]}' at '{where}' failed to satisfy constraint: "
                    f"Member must satisfy regular expression pattern: {pattern}")
        return _bounds(shape, len(value), where, "have length")
    if kind in ("integer", "long", "double", "float") and isinstance(value, int | float):
        return _bounds(shape, value, where, "have value", ">=", "<=")
    return None


def _bounds(shape: Shape, size: float, where: str, what: str, low_word: str = "greater than or equal to",
            high_word: str = "less than or equal to") -> str | None:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and size < low:
        return f"Value at '{where}' failed to satisfy constraint: Member must {what} {low_word} {low}"
    if high is not None and size > high:
        return f"Value at '{where}' failed to satisfy constraint: Member must {what} {high_word} {high}"
    return None


def _at(where: str, name: str) -> str:
    member = name[:1].lower() + name[1:]
    return f"{where}.{member}" if where else member
