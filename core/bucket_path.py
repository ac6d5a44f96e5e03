"""Flume's ``BucketPath`` escapes: ``hdfs.path`` and ``hdfs.filePrefix`` templates expanded for one event.

A template is cut into literal text and tags by Flume's own grammar, ``%(\\w|%)`` | ``%\\{([\\w.-]+)\\}`` |
``%\\[(\\w+)\\]`` (Java's ``\\w``: ASCII letters, digits and ``_``); anything else is literal (``%{a b}`` stays as
written).  Tags:

* ``%{name}``: the header ``name``, or "" when the event does not have it;
* ``%[localhost]``, ``%[IP]``, ``%[FQDN]`` (any case): this host's name, address and canonical name, found once;
  any other ``%[...]`` is refused when the template is compiled (Flume fails at the first event);
* ``%x``: one letter (or ``%%``), a time escape as Java's ``SimpleDateFormat`` writes it in English: ``%a`` Sat,
  ``%A`` Saturday, ``%b`` Jun, ``%B`` June, ``%c`` "Sat Jun 23 13:46:33 2012" (day unpadded), ``%d`` 23, ``%e``
  day unpadded, ``%D`` 06/23/12, ``%H`` 13, ``%I`` 01, ``%j`` 175, ``%k`` hour unpadded, ``%l`` 12-hour unpadded,
  ``%m`` 06, ``%n`` month unpadded, ``%M`` 46, ``%p`` PM, ``%s`` epoch seconds, ``%S`` 33, ``%t`` the raw
  ``timestamp`` header (never rounded), ``%y`` 12, ``%Y`` 2012, ``%z`` +0000, ``%%`` a percent sign, any other
  letter "".

Every ``%x`` tag, ``%%`` and unknown letters included, needs the event's time: the ``timestamp`` header as epoch
milliseconds, or with ``useLocalTimeStamp`` the clock, read **once per expansion** (Flume's ``testDateRace``).
A missing header raises :class:`MissingTimestamp`, a non-numeric one :class:`BadTimestamp`.  The time is rounded
down first when rounding is on: calendar-field based in the template's zone (minute 46 rounded to 7 is 42), lower
fields zeroed; the zone is ``timeZone`` or the process's local zone (the JVM's default).
"""
from __future__ import annotations

import datetime as dt
import re
import socket
import time
from functools import lru_cache
from typing import Callable, Mapping

TAG = re.compile(r"%([A-Za-z0-9_]|%)|%\{([A-Za-z0-9_.-]+)\}|%\[([A-Za-z0-9_]+)\]")
ROUND_LIMITS = {"second": 60, "minute": 60, "hour": 24}

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")


class EscapeError(ValueError):
    """An event whose time a template cannot expand (its message is the reason, for the dead-letter channel)."""


class MissingTimestamp(EscapeError):
    pass


class BadTimestamp(EscapeError):
    pass


# --- this host -------------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def host_values() -> dict[str, str]:
    """``localhost``/``ip``/``fqdn`` as Java's ``InetAddress.getLocalHost()`` gives them, found once."""
    name = socket.gethostname()
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        found = [info[4][0] for info in infos]
        address = ([a for a in found if ":" not in a] + found)[0]
    except (OSError, IndexError):
        address = "127.0.0.1"
    try:
        fqdn = socket.gethostbyaddr(address)[0]
    except OSError:
        fqdn = address
    return {"localhost": name, "ip": address, "fqdn": fqdn}


def static_value(key: str) -> str:
    try:
        return host_values()[key.lower()]
    except KeyError:
        raise ValueError(f"the static escape '%[{key}]' must be one of %[localhost], %[IP], %[FQDN]") from None


# --- time formatting --------------------------------------------------------------------------------------------

def _offset(t: dt.datetime) -> str:
    minutes = int(t.utcoffset().total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"


def _hour12(t: dt.datetime) -> int:
    return t.hour % 12 or 12


TIME_FORMATS: dict[str, Callable[[dt.datetime], str]] = {
    "a": lambda t: DAYS[t.weekday()][:3],
    "A": lambda t: DAYS[t.weekday()],
    "b": lambda t: MONTHS[t.month - 1][:3],
    "B": lambda t: MONTHS[t.month - 1],
    "c": lambda t: f"{DAYS[t.weekday()][:3]} {MONTHS[t.month - 1][:3]} {t.day} {t:%H:%M:%S} {t.year:04d}",
    "d": lambda t: f"{t.day:02d}",
    "e": lambda t: str(t.day),
    "D": lambda t: f"{t.month:02d}/{t.day:02d}/{t.year % 100:02d}",
    "H": lambda t: f"{t.hour:02d}",
    "I": lambda t: f"{_hour12(t):02d}",
    "j": lambda t: f"{t.timetuple().tm_yday:03d}",
    "k": lambda t: str(t.hour),
    "l": lambda t: str(_hour12(t)),
    "m": lambda t: f"{t.month:02d}",
    "M": lambda t: f"{t.minute:02d}",
    "n": lambda t: str(t.month),
    "p": lambda t: "AM" if t.hour < 12 else "PM",
    "S": lambda t: f"{t.second:02d}",
    "y": lambda t: f"{t.year % 100:02d}",
    "Y": lambda t: f"{t.year:04d}",
    "z": _offset,
}


def to_local(ts_ms: int, zone: dt.tzinfo | None) -> dt.datetime:
    """The aware local date-time of an instant in ``zone`` (None: the process's local zone, the JVM's default)."""
    if zone is None:
        return dt.datetime.fromtimestamp(ts_ms / 1000).astimezone()
    return dt.datetime.fromtimestamp(ts_ms / 1000, zone)


def round_down(ts_ms: int, unit: str, value: int, zone: dt.tzinfo | None) -> int:
    """Flume's TimestampRoundDownUtil: the calendar field ``unit`` rounded down to a multiple of ``value`` in
    ``zone``, lower fields zeroed (milliseconds included)."""
    if ts_ms <= 0:
        raise BadTimestamp(f"timestamp {ts_ms} must be positive to be rounded")
    local = to_local(ts_ms, zone).replace(microsecond=0)
    if unit == "second":
        local = local.replace(second=local.second - local.second % value)
    elif unit == "minute":
        local = local.replace(minute=local.minute - local.minute % value, second=0)
    elif unit == "hour":
        local = local.replace(hour=local.hour - local.hour % value, minute=0, second=0)
    wall = local.replace(tzinfo=None, fold=0)           # the earlier instant of a repeated wall time, as Java
    return int(round((wall if zone is None else wall.replace(tzinfo=zone)).timestamp() * 1000))


# --- templates --------------------------------------------------------------------------------------------------

class BucketPath:
    """A compiled template.  ``expand(headers)`` gives the string for one event, or raises :class:`EscapeError`.

    ``round_unit`` is ``second``, ``minute``, ``hour`` or None (no rounding); ``clock`` returns epoch milliseconds
    (injected by tests).  Raises ValueError at construction for an unknown ``%[...]`` escape.
    """

    def __init__(self, template: str, zone: dt.tzinfo | None = None, round_unit: str | None = None,
                 round_value: int = 1, use_local_timestamp: bool = False,
                 clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000):
        self.template = template
        self.zone = zone
        self.round_unit = round_unit
        self.round_value = max(1, round_value)
        self.use_local_timestamp = use_local_timestamp
        self.clock = clock
        self.parts: list[tuple[str, str]] = []       # ("text"|"header"|"time", value)
        at = 0
        for match in TAG.finditer(template):
            if match.start() > at:
                self.parts.append(("text", template[at:match.start()]))
            letter, header, static = match.groups()
            if header is not None:
                self.parts.append(("header", header))
            elif static is not None:
                self.parts.append(("text", static_value(static)))
            else:
                self.parts.append(("time", letter))
            at = match.end()
        if at < len(template):
            self.parts.append(("text", template[at:]))
        self.needs_time = any(kind == "time" for kind, _ in self.parts)
        self.needs_headers = any(kind == "header" for kind, _ in self.parts)
        self.is_static = not (self.needs_time or self.needs_headers)
        # A template of second-grained time escapes only expands the same for every event of one second.
        self._by_second: dict[int, str] | None = (
            {} if self.needs_time and not self.needs_headers and ("time", "t") not in self.parts else None)

    def __repr__(self) -> str:
        return f"BucketPath({self.template!r})"

    def expand(self, headers: Mapping[str, str]) -> str:
        if self.is_static:
            return "".join(value for _, value in self.parts)
        raw = ts = local = None
        if self.needs_time:
            raw, ts = self._time(headers)
            cache = self._by_second
            if cache is not None:
                found = cache.get(ts // 1000)
                if found is not None:
                    return found
            local = to_local(ts, self.zone)
        out = "".join(self._part(kind, value, headers, raw, ts, local) for kind, value in self.parts)
        if self.needs_time and self._by_second is not None:
            if len(self._by_second) > 4096:
                self._by_second.clear()
            self._by_second[ts // 1000] = out
        return out

    def _time(self, headers: Mapping[str, str]) -> tuple[str, int]:
        """(the raw timestamp text for %t, the possibly rounded time in ms)."""
        if self.use_local_timestamp:
            ts = self.clock()
            raw = str(ts)
        else:
            raw = headers.get("timestamp")
            if raw is None:
                raise MissingTimestamp("the event has no 'timestamp' header (set hdfs.useLocalTimeStamp = true, "
                                       "or add the timestamp interceptor to the source)")
            try:
                ts = int(raw.strip())
            except ValueError:
                raise BadTimestamp(f"the event's 'timestamp' header is not epoch milliseconds (got {raw!r:.40})") \
                    from None
        if self.round_unit:
            ts = round_down(ts, self.round_unit, self.round_value, self.zone)
        return raw, ts

    def _part(self, kind: str, value: str, headers: Mapping[str, str], raw: str | None, ts: int | None,
              local: dt.datetime | None) -> str:
        if kind == "text":
            return value
        if kind == "header":
            return headers.get(value, "")
        if value == "%":
            return "%"
        if value == "t":
            return raw
        if value == "s":
            return str(int(ts / 1000) if ts < 0 else ts // 1000)     # Java's long division truncates
        formatter = TIME_FORMATS.get(value)
        return "" if formatter is None else formatter(local)
