"""workers/interceptors/* against Flume's interceptor test cases (flume-compat/vectors.json), plus the Java regex
and Joda pattern translations they rely on (expected values taken from java.util.regex on JDK 17 and Joda-Time
2.10.14), configuration errors, chaining through an agent file, and immutability of events."""
from __future__ import annotations

import copy
import dataclasses
import ipaddress
import json
import re
import socket
import time
import uuid

import pytest
from conftest import EXAMPLES, VECTORS

from core import java_regex, joda, options
from core.config import build_config, parse_agent
from core.errors import ConfigInvalid
from core.event import Event
from core.registries import INTERCEPTORS
from routing.processor import ChannelProcessor
from workers.interceptors.base import InterceptorContext
from workers.interceptors.host import HostInterceptor, java_host_address
from workers.interceptors.regex_extractor import (
    MILLIS_CLASS,
    PASS_THROUGH_CLASS,
    MillisSerializer,
    PassThroughSerializer,
    RegexExtractorInterceptor,
)
from workers.interceptors.regex_filter import RegexFilteringInterceptor
from workers.interceptors.remove_header import RemoveHeaderInterceptor
from workers.interceptors.search_replace import SearchAndReplaceInterceptor
from workers.interceptors.static import StaticInterceptor
from workers.interceptors.timestamp import TimestampInterceptor
from workers.interceptors.uuid_header import UUIDInterceptor

VECTOR_DATA = json.loads(VECTORS.read_text())
PREFIX = "a1.sources.r1.interceptors.i1."

GROUPS = {
    "RegexExtractorInterceptor": RegexExtractorInterceptor,
    "RegexFilteringInterceptor": RegexFilteringInterceptor,
    "SearchAndReplaceInterceptor": SearchAndReplaceInterceptor,
    "StaticInterceptor": StaticInterceptor,
    "TimestampInterceptor": TimestampInterceptor,
    "HostInterceptor": HostInterceptor,
    "RemoveHeaderInterceptor": RemoveHeaderInterceptor,
    "UUIDInterceptor": UUIDInterceptor,
}


def _case_id(group: str, index: int, case: dict) -> str:
    source = case.get("source", "")
    name = (case.get("test") or ("note" if set(case) == {"note"} else "")
            or ("userGuide" if "UserGuide" in source else "derived-" + source.split(".")[0]))
    return f"{group}-{index}-{name}"


CASES = [(group, case) for group in GROUPS for case in VECTOR_DATA[group]]
CASE_IDS = [_case_id(group, i, case) for group in GROUPS for i, case in enumerate(VECTOR_DATA[group])]


def build(cls, props: dict[str, str]):
    """Build an interceptor as app/config.py does; fail the test on configuration errors."""
    config, errors, _notices = build_config(cls, props, PREFIX)
    assert errors == [], errors
    return cls("i1", config, InterceptorContext("a1", "r1"))


def build_errors(cls, props: dict[str, str]) -> list[options.ConfigError]:
    config, errors, _notices = build_config(cls, props, PREFIX)
    assert config is None and errors, "expected configuration errors"
    return errors


@pytest.fixture
def zone(monkeypatch):
    """Set the process's local time zone (the JVM default zone of Flume's Joda parsing)."""
    def set_zone(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time.tzset()
    yield set_zone
    monkeypatch.undo()
    time.tzset()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def assert_value(expected: str, actual: str | None, before: int, after: int) -> None:
    """Compare one header value with a vector's expectation, which may be a description of the value."""
    assert actual is not None
    if expected.startswith(">= now_ms"):
        assert before <= int(actual) <= after
    elif expected.startswith("<"):                 # "<local IP address>", "<InetAddress...getHostAddress()>"
        assert actual == java_host_address(_resolve_local_independently())
    elif expected.startswith("non-empty random UUID"):
        assert uuid.UUID(actual).version == 4 and actual == actual.lower()
    elif expected.startswith("startswith "):
        prefix = expected.split("'")[1]
        assert actual.startswith(prefix) and uuid.UUID(actual[len(prefix):]).version == 4
    else:
        assert actual == expected


def _resolve_local_independently() -> str:
    name = socket.gethostname()
    return "127.0.0.1" if name == "localhost" else socket.gethostbyname(name)


# --- every vector case of the eight groups ---------------------------------------------------------------------

def test_every_group_has_cases():
    assert {g: len(VECTOR_DATA[g]) for g in GROUPS} == {
        "RegexExtractorInterceptor": 10, "RegexFilteringInterceptor": 6, "SearchAndReplaceInterceptor": 6,
        "StaticInterceptor": 5, "TimestampInterceptor": 4, "HostInterceptor": 4, "RemoveHeaderInterceptor": 6,
        "UUIDInterceptor": 4}


@pytest.mark.parametrize("group,case", CASES, ids=CASE_IDS)
def test_vector(group, case, zone):
    cls = GROUPS[group]
    if set(case) == {"note"}:
        check_note(group, case)
    elif "serializer" in case:
        check_serializer_case(case, zone)
    elif "error" in case.get("expected", {}):
        check_error_case(cls, case)
    elif group == "RegexFilteringInterceptor":
        kept = build(cls, case["config"]).intercept(Event(case["body"].encode()))
        assert (kept is not None) == (case["expected"] == "pass")
    elif group == "RegexExtractorInterceptor":
        check_extractor_case(case, zone)
    else:
        check_event_case(cls, case)


def check_note(group: str, case: dict) -> None:
    # The UUIDInterceptor note: the Flume class name (no alias in Flume) and the defaults.
    assert group == "UUIDInterceptor"
    cls = INTERCEPTORS.resolve("org.apache.flume.sink.solr.morphline.UUIDInterceptor$Builder")
    assert cls is UUIDInterceptor and INTERCEPTORS.resolve("uuid") is UUIDInterceptor
    config, errors, _ = options.build(cls.Config, {}, PREFIX)
    assert errors == []
    assert (config.header_name, config.preserve_existing, config.prefix) == ("id", True, "")


def check_error_case(cls, case: dict) -> None:
    errors = build_errors(cls, case["config"])
    keys = {e.key for e in errors}
    expected = case["expected"]["error"]
    if "invalid regex" in expected:
        # (serializers is missing too: every error is reported at once)
        [regex_error] = [e for e in errors if e.key == PREFIX + "regex"]
        assert "invalid regular expression: Dangling meta character '?'" in regex_error.message
        assert f"(got '{case['config']['regex']}')" in regex_error.message
    elif "no serializers" in expected:
        assert keys == {PREFIX + "serializers"}
    elif "empty names" in expected:
        assert keys == {PREFIX + "serializers.,.name"}
    elif "searchPattern" in expected:
        assert keys == {PREFIX + "searchPattern"} and "required" in errors[0].message
    elif "PatternSyntaxException" in expected:
        assert keys == {PREFIX + "fromListSeparator"} and "(got '(')" in errors[0].message
    else:
        pytest.fail(f"unhandled error case {expected}")


def check_serializer_case(case: dict, zone) -> None:
    if case["serializer"] == "RegexExtractorInterceptorPassThroughSerializer":
        assert PassThroughSerializer().serialize(case["input"]) == case["expected"]
        return
    if "error" in case["expected"]:
        # The serializer alone, and as Flume configures it inside the extractor: the pattern is required.
        with pytest.raises(joda.JodaError):
            MillisSerializer(case["config"].get("pattern", ""))
        errors = build_errors(RegexExtractorInterceptor, {
            "regex": "(.*)", "serializers": "s1", "serializers.s1.name": "t", "serializers.s1.type": MILLIS_CLASS,
            **{f"serializers.s1.{k}": v for k, v in case["config"].items()}})
        assert [e.key for e in errors] == [PREFIX + "serializers.s1.pattern"]
        return
    zone(case["timeZone"])
    assert MillisSerializer(case["config"]["pattern"]).serialize(case["input"]) == case["expected"]
    extractor = build(RegexExtractorInterceptor, {
        "regex": "^(.*)$", "serializers": "s1", "serializers.s1.name": "ts", "serializers.s1.type": MILLIS_CLASS,
        "serializers.s1.pattern": case["config"]["pattern"]})
    assert extractor.intercept(Event(case["input"].encode())).headers == {"ts": case["expected"]}


def check_extractor_case(case: dict, zone) -> None:
    config = dict(case["config"])
    missing = [s for s in config["serializers"].split() if f"serializers.{s}.name" not in config]
    if missing:
        # The derived no-match case lists serializers without names: Flume's Builder rejects that too
        # ("Supplied name cannot be empty"); with names, a body without a match leaves the event unchanged.
        errors = build_errors(RegexExtractorInterceptor, config)
        assert {e.key for e in errors} == {f"{PREFIX}serializers.{s}.name" for s in missing}
        config.update({f"serializers.{s}.name": s for s in missing})
    if "1350611220000" in json.dumps(case):
        zone("America/Los_Angeles")        # the user guide's author was in UTC-7 (PDT)
    event = Event(case["body"].encode(), {"existing": "header"})
    out = build(RegexExtractorInterceptor, config).intercept(event)
    assert out.headers == {"existing": "header", **case["expected_headers_added"]}
    assert out.body == case.get("expected_body", case["body"]).encode()
    if "1350611220000" in json.dumps(case):
        zone("UTC")
        out = build(RegexExtractorInterceptor, config).intercept(event)
        assert out.headers["timestamp"] == "1350586020000"      # the value the vector's note gives for UTC


def check_event_case(cls, case: dict) -> None:
    event = Event(case.get("body", "body").encode(), dict(case.get("headers_in", {})))
    before = now_ms()
    out = cls("i1", options.build(cls.Config, case["config"], PREFIX)[0], InterceptorContext()).intercept(event)
    after = now_ms()
    if "expected_body" in case:
        assert out.body == case["expected_body"].encode()
    if "expected_headers" in case:
        assert out.headers == case["expected_headers"]
    expected = case.get("expected", {})
    if "header" in expected:                      # {"header": name, "value": description}
        expected = {expected["header"]: expected["value"]}
    for name, value in expected.items():
        assert_value(value, out.headers.get(name), before, after)


# --- configuration ------------------------------------------------------------------------------------------

def test_defaults_are_flumes():
    def defaults(alias, **required):
        cls = INTERCEPTORS.resolve(alias)
        config, errors, _ = options.build(cls.Config, required, PREFIX)
        assert errors == []
        return {f.metadata["key"]: getattr(config, f.name) for f in dataclasses.fields(config)
                if f.metadata["key"] not in required and not f.metadata["key"].endswith(".*")}
    assert defaults("timestamp") == {"headerName": "timestamp", "preserveExisting": False}
    assert defaults("host") == {"hostHeader": "host", "useIP": True, "preserveExisting": False}
    assert defaults("static") == {"key": "key", "value": "value", "preserveExisting": True}
    assert defaults("regex_filter") == {"regex": ".*", "excludeEvents": False}
    assert defaults("search_replace", searchPattern="x") == {"replaceString": "", "charset": "UTF-8"}
    assert defaults("remove_header") == {"withName": None, "fromList": None, "fromListSeparator": r"\s*,\s*",
                                         "matching": None}
    assert defaults("uuid") == {"headerName": "id", "preserveExisting": True, "prefix": ""}
    assert build_errors(SearchAndReplaceInterceptor, {})[0].key == PREFIX + "searchPattern"
    assert {e.key for e in build_errors(RegexExtractorInterceptor, {})} == {PREFIX + "regex", PREFIX + "serializers"}


@pytest.mark.parametrize("cls,key,props", [
    (RegexFilteringInterceptor, "regex", {"regex": "(INFO"}),
    (RegexExtractorInterceptor, "regex", {"regex": "x{", "serializers": "s1", "serializers.s1.name": "a"}),
    (SearchAndReplaceInterceptor, "searchPattern", {"searchPattern": "[a-"}),
    (RemoveHeaderInterceptor, "matching", {"matching": "my-header1.*)"}),
    (RemoveHeaderInterceptor, "fromListSeparator", {"fromList": "a", "fromListSeparator": "\\"}),
])
def test_bad_regex_names_key_and_value(cls, key, props):
    errors = build_errors(cls, props)
    assert [e.key for e in errors] == [PREFIX + key]
    message = str(errors[0])
    assert message.startswith(f"{PREFIX}{key}: invalid regular expression")
    assert f"(got '{props[key]}')" in message


def test_java_only_regex_features_are_config_errors():
    errors = build_errors(RegexFilteringInterceptor, {"regex": r"\p{L}+"})
    assert "\\p{L} is not supported" in errors[0].message
    errors = build_errors(RegexFilteringInterceptor, {"regex": "(?<=a|bc)x"})
    assert "fixed-width" in errors[0].message


def test_unknown_property_is_an_error_with_did_you_mean():
    errors = build_errors(TimestampInterceptor, {"preserveExisiting": "true"})
    assert errors[0].key == PREFIX + "preserveExisiting"
    assert "did you mean 'preserveExisting'?" in errors[0].message


def test_bad_boolean_is_an_error():
    errors = build_errors(StaticInterceptor, {"preserveExisting": "yes"})
    assert str(errors[0]) == f"{PREFIX}preserveExisting: expected true or false (got 'yes')"


def test_search_replace_errors():
    errors = build_errors(SearchAndReplaceInterceptor, {"searchPattern": ""})
    assert str(errors[0]) == f"{PREFIX}searchPattern: empty value"          # required, so never empty
    errors = build_errors(SearchAndReplaceInterceptor, {"searchPattern": "(b)", "replaceString": "$2"})
    assert str(errors[0]) == f"{PREFIX}replaceString: No group 2 (got '$2')"
    errors = build_errors(SearchAndReplaceInterceptor, {"searchPattern": "b", "replaceString": "$x"})
    assert "Illegal group reference" in str(errors[0])
    errors = build_errors(SearchAndReplaceInterceptor, {"searchPattern": "b", "charset": "UTF-9"})
    assert errors[0].key == PREFIX + "charset" and "(got 'UTF-9')" in errors[0].message
    errors = build_errors(SearchAndReplaceInterceptor, {"searchPattern": "b", "charset": "hex"})
    assert errors[0].key == PREFIX + "charset"


def test_extractor_serializer_errors():
    errors = build_errors(RegexExtractorInterceptor, {
        "regex": "(a)(b)", "serializers": "s1 s2", "serializers.s1.name": "one",
        "serializers.s2.name": "two", "serializers.s2.type": "org.apache.flume.interceptor.Nope",
        "serializers.s3.name": "three", "serializers.s1.pattern": "yyyy"})
    messages = {e.key[len(PREFIX):]: e.message for e in errors}
    assert set(messages) == {"serializers.s2.type", "serializers.s3.name", "serializers.s1.pattern"}
    assert "unknown serializer type (got 'org.apache.flume.interceptor.Nope'" in messages["serializers.s2.type"]
    assert "belongs to no serializer listed in serializers (s1 s2)" in messages["serializers.s3.name"]
    assert "unknown property for a default serializer" in messages["serializers.s1.pattern"]
    errors = build_errors(RegexExtractorInterceptor, {
        "regex": "(a)", "serializers": "s1", "serializers.s1.name": "t", "serializers.s1.type": "millis",
        "serializers.s1.pattern": "yyyy-MM-dd qq"})
    assert str(errors[0]) == (f"{PREFIX}serializers.s1.pattern: Illegal pattern component: qq "
                              "(got 'yyyy-MM-dd qq')")


def test_extractor_serializer_type_spellings(zone):
    zone("UTC")
    for type_name in ("DEFAULT", "default", PASS_THROUGH_CLASS):
        i = build(RegexExtractorInterceptor, {"regex": "(\\d+)", "serializers": "s1", "serializers.s1.name": "n",
                                              "serializers.s1.type": type_name})
        assert i.intercept(Event(b"x 42")).headers == {"n": "42"}
    for type_name in (MILLIS_CLASS, "millis", "MILLIS"):
        i = build(RegexExtractorInterceptor, {"regex": "(\\d{4})", "serializers": "s1", "serializers.s1.name": "t",
                                              "serializers.s1.type": type_name, "serializers.s1.pattern": "yyyy"})
        assert i.intercept(Event(b"in 2012")).headers == {"t": "1325376000000"}


# --- behaviour beyond the vectors ---------------------------------------------------------------------------

def test_extractor_first_match_and_groups(zone):
    zone("UTC")
    i = build(RegexExtractorInterceptor, {"regex": "(\\d)(x)?", "serializers": "a b c",
                                          "serializers.a.name": "digit", "serializers.b.name": "x",
                                          "serializers.c.name": "unused"})
    # first match only; a group that did not take part sets no header; serializers beyond the groups unused
    assert i.intercept(Event(b"1 2x")).headers == {"digit": "1"}
    assert i.intercept(Event(b"2x 1")).headers == {"digit": "2", "x": "x"}


def test_extractor_unparsable_time_skips_that_header(zone, caplog):
    zone("UTC")
    i = build(RegexExtractorInterceptor, {"regex": "^(\\S+) (\\S+)", "serializers": "t w",
                                          "serializers.t.name": "timestamp", "serializers.t.type": MILLIS_CLASS,
                                          "serializers.t.pattern": "yyyy-MM-dd", "serializers.w.name": "word"})
    assert i.intercept(Event(b"2012-10-18 ok")).headers == {"timestamp": "1350518400000", "word": "ok"}
    assert i.intercept(Event(b"2012-13-18 ok")).headers == {"word": "ok"}
    assert "header timestamp not set" in caplog.text


def test_regex_filter_uses_find_and_java_line_rules():
    keep_info = build(RegexFilteringInterceptor, {"regex": "^INFO.*$"})
    assert keep_info.intercept(Event(b"INFO: ok\r\n")) is not None        # Java's $ before a final \r\n
    assert keep_info.intercept(Event(b"INFO: one\r\ntwo")) is None         # Java's . stops at \r
    assert keep_info.intercept(Event(b"\xffINFO")) is None                  # not UTF-8 -> U+FFFD, no match
    drop = build(RegexFilteringInterceptor, {"regex": "DEBUG", "excludeEvents": "true"})
    assert drop.intercept(Event(b"a DEBUG b")) is None
    assert drop.intercept_batch([Event(b"x"), Event(b"DEBUG"), Event(b"y")]) == [Event(b"x"), Event(b"y")]


def test_search_replace_java_replacement_syntax():
    def run(pattern, replacement, body):
        props = {"searchPattern": pattern, "replaceString": replacement}
        return build(SearchAndReplaceInterceptor, props).intercept(Event(body.encode())).body.decode()
    assert run("(\\w+)@(\\w+)", "$2 at $1", "me@host") == "host at me"
    assert run("(?<user>\\w+)@", "${user} at ", "me@host") == "me at host"
    assert run("(b)", "$10\\$", "abc") == "ab0$c"           # $1 then literal 0; \$ is a dollar
    assert run("(b)|(z)", "[$2]", "abc") == "a[]c"          # a group that did not match adds nothing
    assert run("x*", "-", "abxd") == "-a-b--d-"             # empty matches as Java's replaceAll
    assert run("^prefix.*$", "Y", "prefix abc\r") == "Y\r"  # Java's . and $ around \r
    assert run("\\\\", "/", "a\\b") == "a/b"


def test_search_replace_charsets():
    latin = build(SearchAndReplaceInterceptor, {"searchPattern": "é", "replaceString": "e", "charset": "ISO-8859-1"})
    assert latin.intercept(Event("café".encode("latin-1"))).body == b"cafe"
    to_ascii = build(SearchAndReplaceInterceptor, {"searchPattern": "x", "charset": "US-ASCII"})
    assert to_ascii.intercept(Event("xé".encode("utf-8"))).body == b"??"     # unreadable bytes, then '?'
    utf16 = build(SearchAndReplaceInterceptor, {"searchPattern": "b", "replaceString": "c", "charset": "UTF-16"})
    # Java's UTF-16: reads a byte-order mark, else big-endian; writes big-endian with a mark.
    written = b"\xfe\xff" + "ac".encode("utf-16-be")
    assert utf16.intercept(Event(b"\xff\xfe" + "ab".encode("utf-16-le"))).body == written
    assert utf16.intercept(Event("ab".encode("utf-16-be"))).body == written


def test_remove_header_combinations():
    i = build(RemoveHeaderInterceptor, {"withName": "a", "fromList": "b ,c", "matching": "x\\d+"})
    event = Event(b"", {"a": "1", "b": "2", "c": "3", "x1": "4", "x1y": "5", "d": "6"})
    assert i.intercept(event).headers == {"x1y": "5", "d": "6"}
    assert build(RemoveHeaderInterceptor, {}).intercept(event) is event


def test_host_use_ip_false_gives_canonical_name():
    out = build(HostInterceptor, {"useIP": "false", "preserveExisting": "true"}).intercept(Event(b"", {}))
    name = out.headers["host"]
    # the reverse lookup of the local address, kept only if it resolves back to it (else the address itself)
    local = _resolve_local_independently()
    assert name == local if _is_ip(name) else local in {a[4][0] for a in socket.getaddrinfo(name, None)}
    kept = build(HostInterceptor, {"preserveExisting": "true"}).intercept(Event(b"", {"host": "h"}))
    assert kept.headers == {"host": "h"}


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def test_java_host_address_format():
    assert java_host_address("10.0.0.1") == "10.0.0.1"
    assert java_host_address("::1") == "0:0:0:0:0:0:0:1"
    assert java_host_address("fe80::1%eth0") == "fe80:0:0:0:0:0:0:1%eth0"


# --- events are never mutated ---------------------------------------------------------------------------------

MUTATION_CASES = [
    ("timestamp", {}), ("host", {}), ("static", {"preserveExisting": "false", "value": "other"}),
    ("uuid", {"preserveExisting": "false"}),
    ("regex_filter", {"regex": "body"}), ("remove_header", {"withName": "key"}),
    ("search_replace", {"searchPattern": "body", "replaceString": "BODY"}),
    ("regex_extractor", {"regex": "(b)", "serializers": "s", "serializers.s.name": "key"}),
]


@pytest.mark.parametrize("alias,props", MUTATION_CASES, ids=[c[0] for c in MUTATION_CASES])
def test_events_are_not_mutated(alias, props):
    interceptor = build(INTERCEPTORS.resolve(alias), props)
    headers = {"key": "value", "timestamp": "1", "host": "h", "id": "x"}
    event = Event(b"a body", headers)
    snapshot = copy.deepcopy(headers)
    out = interceptor.intercept(event)
    assert event.headers == snapshot and event.headers is headers and event.body == b"a body"
    assert out is event or out.headers is not headers or out.headers == snapshot   # a body-only change may share
    assert out.headers != snapshot or out.body != event.body or out is event


# --- chains built from agent files ------------------------------------------------------------------------------

def _chain(text: str, source: str = "r1"):
    spec = parse_agent(text, "a1").sources[source]
    interceptors = [i.cls(i.name, i.config, InterceptorContext()) for i in spec.interceptors]
    return spec, ChannelProcessor(spec, None, interceptors)


def test_example_file_interceptors_resolve():
    text = (EXAMPLES / "e-interceptors.conf").read_text()
    assert parse_agent(text, "a1").sinks["k1"].type == "hdfs"      # the whole file is valid
    with_null_sink = "\n".join(line for line in text.splitlines() if not line.startswith("a1.sinks.k1."))
    spec, processor = _chain(with_null_sink + "\na1.sinks.k1.type = null\na1.sinks.k1.channel = c1\n")
    assert [i.cls for i in spec.interceptors] == [HostInterceptor, TimestampInterceptor, StaticInterceptor]
    before = now_ms()
    [out] = processor.intercept([Event(b"x", {"hostname": "old", "datacenter": "LONDON"})])
    assert out.headers["hostname"] == java_host_address(_resolve_local_independently())
    assert before <= int(out.headers["timestamp"]) <= now_ms()
    assert out.headers["datacenter"] == "LONDON"          # static keeps an existing header by default


CHAIN = """\
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = seq
a1.sources.r1.channels = c1
a1.sources.r1.interceptors = drop strip pick ts clean
a1.sources.r1.interceptors.drop.type = regex_filter
a1.sources.r1.interceptors.drop.regex = DEBUG
a1.sources.r1.interceptors.drop.excludeEvents = true
a1.sources.r1.interceptors.strip.type = org.apache.flume.interceptor.SearchAndReplaceInterceptor$Builder
a1.sources.r1.interceptors.strip.searchPattern = ^<[0-9]+>
a1.sources.r1.interceptors.pick.type = REGEX_EXTRACTOR
a1.sources.r1.interceptors.pick.regex = ^(\\\\d\\\\d\\\\d\\\\d-\\\\d\\\\d-\\\\d\\\\d \\\\d\\\\d:\\\\d\\\\d) (\\\\w+)
a1.sources.r1.interceptors.pick.serializers = when level
a1.sources.r1.interceptors.pick.serializers.when.name = timestamp
a1.sources.r1.interceptors.pick.serializers.when.type = \
    org.apache.flume.interceptor.RegexExtractorInterceptorMillisSerializer
a1.sources.r1.interceptors.pick.serializers.when.pattern = yyyy-MM-dd HH:mm
a1.sources.r1.interceptors.pick.serializers.level.name = level
a1.sources.r1.interceptors.ts.type = timestamp
a1.sources.r1.interceptors.ts.preserveExisting = true
a1.sources.r1.interceptors.clean.type = remove_header
a1.sources.r1.interceptors.clean.matching = lev.l
a1.channels.c1.type = memory
a1.sinks.k1.type = null
a1.sinks.k1.channel = c1
"""


def test_chain_in_order(zone):
    zone("America/Los_Angeles")
    spec, processor = _chain(CHAIN)
    assert [i.name for i in spec.interceptors] == ["drop", "strip", "pick", "ts", "clean"]
    events = [Event(b"<13>2012-10-18 18:47 INFO started"), Event(b"<13>2012-10-18 18:48 DEBUG noise"),
              Event(b"no time here")]
    out = processor.intercept(events)
    assert [e.body for e in out] == [b"2012-10-18 18:47 INFO started", b"no time here"]
    assert out[0].headers == {"timestamp": "1350611220000"}      # extracted, preserved by ts, level removed
    assert int(out[1].headers["timestamp"]) > 1350611220000       # stamped by ts


def test_chain_config_errors_are_all_reported():
    text = CHAIN.replace("drop.regex = DEBUG", "drop.regex = (DEBUG").replace(
        "clean.matching = lev.l", "clean.matchin = lev.l")
    with pytest.raises(ConfigInvalid) as info:
        parse_agent(text, "a1")
    messages = [str(e) for e in info.value.errors]
    assert any(m.startswith("a1.sources.r1.interceptors.drop.regex: invalid regular expression")
               and "(got '(DEBUG')" in m for m in messages), messages
    assert any(m.startswith("a1.sources.r1.interceptors.clean.matchin: unknown property")
               and "did you mean 'matching'?" in m for m in messages), messages


def test_morphline_interceptor_is_not_yet():
    with pytest.raises(Exception, match="does not have yet"):
        INTERCEPTORS.resolve("org.apache.flume.sink.solr.morphline.MorphlineInterceptor$Builder")


# --- the Java regex translation (expected results from java.util.regex, JDK 17) --------------------------------

def java_find_all(pattern: str, text: str) -> list[str]:
    return [m.group() for m in java_regex.compile_java(pattern).finditer(text)]


@pytest.mark.parametrize("pattern,text,expected", [
    (".", "\r\x85\u2028\n", []),                      # . excludes every Java line terminator
    ("(?s).", "\r", ["\r"]),
    ("(?d).", "\r", ["\r"]),                           # UNIX_LINES: only \n ends a line
    ("a$", "a\r\n", ["a"]),
    ("a$", "a\n\n", []),
    ("$", "a\r\n", ["", ""]),                          # before \r\n and at the end, not between \r and \n
    ("a\\Z", "a\u2028", ["a"]),
    ("a\\z", "a\n", []),
    ("(?m)^\\w", "a\rb\r\nc\n", ["a", "b", "c"]),
    ("(?m)^", "", []),                                 # Java's (?m)^ never matches at the end of input
    ("\\w+", "café", ["caf"]),                         # \w \d \s are ASCII
    ("\\d", "3٣", ["3"]),
    ("\\s", "\xa0 ", [" "]),
    ("[\\W_]", "é_a", ["é", "_"]),
    ("(?U)\\w+", "café", ["café"]),
    ("(?i)é", "É", []),                                # (?i) folds ASCII only...
    ("(?iu)é", "É", ["É"]),                            # ...unless (?u)
    ("(?i)k", "\u212a", []),
    ("a(?i)b", "aB AB", ["aB"]),
    ("(a(?i)b)c", "aBc aBC", ["aBc"]),
    ("\\bfoo\\b", "éfoo foo", ["foo"]),                # \b sees Unicode letters, as Java's
    ("[a-z&&[^aeiou]]+", "hello", ["h", "ll"]),
    ("[^a[b]]", "abc", ["c"]),
    ("[]a]+", "]a", ["]a"]),
    ("[a-]+", "-a", ["-a"]),
    ("(?x) a b # comment", "ab", ["ab"]),
    ("(?x)[ a]", " a", ["a"]),
    ("\\Qa.b\\E+", "a.bb axb", ["a.bb"]),
    ("(a)\\10", "aa0", ["aa0"]),                       # \1 then a literal 0
    ("(a)\\2", "aa", []),                              # a group that does not exist never matches
    ("(?<n>a)\\k<n>", "aa", ["aa"]),
    ("\\x{41}\\u0042\\0103\\x44\\cA", "ABCD\x01", ["ABCD\x01"]),
    ("\\uD83D\\uDE00", "\U0001F600", ["\U0001F600"]),
    ("\\e\\R\\h\\v", "\x1b\r\n\xa0\x0b", ["\x1b\r\n\xa0\x0b"]),
    ("\\p{Lower}+\\P{Lower}", "abéc", ["abé"]),
    ("[\\p{Digit}x]+", "x1y", ["x1"]),
    ("a*+a", "aaa", []),
    ("(?>a+)b", "aab", ["aab"]),
    ("x{2,}", "xxxx x", ["xxxx"]),
])
def test_java_regex_matches_like_java(pattern, text, expected):
    assert java_find_all(pattern, text) == expected


@pytest.mark.parametrize("pattern,message", [
    ("?&?&&&?&?&?&&&??", "Dangling meta character '?'"),
    ("a**", "Dangling meta character '*'"),
    ("x{", "Illegal repetition"),
    ("a{,3}", "Illegal repetition"),
    ("a{2,1}", "Illegal repetition range"),
    ("(?#c)a", "Unknown inline modifier"),
    ("a\\E", "Illegal/unsupported escape sequence"),
    ("\\y", "Illegal/unsupported escape sequence"),
    ("[\\b]", "Illegal/unsupported escape sequence"),
    ("[a-\\d]", "Illegal character range"),
    ("[z-a]", "Illegal character range"),
    ("[a[]", "Unclosed character class"),
    ("(a", "Unclosed group"),
    ("a)", "Unmatched closing ')'"),
    ("\\0", "Illegal octal escape sequence"),
    ("\\k<x>", "named capturing group <x> does not exist"),
    ("\\G", "not supported"),
    ("\\p{IsAlpha}", "not supported"),
    ("(a\\1)", "not supported"),
])
def test_java_regex_errors_like_java(pattern, message):
    with pytest.raises(java_regex.JavaRegexError, match=re.escape(message)):
        java_regex.compile_java(pattern)


@pytest.mark.parametrize("separator,text,expected", [
    (",", "a,b,,", ["a", "b"]),                        # trailing empty strings dropped
    (",", ",a", ["", "a"]),
    (",", "", [""]),
    (",", ",", []),
    ("", "ab", ["a", "b"]),                            # no leading empty string from a zero-width match
    ("(?=\\d)", "a1b2", ["a", "1b", "2"]),
    ("\\s*,\\s*", "my-header20, my-header11", ["my-header20", "my-header11"]),
])
def test_java_split(separator, text, expected):
    assert java_regex.split(java_regex.compile_java(separator), text) == expected


@pytest.mark.parametrize("replacement,message", [
    ("$2", "No group 2"), ("$x", "Illegal group reference"), ("x\\", "character to be escaped is missing"),
    ("$", "group index is missing"), ("${}", "0 length name"), ("${a", "missing trailing '}'"),
    ("${1a}", "starts with digit character"), ("${zz}", "No group with name {zz}"),
])
def test_java_replacement_errors(replacement, message):
    with pytest.raises(java_regex.JavaRegexError, match=re.escape(message)):
        java_regex.parse_replacement(replacement, java_regex.compile_java("(b)"))


# --- the Joda pattern translation (expected values from Joda-Time 2.10.14) ------------------------------------

@pytest.mark.parametrize("pattern,text,tz,expected", [
    ("yyyy-MM-dd HH:mm", "2012-10-18 18:47", "America/Los_Angeles", 1350611220000),
    ("yyyy-MM-dd HH:mm", "2012-10-18 18:47", "UTC", 1350586020000),
    ("yyyy-MM-dd HH:mm:ss", "2012-06-23 13:46:33", "UTC", 1340459193000),
    ("yyyy-MM-dd HH:mm", "2012-1-8 8:47", "UTC", 1326012420000),            # one digit is enough
    ("yyyyMMddHHmmss", "20121018184757", "UTC", 1350586077000),               # adjacent numeric fields
    ("yy-MM-dd", "99-1-1", "UTC", 915148800000),                              # two-digit year pivot
    ("yy-MM-dd", "2012-10-18", "UTC", 1350518400000),                         # lenient: four digits = the year
    ("MMM dd HH:mm:ss", "Oct 18 18:47:57", "UTC", 971894877000),              # no year: Joda's year 2000
    ("MMM dd HH:mm:ss", "OCT 18 18:47:57", "UTC", 971894877000),
    ("MMMM d, yyyy", "Oct 18, 2012", "Europe/Paris", 1350511200000),
    ("dd/MMM/yyyy:HH:mm:ss Z", "18/Oct/2012:18:47:57 -0700", "Asia/Kolkata", 1350611277000),
    ("yyyy-MM-dd'T'HH:mm:ss.SSSZZ", "2012-10-18T18:47:57.614-07:00", "UTC", 1350611277614),
    ("yyyy-MM-dd HH:mm:ss.S", "2012-10-18 18:47:57.6", "UTC", 1350586077600),
    ("EEE MMM dd HH:mm:ss zzz yyyy", "Thu Oct 18 18:47:57 PDT 2012", "UTC", 1350611277000),
    ("EEE MMM dd HH:mm:ss zzz yyyy", "Mon Oct 18 18:47:57 PDT 2012", "UTC", 1350352077000),   # weekday wins
    ("yyyy-MM-dd HH:mm ZZZ", "2012-10-18 18:47 Europe/Paris", "UTC", 1350578820000),
    ("hh:mm a", "12:00 AM", "UTC", 0),
    ("kk:mm", "24:00", "UTC", 0),
    ("D yyyy", "366 2012", "UTC", 1356912000000),
    ("dd-MM", "29-02", "UTC", 951782400000),
    ("yyyy-MM-dd HH:mm:ss", "2012-11-04 01:30:00", "America/Los_Angeles", 1352017800000),   # overlap: earlier
])
def test_joda_parse_millis_like_joda(pattern, text, tz, expected, zone):
    zone(tz)
    assert joda.JodaPattern(pattern).parse_millis(text) == expected


@pytest.mark.parametrize("pattern,text,tz,message", [
    ("MMM dd HH:mm:ss", "oCt 18 18:47:57", "UTC", 'Invalid format: "oCt 18 18:47:57"'),
    ("yyyy-MM-dd HH:mm:ss", "2012-03-11 02:30:00", "America/Los_Angeles",
     "Illegal instant due to time zone offset transition"),
    ("yyyy-MM-dd HH:mm:ss", "2012-02-30 10:00:00", "UTC",
     'Cannot parse "2012-02-30 10:00:00": Value 30 for dayOfMonth must be in the range [1,29]'),
    ("yyyy-MM-dd HH:mm:ss", "2012-10-18 18:47:57 ", "UTC",
     'Invalid format: "2012-10-18 18:47:57 " is malformed at " "'),
])
def test_joda_parse_errors_like_joda(pattern, text, tz, message, zone):
    zone(tz)
    with pytest.raises(joda.JodaError, match=re.escape(message)):
        joda.JodaPattern(pattern).parse_millis(text)


@pytest.mark.parametrize("pattern,message", [
    ("yyyy-MM-dd qq", "Illegal pattern component: qq"),
    ("", "Invalid pattern specification"),
    ("GGGG yyyy", "not supported by Flumery"),
])
def test_joda_pattern_errors(pattern, message):
    with pytest.raises(joda.JodaError, match=re.escape(message)):
        joda.JodaPattern(pattern)


def test_joda_tokens():
    assert joda.tokens("yyyy-MM-dd'T'HH:mm''ss") == ["yyyy", "'-", "MM", "'-", "dd", "'T", "HH", "':", "mm",
                                                     "''", "ss"]
