"""Flume's two syslog parsers, byte for byte: ``SyslogUtils`` (syslogtcp, syslogudp) and ``SyslogParser``
(multiport_syslogtcp), with Flume's headers and ``keepFields``.  No sockets here: the sources feed bytes in and get
``(headers, body)`` pairs out.

:class:`SyslogDecoder` is ``SyslogUtils``: a byte-stream state machine (``<`` then up to three digits then ``>``,
then data up to ``\\n``) that cuts events at ``\\n`` or at ``eventSize`` bytes, then matches the line against
Flume's RFC 5424 pattern, then its RFC 3164 pattern (Java regexes, translated by :mod:`core.java_regex`).
Headers: ``Facility`` and ``Severity`` always ("0"/"0" for an invalid event), ``priority`` and ``version``
(lower case) when the line matched, ``timestamp`` (epoch ms) and ``host`` when parsed, and
``flume.syslog.status`` = ``Invalid`` (no or bad ``<pri>``) or ``Incomplete`` (cut at ``eventSize``; the rest
of the line becomes the next event, ``Invalid`` since it has no ``<pri>``).  A line that matched neither pattern
keeps its raw bytes, ``<pri>`` included.

:class:`LineSplitter` and :func:`parse_message` are the multiport source's ``LineSplitter`` and ``SyslogParser``:
lines of at most ``eventSize`` bytes *including* the newline, headers ``Priority``/``Facility``/``Severity``/
``Version`` (capitalised), ``timestamp``, ``host``; a message that cannot be parsed raises
:class:`SyslogFormatError` and the source makes it an ``Invalid`` event with the raw line as body.

Differs from Flume 1.11 on purpose (each a bug there, none asserted by Flume's tests):

* RFC 5424 stamps with a fraction and an offset (``17:20:01.123-07:00``): Flume's ``SyslogUtils`` parses them with
  ``SimpleDateFormat("...ss.S")``, which stops before the offset and so reads the time in the JVM's zone, and reads
  ``.52`` as 52 ms.  Flumery honours the offset (the ``SyslogUtils`` vectors require it) and reads fractions as
  fractions (``.52`` = 520 ms), as Flume's multiport parser does.
* RFC 3164 stamps in the multiport parser: Flume 1.11 rolls a date more than one month away into the year 1999
  or 2001 (Joda's default parse year); Flumery applies the documented window (up to 11 months past, 1 month
  future) in UTC.
* ``SyslogUtils`` keeps the previous event's ``priority``/``version`` on an event that did not match a pattern
  (its ``reset()`` forgets them); Flumery gives each event its own headers only.
* ``keepFields`` with a ``-`` (nil) stamp or host prepends ``-``, where Flume prepends the word ``null``.
* Bodies keep their bytes: a parsed line is matched as UTF-8 with undecodable bytes carried through
  (``surrogateescape``); Flume re-encodes them as U+FFFD.
* Messages that make Flume's multiport parser throw something other than IllegalArgumentException (an empty
  line, a fraction that runs to the end of the stamp) are ``Invalid`` events here, not a handler crash.
"""
from __future__ import annotations

import calendar
import re
import time
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Callable

from core.java_regex import compile_java

STATUS = "flume.syslog.status"
INVALID = "Invalid"
INCOMPLETE = "Incomplete"
FACILITY, SEVERITY = "Facility", "Severity"

DEFAULT_SIZE = 2500
MIN_SIZE = 10                 # SyslogUtils raises a smaller eventSize to this
MAX_DATAGRAM_EVENT = 1 << 16  # syslogudp's event size (RFC 5426's maximum), larger than any datagram

KEEP_FIELDS = ("priority", "version", "timestamp", "hostname")
KEEP_ALL = frozenset({"--all--"})

# Flume's SyslogUtils patterns, verbatim (Java syntax).
RFC5424 = compile_java(
    r"(?:\<(\d{1,3})\>)(?:(\d?)\s?)"
    r"(?:(\d{4}[-]\d{2}[-]\d{2}[T]\d{2}[:]\d{2}[:]\d{2}(?:\.\d{1,6})?(?:[+-]\d{2}[:]\d{2}|Z)?)|-)"
    r"\s(?:([\w][\w\d\.@\-]*)|-)\s(.*)$")
RFC3164 = compile_java(
    r"(?:\<(\d{1,3})\>)(?:(\d)?\s?)([A-Z][a-z][a-z]\s{1,2}\d{1,2}\s\d{2}[:]\d{2}[:]\d{2})\s"
    r"([\w][\w\d\.@-]*)\s(.*)$")

_STAMP_5424 = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(Z|[+-]\d{2}:\d{2})?",
                         re.ASCII)
_STAMP_3164 = re.compile(r"([A-Z][a-z][a-z]) (\d{1,2}) (\d{2}):(\d{2}):(\d{2})", re.ASCII)
_PREFIX_5424 = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)", re.ASCII)
_MONTHS = {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct",
                                       "nov", "dec"), start=1)}
_FAST_PRIO = re.compile(rb"<([0-9]{1,3})>")
_PRIORITY = re.compile(r"[+-]?[0-9]+", re.ASCII)     # what Integer.parseInt takes (ASCII digits here)


class SyslogFormatError(ValueError):
    """A message the multiport parser cannot read; the source makes it an ``Invalid`` event."""


# --- keepFields -----------------------------------------------------------------------------------------------

def keep_fields(value: str) -> frozenset[str]:
    """Flume's ``chooseFieldsToKeep``: ``none``/``false`` -> empty, ``all``/``true`` -> :data:`KEEP_ALL`, else the
    named fields among priority, version, timestamp, hostname (separated by spaces or commas)."""
    words = value.strip().lower()
    if words in ("none", "false"):
        return frozenset()
    if words in ("all", "true"):
        return KEEP_ALL
    return frozenset(w for w in re.split(r"[\s,]+", words) if w)


def check_keep_fields(value: str) -> str | None:
    """An error text for a keepFields value Flumery would not understand, else None."""
    fields = keep_fields(value)
    unknown = sorted(fields - set(KEEP_FIELDS) - KEEP_ALL)
    if unknown:
        return (f"unknown field {', '.join(unknown)}: use none, all, or a list of "
                f"{', '.join(KEEP_FIELDS)}")
    return None


def add_fields_to_body(keep: frozenset[str], body: str, priority: str | None, version: str | None,
                       stamp: str | None, host: str | None) -> str:
    """Flume's ``addFieldsToBody``: prepend the kept fields in their wire order (a nil field as ``-``)."""
    if "hostname" in keep:
        body = f"{host if host is not None else '-'} {body}"
    if "timestamp" in keep:
        body = f"{stamp if stamp is not None else '-'} {body}"
    if "version" in keep and version:
        body = f"{version} {body}"
    if "priority" in keep:
        body = f"<{priority}>{body}"
    return body


# --- calendar arithmetic as Java's lenient Calendar does it ----------------------------------------------------

def _lenient(year: int, month: int, day: int, hour: int, minute: int, second: int, ms: int = 0) -> datetime:
    """A wall-clock time whose out-of-range fields roll over (month 13, Feb 30, 25:61:61), like SimpleDateFormat's
    default lenient parsing.  Raises OverflowError/ValueError far outside datetime's range."""
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    return datetime(year, month, 1) + timedelta(days=day - 1, hours=hour, minutes=minute, seconds=second,
                                                milliseconds=ms)


def _add_months(wall: datetime, months: int) -> datetime:
    """Calendar.add(MONTH, n): the day of month is clamped to the target month's length."""
    index = wall.year * 12 + wall.month - 1 + months
    year, month = divmod(index, 12)
    day = min(wall.day, calendar.monthrange(year, month + 1)[1])
    return wall.replace(year=year, month=month + 1, day=day)


def _epoch_ms(wall: datetime, zone: tzinfo | None) -> int:
    """Epoch ms of a wall-clock time in ``zone`` (None: the process's local zone, Java's default zone)."""
    if zone is None:
        return int(round(wall.timestamp() * 1000))
    return int(round(wall.replace(tzinfo=zone).timestamp() * 1000))


def _year_window(wall: datetime, now_ms: int, to_ms: Callable[[datetime], int]) -> datetime:
    """Flume's RFC 3164 year guess: a stamp more than a month ahead is last year's, one more than eleven months
    behind is next year's."""
    parsed = to_ms(wall)
    if parsed > now_ms and to_ms(_add_months(wall, -1)) > now_ms:
        return _add_months(wall, -12)
    if parsed < now_ms and to_ms(_add_months(wall, 11)) < now_ms:
        return _add_months(wall, 12)
    return wall


def _fraction_ms(digits: str | None) -> int:
    if not digits:
        return 0
    return int(digits) // 10 ** (len(digits) - 3) if len(digits) > 3 else int(digits) * 10 ** (3 - len(digits))


def _offset(zone: str) -> timedelta:
    if zone == "Z":
        return timedelta(0)
    sign = -1 if zone[0] == "-" else 1
    return sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))


def rfc5424_stamp_ms(stamp: str, zone: tzinfo | None) -> int | None:
    """SyslogUtils' RFC 5424 stamp (as its pattern matched it) in epoch ms; without an offset it is read in
    ``zone``; None if it cannot be read (no ``timestamp`` header then)."""
    m = _STAMP_5424.fullmatch(stamp)
    if not m:
        return None
    y, mo, d, h, mi, s, frac, off = m.groups()
    try:
        wall = _lenient(int(y), int(mo), int(d), int(h), int(mi), int(s), _fraction_ms(frac))
        if off is None:
            return _epoch_ms(wall, zone)
        return _epoch_ms(wall - _offset(off), timezone.utc)
    except (OverflowError, ValueError):
        return None


def rfc3164_stamp_ms(stamp: str, now_ms: int, zone: tzinfo | None) -> int | None:
    """SyslogUtils' ``Mmm dd HH:mm:ss`` with the current (UTC) year, read in ``zone`` and moved into the year
    window; None if the month name is unknown."""
    m = _STAMP_3164.fullmatch(stamp.replace("  ", " "))
    if not m or m.group(1).lower() not in _MONTHS:
        return None
    year = time.gmtime(now_ms / 1000).tm_year
    try:
        wall = _lenient(year, _MONTHS[m.group(1).lower()], *(int(g) for g in m.groups()[1:]))
        wall = _year_window(wall, now_ms, lambda w: _epoch_ms(w, zone))
        return _epoch_ms(wall, zone)
    except (OverflowError, ValueError):
        return None


# --- SyslogUtils: syslogtcp and syslogudp ----------------------------------------------------------------------

START, PRIO, DATA = 0, 1, 2


class SyslogDecoder:
    """Flume's ``SyslogUtils`` for one connection (or one UDP source): feed bytes, get ``(headers, body)``.

    Memory is bounded by ``event_size``: at most one partial event (``event_size`` bytes) is held between calls.
    ``clock`` returns epoch seconds (RFC 3164 year guess); ``zone`` is the zone of stamps without an offset (None:
    the process's local zone, as Flume uses the JVM's).
    """

    def __init__(self, event_size: int = DEFAULT_SIZE, keep: frozenset[str] = frozenset(),
                 clock: Callable[[], float] = time.time, zone: tzinfo | None = None):
        self.max_size = max(event_size, MIN_SIZE)
        self.keep = keep
        self.clock = clock
        self.zone = zone
        self._cache: dict[tuple[str, bool], str | None] = {}
        self._cached_second = -1
        self._reset()

    def _reset(self) -> None:
        self.mode = START
        self.buf = bytearray()
        self.prio = ""
        self.bad = False

    @property
    def pending(self) -> bool:
        """True when part of an event has been read."""
        return self.mode != START

    def feed(self, data: bytes, limit: int | None = None) -> tuple[list[tuple[dict, bytes]], int]:
        """Decode ``data``; return the complete events and how many bytes were consumed (all of them unless
        ``limit`` events were found first)."""
        events: list[tuple[dict, bytes]] = []
        i, n = 0, len(data)
        while i < n and (limit is None or len(events) < limit):
            if self.mode == START:
                m = _FAST_PRIO.match(data, i)       # the common case in one step: "<13>" then data
                if m:
                    self.buf += m.group()
                    self.prio = m.group(1).decode()
                    self.mode = DATA
                    i = m.end()
                    continue
                i = self._start(data[i], i)
            elif self.mode == PRIO:
                i = self._prio(data[i], i)
            else:
                i = self._data(data, i, events)
        return events, i

    def _start(self, byte: int, i: int) -> int:
        if byte == 0x3C:                                  # '<'
            self.buf.append(byte)
            self.mode = PRIO
        elif byte != 0x0A:                                # a newline between events is skipped
            self.bad = True
            self.buf.append(byte)
            self.mode = DATA
        return i + 1

    def _prio(self, byte: int, i: int) -> int:
        self.buf.append(byte)
        if byte == 0x3E:                                  # '>'
            self.bad = self.bad or not self.prio
            self.mode = DATA
        else:
            self.prio += chr(byte)
            if not 0x30 <= byte <= 0x39 or len(self.prio) > 3:
                self.bad = True                           # everything from here is data
                self.mode = DATA
        return i + 1

    def _data(self, data: bytes, i: int, events: list) -> int:
        room = self.max_size - len(self.buf)
        end = data.find(b"\n", i, i + room)
        if end >= 0:
            self.buf += data[i:end]
            events.append(self.build())
            return end + 1
        chunk = data[i:i + room]
        self.buf += chunk
        if len(self.buf) >= self.max_size:
            events.append(self.build(incomplete=True))
        return i + len(chunk)

    def finish(self) -> tuple[dict, bytes] | None:
        """The event being read, as it stands (end of a datagram, or a connection closed after a line without its
        newline); None if there is nothing, or no priority to build one from (Flume's parse error)."""
        if self.mode == START:
            return None
        if not self.bad and not self.prio:
            self._reset()
            return None
        return self.build()

    def datagram(self, data: bytes) -> tuple[list[tuple[dict, bytes]], int]:
        """Every event of one datagram: Flume's event (up to the first newline, or the whole datagram), then, where
        Flume drops the rest of the datagram, each further line as its own event.  Returns ``(events, failed)``,
        ``failed`` being 1 for a datagram Flume cannot make an event of (empty, or a lone ``<``)."""
        self._reset()
        events, _ = self.feed(data)
        unreadable = self.mode == PRIO and not self.bad and not self.prio
        last = self.finish()
        if last is not None:
            events.append(last)
        return events, int(unreadable or not events)

    def build(self, incomplete: bool = False) -> tuple[dict, bytes]:
        """Flume's ``buildEvent``: the headers and body of the bytes read so far; resets for the next event."""
        try:
            raw = bytes(self.buf)
            if self.bad:
                headers = {FACILITY: "0", SEVERITY: "0", STATUS: INVALID}
                return headers, raw
            pri = int(self.prio)
            headers = {FACILITY: str(pri // 8), SEVERITY: str(pri % 8)}
            body = self._format(raw, headers)
            if incomplete:
                headers[STATUS] = INCOMPLETE
            return headers, body
        finally:
            self._reset()

    def _stamp_ms(self, stamp: str, rfc5424: bool) -> str | None:
        """The ``timestamp`` header of a stamp, remembered for the current second (senders repeat their stamps;
        an RFC 3164 stamp's year depends on the clock, so the memory is dropped every second)."""
        now = self.clock()
        if int(now) != self._cached_second or len(self._cache) > 1024:
            self._cache, self._cached_second = {}, int(now)
        key = (stamp, rfc5424)
        if key not in self._cache:
            ms = (rfc5424_stamp_ms(stamp, self.zone) if rfc5424
                  else rfc3164_stamp_ms(stamp, int(now * 1000), self.zone))
            self._cache[key] = None if ms is None else str(ms)
        return self._cache[key]

    def _format(self, raw: bytes, headers: dict) -> bytes:
        """Match the line against RFC 5424 then RFC 3164; fill the headers; return the body."""
        text = raw.decode("utf-8", "surrogateescape")
        for pattern in (RFC5424, RFC3164):
            m = pattern.fullmatch(text)
            if m:
                break
        else:
            return raw
        priority, version, stamp, host, message = m.groups()
        if priority:
            headers["priority"] = priority
        if version:
            headers["version"] = version
        if stamp is not None:
            ms = self._stamp_ms(stamp, pattern is RFC5424)
            if ms is not None:
                headers["timestamp"] = ms
        if host:
            headers["host"] = host
        if self.keep == KEEP_ALL:
            return raw
        body = add_fields_to_body(self.keep, message, priority, version, stamp, host)
        return body.encode("utf-8", "surrogateescape") if body else raw


# --- multiport_syslogtcp: LineSplitter and SyslogParser ---------------------------------------------------------

class LineSplitter:
    """The multiport source's ``LineSplitter`` for one connection: lines of at most ``max_length`` bytes counting
    the newline; a longer line is cut at ``max_length`` bytes and flagged incomplete.  Holds at most one partial
    line between calls."""

    def __init__(self, max_length: int):
        self.max_length = max_length
        self.saved = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        """``(line without its newline, incomplete)`` for each line completed by ``data``."""
        lines = []
        i, n = 0, len(data)
        while i < n:
            room = self.max_length - len(self.saved)
            end = data.find(b"\n", i, i + room)
            if end >= 0:
                lines.append((bytes(self.saved) + data[i:end], False))
                self.saved.clear()
                i = end + 1
            elif n - i >= room:
                lines.append((bytes(self.saved) + data[i:i + room], True))
                self.saved.clear()
                i += room
            else:
                self.saved += data[i:]
                i = n
        return lines

    def finish(self) -> bytes | None:
        """The partial line held at the end of the connection, if any."""
        line, self.saved = bytes(self.saved), bytearray()
        return line or None


def _java_div(a: int, b: int) -> tuple[int, int]:
    """Java's int ``/`` and ``%`` (truncating toward zero), for a priority such as ``<-1>``."""
    q = abs(a) // b * (1 if a >= 0 else -1)
    return q, a - q * b


def multiport_5424_ms(stamp: str) -> int:
    """``SyslogParser.parseRfc5424Date``: ``yyyy-MM-ddTHH:mm:ss`` in UTC, an optional fraction (rounded to ms),
    then ``Z``, ``+hh:mm``/``-hh:mm`` or anything else (read as UTC).  Raises SyslogFormatError."""
    if len(stamp) <= 19:
        raise SyslogFormatError(f"Not a valid RFC5424 timestamp: {stamp}")
    m = _PREFIX_5424.fullmatch(stamp[:19])
    try:
        ms = calendar.timegm(datetime(*(int(g) for g in m.groups())).timetuple()) * 1000 if m else None
    except ValueError:
        ms = None
    if ms is None:
        raise SyslogFormatError(f"bad timestamp format: {stamp}")
    pos = 19
    if stamp[pos] == ".":
        end = pos + 1
        while end < len(stamp) and "0" <= stamp[end] <= "9":
            end += 1
        if end == pos + 1 or end == len(stamp):
            raise SyslogFormatError(f"Invalid timestamp (fractional portion): {stamp}")
        ms += _fraction_ms(stamp[pos + 1:end])
        pos = end
    zone = stamp[pos]
    if zone in "+-":
        tz = stamp[pos + 1:pos + 6]
        if not re.fullmatch(r"\d\d:\d\d", tz, re.ASCII):
            raise SyslogFormatError(f"Invalid timezone: {stamp}")
        ms -= (1 if zone == "+" else -1) * (int(tz[:2]) * 60 + int(tz[3:])) * 60000
    return ms


def multiport_3164_ms(stamp: str, now_ms: int) -> int:
    """``SyslogParser.parseRfc3164Time``: ``Mmm d HH:mm:ss`` in UTC with the year guessed; 0 if it cannot be
    read (as in Flume)."""
    m = re.fullmatch(r"([A-Za-z]{3}) (\d{1,2}) (\d{1,2}):(\d{1,2}):(\d{1,2})", stamp.replace("  ", " ", 1),
                     re.ASCII)
    if not m or m.group(1).lower() not in _MONTHS:
        return 0
    year = time.gmtime(now_ms / 1000).tm_year
    month, (day, hour, minute, second) = _MONTHS[m.group(1).lower()], (int(g) for g in m.groups()[1:])
    try:
        datetime(2000, month, day, hour, minute, second)        # strict, as Joda (2000: Feb 29 exists)
    except ValueError:
        return 0
    day = min(day, calendar.monthrange(year, month)[1])
    wall = datetime(year, month, day, hour, minute, second)
    wall = _year_window(wall, now_ms, lambda w: _epoch_ms(w, timezone.utc))
    return _epoch_ms(wall, timezone.utc)


def parse_message(msg: str, keep: frozenset[str], now_ms: int) -> tuple[dict, str]:
    """Flume's ``SyslogParser.parseMessage`` for one line (no newline): ``(headers, body text)``; raises
    SyslogFormatError where Flume's parser throws."""
    if not msg or msg[0] != "<":
        raise SyslogFormatError("invalid priority: cannot find open bracket '<'")
    end = msg.find(">")
    if not 0 < end <= 6:
        raise SyslogFormatError("invalid priority: cannot find end bracket '>'")
    priority = msg[1:end]
    if not _PRIORITY.fullmatch(priority):
        raise SyslogFormatError(f"invalid priority: {priority!r}")
    facility, severity = _java_div(int(priority), 8)
    headers = {"Priority": priority, FACILITY: str(facility), SEVERITY: str(severity)}
    if len(msg) <= end + 1:
        raise SyslogFormatError("no data except priority")
    pos = end + 1
    version = None
    if len(msg) > pos + 2 and msg[pos:pos + 2] == "1 ":
        version = "1"
        headers["Version"] = version
        pos += 2
    stamp, ms, pos = _multiport_stamp(msg, pos, now_ms)
    headers["timestamp"] = str(ms)
    space = msg.find(" ", pos)
    if space < 0:
        raise SyslogFormatError("bad syslog format (missing hostname)")
    host = msg[pos:space]
    headers["host"] = host
    if len(msg) > space + 1 and keep != KEEP_ALL:
        return headers, add_fields_to_body(keep, msg[space + 1:], priority, version, stamp, host)
    return headers, msg


def _multiport_stamp(msg: str, pos: int, now_ms: int) -> tuple[str, int, int]:
    """(stamp text, epoch ms, position after it) for the three stamp forms of SyslogParser."""
    first = msg[pos]
    if first == "-":                          # no stamp: the relay's time
        if len(msg) <= pos + 2:
            raise SyslogFormatError("bad syslog format (missing hostname)")
        return "-", now_ms, pos + 2
    if "A" <= first <= "Z":
        if len(msg) <= pos + 15:
            raise SyslogFormatError("bad timestamp format")
        stamp = msg[pos:pos + 15]
        return stamp, multiport_3164_ms(stamp, now_ms), pos + 16
    space = msg.find(" ", pos)
    if space < 0:
        raise SyslogFormatError("bad timestamp format")
    stamp = msg[pos:space]
    return stamp, multiport_5424_ms(stamp), space + 1
