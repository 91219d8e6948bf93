"""The batch-transform input: every customer once, in files of a fixed number of customers.

SageMaker batch transform hands each instance whole S3 objects, so ``TransformInstanceCount``
instances share the work only when the input is several files. ComputeRFM writes
``customers-00000.csv``, ``customers-00001.csv``, ... (``paths.transform_input_file``): each
``TRANSFORM_FILE_ROWS`` customers (the last one the rest), with the CSV header, in customer id order,
so the file names sort as the ids do. ``RFM_TRANSFORM_FILE_ROWS`` in the environment sets another
size (the local runner's tests use it to split the small bundled sample).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import duckdb

from steps import columns as c
from steps import paths
from steps.environment import env_number
from steps.features.parsing import literal

# 250,000 customers are about 8 MB of CSV: two 6 MB transform mini-batches, a minute or less of one
# instance's work; 1,000,000 customers give 4 files, 10,000,000 give 40 (the most instances worth starting).
TRANSFORM_FILE_ROWS = 250_000
FILE_ROWS_ENV = "RFM_TRANSFORM_FILE_ROWS"
_NUMBERED = "transform_input_rows"
_ROW = "_transform_row"


def file_rows(environ: Mapping[str, str] = os.environ) -> int:
    """Customers per transform input file: ``RFM_TRANSFORM_FILE_ROWS``, else ``TRANSFORM_FILE_ROWS``."""
    return env_number(environ, FILE_ROWS_ENV, TRANSFORM_FILE_ROWS, int, minimum=1, where="rfm-features environment")


def file_count(customers: int, rows_per_file: int) -> int:
    """How many files ``customers`` customers take (one, header only, when there are none).

    >>> file_count(0, 250_000), file_count(250_000, 250_000), file_count(250_001, 250_000)
    (1, 1, 2)
    """
    return max(1, math.ceil(customers / rows_per_file))


def write_transform_input(con: duckdb.DuckDBPyConnection, select_sql: str, folder: Path, customers: int,
                          rows_per_file: int | None = None) -> list[str]:
    """Write the ``TRANSFORM_INPUT_COLUMNS`` of ``select_sql`` (one row per customer, ``customers`` of them:
    the caller has counted them) to ``folder`` as files of ``rows_per_file`` customers (default
    :func:`file_rows`), in customer id order; return their names. The last file takes whatever rows remain,
    so none is left out. Transform input files already in ``folder`` are removed first: a customer is never
    in two."""
    rows_per_file = rows_per_file or file_rows()
    for stale in folder.glob(paths.TRANSFORM_INPUT_GLOB):
        stale.unlink()
    columns = ", ".join(c.TRANSFORM_INPUT_COLUMNS)
    count = file_count(customers, rows_per_file)
    names = [paths.transform_input_file(index) for index in range(count)]
    if count == 1:
        con.execute(f"COPY (SELECT {columns} FROM ({select_sql}) ORDER BY {c.CUSTOMER_ID}) "
                    f"TO {literal(str(folder / names[0]))} (FORMAT csv, HEADER)")
        return names
    # Numbered once, stored in that order: each file's range then reads only its own row groups.
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {_NUMBERED} AS
        SELECT row_number() OVER (ORDER BY {c.CUSTOMER_ID}) - 1 AS {_ROW}, {columns}
        FROM ({select_sql}) ORDER BY {_ROW}""")
    try:
        for index, name in enumerate(names):
            first = index * rows_per_file
            until = f" AND {_ROW} < {first + rows_per_file}" if index < count - 1 else ""  # the last: the rest
            con.execute(f"""COPY (SELECT {columns} FROM {_NUMBERED}
                                  WHERE {_ROW} >= {first}{until} ORDER BY {_ROW})
                            TO {literal(str(folder / name))} (FORMAT csv, HEADER)""")
    finally:
        con.execute(f"DROP TABLE IF EXISTS {_NUMBERED}")
    return names
