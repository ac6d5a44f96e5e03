"""``syslogudp``: Flume's SyslogUDPSource, a syslog message per datagram, parsed as Flume's ``SyslogUtils`` does.

Headers and bodies are those of ``syslogtcp`` (see :mod:`workers.sources.syslog_parser`).  A datagram is one
event up to its first newline (or its end); where Flume silently drops what follows a newline inside a datagram,
Flumery makes each further line an event of its own.  Datagrams of up to 65,535 bytes are read whole (Flume's
Netty reads at most 2,048 bytes of a datagram and cuts the rest).

**What UDP can lose** (no acknowledgement exists): datagrams the network drops; datagrams the kernel drops
because the socket's receive buffer is full, which happens while the channels are full (the source then stops
reading, so memory stays bounded) or when senders outrun the agent.  Kernel drops are counted in
``EventReadFail`` (read from the kernel with ``SO_RXQ_OVFL``, reported when the next datagram arrives) and
logged; so are datagrams that make no event (empty, or a lone ``<``).  Flume drops the event when the channel is
full (``ChannelWriteFail``); Flumery keeps it and retries, and lets the kernel drop the newer ones instead.
"""
from __future__ import annotations

from dataclasses import dataclass

from core.options import opt, port_number, positive
from workers.sources.syslog_net import ClientNames, DatagramSource, client_headers
from workers.sources.syslog_parser import MAX_DATAGRAM_EVENT, SyslogDecoder, check_keep_fields, keep_fields


@dataclass(frozen=True)
class SyslogUdpConfig:
    port: int = opt("port", check=port_number, doc="UDP port (0 picks a free one)")
    host: str = opt("host", "0.0.0.0", doc="address to listen on (Flume's guide lists it as required; "
                                           "without it Flume listens on every address)")
    keep_fields: str = opt("keepFields", "none", check=check_keep_fields,
                           doc="what of the header stays in the body: none, all, or some of "
                               "priority version timestamp hostname")
    client_ip_header: str | None = opt("clientIPHeader", None, doc="header that receives the sender's IP address")
    client_hostname_header: str | None = opt("clientHostnameHeader", None,
                                             doc="header that receives the sender's host name (reverse lookup)")
    batch_size: int = opt("batchSize", 100, check=positive,
                          doc="most events per put (Flumery; Flume puts each event alone)")


class SyslogUdpSource(DatagramSource):
    """Flume's SyslogUDPSource: a syslog message per datagram, parsed as Flume's SyslogUtils does."""

    Config = SyslogUdpConfig
    batch_size_is_flumerys = True

    def open(self) -> None:
        self.host, self.port = self.config.host, self.config.port
        self.batch_size = self.config.batch_size
        self.decoder = SyslogDecoder(MAX_DATAGRAM_EVENT, keep_fields(self.config.keep_fields))
        self.names = ClientNames()
        super().open()

    def events(self, data: bytes, address):
        events, failed = self.decoder.datagram(data)
        extra = client_headers(self.config.client_ip_header, self.config.client_hostname_header, address[0],
                               self.names)
        if extra:
            events = [({**headers, **extra}, body) for headers, body in events]
        return events, failed
