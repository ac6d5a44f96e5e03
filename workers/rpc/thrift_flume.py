"""Flume's Thrift RPC (``ThriftSourceProtocol``, Flume's ``flume-ng-sdk/src/main/thrift/flume.thrift``), without
any I/O but a blocking client.

Wire: framed transport (Flume's ``TFastFramedTransport``: a 4-byte big-endian length, then one Thrift message),
compact protocol by default (``protocol = binary`` for the binary one), as Flume's ThriftSource and ThriftRpcClient.
Encoding and the service's structs are thriftpy2's, loaded from Flume's IDL below.

The receiving side bounds memory like the avro source: :class:`FrameDecoder` refuses a declared length over its
limit before reading anything for it.
"""
from __future__ import annotations

import io
import socket
import ssl
import struct
import time

import thriftpy2
from thriftpy2.protocol import TBinaryProtocol, TCompactProtocol
from thriftpy2.thrift import TApplicationException, TMessageType, TProcessor
from thriftpy2.transport import TMemoryBuffer

from workers.rpc.sockets import open_connection

FLUME_THRIFT = """
namespace java org.apache.flume.thrift

struct ThriftFlumeEvent {
  1: required map <string, string> headers,
  2: required binary body,
}

enum Status {
  OK,
  FAILED,
  ERROR,
  UNKNOWN
}

service ThriftSourceProtocol {
  Status append(1: ThriftFlumeEvent event),
  Status appendBatch(1: list<ThriftFlumeEvent> events),
}
"""
flume = thriftpy2.load_fp(io.StringIO(FLUME_THRIFT), module_name="flume_thrift")
SERVICE = flume.ThriftSourceProtocol
STATUS_NAMES = {value: name for name, value in flume.Status._NAMES_TO_VALUES.items()}
PROTOCOLS = {"compact": TCompactProtocol, "binary": TBinaryProtocol}
LENGTH = struct.Struct(">i")
READ_SIZE = 64 * 1024
MAX_RESPONSE_BYTES = 1024 * 1024


class ThriftError(Exception):
    """The peer broke the framing or the protocol: the connection cannot go on."""


class FrameDecoder:
    """Bytes in, framed payloads out; at most one frame (``max_frame_bytes``) plus one read held."""

    def __init__(self, max_frame_bytes: int):
        self.max_frame_bytes = max_frame_bytes
        self.buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def next_frame(self) -> bytes | None:
        if len(self.buffer) < LENGTH.size:
            return None
        (length,) = LENGTH.unpack_from(self.buffer, 0)
        if length < 0 or length > self.max_frame_bytes:
            raise ThriftError(f"frame of {length} bytes (the limit is {self.max_frame_bytes})")
        end = LENGTH.size + length
        if len(self.buffer) < end:
            return None
        payload = bytes(self.buffer[LENGTH.size:end])
        del self.buffer[:end]
        return payload


def frame(payload: bytes) -> bytes:
    return LENGTH.pack(len(payload)) + payload


def events(records: list[dict]) -> list:
    return [flume.ThriftFlumeEvent(headers=r["headers"], body=r["body"]) for r in records]


def records(thrift_events) -> list[dict]:
    """``{"headers", "body"}`` records from decoded ThriftFlumeEvents (header maps copied: ours to change)."""
    return [{"headers": dict(e.headers or {}), "body": e.body if isinstance(e.body, bytes) else (e.body or b"")}
            for e in thrift_events]


def encode_call(protocol: str, message: str, seqid: int, records_: list[dict]) -> bytes:
    buffer = TMemoryBuffer()
    proto = PROTOCOLS[protocol](buffer)
    proto.write_message_begin(message, TMessageType.CALL, seqid)
    if message == "append":
        args = SERVICE.append_args(event=events(records_)[0])
    else:
        args = SERVICE.appendBatch_args(events=events(records_))
    proto.write_struct(args)
    proto.write_message_end()
    return buffer.getvalue()


def decode_reply(protocol: str, payload: bytes, seqid: int) -> str:
    """The Status name of a reply; raises ThriftError (including for a TApplicationException)."""
    proto = PROTOCOLS[protocol](TMemoryBuffer(payload))
    try:
        name, kind, got = proto.read_message_begin()
        if kind == TMessageType.EXCEPTION:
            error = TApplicationException()
            proto.read_struct(error)
            raise ThriftError(f"the server answered an exception: {error.message}")
        if got != seqid:
            raise ThriftError(f"answer to call {got} while waiting for call {seqid}")
        result = getattr(SERVICE, f"{name}_result")()
        proto.read_struct(result)
    except ThriftError:
        raise
    except Exception as exc:        # thriftpy2 raises several types for bytes it cannot decode
        raise ThriftError(f"undecodable reply: {type(exc).__name__}: {exc}") from None
    return STATUS_NAMES.get(result.success, "UNKNOWN")


def processor(handler) -> TProcessor:
    """A thriftpy2 processor calling ``handler.append(event)`` / ``handler.appendBatch(events)``."""
    return TProcessor(SERVICE, handler)


def answer_call(processor_: TProcessor, protocol: str, payload: bytes) -> bytes:
    """Decode one call, run it through ``processor_`` and return the encoded reply; raises ThriftError."""
    factory = PROTOCOLS[protocol]
    out = TMemoryBuffer()
    try:
        processor_.process(factory(TMemoryBuffer(payload)), factory(out))
    except Exception as exc:
        raise ThriftError(f"undecodable call: {type(exc).__name__}: {exc}") from None
    return out.getvalue()


class ThriftClient:
    """A blocking Flume Thrift client over one connection (see AvroClient for the contract of ``call``)."""

    def __init__(self, host: str, port: int, connect_timeout_s: float, request_timeout_s: float,
                 protocol: str = "compact", ssl_context: ssl.SSLContext | None = None):
        self.host, self.port = host, port
        self.connect_timeout_s, self.request_timeout_s = connect_timeout_s, request_timeout_s
        self.protocol = protocol
        self.ssl_context = ssl_context
        self.sock: socket.socket | None = None
        self.connected_at = 0.0

    @property
    def connected(self) -> bool:
        return self.sock is not None

    def connect(self) -> None:
        sock = open_connection(self.host, self.port, self.connect_timeout_s, self.ssl_context)
        self.sock, self.seqid, self.decoder = sock, 0, FrameDecoder(MAX_RESPONSE_BYTES)
        self.connected_at = time.monotonic()

    def call(self, message: str, records_: list[dict]) -> str:
        if self.sock is None:
            self.connect()
        self.seqid = (self.seqid + 1) & 0x7FFFFFFF
        deadline = time.monotonic() + self.request_timeout_s
        self._settimeout(deadline)
        self.sock.sendall(frame(encode_call(self.protocol, message, self.seqid, records_)))
        while (payload := self.decoder.next_frame()) is None:
            self._settimeout(deadline)
            chunk = self.sock.recv(READ_SIZE)
            if not chunk:
                raise ConnectionResetError(f"{self.host}:{self.port} closed the connection without answering")
            self.decoder.feed(chunk)
        return decode_reply(self.protocol, payload, self.seqid)

    def _settimeout(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no answer from {self.host}:{self.port} within {self.request_timeout_s:.1f}s")
        self.sock.settimeout(remaining)

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None
