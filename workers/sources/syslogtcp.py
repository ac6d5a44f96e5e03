"""``syslogtcp``: Flume's SyslogTcpSource, newline-delimited syslog over TCP parsed as Flume's ``SyslogUtils`` does.

Each line is an event (RFC 5424 or RFC 3164; headers ``Facility``, ``Severity``, ``priority``, ``version``,
``timestamp``, ``host``, ``flume.syslog.status``: see :mod:`workers.sources.syslog_parser`).  Framing is Flume's:
lines end at ``\\n``; octet-counted framing (RFC 6587 ``123 <13>...``) is not understood, as in Flume (such a line
is an ``Invalid`` event).  A line longer than ``eventSize`` bytes is cut: the first part is ``Incomplete``, the rest
follows as ``Invalid`` events, so a client sending an endless line costs at most ``eventSize`` bytes of memory.

Syslog has no acknowledgement: nothing is sent back.  While the channels are full no connection is read, so TCP
pushes back on the senders (see :mod:`workers.sources.syslog_net`).  Flume puts one event per transaction and
drops it when the channel is full; Flumery puts what one read round brought, up to ``batchSize``, and retries.
A last line without its newline is an event when its client closes the connection (Flume drops it).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from core import counters as names
from core.errors import KeystoreError
from core.options import one_of, opt, port_number, positive
from workers.sources.keystore import KEYSTORE_TYPES, PROTOCOLS, keystore_context, pem_context
from workers.sources.syslog_net import ClientNames, StreamSource, client_headers
from workers.sources.syslog_parser import DEFAULT_SIZE, SyslogDecoder, check_keep_fields, keep_fields

log = logging.getLogger(__name__)

TLS_DOCS = {
    "ssl": "accept TLS connections only (keystore, or sslCertFile, required)",
    "keystore": "JKS or PKCS12 keystore holding the server's private key and certificate chain",
    "keystore-password": "password of the keystore and of its key (or of an encrypted sslKeyFile)",
    "keystore-type": "JKS or PKCS12",
    "sslCertFile": "PEM certificate chain, instead of a keystore (Flumery, as the http source)",
    "sslKeyFile": "PEM private key for sslCertFile (default: in sslCertFile) (Flumery)",
    "include-protocols": "TLS protocols to offer, Java names separated by spaces (empty: all; TLSv1.2 and TLSv1.3 "
                         "are the ones available)",
    "exclude-protocols": "TLS protocols never to offer",
    "include-cipher-suites": "not available yet (Java cipher-suite names); setting it is an error",
    "exclude-cipher-suites": "not available yet (Java cipher-suite names); setting it is an error",
}


def check_protocols(names_: list[str]) -> str | None:
    unknown = [p for p in names_ if p not in PROTOCOLS]
    return f"unknown protocol '{unknown[0]}' (known: {', '.join(PROTOCOLS)})" if unknown else None


@dataclass(frozen=True)
class SyslogTcpConfig:
    port: int = opt("port", check=port_number, doc="TCP port (0 picks a free one)")
    host: str = opt("host", "0.0.0.0", doc="address to listen on (Flume's guide lists it as required; "
                                           "without it Flume listens on every address)")
    event_size: int = opt("eventSize", DEFAULT_SIZE, check=positive,
                          doc="longest event in bytes (10 at least); longer lines are cut (Incomplete, then Invalid)")
    keep_fields: str = opt("keepFields", "none", check=check_keep_fields,
                           doc="what of the header stays in the body: none, all, or some of "
                               "priority version timestamp hostname")
    client_ip_header: str | None = opt("clientIPHeader", None, doc="header that receives the client's IP address")
    client_hostname_header: str | None = opt("clientHostnameHeader", None,
                                             doc="header that receives the client's host name (reverse lookup)")
    batch_size: int = opt("batchSize", 100, check=positive,
                          doc="most events per put (Flumery; Flume puts each event alone)")
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


def check_tls(config) -> list[tuple[str, str]]:
    """The TLS properties together; with ``ssl``, that the key and certificate load (so that a wrong password is
    a configuration error naming the key).  Cipher-suite filters are not available yet."""
    problems = []
    for key, value in (("include-cipher-suites", config.include_cipher_suites),
                       ("exclude-cipher-suites", config.exclude_cipher_suites)):
        if value:
            problems.append((key, f"not available yet in Flumery (Java cipher-suite names); remove it "
                                  f"(got '{' '.join(value)}')"))
    if config.keystore and config.ssl_cert_file:
        problems.append(("sslCertFile", "give either keystore or sslCertFile, not both"))
    elif config.ssl and not (config.keystore or config.ssl_cert_file):
        problems.append(("ssl", "true needs keystore (or sslCertFile)"))
    elif config.ssl:
        try:
            tls_context(config)
        except KeystoreError as exc:
            problems.append(("keystore" if config.keystore else "sslCertFile", str(exc)))
    return problems


def tls_context(config):
    """The server TLS context of a config (None without ``ssl``); raises KeystoreError.  ``include-protocols``
    becomes the exclusion of every other protocol (workers.sources.keystore takes exclusions)."""
    if not config.ssl:
        return None
    include = config.include_protocols
    exclude = [*config.exclude_protocols, *(p for p in PROTOCOLS if include and p not in include)]
    if config.keystore:
        return keystore_context(config.keystore, config.keystore_password, config.keystore_type, exclude)
    return pem_context(config.ssl_cert_file, config.ssl_key_file, config.keystore_password, exclude)


class SyslogTcpSource(StreamSource):
    """Flume's SyslogTcpSource: newline-delimited syslog over TCP, parsed as Flume's SyslogUtils does."""

    Config = SyslogTcpConfig
    batch_size_is_flumerys = True          # Flume's syslogtcp has no batchSize: its default is not checked

    @classmethod
    def check(cls, config, refs=()):
        return check_tls(config)

    def open(self) -> None:
        self.host = self.config.host
        self.batch_size = self.config.batch_size
        self.max_connections = self.config.max_connections
        self.read_size = 64 * 1024
        self.keep = keep_fields(self.config.keep_fields)
        self.names = ClientNames()
        self.tls = tls_context(self.config)        # KeystoreError is an OSError: the agent reports it
        super().open()

    def ports(self) -> list[int]:
        return [self.config.port]

    @property
    def port(self) -> int:
        return self.bound_ports[0]

    def reader(self, port: int):
        return StreamDecoder(SyslogDecoder(self.config.event_size, self.keep), self.counters)

    def connection_headers(self, ip: str, port: int) -> dict:
        return client_headers(self.config.client_ip_header, self.config.client_hostname_header, ip, self.names)


class StreamDecoder:
    """A :class:`SyslogDecoder` on one TCP connection: at its end, the unterminated last line is an event."""

    def __init__(self, decoder: SyslogDecoder, counters):
        self.decoder, self.counters = decoder, counters

    def feed(self, data: bytes):
        return self.decoder.feed(data)[0]

    def finish(self):
        pending = self.decoder.pending
        event = self.decoder.finish()
        if event is None and pending:
            names.fail(self.counters, names.EVENT_READ_FAIL, log, logging.WARNING,
                       "syslogtcp: connection closed after a '<' with no priority; nothing to make an event of")
        return [event] if event is not None else []
