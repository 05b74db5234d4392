"""Times as people type them, for searches, exports and confirmations: ``2026-05-20T08:00``,
``2026-05-20 08:00:30``, ``2026-05-20`` (local time unless an offset such as ``+02:00`` or ``Z`` is given),
or back from now: ``30m``, ``8h``, ``2d`` (also written ``-8h``), ``now``."""
from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Optional

from ..errors import ConfigError

_RELATIVE = re.compile(r"^-?\s*(\d+(?:\.\d+)?)\s*([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: Optional[str], now_ns: Optional[int] = None) -> Optional[int]:
    """Nanoseconds since the epoch for ``text`` (module docstring); None for None or blank text;
    ConfigError naming the text otherwise."""
    if text is None or not str(text).strip():
        return None
    value = str(text).strip()
    now_ns = time.time_ns() if now_ns is None else now_ns
    if value.lower() == "now":
        return now_ns
    match = _RELATIVE.match(value.lower())
    if match:
        return now_ns - int(float(match.group(1)) * _UNIT_S[match.group(2)] * 1e9)
    try:
        moment = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value)
    except ValueError:
        raise ConfigError(f"cannot read the time {value!r}: use e.g. 2026-05-20T08:00, 2026-05-20 or 8h (8 hours ago)") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # local time
    return int(moment.timestamp() * 1e9)


def format_time(ns: Optional[int], with_date: bool = True) -> str:
    """Local time of ``ns`` as "YYYY-MM-DD HH:MM:SS" (or "HH:MM:SS"); "" for None."""
    if ns is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S", time.localtime(ns / 1e9))


def iso_utc(ns: Optional[int]) -> str:
    """ISO 8601 UTC with milliseconds ("2026-05-20T06:00:00.123Z"); "" for None."""
    if ns is None:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns // 1_000_000 % 1000:03d}Z"


__all__ = ["parse_time", "format_time", "iso_utc"]
