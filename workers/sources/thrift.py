"""``thrift``: Flume's ThriftSource, the receiving end of a thrift hop (Flume's ``ThriftSourceProtocol``, compact
protocol over framed transport by default, ``protocol = binary`` for the binary protocol), wire-compatible with
Flume's thrift sink and Thrift RPC client.

Contract: as the avro source's: ``append`` / ``appendBatch`` are answered ``OK`` only after the events are in every
required channel, ``FAILED`` when the put was refused or the broker failed (nothing of the call is then in any
required channel).  A ``flumery.id`` header becomes the event's id.  Memory is bounded in the same way: a
connection holds at most one frame of ``maxFrameBytes`` (checked before it is read), at most ``maxConnections``
connections, ``threads`` calls decoded and put at once.

Differences from Flume: no Kerberos (``kerberos = true`` is refused); TLS as the http and syslog sources (JKS or PKCS12
keystore, or PEM files through ``sslCertFile``/``sslKeyFile``).
"""
from __future__ import annotations

from dataclasses import dataclass

from core.options import one_of, opt, port_number, positive
from workers.rpc import thrift_flume
from workers.rpc.server import RpcProtocolError
from workers.sources.keystore import KEYSTORE_TYPES
from workers.sources.rpc import RpcSource
from workers.sources.syslogtcp import TLS_DOCS, check_protocols


@dataclass(frozen=True)
class ThriftSourceConfig:
    bind: str = opt("bind", doc="address to listen on")
    port: int = opt("port", check=port_number, doc="TCP port (0 picks a free one)")
    threads: int = opt("threads", 16, check=positive, doc="calls decoded and put at once")
    protocol: str = opt("protocol", "compact", check=one_of(*thrift_flume.PROTOCOLS),
                        doc="compact or binary; must match the sender")
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
    kerberos: bool = opt("kerberos", False, check=lambda v: "Kerberos is not supported" if v else None,
                         doc="must be false: Flumery has no Kerberos")
    agent_principal: str = opt("agent-principal", "", inert="Flumery has no Kerberos")
    agent_keytab: str = opt("agent-keytab", "", inert="Flumery has no Kerberos")
    max_frame_bytes: int = opt("maxFrameBytes", 16 * 1024 * 1024, check=positive,
                               doc="Flumery: largest call accepted, in bytes (larger ones close the connection)")
    max_connections: int = opt("maxConnections", 128, check=positive,
                               doc="Flumery: connections served at once (further ones are closed)")


class ThriftHandler:
    """The service's methods, called by thriftpy2's processor in a pool thread."""

    def __init__(self, source: "ThriftSource"):
        self.source = source

    def append(self, event):
        return self._status(self.source.put_call(True, thrift_flume.records([event])))

    def appendBatch(self, events):  # noqa: N802 (Flume's method name)
        return self._status(self.source.put_call(False, thrift_flume.records(events or [])))

    @staticmethod
    def _status(ok: bool) -> int:
        return thrift_flume.flume.Status.OK if ok else thrift_flume.flume.Status.FAILED


class ThriftConnection:
    """One thrift connection: frames in, calls answered by the processor."""

    def __init__(self, source: "ThriftSource"):
        self.protocol = source.config.protocol.lower()
        self.decoder = thrift_flume.FrameDecoder(source.config.max_frame_bytes)
        self.processor = source.thrift_processor

    def feed(self, data: bytes) -> None:
        self.decoder.feed(data)

    def next_call(self):
        try:
            return self.decoder.next_frame()
        except thrift_flume.ThriftError as exc:
            raise RpcProtocolError(str(exc)) from None

    def answer(self, payload: bytes) -> bytes:
        try:
            return thrift_flume.answer_call(self.processor, self.protocol, payload)
        except thrift_flume.ThriftError as exc:
            raise RpcProtocolError(str(exc)) from None

    def encode(self, payload, answer: bytes) -> bytes:
        return thrift_flume.frame(answer)


class ThriftSource(RpcSource):
    Config = ThriftSourceConfig
    label = "thrift source"

    def open(self) -> None:
        self.thrift_processor = thrift_flume.processor(ThriftHandler(self))   # self.processor: the channels
        super().open()

    def new_connection(self) -> ThriftConnection:
        return ThriftConnection(self)
