"""Column names: the one place they are spelled.

Canonical transaction columns are what every input format is normalised to;
feature and segment columns are what the steps write.
"""

from __future__ import annotations

# Canonical transaction columns (after format detection and column mapping).
CUSTOMER_ID = "customer_id"
ORDER_ID = "order_id"
TIMESTAMP = "timestamp"
AMOUNT = "amount"
QUANTITY = "quantity"
UNIT_PRICE = "unit_price"
EVENT = "event"
EMAIL = "email"
PHONE = "phone"
ADDRESS = "address"
CHANNEL = "channel"

EVENT_ID = "event_id"
LINE_ID = "line_id"

CONTACT_COLUMNS: tuple[str, ...] = (EMAIL, PHONE, ADDRESS, CHANNEL)
# Ids that tell two purchases apart: with any of them, identical rows are exact duplicates.
ROW_ID_COLUMNS: tuple[str, ...] = (ORDER_ID, EVENT_ID, LINE_ID)

# Per-customer feature columns (rfm.parquet).
FIRST_PURCHASE = "first_purchase"
LAST_PURCHASE = "last_purchase"
RECENCY_DAYS = "recency_days"
FREQUENCY = "frequency"
MONETARY = "monetary"
AVG_ORDER_VALUE = "avg_order_value"
R_SCORE = "r_score"
F_SCORE = "f_score"
M_SCORE = "m_score"
RFM_SCORE = "rfm_score"
RFM_SEGMENT = "rfm_segment"

FEATURE_COLUMNS: tuple[str, ...] = (
    CUSTOMER_ID,
    FIRST_PURCHASE,
    LAST_PURCHASE,
    RECENCY_DAYS,
    FREQUENCY,
    MONETARY,
    AVG_ORDER_VALUE,
    R_SCORE,
    F_SCORE,
    M_SCORE,
    RFM_SCORE,
    RFM_SEGMENT,
)

# The numeric inputs of the segmenter (k-means), in this order.
MODEL_FEATURES: tuple[str, ...] = (RECENCY_DAYS, FREQUENCY, MONETARY)

# What the features step hands to batch transform (CSV with this header), and
# what serve accepts; scores are passed so serve can name the RFM segment.
TRANSFORM_INPUT_COLUMNS: tuple[str, ...] = (
    CUSTOMER_ID,
    RECENCY_DAYS,
    FREQUENCY,
    MONETARY,
    R_SCORE,
    F_SCORE,
    M_SCORE,
)

# Segment assignment (serve's response, and the transform output).
CLUSTER = "cluster"
CLUSTER_NAME = "cluster_name"
ASSIGNMENT_COLUMNS: tuple[str, ...] = (CUSTOMER_ID, CLUSTER, CLUSTER_NAME, RFM_SEGMENT)

# segments.parquet: one row per customer, then the contact columns present.
SEGMENT_COLUMNS: tuple[str, ...] = (
    CUSTOMER_ID,
    CLUSTER,
    CLUSTER_NAME,
    RFM_SEGMENT,
    R_SCORE,
    F_SCORE,
    M_SCORE,
    RECENCY_DAYS,
    FREQUENCY,
    MONETARY,
)

# Segments over time: segments.parquet also says where each customer was at the last publish, and
# changes.parquet lists the customers whose segment or cluster changed since then.
PREVIOUS_SEGMENT = "previous_segment"
PREVIOUS_CLUSTER_NAME = "previous_cluster_name"
SEGMENT = "segment"
CHANGE = "change"
HISTORY_COLUMNS: tuple[str, ...] = (PREVIOUS_SEGMENT, PREVIOUS_CLUSTER_NAME)
CHANGE_COLUMNS: tuple[str, ...] = (CUSTOMER_ID, PREVIOUS_SEGMENT, SEGMENT, PREVIOUS_CLUSTER_NAME, CLUSTER_NAME, CHANGE)
ENTERED, LEFT, MOVED = "entered", "left", "moved"  # the values of ``change``

# Quarantine files carry the offending row plus these.
QUARANTINE_REASON = "quarantine_reason"
SOURCE_FILE = "source_file"
SOURCE_ROW = "source_row"
