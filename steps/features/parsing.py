"""SQL expressions that turn one raw column into a canonical value.

Every function returns a DuckDB SQL expression (a string) for a column of a
given DuckDB type; nothing here runs a query except :func:`order_date_parsers`,
which tries the text date parsers on a sample to put the likely one first.
A value that cannot be parsed becomes NULL, which the caller turns into a
quarantine reason.

Dates are calendar days in UTC (or in a business time zone, ``timezone``):
text with an offset (``+0530``, ``Z``) is converted first; text and
timestamps without one are taken as UTC moments.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

# Days before this are typos or placeholders (0001-01-01), never purchases: unparseable.
EARLIEST_DAY = "1900-01-01"
# Money is carried as integer ten-thousandths (exact sums, exact halving).
AMOUNT_SCALE = 10_000

INTEGER_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
                 "UBIGINT", "UHUGEINT")  # fmt: skip
FLOAT_TYPES = ("FLOAT", "DOUBLE", "REAL")

# Text date parsers, tried in this order unless a sample says otherwise; {t} is the text.
# Two-digit years come before four-digit ones: DuckDB's %Y would read "12/1/10" as year 10.
_US_FORMATS = ("%m/%d/%y %H:%M", "%m/%d/%y %H:%M:%S", "%m/%d/%y", "%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S",
               "%m/%d/%Y", "%m/%d/%Y %I:%M %p", "%m/%d/%Y %I:%M:%S %p")  # fmt: skip
_DAY_FIRST_FORMATS = tuple(f.replace("%m/%d/", "%d/%m/") for f in _US_FORMATS)
_RFC_2822_FORMATS = ("%a, %d %b %Y %H:%M:%S %z", "%d %b %Y %H:%M:%S %z", "%a, %d %b %Y %H:%M %z",
                     "%a, %d %b %Y %H:%M:%S %Z")  # fmt: skip
_OTHER_FORMATS = ("%Y%m%d", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y/%m/%d", "%d.%m.%Y %H:%M:%S",
                  "%d.%m.%Y %H:%M", "%d.%m.%Y")  # fmt: skip


def _strptime(formats: tuple[str, ...]) -> str:
    # One try_strptime per format: DuckDB 2.0's list form with %z turns "31 Feb" into 3 March.
    calls = [f"try_strptime({{t}}, '{f}')" for f in formats]
    return calls[0] if len(calls) == 1 else "COALESCE(" + ", ".join(calls) + ")"


def _utc_day(timestamptz: str) -> str:
    # epoch_us and make_timestamp avoid the (slow) time-zone library; the result is the UTC day.
    return f"CAST(make_timestamp(epoch_us({timestamptz})) AS DATE)"


def _zone_day(timestamptz: str, timezone: str | None) -> str:
    """The calendar day of a TIMESTAMPTZ in ``timezone`` (UTC when None)."""
    if not timezone:
        return _utc_day(timestamptz)
    return f"CAST(timezone({literal(timezone)}, {timestamptz}) AS DATE)"


def _naive_day(timestamp: str, timezone: str | None) -> str:
    """The day of a TIMESTAMP without offset (taken as UTC) in ``timezone``."""
    if not timezone:
        return f"CAST({timestamp} AS DATE)"
    return _zone_day(f"timezone('UTC', {timestamp})", timezone)


def _has_time(fmt: str) -> bool:
    return "%H" in fmt or "%I" in fmt


def _slashed_parser(formats: tuple[str, ...], timezone: str | None) -> str:
    """Formats with a time are moved to ``timezone``; a date alone is that day wherever it is."""
    timed = tuple(f for f in formats if _has_time(f))
    dated = tuple(f for f in formats if not _has_time(f))
    if not timezone:
        return f"CAST({_strptime(formats)} AS DATE)"
    parts = [_naive_day(_strptime(timed), timezone)] if timed else []
    if dated:
        parts.append(f"CAST({_strptime(dated)} AS DATE)")
    return parts[0] if len(parts) == 1 else "COALESCE(" + ", ".join(parts) + ")"


def text_date_parsers(timezone: str | None = None) -> dict[str, str]:
    """Text date parser name -> SQL template (``{t}`` is the text) giving the day in ``timezone``."""
    if timezone:
        # A date without a time (10 characters or fewer) is that day in any zone.
        iso = (f"CASE WHEN length({{t}}) <= 10 THEN TRY_CAST({{t}} AS DATE) "
               f"ELSE {_zone_day('TRY_CAST({t} AS TIMESTAMPTZ)', timezone)} END")
    else:
        iso = _utc_day("TRY_CAST({t} AS TIMESTAMPTZ)")
    return {
        "iso": iso,
        "rfc2822": _zone_day(_strptime(_RFC_2822_FORMATS), timezone),
        "month_day_year": _slashed_parser(_US_FORMATS, timezone),
        "day_month_year": _slashed_parser(_DAY_FIRST_FORMATS, timezone),
        "other": _slashed_parser(_OTHER_FORMATS, timezone),
    }


TEXT_DATE_PARSERS: dict[str, str] = text_date_parsers()
# The chain when nothing says otherwise: every shape once, slashed dates month first.
DEFAULT_TEXT_PARSERS = ("iso", "rfc2822", "month_day_year", "other")
# A slashed date's first two numbers ("13/01/2011" -> 13, 1).
_SLASHED = r"^\s*(\d{1,2})/(\d{1,2})/\d"


@dataclass(frozen=True)
class SlashedDates:
    """What a column's slashed dates (``a/b/year``) say about their order.

    ``day_first`` counts values whose first number cannot be a month (> 12) and
    ``month_first`` values whose second number cannot be; the examples are
    one value of each.
    """

    day_first: int = 0
    month_first: int = 0
    day_first_example: str | None = None
    month_first_example: str | None = None

    @property
    def order(self) -> str:
        """``day_month_year`` when only day-first evidence exists, else ``month_day_year``."""
        return "day_month_year" if self.day_first and not self.month_first else "month_day_year"

    @property
    def mixed(self) -> bool:
        """Both orders occur: no single reading is right."""
        return bool(self.day_first and self.month_first)


def quote(name: str) -> str:
    """Quote an identifier for DuckDB."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """Quote a string literal for DuckDB."""
    return "'" + value.replace("'", "''") + "'"


def _base(dtype: str) -> str:
    return dtype.split("(")[0].strip().upper()


def day_expr(column: str, dtype: str, parsers: list[str] | None = None, timezone: str | None = None) -> str:
    """The calendar day (DATE) of a column of type ``dtype``, in UTC or ``timezone``.

    Parameters
    ----------
    column : str
        A quoted identifier or any SQL expression.
    dtype : str
        Its DuckDB type. Integers are ``YYYYMMDD`` days or Unix epoch seconds
        or milliseconds (told apart by size).
    parsers : list of str, optional
        Names in ``TEXT_DATE_PARSERS``, in the order to try them (text only).
    timezone : str, optional
        An IANA zone name: moments (with a time) are taken in that zone;
        text without an offset and naive timestamps are UTC moments. Dates
        without a time stay the day they name.
    """
    base = _base(dtype)
    if base == "DATE":
        return column
    if base == "TIMESTAMP WITH TIME ZONE":
        return _zone_day(column, timezone)
    if base.startswith("TIMESTAMP"):
        return _naive_day(column, timezone)
    if base in INTEGER_TYPES:
        return (
            f"CASE WHEN {column} BETWEEN 19000101 AND 29991231 "
            f"THEN CAST(try_strptime(CAST({column} AS VARCHAR), '%Y%m%d') AS DATE) "
            f"WHEN {column} BETWEEN 100000000 AND 99999999999 "
            f"THEN {_naive_day(f'make_timestamp({column} * 1000000)', timezone)} "
            f"WHEN {column} BETWEEN 100000000000 AND 99999999999999 "
            f"THEN {_naive_day(f'make_timestamp({column} * 1000)', timezone)} END"
        )
    text = column if base == "VARCHAR" else f"CAST({column} AS VARCHAR)"
    names = parsers or list(DEFAULT_TEXT_PARSERS)
    templates = text_date_parsers(timezone) if timezone else TEXT_DATE_PARSERS
    return "COALESCE(" + ", ".join(templates[name].format(t=text) for name in names) + ")"


def order_date_parsers(
    con: duckdb.DuckDBPyConnection,
    reader: str,
    column: str,
    names: tuple[str, ...] = DEFAULT_TEXT_PARSERS,
    sample: int = 500,
) -> list[str]:
    """Text date parser ``names``, the ones that parse most of a sample first.

    Only the order changes (every parser stays in the chain), so this is a
    speed-up and never changes which values parse: the parsers accept
    disjoint shapes of text (``names`` holds one of ``month_day_year`` and
    ``day_month_year``: slashed dates are read one way per file).
    """
    counts = ", ".join(f"count({TEXT_DATE_PARSERS[n].format(t='v')})" for n in names)
    try:
        row = con.execute(
            f"SELECT {counts} FROM (SELECT CAST({column} AS VARCHAR) AS v FROM {reader} "
            f"WHERE {column} IS NOT NULL LIMIT {int(sample)})"
        ).fetchall()[0]
    except duckdb.Error:
        return list(names)
    hits = dict(zip(names, row or [0] * len(names), strict=True))
    return sorted(names, key=lambda n: (-hits[n], names.index(n)))


def slashed_dates(con: duckdb.DuckDBPyConnection, reader: str, column: str, sample: int = 500) -> SlashedDates:
    """Read the whole column for evidence of the order of its slashed dates.

    Every value counts, not a sample: a file sorted by time can start with
    weeks of ambiguous days (``12/1/2010`` to ``12/12/2010``). Only columns
    with slashed dates in their first ``sample`` values are read.
    """
    values = f"SELECT CAST({column} AS VARCHAR) AS v FROM {reader}"
    try:
        first = f"SELECT count(*) FROM ({values} LIMIT {int(sample)}) WHERE v LIKE '%/%/%'"
        if not con.execute(first).fetchall()[0][0]:
            return SlashedDates()  # no slashed dates at the start: no read of the whole column
        row = con.execute(f"""
            SELECT count(*) FILTER (WHERE a > 12 AND b <= 12), count(*) FILTER (WHERE b > 12 AND a <= 12),
                   min(v) FILTER (WHERE a > 12 AND b <= 12), min(v) FILTER (WHERE b > 12 AND a <= 12)
            FROM (SELECT v, TRY_CAST(p.a AS INTEGER) AS a, TRY_CAST(p.b AS INTEGER) AS b
                  FROM (SELECT v, regexp_extract(v, '{_SLASHED}', ['a', 'b']) AS p
                        FROM ({values}) WHERE v LIKE '%/%/%'))""").fetchall()[0]
    except duckdb.Error:
        return SlashedDates()
    return SlashedDates(int(row[0]), int(row[1]), row[2], row[3])


def number_expr(column: str, dtype: str) -> str:
    """A DOUBLE from a numeric or text column (NULL when not a number)."""
    base = _base(dtype)
    if base in INTEGER_TYPES or base in FLOAT_TYPES or base == "DECIMAL":
        return f"CAST({column} AS DOUBLE)"
    return f"TRY_CAST({column} AS DOUBLE)"


def amount_units_expr(double: str) -> str:
    """Money as a BIGINT count of ten-thousandths (NULL when not finite or too large)."""
    return f"TRY_CAST(round({double} * {AMOUNT_SCALE}) AS BIGINT)"


def text_expr(column: str, dtype: str) -> str:
    """The text of an id or contact column, exactly as written.

    Text stays as it is (no trimming, no case change); integers become their
    digits; floats holding whole numbers (ids that went through a float
    column, ``17850.0``) become their digits too.
    """
    base = _base(dtype)
    if base == "VARCHAR":
        return column
    if base in FLOAT_TYPES:
        return (
            f"CASE WHEN {column} = trunc({column}) AND abs({column}) < 1e15 "
            f"THEN CAST(CAST({column} AS BIGINT) AS VARCHAR) ELSE CAST({column} AS VARCHAR) END"
        )
    return f"CAST({column} AS VARCHAR)"


def customer_id_expr(column: str, dtype: str, float_id: str | None = None) -> str:
    """The text of a customer id: :func:`text_expr`, and text like ``17850.0`` written ``17850``.

    A whole number written as a float is the same id whether the column is
    typed (Parquet) or text (a CSV written by pandas). Only digits followed by
    ``.`` and zeros change; ``0042`` and `` 42`` stay as they are. ``float_id``
    is :func:`float_id_expr` of the column when the caller has it already.
    """
    if _base(dtype) != "VARCHAR":
        return text_expr(column, dtype)
    return f"CASE WHEN {float_id or float_id_expr(column, dtype)} THEN split_part({column}, '.', 1) ELSE {column} END"


def float_id_expr(column: str, dtype: str) -> str:
    """True when :func:`customer_id_expr` rewrote a float-looking id (``17850.0`` -> ``17850``)."""
    base = _base(dtype)
    if base in FLOAT_TYPES:
        return f"coalesce({column} = trunc({column}) AND abs({column}) < 1e15, false)"
    if base != "VARCHAR":
        return "false"
    # ends_with and contains first: the regular expression then sees almost no row.
    return (f"coalesce(ends_with({column}, '0') AND contains({column}, '.') "
            f"AND regexp_full_match({column}, '-?[0-9]+[.]0+'), false)")


def blank_expr(text: str, dtype: str) -> str:
    """True when an id is missing: NULL, empty or only spaces.

    ``< '!'`` (byte order: empty, or a first byte of space or below) is a cheap
    test that leaves ``trim`` to almost no rows.
    """
    if _base(dtype) != "VARCHAR":
        return f"{text} IS NULL"
    return f"({text} IS NULL OR ({text} < '!' AND trim({text}) = ''))"
