"""Lookup tables and text columns for the sample data generator (:mod:`steps.sample.generate`).

A product catalogue of 50 items of a fictional home-and-lifestyle web shop,
customer locations with their UTC offsets, name parts for usernames, and the
vectorised (Arrow) building of the guidance's text columns from integer codes,
RFC 2822 dates included. Everything is invented; e-mail addresses are at
``example.com`` and phone numbers are ``+1555010xxxx``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

COLUMNS: tuple[str, ...] = (
    "EventName", "ProductCode", "ProductName", "ProductDescription", "UnitPrice", "Quantity",
    "CustomerID", "Username", "ChannelType", "Address", "City", "State", "Country", "Date",
)
EVENTS = ("PURCHASED", "purchased", "Purchased", "VIEWED", "ADDED_TO_CART")
BAD_DATES = ("not a date", "31/13/2026 10:00", "Thu, 31 Feb 2026 10:00:00 +0000")
BAD_PRICES = ("N/A", "twelve", "$$")
DAY = 86400
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# (ProductCode, ProductName, ProductDescription, UnitPrice). Some descriptions
# contain commas or quotes on purpose, so CSV quoting is exercised.
PRODUCTS: tuple[tuple[str, str, str, float], ...] = (
    ("P1001", "Ceramic Mug", "Stoneware mug, 350 ml, dishwasher safe", 12.50),
    ("P1002", "Espresso Cups (Set of 4)", "Porcelain cups with saucers", 24.00),
    ("P1003", "Cotton Tea Towel", "Striped kitchen towel, 50 x 70 cm", 7.95),
    ("P1004", "Bamboo Cutting Board", "Large board with juice groove", 29.90),
    ("P1005", "Chef's Knife", '8" stainless steel chef\'s knife', 64.00),
    ("P1006", "Cast Iron Skillet", "Pre-seasoned 26 cm skillet", 45.00),
    ("P1007", "French Press", "Glass coffee press, 1 litre", 34.50),
    ("P1008", "Pour-Over Coffee Filters", "Pack of 100 unbleached paper filters", 5.49),
    ("P1009", "Whole Bean Coffee", "Medium roast, 500 g bag", 14.90),
    ("P1010", "Loose Leaf Green Tea", "Sencha, 100 g tin", 11.00),
    ("P1011", "Glass Storage Jars (Set of 3)", "Airtight jars with bamboo lids", 27.00),
    ("P1012", "Linen Tablecloth", "Washed linen, 140 x 240 cm, natural", 79.00),
    ("P1013", "Scented Candle", "Soy wax candle, fig and cedar", 18.00),
    ("P1014", "Candle Holder", "Brass taper candle holder", 22.00),
    ("P1015", "Throw Blanket", "Wool blend throw, 130 x 170 cm", 89.00),
    ("P1016", "Cushion Cover", "Cotton cover, 45 x 45 cm, sage", 19.50),
    ("P1017", "Feather Cushion Insert", "Duck feather insert, 45 x 45 cm", 16.00),
    ("P1018", "Table Lamp", "Ceramic base lamp with linen shade", 129.00),
    ("P1019", "LED Bulb (2-Pack)", "E27 warm white bulbs, dimmable", 9.99),
    ("P1020", "Wall Clock", "Silent quartz clock, 30 cm, oak", 49.00),
    ("P1021", "Picture Frame A4", "Oak frame with glass front", 21.00),
    ("P1022", "Framed Art Print", "Botanical print, 50 x 70 cm, framed", 115.00),
    ("P1023", "Indoor Plant Pot", "Terracotta pot with saucer, 18 cm", 15.00),
    ("P1024", "Watering Can", "Galvanised steel, 1.5 litre", 26.00),
    ("P1025", "Succulent Trio", "Three live succulents in mini pots", 19.90),
    ("P1026", "Bath Towel", "Organic cotton, 70 x 140 cm", 32.00),
    ("P1027", "Hand Soap", "Lavender liquid soap, 300 ml", 8.50),
    ("P1028", "Bath Mat", "Cotton bath mat, 50 x 80 cm", 24.00),
    ("P1029", "Shower Curtain", "Waffle weave, water repellent", 38.00),
    ("P1030", "Laundry Basket", "Woven seagrass basket with lid", 55.00),
    ("P1031", "Duvet Cover Set", "Percale cotton, double, white", 99.00),
    ("P1032", "Fitted Sheet", "Percale cotton, double", 42.00),
    ("P1033", "Pillow (Pair)", "Hypoallergenic pillows, medium firm", 48.00),
    ("P1034", "Weighted Blanket", "7 kg blanket, glass beads, grey", 149.00),
    ("P1035", "Desk Organiser", "Walnut desk tray with pen slots", 36.00),
    ("P1036", "Notebook A5", "Dotted pages, lay-flat binding", 13.50),
    ("P1037", "Fountain Pen", "Steel nib, refillable converter", 58.00),
    ("P1038", "Ink Cartridges", "Pack of 6, blue-black", 6.50),
    ("P1039", "Reading Lamp", "Adjustable arm lamp, matte black", 84.00),
    ("P1040", "Stand Mixer", "5 litre bowl, 10 speeds, cream", 349.00),
    ("P1041", "Blender", "1.5 litre jug, 1200 W", 119.00),
    ("P1042", "Dutch Oven", "Enamelled cast iron, 5.2 litre", 229.00),
    ("P1043", "Cookware Set", "Stainless steel, 5 pieces, induction ready", 279.00),
    ("P1044", "Wine Glasses (Set of 6)", "Lead-free crystal, 450 ml", 54.00),
    ("P1045", "Serving Platter", "Handmade stoneware, 38 cm", 46.00),
    ("P1046", "Cutlery Set", "24 pieces, brushed steel", 139.00),
    ("P1047", "Rug", "Hand-woven wool rug, 160 x 230 cm", 399.00),
    ("P1048", "Floor Lamp", "Arc floor lamp, marble base", 259.00),
    ("P1049", "Gift Card", "Digital gift card, delivered by e-mail", 50.00),
    ("P1050", "Reusable Shopping Bag", "Recycled cotton tote", 4.99),
)

# (City, State, Country, UTC offset in minutes outside DST, DST rule, weight).
# DST rule: 0 none, 1 northern (+60 min Apr-Oct), 2 southern (+60 min Oct-Mar).
LOCATIONS: tuple[tuple[str, str, str, int, int, float], ...] = (
    ("Seattle", "WA", "US", -480, 1, 6.0),
    ("San Francisco", "CA", "US", -480, 1, 7.0),
    ("Denver", "CO", "US", -420, 1, 4.0),
    ("Chicago", "IL", "US", -360, 1, 7.0),
    ("Austin", "TX", "US", -360, 1, 5.0),
    ("New York", "NY", "US", -300, 1, 10.0),
    ("Boston", "MA", "US", -300, 1, 5.0),
    ("Toronto", "ON", "CA", -300, 1, 5.0),
    ("London", "England", "GB", 0, 1, 8.0),
    ("Dublin", "Leinster", "IE", 0, 1, 3.0),
    ("Reykjavik", "Capital Region", "IS", 0, 0, 1.0),
    ("Berlin", "Berlin", "DE", 60, 1, 6.0),
    ("Paris", "Ile-de-France", "FR", 60, 1, 5.0),
    ("Mumbai", "Maharashtra", "IN", 330, 0, 6.0),
    ("Bengaluru", "Karnataka", "IN", 330, 0, 5.0),
    ("Singapore", "Singapore", "SG", 480, 0, 3.0),
    ("Tokyo", "Tokyo", "JP", 540, 0, 4.0),
    ("Sydney", "NSW", "AU", 600, 2, 4.0),
    ("Sao Paulo", "SP", "BR", -180, 0, 4.0),
)

FIRST_NAMES: tuple[str, ...] = (
    "alex", "maria", "sam", "priya", "li", "noah", "emma", "omar", "yuki", "lucas",
    "ana", "ben", "chloe", "david", "fatima", "george", "hana", "ivan", "julia", "kofi",
)
LAST_NAMES: tuple[str, ...] = (
    "smith", "garcia", "chen", "patel", "muller", "kim", "silva", "brown", "sato", "khan",
    "jones", "martin", "rossi", "nguyen", "walker", "dubois", "lopez", "singh", "novak", "okafor",
)


def text(values: Sequence[str]) -> pa.Array:
    """Return ``values`` as an Arrow ``large_string`` array (what pandas string columns hold)."""
    return pa.array(values, type=pa.large_string())


def join(*parts: pa.Array | str) -> pa.Array:
    """Concatenate string arrays and literals element-wise."""
    args = [pa.scalar(p, pa.large_string()) if isinstance(p, str) else p for p in parts]
    return pc.binary_join_element_wise(*args, pa.scalar("", pa.large_string()))


def offset_minutes(loc: np.ndarray, utc: np.ndarray) -> np.ndarray:
    """Return the UTC offset of each location index ``loc`` at UTC seconds ``utc``.

    A simplified DST rule: +60 minutes in April-October (northern) or
    October-March (southern), by the UTC month.
    """
    base = np.array([x[3] for x in LOCATIONS])[loc]
    rule = np.array([x[4] for x in LOCATIONS])[loc]
    month = utc.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64) % 12 + 1
    dst = ((rule == 1) & (month >= 4) & (month <= 10)) | ((rule == 2) & ((month >= 10) | (month <= 3)))
    return base + 60 * dst


def format_dates(utc: np.ndarray, offset: np.ndarray) -> pa.Array:
    """Format UTC seconds as RFC 2822 local times, e.g. ``Mon, 19 Sep 2022 12:16:01 +0530``.

    Parameters
    ----------
    utc : numpy.ndarray
        Seconds since the Unix epoch (int64).
    offset : numpy.ndarray
        UTC offset of each value in minutes, one of :func:`offset_minutes`'s values.

    Returns
    -------
    pyarrow.Array
        ``large_string`` dates; English day and month names whatever the locale.
    """
    day, sec = np.divmod(utc + offset * 60, DAY)
    first = int(day.min())
    dates = [dt.date(1970, 1, 1) + dt.timedelta(days=d) for d in range(first, int(day.max()) + 1)]
    day_txt = text([f"{WEEKDAYS[d.weekday()]}, {d.day:02d} {MONTHS[d.month - 1]} {d.year} " for d in dates])
    sec_txt = text([f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d} " for s in range(DAY)])
    offs = np.unique([x[3] + 60 * dst for x in LOCATIONS for dst in (0, 1)])
    off_txt = text([f"{'-' if o < 0 else '+'}{abs(o) // 60:02d}{abs(o) % 60:02d}" for o in offs])
    return join(day_txt.take(day - first), sec_txt.take(sec), off_txt.take(np.searchsorted(offs, offset)))


def to_frame(c: dict[str, np.ndarray], rows: dict[str, np.ndarray]) -> pd.DataFrame:
    """Build the guidance columns from integer-coded rows.

    Parameters
    ----------
    c : dict of numpy.ndarray
        Per customer: ``group``, ``loc`` (index into :data:`LOCATIONS`), ``sms`` (bool),
        ``first`` and ``surname`` (indexes into the name tables).
    rows : dict of numpy.ndarray
        Per row: ``cust`` (customer index), ``prod`` (index into :data:`PRODUCTS`), ``qty``,
        ``utc`` (seconds), ``event`` (index into :data:`EVENTS`) and ``flag``: 0 missing
        CustomerID, 1 unparseable Date, 2 non-numeric UnitPrice, anything else as is.

    Returns
    -------
    pandas.DataFrame
        :data:`COLUMNS`; ``Quantity`` int64, the others pandas string columns.
    """
    n_cust, cust, flag = len(c["group"]), rows["cust"], rows["flag"]
    num = pc.cast(pa.array(np.arange(1, n_cust + 1)), pa.large_string())
    user = join(text(FIRST_NAMES).take(c["first"]), ".", text(LAST_NAMES).take(c["surname"]), num)
    phone = pc.utf8_lpad(pc.cast(pa.array(np.arange(1, n_cust + 1) % 10000), pa.large_string()), 4, "0")
    address = pc.if_else(pa.array(c["sms"]), join("+1555010", phone), join(user, "@example.com"))
    loc = c["loc"][cust]
    bad = flag == 1
    date = pc.replace_with_mask(format_dates(rows["utc"], offset_minutes(loc, rows["utc"])), pa.array(bad),
                                text([BAD_DATES[i % len(BAD_DATES)] for i in range(bad.sum())]))
    price_idx = rows["prod"].copy()
    price_idx[flag == 2] = len(PRODUCTS) + np.arange((flag == 2).sum()) % len(BAD_PRICES)
    cols = {
        "EventName": text(EVENTS).take(rows["event"]),
        **{name: text([p[i] for p in PRODUCTS]).take(rows["prod"])
           for i, name in enumerate(("ProductCode", "ProductName", "ProductDescription"))},
        "UnitPrice": text([f"{p[3]:.2f}" for p in PRODUCTS] + list(BAD_PRICES)).take(price_idx),
        "Quantity": rows["qty"],
        "CustomerID": pc.utf8_lpad(num, max(7, len(str(n_cust))), "0").take(pa.array(cust, mask=flag == 0)),
        "Username": user.take(cust),
        "ChannelType": text(["EMAIL", "SMS"]).take(c["sms"][cust].astype(np.int8)),
        "Address": address.take(cust),
        **{name: text([x[i] for x in LOCATIONS]).take(loc)
           for i, name in enumerate(("City", "State", "Country"))},
        "Date": date,
    }
    return pd.DataFrame({k: v if k == "Quantity" else pd.Series(v, dtype="str") for k, v in cols.items()})
