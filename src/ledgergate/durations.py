"""Human durations in config ("500ms", "5s", "10m", "1h", "7d") as seconds.

A bare number is seconds. Kept tiny and pure so every settings module shares one
parser and one error message.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_MAX_SECONDS = 100 * 365 * 86400.0
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# ASCII digits only (`\d` would take '５' and '١'), and few enough to stay a finite float
_PATTERN = re.compile(r"^\s*([0-9]{1,12}(?:\.[0-9]{1,9})?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(value: Any) -> float:
    """Seconds for a duration; raises ValueError with the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '30s', '10m' or '1h'")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        if not math.isfinite(value) or value > _MAX_SECONDS:
            raise ValueError("a duration must be finite and at most 100 years")
        return float(value)
    if isinstance(value, str):
        match = _PATTERN.match(value)
        if match:
            seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
            if seconds <= _MAX_SECONDS:
                return seconds
            raise ValueError("a duration must be at most 100 years")
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    raise ValueError(f"expected a duration such as '30s', '10m' or '1h', got {shown}")


Duration = Annotated[float, BeforeValidator(parse_duration)]
