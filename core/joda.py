"""Joda-Time ``DateTimeFormat`` patterns, parsed to epoch milliseconds as Joda parses them.

Flume's ``RegexExtractorInterceptorMillisSerializer`` calls ``DateTimeFormat.forPattern(pattern).parseMillis(text)``.
:class:`JodaPattern` reproduces that in Python rather than mapping the pattern onto ``strptime``, whose rules
differ (``strptime``'s ``%Y`` takes exactly four digits, it backtracks, it has no ``k``/``K`` hours...):

* The pattern is cut into tokens as Joda cuts it (runs of one letter; other characters and ``'quoted'`` text are
  literals, ``''`` is a quote) and each token becomes one element parser, with Joda's digit limits: ``yyyy``
  takes up to 9 digits (a sign too) unless a numeric field follows it, ``yy`` is a two-digit year pivoting on
  (this year - 30) +/- 50, ``MM``/``dd``/``HH``/``mm``/``ss`` take 1 or 2 digits, ``S...`` is a fraction of a
  second (``S`` = tenths), ``MMM``/``EEE``/``a`` are English names (exact, lower or upper case, longest first).
* The text is read left to right, greedily and without backtracking; it must be consumed entirely.
* The fields are applied to 1970-01-01T00:00:00.000 in Joda's order (wider range first, then wider unit), each
  checked against its bounds; a pattern whose widest field is a month or a day (no year) parses in year 2000.
* The local date-time becomes an instant in the zone the text names (``Z`` offset, ``ZZZ`` zone id, ``z`` one
  of Joda's default names UTC/GMT/EST/CST/MST/PST and their daylight forms), else in the JVM's default zone:
  here the process's local zone (``TZ``).  A time in a daylight-saving gap is an error, as in Joda; a time in an
  overlap takes the earlier instant.

Supported letters: ``y Y M d H k K h a m s S E e D z Z``.  Joda's ``G C x w`` (era, century, week-year, week)
raise an error here; any other letter is an "Illegal pattern component" in Joda too.  Names are English (the
JVM's default locale is taken to be English); years are limited to 1-9999 (Python's ``datetime``).
"""
from __future__ import annotations

import calendar
import datetime as dt
import functools
import zoneinfo
from dataclasses import dataclass, field

_JODA_LETTERS = set("GCxyYMdahHkKmsSeEDwzZ")
_UNSUPPORTED = {"G": "era", "C": "century of era", "x": "week year", "w": "week of week year"}
_NUMERIC_TOKENS = set("cCxyYdhHmsSeDFwWkK")     # Joda's isNumericToken (plus M and MM)

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
# DateTimeUtils.getDefaultTimeZoneNames(): what Joda's 'z' parses.
_DEFAULT_ZONE_NAMES = {
    "UT": "UTC", "UTC": "UTC", "GMT": "UTC",
    "EST": "America/New_York", "EDT": "America/New_York", "CST": "America/Chicago", "CDT": "America/Chicago",
    "MST": "America/Denver", "MDT": "America/Denver", "PST": "America/Los_Angeles", "PDT": "America/Los_Angeles",
}


class JodaError(ValueError):
    """A bad pattern (at compile time) or text that the pattern does not parse."""


# --- parsed fields and how they are applied ----------------------------------------------------------------

@dataclass
class _Local:
    """A local date-time being built; Joda's fields are set on it one by one."""

    year: int = 1970
    month: int = 1
    day: int = 1
    hour: int = 0
    minute: int = 0
    second: int = 0
    millis: int = 0

    def days_in_month(self) -> int:
        return calendar.monthrange(self.year, self.month)[1]

    def clamp_day(self) -> None:
        self.day = min(self.day, self.days_in_month())

    def date(self) -> dt.date:
        return dt.date(self.year, self.month, self.day)

    def set_date(self, date: dt.date) -> None:
        self.year, self.month, self.day = date.year, date.month, date.day

    def naive(self) -> dt.datetime:
        return dt.datetime(self.year, self.month, self.day, self.hour, self.minute, self.second)


def _bounded(name: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise JodaError(f"Value {value} for {name} must be in the range [{low},{high}]")
    return value


def _set_year(t: _Local, v: int) -> None:
    t.year = _bounded("year", v, 1, 9999)       # Python's datetime range; Joda's is far wider
    t.clamp_day()


def _set_month(t: _Local, v: int) -> None:
    t.month = _bounded("monthOfYear", v, 1, 12)
    t.clamp_day()


def _set_day_of_month(t: _Local, v: int) -> None:
    t.day = _bounded("dayOfMonth", v, 1, t.days_in_month())


def _set_day_of_year(t: _Local, v: int) -> None:
    _bounded("dayOfYear", v, 1, 366 if calendar.isleap(t.year) else 365)
    t.set_date(dt.date(t.year, 1, 1) + dt.timedelta(days=v - 1))


def _set_day_of_week(t: _Local, v: int) -> None:
    # Joda moves the date to that weekday within the same ISO week (Monday..Sunday).
    date = t.date()
    t.set_date(date + dt.timedelta(days=_bounded("dayOfWeek", v, 1, 7) - date.isoweekday()))


def _set_halfday(t: _Local, v: int) -> None:
    t.hour = t.hour % 12 + 12 * _bounded("halfdayOfDay", v, 0, 1)


def _set_hour_of_day(t: _Local, v: int) -> None:
    t.hour = _bounded("hourOfDay", v, 0, 23)


def _set_clockhour_of_day(t: _Local, v: int) -> None:
    t.hour = _bounded("clockhourOfDay", v, 1, 24) % 24


def _set_hour_of_halfday(t: _Local, v: int) -> None:
    t.hour = t.hour // 12 * 12 + _bounded("hourOfHalfday", v, 0, 11)


def _set_clockhour_of_halfday(t: _Local, v: int) -> None:
    t.hour = t.hour // 12 * 12 + _bounded("clockhourOfHalfday", v, 1, 12) % 12


def _set_minute(t: _Local, v: int) -> None:
    t.minute = _bounded("minuteOfHour", v, 0, 59)


def _set_second(t: _Local, v: int) -> None:
    t.second = _bounded("secondOfMinute", v, 0, 59)


def _set_millis(t: _Local, v: int) -> None:
    t.millis = _bounded("millisOfSecond", v, 0, 999)


def _floor_to(unit: str):
    """Joda's roundFloor after a set: clear every unit below ``unit``."""
    def floor(t: _Local) -> None:
        if unit == "year":
            t.month = 1
        if unit in ("year", "month"):
            t.day = 1
        if unit in ("year", "month", "day"):
            t.hour = 0
        if unit == "halfday":
            t.hour = t.hour // 12 * 12
        if unit in ("year", "month", "day", "halfday", "hour"):
            t.minute = 0
        if unit in ("year", "month", "day", "halfday", "hour", "minute"):
            t.second = 0
        if unit != "millis":
            t.millis = 0
    return floor


@dataclass(frozen=True)
class _Field:
    name: str
    range_rank: int          # Joda sorts saved fields by range duration, widest first (none = widest)...
    unit_rank: int           # ...then by their own duration, widest first
    unit: str
    setter: object

    def sort_key(self) -> tuple[int, int]:
        return (-self.range_rank, -self.unit_rank)


_FIELDS = {f.name: f for f in [
    _Field("year", 99, 8, "year", _set_year),
    _Field("yearOfEra", 99, 8, "year", _set_year),
    _Field("monthOfYear", 8, 7, "month", _set_month),
    _Field("dayOfYear", 8, 5, "day", _set_day_of_year),
    _Field("dayOfMonth", 7, 5, "day", _set_day_of_month),
    _Field("dayOfWeek", 6, 5, "day", _set_day_of_week),
    _Field("halfdayOfDay", 5, 4, "halfday", _set_halfday),
    _Field("hourOfDay", 5, 3, "hour", _set_hour_of_day),
    _Field("clockhourOfDay", 5, 3, "hour", _set_clockhour_of_day),
    _Field("hourOfHalfday", 4, 3, "hour", _set_hour_of_halfday),
    _Field("clockhourOfHalfday", 4, 3, "hour", _set_clockhour_of_halfday),
    _Field("minuteOfHour", 3, 2, "minute", _set_minute),
    _Field("secondOfMinute", 2, 1, "second", _set_second),
    _Field("millisOfSecond", 1, 0, "millis", _set_millis),
]}
_MONTH_OR_DAY_UNITS = (7, 6, 5)     # months, weeks, days: Joda then parses in its default year 2000
_DEFAULT_YEAR = 2000


@dataclass
class _Bucket:
    saved: list = field(default_factory=list)       # (field name, value) in parse order
    offset_ms: int | None = None
    zone: str | None = None

    def save(self, name: str, value: int) -> None:
        self.saved.append((name, value))


def _compute_local(saved: list) -> _Local:
    """Joda's DateTimeParserBucket.computeMillis up to the zone: set the fields in order, twice."""
    ordered = sorted(saved, key=lambda s: _FIELDS[s[0]].sort_key())      # stable, as Joda's sort
    if ordered and _FIELDS[ordered[0][0]].unit_rank in _MONTH_OR_DAY_UNITS:
        ordered = sorted(saved + [("year", _DEFAULT_YEAR)], key=lambda s: _FIELDS[s[0]].sort_key())
    local = _Local()
    for name, value in ordered:
        _FIELDS[name].setter(local, value)
        _floor_to(_FIELDS[name].unit)(local)
    for index, (name, value) in enumerate(ordered):
        _FIELDS[name].setter(local, value)
        if index == len(ordered) - 1:
            _floor_to(_FIELDS[name].unit)(local)
    return local


def _epoch_millis(local: _Local, bucket: _Bucket) -> int:
    naive = local.naive()
    if bucket.offset_ms is not None:
        seconds = calendar.timegm(naive.timetuple())
        return seconds * 1000 + local.millis - bucket.offset_ms
    if bucket.zone is not None:
        zone = zoneinfo.ZoneInfo(bucket.zone)
        instant = naive.replace(tzinfo=zone)
        back = instant.astimezone(dt.timezone.utc).astimezone(zone).replace(tzinfo=None)
        seconds = int(instant.timestamp())
    else:
        # The JVM's default zone: the process's local time zone.  fold=0 takes the earlier instant in an
        # overlap, as Joda does.
        seconds = int(naive.timestamp())
        back = dt.datetime.fromtimestamp(seconds)
    if back != naive:
        raise JodaError(f"Illegal instant due to time zone offset transition ({bucket.zone or 'local zone'})")
    return seconds * 1000 + local.millis


# --- element parsers: parse(text, pos, bucket) -> new position, or ~position on failure ----------------------

def _digits(text: str, pos: int, limit: int) -> int:
    count = 0
    while count < limit and pos + count < len(text) and "0" <= text[pos + count] <= "9":
        count += 1
    return count


@dataclass(frozen=True)
class _Literal:
    text: str

    def parse(self, text: str, pos: int, bucket: _Bucket) -> int:
        end = pos + len(self.text)
        if end > len(text):
            return ~pos
        for a, b in zip(text[pos:end], self.text):
            if a != b and a.upper() != b.upper() and a.lower() != b.lower():
                return ~pos
        return end


@dataclass(frozen=True)
class _Number:
    field: str
    max_digits: int
    signed: bool = False

    def parse(self, text: str, pos: int, bucket: _Bucket) -> int:
        start = pos
        negative = False
        if self.signed and pos + 1 < len(text) and text[pos] in "+-" and "0" <= text[pos + 1] <= "9":
            negative = text[pos] == "-"
            pos += 1
        count = _digits(text, pos, self.max_digits)
        if count == 0:
            return ~start
        value = int(text[pos:pos + count])
        bucket.save(self.field, -value if negative else value)
        return pos + count


@dataclass(frozen=True)
class _TwoDigitYear:
    pivot: int
    lenient: bool

    def parse(self, text: str, pos: int, bucket: _Bucket) -> int:
        if self.lenient:
            start = pos
            sign = text[pos] if pos < len(text) and text[pos] in "+-" else ""
            count = _digits(text, pos + len(sign), len(text))
            if count == 0:
                return ~start
            if sign or count != 2:
                # Anything but exactly two digits is a full year.
                value = int(text[pos + len(sign):pos + len(sign) + count])
                bucket.save("year", -value if sign == "-" else value)
                return pos + len(sign) + count
        if _digits(text, pos, 2) < 2:
            return ~pos
        low = self.pivot - 50
        floor = low % 100 if low >= 0 else 99 + ((low + 1) % 100)
        two = int(text[pos:pos + 2])
        bucket.save("year", two + low + (100 if two < floor else 0) - floor)
        return pos + 2


@dataclass(frozen=True)
class _Fraction:
    max_digits: int

    def parse(self, text: str, pos: int, bucket: _Bucket) -> int:
        count = _digits(text, pos, self.max_digits)
        if count == 0:
            return ~pos
        # Joda keeps millisecond precision: ".5" is 500 ms, ".12345" is 123 ms.
        bucket.save("millisOfSecond", int(text[pos:pos + count][:3].ljust(3, "0")))
        return pos + count


@dataclass(frozen=True)
class _Text:
    """Month, weekday or AM/PM names: Joda accepts each long or short name as written, lower or upper case."""

    field: str
    valid: dict                  # accepted spelling -> value
    longest: int

    def parse(self, text: str, pos: int, bucket: _Bucket) -> int:
        for end in range(min(len(text), pos + self.longest), pos, -1):
            value = self.valid.get(text[pos:end])
            if value is not None:
                bucket.save(self.field, value)
                return end
        return ~pos


def _text(field_name: str, names: list[tuple[str, str]], first_value: int) -> _Text:
    valid = {}
    for offset, pair in enumerate(names):
        for name in pair:
            for form in (name, name.lower(), name.upper()):
                valid[form] = first_value + offset
    return _Text(field_name, valid, max(len(long_name) for long_name, _ in names))


@dataclass(frozen=True)
class _ZoneOffset:
    """Joda's TimeZoneOffset parser: ``Z``, or a sign then hh, hhmm, hhmmss, hh:mm, hh:mm:ss, hh:mm:ss.SSS."""

    def parse(self, text: str, pos: int, bucket: _Bucket) -> int:
        if text[pos:pos + 1] in ("Z", "z"):
            bucket.offset_ms = 0
            return pos + 1
        if len(text) - pos <= 1 or text[pos] not in "+-":
            return ~pos
        negative = text[pos] == "-"
        pos += 1
        if _digits(text, pos, 2) < 2 or int(text[pos:pos + 2]) > 23:
            return ~pos
        offset = int(text[pos:pos + 2]) * 3_600_000
        pos += 2
        if pos < len(text) and (text[pos] == ":" or "0" <= text[pos] <= "9"):
            colons = text[pos] == ":"
            pos, offset = self._minutes_on(text, pos + (1 if colons else 0), offset, colons)
            if pos < 0:
                return pos
        bucket.offset_ms = -offset if negative else offset
        return pos

    @staticmethod
    def _minutes_on(text: str, pos: int, offset: int, colons: bool) -> tuple[int, int]:
        """Minutes, then optional seconds and milliseconds; (~pos, _) on failure."""
        for unit in (60_000, 1000):
            if unit == 1000 and colons:
                if pos >= len(text) or text[pos] != ":":
                    return pos, offset
                pos += 1
            count = _digits(text, pos, 2)
            if count == 0 and not colons:
                return pos, offset
            if count < 2 or int(text[pos:pos + 2]) > 59:
                return ~pos, offset
            offset += int(text[pos:pos + 2]) * unit
            pos += 2
            if pos >= len(text):
                return pos, offset
        if colons:
            if text[pos] not in ".,":
                return pos, offset
            pos += 1
        count = _digits(text, pos, 3)
        if count == 0:
            return (pos if not colons else ~pos), offset
        return pos + count, offset + int(text[pos:pos + count].ljust(3, "0"))


@dataclass(frozen=True)
class _ZoneName:
    """``z``: one of Joda's default zone names, longest first, case-sensitive."""

    def parse(self, text: str, pos: int, bucket: _Bucket) -> int:
        for name in sorted(_DEFAULT_ZONE_NAMES, key=len, reverse=True):
            if text.startswith(name, pos):
                bucket.zone = _DEFAULT_ZONE_NAMES[name]
                return pos + len(name)
        return ~pos


@functools.lru_cache(maxsize=1)
def _zone_ids() -> frozenset:
    return frozenset(zoneinfo.available_timezones() | {"UTC"})


@dataclass(frozen=True)
class _ZoneId:
    """``ZZZ``: the longest time zone id at this position (``Europe/Paris``, ``UTC`` ...)."""

    def parse(self, text: str, pos: int, bucket: _Bucket) -> int:
        ids = _zone_ids()
        longest = max(len(i) for i in ids)
        for end in range(min(len(text), pos + longest), pos, -1):
            if text[pos:end] in ids:
                bucket.zone = text[pos:end]
                return end
        return ~pos


# --- the pattern -------------------------------------------------------------------------------------------

def tokens(pattern: str) -> list[str]:
    """Joda's DateTimeFormat.parseToken, repeated: a run of one letter, or ``'`` + literal text."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c.isascii() and c.isalpha():
            j = i
            while j + 1 < len(pattern) and pattern[j + 1] == c:
                j += 1
            out.append(pattern[i:j + 1])
            i = j + 1
            continue
        literal, in_quote = "", False
        while i < len(pattern):
            c = pattern[i]
            if c == "'":
                if i + 1 < len(pattern) and pattern[i + 1] == "'":
                    literal += "'"
                    i += 1
                else:
                    in_quote = not in_quote
            elif not in_quote and c.isascii() and c.isalpha():
                break
            else:
                literal += c
            i += 1
        out.append("'" + literal)
    return out


def _is_numeric(token: str | None) -> bool:
    if not token or token[0] == "'":
        return False
    return token[0] in _NUMERIC_TOKENS or (token[0] == "M" and len(token) <= 2)


_NUMERIC_FIELDS = {"d": ("dayOfMonth", 2), "H": ("hourOfDay", 2), "k": ("clockhourOfDay", 2),
                   "K": ("hourOfHalfday", 2), "h": ("clockhourOfHalfday", 2), "m": ("minuteOfHour", 2),
                   "s": ("secondOfMinute", 2), "e": ("dayOfWeek", 1), "D": ("dayOfYear", 3)}


def _element(token: str, following: str | None, this_year: int):
    """The element parser for one token; ``following`` is the next token (Joda peeks at it for years)."""
    c, n = token[0], len(token)
    if c == "'":
        return _Literal(token[1:]) if len(token) > 1 else None
    if c not in _JODA_LETTERS:
        raise JodaError(f"Illegal pattern component: {token}")
    if c in _UNSUPPORTED:
        raise JodaError(f"pattern letter '{c}' ({_UNSUPPORTED[c]}) is not supported by Flumery")
    if c in "yY":
        return _year(c, n, following, this_year)
    if c in _NUMERIC_FIELDS:
        name, max_digits = _NUMERIC_FIELDS[c]
        return _Number(name, max(n, max_digits))
    return _text_element(c, n)


def _year(c: str, n: int, following: str | None, this_year: int):
    if n == 2:
        return _TwoDigitYear(this_year - 30, lenient=not _is_numeric(following))
    max_digits = n if _is_numeric(following) else 9
    return _Number("year" if c == "y" else "yearOfEra", max(n, max_digits), signed=c == "y")


def _text_element(c: str, n: int):
    """Months, weekdays, half days, fractions and zones."""
    if c == "M":
        if n >= 3:
            return _text("monthOfYear", [(m, m[:3]) for m in MONTHS], 1)
        return _Number("monthOfYear", max(n, 2))
    if c == "E":
        return _text("dayOfWeek", [(d, d[:3]) for d in WEEKDAYS], 1)
    if c == "a":
        return _text("halfdayOfDay", [("AM", "AM"), ("PM", "PM")], 0)
    if c == "S":
        return _Fraction(n)
    if c == "z":
        return _ZoneName()
    return _ZoneOffset() if n <= 2 else _ZoneId()          # Z


class JodaPattern:
    """A compiled Joda pattern; :meth:`parse_millis` is Joda's ``DateTimeFormatter.parseMillis``."""

    def __init__(self, pattern: str):
        if not pattern:
            raise JodaError("Invalid pattern specification")
        self.pattern = pattern
        parts = tokens(pattern)
        this_year = dt.date.today().year
        elements = [_element(t, parts[i + 1] if i + 1 < len(parts) else None, this_year)
                    for i, t in enumerate(parts)]
        self.elements = [e for e in elements if e is not None]

    def parse_millis(self, text: str) -> int:
        """Epoch milliseconds of ``text``; raises :class:`JodaError` as Joda raises IllegalArgumentException."""
        bucket = _Bucket()
        pos = 0
        for element in self.elements:
            pos = element.parse(text, pos, bucket)
            if pos < 0:
                raise JodaError(_invalid_format(text, ~pos))
        if pos < len(text):
            raise JodaError(_invalid_format(text, pos))
        try:
            local = _compute_local(bucket.saved)
            return _epoch_millis(local, bucket)
        except (JodaError, ValueError, OverflowError) as exc:
            raise JodaError(f'Cannot parse "{text}": {exc}') from None


def _invalid_format(text: str, at: int) -> str:
    """Joda's FormatUtils.createErrorMessage."""
    if at <= 0:
        return f'Invalid format: "{text}"'
    if at >= len(text):
        return f'Invalid format: "{text}" is too short'
    rest = text[at:] if len(text) - at <= 35 else text[at:at + 32] + "..."
    return f'Invalid format: "{text}" is malformed at "{rest}"'
