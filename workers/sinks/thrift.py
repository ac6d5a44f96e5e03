"""``thrift``: Flume's ThriftSink, the sending end of a thrift hop (Flume's ``ThriftSourceProtocol``, compact
protocol over framed transport by default), wire-compatible with Flume's thrift source.

Contract: as the avro sink's (:mod:`workers.sinks.rpc`): ``write`` returns only after every ``appendBatch`` call of
the batch was answered ``OK``; anything else raises and the batch is sent again (calls already answered OK are
not).  Events carry their id as the ``flumery.id`` header.  No Kerberos.
"""
from __future__ import annotations

from dataclasses import dataclass

from core.options import non_negative, one_of, opt, port_number, positive
from workers.rpc import thrift_flume, tls
from workers.sinks.rpc import RpcSink


@dataclass(frozen=True)
class ThriftSinkConfig:
    hostname: str = opt("hostname", doc="host of the next hop's thrift source")
    port: int = opt("port", check=port_number, doc="its port")
    batch_size: int = opt("batch-size", 100, check=positive, doc="events per appendBatch call")
    connect_timeout_ms: int = opt("connect-timeout", 20000, check=positive, doc="ms to connect (and TLS handshake)")
    request_timeout_ms: int = opt("request-timeout", 20000, check=positive, doc="ms to wait for an answer")
    reset_connection_interval_s: int = opt("connection-reset-interval", 0, check=non_negative,
                                           doc="seconds after which the connection is replaced (0 = never)")
    protocol: str = opt("protocol", "compact", check=one_of(*thrift_flume.PROTOCOLS),
                        doc="compact or binary; must match the source")
    ssl: bool = opt("ssl", False, doc="connect with TLS")
    trust_all_certs: bool = opt("trust-all-certs", False, doc="do not check the server's certificate")
    truststore: str = opt("truststore", "", doc="CA certificates: a JKS, PKCS12 or PEM file (default: the system's)")
    truststore_password: str = opt("truststore-password", "", doc="password of a JKS or PKCS12 truststore")
    truststore_type: str = opt("truststore-type", "JKS", check=one_of(*tls.STORE_TYPES), doc="JKS, PKCS12 or PEM")
    exclude_protocols: list[str] = opt("exclude-protocols", ["SSLv3"], check=tls.check_protocols,
                                       doc="TLS versions not to use (Java names; TLSv1.2 and TLSv1.3 are offered)")
    include_protocols: list[str] = opt("include-protocols", [], check=tls.check_protocols,
                                       doc="TLS versions to use (Java names; empty = all but the excluded)")
    kerberos: bool = opt("kerberos", False, check=lambda v: "Kerberos is not supported" if v else None,
                         doc="must be false: Flumery has no Kerberos")
    client_principal: str = opt("client-principal", "", inert="Flumery has no Kerberos")
    client_keytab: str = opt("client-keytab", "", inert="Flumery has no Kerberos")
    server_principal: str = opt("server-principal", "", inert="Flumery has no Kerberos")


class ThriftSink(RpcSink):
    Config = ThriftSinkConfig
    label = "thrift sink"

    def make_client(self) -> thrift_flume.ThriftClient:
        config = self.config
        context = None
        if config.ssl:
            context = tls.client_context(config.truststore, config.truststore_password, config.truststore_type,
                                         config.trust_all_certs, config.exclude_protocols, config.include_protocols)
        return thrift_flume.ThriftClient(config.hostname, config.port, config.connect_timeout_ms / 1000,
                                         config.request_timeout_ms / 1000, config.protocol.lower(), context)
