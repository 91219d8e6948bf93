"""Incremental ComputeRFM: fold the objects that changed into the per-customer state, then score.

:func:`run_history` is what ``rfm-features --history ... --state ...`` runs:

1. read the current state (:mod:`steps.features.state`) and :func:`~steps.features.history.diff`
   it against the history; a rebuild, a first run, or changed settings (format, column mapping,
   as-of date, encoding, time zone) start from nothing;
2. read each added or replaced object alone with the features core
   (:func:`steps.features.compute.aggregate_sources`) into a *contribution*: its per-customer
   totals (rows, spend, orders, first and last purchase, latest contacts) and its per-reason
   quarantine counts;
3. fold: the new totals are the old totals plus the new contributions, except for the customers
   of removed or replaced objects, whose totals are summed again from the contributions that
   remain (so a first or last purchase that went with its object is recomputed exactly);
4. write contributions, totals and manifest, then swap ``current.json`` (write-then-swap);
5. score every customer from the totals and write ``rfm.parquet``, ``quality.json`` (this run's
   rows, plus ``history`` and ``increment`` blocks) and this run's quarantined rows.

Adding objects reads only their rows plus the old totals (one row per customer). The one
assumption: **an order's lines arrive in one object** (for formats without an order id, a
customer's purchases of one day arrive in one object). Frequency is summed over objects and exact
duplicate rows are found within an object. A rebuild reads every object and reports orders that
span objects (``increment.orders_spanning_objects``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb

from steps import columns as c
from steps.errors import EmptyInputError, InputDataError, first_line
from steps.features.aggregate import CUSTOMER_ROWS, CUSTOMER_TOTALS, contact_columns, customer_rows_columns
from steps.features.compute import (
    FeatureResult,
    aggregate_sources,
    as_of_warnings,
    check_outputs,
    connect,
    plan_sources,
    score_customers,
    set_memory_limit,
    today_in,
    write_features,
)
from steps.features.formats import InputFormat
from steps.features.history import HistoryObject, Increment, diff, fetch, fingerprint, list_history
from steps.features.options import FeatureOptions
from steps.features.parsing import literal
from steps.features.quality import quality_report
from steps.features.quarantine import FLAGGED_CUSTOMERS, INPUT_FILES, REJECTED_LINES
from steps.features.sources import sniff
from steps.features.state import (
    CURRENT,
    OBJECTS,
    TOTALS,
    Current,
    Manifest,
    StateError,
    StateStore,
    history_file,
    pointer_text,
    read_current,
)
from steps.features.transactions import (
    CUST,
    ORDER,
    REASON,
    ROW_HASH,
    ROW_REASONS,
    canonical_select,
)

log = logging.getLogger("rfm.features")
# In a manifest entry, without AsOfDate: the first day of the rows held back as dated after "today".
# Once "today" reaches it, a run reads the object again (a rebuild would count those rows).
DATED_FROM = "future_rows_from"
_FUTURE_REASON = ROW_REASONS.index("date_after_as_of") + 1
# One object at a time plus the totals (one row per customer): DuckDB spills past this.
INCREMENTAL_MEMORY_LIMIT = "1GB"

ALL_CONTACTS = list(c.CONTACT_COLUMNS)
# A contribution's and the totals' columns as the state stores them: customer_rows' columns, amounts as BIGINT
# (Parquet has no 128-bit integer; ten-thousandths of a currency unit fit in 64 bits).
_STORED = [(name, "BIGINT" if kind == "HUGEINT" else kind) for name, kind in customer_rows_columns(ALL_CONTACTS)]
_COLUMNS = ", ".join(f"CAST({name} AS {kind}) AS {name}" for name, kind in _STORED)
# How two of them add up (per reason and customer).
_MERGE = ", ".join(
    [REASON, CUST]
    + [f"CAST(sum({name}) AS BIGINT) AS {name}" if how == "sum" else f"{how}({name}) AS {name}"
       for name, _, how in CUSTOMER_TOTALS]
    + [f"max({name}) AS {name}" for name in contact_columns(ALL_CONTACTS)]
)
_EMPTY = "SELECT " + ", ".join(f"CAST(NULL AS {kind}) AS {name}" for name, kind in _STORED) + " WHERE false"


@dataclass
class FoldResult:
    """What :func:`run_history` did: the features written, the increment, the generation now current."""

    result: FeatureResult
    increment: Increment
    generation: str
    rebuilt: bool


@dataclass
class ObjectRead:
    """One object read this run."""

    obj: HistoryObject
    entry: dict
    tables: list[str]
    fmt: InputFormat | None


def incremental_memory_limit(options: FeatureOptions) -> str:
    """DuckDB's memory limit for an incremental run: the one set, else :data:`INCREMENTAL_MEMORY_LIMIT`."""
    return INCREMENTAL_MEMORY_LIMIT if options.automatic_memory else str(options.memory_limit)


def plan_history(location: str, store: StateStore, today: dt.date | None = None) -> dict:
    """List the history at ``location`` and record it as ``histories/<fingerprint>.json`` in the state.

    The fingerprint keys ComputeRFM's cache. It names the objects; and on the days rows the state
    held back (dated after the day they were folded, see :data:`DATED_FROM`) may count, it also
    names ``today`` (UTC), so an unchanged history is computed again then instead of reusing a
    cached result that still leaves them out.

    Returns
    -------
    dict
        ``fingerprint``, ``objects_fingerprint`` (of the objects alone: what the trigger compares
        with the prefix), ``objects`` (how many), ``bytes``, ``history`` (the file's name in the
        state) and ``held_back_due`` (the first such day, when it has come): what the PlanHistory
        step writes as ``plan.json``.
    """
    objects = list_history(location)
    printed = of_objects = fingerprint(objects)
    today = today or dt.datetime.now(dt.UTC).date()
    due = held_back_due(store, today)
    if due:
        printed = hashlib.sha256(f"{of_objects}:{today.isoformat()}".encode()).hexdigest()[:16]
    name = history_file(printed)
    store.write_text(name, json.dumps({"location": location, "fingerprint": printed,
                                       "objects": [o.to_dict() for o in objects]}, indent=1) + "\n")
    plan = {"fingerprint": printed, "objects_fingerprint": of_objects, "objects": len(objects),
            "bytes": sum(o.size for o in objects), "history": name, "location": location}
    return {**plan, "held_back_due": due} if due else plan


def held_back_due(store: StateStore, today: dt.date) -> str | None:
    """The first day rows held back in the current state may count, when it is at most ``today`` + 1
    (a business time zone may be a day ahead of UTC); None otherwise, or when the state cannot be read
    (ComputeRFM then says why)."""
    try:
        manifest = read_current(store, check_files=False).manifest
    except StateError:
        return None
    if manifest is None:
        return None
    days = sorted(o[DATED_FROM] for o in manifest.objects.values() if o.get(DATED_FROM))
    horizon = (today + dt.timedelta(days=1)).isoformat()
    return days[0] if days and days[0] <= horizon else None


def load_history(store: StateStore, fingerprint: str) -> tuple[str, list[HistoryObject]]:
    """The history PlanHistory recorded: (location, objects)."""
    name = history_file(fingerprint)
    found = store.read_text(name)
    if found is None:
        raise StateError(f"no history {fingerprint} in the state", store.uri(name),
                         "PlanHistory writes it: run the whole pipeline, not ComputeRFM alone")
    try:
        data = json.loads(found[0])
        return data["location"], [HistoryObject(**o) for o in data["objects"]]
    except (ValueError, TypeError, KeyError) as error:
        raise StateError(f"the recorded history {fingerprint} cannot be read ({first_line(error)})",
                         store.uri(name), "Re-run the whole pipeline: PlanHistory records it again") from None


def run_history(
    objects: list[HistoryObject],
    store: StateStore,
    output: Path,
    options: FeatureOptions | None = None,
    *,
    location: str = "",
    rebuild: bool = False,
    history_name: str | None = None,
    reader: ObjectReader | None = None,
) -> FoldResult:
    """Fold ``objects`` (the whole history) into the state at ``store``; write the features to ``output``.

    ``options`` are the run's settings, as for a one-pass run (:func:`steps.features.compute.run`); its
    memory limit applies to each object's read and to the fold (see :func:`incremental_memory_limit`).
    ``reader`` reads the objects that changed into contributions (default: one after another here;
    the Spark engine passes its own, see ``steps.features.spark.contributions``).

    Raises
    ------
    InputDataError
        The history is empty, an object cannot be read (named; the state is unchanged and the
        next run tries it again), or objects have different formats.
    StateError
        The state is corrupt or missing files (run with Rebuild), or another run changed it.
    """
    options = options or FeatureOptions()
    check_outputs(output, options.transform_output, options.quarantine_output)  # before the work, not after it
    as_of, timezone = options.as_of, options.timezone
    settings = options.state_settings()
    current = Current(None, None) if rebuild else read_current(store)
    rebuilt = rebuild or current.manifest is None
    base = current.manifest
    if base is not None and base.settings != settings:
        log.info("the settings changed (%s -> %s): rebuilding the state from the whole history",
                 base.settings, settings)
        base, rebuilt = None, True
    if rebuild:  # swap whatever is current, readable or not
        found = store.read_text(CURRENT)
        current = Current(None, found[1] if found else None)
    if not objects:
        raise InputDataError("no transaction files in the history", location or store.location,
                             "Upload CSV, CSV.gz or Parquet files under the input prefix")
    increment = diff(objects, base.folded() if base else {})
    cutoff = as_of or today_in(timezone)
    if base is not None and as_of is None:  # "today" moved on: rows it held back may count now
        increment = increment.redate({o.key for o in increment.unchanged
                                      if base.objects[o.key].get(DATED_FROM, "9999") <= cutoff.isoformat()})
    with tempfile.TemporaryDirectory(prefix="rfm-history-") as workdir:
        work = Path(workdir)
        con = connect(str(work / "spill"), options.threads)
        set_memory_limit(con, incremental_memory_limit(options))
        reader = reader or ObjectReader()
        reads = _read_objects(con, increment.to_read, work, store, base, options, cutoff, spanning=rebuilt,
                              reader=reader)
        manifest = _next_manifest(base, increment, reads, settings, history_name)
        if all(o.get("skipped") for o in manifest.objects.values()):
            key, entry = next(iter(manifest.objects.items()))
            raise InputDataError(f"none of the {len(manifest.objects)} objects has data rows ({entry['skipped']})",
                                 key if len(manifest.objects) == 1 else location or store.location,
                                 "Export the transactions again")
        totals_name = manifest.totals
        changed = base is None or manifest.generation != base.generation
        if changed:
            _fold_totals(con, store, base, increment, reads, work / "totals.parquet")
            store.write_file(totals_name, work / "totals.parquet")
            store.write_text(manifest.path, manifest.to_json())
            totals_local = work / "totals.parquet"  # just written: no need to fetch it back
        else:
            totals_local = store.download(totals_name, work / "current-totals.parquet")
        result = _finish(con, manifest, reads, increment, totals_local, as_of, rebuilt, work, timezone, reader)
        write_features(result, output, options.transform_output, options.quarantine_output)
        if changed:  # last: an interrupted or failed run never becomes current
            store.swap_current(pointer_text(manifest), current.etag)
            log.info("state %s is current (%d objects)", manifest.generation, len(manifest.objects))
    return FoldResult(result, increment, manifest.generation, rebuilt)


@dataclass(frozen=True)
class ObjectJob:
    """What reading one object into its contribution needs (pickled to a Spark task as it is).

    ``options`` are the run's (format, mapping, encoding, time zone, as-of date); ``recorded`` is the
    history's format when known: an object of another format stops the run before it is aggregated.
    """

    obj: HistoryObject
    file_no: int
    options: FeatureOptions
    cutoff: dt.date
    spanning: bool
    recorded: str | None = None

    @property
    def dated_by_today(self) -> bool:
        """Without an as-of date, "today" holds back later rows: the object may need reading again."""
        return self.options.as_of is None


class ObjectReader:
    """How a run reads the objects it folds: here one after another, in the run's own DuckDB connection.

    The hook of the Spark engine (``steps.features.spark.contributions``), which reads each object in
    its own Spark task with the same :func:`read_object`; the fold itself is the same for both.
    """

    def read(self, con: duckdb.DuckDBPyConnection, jobs: list[ObjectJob], work: Path) -> Iterator[ObjectRead]:
        """Each object's read, in ``jobs`` order, with its tables in ``con`` (see :func:`read_object`)."""
        recorded = None
        for job in jobs:
            read = read_object(con, dataclasses.replace(job, recorded=job.recorded or recorded), work)
            recorded = recorded or (read.fmt.name if read.fmt else None)
            yield read

    def spanning_orders(self, con: duckdb.DuckDBPyConnection, work: Path) -> int:
        """Orders whose lines are in more than one object, from the files :func:`read_object` wrote."""
        return _spanning_orders(con, work / "orders")


def contribution_name(obj: HistoryObject) -> str:
    """A new contribution file's name in the state (written once, never changed)."""
    return f"{OBJECTS}/{obj.object_id}-{uuid.uuid4().hex[:12]}.parquet"


def read_object(con: duckdb.DuckDBPyConnection, job: ObjectJob, work: Path) -> ObjectRead:
    """Read one object alone with the features core into its contribution.

    Writes ``work/contributions/<file_no>.parquet`` (the entry's ``_local``) and, for a rebuild,
    ``work/orders/<file_no>.parquet``; leaves the object's ``input_files``, ``rejected_lines`` and
    ``flagged_customers`` in ``con``, and its flagged rows in the returned tables. An object without
    data rows is a skipped entry.
    """
    obj, file_no, cutoff = job.obj, job.file_no, job.cutoff
    path = fetch(obj, work / "objects")
    try:
        source = sniff(path, job.options.encoding, obj.key, con, work)
        planned = dataclasses.replace(plan_sources(con, [source], job.options.input_format, job.options.mapping)[0],
                                      file_no=file_no)
    except EmptyInputError as error:
        log.warning("skipping %s: %s", obj.key, error.what)
        entry = {**_identity(obj), "contribution": "", "rows_read": 0, "malformed_lines": 0,
                 "contacts": [], "skipped": error.what}
        return ObjectRead(obj, entry, [], None)
    except InputDataError as error:
        raise InputDataError(error.what, error.where or obj.key,
                             f"{error.fix or 'Fix or remove it'}; the state is unchanged and the next run "
                             "reads it again") from None
    _check_format(obj, planned.fmt.name, job.recorded)
    malformed, tables = aggregate_sources(con, [planned], cutoff=cutoff, contacts=ALL_CONTACTS, where=obj.key,
                                          timezone=job.options.timezone)
    renamed = []
    for table in tables:  # keep them apart; duplicates are judged within an object
        con.execute(f"UPDATE {table} SET {ROW_HASH} = hash({ROW_HASH}, {file_no})")
        con.execute(f"ALTER TABLE {table} RENAME TO obj{file_no}_{table}")
        renamed.append(f"obj{file_no}_{table}")
    local = work / "contributions" / f"{file_no}.parquet"
    local.parent.mkdir(parents=True, exist_ok=True)
    con.execute(f"COPY (SELECT {_COLUMNS} FROM {CUSTOMER_ROWS}) TO {literal(str(local))} (FORMAT parquet)")
    rows, future_from = con.execute(
        f"SELECT coalesce(sum(n_rows), 0), min(coalesce(first_purchase, DATE {literal(cutoff.isoformat())} + 1)) "
        f"FILTER ({REASON} = {_FUTURE_REASON}) FROM {CUSTOMER_ROWS}").fetchall()[0]
    entry = {**_identity(obj), "rows_read": int(rows) + malformed,
             "malformed_lines": malformed, "contacts": [n for n in ALL_CONTACTS if n in planned.fmt.columns],
             "format": {"name": planned.fmt.name, "columns": dict(planned.fmt.columns)}}
    if future_from is not None and job.dated_by_today:  # a held-back return alone: read again tomorrow
        entry[DATED_FROM] = future_from.isoformat()
    if job.spanning:
        orders = work / "orders" / f"{file_no}.parquet"
        orders.parent.mkdir(parents=True, exist_ok=True)
        select = canonical_select(planned, as_of=cutoff, contacts=[], timezone=job.options.timezone)
        con.execute(f"COPY (SELECT DISTINCT {CUST}, {ORDER}, {file_no} AS file_no FROM ({select}) "
                    f"WHERE {REASON} = 0) TO {literal(str(orders))} (FORMAT parquet)")
    return ObjectRead(obj, {**entry, "_local": str(local)}, renamed, planned.fmt)


def _check_format(obj: HistoryObject, name: str, recorded: str | None) -> None:
    if recorded and name != recorded:
        raise InputDataError(f"this object is {name} but the history is {recorded}", obj.key,
                             "Put each format under its own prefix, or pass InputFormat / --format")


def _read_objects(
    con: duckdb.DuckDBPyConnection, objects: list[HistoryObject], work: Path, store: StateStore,
    base: Manifest | None, options: FeatureOptions, cutoff: dt.date, *, spanning: bool, reader: ObjectReader,
) -> list[ObjectRead]:
    """Read each object alone into a contribution (uploaded to the state); keep its flagged rows in ``con``."""
    con.execute("CREATE OR REPLACE TEMP TABLE run_input_files (file_no INTEGER, path VARCHAR, name VARCHAR, "
                "header_lines INTEGER)")
    con.execute("CREATE OR REPLACE TEMP TABLE run_rejected_lines (file_no INTEGER, row_no BIGINT, text VARCHAR, "
                "error VARCHAR, rows_before BIGINT)")
    con.execute(f"CREATE OR REPLACE TEMP TABLE run_flagged ({CUST} VARCHAR, has_duplicates BOOLEAN)")
    recorded = (base.extra.get("format") or {}).get("name") if base else None
    jobs = [ObjectJob(obj, file_no, options, cutoff, spanning, recorded) for file_no, obj in enumerate(objects)]
    reads: list[ObjectRead] = []
    for read in reader.read(con, jobs, work):
        if read.fmt is None:  # skipped: no data rows
            reads.append(read)
            continue
        recorded = recorded or read.fmt.name
        _check_format(read.obj, read.fmt.name, recorded)
        con.execute(f"INSERT INTO run_input_files SELECT * FROM {INPUT_FILES}")
        con.execute(f"INSERT INTO run_flagged SELECT {CUST}, has_duplicates FROM {FLAGGED_CUSTOMERS}")
        con.execute(f"INSERT INTO run_rejected_lines BY NAME SELECT * FROM {REJECTED_LINES}")
        if not read.entry.get("contribution"):  # a Spark task uploads its own
            read.entry["contribution"] = contribution_name(read.obj)
            store.write_file(read.entry["contribution"], Path(read.entry["_local"]))
        reads.append(read)
    return reads


def _identity(obj: HistoryObject) -> dict:
    return {"version_id": obj.version_id, "etag": obj.etag, "size": obj.size}


def _next_manifest(base: Manifest | None, increment: Increment, reads: list[ObjectRead], settings: dict,
                   history_name: str | None) -> Manifest:
    """The manifest after this fold; its generation names its content."""
    objects = {o.key: base.objects[o.key] for o in increment.unchanged} if base else {}
    for read in reads:
        objects[read.obj.key] = {k: v for k, v in read.entry.items() if not k.startswith("_")}
    objects = dict(sorted(objects.items()))
    formats = [r.entry["format"] for r in reads if "format" in r.entry]
    fmt = (base.extra.get("format") if base else None) or (formats[0] if formats else None)
    identity = json.dumps({"settings": settings, "objects": {
        k: [v["version_id"], v["etag"], v["size"], *([v[DATED_FROM]] if DATED_FROM in v else [])]
        for k, v in objects.items()}}, sort_keys=True)
    generation = hashlib.sha256(identity.encode()).hexdigest()[:16]
    if base is not None and generation == base.generation:
        return base
    created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return Manifest(generation, settings, objects, f"{TOTALS}/{generation}-{uuid.uuid4().hex[:8]}.parquet",
                    base.generation if base else None, history_name,
                    extra={"format": fmt, "created": created})


def _fold_totals(con: duckdb.DuckDBPyConnection, store: StateStore, base: Manifest | None, increment: Increment,
                 reads: list[ObjectRead], target: Path) -> None:
    """Write the new totals: old totals + new contributions, affected customers summed again."""
    new = [r.entry["_local"] for r in reads if r.entry.get("_local")]
    parts = [f"SELECT {_COLUMNS} FROM read_parquet({_list(new)})"] if new else []
    if base is not None:
        old_totals = _list(_locals(store, [base.totals], target.parent / "old"))
        gone = [*increment.removed, *(o.key for o in increment.replaced + increment.redated)]
        gone_files = [base.objects[k]["contribution"] for k in gone if base.objects[k]["contribution"]]
        if gone_files:
            gone_local = _locals(store, gone_files, target.parent / "gone")
            kept = [base.objects[o.key]["contribution"] for o in increment.unchanged
                    if base.objects[o.key]["contribution"]]
            con.execute(f"""CREATE OR REPLACE TEMP TABLE affected AS
                SELECT DISTINCT {CUST} FROM read_parquet({_list(gone_local)}) WHERE {REASON} = 0""")
            parts.append(f"SELECT * FROM read_parquet({old_totals}) WHERE {REASON} = 0 "
                         f"AND {CUST} NOT IN (SELECT {CUST} FROM affected)")
            if kept:
                kept_local = _list(_locals(store, kept, target.parent / "kept"))
                parts.append(f"SELECT * FROM read_parquet({kept_local}) WHERE {REASON} > 0 "
                             f"OR {CUST} IN (SELECT {CUST} FROM affected)")
        else:
            parts.append(f"SELECT * FROM read_parquet({old_totals})")
    if not parts:
        parts = [_EMPTY]
    union = " UNION ALL BY NAME ".join(f"({p})" for p in parts)
    con.execute(f"COPY (SELECT {_MERGE} FROM ({union}) GROUP BY {REASON}, {CUST}) "
                f"TO {literal(str(target))} (FORMAT parquet)")


def _locals(store: StateStore, names: list[str], folder: Path) -> list[str]:
    """Local paths of state files (the files themselves for a local state, downloaded once for S3)."""
    return [str(store.download(n, folder / n)) for n in names]


def _list(paths: list[str]) -> str:
    return "[" + ", ".join(literal(p) for p in paths) + "]"


def _finish(con: duckdb.DuckDBPyConnection, manifest: Manifest, reads: list[ObjectRead], increment: Increment,
            totals: Path, as_of: dt.date | None, rebuilt: bool, work: Path, timezone: str | None,
            reader: ObjectReader) -> FeatureResult:
    """Score every customer from the totals; account for this run's rows and the history's."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {CUSTOMER_ROWS} AS SELECT * FROM read_parquet({literal(str(totals))})")
    contacts = [n for n in ALL_CONTACTS if any(n in o.get("contacts", []) for o in manifest.objects.values())]
    recorded = manifest.extra.get("format") or {"name": "unknown", "columns": {}}
    fmt = next((r.fmt for r in reads if r.fmt is not None), None) or InputFormat(recorded["name"],
                                                                                dict(recorded["columns"]))
    con.execute(f"CREATE OR REPLACE TEMP TABLE {INPUT_FILES} AS SELECT * FROM run_input_files")
    con.execute(f"CREATE OR REPLACE TEMP TABLE {REJECTED_LINES} AS SELECT * FROM run_rejected_lines")
    con.execute(f"CREATE OR REPLACE TEMP TABLE {FLAGGED_CUSTOMERS} AS SELECT {CUST}, bool_or(has_duplicates) "
                f"AS has_duplicates FROM run_flagged GROUP BY {CUST}")
    where = f"the history of {len(manifest.objects)} objects"
    warnings = as_of_warnings(con, as_of)  # judged on the whole history, as a one-pass run judges it
    as_of, scored_sql = score_customers(con, as_of, where, contacts)
    skipped_all = {k: o["skipped"] for k, o in manifest.objects.items() if o.get("skipped")}
    history = quality_report(con, files=list(manifest.objects), skipped_files=skipped_all, fmt=fmt, as_of=as_of,
                             malformed_lines=sum(o["malformed_lines"] for o in manifest.objects.values()))
    quality = _run_quality(con, reads, fmt, as_of, warnings, timezone)
    quality["customers"] = history["customers"]
    quality["customers_with_only_returns"] = history["customers_with_only_returns"]
    quality["history"] = {k: history[k] for k in ("rows_read", "rows_used", "rows_quarantined",
                                                  "quarantined_by_reason", "returns_netted")}
    quality["history"]["objects"] = len(manifest.objects)
    quality["history"]["generation"] = manifest.generation
    quality["increment"] = {**increment.counts(), "rows_read": quality["rows_read"], "rebuild": rebuilt}
    if rebuilt:
        quality["increment"]["orders_spanning_objects"] = reader.spanning_orders(con, work)
    tables = [t for r in reads for t in r.tables]
    return FeatureResult(quality, fmt, con, scored_sql, tables, contacts)


def _run_quality(con: duckdb.DuckDBPyConnection, reads: list[ObjectRead], fmt: InputFormat, as_of: dt.date,
                 warnings: list[str], timezone: str | None) -> dict:
    """quality.json's accounting of the rows read in this run; ``return_without_purchase`` is judged on the
    whole history (a return of a customer who bought in an older object is netted, not quarantined)."""
    new = [r.entry["_local"] for r in reads if r.entry.get("_local")]
    source = (f"SELECT {_MERGE} FROM read_parquet({_list(new)}) GROUP BY {REASON}, {CUST}" if new
              else _EMPTY)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE run_rows AS
        SELECT r.* REPLACE (CASE WHEN r.{REASON} = 0 THEN coalesce(t.frequency, 0) ELSE 0 END AS frequency)
        FROM ({source}) r LEFT JOIN {CUSTOMER_ROWS} t ON r.{REASON} = 0 AND t.{REASON} = 0 AND t.{CUST} = r.{CUST}""")
    con.execute(f"ALTER TABLE {CUSTOMER_ROWS} RENAME TO history_rows")
    con.execute(f"ALTER TABLE run_rows RENAME TO {CUSTOMER_ROWS}")
    try:
        return quality_report(
            con, files=[r.obj.key for r in reads], fmt=fmt, as_of=as_of,
            skipped_files={r.obj.key: r.entry["skipped"] for r in reads if r.entry.get("skipped")},
            malformed_lines=sum(r.entry["malformed_lines"] for r in reads), warnings=warnings, timezone=timezone)
    finally:
        con.execute(f"DROP TABLE {CUSTOMER_ROWS}")
        con.execute(f"ALTER TABLE history_rows RENAME TO {CUSTOMER_ROWS}")


def _spanning_orders(con: duckdb.DuckDBPyConnection, folder: Path) -> int:
    """Orders (customer, order) whose lines are in more than one object; logged with an example."""
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return 0
    count, example_customer, example_order = con.execute(f"""
        SELECT count(*), arg_min({CUST}, {CUST}), arg_min({ORDER}, {CUST}) FROM (
            SELECT {CUST}, {ORDER} FROM read_parquet({_list([str(f) for f in files])})
            GROUP BY 1, 2 HAVING count(DISTINCT file_no) > 1)""").fetchall()[0]
    return warn_spanning(int(count), example_customer, example_order)


def warn_spanning(count: int, customer: str | None, order: str | None) -> int:
    """Log ``count`` orders that span objects (with an example), and return the count."""
    if count:
        log.warning("%d orders have lines in more than one object (e.g. customer %s, order %s): the incremental "
                    "state assumes an order's lines arrive in one object; their frequency counts each object's "
                    "part", count, customer, order)
    return count
