"""PostgreSQL's text forms of time, timetz, interval, hstore and point, read (from PostgreSQL's
output or Debezium's ISO variants) and printed the way PostgreSQL prints them: what the MongoDB
value form (`values.py`) stores for these types, so one value has one text whichever way it came."""

from __future__ import annotations

import re
from decimal import Decimal

_DAY_US = 86_400_000_000


_TIME = re.compile(r"^(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6})\d*)?")
_OFFSET = re.compile(r"^(?:Z|([+-])(\d{2})(?::?(\d{2}))?(?::?(\d{2}))?)$")


def micros_of_time(text: str) -> int:
    m = _TIME.match(text)
    if m is None or m.end() != len(text):
        raise ValueError(f"not a time: {text!r}")
    return _micros_of(m)


def _micros_of(m: re.Match[str]) -> int:
    h, mi, s = int(m.group(1)), int(m.group(2)), int(m.group(3))
    frac = int((m.group(4) or "").ljust(6, "0"))
    return ((h * 60 + mi) * 60 + s) * 1_000_000 + frac


def timetz_of(text: str) -> tuple[int, int]:
    """(microseconds in the day, offset in seconds east of UTC) of a timetz's text."""
    m = _TIME.match(text)
    if m is None:
        raise ValueError(f"not a time: {text!r}")
    o = _OFFSET.match(text[m.end():])
    if o is None:
        raise ValueError(f"not a time zone offset: {text[m.end():]!r}")
    offset = 0
    if o.group(1):
        offset = int(o.group(2)) * 3600 + int(o.group(3) or 0) * 60 + int(o.group(4) or 0)
        offset = -offset if o.group(1) == "-" else offset
    return _micros_of(m), offset


def time_text(micros: int) -> str:
    """'HH:MM:SS[.ffffff]' with the fraction's trailing zeros trimmed, as PostgreSQL prints."""
    s, us = divmod(micros, 1_000_000)
    h, rest = divmod(s, 3600)
    text = f"{h:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return text + (f".{us:06d}".rstrip("0") if us else "")


_ISO_INTERVAL = re.compile(
    r"^P(?:([-+]?\d+)Y)?(?:([-+]?\d+)M)?(?:([-+]?\d+)W)?(?:([-+]?\d+)D)?"
    r"(?:T(?:([-+]?\d+)H)?(?:([-+]?\d+)M)?(?:([-+]?[\d.]+(?:[eE][-+]?\d+)?)S)?)?$")


def parse_interval(text: str) -> tuple[int, int, int]:
    """(months, days, microseconds) of an ISO 8601 interval (PostgreSQL's or Debezium's)."""
    m = _ISO_INTERVAL.match(text.strip())
    if m is None or text.strip() in ("P", "PT"):
        raise ValueError(f"not an ISO 8601 interval: {text!r}")
    y, mo, w, d, h, mi = (int(g or 0) for g in m.groups()[:6])
    seconds = Decimal(m.group(7) or 0)
    micros = h * 3_600_000_000 + mi * 60_000_000 + int((seconds * 1_000_000).to_integral_value())
    return y * 12 + mo, w * 7 + d, micros


def interval_text(months: int, days: int, micros: int) -> str:
    """PostgreSQL's ISO 8601 text of an interval (IntervalStyle iso_8601)."""
    if months == 0 and days == 0 and micros == 0:
        return "PT0S"

    def trunc(a: int, b: int) -> tuple[int, int]:  # C division: toward zero
        q = abs(a) // b * (1 if a >= 0 else -1)
        return q, a - q * b

    years, mons = trunc(months, 12)
    hours, rest = trunc(micros, 3_600_000_000)
    mins, rest = trunc(rest, 60_000_000)
    secs, frac = trunc(rest, 1_000_000)
    out = "P" + "".join(f"{n}{u}" for n, u in ((years, "Y"), (mons, "M"), (days, "D")) if n)
    if hours or mins or secs or frac:
        out += "T" + "".join(f"{n}{u}" for n, u in ((hours, "H"), (mins, "M")) if n)
        if secs or frac:
            sign = "-" if secs < 0 or frac < 0 else ""
            text = f"{abs(secs)}" + (f".{abs(frac):06d}".rstrip("0") if frac else "")
            out += f"{sign}{text}S"
    return out


_HSTORE_ITEM = re.compile(r'\s*"((?:[^"\\]|\\.)*)"\s*=>\s*(?:"((?:[^"\\]|\\.)*)"|(NULL))\s*,?',
                          re.IGNORECASE)
_UNESCAPE = re.compile(r"\\(.)")


def parse_hstore(text: str) -> dict[str, str | None]:
    """An hstore's text (`"a"=>"1", "b"=>NULL`) as a dict."""
    out: dict[str, str | None] = {}
    pos = 0
    while pos < len(text):
        if not text[pos:].strip():
            break
        m = _HSTORE_ITEM.match(text, pos)
        if m is None:
            raise ValueError("not hstore text")
        key = _UNESCAPE.sub(r"\1", m.group(1))
        out[key] = None if m.group(3) else _UNESCAPE.sub(r"\1", m.group(2))
        pos = m.end()
    return out


def point_of(text: str) -> tuple[float, float]:
    inner = text.strip()
    if not (inner.startswith("(") and inner.endswith(")")):
        raise ValueError("not a point")
    x, y = (float(p) for p in inner[1:-1].split(","))
    if any(v != v or v in (float("inf"), float("-inf")) for v in (x, y)):
        raise ValueError("a point's coordinate is not finite")
    return x, y
