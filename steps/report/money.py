"""Money in a currency (the ``Currency`` parameter, an ISO 4217 code), for the report and the console.

One number format everywhere: thousands separators, the currency's usual decimals (none for
JPY, KRW, ...), the symbol before the amount for the common currencies and the code otherwise.
"""

from __future__ import annotations

import math

DEFAULT_CURRENCY = "USD"
SYMBOLS = {"USD": "$", "EUR": "\u20ac", "GBP": "\u00a3", "JPY": "\u00a5", "INR": "\u20b9", "CNY": "CN\u00a5",
           "AUD": "A$", "CAD": "CA$", "KRW": "\u20a9", "BRL": "R$"}
ZERO_DECIMALS = frozenset({"JPY", "KRW", "ISK", "CLP", "VND", "HUF"})
DASH = "\u2013"


def money(value: float | None, currency: str = DEFAULT_CURRENCY, decimals: int | None = None) -> str:
    """``value`` formatted in ``currency``.

    Examples
    --------
    >>> money(1234.5), money(-20, "EUR"), money(1234.5, "JPY"), money(99.999, "CHF"), money(float("nan"))
    ('$1,234.50', '-€20.00', '¥1,234', 'CHF 100.00', '–')
    """
    if value is None or not math.isfinite(float(value)):
        return DASH
    places = (0 if currency in ZERO_DECIMALS else 2) if decimals is None else decimals
    amount = f"{abs(float(value)):,.{places}f}"
    sign = "-" if float(value) < 0 and float(amount.replace(",", "")) != 0 else ""
    symbol = SYMBOLS.get(currency)
    return f"{sign}{symbol}{amount}" if symbol else f"{sign}{currency} {amount}"
