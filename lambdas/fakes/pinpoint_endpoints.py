"""The Pinpoint fake's import-file checks and endpoint store, vectorised with Arrow.

A million-endpoint import is checked and stored in seconds, so the fake can stand in for the
service in the export's scale test and in local runs alike.

- :func:`parse_import_file` checks one CSV import file the way the service documents (see
  :mod:`lambdas.fakes.pinpoint`) and returns the valid rows as typed columns plus a failure
  message per bad row;
- :class:`EndpointStore` keeps each project's endpoints in one Arrow table keyed by ``Id``:
  importing an existing ``Id`` updates the values given and keeps the others (an empty cell means
  "not given"), which is why re-importing the same file changes nothing.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from lambdas.fakes._server import ServiceError

# From the docs, not the model (botocore's Pinpoint model has no lengths): custom attribute names of at most
# 50 characters, values of at most 100, "Endpoint quotas" in
# https://docs.aws.amazon.com/pinpoint/latest/developerguide/quotas.html
MAX_NAME = 50
MAX_VALUE = 100
MAX_FAILURE_MESSAGES = 100
CHANNEL_TYPES = (
    "PUSH", "GCM", "APNS", "APNS_SANDBOX", "APNS_VOIP", "APNS_VOIP_SANDBOX", "ADM", "SMS", "VOICE", "EMAIL",
    "BAIDU", "CUSTOM", "IN_APP",
)  # fmt: skip
FIXED_ATTRIBUTES = frozenset({
    "Id", "ChannelType", "Address", "EffectiveDate", "OptOut", "RequestId", "User.UserId",
    "Demographic.AppVersion", "Demographic.Locale", "Demographic.Make", "Demographic.Model",
    "Demographic.ModelVersion", "Demographic.Platform", "Demographic.PlatformVersion", "Demographic.Timezone",
    "Location.City", "Location.Country", "Location.Latitude", "Location.Longitude", "Location.PostalCode",
    "Location.Region",
})  # fmt: skip
CUSTOM_PREFIXES = ("Attributes.", "Metrics.", "User.UserAttributes.")
MULTI_VALUED = ("Attributes.", "User.UserAttributes.")
NUMERIC = ("Location.Latitude", "Location.Longitude")
KEYS = ("Id", "ChannelType", "Address", "User.UserId")
CREATED, MODIFIED = "__created", "__modified"
_NUMBER = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_E164 = r"^\+[1-9][0-9]{1,14}$"


def column_type(name: str) -> pa.DataType:
    """How the store keeps an attribute: lists for custom attributes, floats for metrics, else text."""
    if name.startswith(MULTI_VALUED):
        return pa.list_(pa.string())
    if name.startswith("Metrics.") or name in NUMERIC:
        return pa.float64()
    return pa.string()


def check_header(header: list[str], where: str) -> None:
    """Raise (the job fails) on unsupported, too long or repeated attribute names."""
    seen: set[str] = set()
    for name in header:
        custom = name.startswith(CUSTOM_PREFIXES)
        if not custom and name not in FIXED_ATTRIBUTES:
            raise ServiceError("ImportFailed", 400, f"{where}: unsupported attribute {name!r} in the header")
        if custom and len(name.split(".", 2 if name.startswith("User.") else 1)[-1]) > MAX_NAME:
            raise ServiceError(
                "ImportFailed", 400, f"{where}: attribute name {name!r} is over {MAX_NAME} chars"
            )
        if name in seen and not name.startswith(MULTI_VALUED):
            raise ServiceError("ImportFailed", 400, f"{where}: column {name!r} appears twice")
        seen.add(name)


def _mask(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def _nullify(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)


def _lists(columns: list[pa.ChunkedArray]) -> pa.Array:
    """One list per row of the non-empty values of ``columns`` (repeated headers); null when none."""
    stacked = np.stack([c.to_numpy(zero_copy_only=False) for c in columns], axis=1).astype(object)
    present = stacked != ""
    counts = present.sum(axis=1)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    values = pa.array(stacked[present].tolist(), pa.string())
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(counts == 0))


def parse_import_file(
    data: bytes,
    where: str,
    exists: Callable[[pa.Array], np.ndarray],
    injected: Callable[[list[str], list[str | None]], np.ndarray] | None = None,
) -> tuple[pa.Table, list[str], int, int]:
    """Check one CSV import file.

    Parameters
    ----------
    data : bytes
        The file, UTF-8.
    where : str
        For messages (the S3 URL).
    exists : callable
        Endpoint ids -> bool mask of those already stored (an update needs only the ``Id``).
    injected : callable, optional
        ``(ids, user ids)`` -> bool mask of rows to fail on purpose.

    Returns
    -------
    (pyarrow.Table, list of str, int, int)
        Valid rows (``Id``, ``ChannelType``, ``Address``, ``User.UserId`` and every attribute,
        typed by :func:`column_type`; missing values null), the first failure messages, the
        number of failed rows and of rows processed.
    """
    first_line = data.split(b"\n", 1)[0].decode("utf-8-sig").rstrip("\r")
    if not first_line:
        return pa.table({}), [], 0, 0
    header = next(csv.reader([first_line]))
    check_header(header, where)
    names = [f"c{i}" for i in range(len(header))]
    skipped: list[Any] = []

    def on_invalid(row: Any) -> str:
        skipped.append(row)
        return "skip"

    table = pa_csv.read_csv(
        io.BytesIO(data),
        read_options=pa_csv.ReadOptions(column_names=names, skip_rows=1, block_size=8 << 20),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
        convert_options=pa_csv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()),
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    failures = [
        f"{where} row {row.number or '?'}: expected {row.expected_columns} values, found {row.actual_columns}"
        for row in skipped[:MAX_FAILURE_MESSAGES]
    ]
    rows = table.num_rows
    empty = pa.array([""] * rows, pa.string())
    first = {name: table.column(i) for i, name in reversed(list(enumerate(header)))}
    channel, address, user = (first.get(name, empty) for name in ("ChannelType", "Address", "User.UserId"))
    ids = first["Id"].combine_chunks() if "Id" in first else empty
    no_id = _mask(pc.equal(ids, ""))
    if no_id.any():  # the service assigns ids to new endpoints without one
        filled = np.asarray(ids.to_pylist(), dtype=object)
        filled[no_id] = [uuid.uuid4().hex for _ in range(int(no_id.sum()))]
        ids = pa.array(filled.tolist(), pa.string())

    failed = np.zeros(rows, dtype=bool)
    reasons = np.empty(rows, dtype=object)

    def flag(mask: np.ndarray, reason: str) -> None:
        fresh = mask & ~failed
        reasons[fresh] = reason
        failed[fresh] = True

    for i, name in enumerate(header):
        flag(
            _mask(pc.match_substring_regex(table.column(i), r"[\t\r\n]")),
            f"{name} contains a tab or line break",
        )
    for i, name in enumerate(header):
        column = table.column(i)
        if name.startswith(MULTI_VALUED):
            flag(
                _mask(pc.greater(pc.utf8_length(column), MAX_VALUE)),
                f"{name} is longer than {MAX_VALUE} characters",
            )
        elif column_type(name) == pa.float64():
            bad = pc.and_(pc.not_equal(column, ""), pc.invert(pc.match_substring_regex(column, _NUMBER)))
            flag(_mask(bad), f"{name} is not a number")
    if injected is not None:
        flag(injected(ids.to_pylist(), [value or None for value in user.to_pylist()]), "injected failure")
    missing = _mask(pc.or_(pc.equal(channel, ""), pc.equal(address, "")))
    if missing.any():
        known = np.zeros(rows, dtype=bool)
        known[missing] = exists(ids.filter(pa.array(missing)))
        flag(missing & ~known, "ChannelType and Address are required for a new endpoint")
    given = pc.not_equal(channel, "")
    flag(
        _mask(pc.and_(given, pc.invert(pc.is_in(channel, value_set=pa.array(CHANNEL_TYPES))))),
        "unknown ChannelType",
    )
    phone = pc.is_in(channel, value_set=pa.array(["SMS", "VOICE"]))
    has_address = pc.not_equal(address, "")
    flag(
        _mask(pc.and_(pc.and_(phone, has_address), pc.invert(pc.match_substring_regex(address, _E164)))),
        "the address is not an E.164 phone number",
    )
    flag(
        _mask(
            pc.and_(
                pc.and_(pc.equal(channel, "EMAIL"), has_address), pc.invert(pc.match_substring(address, "@"))
            )
        ),
        "the address is not an email address",
    )
    if "OptOut" in first:
        flag(
            _mask(pc.invert(pc.is_in(first["OptOut"], value_set=pa.array(["", "ALL", "NONE"])))),
            "OptOut must be ALL or NONE",
        )

    for index in np.flatnonzero(failed)[: MAX_FAILURE_MESSAGES - len(failures)]:
        failures.append(f"{where} row {index + 2}: endpoint {ids[int(index)].as_py()}: {reasons[index]}")
    keep = pa.array(~failed)
    columns: dict[str, Any] = {"Id": ids.filter(keep)}
    for name in ("ChannelType", "Address", "User.UserId"):
        columns[name] = _nullify(first.get(name, empty)).filter(keep)
    by_name: dict[str, list[pa.ChunkedArray]] = {}
    for i, name in enumerate(header):
        if name not in KEYS:
            by_name.setdefault(name, []).append(table.column(i).filter(keep))
    for name, values in by_name.items():
        kind = column_type(name)
        if pa.types.is_list(kind):
            columns[name] = _lists(values)
        elif kind == pa.float64():
            columns[name] = pc.cast(_nullify(values[0]), pa.float64())
        else:
            columns[name] = _nullify(values[0])
    return pa.table(columns), failures, int(failed.sum()) + len(skipped), rows + len(skipped)


def _comparable(values: pa.ChunkedArray | pa.Array) -> Any:
    return pc.binary_join(values, "\x1f") if pa.types.is_list(values.type) else values


def _same(left: Any, right: Any) -> np.ndarray:
    left, right = _comparable(left), _comparable(right)
    equal = pc.fill_null(pc.equal(left, right), False)
    return _mask(pc.or_(equal, pc.and_(pc.is_null(left), pc.is_null(right))))


class EndpointStore:
    """Every project's endpoints: one Arrow table per project, ids unique (looked up by hashing)."""

    def __init__(self) -> None:
        self.tables: dict[str, pa.Table] = {}

    def count(self, app: str | None = None) -> int:
        if app is None:
            return sum(table.num_rows for table in self.tables.values())
        return self.tables[app].num_rows if app in self.tables else 0

    def exists(self, app: str, ids: pa.Array) -> np.ndarray:
        if app not in self.tables:
            return np.zeros(len(ids), dtype=bool)
        return _mask(pc.is_in(ids, value_set=self.tables[app]["Id"]))

    @staticmethod
    def _with_columns(table: pa.Table, names: list[str]) -> pa.Table:
        columns = [
            table[name] if name in table.column_names else pa.nulls(table.num_rows, column_type(name))
            for name in names
        ]
        return pa.table(columns, names=names)

    def upsert(self, app: str, rows: pa.Table, now: str) -> int:
        """Insert new ids, update existing ones with the values given; the number created or changed."""
        if rows.num_rows == 0:
            return 0
        if pc.count_distinct(rows["Id"]).as_py() < rows.num_rows:  # an id twice in a file: the later row wins
            last = {value: position for position, value in enumerate(rows["Id"].to_pylist())}
            rows = rows.take(sorted(last.values()))
        stamps = pa.array([now] * rows.num_rows, pa.string())
        rows = rows.append_column(CREATED, stamps).append_column(MODIFIED, stamps)
        existing = self.tables.get(app)
        if existing is None:
            self.tables[app] = rows.combine_chunks()
            return rows.num_rows
        names = existing.column_names + [
            name for name in rows.column_names if name not in existing.column_names
        ]
        existing, rows = self._with_columns(existing, names), self._with_columns(rows, names)
        found = pc.index_in(rows["Id"], value_set=existing["Id"])
        positions = pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        matched = positions >= 0
        old, new = existing.take(pa.array(positions[matched])), rows.filter(pa.array(matched))
        changed = np.zeros(int(matched.sum()), dtype=bool)
        merged: dict[str, Any] = {}
        for name in names:
            if name in (CREATED, MODIFIED):
                continue
            merged[name] = pc.if_else(pc.is_valid(new[name]), new[name], old[name])
            changed |= ~_same(merged[name], old[name])
        merged[CREATED] = old[CREATED]
        merged[MODIFIED] = pc.if_else(pa.array(changed), pa.scalar(now), old[MODIFIED])
        updated = pa.table([merged[name] for name in names], names=names)
        added = rows.filter(pa.array(~matched))
        size = existing.num_rows
        selection = np.arange(size)
        selection[positions[matched]] = size + np.arange(updated.num_rows)
        selection = np.concatenate([selection, size + updated.num_rows + np.arange(added.num_rows)])
        self.tables[app] = (
            pa.concat_tables([existing, updated, added]).take(pa.array(selection)).combine_chunks()
        )
        return int(changed.sum()) + added.num_rows

    def get(self, app: str, endpoint: str) -> dict[str, Any] | None:
        if app not in self.tables:
            return None
        position = pc.index(self.tables[app]["Id"], endpoint).as_py()
        return None if position < 0 else self.tables[app].slice(position, 1).to_pylist()[0]

    def rows(self, app: str, limit: int | None = None) -> list[dict[str, Any]]:
        if app not in self.tables:
            return []
        table = self.tables[app].sort_by("Id")
        return (table if limit is None else table.slice(0, limit)).to_pylist()

    def segment_size(self, app: str, dimensions: dict[str, Any]) -> int | None:
        """Endpoints selected by INCLUSIVE/EXCLUSIVE ``UserAttributes``/``Attributes`` dimensions; None
        for dimensions the fake does not evaluate."""
        if not dimensions or set(dimensions) - {"UserAttributes", "Attributes"}:
            return None
        table = self.tables.get(app)
        if table is None:
            return 0
        selected = np.ones(table.num_rows, dtype=bool)
        for kind, prefix in (("UserAttributes", "User.UserAttributes."), ("Attributes", "Attributes.")):
            for name, dimension in (dimensions.get(kind) or {}).items():
                column = f"{prefix}{name}"
                hit = np.zeros(table.num_rows, dtype=bool)
                if column in table.column_names:
                    values = table[column].combine_chunks()
                    member = _mask(pc.is_in(pc.list_flatten(values), value_set=pa.array(dimension["Values"])))
                    hit[pc.list_parent_indices(values).to_numpy()[member]] = True
                exclusive = dimension.get("AttributeType", "INCLUSIVE") == "EXCLUSIVE"
                selected &= ~hit if exclusive else hit
        return int(selected.sum())
