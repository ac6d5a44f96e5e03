"""``avro``: Flume's AvroSink, the sending end of an avro hop (Avro IPC over Netty framing, Flume's
``AvroSourceProtocol``), wire-compatible with Flume's avro source.

Contract (two transactions per hop): ``write(batch)`` sends the batch as ``appendBatch`` calls of at most
``batch-size`` events and returns only after the next agent answered ``OK`` to every one of them, i.e. after the
events are in every required channel there.  ``FAILED``, an error answer, a timeout (``connect-timeout``,
``request-timeout``) or a broken connection raise: the channel messages stay unacknowledged and the runner writes
the batch again later (so the next hop may receive a batch twice: at least once, as in Flume).  After a failure
the connection is closed and the next write connects again; with ``reset-connection-interval`` the connection is
also replaced every that many seconds (for load balancers, as in Flume).

Every event is sent with its id as the ``flumery.id`` header, which a Flumery avro source turns back into the id
(a Flume agent keeps it as an ordinary header).
"""
from __future__ import annotations

from dataclasses import dataclass

from core.options import non_negative, one_of, opt, port_number, positive
from workers.rpc import tls
from workers.rpc.avro_client import AvroClient
from workers.sinks.rpc import DeliveryFailed, RpcSink

__all__ = ["AvroSink", "AvroSinkConfig", "DeliveryFailed"]


def _level(value: int) -> str | None:
    return None if 1 <= value <= 9 else "must be 1 to 9"


@dataclass(frozen=True)
class AvroSinkConfig:
    hostname: str = opt("hostname", doc="host of the next hop's avro source")
    port: int = opt("port", check=port_number, doc="its port")
    batch_size: int = opt("batch-size", 100, check=positive, doc="events per appendBatch call")
    connect_timeout_ms: int = opt("connect-timeout", 20000, check=positive, doc="ms to connect (and TLS handshake)")
    request_timeout_ms: int = opt("request-timeout", 20000, check=positive, doc="ms to wait for an answer")
    reset_connection_interval_s: int = opt("reset-connection-interval", 0, check=non_negative,
                                           doc="seconds after which the connection is replaced (0 = never)")
    compression_type: str = opt("compression-type", "none", check=one_of("none", "deflate"),
                                doc="none or deflate; must match the source")
    compression_level: int = opt("compression-level", 6, check=_level, doc="deflate level, 1 to 9")
    ssl: bool = opt("ssl", False, doc="connect with TLS")
    trust_all_certs: bool = opt("trust-all-certs", False, doc="do not check the server's certificate")
    truststore: str = opt("truststore", "", doc="CA certificates: a JKS, PKCS12 or PEM file (default: the system's)")
    truststore_password: str = opt("truststore-password", "", doc="password of a JKS or PKCS12 truststore")
    truststore_type: str = opt("truststore-type", "JKS", check=one_of(*tls.STORE_TYPES), doc="JKS, PKCS12 or PEM")
    exclude_protocols: list[str] = opt("exclude-protocols", ["SSLv3"], check=tls.check_protocols,
                                       doc="TLS versions not to use (Java names; TLSv1.2 and TLSv1.3 are offered)")
    include_protocols: list[str] = opt("include-protocols", [], check=tls.check_protocols,
                                       doc="TLS versions to use (Java names; empty = all but the excluded)")
    max_io_workers: int = opt("maxIoWorkers", 0, inert="a sink worker holds one blocking connection")


class AvroSink(RpcSink):
    Config = AvroSinkConfig
    label = "avro sink"

    def make_client(self) -> AvroClient:
        config = self.config
        context = None
        if config.ssl:
            context = tls.client_context(config.truststore, config.truststore_password, config.truststore_type,
                                         config.trust_all_certs, config.exclude_protocols, config.include_protocols)
        level = config.compression_level if config.compression_type.lower() == "deflate" else None
        return AvroClient(config.hostname, config.port, config.connect_timeout_ms / 1000,
                          config.request_timeout_ms / 1000, level, context)
