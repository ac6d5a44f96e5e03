"""workers/sinks/logger.py: Flume's ``EventHelper.dumpEvent`` / commons-io ``HexDump.dump`` output format."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from core import options
from core.event import Event
from workers.sinks.base import SinkContext
from workers.sinks.logger import LoggerSink, dump_event, hex_dump, java_map


# A line-by-line transcription of commons-io HexDump.dump(data, 0, out, 0) and Flume's EventHelper.dumpEvent,
# used as an oracle for inputs too long to write out by hand.
def commons_io_hexdump(data: bytes) -> str:
    out = []
    display_offset = 0
    for j in range(0, len(data), 16):
        chars_read = min(16, len(data) - j)
        buf = f"{display_offset & 0xFFFFFFFF:08X}" + " "
        for k in range(16):
            buf += f"{data[j + k]:02X}" if k < chars_read else "  "
            buf += " "
        for k in range(chars_read):
            signed = data[j + k] - 256 if data[j + k] > 127 else data[j + k]     # Java bytes are signed
            buf += chr(signed) if 32 <= signed < 127 else "."
        out.append(buf + "\n")
        display_offset += chars_read
    return "".join(out)


def flume_dump_event(headers: dict[str, str], body: bytes, max_bytes: int = 16) -> str:
    buffer = ""
    if body:
        dump = commons_io_hexdump(body[:max_bytes])
        if dump.startswith("00000000"):
            dump = dump[len("00000000"):]
        buffer = dump
        if buffer.endswith("\n") and len(buffer) > 1:
            buffer = buffer[:-1]
    return "{ headers:" + java_map(headers) + " body:" + buffer + " }"


# --- literal expectations ---------------------------------------------------------------------------------------

def test_hello():
    expected = "{ headers:{} body: 68 65 6C 6C 6F" + " " * 34 + "hello }"
    assert dump_event({}, b"hello", 16) == expected


def test_flume_user_guide_example():
    # The Flume User Guide's netcat example logs: Event: { headers:{} body: 48 65 6C 6C 6F 20 77 6F 72 6C 64 21 0D
    #          Hello world!. }
    line = dump_event({}, b"Hello world!\r", 16)
    assert line == ("{ headers:{} body: 48 65 6C 6C 6F 20 77 6F 72 6C 64 21 0D" + " " * 10 + "Hello world!. }")


def test_exactly_sixteen_bytes_has_no_padding():
    body = b"0123456789abcdef"
    assert dump_event({}, body, 16) == (
        "{ headers:{} body: 30 31 32 33 34 35 36 37 38 39 61 62 63 64 65 66 0123456789abcdef }")


def test_hex_is_uppercase_and_non_printables_are_dots():
    body = bytes([0x00, 0x09, 0x0A, 0x1F, 0x20, 0x7E, 0x7F, 0x80, 0xAB, 0xFF])
    dump = hex_dump(body)
    assert dump == " 00 09 0A 1F 20 7E 7F 80 AB FF" + " " * 19 + ".... ~...."


def test_multi_line_dump_keeps_later_offsets():
    body = bytes(range(0x41, 0x41 + 20))                  # A..T
    dump = hex_dump(body)
    first, second = dump.split("\n")
    assert first == " 41 42 43 44 45 46 47 48 49 4A 4B 4C 4D 4E 4F 50 ABCDEFGHIJKLMNOP"
    assert second == "00000010 51 52 53 54" + " " * 37 + "QRST"
    assert not dump.endswith("\n")


def test_offsets_are_eight_uppercase_hex_digits():
    dump = hex_dump(bytes(300))
    lines = dump.split("\n")
    assert len(lines) == 19                              # ceil(300 / 16)
    assert lines[0].startswith(" 00 00")                 # the first offset is removed
    assert [l[:8] for l in lines[1:4]] == ["00000010", "00000020", "00000030"]
    assert lines[10][:8] == "000000A0"
    assert lines[-1] == "00000120" + " 00" * 12 + " " * 13 + "." * 12


def test_empty_body():
    assert hex_dump(b"") == ""
    assert dump_event({}, b"", 16) == "{ headers:{} body: }"
    assert dump_event({"a": "b"}, b"", 16) == "{ headers:{a=b} body: }"


def test_headers_print_as_java_map():
    assert java_map({}) == "{}"
    assert java_map({"a": "b"}) == "{a=b}"
    assert java_map({"host": "h1", "timestamp": "1"}) == "{host=h1, timestamp=1}"
    assert dump_event({"k": "v"}, b"x", 16).startswith("{ headers:{k=v} body: 78 ")


# --- maxBytesToLog ---------------------------------------------------------------------------------------------

def test_default_max_bytes_truncates_to_sixteen():
    body = b"0123456789abcdefGHIJ"
    assert dump_event({}, body, 16) == dump_event({}, body[:16], 16)
    assert "GHIJ" not in dump_event({}, body, 16)
    assert "\n" not in dump_event({}, body, 16)


@pytest.mark.parametrize("max_bytes", [1, 4, 15, 16, 17, 32, 33, 100])
def test_max_bytes_truncation(max_bytes):
    body = bytes(range(256)) * 2
    line = dump_event({}, body, max_bytes)
    assert line == flume_dump_event({}, body, max_bytes)
    hexes = [tok for tok in line.split() if len(tok) == 2 and all(c in "0123456789ABCDEF" for c in tok)]
    assert len(hexes) >= max_bytes


def test_max_bytes_larger_than_body():
    assert dump_event({}, b"abc", 1000) == dump_event({}, b"abc", 3)


# --- against the transcription -------------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    b"a", b"hello world", bytes(range(16)), bytes(range(17)), bytes(range(256)),
    "héllo wörld €".encode("utf-8"), b"\r\n\t", b" " * 31, bytes(range(255, -1, -1)),
], ids=lambda b: f"{len(b)}B")
def test_matches_commons_io_transcription(body):
    expected = commons_io_hexdump(body)
    expected = expected[8:].rstrip("\n")
    assert hex_dump(body) == expected
    assert dump_event({"h": "1"}, body, len(body)) == flume_dump_event({"h": "1"}, body, len(body))


def test_line_width_is_fixed():
    # offset(8) + 16 * " XX" + " " + 16 ASCII = 73 characters for every full line after the first
    lines = hex_dump(bytes(range(64))).split("\n")
    assert [len(l) for l in lines] == [65, 73, 73, 73]


# --- the sink --------------------------------------------------------------------------------------------------

def make_sink(**props: str) -> LoggerSink:
    config, errors, _ = options.build(LoggerSink.Config, props, "a1.sinks.k1.")
    assert errors == [], errors
    return LoggerSink("k1", config, SinkContext("a1", Path("/nonexistent")))


def test_sink_config_defaults():
    sink = make_sink()
    assert sink.config.max_bytes_to_log == 16
    assert sink.batch_size == 100


def test_sink_config_errors():
    _config, errors, _ = options.build(LoggerSink.Config, {"maxBytesToLog": "0"}, "a1.sinks.k1.")
    assert [str(e) for e in errors] == ["a1.sinks.k1.maxBytesToLog: must be greater than 0 (got '0')"]
    _config, errors, _ = options.build(LoggerSink.Config, {"maxBytesToLog": "lots"}, "a1.sinks.k1.")
    assert "expected a whole number (got 'lots')" in str(errors[0])


def test_sink_logs_each_event_at_info(caplog):
    sink = make_sink(maxBytesToLog="4")
    with caplog.at_level(logging.INFO, logger="flumery.sink.logger"):
        sink.write([Event(b"hello", {"a": "b"}), Event(b"", {}), Event(b"\x00\x01", {})])
    records = [r for r in caplog.records if r.name == "flumery.sink.logger"]
    assert [r.levelno for r in records] == [logging.INFO] * 3
    assert [r.getMessage() for r in records] == [
        "Event: { headers:{a=b} body: 68 65 6C 6C" + " " * 37 + "hell }",
        "Event: { headers:{} body: }",
        "Event: { headers:{} body: 00 01" + " " * 43 + ".. }",
    ]
