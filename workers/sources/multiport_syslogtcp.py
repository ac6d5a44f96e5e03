"""``multiport_syslogtcp``: Flume's MultiportSyslogTCPSource, syslog over TCP on several ports, parsed as Flume's
``SyslogParser`` does, with a charset per port.

Each line (at most ``eventSize`` bytes *counting* its newline) is decoded with the port's charset
(``charset.port.<port>``, else ``charset.default``) and parsed: headers ``Priority``, ``Facility``, ``Severity``,
``Version`` (capitalised, unlike syslogtcp), ``timestamp`` (RFC 3164 stamps in UTC; a ``-`` stamp gets the time it
was received), ``host``.  A line that does not decode or parse is an event with its raw bytes and only
``flume.syslog.status = Invalid`` (counted in ``EventReadFail``); a line cut at ``eventSize`` gets ``Incomplete``.
Empty lines are skipped (they make Flume's parser throw).  ``portHeader``, ``clientIPHeader`` and
``clientHostnameHeader`` add the local port and the client's address and name.

Delivery, back-pressure and TLS are those of ``syslogtcp`` (:mod:`workers.sources.syslog_net`).  ``numProcessors``
is accepted and has no effect: Flume sizes Mina's pool of I/O threads with it; here one thread reads every
connection of every port with non-blocking sockets, and parsing (not reading) is the bottleneck, which more
Python threads would not speed up (the GIL).
"""
from __future__ import annotations

import codecs
import logging
import time
from dataclasses import dataclass

from core import counters as names
from core.options import one_of, opt, port_number, positive
from workers.sources.keystore import KEYSTORE_TYPES
from workers.sources.syslog_net import ClientNames, StreamSource, client_headers
from workers.sources.syslog_parser import (
    DEFAULT_SIZE,
    INCOMPLETE,
    INVALID,
    STATUS,
    LineSplitter,
    SyslogFormatError,
    check_keep_fields,
    keep_fields,
    parse_message,
)
from workers.sources.syslogtcp import TLS_DOCS, check_protocols, check_tls, tls_context

log = logging.getLogger(__name__)


def check_ports(ports: list[str]) -> str | None:
    if not ports:
        return "give at least one port"
    for port in ports:
        if not port.isdigit() or port_number(int(port)):
            return f"'{port}' is not a TCP port (0-65535)"
    if len(set(ports)) != len(ports) and "0" not in ports:
        return "a port is listed twice"
    return None


def check_charset(name: str) -> str | None:
    try:
        codecs.lookup(name)
    except LookupError:
        return f"unknown charset '{name}'"
    return None


@dataclass(frozen=True)
class MultiportSyslogTcpConfig:
    ports: list[str] = opt("ports", check=check_ports, doc="TCP ports, separated by spaces (0 picks a free one)")
    host: str = opt("host", "0.0.0.0", doc="address to listen on (Flume's guide lists it as required; "
                                           "without it Flume listens on every address)")
    event_size: int = opt("eventSize", DEFAULT_SIZE, check=positive,
                          doc="longest line in bytes, newline included; longer lines are cut (Incomplete)")
    keep_fields: str = opt("keepFields", "none", check=check_keep_fields,
                           doc="what of the header stays in the body: none, all, or some of "
                               "priority version timestamp hostname")
    port_header: str | None = opt("portHeader", None, doc="header that receives the local port of the connection")
    client_ip_header: str | None = opt("clientIPHeader", None, doc="header that receives the client's IP address")
    client_hostname_header: str | None = opt("clientHostnameHeader", None,
                                             doc="header that receives the client's host name (reverse lookup)")
    default_charset: str = opt("charset.default", "UTF-8", check=check_charset, doc="charset of the messages")
    port_charsets: dict[str, str] = opt("charset.port.*", doc="charset.port.<port> = charset of that port's messages")
    batch_size: int = opt("batchSize", 100, check=positive, doc="most events per put")
    read_buffer_size: int = opt("readBufferSize", 1024, check=positive,
                                doc="bytes of the first read of a connection; reads grow up to 64 KiB as in Mina")
    read_buffer_bytes: int | None = opt("readBufferBytes", None, check=positive,
                                        doc="the name Flume's code reads for readBufferSize; wins if set")
    num_processors: int | None = opt("numProcessors", None,
                                     inert="one thread reads every connection here (see the source's docs)")
    max_connections: int = opt("maxConnections", 1000, check=positive,
                               doc="connections served at once; more are closed at once (Flumery)")
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


class MultiportSyslogTcpSource(StreamSource):
    """Flume's MultiportSyslogTCPSource: syslog over TCP on several ports, a charset per port, Flume's SyslogParser."""

    Config = MultiportSyslogTcpConfig

    @classmethod
    def check(cls, config, refs=()):
        problems = check_tls(config)
        for port, charset in config.port_charsets.items():
            key = f"charset.port.{port}"
            if not port.isdigit() or str(int(port)) not in config.ports:
                problems.append((key, f"port {port} is not among ports ({' '.join(config.ports)})"))
            elif check_charset(charset):
                problems.append((key, f"{check_charset(charset)} (got '{charset}')"))
        return problems

    def open(self) -> None:
        self.host = self.config.host
        self.batch_size = self.config.batch_size
        self.max_connections = self.config.max_connections
        self.read_size = self.config.read_buffer_bytes or self.config.read_buffer_size
        self.keep = keep_fields(self.config.keep_fields)
        self.names = ClientNames()
        self.charsets = {int(p): c for p, c in self.config.port_charsets.items()}
        self.tls = tls_context(self.config)        # KeystoreError is an OSError: the agent reports it
        super().open()

    def ports(self) -> list[int]:
        return [int(p) for p in self.config.ports]

    def reader(self, port: int):
        return LineParser(self, port, self.charsets.get(port, self.config.default_charset))

    def connection_headers(self, ip: str, port: int) -> dict:
        headers = client_headers(self.config.client_ip_header, self.config.client_hostname_header, ip, self.names)
        if self.config.port_header:
            headers[self.config.port_header] = str(port)
        return headers


class LineParser:
    """One connection of the multiport source: lines out of its LineSplitter, parsed in the port's charset."""

    def __init__(self, source: MultiportSyslogTcpSource, port: int, charset: str):
        self.source, self.port, self.charset = source, port, charset
        self.splitter = LineSplitter(source.config.event_size)

    def feed(self, data: bytes):
        now_ms = int(time.time() * 1000)
        return [self.event(line, incomplete, now_ms) for line, incomplete in self.splitter.feed(data) if line]

    def finish(self):
        line = self.splitter.finish()
        return [self.event(line, False, int(time.time() * 1000))] if line else []

    def event(self, line: bytes, incomplete: bool, now_ms: int) -> tuple[dict, bytes]:
        try:
            text = line.decode(self.charset)
        except UnicodeDecodeError as exc:
            return self._invalid(line, f"does not decode as {self.charset}: {exc.reason} at byte {exc.start}")
        try:
            headers, body = parse_message(text, self.source.keep, now_ms)
        except SyslogFormatError as exc:
            return self._invalid(line, str(exc))
        if incomplete:
            headers[STATUS] = INCOMPLETE
        return headers, body.encode(self.charset)

    def _invalid(self, line: bytes, reason: str) -> tuple[dict, bytes]:
        names.fail(self.source.counters, names.EVENT_READ_FAIL, log, logging.DEBUG,
                   "multiport_syslogtcp source %s, port %d: invalid message (%s): %r", self.source.name, self.port,
                   reason, line[:80])
        return {STATUS: INVALID}, line
