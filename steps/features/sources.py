"""Find the input files (one file, a folder, or an S3 prefix) and look inside them.

:func:`find_input_files` finds the files; :func:`sniff` reads each file's first
bytes (kind, compression, text encoding, delimiter, first line) and asks DuckDB
for the columns exactly as it will read them later, so format detection and
reading never disagree. Files that cannot be used at all raise
:class:`~steps.errors.InputDataError` naming the file, what is wrong and what to do.

S3 prefixes are read with awswrangler: the objects are downloaded to a work
folder first, so the same fast local readers handle every source.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import gzip
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from steps.errors import EmptyInputError, InputDataError, RFMError, first_line
from steps.features.formats import CDNOW_COLUMNS, CDNOW_HEADER, CDNOW_LINE
from steps.features.history import is_supported as _is_supported
from steps.features.parsing import literal

PARQUET_MAGIC = b"PAR1"
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
SNIFF_BYTES = 64 * 1024
CHECK_CHUNK = 4 * 1024 * 1024
DELIMITERS = (",", ";", "\t", "|")
# Encodings read through a UTF-8 copy made while the file is checked: DuckDB has no cp1252 (Excel on
# Windows: the euro sign, curly quotes), and its latin-1 refuses the bytes 0x80-0x9F.
TRANSCODED = ("latin-1", "cp1252")
UTF8_COPIES = "utf8"  # the work folder's sub-folder holding them
ENCODING_FIX = ("Save it as UTF-8 CSV, or pass --encoding cp1252 (Excel on Windows), latin-1 or utf-16 "
                "if that is what it is (a pipeline run: the Encoding parameter)")
# Files next to the data that are not data: job markers, checksums, notes.
NOT_DATA = "not a data file"


@dataclass(frozen=True)
class Source:
    """One input file and what its first bytes say about it.

    Attributes
    ----------
    path : Path
        The local file (S3 objects are downloaded first).
    kind : str
        ``"csv"`` (plain or gzip-compressed text) or ``"parquet"``.
    header : list of str
        Column names as DuckDB reads them (empty for headerless CDNOW files).
    first_line : str
        The first non-blank text line (empty for Parquet).
    delimiter : str
        The CSV field delimiter.
    encoding : str
        ``utf-8`` or ``utf-16`` (what DuckDB's CSV reader is told; a :data:`TRANSCODED` file is read
        through its UTF-8 copy).
    types : dict
        Column name -> DuckDB type (all ``VARCHAR`` for CSV).
    headerless : bool
        A whitespace-separated CDNOW file: no header, one transaction per line.
    origin : str
        Where the file came from, when not ``path`` itself (an S3 object's URI).
    transcoded_from : str
        The file's own encoding when ``path`` is a UTF-8 copy of it (:data:`TRANSCODED`), else empty.
    header_lines : int
        Lines before the first data row (a CDNOW file may start with a header line).
    rows : int
        How many rows it holds: exact for Parquet, estimated from the first
        lines' length for text.
    """

    path: Path
    kind: str
    header: list[str]
    first_line: str
    delimiter: str = ","
    encoding: str = "utf-8"
    types: dict[str, str] = field(default_factory=dict)
    headerless: bool = False
    origin: str = ""
    rows: int = 0
    header_lines: int = 1
    transcoded_from: str = ""

    @property
    def name(self) -> str:
        """The file as users know it (its S3 URI, or its path)."""
        return self.origin or str(self.path)

    def reader_sql(
        self, *, store_rejects: bool = False, row_numbers: bool = False, as_lines: bool | None = None
    ) -> str:
        """The DuckDB table function reading this file.

        Parameters
        ----------
        store_rejects : bool
            Record CSV lines that cannot be split into the header's columns in
            DuckDB's ``reject_errors`` table (they are skipped either way).
        row_numbers : bool
            Parquet only: add ``file_row_number`` (0-based).
        as_lines : bool, optional
            Read a text file as one VARCHAR column ``line`` per line, without
            a header (default: when the file is ``headerless``).
        """
        path = literal(str(self.path))
        if self.kind == "parquet":
            return f"read_parquet({path}{', file_row_number=true' if row_numbers else ''})"
        options = [f"encoding={literal(self.encoding)}", "ignore_errors=true"]
        if store_rejects:
            options.append("store_rejects=true")
        if self.headerless if as_lines is None else as_lines:
            # One VARCHAR column per line; the fields are split with a regex later.
            skip = f"skip={self.header_lines}, " if self.headerless and self.header_lines else ""
            return (
                f"read_csv({path}, columns={{'line': 'VARCHAR'}}, header=false, delim='\\x01', quote='', "
                f"escape='', auto_detect=false, {skip}{', '.join(options)})"
            )
        # No sniffing: the header and delimiter are known, so a bad line reads the same anywhere.
        columns = ", ".join(f"{literal(name)}: 'VARCHAR'" for name in self.header)
        return (
            f"read_csv({path}, columns={{{columns}}}, header=true, delim={literal(self.delimiter)}, "
            f"quote='\"', escape='\"', auto_detect=false, {', '.join(options)})"
        )


def find_input_files(location: str, workdir: Path) -> tuple[list[tuple[Path, str]], dict[str, str]]:
    """The data files at ``location`` (a file, a folder, or ``s3://bucket/prefix``), sorted.

    Returns (local path, name) pairs: S3 objects are downloaded into
    ``workdir`` and named by their URI; local files by their path. Also
    returns the files inside the folder or prefix that are not data, each
    with why: hidden or marker names (``.DS_Store``, ``_SUCCESS``, ``.crc``),
    other suffixes, and notes (``README.txt``, ``LICENSE``).

    Raises
    ------
    InputDataError
        Nothing found, or the location does not exist.
    """
    if location.startswith("s3://"):
        return download_s3(location, workdir)
    path = Path(location.removeprefix("file://"))
    if path.is_file():
        return [(path, str(path))], {}
    if path.is_dir():
        everything = sorted(p for p in path.rglob("*") if p.is_file())
        files = [p for p in everything if _is_supported(p.relative_to(path))]
        if not files:
            raise InputDataError(
                "no transaction files (.csv, .csv.gz, .txt, .tsv, .parquet) in this folder",
                str(path),
                "Point --input at a file or a folder holding them",
            )
        kept = set(files)
        skipped = {str(p): NOT_DATA for p in everything if p not in kept}
        return [(f, str(f)) for f in files], skipped
    raise InputDataError("no such file or folder", str(path), "Check the --input path")


def download_s3(uri: str, workdir: Path) -> tuple[list[tuple[Path, str]], dict[str, str]]:
    """Download the transaction files of an S3 object or prefix into ``workdir/s3``.

    ``s3://bucket/data`` means the object ``data`` if it exists, else the
    folder ``data/`` (never ``data-old/``). Returns the files and the objects
    that are not data (see :func:`find_input_files`).
    """
    import awswrangler as wr

    def listing(prefix: str) -> list[str]:
        try:
            return list(wr.s3.list_objects(prefix))
        except Exception as error:  # botocore errors differ by cause; all mean "cannot list"
            raise InputDataError(
                f"cannot list S3 objects: {error}", uri, "Check the URI, the region and the credentials"
            ) from None

    objects = listing(uri)
    if uri in objects:
        objects, base = [uri], uri.rsplit("/", 1)[0]
    else:
        base = uri.rstrip("/")
        objects = listing(base + "/") if not uri.endswith("/") else objects
    wanted = sorted(o for o in objects if _is_supported(Path(o.removeprefix(base).lstrip("/"))))
    kept = set(wanted)
    skipped = {o: NOT_DATA for o in sorted(objects) if o not in kept}
    if not wanted:
        raise InputDataError(
            "no transaction files (.csv, .csv.gz, .tsv, .txt, .parquet) under this S3 prefix",
            uri,
            "Upload the files there or fix the InputDataUrl / --input",
        )
    local: list[tuple[Path, str]] = []
    for obj in wanted:
        target = workdir / "s3" / obj.removeprefix(base).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        wr.s3.download(path=obj, local_file=str(target))
        local.append((target, obj))
    return local, skipped


def sniff(
    path: Path, encoding: str | None = None, origin: str = "", con: duckdb.DuckDBPyConnection | None = None,
    workdir: Path | None = None,
) -> Source:
    """Look at a file: its kind, text encoding, delimiter, header and first data line.

    Parameters
    ----------
    path : Path
        A local file.
    encoding : str, optional
        The text encoding of CSV files (``utf-8``, ``utf-16``, ``latin-1`` or ``cp1252``);
        by default UTF-8, or UTF-16 when the file starts with its byte-order mark.
    origin : str
        The name to report (an S3 URI) when not ``path``.
    con : DuckDBPyConnection, optional
        Where to read column types and Parquet metadata (a new database per
        file costs about 20 ms: pass one when sniffing many files).
    workdir : Path, optional
        Where a :data:`TRANSCODED` file's UTF-8 copy goes (``<workdir>/utf8/``): the caller's work
        folder, removed with it; required for such a file.

    Raises
    ------
    InputDataError
        Empty, binary, undecodable or header-only files, unreadable Parquet.
    """
    where = origin or str(path)
    with path.open("rb") as handle:
        head = raw = handle.read(SNIFF_BYTES)
    if not head:
        raise EmptyInputError("the file is empty", where, "Export the transactions again")
    if head.startswith(PARQUET_MAGIC):
        return _sniff_parquet(path, where, con)
    if where.lower().endswith(".parquet"):
        raise InputDataError(
            f"not a Parquet file (it starts with {head[:4]!r}, not {PARQUET_MAGIC!r})",
            where,
            "Write the Parquet file again, or name the file after what it is (.csv, .csv.gz)",
        )
    compressed = head.startswith(GZIP_MAGIC)
    if compressed:
        head = _gunzip_head(path, where)
        if not head:
            raise EmptyInputError("the compressed file is empty", where, "Export the transactions again")
    if head.startswith(ZIP_MAGIC):
        raise InputDataError(
            "this is a zip archive or an Excel workbook, not CSV",
            where,
            "Unzip it, or save the sheet as CSV (UTF-8) or Parquet",
        )
    if head.startswith(UTF16_BOMS) and encoding in (None, "utf-16"):
        encoding = "utf-16"
    else:
        encoding = encoding or "utf-8"
        if b"\x00" in head and encoding != "utf-16":
            raise InputDataError(
                "the file is binary, not CSV text", where, "Export it as CSV (UTF-8), CSV.gz or Parquet"
            )
    copy = utf8_copy_path(path, workdir) if encoding in TRANSCODED else None
    check_whole_file(path, encoding, where, compressed=compressed, copy_to=copy)
    text = _decode(head, encoding, where)
    if copy is not None:  # from here on the reader reads the UTF-8 copy; errors still name the file
        path, origin, transcoded_from, encoding = copy, where, encoding, "utf-8"
    else:
        transcoded_from = ""
    complete = len(head) < SNIFF_BYTES
    lines = [line for line in text.splitlines() if line.strip()]
    if not complete and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut off by the sniff window
    if not lines:
        raise EmptyInputError("the file holds only blank lines", where, "Export the transactions again")
    rows = _estimate_rows(path, text, len(lines), compressed=head is not raw and not transcoded_from)
    cdnow_header = len(lines) > 1 and CDNOW_HEADER.match(lines[0]) and CDNOW_LINE.match(lines[1])
    if CDNOW_LINE.match(lines[0]) or cdnow_header:
        types = dict.fromkeys(CDNOW_COLUMNS, "VARCHAR")
        first = lines[1] if cdnow_header else lines[0]
        header_lines = _leading_lines(text, lines[0]) if cdnow_header else 0
        return Source(path, "csv", [], first, " ", encoding, types, True, origin, rows, header_lines,
                      transcoded_from)
    if len(lines) == 1 and complete:
        raise EmptyInputError("the file has a header but no rows", where, "Export the rows too")
    delimiter = guess_delimiter(lines[:50])
    header = _unique(next(csv.reader([lines[0]], delimiter=delimiter)))
    source = Source(path, "csv", header, lines[0], delimiter, encoding, origin=origin)
    types = describe(source, con)
    return Source(path, "csv", list(types), lines[0], delimiter, encoding, types, False, origin, rows,
                  transcoded_from=transcoded_from)


def _leading_lines(text: str, header: str) -> int:
    """How many lines (blank ones included) precede the first data line, the header being ``header``."""
    for number, line in enumerate(text.splitlines(), start=1):
        if line == header:
            return number
    return 1


def _unique(names: list[str]) -> list[str]:
    """Column names made unique and non-empty the way DuckDB's reader names them (``a``, ``a_1``; ``column2``)."""
    seen: set[str] = set()
    unique = []
    for number, name in enumerate(names):
        name = name or f"column{number}"
        candidate, suffix = name, 0
        while candidate in seen:
            suffix += 1
            candidate = f"{name}_{suffix}"
        seen.add(candidate)
        unique.append(candidate)
    return unique


def utf8_copy_path(path: Path, workdir: Path | None) -> Path:
    """Where the UTF-8 copy of ``path`` goes: one name per file, under ``<workdir>/utf8/``."""
    import hashlib

    if workdir is None:  # a copy in a folder nobody removes would outlive the run
        raise ValueError(f"sniff({path}) needs a workdir to read a latin-1 or cp1252 file through its UTF-8 copy")
    folder = Path(workdir) / UTF8_COPIES
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]}.csv"


def check_whole_file(path: Path, encoding: str, where: str, *, compressed: bool, copy_to: Path | None = None) -> None:
    """Read the whole file once: a gzip stream must be complete, every byte must decode.

    A truncated gzip (an interrupted upload) is refused: nobody can know what
    was cut. An undecodable byte anywhere stops the run with its line number,
    instead of costing its line silently. With ``copy_to`` the decoded text is
    also written there as UTF-8, line for line (a :data:`TRANSCODED` file).

    Raises
    ------
    InputDataError
        A broken gzip stream, an unreadable file, or a byte that is not ``encoding`` text.
    RFMError
        The UTF-8 copy cannot be written (a full or read-only work folder).
    """
    decoder = codecs.getincrementaldecoder("utf-8-sig" if encoding == "utf-8" else encoding)()
    lines_before = 0
    try:
        copy = copy_to.open("w", encoding="utf-8", newline="") if copy_to else None
        with copy or contextlib.nullcontext():
            for chunk in _chunks(path, where, compressed=compressed):
                if copy is not None or not (encoding == "utf-8" and chunk.isascii()):
                    text = _decode_chunk(decoder, chunk, lines_before, encoding, where)
                    if copy is not None:
                        copy.write(text)
                lines_before += chunk.count(b"\n")
            text = _decode_chunk(decoder, b"", lines_before, encoding, where, final=True)
            if copy is not None:
                copy.write(text)
    except OSError as error:  # the copy: reading errors are the file's (_chunks)
        raise RFMError(f"cannot write the file's UTF-8 copy ({error.strerror or error})", str(copy_to),
                       "Free space in the work folder (TMPDIR locally), or save the file as UTF-8") from None


def _chunks(path: Path, where: str, *, compressed: bool) -> Iterator[bytes]:
    """The file's bytes (decompressed), a few MB at a time; a gzip stream that does not end well is refused."""
    try:
        with gzip.open(path, "rb") if compressed else path.open("rb") as handle:
            while chunk := handle.read(CHECK_CHUNK):
                yield chunk
    except (OSError, EOFError, zlib.error) as error:
        if compressed:
            raise _broken_gzip(error, where) from None
        raise InputDataError(f"cannot read the file ({error})", where, "Check that it is readable") from None


def _decode_chunk(
    decoder: codecs.IncrementalDecoder, chunk: bytes, lines_before: int, encoding: str, where: str,
    final: bool = False,
) -> str:
    try:
        return decoder.decode(chunk, final)
    except UnicodeDecodeError as error:
        start = max(0, error.start - len(error.object) + len(chunk)) if len(error.object) > len(chunk) else error.start
        line = lines_before + chunk[:start].count(b"\n") + 1
        raise InputDataError(
            f"the file is not {encoding} text (line {line}: byte {error.object[error.start:error.start + 1]!r})",
            where, ENCODING_FIX) from None


def _estimate_rows(path: Path, text: str, lines: int, compressed: bool) -> int:
    """Rows in a text file, from the length of its first lines (gzip assumed to shrink text 5x)."""
    size = path.stat().st_size * (5 if compressed else 1)
    per_line = max(1, len(text.encode()) // max(1, lines))
    return max(lines, size // per_line)


def _gunzip_head(path: Path, where: str) -> bytes:
    try:
        with gzip.open(path, "rb") as handle:
            return handle.read(SNIFF_BYTES)
    except (OSError, EOFError, zlib.error) as error:
        raise _broken_gzip(error, where) from None


def _broken_gzip(error: Exception, where: str) -> InputDataError:
    """A gzip file that fails its integrity check: nobody can know what was cut, so it is never read."""
    return InputDataError(f"a broken gzip file ({error})", where, "Compress it again, or upload it again")


def _decode(head: bytes, encoding: str, where: str) -> str:
    python_name = "utf-8-sig" if encoding == "utf-8" else encoding
    try:
        return head.decode(python_name)
    except UnicodeDecodeError as error:
        # A multi-byte character cut by the sniff window is fine.
        if len(head) == SNIFF_BYTES and error.start >= SNIFF_BYTES - 4:
            return head[: error.start].decode(python_name)
        raise InputDataError(
            f"the file is not {encoding} text (byte {error.start}: {head[error.start : error.start + 1]!r})",
            where, ENCODING_FIX) from None


def guess_delimiter(lines: list[str]) -> str:
    """The delimiter that splits the first lines into the same number (>1) of fields.

    Among the candidates (``, ; tab |``) the one giving the most fields on the
    header that the next lines agree with wins; ``,`` when none splits the header.

    Examples
    --------
    >>> guess_delimiter(["a;b;c", "1;2,5;3"])
    ';'
    >>> guess_delimiter(["just one column", "x"])
    ','
    """
    best, best_fields = ",", 1
    for delimiter in DELIMITERS:
        rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter))
        fields = len(rows[0]) if rows else 0
        agree = sum(len(row) == fields for row in rows[1:])
        if fields > best_fields and agree >= (len(rows) - 1) / 2:
            best, best_fields = delimiter, fields
    return best


def describe(source: Source, con: duckdb.DuckDBPyConnection | None = None) -> dict[str, str]:
    """Column name -> DuckDB type of ``source``, as its reader returns them."""
    con = con or duckdb.connect()
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {source.reader_sql()}").fetchall()
    except duckdb.Error as error:
        raise InputDataError(
            f"cannot read the file: {first_line(error)}",
            source.name,
            "Check that it is CSV (UTF-8), CSV.gz or Parquet",
        ) from None
    return {row[0]: row[1] for row in rows}


def _sniff_parquet(path: Path, where: str, con: duckdb.DuckDBPyConnection | None = None) -> Source:
    con = con or duckdb.connect()
    try:
        rows = con.execute(
            f"SELECT sum(num_rows) FROM parquet_file_metadata({literal(str(path))})"
        ).fetchall()
    except duckdb.Error as error:
        raise InputDataError(
            f"not a readable Parquet file ({first_line(error)})", where, "Write the Parquet file again"
        ) from None
    if not rows or not rows[0][0]:
        raise EmptyInputError("the Parquet file has no rows", where, "Export the rows too")
    source = Source(path, "parquet", [], "", origin=where)
    types = describe(source, con)
    return Source(path, "parquet", list(types), "", types=types, origin=where, rows=int(rows[0][0]))
