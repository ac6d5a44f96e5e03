"""``netcatudp``: Flume's NetcatUdpSource, a line-per-event UDP listener.

A datagram's bytes up to its first newline are an event (an empty datagram is an empty event); where Flume
drops what follows that newline, Flumery makes each further line an event too (a final newline ends the last
line and makes no empty event).  Bytes are kept as they are.  ``remoteAddressHeader`` names a header that
receives the sender as Java prints it (``/127.0.0.1:52341``); Flume's code reads the property ``remoteAddress``
(its guide says ``remoteAddressHeader``): both are accepted.

UDP gives no acknowledgement; what it can lose, and how the losses are counted (``EventReadFail``), is said in
:mod:`workers.sources.syslog_net` and the README.
"""
from __future__ import annotations

from dataclasses import dataclass

from core.options import opt, port_number, positive
from workers.sources.syslog_net import DatagramSource


@dataclass(frozen=True)
class NetcatUdpConfig:
    bind: str = opt("bind", doc="address to listen on")
    port: int = opt("port", check=port_number, doc="UDP port (0 picks a free one)")
    remote_address_header: str | None = opt("remoteAddressHeader", None,
                                            doc="header that receives the sender's address, as /ip:port")
    remote_address: str | None = opt("remoteAddress", None,
                                     doc="the name Flume's code reads for remoteAddressHeader; wins if set")
    batch_size: int = opt("batchSize", 100, check=positive,
                          doc="most events per put (Flumery; Flume puts each event alone)")


def java_address(address) -> str:
    """``InetSocketAddress.toString()`` of a sender whose name was not looked up: ``/ip:port``."""
    host, port = address[0], address[1]
    return f"/[{host}]:{port}" if ":" in host else f"/{host}:{port}"


def lines(data: bytes) -> list[bytes]:
    """The events of one datagram: its lines, without their newlines."""
    parts = data.split(b"\n")
    if len(parts) > 1 and parts[-1] == b"":
        parts.pop()
    return parts


class NetcatUdpSource(DatagramSource):
    """Flume's NetcatUdpSource: a line-per-event UDP listener."""

    Config = NetcatUdpConfig
    batch_size_is_flumerys = True

    def open(self) -> None:
        self.host, self.port = self.config.bind, self.config.port
        self.batch_size = self.config.batch_size
        self.header = self.config.remote_address or self.config.remote_address_header
        super().open()

    def events(self, data: bytes, address):
        headers = {self.header: java_address(address)} if self.header else {}
        return [(headers, line) for line in lines(data)], 0
