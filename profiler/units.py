"""Byte quantities and durations: parse what users type, format what we print."""

from __future__ import annotations

import math
import re

from .errors import ConfigError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
    "ti": 1024**4, "tib": 1024**4,
}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_bytes(value: int | float | str) -> int:
    """Turn ``2147483648``, ``"512MiB"``, ``"2GiB"`` or ``"1.5GB"`` into a positive int of bytes.

    Raises ConfigError naming the bad value and the accepted forms.
    """
    if isinstance(value, bool):
        raise ConfigError(f"memory size {value!r} is a bool; expected bytes or a string like '2GiB'")
    if isinstance(value, int):
        if value <= 0:
            raise ConfigError(f"memory size must be positive, got {value!r}")
        return value  # exact: a float would lose bytes past 2**53
    if isinstance(value, float):
        number, unit = value, ""
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if not match or match.group(2).lower() not in _UNITS:
            raise ConfigError(
                f"cannot parse memory size {value!r}; expected a number of bytes or a number "
                "with a unit, e.g. 512MiB, 2GiB, 1.5GB"
            )
        number, unit = float(match.group(1)), match.group(2).lower()
    else:
        raise ConfigError(f"memory size must be int or str, got {type(value).__name__}")
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"memory size must be positive, got {value!r}")
    if isinstance(value, str) and match.group(1).isdigit():  # the pattern allows ASCII only
        return int(match.group(1)) * _UNITS[unit]  # integers stay exact
    return int(number * _UNITS[unit])


_DURATION_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(value: int | float | str) -> float:
    """Turn ``60``, ``"60s"``, ``"2m"``, ``"1.5min"`` or ``"1h"`` into positive seconds.

    Raises ConfigError naming the bad value and the accepted forms.
    """
    hint = "expected seconds or a number with a unit, e.g. 60, 60s, 2m, 1.5min"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"cannot read time budget {value!r}; {hint}")
    if isinstance(value, str):
        match = _PATTERN.match(value)
        if not match or match.group(2).lower() not in _DURATION_UNITS:
            raise ConfigError(f"cannot read time budget {value!r}; {hint}")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"time budget must be a positive duration, got {value!r}; {hint}")
    return seconds


def format_bytes(n: int | float | None) -> str:
    """``1536 -> '1.50 KiB'``; None -> 'n/a' (an unavailable figure is never shown as 0)."""
    if n is None:
        return "n/a"
    sign = "-" if n < 0 else ""
    n = abs(float(n))
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{sign}{n:.0f} {unit}" if unit == "B" else f"{sign}{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_seconds(s: float | None) -> str:
    """``0.00206 -> '2.06 ms'``, three significant figures in s, ms, us or ns; None -> 'n/a'."""
    if s is None:
        return "n/a"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if abs(s) >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def format_duration(s: float | None) -> str:
    """Human time for any span: under a minute as :func:`format_seconds` (``'2.06 ms'``,
    ``'41.2 s'``), then ``'13 min 27 s'``, ``'13 h 27 min'``, ``'2 d 3 h'``; None -> 'n/a'."""
    if s is None or (isinstance(s, float) and not math.isfinite(s)):
        return "n/a"
    if abs(s) < 59.5:
        return format_seconds(s)
    sign, total = ("-" if s < 0 else ""), round(abs(s))
    for big, big_unit, small, small_unit in ((86400, "d", 3600, "h"), (3600, "h", 60, "min"),
                                             (60, "min", 1, "s")):
        if total >= big:
            whole, rest = divmod(total, big)
            part = round(rest / small)
            if part * small >= big:  # 59.6 min rounds up to the next hour
                whole, part = whole + 1, 0
            return f"{sign}{whole} {big_unit}" + (f" {part} {small_unit}" if part else "")
    raise AssertionError("unreachable")
