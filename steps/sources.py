"""Find the input files (one file, a folder, or an S3 prefix) and look inside them.

S3 prefixes are read with awswrangler: the objects are downloaded to a work
folder first, so the same fast local readers handle every source.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path

from steps.errors import InputDataError

SUFFIXES = (".csv", ".csv.gz", ".txt", ".txt.gz", ".parquet", ".tsv", ".tsv.gz")
PARQUET_MAGIC = b"PAR1"
GZIP_MAGIC = b"\x1f\x8b"
SNIFF_BYTES = 64 * 1024


@dataclass(frozen=True)
class Source:
    """One input file and what its first bytes say about it."""

    path: Path
    kind: str  # "csv" or "parquet"
    header: list[str]
    first_line: str

    @property
    def name(self) -> str:
        return str(self.path)


def _is_supported(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in SUFFIXES) and not name.startswith((".", "_"))


def list_input_files(location: str, workdir: Path) -> list[Path]:
    """The data files at ``location`` (a file, a folder, or ``s3://bucket/prefix``), sorted.

    Raises
    ------
    InputDataError
        Nothing found, or the location does not exist.
    """
    if location.startswith("s3://"):
        return _download_s3(location, workdir)
    path = Path(location.removeprefix("file://"))
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _is_supported(p))
        if not files:
            raise InputDataError(
                "no transaction files (.csv, .csv.gz, .txt, .parquet) in this folder",
                str(path),
                "point --input at a file or a folder holding them",
            )
        return files
    raise InputDataError("no such file or folder", str(path), "check the --input path")


def _download_s3(uri: str, workdir: Path) -> list[Path]:
    import awswrangler as wr

    try:
        objects = [o for o in wr.s3.list_objects(uri) if _is_supported(Path(o.split("/")[-1]))]
    except Exception as error:  # botocore errors differ by cause; all mean "cannot list"
        raise InputDataError(f"cannot list S3 objects: {error}", uri, "check the URI and credentials") from None
    if not objects:
        raise InputDataError("no transaction files under this S3 prefix", uri, "upload .csv/.csv.gz/.parquet")
    base = uri.rstrip("/").rsplit("/", 1)[0] if uri.endswith(tuple(SUFFIXES)) else uri.rstrip("/")
    local: list[Path] = []
    for obj in sorted(objects):
        target = workdir / "s3" / obj.removeprefix(base).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        wr.s3.download(path=obj, local_file=str(target))
        local.append(target)
    return local


def sniff(path: Path) -> Source:
    """Look at a file's first bytes: its kind, header and first data line.

    Raises
    ------
    InputDataError
        Empty, binary, undecodable, or header-only files.
    """
    where = str(path)
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if not head:
        raise InputDataError("the file is empty", where, "export the transactions again")
    if head.startswith(PARQUET_MAGIC):
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(path)
        except Exception as error:  # pyarrow raises several types for corrupt files
            raise InputDataError(f"not a readable Parquet file ({error})", where) from None
        if parquet.metadata.num_rows == 0:
            raise InputDataError("the Parquet file has no rows", where)
        return Source(path, "parquet", list(parquet.schema_arrow.names), "")
    if head.startswith(GZIP_MAGIC):
        try:
            with gzip.open(path, "rb") as handle:
                head = handle.read(SNIFF_BYTES)
        except (OSError, EOFError) as error:
            raise InputDataError(f"a broken gzip file ({error})", where, "compress it again") from None
    if b"\x00" in head:
        raise InputDataError(
            "the file is binary, not CSV text", where, "export it as CSV (UTF-8), CSV.gz or Parquet"
        )
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        if len(head) == SNIFF_BYTES and error.start >= SNIFF_BYTES - 4:
            text = head[: error.start].decode("utf-8-sig")
        else:
            raise InputDataError(
                f"the file is not UTF-8 text (byte {error.start})", where, "save it as UTF-8 CSV"
            ) from None
    lines = [line for line in io.StringIO(text).read().splitlines() if line.strip()]
    if not lines:
        raise InputDataError("the file holds only blank lines", where)
    header = [h.strip().strip('"') for h in _split_header(lines[0])]
    if len(lines) == 1 and not header[0].replace(".", "").isdigit():
        raise InputDataError("the file has a header but no rows", where, "export the rows too")
    return Source(path, "csv", header, lines[0])


def _split_header(line: str) -> list[str]:
    import csv

    counts = {d: line.count(d) for d in (",", ";", "\t", "|")}
    delimiter = max(counts, key=lambda d: counts[d]) if any(counts.values()) else ","
    return next(csv.reader([line], delimiter=delimiter))
