"""Flume's syslog parsers (workers/sources/syslog_parser.py) against every ``SyslogUtils`` and
``SyslogParser_multiport`` vector, plus the cases of Flume's TestSyslogUtils/TestSyslogParser not in the vectors.

The sources are tested over real sockets in test_syslog_sources.py; these are the parser's own rules.
"""
from __future__ import annotations

import calendar
import json
from datetime import datetime, timezone

import pytest
from conftest import VECTORS

from workers.sources.syslog_parser import (
    INCOMPLETE,
    INVALID,
    KEEP_ALL,
    STATUS,
    LineSplitter,
    SyslogDecoder,
    SyslogFormatError,
    check_keep_fields,
    keep_fields,
    multiport_3164_ms,
    multiport_5424_ms,
    parse_message,
)

ALL_VECTORS = json.loads(VECTORS.read_text())
UTILS = [c for c in ALL_VECTORS["SyslogUtils"] if "input" in c]
MULTIPORT = [c for c in ALL_VECTORS["SyslogParser_multiport"] if "input" in c]


def decode(text: str, keep: str = "none", size: int = 2500, now: float | None = None) -> list[tuple[dict, bytes]]:
    """Flume's extractEvent over a TCP stream, in UTC (the vectors' zone for stamps without an offset)."""
    clock = (lambda: now) if now is not None else None
    decoder = SyslogDecoder(size, keep_fields(keep), clock=clock or __import__("time").time, zone=timezone.utc)
    events, used = decoder.feed(text.encode())
    assert used == len(text.encode())
    return events


def check(expected: dict, event: tuple[dict, bytes]) -> None:
    """Every key the vector names: ``body`` is the body; None means the header is absent."""
    headers, body = event
    for key, value in expected.items():
        got = body.decode() if key == "body" else headers.get(key)
        assert got == value, f"{key}: {got!r} != {value!r} (headers {headers})"


@pytest.mark.parametrize("case", [c for c in UTILS if c["input"] is not None and "expected_ms" not in c
                                  and "(example" not in c["input"]],
                         ids=lambda c: f"{c.get('test')}-{c.get('keepFields', '')}")
def test_syslog_utils_vector(case):
    events = decode(case["input"], case.get("keepFields", "none"))
    expected = case.get("expected_events") or [case["expected"]]
    assert len(events) == len(expected)
    for want, got in zip(expected, events):
        check(want, got)


def epoch_ms(*fields) -> int:
    return calendar.timegm(datetime(*fields).timetuple()) * 1000


@pytest.mark.parametrize("month_offset", range(0, 14))
def test_rfc3164_year_window(month_offset):
    """TestHeader9/10 and TestRfc3164Dates: a stamp from up to 10 months ago to (almost) a month ahead gets the
    year that puts it there, whatever month it is now (clock injected, zone UTC)."""
    base = datetime(2025, 1, 15, 12, 0, 0)
    index = base.year * 12 + base.month - 1 + month_offset
    now = datetime(index // 12, index % 12 + 1, 15, 12, 0, 0)
    now_s = calendar.timegm(now.timetuple())
    for delta in range(-10, 2):
        j = now.year * 12 + now.month - 1 + delta
        stamp = datetime(j // 12, j % 12 + 1, 14 if delta == 1 else 15, 11, 11, 11)
        text = f"<10>{stamp:%b} {stamp.day:2d} {stamp:%H:%M:%S} ubuntu-11.cloudera.com some msg\n"
        [event] = decode(text, now=now_s)
        check({"timestamp": str(calendar.timegm(stamp.timetuple()) * 1000), "host": "ubuntu-11.cloudera.com",
               "body": "some msg"}, event)


def test_rfc3164_with_a_hyphen_in_the_message():
    """TestRfc3164HeaderApacheLogWithNulls: a ``-`` right after the host does not make it RFC 5424."""
    [event] = decode("<10>Apr  3 11:11:11 ubuntu-11.cloudera.com - hyphen_null_breaks_5424_pattern "
                     "[07/Jun/2012:14:46:44 -0600]\n", now=epoch_ms(2024, 4, 10, 0, 0, 0) / 1000)
    check({"timestamp": str(epoch_ms(2024, 4, 3, 11, 11, 11)), "host": "ubuntu-11.cloudera.com",
           "body": "- hyphen_null_breaks_5424_pattern [07/Jun/2012:14:46:44 -0600]"}, event)


# The cases of Flume's TestSyslogUtils that are not among the vectors.
FLUME_TESTS = [
    ("TestHeader2", "<10>1 2012-04-13T11:11:11Z ubuntu-11.cloudera.com some msg\n", "none",
     [{"timestamp": str(epoch_ms(2012, 4, 13, 11, 11, 11)), "host": "ubuntu-11.cloudera.com", "body": "some msg"}]),
    ("TestHeader5", "<10>1 2012-04-13T11:11:11 - some msg\n", "none",
     [{"timestamp": str(epoch_ms(2012, 4, 13, 11, 11, 11)), "host": None, "body": "some msg"}]),
    ("TestHeader8", "<10>1 2012-04-13T11:11:11.999 ubuntu-11.cloudera.com some msg\n", "none",
     [{"timestamp": str(epoch_ms(2012, 4, 13, 11, 11, 11) + 999), "host": "ubuntu-11.cloudera.com"}]),
    ("testExtractBadEvent3", "<> bad bad data\n", "none",
     [{"Facility": "0", "Severity": "0", STATUS: INVALID, "body": "<> bad bad data"}]),
    ("testBadEventGoodEvent", "hi guys! <10F> bad bad data\n<10>Good good good data\n", "none",
     [{"Facility": "0", "Severity": "0", STATUS: INVALID, "body": "hi guys! <10F> bad bad data"},
      {"Facility": "1", "Severity": "2", STATUS: None, "body": "<10>Good good good data"}]),
    ("testGoodEventBadEvent", "<10>Good good good data\nhi guys! <10F> bad bad data\n", "none",
     [{"Facility": "1", "Severity": "2", STATUS: None, "body": "<10>Good good good data"},
      {"Facility": "0", "Severity": "0", STATUS: INVALID, "body": "hi guys! <10F> bad bad data"}]),
    ("testKeepFields hostname", "<10>1 2012-04-13T11:11:11+08:00 ubuntu-11.cloudera.com some msg\n", "hostname",
     [{"body": "ubuntu-11.cloudera.com some msg"}]),
    ("testKeepFields priority version timestamp hostname",
     "<10>1 2012-04-13T11:11:11+08:00 ubuntu-11.cloudera.com some msg\n", "priority version timestamp hostname",
     [{"body": "<10>1 2012-04-13T11:11:11+08:00 ubuntu-11.cloudera.com some msg"}]),
]


@pytest.mark.parametrize("name,text,keep,expected", FLUME_TESTS, ids=[t[0] for t in FLUME_TESTS])
def test_flume_syslog_utils_cases(name, text, keep, expected):
    events = decode(text, keep)
    assert len(events) == len(expected)
    for want, got in zip(expected, events):
        check(want, got)


def test_event_size_cuts_incomplete_then_invalid():
    """testExtractBadEventLarge: eventSize 5 is raised to the minimum 10; the cut line is Incomplete with its
    priority, the rest (no ``<pri>``) Invalid, cut again at 10 bytes."""
    events = decode("<10> bad bad data bad bad\n", size=5)
    check({"Facility": "1", "Severity": "2", STATUS: INCOMPLETE, "body": "<10> bad b"}, events[0])
    check({"Facility": "0", "Severity": "0", STATUS: INVALID, "body": "ad data ba"}, events[1])
    assert [b for _, b in events[2:]] == [b"d bad"]


def test_a_line_of_exactly_event_size_bytes_is_incomplete_and_its_newline_skipped():
    """Flume checks the size after each byte, before it sees the newline."""
    events = decode("<10>abcdef\n<11>x\n", size=10)
    assert [(h.get(STATUS), b) for h, b in events] == [(INCOMPLETE, b"<10>abcdef"), (None, b"<11>x")]


def test_stream_fed_byte_by_byte_gives_the_same_events():
    text = "".join(c["input"] for c in UTILS if c["input"] and "(example" not in c["input"])
    decoder = SyslogDecoder(zone=timezone.utc)
    one_by_one = []
    for byte in text.encode():
        one_by_one += decoder.feed(bytes([byte]))[0]
    assert one_by_one == decode(text)
    assert len(one_by_one) == sum(c["input"].count("\n") for c in UTILS if c["input"] and "(example" not in c["input"])


def test_endless_line_holds_at_most_event_size_bytes():
    decoder = SyslogDecoder(100)
    events = []
    for _ in range(1000):
        events += decoder.feed(b"<13>" + b"x" * 996)[0]
        assert len(decoder.buf) < 100
    assert len(events) == 10000 and all(len(b) == 100 for _, b in events)
    assert events[0][0][STATUS] == INCOMPLETE and events[1][0][STATUS] == INVALID


def test_crlf_line_keeps_its_raw_bytes():
    """Java's ``.`` does not match ``\\r``, so Flume's patterns fail on a CRLF line and the raw line is the body."""
    [(headers, body)] = decode("<10>1 2012-04-13T11:11:11Z host msg\r\n")
    assert body == b"<10>1 2012-04-13T11:11:11Z host msg\r" and "host" not in headers


def test_undecodable_bytes_are_kept():
    [(headers, body)] = SyslogDecoder(zone=timezone.utc).feed(b"<10>1 2012-04-13T11:11:11Z h \xff\xfe ok\n")[0]
    assert headers["host"] == "h" and body == b"\xff\xfe ok"


def test_lenient_dates_roll_over_like_simpledateformat():
    [(headers, _)] = decode("<10>1 2012-13-45T11:11:11Z h m\n")
    assert headers["timestamp"] == str(epoch_ms(2013, 2, 14, 11, 11, 11))


def test_fraction_with_offset_and_short_fraction():
    """Flumery honours the offset (vector TestHeader11) and reads ``.52`` as 520 ms (see the module docstring)."""
    [(headers, _)] = decode("<10>1985-04-12T19:20:50.52-04:00 h m\n")
    assert headers["timestamp"] == "482196050520"


def test_datagram_events():
    decoder = SyslogDecoder(zone=timezone.utc)
    assert decoder.datagram(b"<13>no newline at all") == ([({"Facility": "1", "Severity": "5"},
                                                             b"<13>no newline at all")], 0)
    events, failed = decoder.datagram(b"<13>one\n<14>two\nthree")
    assert [b for _, b in events] == [b"<13>one", b"<14>two", b"three"] and failed == 0
    assert events[2][0][STATUS] == INVALID
    assert decoder.datagram(b"") == ([], 1)
    assert decoder.datagram(b"\n") == ([], 1)
    assert decoder.datagram(b"<") == ([], 1)
    assert decoder.datagram(b"<>")[0][0][0][STATUS] == INVALID


def test_keep_fields_values():
    assert keep_fields("none") == keep_fields("FALSE") == frozenset()
    assert keep_fields(" all ") == keep_fields("true") == KEEP_ALL
    assert keep_fields("timestamp,hostname") == {"timestamp", "hostname"}
    assert check_keep_fields("priority version") is None
    assert "unknown field host" in check_keep_fields("host")


# --- multiport_syslogtcp's SyslogParser ---------------------------------------------------------------------

@pytest.mark.parametrize("case", [c for c in MULTIPORT if "expected_ms" in c], ids=lambda c: c["input"])
def test_multiport_rfc5424_date_vector(case):
    assert multiport_5424_ms(case["input"]) == case["expected_ms"]


@pytest.mark.parametrize("stamp,expected", [
    ("2003-10-11T22:14:15.003Z", 1065910455003),                 # held back from the vectors: Flume's test
    ("2012-04-13T08:08:08.0001+00:00", 1334304488000),
])
def test_multiport_rfc5424_dates_from_flume_tests(stamp, expected):
    assert multiport_5424_ms(stamp) == expected


@pytest.mark.parametrize("stamp", ["2012-04-13T08:08:08", "2012-02-30T08:08:08Z", "2012-04-13T08:08:08.Z",
                                   "2012-04-13T08:08:08.123", "2012-04-13T08:08:08+0800"])
def test_multiport_rfc5424_bad_dates(stamp):
    with pytest.raises(SyslogFormatError):
        multiport_5424_ms(stamp)


FLUME_MESSAGES = [c["input"] for c in MULTIPORT if "expected_ms" not in c] + [
    "<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!",
    "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - BOM'su root' failed for lonvick on "
    "/dev/pts/8",
    "<13>2012-08-16T14:34:03-08:00 127.0.0.1 test shnap!",
]


@pytest.mark.parametrize("msg", FLUME_MESSAGES)
def test_multiport_message_vector(msg):
    """testMessageParsing: parses with no status; keepFields all keeps the message; hostname keeps the host."""
    headers, _ = parse_message(msg, frozenset(), 0)
    assert STATUS not in headers and {"Priority", "Facility", "Severity", "timestamp", "host"} <= set(headers)
    assert parse_message(msg, KEEP_ALL, 0)[1] == msg
    headers, body = parse_message(msg, keep_fields("hostname"), 0)
    assert headers["host"] in body


def test_multiport_headers():
    headers, body = parse_message("<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - hi",
                                  frozenset(), 0)
    assert headers == {"Priority": "165", "Facility": "20", "Severity": "5", "Version": "1",
                       "timestamp": "1061727255000", "host": "192.0.2.1"}
    assert body == "myproc 8710 - - hi"
    headers, body = parse_message("<13>- relay msg", frozenset(), 1234)
    assert headers["timestamp"] == "1234" and headers["host"] == "relay" and body == "msg"
    assert parse_message("<-1>- h m", frozenset(), 0)[0]["Severity"] == "-1"        # Java's int arithmetic


def test_multiport_rfc3164_in_utc_with_year_window():
    now = epoch_ms(2026, 1, 10, 0, 0, 0)
    assert multiport_3164_ms("Dec 31 23:59:59", now) == epoch_ms(2025, 12, 31, 23, 59, 59)
    assert multiport_3164_ms("Feb  5 17:32:18", now) == epoch_ms(2026, 2, 5, 17, 32, 18)
    assert multiport_3164_ms("Feb 30 17:32:18", now) == 0
    assert multiport_3164_ms("Foo  5 17:32:18", now) == 0


@pytest.mark.parametrize("msg", ["", "no bracket", "<1234567>x", "<>x", "<1a>x", "<13>", "<13>-",
                                 "<13>Oct 11 22:14:15", "<13>2003-08-24T05:14:15Z", "<13>nospace"])
def test_multiport_invalid_messages(msg):
    with pytest.raises(SyslogFormatError):
        parse_message(msg, frozenset(), 0)


def test_line_splitter_counts_the_newline_in_the_limit():
    splitter = LineSplitter(6)
    assert splitter.feed(b"abcde\nabcdef\nab") == [(b"abcde", False), (b"abcdef", True), (b"", False)]
    assert splitter.feed(b"c\n") == [(b"abc", False)]
    assert splitter.feed(b"xy") == [] and splitter.finish() == b"xy" and splitter.finish() is None
