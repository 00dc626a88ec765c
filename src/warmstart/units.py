"""Byte sizes for humans: ``10GiB``, ``500M``, ``1.5 GB`` <-> integers."""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1 << 10,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1 << 20,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1 << 30,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1 << 40,
}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Parse ``'2GiB'`` -> 2147483648. Raises ValueError with a one-line message."""
    m = _SIZE_RE.match(text or "")
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _UNITS:
        raise ValueError(
            f"invalid size {text!r}: use a number with an optional unit, e.g. 500MiB or 20G"
        )
    return int(float(m.group(1)) * _UNITS[unit])


def format_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# Rates: "<number><unit>/s" with B = bytes and b = bits ("300MB/s", "25Gb/s", "1.7GiB/s"), or
# tc(8)'s spelling ("800mbit", "25gbit"; tc's "mbps" means megabytes/s, as in tc).
_RATE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMgGtT]?i?)([bB])/s\s*$")
_TC_RATE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]+)\s*$")
_TC_RATE_UNITS = {  # bytes per second per unit
    "bit": 1 / 8,
    "kbit": 1e3 / 8,
    "mbit": 1e6 / 8,
    "gbit": 1e9 / 8,
    "tbit": 1e12 / 8,
    "bps": 1.0,
    "kbps": 1e3,
    "mbps": 1e6,
    "gbps": 1e9,
}


def parse_rate(text: str) -> float:
    """Bytes per second of ``'300MB/s'``, ``'25Gb/s'``, ``'1.7GiB/s'`` or a tc rate
    (``'800mbit'``). Raises ValueError with a one-line message."""
    m = _RATE_RE.match(text or "")
    if m:
        prefix = m.group(2).lower()
        scale = _UNITS[prefix + "b"] if prefix else 1
        value = float(m.group(1)) * scale / (8 if m.group(3) == "b" else 1)
    else:
        t = _TC_RATE_RE.match(text or "")
        unit = t.group(2).lower() if t else ""
        if t is None or unit not in _TC_RATE_UNITS:
            raise ValueError(
                f"invalid rate {text!r}: e.g. 300MB/s, 25Gb/s (bits), 1.7GiB/s or 800mbit"
            )
        value = float(t.group(1)) * _TC_RATE_UNITS[unit]
    if value <= 0:
        raise ValueError(f"invalid rate {text!r}: must be positive")
    return value


def format_rate(bytes_per_s: float) -> str:
    """``3.125e9`` -> ``'3.12 GB/s'`` (decimal units, as links are sold)."""
    for unit, scale in (("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)):
        if bytes_per_s >= scale:
            return f"{bytes_per_s / scale:.3g} {unit}"
    return f"{bytes_per_s:.3g} B/s"
