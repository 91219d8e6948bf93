"""RFM features: from transaction files to one row per purchasing customer.

The functional core of ``ComputeRFM``. :func:`compute_features` reads the
input files with DuckDB, classifies each row (usable, or the reason it is
quarantined, or excluded as not a purchase), aggregates per customer, and
scores R, F and M from histograms (``steps.features.scoring``). Parquet inputs
are read a second time for the keys of identical rows; a filtered read happens
only when some rows are quarantined or identical (to keep their own columns
and to count the identical rows exactly). :func:`write_features` writes
``rfm.parquet``, ``quality.json``, ``quarantine/`` and the batch-transform
input. Nothing here loads all customers into Python.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import duckdb

from steps import columns as c
from steps import paths
from steps.errors import EmptyInputError, InputDataError, RFMError, first_line
from steps.features.aggregate import (
    CUSTOMER_ROWS,
    aggregate_customers,
    correct_identical_rows,
    find_repeated_keys,
    no_repeated_keys,
)
from steps.features.formats import InputFormat, resolve_format
from steps.features.options import FeatureOptions
from steps.features.parsing import DEFAULT_TEXT_PARSERS, literal, order_date_parsers, quote, slashed_dates
from steps.features.quality import quality_report
from steps.features.quarantine import (
    REJECTED_LINES,
    canonical_rows,
    collect_rejected_lines,
    flag_customers,
    read_flagged_rows,
    register_files,
    write_quarantine,
)
from steps.features.scoring import SCORED_FEATURES, score_cuts_from_counts, score_sql
from steps.features.sources import Source, find_input_files, sniff
from steps.features.transactions import (
    CONTACT_PREFIX,
    CUST,
    REASON,
    ROW_REASONS,
    CanonicalSource,
    canonical_select,
    row_key_select,
)
from steps.features.transform_input import file_rows, write_transform_input
from steps.segments import SCORE_LEVELS, SEGMENT_GRID

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger("rfm.features")

CUSTOMER_FEATURES = "customer_features"
MIN_MEMORY_LIMIT_MB = 800
# An as-of date this many days after the last transaction is worth a warning.
AS_OF_GAP_WARNING_DAYS = 30


@dataclass
class FeatureResult:
    """What :func:`compute_features` found: the features query, the accounting, where rows went.

    The customers stay in DuckDB (``con``); :meth:`features` or
    :func:`write_features` read them out. ``scored_sql`` selects them in the
    order of ``customer_features``, which is sorted by customer id.
    """

    quality: dict
    input_format: InputFormat
    con: duckdb.DuckDBPyConnection
    scored_sql: str
    flagged_tables: list[str] = field(default_factory=list)
    contacts: list[str] = field(default_factory=list)

    @property
    def features_sql(self) -> str:
        """The SELECT of the scored features, sorted by ``customer_id``."""
        return f"{self.scored_sql} ORDER BY {c.CUSTOMER_ID}"

    def features(self) -> pa.Table:
        """The scored features, one row per customer, sorted by ``customer_id``."""
        return self.con.sql(self.features_sql).to_arrow_table()

    def to_pandas(self) -> pd.DataFrame:
        """:meth:`features` as a pandas DataFrame (customer ids stay strings)."""
        return self.features().to_pandas()


class Aggregate(Protocol):
    """An engine's per-customer aggregation of ``planned`` (the hook of :func:`compute_features`).

    Creates ``customer_rows``, ``rejected_lines``, ``flagged_customers`` and the flagged-rows
    tables in ``con`` and returns (malformed lines, flagged-rows tables), as :func:`aggregate_sources`.
    """

    def __call__(self, con: duckdb.DuckDBPyConnection, planned: list[CanonicalSource], *, cutoff: dt.date,
                 contacts: list[str], where: str, timezone: str | None = None) -> tuple[int, list[str]]: ...


def parse_as_of(text: str | None) -> dt.date | None:
    """``YYYY-MM-DD`` -> date; empty -> None (derive from the data)."""
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise InputDataError(
            f"as-of date {text!r} is not YYYY-MM-DD", "--as-of", "Write e.g. 2026-11-01"
        ) from None


def connect(temp_directory: str | None = None, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection in UTC that spills to ``temp_directory`` (past :func:`set_memory_limit`)."""
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.execute("SET enable_progress_bar=false")  # no progress bars in processing logs
    # Results are ordered explicitly where it matters; keeping insertion order costs memory.
    con.execute("SET preserve_insertion_order=false")
    if temp_directory:
        con.execute(f"SET temp_directory={literal(temp_directory)}")
    if threads is not None:
        if threads < 1:
            raise InputDataError(
                f"{threads} is not a number of threads", "--threads", "Give at least 1, or leave it out for all cores"
            )
        con.execute(f"SET threads={int(threads)}")
    return con


def set_memory_limit(con: duckdb.DuckDBPyConnection, memory_limit: str) -> None:
    """Cap DuckDB's memory at ``memory_limit`` (e.g. ``2GB``); past it work spills to disk."""
    try:
        con.execute(f"SET memory_limit={literal(memory_limit)}")
    except duckdb.Error:
        raise InputDataError(
            f"memory limit {memory_limit!r} is not a size", "--memory-limit", "Write e.g. 2GB, or auto"
        ) from None


def auto_memory_limit(sources: list[Source]) -> str:
    """DuckDB's memory limit for these inputs: 30 bytes a row, at least 800MB, at most half the memory.

    Small inputs stay under 1 GB (DuckDB spills the rest to disk); 100 million
    rows get 3 GB, which DuckDB needs to aggregate 10 million customers.
    """
    rows = sum(s.rows for s in sources)
    wanted = max(MIN_MEMORY_LIMIT_MB, rows * 30 // 1_000_000)
    return f"{min(wanted, max(MIN_MEMORY_LIMIT_MB, _memory_mb() // 2))}MB"


def doubled_memory_limit(limit: str) -> str | None:
    """Twice an automatic limit (``NNNMB``), at most half the memory; None once it is there."""
    cap = max(MIN_MEMORY_LIMIT_MB, _memory_mb() // 2)
    current = int(limit.removesuffix("MB"))
    return f"{min(2 * current, cap)}MB" if current < cap else None


def _memory_mb() -> int:
    """Physical memory (or the container's limit, when lower), in MB."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            total = min(total, int(Path(limit_file).read_text().strip()))
        except (OSError, ValueError):
            continue
    return total // 1_000_000


def open_sources(
    location: str, workdir: Path, encoding: str | None = None, con: duckdb.DuckDBPyConnection | None = None
) -> tuple[list[Source], dict[str, str]]:
    """Sniff every input file at ``location`` (with ``con``, or one new connection for them all).

    Returns
    -------
    sources : list of Source
        The files to read.
    skipped : dict
        File -> why it was skipped: inside a folder or prefix, files that are
        not data (``README.txt``, ``_SUCCESS``, ``.crc``) and files without
        data rows (empty, blank, header only) are skipped; a single such file
        is an error.
    """
    files, skipped = find_input_files(location, workdir)
    con = con or duckdb.connect()
    sources: list[Source] = []
    for path, name in files:
        try:
            sources.append(sniff(path, encoding, name, con, workdir))
        except EmptyInputError as error:
            if len(files) == 1:
                raise
            skipped[name] = error.what
            log.warning("skipping %s: %s", name, error.what)
    if not sources:
        raise InputDataError(
            f"none of the {len(files)} input files has data rows", location, "Export the transactions again"
        )
    return sources, skipped


def plan_sources(
    con: duckdb.DuckDBPyConnection, sources: list[Source], input_format: str, mapping: dict[str, str]
) -> list[CanonicalSource]:
    """Resolve each file's format and mapping; all files must have the same format."""
    planned = []
    for number, source in enumerate(sources):
        fmt = resolve_format(source.header, source.first_line, input_format, mapping, source.name)
        planned.append(CanonicalSource(source, fmt, number))
    names = sorted({p.fmt.name for p in planned})
    if len(names) > 1:
        examples = ", ".join(f"{p.source.name.rsplit('/', 1)[-1]} is {p.fmt.name}" for p in planned[:6])
        raise InputDataError(
            f"the input files have different formats ({examples})",
            sources[0].name.rsplit("/", 1)[0],
            "Put each format in its own folder, or pass --format",
        )
    ordered = []
    for src in planned:
        column = src.fmt.columns[c.TIMESTAMP]
        parsers: tuple[str, ...] = ()
        if src.raw_types.get(column, "VARCHAR") == "VARCHAR":
            names = _text_date_parsers(con, src, column)
            parsers = tuple(order_date_parsers(con, src.raw_sql(), quote(column), names))
        ordered.append(CanonicalSource(src.source, src.fmt, src.file_no, parsers))
    return ordered


def _text_date_parsers(con: duckdb.DuckDBPyConnection, src: CanonicalSource, column: str) -> tuple[str, ...]:
    """The text date parsers for one file: slashed dates month first unless the file shows day first."""
    evidence = slashed_dates(con, src.raw_sql(), quote(column))
    if evidence.mixed:
        raise InputDataError(
            f"column {column!r} mixes day-first dates ({evidence.day_first} like {evidence.day_first_example!r}) "
            f"and month-first dates ({evidence.month_first} like {evidence.month_first_example!r})",
            src.source.name,
            "Export the dates as YYYY-MM-DD, or put each date order in its own file",
        )
    if evidence.order != "month_day_year":
        log.info("%s: reading slashed dates day first (e.g. %s)", src.source.name, evidence.day_first_example)
    return tuple(evidence.order if name == "month_day_year" else name for name in DEFAULT_TEXT_PARSERS)


def compute_features(
    sources: list[Source],
    options: FeatureOptions | None = None,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    skipped_files: dict[str, str] | None = None,
    aggregate: Aggregate | None = None,
) -> FeatureResult:
    """Per-customer RFM features and the accounting of every input row.

    Parameters
    ----------
    sources : list of Source
        Input files (see :func:`open_sources`); all must share one format.
    options : FeatureOptions, optional
        ``input_format``, ``mapping``, ``as_of`` and ``timezone`` apply here. Without
        ``as_of`` the reference date is the day after the last used transaction (UTC);
        rows dated after it are quarantined (``date_after_as_of``), and without it rows
        dated after today (UTC) are, so one mistyped year cannot move everyone's recency.
    con : DuckDBPyConnection, optional
        Where to work (see :func:`connect`).
    skipped_files : dict, optional
        File -> why it was skipped (see :func:`open_sources`), for ``quality.json``.
    aggregate : Aggregate, optional
        The engine's per-customer aggregation (default :func:`aggregate_sources`, in DuckDB;
        the Spark engine's is ``steps.features.spark.engine.SparkAggregation``).

    Returns
    -------
    FeatureResult
        Features with ``steps.columns.FEATURE_COLUMNS`` plus the contact
        columns the input has; ``quality`` satisfies
        ``rows_read == rows_used + rows_excluded + rows_quarantined``.

    Raises
    ------
    InputDataError
        The files cannot be read as transactions, or no customer has a usable
        purchase.
    """
    if not sources:
        raise InputDataError("no input files", None, "Give --input a file, folder or S3 prefix")
    options = options or FeatureOptions()
    aggregate = aggregate or aggregate_sources
    con = con or connect()
    planned = plan_sources(con, sources, options.input_format, options.mapping)
    fmt = planned[0].fmt
    contacts = [n for n in c.CONTACT_COLUMNS if any(n in p.fmt.columns for p in planned)]
    cutoff = options.as_of or today_in(options.timezone)
    where = sources[0].name if len(sources) == 1 else f"{len(sources)} files like {sources[0].name}"
    clock = _Clock()
    malformed, tables = aggregate(con, planned, cutoff=cutoff, contacts=contacts, where=where,
                                  timezone=options.timezone)
    clock.lap("aggregated, checked for identical rows and quarantined")
    warnings = as_of_warnings(con, options.as_of)
    as_of, features_sql = score_customers(con, options.as_of, where, contacts)
    quality = quality_report(
        con, files=[s.name for s in sources], skipped_files=skipped_files or {}, fmt=fmt, as_of=as_of,
        malformed_lines=malformed,
        rows_in_files=sum(s.rows for s in sources) if all(s.kind == "parquet" for s in sources) else None,
        warnings=warnings, timezone=options.timezone,
    )
    clock.lap("scored the customers")
    return FeatureResult(quality, fmt, con, features_sql, tables, contacts)


def aggregate_sources(
    con: duckdb.DuckDBPyConnection,
    planned: list[CanonicalSource],
    *,
    cutoff: dt.date,
    contacts: list[str],
    where: str,
    timezone: str | None = None,
) -> tuple[int, list[str]]:
    """Create ``customer_rows`` (exact) and the flagged-rows tables of ``planned``.

    The per-customer aggregation of a set of files, which the incremental
    history (``steps.features.fold``) calls once per object. Identical rows
    are found by reading Parquet inputs a second time (cheap, columnar) or,
    when any input is text, by a distinct count in the aggregation (a text
    file is read once); see ``steps.features.aggregate``.

    Returns
    -------
    malformed : int
        Lines the CSV reader rejected (in ``rejected_lines``).
    tables : list of str
        The flagged-rows tables (see ``steps.features.quarantine.read_flagged_rows``).
    """
    register_files(con, planned)
    columnar = all(p.source.kind == "parquet" for p in planned)
    selects = [
        canonical_select(p, as_of=cutoff, contacts=contacts, store_rejects=True, timezone=timezone) for p in planned
    ]
    try:
        aggregate_customers(con, selects, contacts, count_repeats=not columnar)
        malformed = collect_rejected_lines(con)
        repeated = 0
        if columnar:
            float_ids = con.execute(f"SELECT sum(float_id_rows) > 0 FROM {CUSTOMER_ROWS}").fetchall()[0][0]
            repeated = find_repeated_keys(con, [row_key_select(p, float_ids=bool(float_ids)) for p in planned])
        else:
            no_repeated_keys(con)
        bad_rows, flagged = flag_customers(con, suspects=True)
        log.debug("quarantined %d rows by row reason, %d customers flagged, %d repeated row keys",
                  bad_rows, flagged, repeated)
        tables = []
        if bad_rows or flagged or repeated:
            tables = read_flagged_rows(con, planned, as_of=cutoff, contacts=contacts, timezone=timezone)
            correct_identical_rows(con, canonical_rows(tables))
            flag_customers(con)
    except duckdb.OutOfMemoryException:
        raise  # not a problem of the data: the caller knows the limit
    except duckdb.Error as error:
        raise InputDataError(f"cannot read the transactions: {first_line(error)}", where) from None
    return malformed, tables


def score_customers(
    con: duckdb.DuckDBPyConnection, as_of: dt.date | None, where: str, contacts: list[str]
) -> tuple[dt.date, str]:
    """The as-of date and the SELECT of the scored features, from ``customer_rows``.

    Raises
    ------
    InputDataError
        When no customer has a usable purchase on or before the as-of date.
    """
    as_of = as_of or _derived_as_of(con, where)
    if not _customer_features(con, as_of, contacts):
        raise InputDataError(
            f"no customer has a usable purchase on or before {as_of.isoformat()} ({_reason_summary(con)})",
            where,
            "Check the format (--format), the column mapping (--column) and --as-of",
        )
    return as_of, _scored_features_sql(con, contacts)


class _Clock:
    """Debug log lines with the wall and CPU time each phase took."""

    def __init__(self) -> None:
        self.started, self.cpu = time.perf_counter(), time.process_time()

    def lap(self, what: str) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        log.debug("%s: %.2f s (%.2f s CPU)", what, now - self.started, cpu - self.cpu)
        self.started, self.cpu = now, cpu


def _reason_summary(con: duckdb.DuckDBPyConnection) -> str:
    """The most common reasons rows were not used, e.g. ``unparseable_date: 12 rows``."""
    rows = con.execute(
        f"SELECT {REASON}, sum(n_rows) FROM {CUSTOMER_ROWS} WHERE {REASON} > 0 "
        "GROUP BY 1 ORDER BY 2 DESC LIMIT 3"
    ).fetchall()
    parts = [f"{ROW_REASONS[code - 1]}: {int(n)} rows" for code, n in rows]
    malformed, error = con.execute(
        f"SELECT count(*), arg_min(error, (file_no, row_no)) FROM {REJECTED_LINES}"  # the first one
    ).fetchall()[0]
    if malformed:
        parts.insert(0, f"malformed_line: {malformed} lines, e.g. {error}")
    return ", ".join(parts) or "no usable rows"


def today_in(timezone: str | None) -> dt.date:
    """Today in ``timezone`` (UTC when None)."""
    if not timezone:
        return dt.datetime.now(dt.UTC).date()
    from zoneinfo import ZoneInfo

    return dt.datetime.now(ZoneInfo(timezone)).date()


def parse_timezone(name: str | None) -> str | None:
    """An IANA time zone name, checked (``Europe/London``); empty -> None (UTC days)."""
    if not name or not name.strip():
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise InputDataError(
            f"time zone {name!r} is not an IANA time zone name", "--timezone / Timezone",
            "Write e.g. America/New_York or Europe/London, or leave it empty for UTC days",
        ) from None
    return name.strip()


def as_of_warnings(con: duckdb.DuckDBPyConnection, as_of: dt.date | None) -> list[str]:
    """A warning when a given as-of date lies far after the last usable transaction."""
    if as_of is None:
        return []
    last = con.execute(
        f"SELECT max(last_day) FROM {CUSTOMER_ROWS} WHERE {REASON} = 0 AND frequency > 0"
    ).fetchall()[0][0]
    if last is None or (as_of - last).days <= AS_OF_GAP_WARNING_DAYS:
        return []
    message = (
        f"the as-of date {as_of.isoformat()} is {(as_of - last).days} days after the last transaction "
        f"({last.isoformat()}): every customer's recency includes that gap. Check AsOfDate / --as-of"
    )
    log.warning(message)
    return [message]


def _derived_as_of(con: duckdb.DuckDBPyConnection, where: str) -> dt.date:
    last = con.execute(
        f"SELECT max(last_day) FROM {CUSTOMER_ROWS} WHERE {REASON} = 0 AND frequency > 0"
    ).fetchall()[0][0]
    if last is None:
        raise InputDataError(
            f"no usable purchase rows ({_reason_summary(con)})",
            where,
            "Check the format (--format) and column mapping (--column)",
        )
    return last + dt.timedelta(days=1)


def _customer_features(con: duckdb.DuckDBPyConnection, as_of: dt.date, contacts: list[str]) -> int:
    """Create ``customer_features`` (unscored, sorted by customer id); return the number of customers."""
    extra = "".join(f", {CONTACT_PREFIX}{n}.value AS {quote(n)}" for n in contacts)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {CUSTOMER_FEATURES} AS
        SELECT {CUST} AS {c.CUSTOMER_ID},
               first_purchase AS {c.FIRST_PURCHASE}, last_purchase AS {c.LAST_PURCHASE},
               date_diff('day', last_purchase, DATE {literal(as_of.isoformat())}) AS {c.RECENCY_DAYS},
               frequency AS {c.FREQUENCY}, CAST(amount AS DOUBLE) / 10000 AS {c.MONETARY},
               round(CAST(amount AS DOUBLE) / 10000 / frequency, 4) AS {c.AVG_ORDER_VALUE} {extra}
        FROM {CUSTOMER_ROWS} WHERE {REASON} = 0 AND frequency > 0
        ORDER BY {c.CUSTOMER_ID}""")
    return int(con.execute(f"SELECT count(*) FROM {CUSTOMER_FEATURES}").fetchall()[0][0])


def _scored_features_sql(con: duckdb.DuckDBPyConnection, contacts: list[str]) -> str:
    """The SELECT of the final features: scores from cuts fitted on histograms."""
    scores = {}
    for score, (feature, direction) in SCORED_FEATURES.items():
        histogram = con.execute(
            f"SELECT {feature} AS value, count(*) AS n FROM {CUSTOMER_FEATURES} GROUP BY 1 ORDER BY 1"
        ).fetchnumpy()
        values, counts = histogram["value"].astype(float), histogram["n"]
        if direction < 0:
            values, counts = -values[::-1], counts[::-1]
        oriented = feature if direction > 0 else f"(-{feature})"
        scores[score] = score_sql(oriented, *score_cuts_from_counts(values, counts))
    # Constant lists indexed by the scores (levels are 1..n): cheaper per row than building strings.
    levels = len(SCORE_LEVELS)
    grid = "[" + ", ".join(literal(SEGMENT_GRID[(r, f)]) for r in SCORE_LEVELS for f in SCORE_LEVELS) + "]"
    codes = "[" + ", ".join(f"'{r}{f}{m}'" for r in SCORE_LEVELS for f in SCORE_LEVELS for m in SCORE_LEVELS) + "]"
    extra = "".join(f", {quote(n)}" for n in contacts)
    return f"""
        SELECT {c.CUSTOMER_ID}, {c.FIRST_PURCHASE}, {c.LAST_PURCHASE}, {c.RECENCY_DAYS}, {c.FREQUENCY},
               {c.MONETARY}, {c.AVG_ORDER_VALUE}, {c.R_SCORE}, {c.F_SCORE}, {c.M_SCORE},
               {codes}[(({c.R_SCORE} - 1) * {levels} + {c.F_SCORE} - 1) * {levels} + {c.M_SCORE}] AS {c.RFM_SCORE},
               {grid}[({c.R_SCORE} - 1) * {levels} + {c.F_SCORE}] AS {c.RFM_SEGMENT} {extra}
        FROM (SELECT *, {scores[c.R_SCORE]} AS {c.R_SCORE}, {scores[c.F_SCORE]} AS {c.F_SCORE},
                     {scores[c.M_SCORE]} AS {c.M_SCORE}
              FROM {CUSTOMER_FEATURES})"""


def write_features(
    result: FeatureResult, output: Path, transform_output: Path | None = None, quarantine_output: Path | None = None
) -> None:
    """Write ``rfm.parquet``, ``quality.json``, the quarantine files (default ``output/quarantine/``)
    and the transform input CSV files (when ``transform_output`` is given; see
    :mod:`steps.features.transform_input`)."""
    check_outputs(output, transform_output, quarantine_output)
    quarantine = quarantine_output or output / paths.QUARANTINE_DIR
    con = result.con
    clock = _Clock()
    written = write_quarantine(con, result.flagged_tables, quarantine)  # first: a mismatch leaves no features
    clock.lap(f"wrote {quarantine}")
    expected = result.quality["quarantined_by_reason"]
    if written != expected:  # the two reads disagree: a bug; never report rows that are not there
        raise RFMError(f"quarantine files hold {written} rows but quality.json counts {expected}",
                       str(quarantine), "report this as a bug, with the input if you can")
    # customer_features is sorted by customer id: writing in table order is cheaper than sorting again.
    con.execute("SET preserve_insertion_order=true")
    try:
        con.execute(f"COPY ({result.scored_sql}) TO {literal(str(output / paths.RFM_FILE))} (FORMAT parquet)")
        clock.lap(f"wrote {paths.RFM_FILE}")
        if transform_output is not None:
            # quality.json counts the customers the scored SELECT holds: no need to count them again.
            files = write_transform_input(con, result.scored_sql, transform_output, result.quality["customers"])
            clock.lap(f"wrote the transform input ({len(files)} file(s))")
    finally:
        con.execute("SET preserve_insertion_order=false")
    (output / paths.QUALITY_FILE).write_text(json.dumps(result.quality, indent=2, sort_keys=True) + "\n")


def check_outputs(output: Path, transform_output: Path | None, quarantine_output: Path | None) -> None:
    """Each output folder exists or can be made (before the work, not after it)."""
    paths.output_folder(output)
    if transform_output is not None:
        paths.output_folder(transform_output, "--transform-output")
        file_rows()  # a bad RFM_TRANSFORM_FILE_ROWS stops the step before the work
    if quarantine_output is not None:
        paths.output_folder(quarantine_output, "--quarantine-output")


def run(
    location: str,
    output: Path,
    options: FeatureOptions | None = None,
    *,
    aggregate: Aggregate | None = None,
) -> FeatureResult:
    """Read ``location``, compute the features and write every artifact (see :func:`write_features`).

    ``aggregate`` is the engine's per-customer aggregation (see :func:`compute_features`). DuckDB's
    memory limit (``options.memory_limit``) and threads apply to this machine's DuckDB: with the Spark
    engine that is the driver's, which loads the per-customer rows, scores them and writes the files.
    An automatic limit DuckDB outgrows doubles, up to half the memory, and the run starts again.
    """
    options = options or FeatureOptions()
    check_outputs(output, options.transform_output, options.quarantine_output)
    with tempfile.TemporaryDirectory(prefix="rfm-features-") as workdir:
        con = connect(os.path.join(workdir, "spill"), options.threads)  # sniffing needs little memory
        sources, skipped = open_sources(location, Path(workdir), options.encoding, con)
        automatic = options.automatic_memory
        limit = auto_memory_limit(sources) if automatic else options.memory_limit
        while True:
            set_memory_limit(con, limit)
            log.debug("DuckDB memory limit %s, threads %s", limit, options.threads or "all")
            try:
                result = compute_features(sources, options, con=con, skipped_files=skipped, aggregate=aggregate)
                write_features(result, output, options.transform_output, options.quarantine_output)
                break
            except duckdb.OutOfMemoryException:
                bigger = doubled_memory_limit(limit) if automatic else None
                if bigger is None:
                    raise RFMError(
                        f"DuckDB ran out of memory under the {limit} limit", location,
                        "Raise --memory-limit (auto sizes it from the input), or free disk space for spilling",
                    ) from None
                # Rows are a guess at the need: many distinct orders per customer need more (a year of daily
                # files, 37M rows and 33M orders, needs about 2 GB).
                log.warning("DuckDB needed more than %s for this input; trying again with %s", limit, bigger)
                con.close()
                con = connect(os.path.join(workdir, "spill"), options.threads)
                limit = bigger
    return result
