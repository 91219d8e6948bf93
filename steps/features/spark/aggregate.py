"""``customer_rows`` in Spark: the DuckDB engine's per-customer totals, exact.

Same columns (``steps.features.aggregate.CUSTOMER_TOTALS``) and meaning as
:func:`steps.features.aggregate.aggregate_customers` after
:func:`~steps.features.aggregate.correct_identical_rows`: one row per
usable customer and one per row-level reason (customer NULL). Spark groups
identical rows first (same customer and row hash; rows of a reason collapse
to one group per reason), then totals per customer, so exact duplicates are
counted once without a second pass. Side rows (``reason < 0``: a file's
rejected lines or error) pass through with their payload.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from steps.features.aggregate import contact_columns
from steps.features.spark.tasks import SIDE
from steps.features.transactions import (
    AMOUNT,
    CUST,
    DAY,
    FLOAT_ID,
    HAS_ID,
    IS_RETURN,
    ORDER,
    REASON,
    ROW_HASH,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

# Sums of money in ten-thousandths: exact, like DuckDB's HUGEINT.
MONEY = "decimal(38,0)"


def customer_rows_frame(rows: DataFrame, contacts: Sequence[str]) -> DataFrame:
    """Per-customer totals of the canonical ``rows`` (see the module docstring).

    Parameters
    ----------
    rows : DataFrame
        Canonical rows (``steps.features.spark.tasks.spark_schema``).
    contacts : sequence of str
        Contact names (each ``contact_<name>`` becomes a ``{day, value}`` struct of its latest value).
    """
    from pyspark.sql import functions as F

    usable = F.col(REASON) == 0
    names = contact_columns(contacts)
    keyed = rows.select(
        "*",
        F.when(F.col(REASON) <= 0, F.col(CUST)).alias("k_cust"),
        F.when(usable, F.col(ROW_HASH)).alias("k_hash"),
    )
    purchase_day = F.when(~F.col(IS_RETURN), F.col(DAY))
    latest = [F.max(F.when(F.col(n).isNotNull(), F.struct(F.col(DAY).alias("day"), F.col(n).alias("value"))))
              .alias(n) for n in names]
    identical = keyed.groupBy(REASON, "k_cust", "k_hash").agg(
        F.count(F.lit(1)).alias("copies"),
        F.sum(F.col(AMOUNT).cast(MONEY)).alias("amount_all"),
        F.first(AMOUNT).cast(MONEY).alias("amount_one"),
        F.sum(F.col(IS_RETURN).cast("long")).alias("returns_all"),
        F.first(IS_RETURN).alias(IS_RETURN),
        F.first(HAS_ID).alias(HAS_ID),
        F.first(ORDER).alias(ORDER),
        F.min(purchase_day).alias("first_purchase"),
        F.max(purchase_day).alias("last_purchase"),
        F.max(DAY).alias("last_day"),
        F.sum(F.col(FLOAT_ID).cast("long")).alias("float_ids"),
        *latest,
        F.first(SIDE).alias(SIDE),
    )
    zero = F.lit(0).cast("long")
    # A set of identical rows that carries an id is one row written more than once (counted once);
    # without an id every copy is a purchase (steps.features.aggregate.correct_identical_rows).
    dedupe = F.col(HAS_ID)
    repeated = F.col("copies") - 1
    return identical.groupBy(REASON, F.col("k_cust").alias(CUST)).agg(
        F.sum("copies").alias("n_rows"),
        F.when(usable, F.sum(F.when(dedupe, repeated).otherwise(zero))).otherwise(zero).alias("duplicate_rows"),
        F.when(usable, F.sum(F.when(dedupe, zero).otherwise(repeated))).otherwise(zero).alias("identical_rows"),
        F.when(usable, F.sum(F.when(dedupe, F.col("amount_one")).otherwise(F.col("amount_all"))))
        .otherwise(F.lit(0).cast(MONEY)).alias("amount"),
        F.when(usable, F.sum(F.when(dedupe, F.col(IS_RETURN).cast("long")).otherwise(F.col("returns_all"))))
        .otherwise(zero).alias("return_rows"),
        F.min("first_purchase").alias("first_purchase"),
        F.max("last_purchase").alias("last_purchase"),
        F.max("last_day").alias("last_day"),
        F.when(usable, F.countDistinct(F.when(~F.col(IS_RETURN), F.col(ORDER)))).otherwise(zero)
        .alias("frequency"),
        F.when(usable, F.sum("float_ids")).otherwise(zero).alias("float_id_rows"),
        *(F.max(n).alias(n) for n in names),
        F.first(SIDE).alias(SIDE),
    )
