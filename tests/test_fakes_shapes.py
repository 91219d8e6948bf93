"""The Pinpoint and Customer Profiles stand-ins, checked against botocore's service models.

The fakes (``lambdas/fakes``) are our reading of the service documentation. This module holds them
to the part of it that is machine-readable, the models botocore ships
(``pinpoint/2016-12-01``, ``customer-profiles/2020-08-15``):

- every operation a fake routes is exercised, first by the export itself and then by direct calls;
- every answer it sends is valid for the operation's output shape (required members present, no
  member the model lacks, types, enums, lengths) and carries the model's status code;
- every request it accepts is valid for the operation's input shape (lengths, patterns, enums, ranges);
- every constrained value of those accepted requests, broken one at a time (too long, too short, off
  pattern, not in the enum, out of range), is refused with a 4xx.

Rules that come from the documentation rather than the model (Pinpoint import file limits, the
Customer Profiles object size) are tested in ``tests/test_fakes.py``; their sources are cited in
the fakes.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import botocore.session
import pytest
from botocore.model import OperationModel, Shape

from lambdas.export.app import Clients, export_segments
from lambdas.export.config import CustomerProfilesSettings, ExportSettings, PinpointSettings
from lambdas.export.retry import RetryPolicy
from lambdas.export.storage import Storage
from lambdas.fakes import CustomerProfilesFake, PinpointFake, StorageS3
from lambdas.fakes._server import ServiceError
from tests.export_support import ROLE_ARN, client, segments_frame, write_inputs

MODELS = {"pinpoint": botocore.session.get_session().get_service_model("pinpoint"),
          "customer-profiles": botocore.session.get_session().get_service_model("customer-profiles")}
FAKES = {"pinpoint": PinpointFake, "customer-profiles": CustomerProfilesFake}


# --------------------------------------------------------------------------- recording the traffic


@dataclass
class Exchange:
    """One request a fake answered, and its answer."""

    service: str
    operation: str
    method: str
    path: str
    query: dict[str, str]
    body: Any
    status: int
    answer: Any


@dataclass
class Traffic:
    exchanges: list[Exchange] = field(default_factory=list)

    def accepted(self) -> list[Exchange]:
        return [e for e in self.exchanges if e.status < 300]


def recording(fake_class: type, traffic: Traffic) -> type:
    """``fake_class``, but every request it routes is recorded with its answer."""

    class Recording(fake_class):
        def _dispatch(self, request: Any) -> tuple[int, Any]:
            operation = self.url_map.bind_to_environ(request.environ).match()[0]
            raw = request.get_data()
            body = json.loads(raw) if raw else None
            record = Exchange(self.service, operation, request.method, request.path, dict(request.args), body, 0, None)
            traffic.exchanges.append(record)
            try:
                record.status, record.answer = super()._dispatch(request)
            except ServiceError as error:
                record.status, record.answer = error.status, {"error": error.code}
                raise
            return record.status, record.answer

    return Recording


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Traffic, dict[str, str]]]:
    """The export to both fakes, then a direct call of every other routed operation; what they saw."""
    root = tmp_path_factory.mktemp("shapes")
    seen = Traffic()
    storage = Storage(s3_root=root / "s3")
    pinpoint = recording(PinpointFake, seen)(StorageS3(storage), polls_until_done=1)
    profiles = recording(CustomerProfilesFake, seen)()
    urls = {"pinpoint": pinpoint.start(), "customer-profiles": profiles.start()}
    try:
        app_id = pinpoint.create_app("shapes")
        profiles.create_domain("shapes")
        frame = segments_frame(40, clusters=3)
        request = write_inputs(storage, str(root / "run"), frame)
        settings = ExportSettings(
            destinations=("s3", "pinpoint", "customer-profiles"),
            pinpoint=PinpointSettings(application_id=app_id, role_arn=ROLE_ARN, import_prefix="s3://shapes/imports",
                                      poll_seconds=0.01),
            customer_profiles=CustomerProfilesSettings(domain="shapes", concurrency=2),
        )
        clients = Clients(pinpoint=client("pinpoint", urls["pinpoint"]),
                          customer_profiles=client("customer-profiles", urls["customer-profiles"]))
        summary = export_segments(request, storage, settings, clients, RetryPolicy(max_attempts=2))
        assert summary["customers"] == 40
        _direct_calls(clients, app_id, "shapes", settings.customer_profiles.object_type,
                      pinpoint.endpoints(app_id, limit=1)[0]["Id"])
        yield seen, urls
    finally:
        pinpoint.stop()
        profiles.stop()


def _direct_calls(clients: Clients, app_id: str, domain: str, object_type: str, endpoint_id: str) -> None:
    """Every routed operation the export does not make, through boto3 (so the requests are botocore's)."""
    pinpoint, profiles = clients.pinpoint, clients.customer_profiles
    pinpoint.create_app(CreateApplicationRequest={"Name": "second"})
    pinpoint.get_app(ApplicationId=app_id)
    jobs = pinpoint.get_import_jobs(ApplicationId=app_id)["ImportJobsResponse"]["Item"]
    pinpoint.get_import_job(ApplicationId=app_id, JobId=jobs[0]["Id"])
    segments = pinpoint.get_segments(ApplicationId=app_id)["SegmentsResponse"]["Item"]
    segment = pinpoint.get_segment(ApplicationId=app_id, SegmentId=segments[0]["Id"])["SegmentResponse"]
    pinpoint.update_segment(ApplicationId=app_id, SegmentId=segment["Id"], WriteSegmentRequest={
        "Name": segment["Name"] + " (renamed)", "Dimensions": segment["Dimensions"]})
    endpoint = pinpoint.get_endpoint(ApplicationId=app_id, EndpointId=endpoint_id)["EndpointResponse"]
    assert endpoint["Id"] == endpoint_id
    profiles.create_domain(DomainName="second", DefaultExpirationDays=30)
    profiles.get_domain(DomainName=domain)
    profiles.get_profile_object_type(DomainName=domain, ObjectTypeName=object_type)
    profiles.create_profile(DomainName=domain, AccountNumber="direct-1", EmailAddress="a@example.com")
    found = profiles.search_profiles(DomainName=domain, KeyName="_account", Values=["direct-1"], MaxResults=5)
    profiles.update_profile(DomainName=domain, ProfileId=found["Items"][0]["ProfileId"],
                            Attributes={"rfm_segment": ""})  # how a departed customer's attributes are cleared
    definitions = profiles.list_segment_definitions(DomainName=domain, MaxResults=50)["Items"]
    first = profiles.list_segment_definitions(DomainName=domain, MaxResults=2)  # a page with a NextToken
    following = profiles.list_segment_definitions(DomainName=domain, MaxResults=2, NextToken=first["NextToken"])
    assert len(first["Items"]) == len(following["Items"]) == 2 and first["Items"] != following["Items"]
    profiles.get_segment_definition(DomainName=domain, SegmentDefinitionName=definitions[0]["SegmentDefinitionName"])
    profiles.delete_segment_definition(DomainName=domain,
                                       SegmentDefinitionName=definitions[0]["SegmentDefinitionName"])


# --------------------------------------------------------------------------- the shape checker


def problems(shape: Shape, value: Any, where: str, wire: bool = True) -> list[str]:
    """Where ``value`` breaks ``shape``: required members, unknown members, types, enums, lengths, ranges, patterns.

    ``wire``: timestamps as REST-JSON sends them (epoch seconds, or ISO 8601 when the shape says so).
    """
    found: list[str] = []
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, not an object ({shape.name})"]
        # On the wire a body holds the unlocated members by their wire names; parameters hold all by name.
        keys = {name: m.serialization.get("name", name) if wire else name for name, m in shape.members.items()
                if not wire or m.serialization.get("location") is None}
        members = {key: shape.members[name] for name, key in keys.items()}
        for name in shape.required_members:
            if name in keys and value.get(keys[name]) is None:
                found.append(f"{where}.{keys[name]}: required by {shape.name}, missing")
        for key, item in value.items():
            if key not in members:
                found.append(f"{where}.{key}: not a member of {shape.name}")
            elif item is not None:
                found += problems(members[key], item, f"{where}.{key}", wire)
        return found
    if kind == "list":
        if not isinstance(value, list):
            return [f"{where}: {type(value).__name__}, not a list"]
        found += _length(shape, len(value), where)
        for i, item in enumerate(value):
            found += problems(shape.member, item, f"{where}[{i}]", wire)
        return found
    if kind == "map":
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, not a map"]
        found += _length(shape, len(value), where)
        for key, item in value.items():
            found += problems(shape.key, key, f"{where} key {key!r}", wire)
            found += problems(shape.value, item, f"{where}[{key!r}]", wire)
        return found
    if kind == "string":
        if not isinstance(value, str):
            return [f"{where}: {value!r} is not a string"]
        found += _length(shape, len(value), where)
        if shape.enum and value not in shape.enum:
            found.append(f"{where}: {value!r} is not one of {shape.name}'s {len(shape.enum)} values")
        pattern = shape.metadata.get("pattern")
        if pattern and not re.fullmatch(pattern, value):
            found.append(f"{where}: {value!r} does not match {pattern}")
        return found
    if kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            return [f"{where}: {value!r} is not an integer"]
        return _range(shape, value, where)
    if kind in ("double", "float"):
        if not isinstance(value, int | float) or isinstance(value, bool):
            return [f"{where}: {value!r} is not a number"]
        return _range(shape, value, where)
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{where}: {value!r} is not a boolean"]
    if kind == "timestamp":
        iso = shape.serialization.get("timestampFormat") == "iso8601"
        ok = isinstance(value, str) if (iso and wire) else isinstance(value, int | float) and not isinstance(
            value, bool)
        return [] if ok else [f"{where}: {value!r} is not a REST-JSON timestamp"]
    if kind == "blob":
        return [] if isinstance(value, str) else [f"{where}: {value!r} is not base64 text"]
    return [f"{where}: unchecked shape type {kind}"]


def _length(shape: Shape, length: int, where: str) -> list[str]:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and length < low:
        return [f"{where}: length {length} < min {low}"]
    if high is not None and length > high:
        return [f"{where}: length {length} > max {high}"]
    return []


def _range(shape: Shape, value: float, where: str) -> list[str]:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if (low is not None and value < low) or (high is not None and value > high):
        return [f"{where}: {value} outside [{low}, {high}]"]
    return []


def operation(exchange: Exchange) -> OperationModel:
    return MODELS[exchange.service].operation_model(exchange.operation)


def request_params(exchange: Exchange) -> dict[str, Any]:
    """The request as the operation's input members (URI labels, query string, body or payload)."""
    shape = operation(exchange).input_shape
    template = operation(exchange).http["requestUri"].split("?")[0]
    names = re.findall(r"\{([^}]+)\}", template)
    regex = re.escape(template)
    for name in names:
        regex = regex.replace(re.escape("{" + name + "}"), "([^/]+)")
    match = re.fullmatch(regex + "/?", exchange.path)
    assert match, f"{exchange.path} does not match {template}"
    labels = dict(zip(names, match.groups(), strict=True))
    params: dict[str, Any] = {}
    payload = shape.serialization.get("payload")
    for name, member in shape.members.items():
        location, wire_name = member.serialization.get("location"), member.serialization.get("name", name)
        if location == "uri":
            params[name] = labels[wire_name]
        elif location == "querystring" and wire_name in exchange.query:
            text = exchange.query[wire_name]
            params[name] = int(text) if member.type_name == "integer" else text
        elif name == payload and exchange.body is not None:
            params[name] = exchange.body
        elif location is None and payload is None and isinstance(exchange.body, dict) and wire_name in exchange.body:
            params[name] = exchange.body[wire_name]
    return params


def answer_shape(model: OperationModel) -> tuple[Shape | None, str | None]:
    """The shape of the answer's JSON body: the payload member's, or the output structure's."""
    shape = model.output_shape
    if shape is None:
        return None, None
    payload = shape.serialization.get("payload")
    return (shape.members[payload], payload) if payload else (shape, None)


def routed_operations(service: str) -> set[str]:
    return {operation for _, _, operation in FAKES[service].routes}


# --------------------------------------------------------------------------- answers and accepted requests


def test_every_routed_operation_is_exercised_and_exists_in_the_model(traffic) -> None:
    seen, _ = traffic
    for service, model in MODELS.items():
        assert routed_operations(service) <= set(model.operation_names), service
        answered = {e.operation for e in seen.accepted() if e.service == service}
        assert answered == routed_operations(service), f"{service}: {routed_operations(service) - answered} unused"


def test_every_route_is_the_models_method_and_uri(traffic) -> None:
    for service, fake in FAKES.items():
        for path, method, name in fake.routes:
            http = MODELS[service].operation_model(name).http
            template = re.sub(r"\{[^}]+\}", "<>", http["requestUri"].split("?")[0])
            assert (re.sub(r"<[^>]+>", "<>", path), method) == (template, http["method"]), name


def test_every_answer_is_valid_for_the_output_shape(traffic) -> None:
    seen, _ = traffic
    found: list[str] = []
    for exchange in seen.accepted():
        model = operation(exchange)
        expected_status = model.http.get("responseCode", 200)
        if exchange.status != expected_status:
            found.append(f"{exchange.operation}: status {exchange.status}, the model says {expected_status}")
        shape, payload = answer_shape(model)
        if shape is not None:
            found += problems(shape, exchange.answer, f"{exchange.operation}{'.' + payload if payload else ''}")
    assert not sorted(set(found)), "\n".join(sorted(set(found)))


def test_every_accepted_request_is_valid_for_the_input_shape(traffic) -> None:
    seen, _ = traffic
    found: list[str] = []
    for exchange in seen.accepted():
        found += problems(operation(exchange).input_shape, request_params(exchange), exchange.operation, wire=False)
    assert not sorted(set(found)), "\n".join(sorted(set(found)))


# --------------------------------------------------------------------------- broken requests are refused


def breakages(shape: Shape, value: Any, path: tuple[Any, ...] = (), labels: frozenset[str] = frozenset()
              ) -> Iterator[tuple[tuple[Any, ...], str, Any]]:
    """``(path, what, broken value)`` for every constraint on the values in ``value``.

    ``labels``: members sent in the URI path, which are never sent empty (the path would name another resource).
    """
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():
            if name in value:
                yield from breakages(member, value[name], (*path, name), labels)
    elif kind == "list" and isinstance(value, list) and value:
        high = shape.metadata.get("max")
        if high is not None:
            yield path, f"more than {high} items", value + value[:1] * (high + 1 - len(value))
        yield from breakages(shape.member, value[0], (*path, 0), labels)
    elif kind == "map" and isinstance(value, dict) and value:
        key = next(iter(value))
        yield from breakages(shape.value, value[key], (*path, key), labels)
    elif kind == "string" and isinstance(value, str):
        low, high, pattern = shape.metadata.get("min"), shape.metadata.get("max"), shape.metadata.get("pattern")
        if shape.enum:
            yield path, "not in the enum", "NOT_A_" + shape.name.upper()
        if high is not None and high < 300_000:
            yield path, f"longer than {high}", (value or "a") * (high // max(len(value), 1) + 1) + "a"
        if low and path[-1] not in labels:
            yield path, f"shorter than {low}", ""
        if pattern and not re.fullmatch(pattern, "no way!") and (high is None or high >= 7):
            yield path, f"off {pattern}", "no way!"
    elif kind in ("integer", "long", "double", "float") and isinstance(value, int | float):
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        if low is not None:
            yield path, f"below {low}", low - 1
        if high is not None:
            yield path, f"above {high}", high + 1


def _set(params: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(params))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return copy


def send(url: str, exchange: Exchange, params: dict[str, Any]) -> int:
    """Send the operation with ``params`` the way botocore would, without its client-side checks."""
    model = operation(exchange)
    shape = model.input_shape
    uri, query, body = model.http["requestUri"].split("?")[0], {}, {}
    payload = shape.serialization.get("payload")
    for name, member in shape.members.items():
        location, wire_name = member.serialization.get("location"), member.serialization.get("name", name)
        if name not in params:
            continue
        if location == "uri":
            uri = uri.replace("{" + wire_name + "}", urllib.parse.quote(str(params[name]), safe=""))
        elif location == "querystring":
            query[wire_name] = params[name]
        elif name == payload:
            body = params[name]
        elif location is None:
            body[wire_name] = params[name]
    full = url + uri + ("?" + urllib.parse.urlencode(query) if query else "")
    data = json.dumps(body).encode() if body or exchange.body is not None else None
    request = urllib.request.Request(full, data=data, method=exchange.method, headers={
        "Authorization": "AWS4-HMAC-SHA256 Credential=testing", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def constrained(shape: Shape, depth: int = 0) -> bool:
    """Whether the model puts a length, range, pattern or enum on anything in ``shape``."""
    if depth > 6:
        return False
    if shape.metadata.get("min") or shape.metadata.get("max") or shape.metadata.get("pattern") or getattr(
            shape, "enum", None):
        return True
    inner = {"structure": lambda: list(shape.members.values()), "list": lambda: [shape.member],
             "map": lambda: [shape.value]}.get(shape.type_name, list)()
    return any(constrained(member, depth + 1) for member in inner)


def constrained_operations() -> list[tuple[str, str]]:
    """(service, operation) of every routed operation whose input the model constrains."""
    return [(service, name) for service, model in MODELS.items() for name in sorted(routed_operations(service))
            if constrained(model.operation_model(name).input_shape)]


@pytest.mark.parametrize(("service", "name"), constrained_operations())
def test_each_broken_constraint_is_refused(traffic, service: str, name: str) -> None:
    seen, urls = traffic
    exchanges = [e for e in seen.accepted() if e.service == service and e.operation == name]
    model = MODELS[service].operation_model(name)
    labels = frozenset(n for n, m in model.input_shape.members.items() if m.serialization.get("location") == "uri")
    accepted_breaks: list[str] = []
    tried = 0
    checked: set[tuple[Any, ...]] = set()
    for exchange in exchanges:
        params = request_params(exchange)
        for path, what, broken in breakages(model.input_shape, params, labels=labels):
            key = (tuple(p if isinstance(p, str) else 0 for p in path), what)
            if key in checked:
                continue
            checked.add(key)
            tried += 1
            status = send(urls[service], exchange, _set(params, path, broken))
            if status < 400 or status >= 500:
                accepted_breaks.append(f"{'.'.join(map(str, path))} {what}: answered {status}")
    assert tried, f"no request to {name} held a value the model constrains: send one in the traffic fixture"
    assert not accepted_breaks, f"{name} accepted:\n" + "\n".join(accepted_breaks)


def test_broken_values_are_really_broken() -> None:
    """The checker finds each kind of breakage it sends (so an empty problem list means something)."""
    model = MODELS["customer-profiles"].operation_model("SearchProfiles").input_shape
    params = {"DomainName": "d", "KeyName": "_account", "Values": ["x"], "MaxResults": 5, "LogicalOperator": "AND"}
    assert problems(model, params, "in", wire=False) == []
    for path, what, broken in breakages(model, params):
        assert problems(model, _set(params, path, broken), "in", wire=False), (path, what)
    assert problems(model, {"DomainName": "d"}, "in", wire=False)  # required members
    assert problems(model, {**params, "Colour": "red"}, "in", wire=False)  # unknown members

