"""workers/sources/http.py: Flume's JSONHandler (vectors.json "HTTPSource_JSONHandler") and the HTTP status
mapping of ``HttpSource.answer``; no broker, the channel processor is a fake."""
from __future__ import annotations

import http.client
import json

import pytest
from conftest import VECTORS, FakeCounters

from core import options
from core.errors import BatchTooLarge, ChannelFullError
from core.event import Event
from workers.sources.base import SourceContext
from workers.sources.http import (
    HANDLERS,
    BadRequest,
    HttpSource,
    UnsupportedCharset,
    blob_handler,
    json_handler,
    request_charset,
)

VECTOR_DATA = json.loads(VECTORS.read_text())
GROUP = VECTOR_DATA["HTTPSource_JSONHandler"]
EVENT_CASES = [c for c in GROUP if "expected_events" in c]
MULTIPLE = next(c for c in GROUP if c.get("test") == "testMultipleEvents")
UTF16 = next(c for c in GROUP if c.get("test") == "testMultipleEventsUTF16")
ISO = next(c for c in GROUP if c.get("charset") == "ISO-8859-1")
INVALID = next(c for c in GROUP if c.get("test") == "testInvalid")
FULL = next(c for c in GROUP if c.get("test") == "testFullChannel")
FAIL = next(c for c in GROUP if c.get("test") == "testFail")
SIMPLE_UTF16 = next(c for c in GROUP if c.get("test") == "testSimpleUTF16")

JSON = "application/json"


def expected(case: dict) -> list[tuple[dict, bytes]]:
    return [(e["headers"], e["body"].encode("utf-8")) for e in case["expected_events"]]


def got(events: list[Event]) -> list[tuple[dict, bytes]]:
    return [(e.headers, e.body) for e in events]


def java_utf16(text: str) -> bytes:
    """Java's String.getBytes("UTF-16"): a big-endian byte order mark, then UTF-16BE."""
    return b"\xfe\xff" + text.encode("utf-16-be")


# --- the handler ----------------------------------------------------------------------------------------------

def test_vector_group_is_complete():
    assert len(GROUP) == 10
    assert len(EVENT_CASES) == 4


@pytest.mark.parametrize("case", EVENT_CASES, ids=[c["test"] for c in EVENT_CASES])
def test_json_vectors_default_charset(case):
    charset = case.get("charset")
    content_type = JSON if charset is None else f"{JSON}; charset={charset}"
    events = json_handler(case["body"].encode("utf-8"), content_type, "")
    assert got(events) == expected(case)


@pytest.mark.parametrize("case", EVENT_CASES, ids=[c["test"] for c in EVENT_CASES])
def test_json_vectors_explicit_utf8(case):
    events = json_handler(case["body"].encode("utf-8"), f"{JSON}; charset=UTF-8", "")
    assert got(events) == expected(case)


def test_multiple_events_order_and_headers():
    events = json_handler(MULTIPLE["body"].encode(), JSON, "")
    assert [e.body for e in events] == [b"random_body", b"random_body2"]
    assert [e.headers for e in events] == [{"a": "b"}, {"e": "f"}]
    assert all(isinstance(e, Event) for e in events)


def test_utf16_vector_bodies_encoded_as_java_utf16():
    assert UTF16["charset"] == "UTF-16"
    raw = java_utf16(MULTIPLE["body"])                   # Flume's test sends json.getBytes("UTF-16")
    events = json_handler(raw, f"{JSON}; charset=UTF-16", "")
    assert [e.headers for e in events] == [{"a": "b"}, {"e": "f"}]
    assert [e.body for e in events] == [java_utf16("random_body"), java_utf16("random_body2")]
    assert events[0].body[:2] == b"\xfe\xff"
    assert events[0].body == bytes.fromhex("FEFF 0072 0061 006E 0064 006F 006D 005F 0062 006F 0064 0079")


def test_utf16_lowercase_charset_and_little_endian_request():
    raw = MULTIPLE["body"].encode("utf-16")              # whatever BOM Python writes (little-endian here)
    events = json_handler(raw, f"{JSON}; charset=utf-16", "")
    assert [e.body for e in events] == [java_utf16("random_body"), java_utf16("random_body2")]


def test_utf16_without_bom_is_big_endian():
    raw = MULTIPLE["body"].encode("utf-16-be")
    events = json_handler(raw, f"{JSON}; charset=UTF-16", "")
    assert [e.headers for e in events] == [{"a": "b"}, {"e": "f"}]


def test_utf32_bodies_are_big_endian_without_bom():
    raw = MULTIPLE["body"].encode("utf-32-be")
    events = json_handler(raw, f"{JSON}; charset=UTF-32", "")
    assert [e.body for e in events] == ["random_body".encode("utf-32-be"), "random_body2".encode("utf-32-be")]


def test_non_ascii_body_is_reencoded_in_request_charset():
    doc = json.dumps([{"headers": {"k": "é"}, "body": "naïve €"}], ensure_ascii=False)
    [utf8] = json_handler(doc.encode("utf-8"), JSON, "")
    assert utf8.body == "naïve €".encode("utf-8") and utf8.headers == {"k": "é"}
    [utf16] = json_handler(java_utf16(doc), f"{JSON}; charset=UTF-16", "")
    assert utf16.body == java_utf16("naïve €")


def test_missing_body_is_empty_and_escaped_quote():
    case = next(c for c in EVENT_CASES if "testNoBody" in c["test"])
    events = json_handler(case["body"].encode(), JSON, "")
    assert events[0].body == b""
    assert events[0].headers == {"a": "b"}
    assert events[1].body == b'rand"om_body2'


def test_html_body_is_kept_verbatim():
    case = next(c for c in EVENT_CASES if c["test"] == "testSingleHTMLEvent")
    [event] = json_handler(case["body"].encode(), JSON, "")
    assert event.body == b"<html><body>test</body></html>"


def test_missing_headers_are_empty():
    [event] = json_handler(b'[{"body": "x"}]', JSON, "")
    assert event.headers == {} and event.body == b"x"


@pytest.mark.parametrize("charset", ["ISO-8859-1", "US-ASCII", "latin1", "windows-1252"])
def test_other_charsets_are_unsupported(charset):
    with pytest.raises(UnsupportedCharset) as info:
        json_handler(b"[]", f"{JSON}; charset={charset}", "")
    assert charset.lower() in str(info.value)


def test_iso_vector_is_unsupported_charset():
    assert ISO["charset"] == "ISO-8859-1"
    with pytest.raises(UnsupportedCharset):
        json_handler(ISO["body"].encode("latin-1"), f"{JSON}; charset=ISO-8859-1", "")


@pytest.mark.parametrize("content_type,charset", [
    (None, "utf-8"),
    ("", "utf-8"),
    ("application/json", "utf-8"),
    ("application/json; charset=UTF-8", "utf-8"),
    ("application/json;charset=utf-16", "utf-16"),
    ('application/json; charset="UTF-32"', "utf-32"),
    ("application/json; Charset=UTF_16", "utf-16"),
])
def test_request_charset(content_type, charset):
    assert request_charset(content_type) == charset


def test_invalid_json_vector_is_bad_request():
    raw = b'[{"a": "b",["d":"e"],"body": "random_body"},{"e": "f","body": "random_body2"}]'
    assert "invalid JSON" in INVALID["http"]
    with pytest.raises(BadRequest):
        json_handler(raw, JSON, "")


@pytest.mark.parametrize("raw", [
    b'{"headers": {}, "body": "x"}',          # an object, not an array
    b'["just a string"]',
    b'[{"headers": "nope", "body": "x"}]',
    b'[{"headers": {}, "body": 5}]',
    b'[{"headers": {"a": {"nested": 1}}, "body": "x"}]',
    b'[{"headers": {"a": null}, "body": "x"}]',
    b"\xff\xfe\xfa",                           # not UTF-8
])
def test_malformed_documents_are_bad_requests(raw):
    with pytest.raises(BadRequest):
        json_handler(raw, JSON, "")


@pytest.mark.parametrize("raw", [b"", b"   ", b"[]", b"\n[ ]\n"])
def test_empty_requests_have_no_events(raw):
    assert json_handler(raw, JSON, "") == []


def test_scalar_header_values_become_strings():
    [event] = json_handler(b'[{"headers": {"n": 5, "b": true}, "body": "x"}]', JSON, "")
    assert event.headers == {"n": "5", "b": "true"}


def test_blob_handler_takes_whole_body_and_query_headers():
    [event] = blob_handler(b"\x00binary\xff", "application/octet-stream", "a=1&b=two&c=")
    assert event.body == b"\x00binary\xff"
    assert event.headers == {"a": "1", "b": "two", "c": ""}


def test_handler_registry():
    assert HANDLERS.resolve("org.apache.flume.source.http.JSONHandler") is json_handler
    assert HANDLERS.resolve("JSONHandler") is json_handler
    assert HANDLERS.resolve("BLOBHandler") is blob_handler


# --- HttpSource.answer ------------------------------------------------------------------------------------------

class FakeProcessor:
    def __init__(self, error: Exception | None = None):
        self.error = error
        self.batches: list[list[Event]] = []

    def process(self, events):
        if self.error is not None:
            raise self.error
        self.batches.append(list(events))
        return len(events)

    def process_many(self, batches) -> list[Exception | None]:
        outcomes = []
        for batch in batches:
            try:
                self.process(batch)
            except Exception as exc:      # each request's own outcome, as ChannelProcessor.process_many gives it
                outcomes.append(exc)
            else:
                outcomes.append(None)
        return outcomes


def make_source(error: Exception | None = None, **props: str) -> tuple[HttpSource, FakeProcessor, FakeCounters]:
    config, errors, _ = options.build(HttpSource.Config, {"port": "0", "bind": "127.0.0.1", **props},
                                      "a1.sources.r1.")
    assert errors == []
    processor, counters = FakeProcessor(error), FakeCounters()
    source = HttpSource("r1", config, SourceContext("a1", processor, counters))
    source.handle = HANDLERS.resolve(config.handler)     # what start() does, without opening a socket
    return source, processor, counters


def post(source: HttpSource, body: bytes, content_type: str | None = JSON, method: str = "POST",
         path: str = "/", length: str | None = "auto"):
    headers = {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if length == "auto":
        headers["Content-Length"] = str(len(body))
    elif length is not None:
        headers["Content-Length"] = length
    reads = []

    def reader(n):
        reads.append(n)
        return body[:n]
    status, reason = source.answer(method, path, headers, reader)
    return status, reason, reads


def test_config_defaults():
    source, _, _ = make_source()
    assert source.config.handler == "org.apache.flume.source.http.JSONHandler"
    assert source.config.port == 0


def test_answer_200_puts_one_batch():
    source, processor, counters = make_source()
    status, reason, _ = post(source, MULTIPLE["body"].encode())
    assert (status, reason) == (200, "OK")
    assert len(processor.batches) == 1                     # one request = one transaction
    assert got(processor.batches[0]) == expected(MULTIPLE)
    assert counters.counts["EventReceivedCount"] == 2
    assert counters.counts["EventAcceptedCount"] == 2
    assert counters.counts["EventReadFail"] == 0


def test_answer_utf16_vector_200():
    assert SIMPLE_UTF16["expected_status"] == 200
    source, processor, _ = make_source()
    status, _, _ = post(source, java_utf16(MULTIPLE["body"]), f"{JSON}; charset=utf-16")
    assert status == 200
    assert processor.batches[0][0].body == java_utf16("random_body")


def test_answer_400_invalid_json_counts_read_fail():
    assert INVALID["expected_status"] == 400
    source, processor, counters = make_source()
    status, reason, _ = post(source, b'[{"a": "b",["d":"e"],"body": "random_body"}]')
    assert status == 400
    assert "invalid JSON" in reason
    assert counters.counts["EventReadFail"] == 1
    assert processor.batches == []
    assert counters.counts["EventAcceptedCount"] == 0


def test_answer_503_channel_full_counts_write_fail():
    assert FULL["expected_status"] == 503 and FULL["counters"] == {"ChannelWriteFail": 1}
    source, _, counters = make_source(ChannelFullError("c1", 100, 100, 150))
    status, reason, _ = post(source, MULTIPLE["body"].encode())
    assert status == 503
    assert "channel 'c1' is full" in reason
    assert counters.counts["ChannelWriteFail"] == 1
    assert counters.counts["EventAcceptedCount"] == 0


def test_answer_503_broker_unreachable_counts_write_fail():
    source, _, counters = make_source(ConnectionError("redis down"))
    status, reason, _ = post(source, MULTIPLE["body"].encode())
    assert status == 503
    assert "redis down" in reason
    assert counters.counts["ChannelWriteFail"] == 1


def test_answer_413_batch_too_large():
    source, _, counters = make_source(BatchTooLarge("150 events for channel 'c1' of capacity 100"))
    status, reason, _ = post(source, MULTIPLE["body"].encode())
    assert status == 413
    assert "capacity 100" in reason
    assert counters.counts["EventAcceptedCount"] == 0


@pytest.mark.parametrize("method", ["TRACE", "OPTIONS"])
def test_answer_403_trace_and_options(method):
    source, processor, _ = make_source()
    status, _, reads = post(source, MULTIPLE["body"].encode(), method=method)
    assert status == 403
    assert reads == [] and processor.batches == []


def test_answer_500_unsupported_charset():
    source, processor, counters = make_source()
    status, reason, _ = post(source, ISO["body"].encode("latin-1"), f"{JSON}; charset=ISO-8859-1")
    assert status == 500
    assert "iso-8859-1" in reason
    assert processor.batches == []
    assert counters.counts["EventReadFail"] == 0


def test_answer_411_without_content_length_on_post():
    source, processor, _ = make_source()
    status, _, reads = post(source, MULTIPLE["body"].encode(), length=None)
    assert status == 411
    assert reads == [] and processor.batches == []


def test_answer_get_without_content_length_is_empty_ok():
    source, processor, _ = make_source()
    status, _, _ = post(source, b"", method="GET", length=None)
    assert status == 200
    assert processor.batches == []


def test_answer_get_is_handled_like_post():
    source, processor, _ = make_source()
    status, _, _ = post(source, MULTIPLE["body"].encode(), method="GET")
    assert status == 200
    assert got(processor.batches[0]) == expected(MULTIPLE)


def test_answer_400_bad_content_length():
    source, _, _ = make_source()
    status, _, reads = post(source, b"[]", length="ten")
    assert status == 400 and reads == []


@pytest.mark.parametrize("length", ["-1", "-100"])
def test_answer_400_negative_content_length_without_reading(length):
    # rfile.read(-1) would read until the client closes the connection: a keep-alive client then waits forever
    # and a request thread is stuck.  A negative Content-Length is a malformed request (Jetty answers 400).
    source, processor, _ = make_source()
    status, _, reads = post(source, b"[]", length=length)
    assert status == 400
    assert reads == [] and processor.batches == []


def test_answer_413_larger_than_max_request_bytes_without_reading():
    source, processor, _ = make_source(maxRequestBytes="10")
    status, reason, reads = post(source, MULTIPLE["body"].encode())
    assert status == 413
    assert "maxRequestBytes" in reason
    assert reads == [] and processor.batches == []


def test_answer_reads_exactly_content_length():
    source, processor, _ = make_source()
    body = MULTIPLE["body"].encode()
    status, _, reads = post(source, body + b"garbage after the body")
    assert status == 400       # the body includes garbage once Content-Length covers it
    status, _, reads = post(source, body + b"garbage", length=str(len(body)))
    assert status == 200 and reads == [len(body)]


def test_answer_empty_array_is_ok_without_put():
    source, processor, counters = make_source()
    status, _, _ = post(source, b"[]")
    assert status == 200
    assert processor.batches == []
    assert counters.counts["EventReceivedCount"] == 0


def test_answer_503_while_stopping():
    source, processor, _ = make_source()
    source.stopping.set()
    status, _, _ = post(source, MULTIPLE["body"].encode())
    assert status == 503 and processor.batches == []


def test_answer_blob_handler_query_headers():
    source, processor, _ = make_source(handler="BLOBHandler")
    status, _, _ = post(source, b"payload", "application/octet-stream", path="/x?host=h1&app=web")
    assert status == 200
    [event] = processor.batches[0]
    assert event.body == b"payload" and event.headers == {"host": "h1", "app": "web"}


# --- through a real listening socket (no broker: the processor is a fake) -----------------------------------------

@pytest.fixture
def served():
    source, processor, counters = make_source()
    source.start()
    yield source, processor, counters
    source.stop()


def request(source, method, body=b"", headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", source.port, timeout=10)
    try:
        conn.request(method, "/", body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_server_200_and_counters(served):
    source, processor, counters = served
    assert counters.start_calls == 1
    status, body = request(source, "POST", MULTIPLE["body"].encode(), {"Content-Type": JSON})
    assert status == 200 and body == b"OK\n"
    assert got(processor.batches[0]) == expected(MULTIPLE)


def test_server_handler_exception_is_500(served):
    assert FAIL["expected_status"] == 500
    source, processor, _ = served

    def broken(raw, content_type, query):
        raise RuntimeError("handler bug")
    source.handle = broken
    status, body = request(source, "POST", b"[]", {"Content-Type": JSON})
    assert status == 500
    assert b"handler bug" in body


def test_server_options_is_403(served):
    source, _, _ = served
    status, _ = request(source, "OPTIONS")
    assert status == 403
