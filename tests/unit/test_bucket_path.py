"""Flume's BucketPath escapes (core/bucket_path.py), against every `BucketPath` vector of flume-compat and a few
cases the vectors leave out."""
from __future__ import annotations

import json
import zoneinfo

import pytest
from conftest import VECTORS

from core.bucket_path import BadTimestamp, BucketPath, MissingTimestamp, host_values

CASES = json.loads(VECTORS.read_text())["BucketPath"]


def compile_case(case: dict) -> BucketPath:
    ticks = iter(range(case.get("clock_ms", 0), case.get("clock_ms", 0) + 10_000_000, 1000))
    return BucketPath(case["template"], zoneinfo.ZoneInfo(case["timeZone"]),
                      case["roundUnit"] if case["round"] else None, case["roundValue"] or 1,
                      case["useLocalTimeStamp"], clock=lambda: next(ticks))


@pytest.mark.parametrize("case", CASES, ids=[f"{i}:{c['template']}" for i, c in enumerate(CASES)])
def test_flume_vector(case):
    expected = case["expected"]
    if isinstance(expected, dict):
        error = expected["error"]
        if "static escape" in error:
            with pytest.raises(ValueError, match="localhost"):
                compile_case(case)
            return
        wanted = MissingTimestamp if "NullPointerException" in error else BadTimestamp
        with pytest.raises(wanted):
            compile_case(case).expand(case["headers"])
        return
    assert compile_case(case).expand(case["headers"]) == expected


def test_vectors_cover_the_groups_of_escapes():
    templates = " ".join(c["template"] for c in CASES)
    for tag in ("%{", "%[", "%t", "%s", "%c", "%z", "%%"):
        assert tag in templates


UTC = zoneinfo.ZoneInfo("UTC")
TS = {"timestamp": "1340459193234"}          # Sat 2012-06-23 13:46:33.234 UTC


@pytest.mark.parametrize("template,expected", [
    ("%I|%l|%p", "01|1|PM"),
    ("%b %B %a %A", "Jun June Sat Saturday"),
    ("%q", ""),                              # an unknown letter is "" (and still needs the time)
    ("a%%b", "a%b"),
    ("%{missing}x", "x"),
    ("%{a}/%{b.c-d}", "1/2"),
    ("50%", "50%"),
    ("%[localhost]", host_values()["localhost"]),
    ("%[ip]|%[Fqdn]", host_values()["ip"] + "|" + host_values()["fqdn"]),
])
def test_escapes(template, expected):
    assert BucketPath(template, UTC).expand({**TS, "a": "1", "b.c-d": "2"}) == expected


def test_midnight_in_twelve_hour_forms():
    assert BucketPath("%I %l %p %k", UTC).expand({"timestamp": "1340409600000"}) == "12 12 AM 0"


def test_percent_percent_needs_the_time_too():
    with pytest.raises(MissingTimestamp):
        BucketPath("%%", UTC).expand({})


def test_header_only_templates_need_no_timestamp():
    assert BucketPath("/logs/%{host}", UTC).expand({"host": "web1"}) == "/logs/web1"


def test_rounding_is_in_the_templates_zone():
    la = zoneinfo.ZoneInfo("Asia/Kolkata")            # +05:30: an hour rounded in UTC would differ
    path = BucketPath("%H:%M", la, "hour", 2)
    assert path.expand(TS) == "18:00"                  # 19:16 IST rounded down to an even hour


def test_each_second_expands_on_its_own():
    path = BucketPath("%Y/%H%M%S", UTC)
    first = path.expand({"timestamp": "1340459193234"})
    assert path.expand({"timestamp": "1340459193999"}) == first
    assert path.expand({"timestamp": "1340459194000"}) != first


def test_local_zone_by_default():
    path = BucketPath("%z", None)
    assert len(path.expand(TS)) == 5
