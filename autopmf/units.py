"""The one formatter for GiB figures: budgets, predictions, measurements, plots, logs.

A budget is shown as the user typed it, never rounded to fewer digits (0.285 stays 0.285,
0.004 stays 0.004, 2 shows as 2.00); a computed figure (a prediction, a measurement) gets three
decimals, or three significant digits below 0.01 GiB, so that it never reads 0.000.
No torch here: `autopmf log` imports it.
"""

from __future__ import annotations

import math

GIB = 2**30


def gib(value: float, exact: bool = False) -> str:
    """`value` GiB as text, without the unit. `exact` (budgets): every digit the value has,
    at least two decimals; else three decimals (three significant digits when smaller)."""
    if not math.isfinite(value):
        return str(value)
    if exact:
        # The fewest decimals (two or more) that read back as this very float: what was
        # typed, without an exponent. 17 significant digits always read back.
        most = max(2, 17 - int(math.floor(math.log10(abs(value)))) if value else 2)
        return next(f"{value:.{d}f}" for d in range(2, most + 1)
                    if float(f"{value:.{d}f}") == value or d == most)
    if value != 0 and abs(value) < 0.01:
        return f"{value:.{2 - int(math.floor(math.log10(abs(value))))}f}"
    return f"{value:.3f}"
