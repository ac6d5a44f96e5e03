"""``avro``: Flume's AvroSource, the receiving end of an avro hop (Avro IPC over Netty framing, Flume's
``AvroSourceProtocol``), wire-compatible with Flume's avro sink and RPC client.

Contract: every ``append`` / ``appendBatch`` call is answered ``OK`` only after its events are in every required
channel (one put transaction), and ``FAILED`` when the put was refused (a channel full, a batch over a channel's
capacity) or the broker failed: nothing of that call is then in any required channel, and the sender retries
it.  A client's ``flumery.id`` header (set by Flumery's avro sink) becomes the event's id, so ids survive the hop.

Connections are served by one asyncio loop; decoding and the put of each call run in a pool of ``threads``
threads, so at most that many puts are in flight.  Calls on one connection are answered in order
(:mod:`workers.rpc.server`).

Bounded memory: a connection holds at most one frame (``maxFrameBytes``, counting its headers, checked before
the bytes are read; a deflate stream is inflated only as far as the frame being read needs), and at most
``maxConnections`` connections are served at once (further ones are closed at once), so the source's buffers
never exceed maxConnections x maxFrameBytes.  A frame over the limit, or bytes that are not Avro IPC, close the
connection (counted as EventReadFail).

Differences from Flume, on purpose: ``threads`` bounds the puts in flight (Flume: the Netty worker threads,
unbounded by default); ``maxFrameBytes`` and ``maxConnections`` are Flumery's (Flume has no bound).  TLS as the http and
syslog sources: a JKS or PKCS12 keystore, or PEM files (``sslCertFile``/``sslKeyFile``).
"""
from __future__ import annotations

from dataclasses import dataclass

from core.options import one_of, opt, port_number, positive
from workers.rpc.avro_ipc import Call, KnownProtocols, ProtocolError, ServerSession
from workers.rpc.ip_filter import check_rules
from workers.rpc.netty_frames import FrameDecoder, FrameEncoder, FrameError
from workers.rpc.server import RpcProtocolError
from workers.sources.keystore import KEYSTORE_TYPES
from workers.sources.rpc import RpcSource
from workers.sources.syslogtcp import TLS_DOCS, check_protocols

DEFLATE_LEVEL = 6              # Flume's AvroSource compresses its answers at level 6


@dataclass(frozen=True)
class AvroSourceConfig:
    bind: str = opt("bind", doc="address to listen on")
    port: int = opt("port", check=port_number, doc="TCP port (0 picks a free one)")
    threads: int = opt("threads", 16, check=positive,
                       doc="calls decoded and put at once (Flume: Netty worker threads, unbounded)")
    compression_type: str = opt("compression-type", "none", check=one_of("none", "deflate"),
                                doc="none or deflate (a zlib stream, as netty 3's ZlibEncoder); must match the sender")
    ssl: bool = opt("ssl", False, doc=TLS_DOCS["ssl"])
    keystore: str = opt("keystore", "", doc=TLS_DOCS["keystore"])
    keystore_password: str = opt("keystore-password", "", doc=TLS_DOCS["keystore-password"])
    keystore_type: str = opt("keystore-type", "JKS", check=one_of(*KEYSTORE_TYPES), doc=TLS_DOCS["keystore-type"])
    ssl_cert_file: str = opt("sslCertFile", "", doc=TLS_DOCS["sslCertFile"])
    ssl_key_file: str = opt("sslKeyFile", "", doc=TLS_DOCS["sslKeyFile"])
    include_protocols: list[str] = opt("include-protocols", [], check=check_protocols,
                                       doc=TLS_DOCS["include-protocols"])
    exclude_protocols: list[str] = opt("exclude-protocols", ["SSLv3"], check=check_protocols,
                                       doc=TLS_DOCS["exclude-protocols"])
    include_cipher_suites: list[str] = opt("include-cipher-suites", [], doc=TLS_DOCS["include-cipher-suites"])
    exclude_cipher_suites: list[str] = opt("exclude-cipher-suites", [], doc=TLS_DOCS["exclude-cipher-suites"])
    ip_filter: bool = opt("ipFilter", False, doc="accept or refuse clients by ipFilterRules")
    ip_filter_rules: str = opt("ipFilterRules", "", check=lambda v: check_rules(v) if v else None,
                               doc="allow|deny:ip|name:pattern, comma-separated; the first match wins")
    max_frame_bytes: int = opt("maxFrameBytes", 16 * 1024 * 1024, check=positive,
                               doc="Flumery: largest call accepted, in bytes (larger ones close the connection)")
    max_connections: int = opt("maxConnections", 128, check=positive,
                               doc="Flumery: connections served at once (further ones are closed)")


class AvroConnection:
    """One avro connection: Netty frames (deflated or not) in, Avro IPC calls answered."""

    def __init__(self, source: "AvroSource"):
        deflate = source.config.compression_type.lower() == "deflate"
        self.source = source
        self.decoder = FrameDecoder(source.config.max_frame_bytes, deflate=deflate)
        self.encoder = FrameEncoder(DEFLATE_LEVEL if deflate else None)
        self.session = ServerSession(source.known)

    def feed(self, data: bytes) -> None:
        self.decoder.feed(data)

    def next_call(self):
        try:
            return self.decoder.next_frame()
        except FrameError as exc:
            raise RpcProtocolError(str(exc)) from None

    def answer(self, frame) -> bytes:
        try:
            parsed = self.session.parse(frame[1])
        except ProtocolError as exc:
            raise RpcProtocolError(str(exc)) from None
        if isinstance(parsed, bytes):
            return parsed
        return self.session.reply(parsed, "OK" if self.put(parsed) else "FAILED")

    def put(self, call: Call) -> bool:
        return self.source.put_call(call.message == "append", call.records)

    def encode(self, frame, answer: bytes) -> bytes:
        return self.encoder.encode(frame[0], answer)


class AvroSource(RpcSource):
    Config = AvroSourceConfig
    label = "avro source"

    def open(self) -> None:
        self.known = KnownProtocols()
        super().open()

    def new_connection(self) -> AvroConnection:
        return AvroConnection(self)
