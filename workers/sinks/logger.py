"""``logger``: Flume's LoggerSink, logs every event at INFO in Flume's format.

``Event: { headers:{k=v} body: 68 65 6C 6C 6F   hello }``: the first ``maxBytesToLog`` bytes of the body as
a hex dump (commons-io ``HexDump`` without the first offset), as Flume's ``EventHelper.dumpEvent`` prints it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from core.options import opt, positive
from workers.sinks.base import Sink

log = logging.getLogger("flumery.sink.logger")


def java_map(headers: dict[str, str]) -> str:
    """Headers as Java's ``Map.toString()`` prints them: ``{a=b, c=d}``."""
    return "{" + ", ".join(f"{k}={v}" for k, v in headers.items()) + "}"


def hex_dump(data: bytes) -> str:
    """commons-io HexDump.dump(data, 0, out, 0), minus the leading ``00000000`` and the final newline."""
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset:offset + 16]
        hexes = "".join(f" {b:02X}" for b in chunk) + "   " * (16 - len(chunk))
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset:08X}{hexes} {text}")
    dump = "\n".join(lines)
    return dump[8:] if dump.startswith("00000000") else dump


def dump_event(headers: dict[str, str], body: bytes, max_bytes: int) -> str:
    return "{ headers:" + java_map(headers) + " body:" + hex_dump(body[:max_bytes]) + " }"


@dataclass(frozen=True)
class LoggerConfig:
    max_bytes_to_log: int = opt("maxBytesToLog", 16, check=positive, doc="body bytes shown per event")
    batch_size: int = opt("batchSize", 100, check=positive, doc="events taken per transaction (Flumery)")


class LoggerSink(Sink):
    Config = LoggerConfig
    batch_size_is_flumerys = True       # Flume's LoggerSink takes one event per transaction

    def write(self, batch) -> None:
        for event in batch:
            log.info("Event: %s", dump_event(event.headers, event.body, self.config.max_bytes_to_log))
