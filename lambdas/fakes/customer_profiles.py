"""A local stand-in for the Amazon Connect Customer Profiles calls the export makes (moto has none).

It speaks the service's REST-JSON protocol as botocore sends it (paths, methods and error shapes
from botocore's ``customer-profiles/2020-08-15`` model), reached through
``AWS_ENDPOINT_URL_CUSTOMER_PROFILES``. Operations: CreateDomain, GetDomain, PutProfileObjectType,
GetProfileObjectType, PutProfileObject, CreateProfile, UpdateProfile,
SearchProfiles, CreateSegmentDefinition, GetSegmentDefinition, ListSegmentDefinitions,
DeleteSegmentDefinition.

``PutProfileObject`` behaves as the service documents for a mapped object type: the object's
``PROFILE`` keys find the profile (``AllowProfileCreation`` creates one when none matches), the
``Fields`` mappings write ``_profile.*`` values onto it, and a ``UNIQUE`` key makes the object
replace the previous object with the same key. Validation: object types' ``Source``/``Target``
paths, key fields and at most one ``UNIQUE`` key; objects that are JSON objects of at most 256,000
characters with their key fields; attribute values of at most 255 characters; segment definition
names matching ``^[a-zA-Z0-9_-]+$`` (64 characters). ``ListSegmentDefinitions`` pages with
``MaxResults``/``NextToken``. Throttling (429 ``ThrottlingException``), 5xx, per-record failures
(a key value in ``fail_records``; 400 ``BadRequestException`` unless ``record_error`` says
otherwise) and refusals (``deny=[operation]``: 403 ``AccessDeniedException``, as for a role
without that permission) can be injected (see :mod:`lambdas.fakes._server`).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

from lambdas.fakes._server import FakeService, Faults, ServiceError, require

# From botocore's model (customer-profiles/2020-08-15): PutProfileObject's Object is at most 256,000 characters,
# profile attribute values at most 255 (string1To255); the fake's model check enforces the request members too.
MAX_OBJECT = 256_000
MAX_VALUE = 255
PROFILE_FIELDS = frozenset(
    {
        "AccountNumber",
        "AdditionalInformation",
        "PartyType",
        "BusinessName",
        "FirstName",
        "MiddleName",
        "LastName",
        "BirthDate",
        "Gender",
        "PhoneNumber",
        "MobilePhoneNumber",
        "HomePhoneNumber",
        "BusinessPhoneNumber",
        "EmailAddress",
        "PersonalEmailAddress",
        "BusinessEmailAddress",
        "PartyTypeString",
        "GenderString",
        "ProfileType",
    }
)
STANDARD_IDENTIFIERS = frozenset(
    {
        "PROFILE",
        "ASSET",
        "CASE",
        "DEVICE",
        "WEB_ANALYTICS",
        "ORDER",
        "COMMUNICATION_RECORD",
        "AIR_PREFERENCE",
        "HOTEL_PREFERENCE",
        "AIR_BOOKING",
        "AIR_SEGMENT",
        "HOTEL_RESERVATION",
        "HOTEL_STAY_REVENUE",
        "LOYALTY",
        "LOYALTY_TRANSACTION",
        "LOYALTY_PROMOTION",
        "UNIQUE",
        "SECONDARY",
        "LOOKUP_ONLY",
        "NEW_ONLY",
    }
)
# Standard search keys and the profile field each one searches.
STANDARD_KEYS = {"_account": "AccountNumber", "_email": "EmailAddress", "_phone": "PhoneNumber"}
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
LIST_PAGE = 100  # ListSegmentDefinitions' page without MaxResults (the service's default is not documented)
_TYPE_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z_0-9-]{0,254}$")


def _tags(body: dict[str, Any]) -> dict[str, Any]:
    """The ``Tags`` member of an answer: absent without tags (the model's ``TagMap`` has at least one entry)."""
    return {"Tags": body["Tags"]} if body.get("Tags") else {}


class CustomerProfilesFake(FakeService):
    """Customer Profiles domains, object types, profiles and segment definitions, in memory.

    Parameters
    ----------
    faults : Faults, optional
        Faults to start with (``inject`` adds more).
    record_error : (code, status)
        The error an injected per-record failure answers with.
    region, account : str
        For ARNs.
    """

    service = "customer-profiles"
    model_name = "customer-profiles"  # requests are checked against botocore's model of it
    not_found = ("ResourceNotFoundException", 404)
    throttle_error = ("ThrottlingException", 429)
    server_error = ("InternalServerException", 500)
    routes = (
        ("/domains/<domain>", "POST", "CreateDomain"),
        ("/domains/<domain>", "GET", "GetDomain"),
        ("/domains/<domain>/object-types/<object_type>", "PUT", "PutProfileObjectType"),
        ("/domains/<domain>/object-types/<object_type>", "GET", "GetProfileObjectType"),
        ("/domains/<domain>/profiles/objects", "PUT", "PutProfileObject"),
        ("/domains/<domain>/profiles", "POST", "CreateProfile"),
        ("/domains/<domain>/profiles", "PUT", "UpdateProfile"),
        ("/domains/<domain>/profiles/search", "POST", "SearchProfiles"),
        ("/domains/<domain>/segment-definitions", "GET", "ListSegmentDefinitions"),
        ("/domains/<domain>/segment-definitions/<name>", "POST", "CreateSegmentDefinition"),
        ("/domains/<domain>/segment-definitions/<name>", "GET", "GetSegmentDefinition"),
        ("/domains/<domain>/segment-definitions/<name>", "DELETE", "DeleteSegmentDefinition"),
    )

    def __init__(
        self,
        *,
        faults: Faults | None = None,
        record_error: tuple[str, int] = ("BadRequestException", 400),
        region: str = "us-east-1",
        account: str = "123456789012",
    ) -> None:
        super().__init__(faults)
        self.record_error = record_error
        self.region = region
        self.account = account
        self.domains: dict[str, dict[str, Any]] = {}
        self.object_types: dict[str, dict[str, dict[str, Any]]] = {}
        self.profiles: dict[str, dict[str, dict[str, Any]]] = {}
        self.index: dict[str, dict[tuple[str, str], str]] = {}  # (key name, value) -> profile id
        self.objects: dict[str, dict[str, dict[str, str]]] = {}  # type -> unique key -> object JSON
        self.definitions: dict[str, dict[str, dict[str, Any]]] = {}
        self.profiles_changed = 0  # profiles created or changed by PutProfileObject / Create / Update

    # -- domains -------------------------------------------------------------------------------
    def create_domain(self, name: str, expiration_days: int = 366) -> None:
        """Create a domain directly (no HTTP)."""
        self.op_CreateDomain({"DefaultExpirationDays": expiration_days}, {}, name)

    def op_CreateDomain(self, body: dict[str, Any], query: Any, domain: str) -> tuple[int, Any]:
        require(bool(_NAME.match(domain)), f"invalid domain name {domain!r}")
        require(isinstance(body.get("DefaultExpirationDays"), int), "DefaultExpirationDays is required")
        with self.lock:
            require(domain not in self.domains, f"domain {domain} already exists")
            now = time.time()
            self.domains[domain] = {
                "DomainName": domain,
                "DefaultExpirationDays": body["DefaultExpirationDays"],
                "CreatedAt": now,
                "LastUpdatedAt": now,
                **_tags(body),
            }
            for store in (self.object_types, self.profiles, self.index, self.objects, self.definitions):
                store[domain] = {}
        return 200, self.domains[domain]

    def _domain(self, domain: str) -> dict[str, Any]:
        require(domain in self.domains, f"Domain {domain} not found", self.not_found)
        return self.domains[domain]

    def op_GetDomain(self, body: Any, query: Any, domain: str) -> tuple[int, Any]:
        found = self._domain(domain)
        with self.lock:
            stats = {
                "ProfileCount": len(self.profiles[domain]),
                "ObjectCount": sum(len(objects) for objects in self.objects[domain].values()),
            }
        return 200, {**found, "Stats": stats}

    # -- object types --------------------------------------------------------------------------
    def op_PutProfileObjectType(
        self, body: dict[str, Any], query: Any, domain: str, object_type: str
    ) -> tuple[int, Any]:
        self._domain(domain)
        require(bool(_TYPE_NAME.match(object_type)), f"invalid object type name {object_type!r}")
        require(bool(body.get("Description")), "Description is required")
        fields = body.get("Fields") or {}
        for name, mapping in fields.items():
            source, target = mapping.get("Source", ""), mapping.get("Target", "")
            require(source.startswith("_source."), f"Fields.{name}.Source must start with _source.")
            profile_field = target.removeprefix("_profile.")
            require(
                target.startswith("_profile.")
                and (
                    profile_field in PROFILE_FIELDS
                    or re.match(r"^Attributes\.[^.]{1,255}$", profile_field) is not None
                ),
                f"Fields.{name}.Target {target!r} is not a profile field",
            )
        unique = 0
        for key_name, keys in (body.get("Keys") or {}).items():
            for key in keys:
                identifiers = set(key.get("StandardIdentifiers", []))
                require(identifiers <= STANDARD_IDENTIFIERS, f"Keys.{key_name}: unknown standard identifier")
                require(
                    all(f in fields for f in key.get("FieldNames", [])), f"Keys.{key_name}: unknown field"
                )
                unique += "UNIQUE" in identifiers
        require(unique <= 1, "an object type can have only one UNIQUE key")
        with self.lock:
            now = time.time()
            created = self.object_types[domain].get(object_type, {}).get("CreatedAt", now)
            definition = {
                **{k: v for k, v in body.items() if k != "Tags"},
                "ObjectTypeName": object_type,
                "CreatedAt": created,
                "LastUpdatedAt": now,
                **_tags(body),
            }
            self.object_types[domain][object_type] = definition
            self.objects[domain].setdefault(object_type, {})
        return 200, definition

    def _object_type(self, domain: str, object_type: str) -> dict[str, Any]:
        self._domain(domain)
        require(
            object_type in self.object_types[domain], f"Object type {object_type} not found", self.not_found
        )
        return self.object_types[domain][object_type]

    def op_GetProfileObjectType(
        self, body: Any, query: Any, domain: str, object_type: str
    ) -> tuple[int, Any]:
        return 200, self._object_type(domain, object_type)

    # -- profile objects -----------------------------------------------------------------------
    def op_PutProfileObject(self, body: dict[str, Any], query: Any, domain: str) -> tuple[int, Any]:
        definition = self._object_type(domain, str(body.get("ObjectTypeName", "")))
        text = body.get("Object")
        require(
            isinstance(text, str) and 0 < len(text) <= MAX_OBJECT,
            f"Object must be 1..{MAX_OBJECT} characters",
        )
        try:
            source = json.loads(text)
        except json.JSONDecodeError:
            raise ServiceError(*self.bad_request, "Object is not valid JSON") from None
        require(isinstance(source, dict), "Object must be a JSON object")
        fields = definition.get("Fields") or {}
        key_values: list[tuple[str, set[str], str]] = []
        for key_name, keys in (definition.get("Keys") or {}).items():
            for key in keys:
                values = [source.get(fields[f]["Source"].removeprefix("_source.")) for f in key["FieldNames"]]
                require(
                    all(v not in (None, "") for v in values), f"Object lacks the key fields of {key_name}"
                )
                key_values.append(
                    (key_name, set(key.get("StandardIdentifiers", [])), "_".join(map(str, values)))
                )
        if self.record_fails(*(value for _, _, value in key_values)):
            raise ServiceError(*self.record_error, "Injected per-record failure")
        updates: dict[str, str] = {}
        for mapping in fields.values():
            value = source.get(mapping["Source"].removeprefix("_source."))
            if value is None:
                continue
            value = str(value)
            require(0 < len(value) <= MAX_VALUE, f"{mapping['Target']} must be 1..{MAX_VALUE} characters")
            updates[mapping["Target"].removeprefix("_profile.")] = value
        with self.lock:
            profile_id = next(
                (
                    self.index[domain][(name, value)]
                    for name, identifiers, value in key_values
                    if identifiers & {"PROFILE", "LOOKUP_ONLY", "SECONDARY"}
                    and (name, value) in self.index[domain]
                ),
                None,
            )
            if profile_id is None:
                require(bool(definition.get("AllowProfileCreation")), "No profile matches the object's keys")
                profile_id = uuid.uuid4().hex
                self.profiles[domain][profile_id] = {"ProfileId": profile_id, "Attributes": {}}
                self.profiles_changed += 1
                changed = False
            else:
                changed = True
            profile = self.profiles[domain][profile_id]
            before = json.dumps(profile, sort_keys=True)
            self._apply(profile, updates)
            self.profiles_changed += changed and json.dumps(profile, sort_keys=True) != before
            for name, identifiers, value in key_values:
                if "PROFILE" in identifiers and "LOOKUP_ONLY" not in identifiers:
                    self.index[domain][(name, value)] = profile_id
            self._index_standard_keys(domain, profile)
            unique = next((value for _, identifiers, value in key_values if "UNIQUE" in identifiers), None)
            unique = unique or uuid.uuid4().hex
            self.objects[domain][definition["ObjectTypeName"]][unique] = text
        return 200, {"ProfileObjectUniqueKey": uuid.uuid5(uuid.NAMESPACE_URL, unique).hex}

    @staticmethod
    def _apply(profile: dict[str, Any], updates: dict[str, str]) -> None:
        for name, value in updates.items():
            if name.startswith("Attributes."):
                profile["Attributes"][name.removeprefix("Attributes.")] = value
            else:
                profile[name] = value

    def _index_standard_keys(self, domain: str, profile: dict[str, Any]) -> None:
        for key_name, field in STANDARD_KEYS.items():
            if profile.get(field):
                self.index[domain][(key_name, profile[field])] = profile["ProfileId"]
        self.index[domain][("_profileId", profile["ProfileId"])] = profile["ProfileId"]

    # -- profiles ------------------------------------------------------------------------------
    def op_CreateProfile(self, body: dict[str, Any], query: Any, domain: str) -> tuple[int, Any]:
        self._domain(domain)
        unknown = (
            set(body)
            - PROFILE_FIELDS
            - {
                "Attributes",
                "Address",
                "ShippingAddress",
                "MailingAddress",
                "BillingAddress",
                "EngagementPreferences",
            }
        )
        require(not unknown, f"unknown profile fields {sorted(unknown)}")
        with self.lock:
            profile_id = uuid.uuid4().hex
            profile = {"ProfileId": profile_id, "Attributes": {}, **body}
            self.profiles[domain][profile_id] = profile
            self._index_standard_keys(domain, profile)
            self.profiles_changed += 1
        return 200, {"ProfileId": profile_id}

    def op_UpdateProfile(self, body: dict[str, Any], query: Any, domain: str) -> tuple[int, Any]:
        """As the service documents: an empty string removes a value, a missing one keeps it."""
        self._domain(domain)
        profile_id = str(body.get("ProfileId", ""))
        updates = {k: v for k, v in body.items() if k != "ProfileId"}
        unknown = set(updates) - PROFILE_FIELDS - {"Attributes"}
        require(not unknown, f"unknown profile fields {sorted(unknown)}")
        with self.lock:
            profile = self.profiles[domain].get(profile_id)
            if profile is None:
                raise ServiceError(*self.not_found, f"Profile {profile_id} not found")
            before = json.dumps(profile, sort_keys=True)
            for name, value in updates.items():
                target, values = (profile["Attributes"], value) if name == "Attributes" else (profile, {name: value})
                for key, text in values.items():
                    require(isinstance(text, str) and len(text) <= MAX_VALUE,
                            f"{key} must be 0..{MAX_VALUE} characters")
                    if text:
                        target[key] = text
                    else:
                        target.pop(key, None)
            self._index_standard_keys(domain, profile)
            self.profiles_changed += json.dumps(profile, sort_keys=True) != before
        return 200, {"ProfileId": profile_id}

    def op_SearchProfiles(self, body: dict[str, Any], query: Any, domain: str) -> tuple[int, Any]:
        self._domain(domain)
        key_name = str(body.get("KeyName", ""))
        limit = int(query.get("max-results") or 20)
        with self.lock:
            ids = [self.index[domain].get((key_name, str(value))) for value in body.get("Values", [])]
            items = [dict(self.profiles[domain][i]) for i in dict.fromkeys(ids) if i is not None]
        return 200, {"Items": items[:limit]}

    def find_profile(self, domain: str, customer_id: str) -> dict[str, Any] | None:
        """The profile whose ``_account`` key is ``customer_id`` (tests)."""
        with self.lock:
            profile_id = self.index[domain].get(("_account", customer_id))
            return None if profile_id is None else dict(self.profiles[domain][profile_id])

    # -- segment definitions -------------------------------------------------------------------
    def op_CreateSegmentDefinition(
        self, body: dict[str, Any], query: Any, domain: str, name: str
    ) -> tuple[int, Any]:
        self._domain(domain)
        require(bool(_NAME.match(name)), f"invalid segment definition name {name!r}")
        require(bool(body.get("DisplayName")), "DisplayName is required")
        require(bool(body.get("SegmentGroups") or body.get("SegmentSqlQuery")), "SegmentGroups is required")
        for group in (body.get("SegmentGroups") or {}).get("Groups", []):
            for dimension in group.get("Dimensions", []):
                attributes = (dimension.get("ProfileAttributes") or {}).get("Attributes") or {}
                for attribute, condition in attributes.items():
                    require(
                        bool(condition.get("DimensionType")) and bool(condition.get("Values")),
                        f"Attributes.{attribute} needs DimensionType and Values",
                    )
        with self.lock:
            require(name not in self.definitions[domain], f"Segment definition {name} already exists")
            arn = f"arn:aws:profile:{self.region}:{self.account}:domains/{domain}/segment-definitions/{name}"
            definition = {
                **body,
                "SegmentDefinitionName": name,
                "SegmentDefinitionArn": arn,
                "CreatedAt": time.time(),
                "SegmentType": "CLASSIC",
                **_tags(body),
            }
            self.definitions[domain][name] = definition
        return 200, {
            k: definition[k]
            for k in (
                "SegmentDefinitionName",
                "DisplayName",
                "Description",
                "CreatedAt",
                "SegmentDefinitionArn",
                "Tags",
            )
            if k in definition
        }

    def _definition(self, domain: str, name: str) -> dict[str, Any]:
        self._domain(domain)
        require(name in self.definitions[domain], f"Segment definition {name} not found", self.not_found)
        return self.definitions[domain][name]

    def op_GetSegmentDefinition(self, body: Any, query: Any, domain: str, name: str) -> tuple[int, Any]:
        return 200, self._definition(domain, name)

    def op_DeleteSegmentDefinition(self, body: Any, query: Any, domain: str, name: str) -> tuple[int, Any]:
        self._definition(domain, name)
        with self.lock:
            del self.definitions[domain][name]
        return 200, {"Message": f"Segment definition {name} deleted"}

    def op_ListSegmentDefinitions(self, body: Any, query: Any, domain: str) -> tuple[int, Any]:
        """One page of ``max-results`` (default 100) from ``next-token`` (an offset, opaque to callers)."""
        self._domain(domain)
        size = int(query.get("max-results") or LIST_PAGE)
        token = query.get("next-token") or "0"
        require(token.isdigit(), "invalid NextToken")
        start = int(token)
        keys = (
            "SegmentDefinitionName",
            "DisplayName",
            "Description",
            "SegmentDefinitionArn",
            "CreatedAt",
            "Tags",
            "SegmentType",
        )
        with self.lock:
            definitions = list(self.definitions[domain].values())
        page = {"Items": [{k: d[k] for k in keys if k in d} for d in definitions[start:start + size]]}
        if start + size < len(definitions):
            page["NextToken"] = str(start + size)
        return 200, page

    def segment_size(self, domain: str, definition: dict[str, Any]) -> int | None:
        """Profiles a definition selects (INCLUSIVE/EXCLUSIVE custom-attribute dimensions only)."""
        conditions = []
        for group in (definition.get("SegmentGroups") or {}).get("Groups", []):
            for dimension in group.get("Dimensions", []):
                if set(dimension) - {"ProfileAttributes"} or set(dimension["ProfileAttributes"]) - {
                    "Attributes"
                }:
                    return None
                for attribute, condition in dimension["ProfileAttributes"]["Attributes"].items():
                    if condition["DimensionType"] not in ("INCLUSIVE", "EXCLUSIVE"):
                        return None
                    conditions.append((attribute, condition["DimensionType"], set(condition["Values"])))
        if not conditions:
            return None
        with self.lock:
            return sum(
                all(
                    (p["Attributes"].get(a) in values) == (kind == "INCLUSIVE")
                    for a, kind, values in conditions
                )
                for p in self.profiles[domain].values()
            )

    # -- state ---------------------------------------------------------------------------------
    def state(self, profile_limit: int = 1000) -> dict[str, Any]:
        with self.lock:
            domains = list(self.domains)
            return {
                **super().state(),
                "domains": {
                    domain: {
                        "domain": self.domains[domain],
                        "profile_count": len(self.profiles[domain]),
                        "profiles": list(self.profiles[domain].values())[:profile_limit],
                        "object_types": list(self.object_types[domain].values()),
                        "object_counts": {t: len(objects) for t, objects in self.objects[domain].items()},
                        "segment_definitions": [
                            {**d, "ProfileCount": self.segment_size(domain, d)}
                            for d in self.definitions[domain].values()
                        ],
                    }
                    for domain in domains
                },
            }

    def dump(self, folder: str | Path, profile_limit: int = 10_000) -> list[Path]:
        """Write ``profiles.json``, ``segment_definitions.json`` and ``object_types.json`` to ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        domains = self.state(profile_limit)["domains"]
        contents = {
            "profiles.json": {
                "note": f"first {profile_limit} profiles per domain",
                "domains": {
                    d: {"count": v["profile_count"], "profiles": v["profiles"]} for d, v in domains.items()
                },
            },
            "segment_definitions.json": {d: v["segment_definitions"] for d, v in domains.items()},
            "object_types.json": {
                d: {"object_types": v["object_types"], "object_counts": v["object_counts"]}
                for d, v in domains.items()
            },
        }
        written = []
        for name, content in contents.items():
            (folder / name).write_text(json.dumps(content, indent=2, default=str) + "\n")
            written.append(folder / name)
        return written
