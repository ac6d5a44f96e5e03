"""The bytes of an hdfs sink file: Flume's ``hdfs.fileType`` and ``serializer``, written batch by batch.

A :class:`FileFormat` makes one :class:`FileEncoder` per file.  ``encode(events, first)`` returns the bytes of one
append: with ``first`` true they start with the file's header.  Each append stands alone, so that a file cut back
to the end of any earlier append is still a valid file (the hdfs sink does that to undo a torn or repeated batch):

* ``DataStream``: the serializer's output.
* ``CompressedStream``: the serializer's output of each append compressed as one complete gzip member or bzip2
  stream, as Flume's HDFSCompressedDataStream finishes its codec at every flush; Hadoop's codecs and the usual
  tools read the concatenation as one stream.
* ``SequenceFile``: Hadoop's SequenceFile format (version 6, uncompressed): the header (key and value class,
  no metadata, a random 16-byte sync marker), then records ``<record length><key length><key><value>``, with
  a sync escape at the start of every append after the first and whenever 2000 bytes passed since the last one
  (Hadoop's SYNC_INTERVAL).  ``writeFormat`` ``Writable``: key LongWritable (the ``timestamp`` header, else the
  time of writing), value BytesWritable (the body); ``Text``: the same key, value Text.
* Serializers (DataStream and CompressedStream): ``TEXT`` (the body, plus a newline with ``appendNewline``),
  ``header_and_text`` (``{k=v, ...} body``), ``avro_event`` (Flume's Avro container of records
  ``Event {headers: map<string>, body: bytes}``: one block per append, or more past ``syncIntervalBytes``,
  each closed by the file's sync marker; codec ``null`` or ``deflate``).
"""
from __future__ import annotations

import bz2
import json
import os
import struct
import time
import zlib
from typing import Callable, Sequence

from core.event import Event
from workers.sinks.logger import java_map

SYNC_SIZE = 16
SYNC_INTERVAL = 100 * (4 + SYNC_SIZE)            # Hadoop 2's SequenceFile.SYNC_INTERVAL
SYNC_ESCAPE = struct.pack(">i", -1)


class EventError(ValueError):
    """An event that this format can never write (its message is the reason, for the dead-letter channel)."""


# --- serializers (DataStream, CompressedStream) ----------------------------------------------------------------

class Serializer:
    """Flume's EventSerializer for one file: ``header()`` at its start, ``encode(events)`` per append."""

    def header(self) -> bytes:
        return b""

    def encode(self, events: Sequence[Event]) -> bytes:
        raise NotImplementedError


class TextSerializer(Serializer):
    def __init__(self, append_newline: bool):
        self.newline = b"\n" if append_newline else b""

    def encode(self, events: Sequence[Event]) -> bytes:
        if not events:
            return b""
        return self.newline.join(e.body for e in events) + self.newline


class HeaderAndTextSerializer(TextSerializer):
    def encode(self, events: Sequence[Event]) -> bytes:
        return b"".join(java_map(e.headers).encode() + b" " + e.body + self.newline for e in events)


AVRO_SCHEMA = json.dumps({"type": "record", "name": "Event", "fields": [
    {"name": "headers", "type": {"type": "map", "values": "string"}},
    {"name": "body", "type": "bytes"}]}, separators=(",", ":"))


def avro_long(n: int) -> bytes:
    """Avro's zig-zag varint."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def avro_bytes(data: bytes) -> bytes:
    return avro_long(len(data)) + data


class AvroEventSerializer(Serializer):
    """Flume's FlumeEventAvroEventSerializer: an Avro object container file of ``Event`` records."""

    def __init__(self, sync_interval_bytes: int, codec: str):
        self.sync_interval = sync_interval_bytes
        self.codec = codec
        self.sync = os.urandom(SYNC_SIZE)

    def header(self) -> bytes:
        meta = {"avro.schema": AVRO_SCHEMA.encode(), "avro.codec": self.codec.encode()}
        entries = b"".join(avro_bytes(k.encode()) + avro_bytes(v) for k, v in meta.items())
        return b"Obj\x01" + avro_long(len(meta)) + entries + avro_long(0) + self.sync

    @staticmethod
    def datum(event: Event) -> bytes:
        headers = event.headers
        items = b"".join(avro_bytes(k.encode()) + avro_bytes(v.encode()) for k, v in headers.items())
        head = (avro_long(len(headers)) + items if headers else b"") + avro_long(0)
        return head + avro_bytes(event.body)

    def encode(self, events: Sequence[Event]) -> bytes:
        blocks, pending, size = [], [], 0
        for event in events:
            datum = self.datum(event)
            pending.append(datum)
            size += len(datum)
            if size >= self.sync_interval:
                blocks.append(self._block(pending))
                pending, size = [], 0
        if pending:
            blocks.append(self._block(pending))
        return b"".join(blocks)

    def _block(self, data: list[bytes]) -> bytes:
        payload = b"".join(data)
        if self.codec == "deflate":
            compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
            payload = compressor.compress(payload) + compressor.flush()
        return avro_long(len(data)) + avro_long(len(payload)) + payload + self.sync


SERIALIZERS = {
    "text": "text", "org.apache.flume.serialization.BodyTextEventSerializer$Builder": "text",
    "header_and_text": "header_and_text",
    "org.apache.flume.serialization.HeaderAndBodyTextEventSerializer$Builder": "header_and_text",
    "avro_event": "avro_event", "org.apache.flume.serialization.FlumeEventAvroEventSerializer$Builder": "avro_event",
}


def serializer_name(value: str) -> str | None:
    """Flume's name for a ``serializer`` value (alias any case, or the Builder's class name), or None."""
    return SERIALIZERS.get(value) or SERIALIZERS.get(value.lower())


# --- codecs ----------------------------------------------------------------------------------------------------

def _gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)        # 31: a gzip member (header and trailer)
    return compressor.compress(data) + compressor.flush()


CODECS: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "gzip": (".gz", _gzip),
    "bzip2": (".bz2", bz2.compress),
}
# Flume matches a codec by its class, its simple name, or the simple name less "Codec" (any case).
CODEC_NAMES = {"gzip": "gzip", "gzipcodec": "gzip", "org.apache.hadoop.io.compress.gzipcodec": "gzip",
               "bzip2": "bzip2", "bzip2codec": "bzip2", "org.apache.hadoop.io.compress.bzip2codec": "bzip2"}
REFUSED_CODECS = {"lzo", "lzop", "snappy", "lz4", "deflate", "default", "zstandard", "zstd"}


def codec_name(value: str) -> str | None:
    return CODEC_NAMES.get(value.lower())


# --- file types ------------------------------------------------------------------------------------------------

class FileEncoder:
    """The encoder of one file: ``encode(events, first)`` gives one append's bytes."""

    def __init__(self, serializer: Serializer, compress: Callable[[bytes], bytes] | None):
        self.serializer = serializer
        self.compress = compress

    def encode(self, events: Sequence[Event], first: bool) -> bytes:
        data = (self.serializer.header() if first else b"") + self.serializer.encode(events)
        return self.compress(data) if self.compress and data else data


def hadoop_vint(n: int) -> bytes:
    """Hadoop's WritableUtils.writeVLong."""
    if -112 <= n <= 127:
        return struct.pack(">b", n)
    length = -112
    if n < 0:
        n ^= -1
        length = -120
    tmp = n
    while tmp:
        tmp >>= 8
        length -= 1
    size = -(length + 120) if length < -120 else -(length + 112)
    return struct.pack(">b", length) + n.to_bytes(size, "big")


def hadoop_text(value: bytes) -> bytes:
    return hadoop_vint(len(value)) + value


def event_time_ms(event: Event, now: Callable[[], int]) -> int:
    """The SequenceFile key: the ``timestamp`` header, else the time of writing, as Flume's serializers."""
    raw = event.headers.get("timestamp")
    if raw is None:
        return now()
    try:
        return int(raw.strip())
    except ValueError:
        raise EventError(f"the event's 'timestamp' header is not epoch milliseconds (got {raw!r:.40}); "
                         "a SequenceFile key needs a number") from None


class SequenceFileEncoder:
    """The encoder of one SequenceFile (the same ``encode(events, first)`` as :class:`FileEncoder`)."""

    KEY = b"org.apache.hadoop.io.LongWritable"
    VALUES = {"writable": b"org.apache.hadoop.io.BytesWritable", "text": b"org.apache.hadoop.io.Text"}

    def __init__(self, write_format: str, now: Callable[[], int]):
        self.text = write_format == "text"
        self.now = now
        self.sync = os.urandom(SYNC_SIZE)

    def header(self) -> bytes:
        value_class = self.VALUES["text" if self.text else "writable"]
        return (b"SEQ\x06" + hadoop_text(self.KEY) + hadoop_text(value_class) + b"\x00\x00"
                + struct.pack(">i", 0) + self.sync)

    def record(self, event: Event) -> bytes:
        key = struct.pack(">q", event_time_ms(event, self.now))
        value = hadoop_text(event.body) if self.text else struct.pack(">i", len(event.body)) + event.body
        return struct.pack(">ii", len(key) + len(value), len(key)) + key + value

    def encode(self, events: Sequence[Event], first: bool) -> bytes:
        out = [self.header()] if first else [SYNC_ESCAPE + self.sync]
        since_sync = 0
        for event in events:
            if since_sync >= SYNC_INTERVAL:
                out.append(SYNC_ESCAPE + self.sync)
                since_sync = 0
            record = self.record(event)
            out.append(record)
            since_sync += len(record)
        return b"".join(out)


class FileFormat:
    """``hdfs.fileType`` with its serializer and codec; ``extension`` is the codec's default file extension."""

    def __init__(self, file_type: str, serializer: str = "text", append_newline: bool = True,
                 write_format: str = "writable", codec: str | None = None, avro_sync_interval: int = 2048000,
                 avro_codec: str = "null", now: Callable[[], int] = lambda: time.time_ns() // 1_000_000):
        self.file_type = file_type.lower()
        self.serializer = serializer
        self.append_newline = append_newline
        self.write_format = write_format.lower()
        self.codec = codec
        self.avro_sync_interval = avro_sync_interval
        self.avro_codec = avro_codec
        self.now = now
        self.extension = CODECS[codec][0] if codec and self.file_type == "compressedstream" else ""

    def new_file(self) -> FileEncoder | SequenceFileEncoder:
        if self.file_type == "sequencefile":
            return SequenceFileEncoder(self.write_format, self.now)
        compress = CODECS[self.codec][1] if self.file_type == "compressedstream" else None
        return FileEncoder(self._serializer(), compress)

    def _serializer(self) -> Serializer:
        if self.serializer == "avro_event":
            return AvroEventSerializer(self.avro_sync_interval, self.avro_codec)
        if self.serializer == "header_and_text":
            return HeaderAndTextSerializer(self.append_newline)
        return TextSerializer(self.append_newline)

    def check(self, event: Event) -> None:
        """Raise EventError if no file of this format can take ``event``."""
        if self.file_type == "sequencefile":
            event_time_ms(event, self.now)
